"""Energi Data Service (DayAheadPrices) over real HTTP (tests/http_stub.py): the request, the slots, errors.

Rows follow the dataset's fields as read by openHAB's energidataservice binding (DayAheadPriceRecord)
and evcc's energinet-price template: TimeUTC and TimeDK without an offset, PriceArea, DayAheadPriceDKK and
DayAheadPriceEUR per MWh, in an envelope {"total", "limit", "dataset", "records"}. No published example of
the API's error body was found; the 400 answer below is an assumed JSON shape.
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from typing import Any, Literal

import httpx
import pytest

from controller.config.sources import EnergiDataServiceSource
from controller.sources.base import SourceContext, SourceError, find_source
from controller.sources.http_client import SourceBusy, fetch_source
from controller.sources.prices import FetchedPrices
from controller.sources.prices.energi_data_service import EnergiDataServicePrices
from tests.http_stub import Answer, http_stub

UTC = dt.UTC
DENMARK = zoneinfo.ZoneInfo("Europe/Copenhagen")
PATH = "/dataset/DayAheadPrices"
# Local days in Denmark: an ordinary one, the 23-hour spring day and the 25-hour autumn day of 2026.
DAY = (dt.datetime(2026, 12, 6, 23, tzinfo=UTC), dt.datetime(2026, 12, 7, 23, tzinfo=UTC))
SPRING = (dt.datetime(2026, 3, 28, 23, tzinfo=UTC), dt.datetime(2026, 3, 29, 22, tzinfo=UTC))
AUTUMN = (dt.datetime(2026, 10, 24, 22, tzinfo=UTC), dt.datetime(2026, 10, 25, 23, tzinfo=UTC))


def row(start: dt.datetime, dkk: float | None, area: str = "DK1") -> dict[str, Any]:
    return {
        "TimeUTC": start.strftime("%Y-%m-%dT%H:%M:%S"),
        "TimeDK": start.astimezone(DENMARK).strftime("%Y-%m-%dT%H:%M:%S"),
        "PriceArea": area,
        "DayAheadPriceDKK": dkk,
        "DayAheadPriceEUR": None if dkk is None else round(dkk / 7.46, 2),
    }


def rows(start: dt.datetime, end: dt.datetime, minutes: int) -> list[dict[str, Any]]:
    step = dt.timedelta(minutes=minutes)
    found: list[dict[str, Any]] = []
    while start + step * len(found) < end:
        found.append(row(start + step * len(found), 400.0 + len(found) * 2.5))
    return found


def answer(records: list[dict[str, Any]], total: int | None = None) -> bytes:
    envelope = {"total": len(records) if total is None else total, "limit": 200, "dataset": "DayAheadPrices"}
    return json.dumps({**envelope, "records": records}).encode()


def source(url: str | None, currency: Literal["DKK", "EUR"] = "DKK") -> EnergiDataServicePrices:
    cfg = EnergiDataServiceSource(type="energi_data_service", area="DK1", currency=currency, base_url=url)
    return EnergiDataServicePrices(cfg, SourceContext(currency=currency, env={}))


async def fetch(
    url: str, start: dt.datetime, end: dt.datetime, currency: Literal["DKK", "EUR"] = "DKK"
) -> FetchedPrices:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        results = await fetch_source(client, source(url, currency), start, end)
    assert len(results) == 1
    return results[0]


def assert_contiguous(prices: FetchedPrices, start: dt.datetime, end: dt.datetime, minutes: int) -> None:
    assert prices.slots[0].start == start
    assert prices.slots[-1].end == end
    for slot in prices.slots:
        assert slot.start.utcoffset() == dt.timedelta(0)
        assert slot.end - slot.start == dt.timedelta(minutes=minutes)
    for before, after in zip(prices.slots, prices.slots[1:], strict=False):
        assert after.start == before.end


async def test_an_ordinary_day_of_quarter_hour_prices_in_dkk_per_kwh() -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer(rows(*DAY, 15)))
        prices = await fetch(stub.url, *DAY)
    seen = stub.seen[0]
    assert seen.method == "GET" and seen.path == PATH
    assert seen.query == {
        "start": "2026-12-07T00:00",  # Danish wall-clock time, as the API reads it
        "end": "2026-12-08T00:00",
        "filter": '{"PriceArea":["DK1"]}',
        "columns": "TimeUTC,PriceArea,DayAheadPriceDKK",
        "sort": "TimeUTC ASC",
        "limit": "104",
    }
    assert prices.currency == "DKK" and prices.retail is False
    assert len(prices.slots) == 96
    assert_contiguous(prices, *DAY, 15)
    assert prices.slots[0].start == dt.datetime(2026, 12, 6, 23, tzinfo=UTC)
    assert prices.slots[0].end == dt.datetime(2026, 12, 6, 23, 15, tzinfo=UTC)
    assert prices.slots[0].value_per_kwh == pytest.approx(0.4, abs=1e-12)
    assert prices.slots[5].start == dt.datetime(2026, 12, 7, 0, 15, tzinfo=UTC)
    assert prices.slots[5].value_per_kwh == pytest.approx(0.4125, abs=1e-12)
    assert prices.slots[95].value_per_kwh == pytest.approx(0.6375, abs=1e-12)


async def test_prices_in_eur_when_configured() -> None:
    records = [row(DAY[0], 746.0), row(DAY[0] + dt.timedelta(minutes=15), -37.3)]
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer(records))
        prices = await fetch(stub.url, *DAY, currency="EUR")
    assert stub.seen[0].query["columns"] == "TimeUTC,PriceArea,DayAheadPriceEUR"
    assert prices.currency == "EUR"
    assert [slot.value_per_kwh for slot in prices.slots] == pytest.approx([0.1, -0.005], abs=1e-12)


async def test_hourly_rows_make_hour_slots() -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer(list(reversed(rows(*DAY, 60)))))
        prices = await fetch(stub.url, *DAY)
    assert len(prices.slots) == 24
    assert_contiguous(prices, *DAY, 60)
    assert prices.slots[2].value_per_kwh == pytest.approx(0.405, abs=1e-12)


@pytest.mark.parametrize(
    ("day", "minutes", "count", "query"),
    [
        (SPRING, 15, 92, ("2026-03-29T00:00", "2026-03-30T00:00", "100")),
        (AUTUMN, 15, 100, ("2026-10-25T00:00", "2026-10-26T00:00", "108")),
        (SPRING, 60, 23, ("2026-03-29T00:00", "2026-03-30T00:00", "100")),
        (AUTUMN, 60, 25, ("2026-10-25T00:00", "2026-10-26T00:00", "108")),
    ],
    ids=["spring-15min", "autumn-15min", "spring-hourly", "autumn-hourly"],
)
async def test_days_when_the_clocks_change(
    day: tuple[dt.datetime, dt.datetime], minutes: int, count: int, query: tuple[str, str, str]
) -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer(rows(*day, minutes)))
        prices = await fetch(stub.url, *day)
    seen = stub.seen[0].query
    assert (seen["start"], seen["end"], seen["limit"]) == query
    assert len(prices.slots) == count
    assert_contiguous(prices, *day, minutes)


def test_a_range_edge_in_the_repeated_hour_widens_the_danish_range() -> None:
    # 00:30 UTC and 01:30 UTC on 25 Oct 2026 are both 02:30 in Denmark: the wall-clock range must
    # hold both instants' rows, so it grows by an hour on that side.
    start = dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    end = dt.datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    params = source(None).requests(start, end)[0].params
    assert (params["start"], params["end"]) == ("2026-10-25T01:30", "2026-10-25T03:30")
    ordinary = source(None).requests(dt.datetime(2026, 12, 7, 9, 45, tzinfo=UTC), DAY[1])[0]
    assert ordinary.url == "https://api.energidataservice.dk/dataset/DayAheadPrices"
    assert (ordinary.params["start"], ordinary.params["end"]) == ("2026-12-07T10:45", "2026-12-08T00:00")


async def test_rows_without_a_price_or_of_another_area_are_left_out() -> None:
    records = [
        row(DAY[0], 500.0),
        row(DAY[0], 999.0, area="DK2"),
        row(DAY[0] + dt.timedelta(minutes=15), None),
    ]
    records.append(row(DAY[0] + dt.timedelta(minutes=30), 520.0))
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer(records))
        prices = await fetch(stub.url, *DAY)
    assert [(slot.start, slot.end) for slot in prices.slots] == [
        (DAY[0], DAY[0] + dt.timedelta(minutes=15)),
        (DAY[0] + dt.timedelta(minutes=30), DAY[0] + dt.timedelta(minutes=45)),
    ]
    assert [slot.value_per_kwh for slot in prices.slots] == pytest.approx([0.5, 0.52], abs=1e-12)


async def test_a_day_not_yet_published_gives_no_slots() -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer([]))
        prices = await fetch(stub.url, *DAY)
    assert prices.slots == ()
    assert prices.currency == "DKK"


async def test_a_refused_request_reports_the_providers_reason() -> None:
    body = b'{"error": "BAD_REQUEST", "message": "Invalid filter: PriceArea"}'
    with http_stub() as stub:
        stub.routes[PATH] = Answer(400, body)
        with pytest.raises(SourceError, match="HTTP 400: BAD_REQUEST: Invalid filter: PriceArea") as caught:
            await fetch(stub.url, *DAY)
    assert not isinstance(caught.value, SourceBusy)


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_rate_limits_and_server_trouble_are_busy(status: int) -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(status, b'{"message": "Too many requests"}', {"Retry-After": "60"})
        with pytest.raises(SourceBusy, match=f"HTTP {status}: Too many requests") as caught:
            await fetch(stub.url, *DAY)
    assert caught.value.retry_after_s == 60.0


def good_row(**changes: Any) -> dict[str, Any]:
    return {**row(DAY[0], 500.0), **changes}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>maintenance</html>", "not JSON"),
        (b'{"total": 0}', "no records list"),
        (b'{"records": {"TimeUTC": "2026-12-06T23:00:00"}}', "no records list"),
        (b'{"records": [null]}', r"records\[0\] is not an object"),
        (answer([good_row(TimeUTC="yesterday")]), "TimeUTC"),
        (answer([good_row(TimeUTC=1796598000000)]), "TimeUTC"),
        (answer([good_row(TimeUTC="2026-12-06T23:07:00")]), "quarter hour"),
        (answer([good_row(DayAheadPriceDKK="500,0")]), "DayAheadPriceDKK"),
        (answer([good_row(DayAheadPriceDKK=True)]), "DayAheadPriceDKK"),
        (answer([good_row(), good_row(DayAheadPriceDKK=501.0)]), "two rows"),
        (answer([good_row()], total=300), "limit"),
    ],
)
async def test_a_malformed_answer_is_a_source_error(body: bytes, reason: str) -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, body)
        with pytest.raises(SourceError, match=reason):
            await fetch(stub.url, *DAY)


def test_energi_data_service_is_registered() -> None:
    assert find_source("prices", "energi_data_service") is EnergiDataServicePrices
