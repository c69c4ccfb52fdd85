"""The PV forecast the plan uses (pure): fetched forecasts corrected by the measured PV, the history
profile where none covers a step.

The rule, per plan step ``k`` (``k = 0`` the step now running):

1. **Sources.** Each fetched forecast (Open-Meteo, forecast.solar, ...) on the plan grid; where
   several cover a step, their mean.
2. **Scale from measured PV.** Over the last ``LOOKBACK_HOURS`` (6 h) before the plan starts, take
   the steps with a measured PV value whose fetched forecast said at least ``DAYLIGHT_W`` (50 W),
   and of those the last ``RATIO_HOURS`` (3 h) of daylight. With at least ``MIN_RATIO_HOURS``
   (30 min) of them, the scale is measured energy / forecast energy over those steps, clipped to
   ``[MIN_SCALE, MAX_SCALE]`` = [0.5, 1.5]; otherwise (night, no meter, no forecast of the recent
   past) it is 1. A bounded scale keeps one odd reading (snow on the modules, a tripped inverter)
   from zeroing or doubling the day.
3. **Fade.** The scale applies fully to step 0 and fades linearly back to 1 over the next
   ``FADE_HOURS`` (4 h): ``scale_k = 1 + (scale - 1) * max(0, 1 - t_k / 4 h)``, ``t_k`` the time
   from the plan's start to step ``k``: the weather now tells little about the afternoon after next.
4. **Fallback.** A step no fetched forecast covers takes the history profile
   (:func:`controller.forecast.profile.pv_from_grid`, itself corrected by the last hour).

The result is W per step, >= 0. (A forecast from the MQTT topic still wins over all of this where
it covers a step; that is the caller's, ``controller.forecasts``.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "DAYLIGHT_W",
    "FADE_HOURS",
    "LOOKBACK_HOURS",
    "MAX_SCALE",
    "MIN_RATIO_HOURS",
    "MIN_SCALE",
    "RATIO_HOURS",
    "BlendedPv",
    "SourceOnGrid",
    "blend_pv_w",
    "combine_sources",
    "fade_scale",
    "measured_scale",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
SourceOnGrid = tuple[FloatArray, BoolArray]
"""One source on a grid: W per step and where it covers the step."""

LOOKBACK_HOURS = 6.0
RATIO_HOURS = 3.0
MIN_RATIO_HOURS = 0.5
DAYLIGHT_W = 50.0
MIN_SCALE = 0.5
MAX_SCALE = 1.5
FADE_HOURS = 4.0


@dataclass(frozen=True, slots=True)
class BlendedPv:
    power_w: FloatArray
    """W per plan step, >= 0."""
    scale: float
    """The measured/forecast scale at the plan's start (1 when there was nothing to compare)."""
    fetched: BoolArray
    """Steps a fetched forecast covered (the others are the history profile)."""


def _steps_per_hour(step: dt.timedelta) -> float:
    if step <= dt.timedelta(0):
        raise ValueError("step must be positive")
    return 3600.0 / step.total_seconds()


def combine_sources(sources: Sequence[SourceOnGrid], n: int) -> SourceOnGrid:
    """Per step the mean of the sources that cover it; covered where any does."""
    total = np.zeros(n, dtype=np.float64)
    count = np.zeros(n, dtype=np.float64)
    for power_w, covered in sources:
        values = np.asarray(power_w, dtype=np.float64)
        mask = np.asarray(covered, dtype=np.bool_) & np.isfinite(values)
        total += np.where(mask, values, 0.0)
        count += mask
    covered_any: BoolArray = count > 0
    mean: FloatArray = np.where(covered_any, total / np.maximum(count, 1.0), 0.0)
    return mean, covered_any


def measured_scale(
    measured_w: FloatArray, fetched_w: FloatArray, fetched_covered: BoolArray, step: dt.timedelta
) -> float:
    """Measured / fetched energy over the last ``RATIO_HOURS`` of daylight steps (rule 2), clipped
    to ``[MIN_SCALE, MAX_SCALE]``; 1 with less than ``MIN_RATIO_HOURS`` of them. The arrays are the
    same recent steps, oldest first, ``measured_w`` NaN where nothing was measured."""
    per_hour = _steps_per_hour(step)
    measured = np.asarray(measured_w, dtype=np.float64)
    fetched = np.asarray(fetched_w, dtype=np.float64)
    usable = np.asarray(fetched_covered, dtype=np.bool_) & np.isfinite(measured) & (fetched >= DAYLIGHT_W)
    chosen = np.flatnonzero(usable)[-max(1, round(RATIO_HOURS * per_hour)) :]
    if len(chosen) < max(1, round(MIN_RATIO_HOURS * per_hour)):
        return 1.0
    ratio = float(np.maximum(measured[chosen], 0.0).sum()) / float(fetched[chosen].sum())
    return min(MAX_SCALE, max(MIN_SCALE, ratio))


def fade_scale(scale: float, n: int, step: dt.timedelta) -> FloatArray:
    """Per plan step the scale fading linearly from ``scale`` at step 0 to 1 after ``FADE_HOURS``."""
    hours = np.arange(n, dtype=np.float64) / _steps_per_hour(step)
    weight = np.clip(1.0 - hours / FADE_HOURS, 0.0, 1.0)
    out: FloatArray = 1.0 + (scale - 1.0) * weight
    return out


def blend_pv_w(
    fetched: Sequence[SourceOnGrid],
    history_w: FloatArray,
    recent_measured_w: FloatArray,
    recent_fetched: Sequence[SourceOnGrid],
    step: dt.timedelta,
) -> BlendedPv:
    """The planning PV forecast (module doc): ``fetched`` per source on the plan's steps,
    ``history_w`` the history profile on the same steps, ``recent_measured_w`` the measured PV on the
    steps just before the plan (oldest first, NaN where unknown) and ``recent_fetched`` what each
    source said for those steps (in the same order as ``fetched``)."""
    history = np.asarray(history_w, dtype=np.float64)
    n = len(history)
    recent_n = len(recent_measured_w)
    past_w, past_covered = combine_sources(recent_fetched, recent_n)
    scale = measured_scale(np.asarray(recent_measured_w, dtype=np.float64), past_w, past_covered, step)
    ahead_w, ahead_covered = combine_sources(fetched, n)
    corrected = ahead_w * fade_scale(scale, n, step)
    power: FloatArray = np.maximum(np.where(ahead_covered, corrected, history), 0.0)
    return BlendedPv(power, scale, ahead_covered)
