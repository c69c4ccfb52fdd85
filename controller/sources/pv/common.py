"""What the PV forecast sources share (pure): the azimuth both services use, the arrays grouped by
orientation, and the sum of the per-orientation forecasts into the site's one forecast."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from typing import Any

from controller.config.sources import PvArray
from controller.signals import PowerForecast
from controller.signals.payload import MAX_LIMIT_W, Segment
from controller.sources.base import SourceError
from controller.values import finite_number

__all__ = ["array_power_w", "check_power_w", "number", "south_azimuth_deg", "sum_forecasts"]


def south_azimuth_deg(compass_deg: float) -> float:
    """Compass degrees (0 north, 90 east, 180 south, 270 west) in the convention of Open-Meteo and
    forecast.solar: 0 south, -90 east, 90 west, 180 north (range -180 < a <= 180)."""
    south = (compass_deg - 180.0) % 360.0  # 0 south .. 270 east
    return south - 360.0 if south > 180.0 else south


def array_power_w(array: PvArray, dc_power_w: float) -> float:
    """AC power of one array: ``dc_power_w`` clipped at its inverter's AC limit (when known)."""
    limit_w = math.inf if array.inverter_kw is None else array.inverter_kw * 1000.0
    return min(max(0.0, dc_power_w), limit_w)


def number(value: Any, what: str) -> float:
    """A JSON number as a finite float (``true`` and ``null`` are not numbers)."""
    try:
        return finite_number(value, what)
    except ValueError as exc:
        raise SourceError(str(exc)) from None


def check_power_w(value: float, what: str) -> float:
    if not 0.0 <= value <= MAX_LIMIT_W:
        raise SourceError(f"{what} {value:g} W is not between 0 and {MAX_LIMIT_W:g} W")
    return value


def _value_at(segments: Sequence[Segment], starts: Sequence[float], at: float) -> float | None:
    """The value of the segment covering ``at`` (a Unix time), None when none does."""
    i = bisect.bisect_right(starts, at) - 1
    if i < 0 or segments[i][1].timestamp() <= at:
        return None
    return segments[i][2]


def sum_forecasts(parts: Sequence[PowerForecast]) -> PowerForecast:
    """The site's forecast from one forecast per array (or per orientation): the sum over each window
    that every part covers. A window some part lacks is left out: the sum there would understate
    the site's production, and the blend falls back to the history profile instead.

    ``issued_at`` is the oldest of the parts' (None when any part has none)."""
    if not parts:
        return PowerForecast(())
    if len(parts) == 1:
        return parts[0]
    ordered = [sorted(p.segments, key=lambda s: s[0]) for p in parts]
    starts = [[s[0].timestamp() for s in segs] for segs in ordered]
    bounds = sorted({t for segs in ordered for s in segs for t in s[:2]})
    summed: list[Segment] = []
    for a, b in itertools.pairwise(bounds):
        mid = (a.timestamp() + b.timestamp()) / 2.0
        values = [_value_at(segs, st, mid) for segs, st in zip(ordered, starts, strict=True)]
        if all(v is not None for v in values):
            summed.append((a, b, math.fsum(v for v in values if v is not None)))
    issued = [p.issued_at for p in parts]
    oldest = None if any(t is None for t in issued) else min(t for t in issued if t is not None)
    return PowerForecast(tuple(summed), oldest)
