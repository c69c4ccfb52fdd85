"""The capacity tariff's peak: the month's highest window-average grid import, tracked and capped.

A capacity tariff (Flanders' capaciteitstarief) bills the month's highest average import over a
window of ``window_minutes`` (15) aligned to the wall clock, at least ``minimum_peak_kw``. Windows
are aligned to the epoch, which is the quarter hour in every time zone whose offset is a whole
number of quarter hours; the month turns at local midnight.

* :class:`ImportPeak` follows the grid meter: each reading's import (negative power counts as 0)
  holds until the next reading, at most ``max_gap_s`` (the meter's ``stale_after_s``); what a
  silent meter would have imported is not guessed.
* :func:`planned_peak_w` reads the month's planned peak back from a plan, and
  :func:`capacity_import_cap_w` turns it into a cap on the site's import for the rest of the window:
  ``(planned peak x window length - energy so far) / time left``. The dispatcher applies it like the
  other import caps: it reduces charging only, so the cap never switches the home off nor orders a
  discharge (``grid_limits``).

Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from controller.domain import Plan, ensure_utc

__all__ = [
    "ImportPeak",
    "capacity_import_cap_w",
    "month_key",
    "month_start",
    "next_month_start",
    "planned_peak_w",
    "window_start",
]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def window_start(moment: dt.datetime, window: dt.timedelta) -> dt.datetime:
    """The start of the capacity window that holds ``moment`` (aligned to the epoch)."""
    return _EPOCH + (ensure_utc(moment) - _EPOCH) // window * window


def month_key(moment: dt.datetime, timezone: str) -> tuple[int, int]:
    """(year, month) of ``moment`` in the site's local time."""
    local = ensure_utc(moment).astimezone(zoneinfo.ZoneInfo(timezone))
    return local.year, local.month


def month_start(moment: dt.datetime, timezone: str) -> dt.datetime:
    """Local midnight of the first day of ``moment``'s month, in UTC."""
    zone = zoneinfo.ZoneInfo(timezone)
    local = ensure_utc(moment).astimezone(zone)
    return dt.datetime(local.year, local.month, 1, tzinfo=zone).astimezone(dt.UTC)


def next_month_start(moment: dt.datetime, timezone: str) -> dt.datetime:
    """Local midnight of the first day of the month after ``moment``'s, in UTC."""
    zone = zoneinfo.ZoneInfo(timezone)
    year, month = month_key(moment, timezone)
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return dt.datetime(year, month, 1, tzinfo=zone).astimezone(dt.UTC)


@dataclass(slots=True)
class ImportPeak:
    """Month-to-date peak of window-average import and the energy of the window under way."""

    window: dt.timedelta
    timezone: str
    month: tuple[int, int] | None = None
    """The month ``peak_w`` belongs to (local time)."""
    peak_w: float = 0.0
    """The highest average import of a completed window this month, W."""
    current_start: dt.datetime | None = None
    current_wh: float = 0.0
    """Imported in the window starting at ``current_start`` up to the last reading, Wh."""
    last_at: dt.datetime | None = None
    last_import_w: float = 0.0
    max_gap_s: float = 0.0

    def add(self, at: dt.datetime, power_w: float, max_gap_s: float) -> None:
        """A grid meter reading (+ import) at ``at``; readings must come in time order."""
        at = ensure_utc(at)
        if self.last_at is not None and at < self.last_at:
            return
        if self.last_at is not None:
            self._hold(self.last_at, min(at, self.last_at + dt.timedelta(seconds=self.max_gap_s)))
        self._close_before(window_start(at, self.window))
        self.last_at, self.last_import_w, self.max_gap_s = at, max(power_w, 0.0), max_gap_s

    def restore(self, month_peak_w: float, window_wh: float, now: dt.datetime) -> None:
        """Start from the store's history: the month's peak so far and the open window's energy."""
        now = ensure_utc(now)
        self.month = month_key(now, self.timezone)
        self.peak_w = max(self.peak_w, month_peak_w)
        start = window_start(now, self.window)
        if self.current_start is None or self.current_start < start:
            self.current_start, self.current_wh = start, window_wh

    def month_peak_w(self, now: dt.datetime) -> float:
        """The month-to-date peak at ``now`` (0 when no window of this month has closed)."""
        now = ensure_utc(now)
        start = window_start(now, self.window)
        peak = self.peak_w if self.month == month_key(now, self.timezone) else 0.0
        if self.current_start is not None and self.current_start < start and self._same_month(now):
            peak = max(peak, self._average_w(self.current_wh))  # a window closed without a reading since
        return peak

    def window_wh(self, now: dt.datetime) -> float:
        """Imported in ``now``'s window up to ``now``: the readings, and the last one held up to now."""
        now = ensure_utc(now)
        start = window_start(now, self.window)
        wh = self.current_wh if self.current_start == start else 0.0
        if self.last_at is not None and self.last_at <= now:
            held_from = max(self.last_at, start)
            held_to = min(now, self.last_at + dt.timedelta(seconds=self.max_gap_s))
            if held_to > held_from:
                wh += self.last_import_w * (held_to - held_from).total_seconds() / 3600.0
        return wh

    def _same_month(self, now: dt.datetime) -> bool:
        assert self.current_start is not None
        return month_key(self.current_start, self.timezone) == month_key(now, self.timezone)

    def _average_w(self, wh: float) -> float:
        return wh * 3600.0 / self.window.total_seconds()

    def _hold(self, begin: dt.datetime, end: dt.datetime) -> None:
        """The last reading's import from ``begin`` to ``end``, split at window edges."""
        t = begin
        while t < end:
            start = window_start(t, self.window)
            stop = min(end, start + self.window)
            self._close_before(start)
            self.current_wh += self.last_import_w * (stop - t).total_seconds() / 3600.0
            t = stop

    def _close_before(self, start: dt.datetime) -> None:
        """Close the window under way when ``start`` is a later one; ``start`` becomes current."""
        if self.current_start is not None and self.current_start >= start:
            return
        if self.current_start is not None:
            month = month_key(self.current_start, self.timezone)
            if month != self.month:
                self.month, self.peak_w = month, 0.0
            self.peak_w = max(self.peak_w, self._average_w(self.current_wh))
        self.current_start, self.current_wh = start, 0.0


def _plan_import_wh(plan: Plan, begin: dt.datetime, end: dt.datetime) -> float:
    """Planned grid import over ``[begin, end)``; step 0's power holds from the plan's creation."""
    wh = 0.0
    step = plan.step
    first = max(0, int((begin - plan.start) // step))
    for i in range(first, plan.steps):
        lo = plan.created_at if i == 0 else plan.start + i * step
        hi = plan.start + (i + 1) * step
        if lo >= end:
            break
        overlap_s = (min(hi, end) - max(lo, begin)).total_seconds()
        if overlap_s > 0:
            wh += plan.grid_import_w[i] * overlap_s / 3600.0
    return wh


def planned_peak_w(
    plan: Plan, now: dt.datetime, month_peak_w: float, window_wh: float, window: dt.timedelta, timezone: str
) -> float:
    """The month's peak as the plan has it at ``now``: the month so far, the window under way (its
    energy so far plus the plan's for the rest of it) and the plan's later windows of this month."""
    now = ensure_utc(now)
    start = window_start(now, window)
    hours = window.total_seconds() / 3600.0
    peak = max(month_peak_w, (window_wh + _plan_import_wh(plan, now, start + window)) / hours)
    month_end = min(next_month_start(now, timezone), plan.end)
    begin = start + window
    while begin < month_end:
        peak = max(peak, _plan_import_wh(plan, begin, begin + window) / hours)
        begin += window
    return peak


def capacity_import_cap_w(
    peak_w: float, window_wh: float, now: dt.datetime, window: dt.timedelta
) -> float | None:
    """The average import allowed for the rest of ``now``'s window so that the window's average
    stays at ``peak_w``: ``(peak x window - energy so far) / time left`` (may be below 0: then
    no charging at all). None in the window's last second (nothing left to steer)."""
    now = ensure_utc(now)
    left_s = (window_start(now, window) + window - now).total_seconds()
    if left_s < 1.0:
        return None
    return (peak_w * window.total_seconds() / 3600.0 - window_wh) * 3600.0 / left_s
