"""Octopus Energy (GB): unit rates of a public tariff, e.g. Agile import or Agile Outgoing export, no key
(pure: no sockets here).

``GET {base}/v1/products/{product}/electricity-tariffs/E-1R-{product}-{region}/standard-unit-rates/
?period_from=..Z&period_to=..Z&page_size=..`` answers (newest first, pence per kWh)::

    {"count": 48, "next": null, "previous": null,
     "results": [{"value_exc_vat": 21.5, "value_inc_vat": 22.575, "valid_from": "2026-12-06T23:30:00Z",
                  "valid_to": "2026-12-07T00:00:00Z", "payment_method": null}, ...]}

Fields as read by evcc (``tariff/octopus/rest/api.go``); many public clients ask for
``page_size=1500``, the largest page. ``valid_to`` is null for a rate with no end yet;
``payment_method`` is null, ``DIRECT_DEBIT`` or ``NON_DIRECT_DEBIT`` (tariffs priced by payment method
list both, over the same periods). Errors answer ``{"detail": "..."}`` (and, for a bad parameter, a
list of messages per parameter).

One page per request: ``page_size`` is chosen to hold every rate of the request's range (long ranges
are split), and an answer that still says there is a ``next`` page is refused rather than cut short.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from typing import Any, ClassVar

from controller.config.sources import OctopusSource
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

__all__ = ["OctopusPrices"]

_HALF_HOUR = dt.timedelta(minutes=30)
_MAX_PAGE_SIZE = 1500  # the API's largest page
# Half hours per request: room for each half hour twice (rates per payment method) plus a few more.
_MAX_HALF_HOURS = 700
_SPARE_RATES = 4
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _utc_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime(_TIME_FORMAT)


def _time(value: Any, what: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise SourceError(f"{what} {str(value)[:30]!r} is not a time with an offset")
    return moment.astimezone(dt.UTC)


def _window(request: HttpRequest) -> tuple[dt.datetime, dt.datetime]:
    """The range the request asked for: rates are clipped to it (an open-ended rate ends there)."""
    return (
        _time(request.params.get("period_from"), "period_from"),
        _time(request.params.get("period_to"), "period_to"),
    )


def _rates(body: bytes) -> list[Any]:
    answer = json_answer(body)
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list):
        raise SourceError("answer has no results list")
    if answer.get("next") is not None:
        raise SourceError(f"answer has more pages ({str(answer.get('count'))[:10]} rates in all)")
    return results


def _slot(i: int, rate: Any, window: tuple[dt.datetime, dt.datetime]) -> PriceSlot | None:
    """The rate's slot within ``window`` in GBP per kWh, or None when it lies outside."""
    if not isinstance(rate, dict):
        raise SourceError(f"results[{i}] is not an object")
    start = _time(rate.get("valid_from"), f"results[{i}].valid_from")
    valid_to = rate.get("valid_to")
    end = window[1] if valid_to is None else _time(valid_to, f"results[{i}].valid_to")
    if end <= start:
        raise SourceError(f"results[{i}] ends before it starts")
    pence = rate.get("value_inc_vat")
    if isinstance(pence, bool) or not isinstance(pence, int | float) or not math.isfinite(pence):
        raise SourceError(f"results[{i}].value_inc_vat {str(pence)[:20]!r} is not a number")
    start, end = max(start, window[0]), min(end, window[1])
    return PriceSlot(start, end, pence / 100.0) if start < end else None


@register_source("prices", "octopus")
class OctopusPrices(HttpSource[OctopusSource, FetchedPrices]):
    """Unit rates in GBP per kWh including VAT: the retail price, no formula goes on top."""

    default_base_url: ClassVar[str] = "https://api.octopus.energy"

    @property
    def _rates_url(self) -> str:
        product = self.cfg.product_code
        tariff = f"E-1R-{product}-{self.cfg.region}"
        return f"{self.base_url}/v1/products/{product}/electricity-tariffs/{tariff}/standard-unit-rates/"

    def requests(self, start: dt.datetime, end: dt.datetime) -> list[HttpRequest]:
        found: list[HttpRequest] = []
        part_start = start
        while part_start < end:
            part_end = min(end, part_start + _MAX_HALF_HOURS * _HALF_HOUR)
            half_hours = math.ceil((part_end - part_start) / _HALF_HOUR)
            params = {
                "period_from": _utc_text(part_start),
                "period_to": _utc_text(part_end),
                "page_size": str(min(_MAX_PAGE_SIZE, 2 * half_hours + _SPARE_RATES)),
            }
            found.append(HttpRequest(self._rates_url, params=params))
            part_start = part_end
        return found

    def parse(self, request: HttpRequest, body: bytes) -> FetchedPrices:
        window = _window(request)
        # A rate for another payment method than the site's is left out (null: for every method).
        refused = "NON_DIRECT_DEBIT" if self.cfg.direct_debit else "DIRECT_DEBIT"
        slots: list[PriceSlot] = []
        for i, rate in enumerate(_rates(body)):
            if isinstance(rate, dict) and rate.get("payment_method") == refused:
                continue
            slot = _slot(i, rate, window)
            if slot is not None:
                slots.append(slot)
        slots.sort(key=lambda slot: slot.start)
        for before, after in itertools.pairwise(slots):
            if after.start < before.end:
                raise SourceError(f"rates overlap at {after.start.isoformat()}")
        return FetchedPrices(tuple(slots), currency="GBP", retail=True)

    def error_reason(self, status: int, body: bytes) -> str:
        answer = json_or_none(body)
        if isinstance(answer, dict):
            detail = answer.get("detail")
            if isinstance(detail, str) and detail.strip():
                return f"HTTP {status}: {detail.strip()[:160]}"
            # A refused parameter: {"period_from": ["Enter a valid date/time."]}
            problems = [
                f"{name}: {'; '.join(str(m) for m in messages)}"
                for name, messages in answer.items()
                if isinstance(messages, list) and messages
            ]
            if problems:
                return f"HTTP {status}: {', '.join(problems)[:160]}"
        return super().error_reason(status, body)
