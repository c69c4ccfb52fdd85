"""When to ask a price source (pure: no I/O): the local days the plan needs, whether known prices
cover them, and the day-ahead publication times.

Day-ahead markets publish the next day's prices around 12:00-13:00 CET; Octopus publishes Agile
rates around 16:00 UK time. Polling starts at ``first_poll``; a day still missing at ``late`` is
worth a warning.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DayRange",
    "Publication",
    "covered_until",
    "local_days",
    "publication_of",
]


@dataclass(frozen=True, slots=True)
class DayRange:
    """One local day as a UTC range (23 or 25 hours on a DST change)."""

    day: dt.date
    start: dt.datetime
    end: dt.datetime


def local_days(now: dt.datetime, timezone: str, count: int = 2) -> list[DayRange]:
    """Today and the following days (``count`` in all) in ``timezone``, as UTC ranges."""
    tz = zoneinfo.ZoneInfo(timezone)
    today = now.astimezone(tz).date()
    days = []
    for offset in range(count):
        day = today + dt.timedelta(days=offset)
        start = dt.datetime.combine(day, dt.time(0), tz).astimezone(dt.UTC)
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tz).astimezone(dt.UTC)
        days.append(DayRange(day, start, end))
    return days


def covered_until(spans: Iterable[tuple[dt.datetime, dt.datetime]], start: dt.datetime) -> dt.datetime:
    """How far from ``start`` the spans cover time without a gap (``start`` when they do not)."""
    cursor = start
    for span_start, span_end in sorted(spans):
        if span_start > cursor:
            break
        cursor = max(cursor, span_end)
    return cursor


@dataclass(frozen=True, slots=True)
class Publication:
    """When a market publishes the next day's prices, in its own time zone."""

    timezone: str
    first_poll: dt.time
    late: dt.time

    def first_poll_on(self, day: dt.date) -> dt.datetime:
        """When to start asking, on ``day``, for the prices of the day after (UTC)."""
        return self._at(day, self.first_poll)

    def late_on(self, day: dt.date) -> dt.datetime:
        """When, on ``day``, the prices of the day after count as late (UTC)."""
        return self._at(day, self.late)

    def _at(self, day: dt.date, at: dt.time) -> dt.datetime:
        return dt.datetime.combine(day, at, zoneinfo.ZoneInfo(self.timezone)).astimezone(dt.UTC)


DAY_AHEAD = Publication("Europe/Berlin", dt.time(12, 0), dt.time(14, 0))
# Agile rates for the next day appear between 16:00 and 20:00 UK time.
_PUBLICATIONS = {"octopus": Publication("Europe/London", dt.time(16, 0), dt.time(20, 0))}


def publication_of(source_type: str) -> Publication:
    return _PUBLICATIONS.get(source_type, DAY_AHEAD)
