"""Energi Data Service (Energinet, Denmark): day-ahead prices of DK1 or DK2, no key (pure: no sockets here).

Dataset ``DayAheadPrices`` (15-minute since the day-ahead market's switch on 1 Oct 2025; it replaced the
hourly ``Elspotprices``). ``GET {base}/dataset/DayAheadPrices?start=..&end=..&filter={"PriceArea":["DK1"]}
&columns=..&sort=TimeUTC ASC&limit=..`` answers::

    {"total": 96, "limit": 104, "dataset": "DayAheadPrices",
     "records": [{"TimeUTC": "2026-12-06T23:00:00", "TimeDK": "2026-12-07T00:00:00", "PriceArea": "DK1",
                  "DayAheadPriceDKK": 612.35, "DayAheadPriceEUR": 82.07}, ...]}

Prices per MWh; ``TimeUTC`` is the slot's start in UTC, written without an offset. Query syntax: the API
guide (https://www.energidataservice.dk/guides/api-guides): ``start`` and ``end`` are Danish wall-clock
time (``yyyy-MM-ddTHH:mm``), ``end`` excluded. Field names as read by openHAB's energidataservice
binding (``DayAheadPriceRecord``: TimeUTC, DayAheadPriceDKK, DayAheadPriceEUR, both prices nullable) and
evcc's ``energinet-price`` template (``.TimeUTC + "Z"``, a slot ends 900 s after it starts).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import zoneinfo
from typing import Any, ClassVar

from controller.config.sources import EnergiDataServiceSource
from controller.signals import PriceSlot
from controller.sources.base import (
    HttpRequest,
    HttpSource,
    SourceError,
    json_answer,
    json_or_none,
    register_source,
)
from controller.sources.prices.common import FetchedPrices

__all__ = ["EnergiDataServicePrices"]

_PATH = "/dataset/DayAheadPrices"
_DENMARK = zoneinfo.ZoneInfo("Europe/Copenhagen")
_QUARTER = dt.timedelta(minutes=15)
_HOUR = dt.timedelta(hours=1)
# Rows a widened range can add: an hour before and after (see ``_danish_wall_time``).
_SPARE_ROWS = 8


def _is_repeated(local: dt.datetime) -> bool:
    """True for a wall-clock time that happens twice (the hour repeated when summer time ends)."""
    return local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset()


def _danish_wall_time(moment: dt.datetime, outward: dt.timedelta) -> str:
    """``moment`` as the API's Danish wall-clock text. Within the repeated hour the text names two
    instants, so the range is widened by an hour (``outward``): extra rows are harmless, missing ones not."""
    local = moment.astimezone(_DENMARK)
    if _is_repeated(local):
        local = (moment + outward).astimezone(_DENMARK)
    return local.strftime("%Y-%m-%dT%H:%M")


def _slot_start(i: int, record: dict[str, Any]) -> dt.datetime:
    text = record.get("TimeUTC")
    try:
        start = dt.datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        start = None
    if start is None:
        raise SourceError(f"records[{i}].TimeUTC {str(text)[:30]!r} is not a time")
    # TimeUTC is UTC without an offset; take an offset into account should one ever be written.
    start = start.replace(tzinfo=dt.UTC) if start.tzinfo is None else start.astimezone(dt.UTC)
    if start.second or start.microsecond or start.minute % 15:
        raise SourceError(f"records[{i}].TimeUTC {text!r} is not on a quarter hour")
    return start


def _price_per_kwh(i: int, record: dict[str, Any], field: str) -> float | None:
    price = record.get(field)
    if price is None:
        return None  # not published (yet): the slot stays unknown
    if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price):
        raise SourceError(f"records[{i}].{field} {str(price)[:20]!r} is not a number")
    return price / 1000.0


def _slot_length(starts: list[dt.datetime]) -> dt.timedelta:
    """15 minutes, or an hour when every row starts on the hour and no two rows are less than an hour
    apart (hourly rows). A single row on the hour is taken as a quarter hour: the dataset's resolution."""
    gaps = [after - before for before, after in itertools.pairwise(starts)]
    hourly = bool(gaps) and min(gaps) >= _HOUR and all(start.minute == 0 for start in starts)
    return _HOUR if hourly else _QUARTER


def _records(body: bytes) -> list[dict[str, Any]]:
    answer = json_answer(body)
    records = answer.get("records") if isinstance(answer, dict) else None
    if not isinstance(records, list):
        raise SourceError("answer has no records list")
    total = answer.get("total")
    if isinstance(total, int) and not isinstance(total, bool) and total > len(records):
        raise SourceError(f"answer holds {len(records)} of {total} records (limit too small)")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise SourceError(f"records[{i}] is not an object")
    return records


@register_source("prices", "energi_data_service")
class EnergiDataServicePrices(HttpSource[EnergiDataServiceSource, FetchedPrices]):
    """Day-ahead prices per kWh in DKK or EUR (``cfg.currency``; market price only, no taxes or tariffs)."""

    default_base_url: ClassVar[str] = "https://api.energidataservice.dk"

    @property
    def _price_field(self) -> str:
        return f"DayAheadPrice{self.cfg.currency}"

    def requests(self, start: dt.datetime, end: dt.datetime) -> list[HttpRequest]:
        rows = math.ceil((end - start) / _QUARTER) + _SPARE_ROWS
        params = {
            "start": _danish_wall_time(start, -_HOUR),
            "end": _danish_wall_time(end, _HOUR),
            "filter": json.dumps({"PriceArea": [self.cfg.area]}, separators=(",", ":")),
            "columns": f"TimeUTC,PriceArea,{self._price_field}",
            "sort": "TimeUTC ASC",
            "limit": str(max(rows, 1)),
        }
        return [HttpRequest(self.base_url + _PATH, params=params)]

    def parse(self, request: HttpRequest, body: bytes) -> FetchedPrices:
        # Rows of another area are left out, should the filter ever be ignored.
        records = [r for r in _records(body) if r.get("PriceArea", self.cfg.area) == self.cfg.area]
        starts = [_slot_start(i, record) for i, record in enumerate(records)]
        prices = [_price_per_kwh(i, record, self._price_field) for i, record in enumerate(records)]
        order = sorted(range(len(starts)), key=starts.__getitem__)
        ordered = [starts[i] for i in order]
        for before, after in itertools.pairwise(ordered):
            if after == before:
                raise SourceError(f"two rows for {after.isoformat()}")
        length = _slot_length(ordered)
        slots = tuple(
            PriceSlot(starts[i], starts[i] + length, price) for i in order if (price := prices[i]) is not None
        )
        return FetchedPrices(slots, currency=self.cfg.currency, retail=False)

    def error_reason(self, status: int, body: bytes) -> str:
        # No published example of the API's error body was found: take an "error" and/or "message" text
        # when the body is a JSON object with one, else the start of the body.
        answer = json_or_none(body)
        if isinstance(answer, dict):
            texts = [answer.get(key) for key in ("error", "message")]
            words = [text.strip() for text in texts if isinstance(text, str) and text.strip()]
            if words:
                return f"HTTP {status}: {': '.join(words)[:160]}"
        return super().error_reason(status, body)
