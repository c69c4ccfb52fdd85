"""Tibber retail prices, fetched over real HTTP from the stub server.

The answers follow the GraphQL schema (https://developer.tibber.com/docs/reference):
``data.viewer.homes[].currentSubscription.priceInfo.{today,tomorrow}[] {total startsAt currency}``,
asked with ``resolution: QUARTER_HOURLY`` as pyTibber's ``gql_queries.py`` does. Errors follow
the GraphQL error shape pyTibber's ``response_handler.py`` reads (``errors[0].message`` and
``errors[0].extensions.code``, UNAUTHENTICATED for a bad token, also with HTTP 200). ``startsAt`` is
written with milliseconds and the home's local offset; no recorded answer was at hand to copy, so
the form without milliseconds is tested as well.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import zoneinfo
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from controller.config.sources import TibberSource
from controller.sources.base import SourceAuthError, SourceContext, SourceError
from controller.sources.http_client import SourceBusy, fetch_source
from controller.sources.prices import FetchedPrices
from controller.sources.prices.tibber import TibberPrices, parse_tibber_prices
from tests.http_stub import Answer, HttpStub, http_stub

UTC = dt.UTC
OSLO = zoneinfo.ZoneInfo("Europe/Oslo")
PATH = "/v1-beta/gql"
HOME = "96a14971-525a-4420-aae9-e5aedaa129ff"


def prices_of_day(
    day: dt.date, values: Sequence[float], step_min: int = 15, currency: str = "NOK", millis: bool = True
) -> list[dict[str, Any]]:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=OSLO).astimezone(UTC)
    items = []
    for n, value in enumerate(values):
        local = (start + dt.timedelta(minutes=step_min * n)).astimezone(OSLO)
        text = local.isoformat(timespec="milliseconds" if millis else "seconds")
        items.append({"total": value, "startsAt": text, "currency": currency})
    return items


def home_json(
    today: list[dict[str, Any]], tomorrow: list[dict[str, Any]], home_id: str = HOME
) -> dict[str, Any]:
    return {"id": home_id, "currentSubscription": {"priceInfo": {"today": today, "tomorrow": tomorrow}}}


def answer(*homes: dict[str, Any]) -> Answer:
    return Answer(200, json.dumps({"data": {"viewer": {"homes": list(homes)}}}).encode())


def error_answer(message: str, code: str, status: int = 200) -> Answer:
    body = {
        "errors": [
            {
                "message": message,
                "locations": [{"line": 1, "column": 2}],
                "path": ["viewer"],
                "extensions": {"code": code},
            }
        ],
        "data": None,
    }
    return Answer(status, json.dumps(body).encode())


def source(stub: HttpStub, home_id: str | None = None, env: dict[str, str] | None = None) -> TibberPrices:
    cfg = TibberSource.model_validate({"type": "tibber", "home_id": home_id, "base_url": f"{stub.url}{PATH}"})
    ctx = SourceContext(
        currency="NOK", timezone="Europe/Oslo", env={"TIBBER_TOKEN": "tib-456"} if env is None else env
    )
    return TibberPrices(cfg, ctx)


def local_day(year: int, month: int, day: int) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime(year, month, day, tzinfo=OSLO)
    return start.astimezone(UTC), (start + dt.timedelta(days=1)).astimezone(UTC)


async def fetch(prices: TibberPrices, start: dt.datetime, end: dt.datetime) -> list[FetchedPrices]:
    async with httpx.AsyncClient(timeout=5) as client:
        return await fetch_source(client, prices, start, end)


def values(count: int) -> list[float]:
    return [round(1.0 + 0.01 * n, 4) for n in range(count)]


async def test_normal_day_request_and_prices() -> None:
    today = dt.date(2026, 6, 15)
    with http_stub() as stub:
        stub.routes[PATH] = answer(
            home_json(
                prices_of_day(today, values(96)), prices_of_day(today + dt.timedelta(days=1), values(96))
            )
        )
        [fetched] = await fetch(source(stub), *local_day(2026, 6, 15))
        [seen] = stub.seen
    assert seen.method == "POST"
    assert seen.headers["authorization"] == "Bearer tib-456"
    assert seen.headers["content-type"] == "application/json"
    query = json.loads(seen.body)["query"]
    assert "priceInfo(resolution: QUARTER_HOURLY)" in query
    assert "today { total startsAt currency }" in query and "tomorrow { total startsAt currency }" in query
    assert fetched.currency == "NOK" and fetched.retail is True
    slots = fetched.slots
    assert len(slots) == 192
    assert slots[0].start == dt.datetime(2026, 6, 14, 22, tzinfo=UTC)
    assert slots[0].end == dt.datetime(2026, 6, 14, 22, 15, tzinfo=UTC)
    assert slots[0].value_per_kwh == pytest.approx(1.0)  # the total is already per kWh
    assert slots[95].value_per_kwh == pytest.approx(1.95)
    assert slots[96].start == slots[95].end == dt.datetime(2026, 6, 15, 22, tzinfo=UTC)
    assert slots[-1].end == dt.datetime(2026, 6, 16, 22, tzinfo=UTC)
    assert all(a.end == b.start for a, b in itertools.pairwise(slots))


async def test_tomorrow_not_published_yet() -> None:
    today = dt.date(2026, 6, 15)
    with http_stub() as stub:
        stub.routes[PATH] = answer(home_json(prices_of_day(today, values(96), millis=False), []))
        [fetched] = await fetch(source(stub), *local_day(2026, 6, 16))
    assert len(fetched.slots) == 96 and fetched.slots[-1].end == local_day(2026, 6, 15)[1]


async def test_empty_day_is_no_slots_in_the_site_currency() -> None:
    with http_stub() as stub:
        stub.routes[PATH] = answer(home_json([], []))
        [fetched] = await fetch(source(stub), *local_day(2026, 6, 16))
    assert fetched.slots == () and fetched.currency == "NOK" and fetched.retail


async def test_hourly_prices_end_an_hour_later() -> None:
    today = dt.date(2026, 6, 15)
    with http_stub() as stub:
        stub.routes[PATH] = answer(home_json(prices_of_day(today, values(24), step_min=60), []))
        [fetched] = await fetch(source(stub), *local_day(2026, 6, 15))
    slots = fetched.slots
    assert len(slots) == 24
    assert all(slot.end - slot.start == dt.timedelta(hours=1) for slot in slots)
    assert slots[-1].end == local_day(2026, 6, 15)[1]


@pytest.mark.parametrize(
    ("day", "step_min", "count"),
    [
        ((2026, 3, 29), 60, 23),
        ((2026, 3, 29), 15, 92),
        ((2026, 10, 25), 60, 25),
        ((2026, 10, 25), 15, 100),
    ],
)
async def test_dst_days(day: tuple[int, int, int], step_min: int, count: int) -> None:
    start, end = local_day(*day)
    assert end - start == dt.timedelta(minutes=step_min * count)
    items = prices_of_day(dt.date(*day), values(count), step_min=step_min)
    with http_stub() as stub:
        stub.routes[PATH] = answer(home_json(items, []))
        [fetched] = await fetch(source(stub), start, end)
    slots = fetched.slots
    assert len(slots) == count
    assert slots[0].start == start and slots[-1].end == end
    assert all(a.end - a.start == dt.timedelta(minutes=step_min) for a in slots)
    assert [slot.value_per_kwh for slot in slots] == pytest.approx(values(count))


async def test_home_choice() -> None:
    today = dt.date(2026, 6, 15)
    no_subscription = {"id": "cabin", "currentSubscription": None}
    other = home_json(prices_of_day(today, [9.0] * 96), [], home_id="second")
    ours = home_json(prices_of_day(today, values(96)), [])
    with http_stub() as stub:
        stub.routes[PATH] = answer(no_subscription, ours, other)
        [first] = await fetch(source(stub), *local_day(2026, 6, 15))
        [chosen] = await fetch(source(stub, home_id="second"), *local_day(2026, 6, 15))
        with pytest.raises(SourceError, match=r"no home 'elsewhere'.*cabin.*fix home_id"):
            await fetch(source(stub, home_id="elsewhere"), *local_day(2026, 6, 15))
        stub.routes[PATH] = answer(no_subscription)
        with pytest.raises(SourceError, match="no home with a subscription"):
            await fetch(source(stub), *local_day(2026, 6, 15))
    assert first.slots[0].value_per_kwh == pytest.approx(1.0)
    assert chosen.slots[0].value_per_kwh == pytest.approx(9.0)


async def test_graphql_errors_with_http_200() -> None:
    with http_stub() as stub:
        stub.routes[PATH] = error_answer("Context creation failed: invalid token", "UNAUTHENTICATED")
        with pytest.raises(SourceAuthError, match="invalid token"):
            await fetch(source(stub), *local_day(2026, 6, 15))
        stub.routes[PATH] = error_answer(
            "Cannot query field 'priceInfo' on type 'Subscription'.", "GRAPHQL_VALIDATION_FAILED"
        )
        with pytest.raises(SourceError, match="Cannot query field") as raised:
            await fetch(source(stub), *local_day(2026, 6, 15))
        assert not isinstance(raised.value, SourceAuthError)


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_status(status: int) -> None:
    with http_stub() as stub:
        stub.routes[PATH] = error_answer("invalid token", "UNAUTHENTICATED", status=status)
        with pytest.raises(SourceAuthError, match=f"HTTP {status}: invalid token"):
            await fetch(source(stub), *local_day(2026, 6, 15))


async def test_bad_request_reason_from_the_errors_array() -> None:
    with http_stub() as stub:
        stub.routes[PATH] = error_answer("Syntax Error: Expected Name", "GRAPHQL_PARSE_FAILED", status=400)
        with pytest.raises(SourceError, match="HTTP 400: Syntax Error") as raised:
            await fetch(source(stub), *local_day(2026, 6, 15))
    assert not isinstance(raised.value, SourceBusy | SourceAuthError)


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_rate_limit_and_server_trouble_are_busy(status: int) -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(status, b"<html>busy</html>", {"Retry-After": "60"})
        with pytest.raises(SourceBusy) as raised:
            await fetch(source(stub), *local_day(2026, 6, 15))
    assert raised.value.retry_after_s == 60


def _home_with(change: str) -> dict[str, Any]:
    items = prices_of_day(dt.date(2026, 6, 15), values(4))
    if change == "total":
        items[1]["total"] = None
    elif change == "starts":
        items[1]["startsAt"] = "15.06.2026 00:15"
    elif change == "naive":
        items[1]["startsAt"] = "2026-06-15T00:15:00"
    elif change == "repeat":
        items[2]["startsAt"] = items[1]["startsAt"]
    elif change == "currency":
        items[2]["currency"] = "SEK"
    return home_json(items, [])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"data": {"viewer": null}}', "no data.viewer.homes"),
        (
            json.dumps({"data": {"viewer": {"homes": [{"id": HOME, "currentSubscription": {}}]}}}).encode(),
            "no priceInfo",
        ),
        (json.dumps({"data": {"viewer": {"homes": [home_json("x", [])]}}}).encode(), "not a list"),  # type: ignore[arg-type]
        (json.dumps({"data": {"viewer": {"homes": [_home_with("total")]}}}).encode(), "not a number"),
        (json.dumps({"data": {"viewer": {"homes": [_home_with("starts")]}}}).encode(), "bad startsAt"),
        (json.dumps({"data": {"viewer": {"homes": [_home_with("naive")]}}}).encode(), "no offset"),
        (json.dumps({"data": {"viewer": {"homes": [_home_with("repeat")]}}}).encode(), "repeated"),
        (json.dumps({"data": {"viewer": {"homes": [_home_with("currency")]}}}).encode(), "mixes currencies"),
    ],
)
async def test_malformed_bodies_are_source_errors(body: bytes, reason: str) -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, body)
        with pytest.raises(SourceError, match=reason):
            await fetch(source(stub), *local_day(2026, 6, 15))


async def test_missing_token_names_the_variable_and_sends_nothing() -> None:
    with http_stub() as stub:
        stub.routes[PATH] = answer()
        with pytest.raises(SourceAuthError, match="TIBBER_TOKEN"):
            await fetch(source(stub, env={"OTHER": "x"}), *local_day(2026, 6, 15))
        assert stub.seen == []


def test_single_price_lasts_the_asked_for_step() -> None:
    body = json.dumps(
        {"data": {"viewer": {"homes": [home_json(prices_of_day(dt.date(2026, 6, 15), [0.5]), [])]}}}
    )
    [slot] = parse_tibber_prices(body.encode(), None, "NOK").slots
    assert slot.end - slot.start == dt.timedelta(minutes=15)
