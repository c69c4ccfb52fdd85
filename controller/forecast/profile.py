"""Profile forecasts.

Home load: a blend of the mean of the same time slot over recent days and the mean of the same
weekday and time slot over recent weeks (either alone where the other has no data, a default
without history), corrected by how far the last hour ran above or below that profile, with the
correction fading over the next hours.

PV: the mean of the same time slot over recent days, scaled by how the last hour compared with
that profile (a cloudy morning is likely a cloudy noon), the scaling fading over the next hours
(a slot no day has measured yet, as on the first day, holds the last hour's PV, fading within
about an hour); an external forecast (e.g. from an MQTT topic) wins where it covers a step. Both
return W per step on the plan grid, >= 0.

The work is done on a regular grid (``load_from_grid``/``pv_from_grid``: one value per plan step
up to the step before the forecast starts, NaN where nothing was measured), so the daemon (from
its stored readings) and the simulator (from its measured history) run the same code.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from controller.domain import align_to_step, ensure_utc

__all__ = [
    "blend_weekly_daily",
    "forecast_load_w",
    "forecast_pv_w",
    "history_grid",
    "load_from_grid",
    "load_history_steps",
    "pv_from_grid",
    "pv_from_profile",
    "pv_history_steps",
    "resample_to_grid",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
WEEK = timedelta(days=7)
DAY = timedelta(days=1)
DEFAULT_BLEND_HOURS = 1.0
DEFAULT_HOME_LOAD_W = 400.0
# Weight of the same-weekday profile in the home-load profile (the rest is the recent days').
# Chosen on a year of a measured household (../shared/data): it lowered the forecast error over
# weekly alone or daily alone.
DEFAULT_WEEKLY_WEIGHT = 0.3
# PV: the last hour against the profile gives the weather now; its effect fades over 4 hours.
PV_RATIO_HOURS = 1.0
PV_FADE_HOURS = 4.0
PV_MAX_RATIO = 3.0
# PV in a slot never measured (the first day): the last hour's, fading with this time constant.
# Without a day's profile there is no course of the sun to follow, so it holds about as long as
# it was measured (a longer hold over-forecasts the evening).
PV_HOLD_HOURS = 1.0


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


def history_grid(
    history: Iterable[tuple[datetime, float]], start: datetime, step: timedelta, length: int
) -> FloatArray:
    """The ``length`` plan steps before ``start`` (aligned) as an array, oldest first, NaN where empty."""
    start = align_to_step(ensure_utc(start), step)
    grid = np.full(length, np.nan, dtype=np.float64)
    for slot, value in resample_to_grid(history, step).items():
        back = (start - slot) // step  # 1 for the step just before start
        if 1 <= back <= length:
            grid[length - back] = value
    return grid


@functools.lru_cache(maxsize=64)
def _anchor_offsets(leads: tuple[int, int], period: int, count: int) -> IntArray:
    """Per lead step in ``range(*leads)`` (0 = the first forecast step, < 0 = the past), the offsets
    from the grid's end of the same slot ``count`` whole periods back, on data measured before the
    forecast starts (a future step skips the periods that are not yet measured)."""
    lead = np.arange(*leads, dtype=np.int64)
    first = np.where(lead >= 0, lead // period + 1, 1)
    back = first[:, None] + np.arange(count, dtype=np.int64)[None, :]
    offsets: IntArray = lead[:, None] - back * period
    return offsets


def _period_mean(grid: FloatArray, leads: tuple[int, int], period: int, count: int) -> FloatArray:
    """Per lead step: the mean of the measured values at the anchors, NaN where none was measured."""
    index = len(grid) + _anchor_offsets(leads, period, count)
    inside = index >= 0
    values = grid[np.where(inside, index, 0)] if len(grid) else np.full(index.shape, np.nan)
    valid = inside & ~np.isnan(values)
    counts = valid.sum(axis=1)
    sums = np.where(valid, values, 0.0).sum(axis=1)
    out: FloatArray = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return out


def _load_profile(
    grid: FloatArray,
    leads: tuple[int, int],
    steps_per_day: int,
    weeks: int,
    days: int,
    weekly_weight: float,
    default_w: float,
) -> FloatArray:
    weekly = _period_mean(grid, leads, 7 * steps_per_day, weeks)
    daily = _period_mean(grid, leads, steps_per_day, days)
    return blend_weekly_daily(weekly, daily, weekly_weight, default_w)


def blend_weekly_daily(
    weekly: FloatArray, daily: FloatArray, weekly_weight: float, default_w: float
) -> FloatArray:
    """The home-load profile from its weekly and daily means: weighted where both exist, the one
    that exists where the other is missing (NaN), ``default_w`` where neither does."""
    both = weekly_weight * weekly + (1.0 - weekly_weight) * daily
    either = np.where(np.isnan(weekly), daily, np.where(np.isnan(daily), weekly, both))
    out: FloatArray = np.where(np.isnan(either), default_w, either)
    return out


def _blend_steps(steps_per_day: int, blend_steps: int | None) -> int:
    """The recent-bias window in steps; by default ``DEFAULT_BLEND_HOURS`` on this grid."""
    return round(DEFAULT_BLEND_HOURS * steps_per_day / 24.0) if blend_steps is None else blend_steps


def load_history_steps(steps_per_day: int, weeks: int, days: int, blend_steps: int | None = None) -> int:
    """How many steps of history ``load_from_grid`` can use: the profiles of the blend window too."""
    return max(7 * weeks, days) * steps_per_day + _blend_steps(steps_per_day, blend_steps)


def pv_history_steps(steps_per_day: int, days: int) -> int:
    """How many steps of history ``pv_from_grid`` can use: the profile of the last hour too."""
    return days * steps_per_day + round(PV_RATIO_HOURS * steps_per_day / 24.0)


def load_from_grid(
    grid_w: FloatArray,
    steps: int,
    steps_per_day: int,
    *,
    weeks: int = 4,
    days: int = 7,
    weekly_weight: float = DEFAULT_WEEKLY_WEIGHT,
    blend_steps: int | None = None,
    default_w: float = DEFAULT_HOME_LOAD_W,
) -> FloatArray:
    """Home load in W for the ``steps`` steps after the grid's last step (see the module doc)."""
    grid = np.asarray(grid_w, dtype=np.float64)
    forecast = _load_profile(grid, (0, steps), steps_per_day, weeks, days, weekly_weight, default_w)
    blend_steps = _blend_steps(steps_per_day, blend_steps)
    recent = min(blend_steps, len(grid))
    if recent > 0:
        # Recent bias: measured minus profile over the last steps, fading with a time constant of
        # ``blend_steps``.
        past_profile = _load_profile(grid, (-recent, 0), steps_per_day, weeks, days, weekly_weight, default_w)
        errors = grid[len(grid) - recent :] - past_profile
        measured = ~np.isnan(errors)
        if measured.any():
            bias = float(errors[measured].mean())
            forecast = forecast + bias * np.exp(-np.arange(steps, dtype=np.float64) / blend_steps)
    out: FloatArray = np.maximum(forecast, 0.0)
    return out


def pv_from_grid(
    grid_w: FloatArray,
    steps: int,
    steps_per_day: int,
    *,
    days: int = 7,
    ratio_steps: int | None = None,
    fade_steps: float | None = None,
) -> FloatArray:
    """PV production in W (>= 0) for the ``steps`` steps after the grid's last step: the mean of the
    same time slot over the last ``days`` measured days, scaled by the ratio of the last
    ``ratio_steps`` measured to that profile, fading with ``fade_steps``; where no day was measured,
    the last ``ratio_steps``' PV, fading over ``PV_HOLD_HOURS`` (see :func:`pv_from_profile`)."""
    grid = np.asarray(grid_w, dtype=np.float64)
    hour = steps_per_day / 24.0
    recent = min(len(grid), round(PV_RATIO_HOURS * hour) if ratio_steps is None else ratio_steps)
    return pv_from_profile(
        _period_mean(grid, (0, steps), steps_per_day, days),
        _period_mean(grid, (-recent, 0), steps_per_day, days),
        grid[len(grid) - recent :],
        np.exp(-np.arange(steps, dtype=np.float64) / (fade_steps or PV_FADE_HOURS * hour)),
        np.exp(-np.arange(steps, dtype=np.float64) / (PV_HOLD_HOURS * hour)),
    )


def pv_from_profile(
    slot_mean: FloatArray, past: FloatArray, measured: FloatArray, fade: FloatArray, hold: FloatArray
) -> FloatArray:
    """The PV forecast (W, >= 0) from the mean of each step's time slot over the measured days
    (NaN: never measured), the same for the last hour (``past``) and what the last hour measured;
    per step, ``fade``: how much of the weather now still holds there, ``hold``: how much of the
    PV now where no day was measured (``PV_HOLD_HOURS``)."""
    profile = np.nan_to_num(slot_mean, nan=0.0)
    both = ~np.isnan(past) & ~np.isnan(measured)
    expected = float(past[both].sum())
    if expected > 1.0:  # daylight in the last hour; at night there is no weather to read
        ratio = min(PV_MAX_RATIO, max(0.0, float(measured[both].sum()) / expected))
        profile = profile * (fade * ratio + (1.0 - fade))
    # A slot never measured (the first day after installation): the last hour's PV, fading, rather
    # than none: the sun shining now is likely to shine for a while, and a plan that sees no PV
    # would export it and charge the car from the grid at night.
    unmeasured = np.isnan(slot_mean)
    now = measured[~np.isnan(measured)]
    if unmeasured.any() and len(now):
        profile = np.where(unmeasured, float(now.mean()) * hold, profile)
    out: FloatArray = np.maximum(profile, 0.0)
    return out


def _steps_per_day(step: timedelta) -> int:
    return max(1, round(DAY / step))


def forecast_load_w(
    history: Iterable[tuple[datetime, float]],
    start: datetime,
    step: timedelta,
    steps: int,
    *,
    weeks: int = 4,
    days: int = 7,
    weekly_weight: float = DEFAULT_WEEKLY_WEIGHT,
    blend_hours: float = DEFAULT_BLEND_HOURS,
    default_w: float = DEFAULT_HOME_LOAD_W,
) -> FloatArray:
    """Home load in W for ``steps`` steps from ``start`` (aligned to the grid), from timestamped readings."""
    per_day = _steps_per_day(step)
    blend_steps = round(blend_hours * 3600 / step.total_seconds())
    grid = history_grid(history, start, step, load_history_steps(per_day, weeks, days, blend_steps))
    return load_from_grid(
        grid,
        steps,
        per_day,
        weeks=weeks,
        days=days,
        weekly_weight=weekly_weight,
        blend_steps=blend_steps,
        default_w=default_w,
    )


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
    per_day = _steps_per_day(step)
    grid = history_grid(history, start, step, pv_history_steps(per_day, days))
    out = pv_from_grid(grid, steps, per_day, days=days)
    if external:
        for i in range(steps):
            value = external.get(start + i * step)
            if value is not None:
                out[i] = max(0.0, value)
    return out
