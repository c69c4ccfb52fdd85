"""aWATTar market data: EPEX day-ahead prices for Germany or Austria, no key (pure: no sockets here).

``GET {base}/v1/marketdata?start=<epoch ms>&end=<epoch ms>`` answers::

    {"object": "list",
     "data": [{"start_timestamp": 1765062000000, "end_timestamp": 1765065600000,
               "marketprice": 92.51, "unit": "Eur/MWh"}, ...],
     "url": "/de/v1/marketdata"}

Documented at https://www.awattar.de/services/api; evcc (``tariff/awattar/api.go``) and ha_epex_spot
(``EPEXSpot/Awattar``) read the same fields. ha_epex_spot (Jan 2026) still offers only 60-minute slots for
aWATTar after the day-ahead market went to 15 minutes (Oct 2025); every entry carries its own start and
end, so 15-minute entries parse the same way should the API publish them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from typing import Any, ClassVar

from controller.config.sources import AwattarSource
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

__all__ = ["AwattarPrices"]

_BASE_URL_BY_COUNTRY = {"DE": "https://api.awattar.de", "AT": "https://api.awattar.at"}
_PATH = "/v1/marketdata"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_HOUR = dt.timedelta(hours=1)
# Bounds on a timestamp in ms (2000..2100): anything outside is not a price slot, and stays clear of
# datetime overflow.
_MIN_MS, _MAX_MS = 946_684_800_000, 4_102_444_800_000
_KWH_PER_UNIT = {"eur/mwh": 1000.0, "eur/kwh": 1.0}


def _epoch_ms(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // dt.timedelta(milliseconds=1)


def _whole_hour_before(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def _moment(value: Any, what: str) -> dt.datetime:
    if isinstance(value, bool) or not isinstance(value, int) or not _MIN_MS <= value <= _MAX_MS:
        raise SourceError(f"{what} {str(value)[:30]!r} is not a time in epoch milliseconds")
    return _EPOCH + dt.timedelta(milliseconds=value)


def _slot(i: int, entry: Any) -> PriceSlot:
    if not isinstance(entry, dict):
        raise SourceError(f"data[{i}] is not an object")
    start = _moment(entry.get("start_timestamp"), f"data[{i}].start_timestamp")
    end = _moment(entry.get("end_timestamp"), f"data[{i}].end_timestamp")
    if end <= start:
        raise SourceError(f"data[{i}] ends before it starts")
    unit = entry.get("unit")
    per_kwh = _KWH_PER_UNIT.get(unit.strip().lower()) if isinstance(unit, str) else None
    if per_kwh is None:
        raise SourceError(f"data[{i}].unit {str(unit)[:20]!r} is not Eur/MWh")
    price = entry.get("marketprice")
    if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price):
        raise SourceError(f"data[{i}].marketprice {str(price)[:20]!r} is not a number")
    return PriceSlot(start, end, price / per_kwh)


def _sorted_slots(slots: list[PriceSlot]) -> tuple[PriceSlot, ...]:
    slots.sort(key=lambda slot: slot.start)
    for before, after in itertools.pairwise(slots):
        if after.start < before.end:
            raise SourceError(f"slots overlap at {after.start.isoformat()}")
    return tuple(slots)


@register_source("prices", "awattar")
class AwattarPrices(HttpSource[AwattarSource, FetchedPrices]):
    """Day-ahead prices in EUR per kWh (market price only: no taxes or fees)."""

    default_base_url: ClassVar[str] = _BASE_URL_BY_COUNTRY["DE"]

    @property
    def base_url(self) -> str:
        return self.cfg.base_url or _BASE_URL_BY_COUNTRY[self.cfg.country]

    def requests(self, start: dt.datetime, end: dt.datetime) -> list[HttpRequest]:
        # Whole hours, so the slot holding ``start`` is asked for too (the market's slots start on the
        # hour or quarter hour, and Germany's and Austria's offsets are whole hours).
        first = _whole_hour_before(start)
        last = _whole_hour_before(end)
        if last < end:
            last += _HOUR
        params = {"start": str(_epoch_ms(first)), "end": str(_epoch_ms(last))}
        return [HttpRequest(self.base_url + _PATH, params=params)]

    def parse(self, request: HttpRequest, body: bytes) -> FetchedPrices:
        answer = json_answer(body)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise SourceError("answer has no data list")
        slots = [_slot(i, entry) for i, entry in enumerate(data)]
        return FetchedPrices(_sorted_slots(slots), currency="EUR", retail=False)

    def error_reason(self, status: int, body: bytes) -> str:
        # No published example of an aWATTar error body was found: take an "error" or "message" text
        # when the body is a JSON object with one, else the start of the body.
        answer = json_or_none(body)
        if isinstance(answer, dict):
            for key in ("error", "message"):
                text = answer.get(key)
                if isinstance(text, str) and text.strip():
                    return f"HTTP {status}: {text.strip()[:160]}"
        return super().error_reason(status, body)
