"""Nord Pool day-ahead prices from the data portal API, as current clients use it (pynordpool, which
Home Assistant's ``nordpool`` integration is built on: https://github.com/gjohansson-ST/pynordpool).

``GET /api/DayAheadPrices?date=YYYY-MM-DD&market=DayAhead&deliveryArea=SE3&currency=SEK`` answers one
delivery day (the CET/CEST day) as JSON: ``multiAreaEntries``, each with ``deliveryStart``,
``deliveryEnd`` (UTC) and ``entryPerArea`` {area: price per MWh}, plus ``currency``. The entries are
15 minutes long since the 15-minute day-ahead market of October 2025, an hour before. A day not yet
published answers 204 No Content.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import zoneinfo
from typing import Any

from controller.config.sources import NordPoolSource
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

__all__ = ["AREA_CURRENCIES", "NordPoolPrices", "nord_pool_area", "parse_nord_pool_prices"]

# Delivery areas (pynordpool's ``const.AREAS``) and the currency each trades in locally. Bulgaria
# has paid in EUR since 1 January 2026.
AREA_CURRENCIES: dict[str, str] = {
    "EE": "EUR",
    "LT": "EUR",
    "LV": "EUR",
    "AT": "EUR",
    "BE": "EUR",
    "FR": "EUR",
    "GER": "EUR",
    "NL": "EUR",
    "PL": "PLN",
    "DK1": "DKK",
    "DK2": "DKK",
    "FI": "EUR",
    "NO1": "NOK",
    "NO2": "NOK",
    "NO3": "NOK",
    "NO4": "NOK",
    "NO5": "NOK",
    "SE1": "SEK",
    "SE2": "SEK",
    "SE3": "SEK",
    "SE4": "SEK",
    "BG": "EUR",
    "TEL": "RON",
    "SYS": "EUR",
}
# Names people write for the areas Nord Pool spells its own way.
_AREA_ALIASES = {"DE": "GER", "DE-LU": "GER", "DE_LU": "GER", "DELU": "GER", "RO": "TEL"}
# What the API converts to (pynordpool's ``Currency``).
_CURRENCIES = frozenset({"BGN", "DKK", "EUR", "NOK", "PLN", "RON", "SEK"})
_DELIVERY_DAY_ZONE = zoneinfo.ZoneInfo("Europe/Oslo")  # CET/CEST: the zone of Nord Pool's delivery day
_WH_PER_MWH = 1000.0


def nord_pool_area(area: str) -> str:
    """Nord Pool's code of ``area`` (DE -> GER, RO -> TEL); a SourceError naming the choices else."""
    code = area.strip().upper()
    code = _AREA_ALIASES.get(code, code)
    if code not in AREA_CURRENCIES:
        raise SourceError(
            f"unknown Nord Pool area {area!r}: set area to one of {', '.join(sorted(AREA_CURRENCIES))}"
        )
    return code


def _delivery_days(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    """The CET/CEST days that ``[start, end)`` touches."""
    first = start.astimezone(_DELIVERY_DAY_ZONE).date()
    last = (end - dt.timedelta(microseconds=1)).astimezone(_DELIVERY_DAY_ZONE).date()
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


@register_source("prices", "nord_pool")
class NordPoolPrices(HttpSource[NordPoolSource, FetchedPrices]):
    """Day-ahead prices of ``cfg.area``, one request per delivery day."""

    default_base_url = "https://dataportal-api.nordpoolgroup.com/api"

    @property
    def currency(self) -> str:
        """``cfg.currency``; else the site currency when it is EUR or the area's own; else the area's own."""
        area_currency = AREA_CURRENCIES[nord_pool_area(self.cfg.area)]
        if self.cfg.currency is not None:
            wanted = self.cfg.currency.upper()
            if wanted not in _CURRENCIES:
                raise SourceError(
                    f"Nord Pool has no prices in {wanted}: set currency to EUR or {area_currency}"
                )
            return wanted
        site = self.ctx.currency.upper()
        return site if site in ("EUR", area_currency) else area_currency

    def requests(self, start: dt.datetime, end: dt.datetime) -> list[HttpRequest]:
        if end <= start:
            return []
        area = nord_pool_area(self.cfg.area)
        currency = self.currency
        return [
            HttpRequest(
                f"{self.base_url}/DayAheadPrices",
                params={
                    "date": day.isoformat(),
                    "market": "DayAhead",
                    "deliveryArea": area,
                    "currency": currency,
                },
            )
            for day in _delivery_days(start, end)
        ]

    def parse(self, request: HttpRequest, body: bytes) -> FetchedPrices:
        return parse_nord_pool_prices(body, request.params["deliveryArea"], request.params["currency"])

    def error_reason(self, status: int, body: bytes) -> str:
        # No published description of the portal's error bodies was found; they are small JSON
        # objects or plain text, so a message field is used where there is one.
        answer = json_or_none(body)
        if isinstance(answer, dict):
            for key in ("message", "detail", "title", "error"):
                text = answer.get(key)
                if isinstance(text, str) and text.strip():
                    return f"HTTP {status}: {text.strip()[:200]}"
        return super().error_reason(status, body)


def _moment(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise SourceError("Nord Pool answer: deliveryStart/deliveryEnd missing")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise SourceError(f"Nord Pool answer: bad time {value[:30]!r}") from None
    if moment.tzinfo is None:
        raise SourceError(f"Nord Pool answer: time {value[:30]!r} has no zone")
    return moment.astimezone(dt.UTC)


def _entry_slot(entry: Any, area: str) -> PriceSlot:
    if not isinstance(entry, dict):
        raise SourceError("Nord Pool answer: an entry of multiAreaEntries is not an object")
    start, end = _moment(entry.get("deliveryStart")), _moment(entry.get("deliveryEnd"))
    if end <= start:
        raise SourceError(f"Nord Pool answer: entry at {start:%Y-%m-%dT%H:%MZ} ends before it starts")
    per_area = entry.get("entryPerArea")
    price = per_area.get(area) if isinstance(per_area, dict) else None
    if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price):
        raise SourceError(f"Nord Pool answer: no price for {area} at {start:%Y-%m-%dT%H:%MZ}")
    return PriceSlot(start, end, price / _WH_PER_MWH)


def parse_nord_pool_prices(body: bytes, area: str, currency: str) -> FetchedPrices:
    """The prices of ``area`` in one DayAheadPrices answer, per kWh; an empty body (204) is no slots."""
    if not body.strip():
        return FetchedPrices((), currency)
    answer = json_answer(body, "Nord Pool answer is not JSON")
    if not isinstance(answer, dict):
        raise SourceError("Nord Pool answer is not a JSON object")
    answered_currency = answer.get("currency", currency)
    if not isinstance(answered_currency, str) or answered_currency.upper() != currency.upper():
        raise SourceError(f"Nord Pool answered in {str(answered_currency)[:10]}, asked for {currency}")
    entries = answer.get("multiAreaEntries")
    if not isinstance(entries, list):
        raise SourceError("Nord Pool answer has no multiAreaEntries list")
    slots = sorted((_entry_slot(entry, area) for entry in entries), key=lambda slot: slot.start)
    for before, after in itertools.pairwise(slots):
        if after.start < before.end:
            raise SourceError(f"Nord Pool answer: entries overlap at {after.start:%Y-%m-%dT%H:%MZ}")
    return FetchedPrices(tuple(slots), currency.upper())
