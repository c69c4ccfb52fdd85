"""Tibber's retail price (energy, grid fee where Tibber bills it, and taxes) through its GraphQL API
(https://developer.tibber.com/docs/reference).

One POST to ``/v1-beta/gql`` with ``Authorization: Bearer <token>`` asks every home of the account for
``currentSubscription.priceInfo(resolution: QUARTER_HOURLY)``: the argument pyTibber itself sends
since the 15-minute market (https://github.com/Danielhiversen/pyTibber, ``gql_queries.py``). Each of
``today`` and ``tomorrow`` (empty until published, early afternoon) lists ``{total, startsAt,
currency}``; ``startsAt`` carries the local offset. GraphQL errors come as an ``errors`` array, also
with HTTP 200; ``extensions.code`` UNAUTHENTICATED is a bad token.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from controller.config.sources import TibberSource
from controller.signals import PriceSlot
from controller.sources.base import (
    HttpRequest,
    HttpSource,
    SourceAuthError,
    SourceError,
    json_answer,
    json_or_none,
    register_source,
)
from controller.sources.prices.common import FetchedPrices

__all__ = ["TibberPrices", "parse_tibber_prices"]

_RESOLUTION = dt.timedelta(minutes=15)  # the step asked for; the last slot of a list ends after it
_QUERY = """{
  viewer {
    homes {
      id
      currentSubscription {
        priceInfo(resolution: QUARTER_HOURLY) {
          today { total startsAt currency }
          tomorrow { total startsAt currency }
        }
      }
    }
  }
}"""
_AUTH_CODES = frozenset({"UNAUTHENTICATED", "UNAUTHORIZED", "FORBIDDEN"})


@register_source("prices", "tibber")
class TibberPrices(HttpSource[TibberSource, FetchedPrices]):
    """Today's and tomorrow's price of one home; ``retail``: the total already includes taxes."""

    default_base_url = "https://api.tibber.com/v1-beta/gql"

    def requests(self, start: dt.datetime, end: dt.datetime) -> list[HttpRequest]:
        if end <= start:
            return []
        token = self.ctx.secret(self.cfg.token_env, "Tibber access token")
        return [
            HttpRequest(
                self.base_url,
                method="POST",
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
                body=json.dumps({"query": _QUERY}).encode(),
            )
        ]

    def parse(self, request: HttpRequest, body: bytes) -> FetchedPrices:
        return parse_tibber_prices(body, self.cfg.home_id, self.ctx.currency)

    def error_reason(self, status: int, body: bytes) -> str:
        answer = json_or_none(body)
        error = _first_error(answer)
        if error is not None:
            return f"HTTP {status}: {error[1][:200]}"
        return super().error_reason(status, body)


def _first_error(answer: Any) -> tuple[str, str] | None:
    """(code, message) of the first GraphQL error, None when there is none."""
    errors = answer.get("errors") if isinstance(answer, dict) else None
    if not isinstance(errors, list) or not errors:
        return None
    first = errors[0] if isinstance(errors[0], dict) else {}
    extensions = first.get("extensions")
    code = extensions.get("code") if isinstance(extensions, dict) else None
    message = first.get("message")
    return (
        code if isinstance(code, str) else "",
        message.strip() if isinstance(message, str) and message.strip() else "GraphQL error",
    )


def _field(value: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _pick_home(answer: dict[str, Any], home_id: str | None) -> dict[str, Any]:
    homes = _field(answer, "data", "viewer", "homes")
    if not isinstance(homes, list):
        raise SourceError("Tibber answer has no data.viewer.homes list")
    homes_listed: list[dict[str, Any]] = [home for home in homes if isinstance(home, dict)]
    if home_id is not None:
        for home in homes_listed:
            if home.get("id") == home_id:
                return home
        known = ", ".join(str(home.get("id"))[:40] for home in homes_listed) or "none"
        raise SourceError(f"Tibber account has no home {home_id!r} (its homes: {known}): fix home_id")
    for home in homes_listed:
        if isinstance(home.get("currentSubscription"), dict):
            return home
    raise SourceError("Tibber account has no home with a subscription")


def _entry(item: Any) -> tuple[dt.datetime, float, str]:
    if not isinstance(item, dict):
        raise SourceError("Tibber answer: a price is not an object")
    starts_at, total, currency = item.get("startsAt"), item.get("total"), item.get("currency")
    if isinstance(total, bool) or not isinstance(total, int | float) or not math.isfinite(total):
        raise SourceError(f"Tibber answer: total {str(total)[:20]!r} is not a number")
    if not isinstance(starts_at, str) or not isinstance(currency, str) or len(currency) != 3:
        raise SourceError("Tibber answer: a price without startsAt or currency")
    try:
        start = dt.datetime.fromisoformat(starts_at)
    except ValueError:
        raise SourceError(f"Tibber answer: bad startsAt {starts_at[:40]!r}") from None
    if start.tzinfo is None:
        raise SourceError(f"Tibber answer: startsAt {starts_at[:40]!r} has no offset")
    return start.astimezone(dt.UTC), float(total), currency.upper()


def _slots(entries: list[tuple[dt.datetime, float, str]]) -> list[PriceSlot]:
    """Each price lasts until the next one starts; the last for one step (the gap before it, or
    the asked-for resolution when it is alone)."""
    slots: list[PriceSlot] = []
    for index, (start, value, _currency) in enumerate(entries):
        if index + 1 < len(entries):
            end = entries[index + 1][0]
        else:
            end = start + (start - entries[index - 1][0] if index > 0 else _RESOLUTION)
        if end <= start:
            raise SourceError(f"Tibber answer: startsAt {start:%Y-%m-%dT%H:%MZ} repeated")
        slots.append(PriceSlot(start, end, value))
    return slots


def parse_tibber_prices(body: bytes, home_id: str | None, site_currency: str) -> FetchedPrices:
    """The prices of the chosen home (``home_id`` or the first with a subscription), per kWh."""
    answer = json_answer(body, "Tibber answer is not JSON")
    error = _first_error(answer)
    if error is not None:
        code, message = error
        if code.upper() in _AUTH_CODES:
            raise SourceAuthError(f"Tibber: {message[:200]}")
        raise SourceError(f"Tibber: {message[:200]}")
    if not isinstance(answer, dict):
        raise SourceError("Tibber answer is not a JSON object")
    home = _pick_home(answer, home_id)
    price_info = _field(home, "currentSubscription", "priceInfo")
    if not isinstance(price_info, dict):
        raise SourceError(f"Tibber answer: no priceInfo for home {str(home.get('id'))[:40]}")
    items: list[Any] = []
    for day in ("today", "tomorrow"):
        listed = price_info.get(day)
        if listed is None:
            continue
        if not isinstance(listed, list):
            raise SourceError(f"Tibber answer: priceInfo.{day} is not a list")
        items.extend(listed)
    entries = sorted((_entry(item) for item in items), key=lambda entry: entry[0])
    currencies = {currency for _start, _value, currency in entries}
    if len(currencies) > 1:
        raise SourceError(f"Tibber answer mixes currencies {sorted(currencies)}")
    currency = currencies.pop() if currencies else site_currency.upper()
    return FetchedPrices(tuple(_slots(entries)), currency, retail=True)
