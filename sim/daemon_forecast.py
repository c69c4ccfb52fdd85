"""The daemon's own forecasts (``controller.forecast``) as simulator forecast models.

They see the same thing the daemon would: the measured history before now, as timestamped
readings. Only the last weeks the forecast looks at are passed in, to keep year-long runs bearable.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from controller.forecast import forecast_load_w, forecast_pv_w
from sim.scenario import FloatArray, Series

__all__ = ["DaemonLoadForecast", "DaemonPvForecast"]


class _DaemonForecast:
    uses_actuals = False
    history_days = 7

    def __init__(self, series: Series) -> None:
        self._times: list[datetime] = [series.time_at(k) for k in range(series.steps)]
        self._step: timedelta = series.step

    def _history(self, history: FloatArray, k: int, steps_per_day: int) -> list[tuple[datetime, float]]:
        first = max(0, k - (self.history_days + 1) * steps_per_day)
        return list(zip(self._times[first:k], history[first:k].tolist(), strict=True))

    def _start(self, k: int) -> datetime:
        return self._times[0] + self._step * k


class DaemonLoadForecast(_DaemonForecast):
    name = "daemon"
    history_days = 28

    def forecast(
        self, history: FloatArray, actual_ahead: FloatArray | None, k: int, steps: int, steps_per_day: int
    ) -> FloatArray:
        out: FloatArray = forecast_load_w(
            self._history(history, k, steps_per_day), self._start(k), self._step, steps
        )
        return np.asarray(out, dtype=np.float64)


class DaemonPvForecast(_DaemonForecast):
    name = "daemon"
    history_days = 7

    def forecast(
        self, history: FloatArray, actual_ahead: FloatArray | None, k: int, steps: int, steps_per_day: int
    ) -> FloatArray:
        out: FloatArray = forecast_pv_w(
            self._history(history, k, steps_per_day), self._start(k), self._step, steps
        )
        return np.asarray(out, dtype=np.float64)
