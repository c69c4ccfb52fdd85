"""Octopus Energy unit rates over real HTTP (tests/http_stub.py): the request, the slots, errors.

Answers follow the REST reference (https://developer.octopus.energy/rest/reference) as read by evcc
(tariff/octopus/rest/api.go): {"count", "next", "previous", "results": [{"value_exc_vat", "value_inc_vat",
"valid_from", "valid_to", "payment_method"}]}, newest first, pence per kWh; errors {"detail": "..."}.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from typing import Any

import httpx
import pytest

from controller.config.sources import OctopusSource
from controller.sources.base import SourceContext, SourceError, find_source
from controller.sources.http_client import SourceBusy, fetch_source
from controller.sources.prices import FetchedPrices
from controller.sources.prices.octopus import OctopusPrices
from tests.http_stub import Answer, http_stub

UTC = dt.UTC
HALF_HOUR = dt.timedelta(minutes=30)
AGILE = "AGILE-24-10-01"
PATH = f"/v1/products/{AGILE}/electricity-tariffs/E-1R-{AGILE}-C/standard-unit-rates/"
# Local days in Great Britain: an ordinary one, the 23-hour spring day and the 25-hour autumn day of 2026.
DAY = (dt.datetime(2026, 12, 7, 0, tzinfo=UTC), dt.datetime(2026, 12, 8, 0, tzinfo=UTC))
SPRING = (dt.datetime(2026, 3, 29, 0, tzinfo=UTC), dt.datetime(2026, 3, 29, 23, tzinfo=UTC))
AUTUMN = (dt.datetime(2026, 10, 24, 23, tzinfo=UTC), dt.datetime(2026, 10, 26, 0, tzinfo=UTC))


def z(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def rate(
    start: dt.datetime, end: dt.datetime | None, pence: float, method: str | None = None
) -> dict[str, Any]:
    return {
        "value_exc_vat": round(pence / 1.05, 4),
        "value_inc_vat": pence,
        "valid_from": z(start),
        "valid_to": None if end is None else z(end),
        "payment_method": method,
    }


def half_hourly(start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    """Agile-like rates over [start, end), newest first as the API lists them."""
    found: list[dict[str, Any]] = []
    while start + HALF_HOUR * len(found) < end:
        begin = start + HALF_HOUR * len(found)
        found.append(rate(begin, begin + HALF_HOUR, 15.0 + len(found) * 0.5))
    return list(reversed(found))


def answer(results: list[dict[str, Any]], next_page: str | None = None) -> bytes:
    return json.dumps(
        {"count": len(results), "next": next_page, "previous": None, "results": results}
    ).encode()


def source(url: str | None, product: str = AGILE, direct_debit: bool = True) -> OctopusPrices:
    cfg = OctopusSource(
        type="octopus", product_code=product, region="C", direct_debit=direct_debit, base_url=url
    )
    return OctopusPrices(cfg, SourceContext(currency="GBP", timezone="Europe/London", env={}))


async def fetch(prices_source: OctopusPrices, start: dt.datetime, end: dt.datetime) -> FetchedPrices:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        results = await fetch_source(client, prices_source, start, end)
    assert len(results) == 1
    return results[0]


def assert_half_hours(prices: FetchedPrices, start: dt.datetime, end: dt.datetime) -> None:
    assert prices.slots[0].start == start
    assert prices.slots[-1].end == end
    for slot in prices.slots:
        assert slot.start.utcoffset() == dt.timedelta(0)
        assert slot.end - slot.start == HALF_HOUR
    for before, after in zip(prices.slots, prices.slots[1:], strict=False):
        assert after.start == before.end


async def test_an_ordinary_day_of_agile_rates_in_gbp_per_kwh() -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer(half_hourly(*DAY)))
        prices = await fetch(source(stub.url), *DAY)
    seen = stub.seen[0]
    assert seen.method == "GET" and seen.path == PATH
    assert seen.query == {
        "period_from": "2026-12-07T00:00:00Z",
        "period_to": "2026-12-08T00:00:00Z",
        "page_size": "100",
    }
    assert prices.currency == "GBP" and prices.retail is True
    assert len(prices.slots) == 48
    assert_half_hours(prices, *DAY)
    assert prices.slots[0].value_per_kwh == pytest.approx(0.15, abs=1e-12)
    assert prices.slots[1].start == dt.datetime(2026, 12, 7, 0, 30, tzinfo=UTC)
    assert prices.slots[1].value_per_kwh == pytest.approx(0.155, abs=1e-12)
    assert prices.slots[47].value_per_kwh == pytest.approx(0.385, abs=1e-12)


async def test_export_rates_come_from_the_same_endpoint() -> None:
    outgoing = "AGILE-OUTGOING-19-05-13"
    path = f"/v1/products/{outgoing}/electricity-tariffs/E-1R-{outgoing}-C/standard-unit-rates/"
    with http_stub() as stub:
        stub.routes[path] = Answer(200, answer([rate(DAY[0], DAY[0] + HALF_HOUR, 8.12)]))
        prices = await fetch(source(stub.url, product=outgoing), *DAY)
    assert stub.seen[0].path == path
    assert [slot.value_per_kwh for slot in prices.slots] == pytest.approx([0.0812], abs=1e-12)


@pytest.mark.parametrize(("day", "count"), [(SPRING, 46), (AUTUMN, 50)], ids=["spring", "autumn"])
async def test_days_when_the_clocks_change(day: tuple[dt.datetime, dt.datetime], count: int) -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer(half_hourly(*day)))
        prices = await fetch(source(stub.url), *day)
    assert (stub.seen[0].query["period_from"], stub.seen[0].query["period_to"]) == (z(day[0]), z(day[1]))
    assert len(prices.slots) == count
    assert_half_hours(prices, *day)


async def test_an_open_ended_rate_is_clipped_to_the_range() -> None:
    # A fixed-price product: the rate before noon ends, the one after has no end yet.
    noon = dt.datetime(2026, 12, 7, 12, tzinfo=UTC)
    results = [rate(noon, None, 24.5), rate(dt.datetime(2026, 4, 1, tzinfo=UTC), noon, 26.04)]
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer(results))
        prices = await fetch(source(stub.url), *DAY)
    assert [(slot.start, slot.end) for slot in prices.slots] == [(DAY[0], noon), (noon, DAY[1])]
    assert [slot.value_per_kwh for slot in prices.slots] == pytest.approx([0.2604, 0.245], abs=1e-12)


@pytest.mark.parametrize(("direct_debit", "pence"), [(True, 24.1), (False, 25.3)])
async def test_rates_of_the_other_payment_method_are_left_out(direct_debit: bool, pence: float) -> None:
    results = [rate(DAY[0], None, 24.1, "DIRECT_DEBIT"), rate(DAY[0], None, 25.3, "NON_DIRECT_DEBIT")]
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer(results))
        prices = await fetch(source(stub.url, direct_debit=direct_debit), *DAY)
    assert [(slot.start, slot.end) for slot in prices.slots] == [DAY]
    assert prices.slots[0].value_per_kwh == pytest.approx(pence / 100, abs=1e-12)


async def test_a_day_not_yet_published_gives_no_slots() -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer([]))
        prices = await fetch(source(stub.url), *DAY)
    assert prices.slots == ()
    assert prices.currency == "GBP"


def test_a_long_range_is_split_into_requests_of_one_page_each() -> None:
    start = dt.datetime(2026, 11, 1, tzinfo=UTC)
    end = start + dt.timedelta(days=30)
    requests = source(None).requests(start, end)
    assert requests[0].url == f"https://api.octopus.energy{PATH}"
    assert len(requests) == 3
    assert requests[0].params["period_from"] == "2026-11-01T00:00:00Z"
    assert requests[-1].params["period_to"] == "2026-12-01T00:00:00Z"
    for before, after in itertools.pairwise(requests):
        assert after.params["period_from"] == before.params["period_to"]
    assert all(int(request.params["page_size"]) <= 1500 for request in requests)


async def test_an_answer_with_a_next_page_is_refused_not_cut_short() -> None:
    next_page = f"https://api.octopus.energy{PATH}?page=2&page_size=100"
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, answer(half_hourly(*DAY), next_page=next_page))
        with pytest.raises(SourceError, match="more pages"):
            await fetch(source(stub.url), *DAY)


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (404, b'{"detail": "Not found."}', "HTTP 404: Not found."),
        (
            400,
            b'{"period_from": ["Enter a valid date/time."]}',
            "HTTP 400: period_from: Enter a valid date/time.",
        ),
    ],
)
async def test_a_refused_request_reports_the_providers_reason(status: int, body: bytes, reason: str) -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(status, body)
        with pytest.raises(SourceError, match=reason) as caught:
            await fetch(source(stub.url), *DAY)
    assert not isinstance(caught.value, SourceBusy)


@pytest.mark.parametrize("status", [429, 500, 502])
async def test_rate_limits_and_server_trouble_are_busy(status: int) -> None:
    body = b'{"detail": "Request was throttled. Expected available in 12 seconds."}'
    with http_stub() as stub:
        stub.routes[PATH] = Answer(status, body, {"Retry-After": "12"})
        with pytest.raises(SourceBusy, match=f"HTTP {status}: Request was throttled") as caught:
            await fetch(source(stub.url), *DAY)
    assert caught.value.retry_after_s == 12.0


def good_rate(**changes: Any) -> dict[str, Any]:
    return {**rate(DAY[0], DAY[0] + HALF_HOUR, 15.0), **changes}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>maintenance</html>", "not JSON"),
        (b'{"count": 0, "next": null}', "no results list"),
        (b'{"results": {"value_inc_vat": 15}}', "no results list"),
        (b'{"next": null, "results": ["15.0"]}', r"results\[0\] is not an object"),
        (answer([good_rate(value_inc_vat="15p")]), "value_inc_vat"),
        (answer([good_rate(value_inc_vat=None)]), "value_inc_vat"),
        (answer([good_rate(valid_from="2026-12-07T00:00:00")]), "valid_from"),
        (answer([good_rate(valid_from=None)]), "valid_from"),
        (answer([good_rate(valid_to="soon")]), "valid_to"),
        (answer([good_rate(valid_to=z(DAY[0]))]), "ends before it starts"),
        (
            answer([good_rate(), good_rate(valid_from=z(DAY[0] + dt.timedelta(minutes=15)), valid_to=None)]),
            "overlap",
        ),
    ],
)
async def test_a_malformed_answer_is_a_source_error(body: bytes, reason: str) -> None:
    with http_stub() as stub:
        stub.routes[PATH] = Answer(200, body)
        with pytest.raises(SourceError, match=reason):
            await fetch(source(stub.url), *DAY)


def test_octopus_is_registered() -> None:
    assert find_source("prices", "octopus") is OctopusPrices
