"""The daemon's own forecasts (``controller.forecast``) as simulator forecast models.

They run the daemon's method on the same information the daemon would have: the measured history
before now on the plan grid, with the site config's forecast settings.

Incremental, with the daemon's numbers: its profiles are means of the same slot ``P`` steps apart
(a day, a week). For the step ``m = k + j`` (lead ``j``) the anchors are ``m - P``, ``m - 2P`` ...,
skipped back by the whole periods not yet measured: the mean at ``m - (j // P) P`` of the anchors
from one period back. Such a mean depends only on its absolute step, so each is computed once,
when the history first reaches it (``_PeriodMeans``), and so is the home-load blend of the weekly
and the daily one (``_Blend``, per pair of periods skipped); a forecast then slices the tables and
applies the recent-bias correction as ``controller.forecast.profile`` does, on the same numbers in
the same order (``tests/test_sim_daemon_forecast.py`` checks equality with ``load_from_grid`` and
``pv_from_grid``). A history that is not the continuation of the last one (another array, time
going back) starts the tables again.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from controller.config import ForecastConfig
from controller.forecast.profile import (
    DEFAULT_BLEND_HOURS,
    DEFAULT_WEEKLY_WEIGHT,
    PV_FADE_HOURS,
    PV_HOLD_HOURS,
    PV_RATIO_HOURS,
    blend_weekly_daily,
    pv_from_profile,
)
from sim.scenario import FloatArray

__all__ = ["DaemonLoadForecast", "DaemonPvForecast"]

IntArray = npt.NDArray[np.int64]
_Combine = Callable[..., FloatArray]


class _Growing:
    """A float array appended to at its end (amortised: the storage doubles when full)."""

    def __init__(self) -> None:
        self.data: FloatArray = np.empty(1024)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(self, values: FloatArray) -> None:
        end = self.size + len(values)
        if end > len(self.data):
            grown = np.empty(max(end, 2 * len(self.data)))
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : end] = values
        self.size = end

    @property
    def values(self) -> FloatArray:
        return self.data[: self.size]


class _PeriodMeans:
    """Per absolute step ``m``: the mean of the measured values at ``m - P``, ..., ``m - count P``
    (those at or after step 0 and not NaN), NaN where there is none; extended as the history grows.
    ``m`` may reach ``len(history) + P - 1``: its anchors are all measured."""

    def __init__(self, period: int, count: int) -> None:
        self.period = period
        self.count = count
        self.table = _Growing()

    @property
    def values(self) -> FloatArray:
        return self.table.values

    def extend(self, history: FloatArray) -> None:
        have, end = len(self.table), len(history) + self.period
        if end - have > 8:
            self.table.append(self._many(history, have, end))
        elif end > have:  # the usual step: one new mean, in floats (the same sums in the same order)
            self.table.append(np.array([self._one(history, m) for m in range(have, end)]))

    def _one(self, history: FloatArray, m: int) -> float:
        total, count = 0.0, 0
        for back in range(1, self.count + 1):
            index = m - back * self.period
            if index >= 0:
                value = float(history[index])
                if value == value:  # not NaN
                    total += value
                    count += 1
        return total / count if count else math.nan

    def _many(self, history: FloatArray, have: int, end: int) -> FloatArray:
        m = np.arange(have, end, dtype=np.int64)
        sums = np.zeros(len(m))
        counts = np.zeros(len(m), dtype=np.int64)
        for back in range(1, self.count + 1):
            index = m - back * self.period
            inside = index >= 0
            values = history[np.where(inside, index, 0)] if len(history) else np.full(len(m), np.nan)
            valid = inside & ~np.isnan(values)
            counts += valid
            sums += np.where(valid, values, 0.0)
        out: FloatArray = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        return out

    def shifted(self, first: int, stop: int) -> FloatArray:
        """The means at ``[first, stop)`` (NaN before step 0: no anchor there is measured)."""
        if first >= 0:
            return self.values[first:stop]
        head = np.full(min(stop, 0) - first, np.nan)
        return np.concatenate([head, self.values[max(first, 0) : max(stop, 0)]])


def _segments(steps: int, periods: tuple[int, ...]) -> tuple[tuple[int, int, tuple[int, ...]], ...]:
    """The lead range ``[0, steps)`` cut where a whole period of any of ``periods`` is passed:
    ``(first lead, stop lead, periods skipped back per period)``."""
    cuts = sorted({0, steps} | {c for p in periods for c in range(p, steps, p)})
    return tuple((a, b, tuple(a // p for p in periods)) for a, b in itertools.pairwise(cuts))


class _Blend:
    """A table of values per absolute step made of period-mean tables shifted back by whole
    periods (``combine`` of their slices), extended as far as all of them reach."""

    def __init__(self, sources: tuple[_PeriodMeans, ...], shifts: tuple[int, ...], combine: _Combine) -> None:
        self.sources, self.combine = sources, combine
        self.backs = tuple(s * source.period for s, source in zip(shifts, sources, strict=True))
        self.table = _Growing()

    def upto(self, history: FloatArray, stop: int) -> FloatArray:
        if stop > len(self.table):
            for source in self.sources:
                source.extend(history)
            have = len(self.table)
            pairs = tuple(zip(self.sources, self.backs, strict=True))
            end = min(len(src.values) + back for src, back in pairs)
            self.table.append(self.combine(*(src.shifted(have - back, end - back) for src, back in pairs)))
        return self.table.values


class _Tables:
    """The tables of one history as it grows, for one forecast model."""

    def __init__(self, means: tuple[tuple[int, int], ...], combine: _Combine) -> None:
        self.spec, self.combine = means, combine
        self.key: tuple[int, int] | None = None
        self.last_k = -1
        self.means: tuple[_PeriodMeans, ...] = ()
        self.blends: dict[tuple[int, ...], _Blend] = {}
        self.plans: dict[int, tuple[tuple[int, int, tuple[int, ...]], ...]] = {}

    def follow(self, history: FloatArray, k: int) -> None:
        key = (history.__array_interface__["data"][0], len(self.spec))
        if key != self.key or k < self.last_k or k == 0:
            self.key = key
            self.means = tuple(_PeriodMeans(period, count) for period, count in self.spec)
            self.blends = {}
        self.last_k = k

    def blend(self, shifts: tuple[int, ...]) -> _Blend:
        table = self.blends.get(shifts)
        if table is None:
            table = self.blends[shifts] = _Blend(self.means, shifts, self.combine)
        return table

    def profile(self, history: FloatArray, k: int, steps: int) -> FloatArray:
        """The combined profile for the leads ``[0, steps)``."""
        plan = self.plans.get(steps)
        if plan is None:
            plan = self.plans[steps] = _segments(steps, tuple(period for period, _ in self.spec))
        parts = [self.blend(shifts).upto(history, k + b)[k + a : k + b] for a, b, shifts in plan]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def past(self, history: FloatArray, k: int, recent: int) -> FloatArray:
        """The combined profile of the last ``recent`` measured steps (no period skipped)."""
        return self.blend((0,) * len(self.spec)).upto(history, k)[k - recent : k]


def _load_combine(default_w: float) -> _Combine:
    def combine(weekly: FloatArray, daily: FloatArray) -> FloatArray:
        return blend_weekly_daily(weekly, daily, DEFAULT_WEEKLY_WEIGHT, default_w)

    return combine


def _raw(values: FloatArray) -> FloatArray:
    return values


@functools.lru_cache(maxsize=16)
def _fade(steps: int, time_constant: float) -> FloatArray:
    out: FloatArray = np.exp(-np.arange(steps, dtype=np.float64) / time_constant)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, slots=True)
class DaemonLoadForecast:
    settings: ForecastConfig
    name: str = "daemon"
    uses_actuals: bool = False
    _tables: dict[int, _Tables] = field(default_factory=dict, compare=False, repr=False)

    def forecast(
        self, history: FloatArray, actual_ahead: FloatArray | None, k: int, steps: int, steps_per_day: int
    ) -> FloatArray:
        """``controller.forecast.load_from_grid`` on the history the daemon keeps, incrementally."""
        spd = steps_per_day
        tables = self._tables.get(spd)
        if tables is None:
            means = ((7 * spd, self.settings.load_history_weeks), (spd, 7))
            tables = self._tables[spd] = _Tables(means, _load_combine(self.settings.default_home_load_w))
        history = history[:k]
        tables.follow(history, k)
        forecast = tables.profile(history, k, steps)
        blend_steps = round(DEFAULT_BLEND_HOURS * spd / 24.0)
        recent = min(blend_steps, k)
        if recent > 0:
            errors = history[k - recent :] - tables.past(history, k, recent)
            measured = ~np.isnan(errors)
            if measured.any():
                bias = float(errors[measured].mean())
                forecast = forecast + bias * _fade(steps, blend_steps)
        out: FloatArray = np.maximum(forecast, 0.0)
        return out


@dataclass(frozen=True, slots=True)
class DaemonPvForecast:
    settings: ForecastConfig
    name: str = "daemon"
    uses_actuals: bool = False
    _tables: dict[int, _Tables] = field(default_factory=dict, compare=False, repr=False)

    def forecast(
        self, history: FloatArray, actual_ahead: FloatArray | None, k: int, steps: int, steps_per_day: int
    ) -> FloatArray:
        """``controller.forecast.pv_from_grid`` on the history the daemon keeps, incrementally."""
        spd = steps_per_day
        tables = self._tables.get(spd)
        if tables is None:
            tables = self._tables[spd] = _Tables(((spd, self.settings.pv_history_days),), _raw)
        history = history[:k]
        tables.follow(history, k)
        hour = spd / 24.0
        recent = min(k, round(PV_RATIO_HOURS * hour))
        return pv_from_profile(
            tables.profile(history, k, steps),
            tables.past(history, k, recent) if recent > 0 else np.zeros(0),
            history[k - recent :],
            _fade(steps, PV_FADE_HOURS * hour),
            _fade(steps, PV_HOLD_HOURS * hour),
        )
