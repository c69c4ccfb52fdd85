"""Segments onto the plan's step grid (pure): which parts of which segments fall into each step."""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from controller.domain import ensure_utc
from controller.signals.payload import Segment

__all__ = ["BoolArray", "FloatArray", "check_grid", "mean_on_grid", "minute_mean_on_grid", "overlaps"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def overlaps(
    segments: Sequence[Segment], start: dt.datetime, step: dt.timedelta, n: int
) -> list[list[tuple[float, float]]]:
    """Per step, the (seconds covered, value) pieces of the segments that overlap it."""
    pieces: list[list[tuple[float, float]]] = [[] for _ in range(n)]
    step_s = step.total_seconds()
    end = start + step * n
    for seg_start, seg_end, value in segments:
        if seg_end <= start or seg_start >= end:
            continue
        first = max(0, int((seg_start - start) // step))
        last = min(n - 1, math.ceil((seg_end - start) / step) - 1)
        for k in range(first, last + 1):
            k_start = (seg_start - start).total_seconds() - k * step_s
            k_end = (seg_end - start).total_seconds() - k * step_s
            covered = min(k_end, step_s) - max(k_start, 0.0)
            if covered > 0:
                pieces[k].append((covered, value))
    return pieces


def check_grid(start: dt.datetime, step: dt.timedelta, n: int) -> dt.datetime:
    """``start`` in UTC, after checking the grid's shape (a positive step, ``n >= 0``)."""
    if step <= dt.timedelta(0):
        raise ValueError("step must be positive")
    if n < 0:
        raise ValueError("n must be >= 0")
    return ensure_utc(start)


def mean_on_grid(
    segments: Sequence[Segment], start: dt.datetime, step: dt.timedelta, n: int
) -> tuple[FloatArray, BoolArray]:
    """Time-weighted mean over the covered part of each step; ``known`` where any part is covered."""
    values = np.zeros(n)
    known = np.zeros(n, dtype=np.bool_)
    for k, pieces in enumerate(overlaps(segments, start, step, n)):
        covered = math.fsum(c for c, _ in pieces)
        if covered > 0:
            values[k] = math.fsum(c * v for c, v in pieces) / covered
            known[k] = True
    return values, known


def minute_mean_on_grid(
    value_at: Callable[[dt.datetime], float],
    tz: zoneinfo.ZoneInfo,
    start: dt.datetime,
    step: dt.timedelta,
    n: int,
) -> FloatArray:
    """A value of local time (a time-of-use price, a grid fee) per step: its mean over the step by the
    minute, read in ``tz`` (so DST days have their 23 or 25 hours)."""
    start = check_grid(start, step, n)
    minutes = max(1, int(step.total_seconds() // 60))
    out = np.empty(n)
    for k in range(n):
        t0 = start + step * k
        samples = [value_at((t0 + dt.timedelta(minutes=m)).astimezone(tz)) for m in range(minutes)]
        out[k] = math.fsum(samples) / len(samples)
    return out
