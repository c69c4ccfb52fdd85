"""Nord Pool day-ahead prices, fetched over real HTTP from the stub server.

The answers follow the DayAheadPrices JSON that pynordpool reads and ships as its example
(https://github.com/gjohansson-ST/pynordpool, ``examples/delivery_period.json``: deliveryDateCET,
version, updatedAt, deliveryAreas, market, multiAreaEntries, blockPriceAggregates, currency,
exchangeRate, areaStates, areaAverages); the hourly prices below are that example's first hours.
No published example of the portal's error bodies was found: the 400 body here is an assumption.
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

from controller.config.sources import NordPoolSource
from controller.sources.base import SourceAuthError, SourceContext, SourceError
from controller.sources.http_client import SourceBusy, fetch_source
from controller.sources.prices import FetchedPrices
from controller.sources.prices.nord_pool import NordPoolPrices, nord_pool_area, parse_nord_pool_prices
from tests.http_stub import Answer, HttpStub, http_stub

UTC = dt.UTC
CET = zoneinfo.ZoneInfo("Europe/Stockholm")
PATH = "/api/DayAheadPrices"


def _z(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_day(year: int, month: int, day: int) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime(year, month, day, tzinfo=CET)
    return start.astimezone(UTC), (start + dt.timedelta(days=1)).astimezone(UTC)


def answer_json(
    day: dt.date, prices: Sequence[float], step_min: int, area: str = "SE3", currency: str = "SEK"
) -> dict[str, Any]:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=CET).astimezone(UTC)
    step = dt.timedelta(minutes=step_min)
    entries = [
        {
            "deliveryStart": _z(start + n * step),
            "deliveryEnd": _z(start + (n + 1) * step),
            "entryPerArea": {area: price},
        }
        for n, price in enumerate(prices)
    ]
    return {
        "deliveryDateCET": day.isoformat(),
        "version": 3,
        "updatedAt": "2026-06-14T12:15:03.8832404Z",
        "deliveryAreas": [area],
        "market": "DayAhead",
        "multiAreaEntries": entries,
        "blockPriceAggregates": [],
        "currency": currency,
        "exchangeRate": 1,
        "areaStates": [{"state": "Final", "areas": [area]}],
        "areaAverages": [{"areaCode": area, "price": round(sum(prices) / max(1, len(prices)), 2)}],
    }


def answer(day: dt.date, prices: Sequence[float], step_min: int = 15, **kwargs: str) -> Answer:
    return Answer(200, json.dumps(answer_json(day, prices, step_min, **kwargs)).encode())


def source(
    stub: HttpStub, area: str = "SE3", currency: str | None = None, site: str = "SEK"
) -> NordPoolPrices:
    cfg = NordPoolSource.model_validate(
        {"type": "nord_pool", "area": area, "currency": currency, "base_url": f"{stub.url}/api"}
    )
    return NordPoolPrices(cfg, SourceContext(currency=site, timezone="Europe/Stockholm", env={}))


async def fetch(prices: NordPoolPrices, start: dt.datetime, end: dt.datetime) -> list[FetchedPrices]:
    async with httpx.AsyncClient(timeout=5) as client:
        return await fetch_source(client, prices, start, end)


def quarter_prices(count: int) -> list[float]:
    return [round(10.0 + 0.5 * n, 2) for n in range(count)]


async def test_normal_day_request_and_prices() -> None:
    day = dt.date(2026, 6, 15)
    start, end = local_day(2026, 6, 15)
    prices = [*quarter_prices(95), -12.34]
    with http_stub() as stub:
        stub.routes[PATH] = answer(day, prices)
        [fetched] = await fetch(source(stub), start, end)
        [seen] = stub.seen
    assert seen.method == "GET"
    assert seen.query == {
        "date": "2026-06-15",
        "market": "DayAhead",
        "deliveryArea": "SE3",
        "currency": "SEK",
    }
    assert fetched.currency == "SEK" and fetched.retail is False
    slots = fetched.slots
    assert len(slots) == 96
    assert slots[0].start == dt.datetime(2026, 6, 14, 22, tzinfo=UTC)
    assert slots[0].end == dt.datetime(2026, 6, 14, 22, 15, tzinfo=UTC)
    assert slots[0].value_per_kwh == pytest.approx(0.010)  # 10.00 SEK/MWh
    assert slots[7].value_per_kwh == pytest.approx(0.0135)
    assert slots[-1].value_per_kwh == pytest.approx(-0.01234) and slots[-1].end == end
    assert all(a.end == b.start for a, b in itertools.pairwise(slots))


async def test_hourly_day_before_the_fifteen_minute_market() -> None:
    day = dt.date(2024, 11, 5)
    start, end = local_day(2024, 11, 5)
    prices = [21.54, 6.56, 6.35, 5.3, 5.55, 38.94, 85.59, 120.8, *[50.0] * 16]
    with http_stub() as stub:
        stub.routes[PATH] = answer(day, prices, step_min=60, currency="EUR")
        [fetched] = await fetch(source(stub, site="EUR"), start, end)
        assert stub.seen[0].query["currency"] == "EUR"
    slots = fetched.slots
    assert fetched.currency == "EUR" and len(slots) == 24
    assert (slots[0].start, slots[0].end) == (
        dt.datetime(2024, 11, 4, 23, tzinfo=UTC),
        dt.datetime(2024, 11, 5, 0, tzinfo=UTC),
    )
    assert [s.value_per_kwh for s in slots[:3]] == pytest.approx([0.02154, 0.00656, 0.00635])


def test_one_request_per_delivery_day() -> None:
    with http_stub() as stub:
        requests = source(stub).requests(
            dt.datetime(2026, 6, 15, 21, 0, tzinfo=UTC),  # 23:00 CEST on the 15th
            dt.datetime(2026, 6, 16, 22, 0, tzinfo=UTC),  # midnight CEST starting the 17th
        )
        one = source(stub).requests(*local_day(2026, 6, 16))
    assert [r.params["date"] for r in requests] == ["2026-06-15", "2026-06-16"]
    assert [r.params["date"] for r in one] == ["2026-06-16"]
    assert requests[0].url.endswith("/api/DayAheadPrices")


@pytest.mark.parametrize(
    ("area", "configured", "site", "asked"),
    [
        ("SE3", None, "SEK", "SEK"),
        ("SE3", None, "EUR", "EUR"),
        ("SE3", None, "NOK", "SEK"),  # neither EUR nor the area's own: the area's own
        ("NO1", None, "USD", "NOK"),
        ("DK1", "eur", "DKK", "EUR"),
        ("PL", None, "PLN", "PLN"),
        ("FI", None, "SEK", "EUR"),
        ("DE", None, "EUR", "EUR"),
    ],
)
def test_currency_asked_for(area: str, configured: str | None, site: str, asked: str) -> None:
    with http_stub() as stub:
        [request] = source(stub, area=area, currency=configured, site=site).requests(*local_day(2026, 6, 15))
    assert request.params["currency"] == asked


def test_areas_and_unknown_ones() -> None:
    assert nord_pool_area("se3") == "SE3"
    assert nord_pool_area("DE-LU") == nord_pool_area("DE") == "GER"
    with http_stub() as stub:
        with pytest.raises(SourceError, match=r"unknown Nord Pool area 'XX'.*SE3"):
            source(stub, area="XX").requests(*local_day(2026, 6, 15))
        with pytest.raises(SourceError, match="no prices in USD"):
            source(stub, currency="USD").requests(*local_day(2026, 6, 15))


async def test_not_yet_published_is_an_empty_day() -> None:
    start, end = local_day(2026, 6, 16)
    with http_stub() as stub:
        stub.routes[PATH] = Answer(204, b"")
        [fetched] = await fetch(source(stub), start, end)
    assert fetched.slots == () and fetched.currency == "SEK"


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
    with http_stub() as stub:
        stub.routes[PATH] = answer(dt.date(*day), quarter_prices(count), step_min=step_min)
        [fetched] = await fetch(source(stub), start, end)
        assert [seen.query["date"] for seen in stub.seen] == [dt.date(*day).isoformat()]
    slots = fetched.slots
    assert len(slots) == count
    assert slots[0].start == start and slots[-1].end == end
    assert all(a.end - a.start == dt.timedelta(minutes=step_min) for a in slots)
    assert all(a.end == b.start for a, b in itertools.pairwise(slots))


async def test_auth_failure() -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(401, b"")
        with pytest.raises(SourceAuthError, match="401"):
            await fetch(source(stub), *local_day(2026, 6, 15))


async def test_provider_error_body_is_the_reason() -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(400, json.dumps({"message": "Invalid delivery area"}).encode())
        with pytest.raises(SourceError, match="HTTP 400: Invalid delivery area") as raised:
            await fetch(source(stub), *local_day(2026, 6, 15))
    assert not isinstance(raised.value, SourceBusy | SourceAuthError)


@pytest.mark.parametrize("status", [429, 500, 502])
async def test_rate_limit_and_server_trouble_are_busy(status: int) -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(status, b"busy", {"Retry-After": "12"})
        with pytest.raises(SourceBusy) as raised:
            await fetch(source(stub), *local_day(2026, 6, 15))
    assert raised.value.retry_after_s == 12


def _broken(change: str) -> bytes:
    data = answer_json(dt.date(2026, 6, 15), quarter_prices(96), 15)
    entry = data["multiAreaEntries"][3]
    if change == "area":
        entry["entryPerArea"] = {"SE4": 1.0}
    elif change == "price":
        entry["entryPerArea"] = {"SE3": "12,5"}
    elif change == "time":
        entry["deliveryStart"] = "yesterday"
    elif change == "naive":
        entry["deliveryStart"] = "2026-06-15T00:45:00"
    elif change == "backwards":
        entry["deliveryEnd"] = entry["deliveryStart"]
    elif change == "overlap":
        entry["deliveryEnd"] = data["multiAreaEntries"][5]["deliveryEnd"]
    elif change == "entries":
        del data["multiAreaEntries"]
    elif change == "currency":
        data["currency"] = "EUR"
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>maintenance</html>", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (_broken("entries"), "no multiAreaEntries"),
        (_broken("area"), "no price for SE3"),
        (_broken("price"), "no price for SE3"),
        (_broken("time"), "bad time"),
        (_broken("naive"), "no zone"),
        (_broken("backwards"), "ends before it starts"),
        (_broken("overlap"), "overlap"),
        (_broken("currency"), "answered in EUR, asked for SEK"),
    ],
)
async def test_malformed_bodies_are_source_errors(body: bytes, reason: str) -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, body)
        with pytest.raises(SourceError, match=reason):
            await fetch(source(stub), *local_day(2026, 6, 15))


def test_empty_entry_list_is_no_slots() -> None:
    body = json.dumps(answer_json(dt.date(2026, 6, 16), [], 15)).encode()
    assert parse_nord_pool_prices(body, "SE3", "SEK").slots == ()


def test_no_token_needed() -> None:
    with http_stub() as stub:
        [request] = source(stub).requests(*local_day(2026, 6, 15))
    assert "Authorization" not in request.headers and not any("token" in k.lower() for k in request.params)
