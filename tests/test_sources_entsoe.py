"""ENTSO-E day-ahead prices, fetched over real HTTP from the stub server.

The documents follow the platform's published format (REST API guide, "Publication_MarketDocument"
for A44 and "Acknowledgement_MarketDocument" for errors); the header elements and TimeSeries fields
below are those of a real A44 answer quoted in evcc-io/evcc issue #16519 (namespace
``publicationdocument:7:3``). The acknowledgement has ``Reason`` code 999 and the text "No matching
data found ..." that entsoe-py (``entsoe.py``, ``_base_request``) looks for, with 200 or an error status.
The classification sequences (1 = SDAC, 2 = EXAA for DE-LU and AT) follow
entsoe-py issues #422 and #469. No published 401 body was found: the one here is an assumption.
"""

from __future__ import annotations

import datetime as dt
import itertools
import typing
import zoneinfo
from collections.abc import Sequence

import httpx
import pytest

from controller.config.sources import EntsoeSource, PriceSource
from controller.sources.base import SourceAuthError, SourceContext, SourceError, find_source
from controller.sources.http_client import SourceBusy, fetch_source
from controller.sources.prices import FetchedPrices
from controller.sources.prices.entsoe import EntsoePrices, parse_entsoe_prices, zone_eic_code
from tests.http_stub import Answer, HttpStub, http_stub

UTC = dt.UTC
AMSTERDAM = zoneinfo.ZoneInfo("Europe/Amsterdam")
NL_EIC = "10YNL----------L"
PUBLICATION_NS = "urn:iec62325.351:tc57wg16:451-3:publicationdocument:7:3"
ACK_NS = "urn:iec62325.351:tc57wg16:451-1:acknowledgementdocument:7:0"
XML = {"Content-Type": "text/xml"}


def _z(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def period_xml(
    start: dt.datetime, end: dt.datetime, resolution: str, points: Sequence[tuple[int, float]]
) -> str:
    body = "".join(
        f"<Point><position>{position}</position><price.amount>{price}</price.amount></Point>"
        for position, price in points
    )
    return (
        f"<Period><timeInterval><start>{_z(start)}</start><end>{_z(end)}</end></timeInterval>"
        f"<resolution>{resolution}</resolution>{body}</Period>"
    )


def series_xml(
    periods: Sequence[str],
    curve_type: str = "A01",
    sequence: int | None = None,
    contract: str = "A01",
    eic: str = NL_EIC,
    mrid: int = 1,
) -> str:
    sequence_xml = (
        ""
        if sequence is None
        else f"<classificationSequence_AttributeInstanceComponent.position>{sequence}"
        "</classificationSequence_AttributeInstanceComponent.position>"
    )
    return (
        f"<TimeSeries><mRID>{mrid}</mRID><auction.type>A01</auction.type><businessType>A62</businessType>"
        f'<in_Domain.mRID codingScheme="A01">{eic}</in_Domain.mRID>'
        f'<out_Domain.mRID codingScheme="A01">{eic}</out_Domain.mRID>'
        f"<contract_MarketAgreement.type>{contract}</contract_MarketAgreement.type>"
        "<currency_Unit.name>EUR</currency_Unit.name><price_Measure_Unit.name>MWH</price_Measure_Unit.name>"
        f"{sequence_xml}<curveType>{curve_type}</curveType>{''.join(periods)}</TimeSeries>"
    )


def document_xml(start: dt.datetime, end: dt.datetime, series: Sequence[str]) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Publication_MarketDocument xmlns="{PUBLICATION_NS}">'
        "<mRID>938364a9beb64bcb9a7a689d16385b01</mRID><revisionNumber>1</revisionNumber><type>A44</type>"
        '<sender_MarketParticipant.mRID codingScheme="A01">10X1001A1001A450</sender_MarketParticipant.mRID>'
        "<sender_MarketParticipant.marketRole.type>A32</sender_MarketParticipant.marketRole.type>"
        '<receiver_MarketParticipant.mRID codingScheme="A01">10X1001A1001A450</receiver_MarketParticipant.mRID>'
        "<receiver_MarketParticipant.marketRole.type>A33</receiver_MarketParticipant.marketRole.type>"
        "<createdDateTime>2026-06-14T17:33:34Z</createdDateTime>"
        f"<period.timeInterval><start>{_z(start)}</start><end>{_z(end)}</end></period.timeInterval>"
        f"{''.join(series)}</Publication_MarketDocument>"
    ).encode()


def acknowledgement_xml(text: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Acknowledgement_MarketDocument xmlns="{ACK_NS}"><mRID>0985f391-49af-4</mRID>'
        "<createdDateTime>2026-03-11T06:29:10Z</createdDateTime>"
        f"<Reason><code>999</code><text>{text}</text></Reason></Acknowledgement_MarketDocument>"
    ).encode()


def local_day(year: int, month: int, day: int) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime(year, month, day, tzinfo=AMSTERDAM)
    return start.astimezone(UTC), (start + dt.timedelta(days=1)).astimezone(UTC)


def source(stub: HttpStub, zone: str = "NL", env: dict[str, str] | None = None) -> EntsoePrices:
    cfg = EntsoeSource.model_validate({"type": "entsoe", "zone": zone, "base_url": f"{stub.url}/api"})
    ctx = SourceContext(
        currency="EUR", timezone="Europe/Amsterdam", env={"ENTSOE_TOKEN": "tok-123"} if env is None else env
    )
    return EntsoePrices(cfg, ctx)


async def fetch(prices: EntsoePrices, start: dt.datetime, end: dt.datetime) -> list[FetchedPrices]:
    async with httpx.AsyncClient(timeout=5) as client:
        return await fetch_source(client, prices, start, end)


def day_prices(count: int) -> list[tuple[int, float]]:
    return [(n, round(50.0 + 1.25 * n, 2)) for n in range(1, count + 1)]


async def test_normal_day_request_and_prices() -> None:
    start, end = local_day(2026, 6, 15)
    points = [*day_prices(23), (24, -3.5)]
    body = document_xml(start, end, [series_xml([period_xml(start, end, "PT60M", points)])])
    with http_stub() as stub:
        stub.routes["/api"] = Answer(200, body, XML)
        [fetched] = await fetch(source(stub), start, end)
        [seen] = stub.seen
    assert seen.method == "GET"
    assert seen.query == {
        "securityToken": "tok-123",
        "documentType": "A44",
        "in_Domain": NL_EIC,
        "out_Domain": NL_EIC,
        "contract_MarketAgreement.type": "A01",
        "periodStart": "202606142200",
        "periodEnd": "202606152200",
    }
    assert fetched.currency == "EUR" and fetched.retail is False
    assert len(fetched.slots) == 24
    first, last = fetched.slots[0], fetched.slots[-1]
    assert (first.start, first.end) == (
        dt.datetime(2026, 6, 14, 22, tzinfo=UTC),
        dt.datetime(2026, 6, 14, 23, tzinfo=UTC),
    )
    assert first.value_per_kwh == pytest.approx(0.05125)  # 51.25 EUR/MWh
    assert fetched.slots[10].value_per_kwh == pytest.approx(0.06375)
    assert last.start == dt.datetime(2026, 6, 15, 21, tzinfo=UTC) and last.end == end
    assert last.value_per_kwh == pytest.approx(-0.0035)
    assert all(a.end == b.start for a, b in zip(fetched.slots, fetched.slots[1:], strict=False))


async def test_request_widens_to_whole_hours() -> None:
    with http_stub() as stub:
        [request] = source(stub).requests(
            dt.datetime(2026, 6, 15, 10, 20, tzinfo=UTC), dt.datetime(2026, 6, 16, 9, 5, tzinfo=UTC)
        )
    assert request.params["periodStart"] == "202606151000"
    assert request.params["periodEnd"] == "202606161000"
    assert request.url.endswith("/api")


def test_a03_curve_fills_omitted_positions_up_to_the_period_end() -> None:
    start, end = local_day(2026, 6, 15)
    # Positions 2-3 repeat position 1, 5-96 repeat position 4 (curve type A03 omits repeated prices).
    points = [(1, 80.0), (4, 100.0)]
    body = document_xml(start, end, [series_xml([period_xml(start, end, "PT15M", points)], curve_type="A03")])
    slots = parse_entsoe_prices(body).slots
    assert len(slots) == 96
    assert [slot.value_per_kwh for slot in slots[:5]] == pytest.approx([0.08, 0.08, 0.08, 0.1, 0.1])
    assert slots[-1].value_per_kwh == pytest.approx(0.1) and slots[-1].end == end
    assert slots[3].start == start + dt.timedelta(minutes=45)


def test_a01_without_a_point_leaves_that_step_unpriced() -> None:
    start, end = local_day(2026, 6, 15)
    points = [p for p in day_prices(24) if p[0] != 5]
    body = document_xml(start, end, [series_xml([period_xml(start, end, "PT60M", points)])])
    slots = parse_entsoe_prices(body).slots
    assert len(slots) == 23
    assert slots[4].start == start + dt.timedelta(hours=5)


@pytest.mark.parametrize(
    ("day", "resolution", "count"),
    [
        ((2026, 3, 29), "PT60M", 23),
        ((2026, 3, 29), "PT15M", 92),
        ((2026, 10, 25), "PT60M", 25),
        ((2026, 10, 25), "PT15M", 100),
    ],
)
async def test_dst_days(day: tuple[int, int, int], resolution: str, count: int) -> None:
    start, end = local_day(*day)
    body = document_xml(start, end, [series_xml([period_xml(start, end, resolution, day_prices(count))])])
    with http_stub() as stub:
        stub.routes["/api"] = Answer(200, body, XML)
        [fetched] = await fetch(source(stub), start, end)
        [seen] = stub.seen
    assert (seen.query["periodStart"], seen.query["periodEnd"]) == (
        f"{start:%Y%m%d%H%M}",
        f"{end:%Y%m%d%H%M}",
    )
    assert (end - start) == dt.timedelta(hours=count * (1 if resolution == "PT60M" else 0.25))
    slots = fetched.slots
    assert len(slots) == count
    assert slots[0].start == start and slots[-1].end == end
    assert all(a.end == b.start for a, b in itertools.pairwise(slots))
    # Local wall-clock 03:00 exists once on both days and its price is at the right position.
    three = dt.datetime(*day, 3, tzinfo=AMSTERDAM).astimezone(UTC)
    index = next(i for i, slot in enumerate(slots) if slot.start == three)
    assert slots[index].value_per_kwh == pytest.approx(day_prices(count)[index][1] / 1000)


def test_fifteen_and_sixty_minute_series_in_one_document() -> None:
    start, end = local_day(2026, 6, 15)
    hourly = series_xml([period_xml(start, end, "PT60M", [(n, 200.0) for n in range(1, 25)])], mrid=1)
    quarter = series_xml([period_xml(start, start + dt.timedelta(hours=12), "PT15M", day_prices(48))], mrid=2)
    slots = parse_entsoe_prices(document_xml(start, end, [hourly, quarter])).slots
    # The first 12 hours at 15 minutes, the rest from the hourly series, no overlap.
    assert len(slots) == 48 + 12
    assert slots[0].end - slots[0].start == dt.timedelta(minutes=15)
    assert slots[0].value_per_kwh == pytest.approx(0.05125)
    assert slots[48].start == start + dt.timedelta(hours=12)
    assert slots[48].end - slots[48].start == dt.timedelta(hours=1)
    assert slots[48].value_per_kwh == pytest.approx(0.2)
    assert all(a.end == b.start for a, b in itertools.pairwise(slots))


def test_sequence_one_wins_and_intraday_series_are_left_out() -> None:
    start, end = local_day(2026, 6, 15)
    exaa = series_xml([period_xml(start, end, "PT15M", [(n, 999.0) for n in range(1, 97)])], sequence=2)
    sdac = series_xml([period_xml(start, end, "PT15M", day_prices(96))], sequence=1, mrid=2)
    intraday = series_xml([period_xml(start, end, "PT15M", [(n, 7.0) for n in range(1, 97)])], contract="A07")
    slots = parse_entsoe_prices(document_xml(start, end, [exaa, intraday, sdac])).slots
    assert len(slots) == 96
    assert [slot.value_per_kwh for slot in slots] == pytest.approx([p / 1000 for _n, p in day_prices(96)])


async def test_no_matching_data_is_an_empty_day() -> None:
    start, end = local_day(2026, 6, 16)
    body = acknowledgement_xml("No matching data found for Data item ENERGY_PRICES [12.1.D].")
    with http_stub() as stub:
        stub.routes["/api"] = Answer(200, body, XML)
        [fetched] = await fetch(source(stub), start, end)
        assert fetched.slots == ()
        stub.routes["/api"] = Answer(400, body, XML)  # the platform also answers it with 400
        [fetched] = await fetch(source(stub), start, end)
        assert fetched.slots == () and fetched.currency == "EUR"


async def test_invalid_token_is_an_auth_error_with_the_reason() -> None:
    start, end = local_day(2026, 6, 15)
    with http_stub() as stub:
        stub.routes["/api"] = Answer(
            401, acknowledgement_xml("Unauthorized. Missing or invalid security token"), XML
        )
        with pytest.raises(SourceAuthError, match="invalid security token"):
            await fetch(source(stub), start, end)
        stub.routes["/api"] = Answer(401, b"", XML)
        with pytest.raises(SourceAuthError, match="security token"):
            await fetch(source(stub), start, end)


async def test_provider_error_body_is_the_reason() -> None:
    start, end = local_day(2026, 6, 15)
    text = "The amount of requested data exceeds allowed limit"
    with http_stub() as stub:
        stub.routes["/api"] = Answer(400, acknowledgement_xml(text), XML)
        with pytest.raises(SourceError, match="exceeds allowed limit") as raised:
            await fetch(source(stub), start, end)
        assert not isinstance(raised.value, SourceBusy | SourceAuthError)
        # The same acknowledgement with 200 is an error too: it is not a "no data" answer.
        stub.routes["/api"] = Answer(200, acknowledgement_xml(text), XML)
        with pytest.raises(SourceError, match="exceeds allowed limit"):
            await fetch(source(stub), start, end)


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_rate_limit_and_server_trouble_are_busy(status: int) -> None:
    start, end = local_day(2026, 6, 15)
    with http_stub() as stub:
        stub.routes["/api"] = Answer(status, b"<html>Service Unavailable</html>", {"Retry-After": "30"})
        with pytest.raises(SourceBusy) as raised:
            await fetch(source(stub), start, end)
    assert raised.value.retry_after_s == 30


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Publication_MarketDocument>&lol2;</Publication_MarketDocument>"""


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not xml at all", "not XML"),
        (b"<Publication_MarketDocument><TimeSeries>", "not XML"),
        (BOMB, "DOCTYPE"),
        (b"<GL_MarketDocument/>", "not a Publication_MarketDocument"),
        (
            document_xml(
                *local_day(2026, 6, 15),
                [
                    series_xml(
                        [period_xml(*local_day(2026, 6, 15), "PT60M", [(1, 1.0)]).replace("PT60M", "P1D")]
                    )
                ],
            ),
            "resolution",
        ),
        (
            document_xml(
                *local_day(2026, 6, 15),
                [
                    series_xml(
                        [period_xml(*local_day(2026, 6, 15), "PT60M", [(1, 1.0)]).replace("1.0", "n/a")]
                    )
                ],
            ),
            "not a number",
        ),
        (
            document_xml(
                *local_day(2026, 6, 15),
                [series_xml([period_xml(*local_day(2026, 6, 15), "PT60M", [(25, 1.0)])])],
            ),
            "beyond",
        ),
    ],
)
async def test_malformed_bodies_are_source_errors(body: bytes, reason: str) -> None:
    start, end = local_day(2026, 6, 15)
    with http_stub() as stub:
        stub.routes["/api"] = Answer(200, body, XML)
        with pytest.raises(SourceError, match=reason):
            await fetch(source(stub), start, end)


def test_start_tag_missing_is_named() -> None:
    start, end = local_day(2026, 6, 15)
    period = period_xml(start, end, "PT60M", [(1, 1.0)]).replace(f"<start>{_z(start)}</start>", "")
    with pytest.raises(SourceError, match="without start"):
        parse_entsoe_prices(document_xml(start, end, [series_xml([period])]))


async def test_missing_token_names_the_variable_and_sends_nothing() -> None:
    start, end = local_day(2026, 6, 15)
    with http_stub() as stub:
        stub.routes["/api"] = Answer(200, document_xml(start, end, []), XML)
        with pytest.raises(SourceAuthError, match="ENTSOE_TOKEN"):
            await fetch(source(stub, env={}), start, end)
        assert stub.seen == []


def test_zone_names_and_eic_codes() -> None:
    assert zone_eic_code("NL") == NL_EIC
    assert zone_eic_code("de-lu") == zone_eic_code("DE_LU") == "10Y1001A1001A82H"
    assert zone_eic_code("SE3") == "10Y1001A1001A46L"
    assert zone_eic_code("NO5") == "10Y1001A1001A48H"
    assert zone_eic_code("IT-NORD") == "10Y1001A1001A73I"
    assert zone_eic_code("10YFI-1--------U") == "10YFI-1--------U"  # a raw EIC code passes through
    with pytest.raises(SourceError, match="EIC code"):
        zone_eic_code("XX")


def test_unknown_zone_fails_before_any_request() -> None:
    with http_stub() as stub, pytest.raises(SourceError, match="unknown ENTSO-E zone 'Narnia'"):
        source(stub, zone="Narnia").requests(*local_day(2026, 6, 15))


def owned_price_types() -> list[str]:
    union = typing.get_args(typing.get_args(PriceSource)[0])
    names = [typing.get_args(model.model_fields["type"].annotation)[0] for model in union]
    return [name for name in names if name in ("entsoe", "nord_pool", "tibber")]


def test_every_owned_price_type_is_registered() -> None:
    owned = owned_price_types()
    assert sorted(owned) == ["entsoe", "nord_pool", "tibber"]
    for name in owned:
        cls = find_source("prices", name)
        assert cls.type_name == name and cls.kind == "prices"
        assert cls.default_base_url.startswith("https://")
