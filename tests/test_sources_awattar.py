"""aWATTar market data over real HTTP (tests/http_stub.py): the request sent, the slots parsed, errors.

Answers follow the format documented at https://www.awattar.de/services/api and read by evcc
(tariff/awattar/api.go): {"object": "list", "data": [{"start_timestamp": ms, "end_timestamp": ms,
"marketprice": x, "unit": "Eur/MWh"}], "url": ...}. No published example of an aWATTar error body was
found; the 400 answer below is an assumed JSON shape.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

import httpx
import pytest

from controller.config.sources import AwattarSource
from controller.sources.base import SourceContext, SourceError, find_source
from controller.sources.http_client import SourceBusy, fetch_source
from controller.sources.prices import FetchedPrices
from controller.sources.prices.awattar import AwattarPrices
from tests.http_stub import Answer, http_stub

UTC = dt.UTC
PATH = "/v1/marketdata"
# Local days in Germany: an ordinary one, the 23-hour spring day and the 25-hour autumn day of 2026.
DAY = (dt.datetime(2026, 12, 6, 23, tzinfo=UTC), dt.datetime(2026, 12, 7, 23, tzinfo=UTC))
SPRING = (dt.datetime(2026, 3, 28, 23, tzinfo=UTC), dt.datetime(2026, 3, 29, 22, tzinfo=UTC))
AUTUMN = (dt.datetime(2026, 10, 24, 22, tzinfo=UTC), dt.datetime(2026, 10, 25, 23, tzinfo=UTC))
HOURLY_EUR_PER_MWH = [
    *(81.2, 78.05, 75.0, 73.44, 74.1, 80.0, 95.37, 120.5, 131.0, 118.2, 99.99, 85.0),
    *(70.3, 60.0, -5.5, -12.01, 40.0, 88.8, 140.25, 165.0, 150.1, 122.0, 101.7, 90.0),
]


def ms(moment: dt.datetime) -> int:
    return int(moment.timestamp()) * 1000


def answer(entries: list[dict[str, Any]]) -> bytes:
    return json.dumps({"object": "list", "data": entries, "url": "/de/v1/marketdata"}).encode()


def entries(
    start: dt.datetime, end: dt.datetime, minutes: int, prices: list[float] | None = None
) -> list[dict[str, Any]]:
    step = dt.timedelta(minutes=minutes)
    found: list[dict[str, Any]] = []
    moment = start
    while moment < end:
        price = prices[len(found)] if prices else 50.0 + len(found) * 0.25
        found.append(
            {
                "start_timestamp": ms(moment),
                "end_timestamp": ms(moment + step),
                "marketprice": price,
                "unit": "Eur/MWh",
            }
        )
        moment += step
    return found


def source(url: str | None, country: Literal["DE", "AT"] = "DE") -> AwattarPrices:
    return AwattarPrices(AwattarSource(type="awattar", country=country, base_url=url), SourceContext(env={}))


async def fetch(url: str, start: dt.datetime, end: dt.datetime) -> FetchedPrices:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        results = await fetch_source(client, source(url), start, end)
    assert len(results) == 1
    return results[0]


def assert_contiguous(prices: FetchedPrices, start: dt.datetime, end: dt.datetime, minutes: int) -> None:
    assert prices.slots[0].start == start
    assert prices.slots[-1].end == end
    for slot in prices.slots:
        assert slot.start.tzinfo is not None and slot.start.utcoffset() == dt.timedelta(0)
        assert slot.end - slot.start == dt.timedelta(minutes=minutes)
    for before, after in zip(prices.slots, prices.slots[1:], strict=False):
        assert after.start == before.end


async def test_an_ordinary_day_of_hourly_prices_in_eur_per_kwh() -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer(entries(*DAY, 60, HOURLY_EUR_PER_MWH)))
        prices = await fetch(stub.url, *DAY)
    assert stub.seen[0].method == "GET"
    assert stub.seen[0].path == PATH
    assert stub.seen[0].query == {"start": "1796598000000", "end": "1796684400000"}
    assert prices.currency == "EUR" and prices.retail is False
    assert len(prices.slots) == 24
    assert_contiguous(prices, *DAY, 60)
    assert prices.slots[0].start == dt.datetime(2026, 12, 6, 23, tzinfo=UTC)
    assert prices.slots[0].end == dt.datetime(2026, 12, 7, 0, tzinfo=UTC)
    assert prices.slots[0].value_per_kwh == pytest.approx(0.0812, abs=1e-12)
    assert prices.slots[14].start == dt.datetime(2026, 12, 7, 13, tzinfo=UTC)
    assert prices.slots[14].value_per_kwh == pytest.approx(-0.0055, abs=1e-12)
    assert [slot.value_per_kwh for slot in prices.slots] == pytest.approx(
        [p / 1000 for p in HOURLY_EUR_PER_MWH]
    )


async def test_quarter_hour_prices_and_entries_in_any_order() -> None:
    quarters = entries(*DAY, 15)
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer(list(reversed(quarters))))
        prices = await fetch(stub.url, *DAY)
    assert len(prices.slots) == 96
    assert_contiguous(prices, *DAY, 15)
    assert prices.slots[1].start == dt.datetime(2026, 12, 6, 23, 15, tzinfo=UTC)
    assert prices.slots[1].value_per_kwh == pytest.approx(0.05025, abs=1e-12)


@pytest.mark.parametrize(
    ("day", "minutes", "count"),
    [(SPRING, 60, 23), (AUTUMN, 60, 25), (SPRING, 15, 92), (AUTUMN, 15, 100)],
    ids=["spring-hourly", "autumn-hourly", "spring-15min", "autumn-15min"],
)
async def test_days_when_the_clocks_change(
    day: tuple[dt.datetime, dt.datetime], minutes: int, count: int
) -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer(entries(*day, minutes)))
        prices = await fetch(stub.url, *day)
    assert stub.seen[0].query == {"start": str(ms(day[0])), "end": str(ms(day[1]))}
    assert len(prices.slots) == count
    assert_contiguous(prices, *day, minutes)


async def test_a_range_off_the_hour_asks_for_the_whole_hours_around_it() -> None:
    start = dt.datetime(2026, 12, 7, 10, 30, tzinfo=UTC)
    end = dt.datetime(2026, 12, 7, 12, 10, tzinfo=UTC)
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer([]))
        await fetch(stub.url, start, end)
    assert stub.seen[0].query == {
        "start": str(ms(dt.datetime(2026, 12, 7, 10, tzinfo=UTC))),
        "end": str(ms(dt.datetime(2026, 12, 7, 13, tzinfo=UTC))),
    }


async def test_a_day_not_yet_published_gives_no_slots() -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer([]))
        prices = await fetch(stub.url, *DAY)
    assert prices.slots == ()
    assert prices.currency == "EUR"


def test_each_country_has_its_own_address_unless_one_is_configured() -> None:
    germany = source(None, "DE")
    austria = source(None, "AT")
    assert germany.requests(*DAY)[0].url == "https://api.awattar.de/v1/marketdata"
    assert austria.requests(*DAY)[0].url == "https://api.awattar.at/v1/marketdata"
    assert source("http://127.0.0.1:9", "AT").requests(*DAY)[0].url == "http://127.0.0.1:9/v1/marketdata"


async def test_a_refused_request_reports_the_providers_reason() -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(400, b'{"error": "start must be before end"}')
        with pytest.raises(SourceError, match="HTTP 400: start must be before end") as caught:
            await fetch(stub.url, *DAY)
    assert not isinstance(caught.value, SourceBusy)


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_rate_limits_and_server_trouble_are_busy(status: int) -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(status, b"<html>Service Unavailable</html>", {"Retry-After": "30"})
        with pytest.raises(SourceBusy, match=f"HTTP {status}") as caught:
            await fetch(stub.url, *DAY)
    assert caught.value.retry_after_s == 30.0


def good_entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "start_timestamp": 1796598000000,
        "end_timestamp": 1796601600000,
        "marketprice": 81.2,
        "unit": "Eur/MWh",
    }
    entry.update(changes)
    return entry


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>maintenance</html>", "not JSON"),
        (b'{"object": "list"}', "no data list"),
        (b'[{"marketprice": 1}]', "no data list"),
        (b'{"data": ["81.2"]}', r"data\[0\] is not an object"),
        (answer([good_entry(marketprice="81.2")]), "marketprice"),
        (answer([good_entry(marketprice=None)]), "marketprice"),
        (answer([good_entry(marketprice=float("nan"))]), "marketprice"),  # json.dumps writes NaN
        (answer([good_entry(unit="ct/kWh")]), "unit"),
        (answer([good_entry(start_timestamp="2026-12-06T23:00:00Z")]), "start_timestamp"),
        (answer([good_entry(end_timestamp=10**30)]), "end_timestamp"),
        (answer([good_entry(end_timestamp=1796598000000)]), "ends before it starts"),
        (
            answer([good_entry(), good_entry(start_timestamp=1796599800000, end_timestamp=1796603400000)]),
            "overlap",
        ),
    ],
)
async def test_a_malformed_answer_is_a_source_error(body: bytes, reason: str) -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, body)
        with pytest.raises(SourceError, match=reason):
            await fetch(stub.url, *DAY)


def test_awattar_is_registered() -> None:
    assert find_source("prices", "awattar") is AwattarPrices
