"""Profile forecasts.

Home load: the mean of the same weekday and time slot over recent weeks (falling back to the same
time slot of recent days, then to a default), corrected by how far the last hours ran above or
below that profile, with the correction fading over the horizon.

PV: the mean of the same time slot over recent days, unless an external forecast (e.g. from an
MQTT topic) covers the step. Both return W per step on the plan grid, >= 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from controller.domain import align_to_step, ensure_utc

__all__ = ["forecast_load_w", "forecast_pv_w", "resample_to_grid"]

FloatArray = npt.NDArray[np.float64]
WEEK = timedelta(days=7)
DAY = timedelta(days=1)


def resample_to_grid(history: Iterable[tuple[datetime, float]], step: timedelta) -> dict[datetime, float]:
    """Mean of the readings in each step of the plan grid, keyed by the step's start."""
    sums: dict[datetime, list[float]] = {}
    for at, value in history:
        if not math.isfinite(value):
            continue
        slot = align_to_step(at, step)
        acc = sums.setdefault(slot, [0.0, 0.0])
        acc[0] += value
        acc[1] += 1
    return {slot: total / count for slot, (total, count) in sums.items()}


def _profile_value(
    slots: Mapping[datetime, float], moment: datetime, start: datetime, period: timedelta, count: int
) -> float | None:
    """Mean of the ``count`` most recent values at whole ``period``s before ``moment`` and before ``start``."""
    first = 1 if moment < start else (moment - start) // period + 1
    anchors = (moment - (first + j) * period for j in range(count))
    values = [slots[a] for a in anchors if a in slots]
    return sum(values) / len(values) if values else None


def forecast_load_w(
    history: Iterable[tuple[datetime, float]],
    start: datetime,
    step: timedelta,
    steps: int,
    *,
    weeks: int = 4,
    days: int = 7,
    blend_hours: float = 3.0,
    default_w: float = 400.0,
) -> FloatArray:
    """Home load in W for ``steps`` steps from ``start`` (aligned to the grid)."""
    start = align_to_step(ensure_utc(start), step)
    slots = resample_to_grid(history, step)

    def profile(moment: datetime) -> float:
        weekly = _profile_value(slots, moment, start, WEEK, weeks)
        if weekly is not None:
            return weekly
        daily = _profile_value(slots, moment, start, DAY, days)
        return daily if daily is not None else default_w

    forecast = np.array([profile(start + i * step) for i in range(steps)], dtype=np.float64)

    # Recent bias: actual minus profile over the last hours, fading with a time constant of blend_hours.
    recent = [start - k * step for k in range(1, max(1, int(blend_hours * 3600 // step.total_seconds())) + 1)]
    errors = [slots[m] - profile(m) for m in recent if m in slots]
    if errors and blend_hours > 0:
        bias = sum(errors) / len(errors)
        hours_ahead = np.arange(steps, dtype=np.float64) * step.total_seconds() / 3600.0
        forecast += bias * np.exp(-hours_ahead / blend_hours)
    return np.maximum(forecast, 0.0)


def forecast_pv_w(
    history: Iterable[tuple[datetime, float]],
    start: datetime,
    step: timedelta,
    steps: int,
    *,
    days: int = 7,
    external: Mapping[datetime, float] | None = None,
) -> FloatArray:
    """PV production in W (>= 0) for ``steps`` steps; ``external`` (step start -> W) wins where it has a value."""
    start = align_to_step(ensure_utc(start), step)
    slots = resample_to_grid(history, step)
    out = np.zeros(steps, dtype=np.float64)
    for i in range(steps):
        moment = start + i * step
        if external is not None and moment in external:
            out[i] = external[moment]
            continue
        value = _profile_value(slots, moment, start, DAY, days)
        out[i] = value if value is not None else 0.0
    return np.maximum(out, 0.0)
