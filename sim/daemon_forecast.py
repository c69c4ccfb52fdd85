"""The daemon's own forecasts (``controller.forecast``) as simulator forecast models.

They run the daemon's code on the same information the daemon would have: the measured history
before now on the plan grid, with the site config's forecast settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.config import ForecastConfig
from controller.forecast import load_from_grid, load_history_steps, pv_from_grid, pv_history_steps
from sim.scenario import FloatArray

__all__ = ["DaemonLoadForecast", "DaemonPvForecast"]


@dataclass(frozen=True, slots=True)
class DaemonLoadForecast:
    settings: ForecastConfig
    name: str = "daemon"
    uses_actuals: bool = False

    def forecast(
        self, history: FloatArray, actual_ahead: FloatArray | None, k: int, steps: int, steps_per_day: int
    ) -> FloatArray:
        weeks = self.settings.load_history_weeks
        first = max(0, k - load_history_steps(steps_per_day, weeks, 7))
        return load_from_grid(
            history[first:k],
            steps,
            steps_per_day,
            weeks=weeks,
            default_w=self.settings.default_home_load_w,
        )


@dataclass(frozen=True, slots=True)
class DaemonPvForecast:
    settings: ForecastConfig
    name: str = "daemon"
    uses_actuals: bool = False

    def forecast(
        self, history: FloatArray, actual_ahead: FloatArray | None, k: int, steps: int, steps_per_day: int
    ) -> FloatArray:
        days = self.settings.pv_history_days
        first = max(0, k - pv_history_steps(steps_per_day, days))
        return pv_from_grid(history[first:k], steps, steps_per_day, days=days)
