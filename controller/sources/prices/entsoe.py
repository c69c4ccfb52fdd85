"""ENTSO-E transparency platform: day-ahead prices (document A44) of one bidding zone.

The API and its documents are described in the platform's REST API guide
(https://transparency.entsoe.eu/content/static_content/Static%20content/web%20api/Guide.html) and the
curve types in "Introduction of different Timeseries possibilities (curvetypes) with ENTSO-E
electronic document". The answer is a ``Publication_MarketDocument``: ``TimeSeries`` of ``Period``s,
each a start, an end, a ``resolution`` (PT60M, and PT15M since the 15-minute day-ahead market of
October 2025) and ``Point``s numbered from 1. Curve type A03 leaves out a point whose price repeats
the one before. Prices are EUR/MWh. Errors, and "No matching data found" for a day not yet
published, come as an ``Acknowledgement_MarketDocument`` with ``Reason/text``.
"""

from __future__ import annotations

import bisect
import datetime as dt
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from controller.config.sources import EntsoeSource
from controller.signals import PriceSlot
from controller.sources.base import (
    HttpRequest,
    HttpSource,
    SourceError,
    register_source,
)
from controller.sources.prices.common import FetchedPrices

__all__ = ["ZONE_EIC_CODES", "EntsoePrices", "parse_entsoe_prices", "zone_eic_code"]

# Short names of the common bidding zones -> EIC codes, as in entsoe-py's ``mappings.Area``
# (https://github.com/EnergieID/entsoe-py/blob/master/entsoe/mappings.py). Keys are written without
# '-' and '_' so that DE-LU, DE_LU and DELU all match.
ZONE_EIC_CODES: dict[str, str] = {
    "AT": "10YAT-APG------L",
    "BE": "10YBE----------2",
    "BG": "10YCA-BULGARIA-R",
    "CH": "10YCH-SWISSGRIDZ",
    "CZ": "10YCZ-CEPS-----N",
    "DE": "10Y1001A1001A82H",  # Germany trades in the DE-LU zone
    "DELU": "10Y1001A1001A82H",
    "LU": "10Y1001A1001A82H",
    "DK1": "10YDK-1--------W",
    "DK2": "10YDK-2--------M",
    "EE": "10Y1001A1001A39I",
    "ES": "10YES-REE------0",
    "FI": "10YFI-1--------U",
    "FR": "10YFR-RTE------C",
    "GR": "10YGR-HTSO-----Y",
    "HR": "10YHR-HEP------M",
    "HU": "10YHU-MAVIR----U",
    "IESEM": "10Y1001A1001A59C",
    "ITNORD": "10Y1001A1001A73I",
    "ITCNOR": "10Y1001A1001A70O",
    "ITCSUD": "10Y1001A1001A71M",
    "ITSUD": "10Y1001A1001A788",
    "ITCALA": "10Y1001C--00096J",
    "ITSICI": "10Y1001A1001A75E",
    "ITSARD": "10Y1001A1001A74G",
    "LT": "10YLT-1001A0008Q",
    "LV": "10YLV-1001A00074",
    "ME": "10YCS-CG-TSO---S",
    "MK": "10YMK-MEPSO----8",
    "NL": "10YNL----------L",
    "NO1": "10YNO-1--------2",
    "NO2": "10YNO-2--------T",
    "NO3": "10YNO-3--------J",
    "NO4": "10YNO-4--------9",
    "NO5": "10Y1001A1001A48H",
    "PL": "10YPL-AREA-----S",
    "PT": "10YPT-REN------W",
    "RO": "10YRO-TEL------P",
    "RS": "10YCS-SERBIATSOV",
    "SE1": "10Y1001A1001A44P",
    "SE2": "10Y1001A1001A45N",
    "SE3": "10Y1001A1001A46L",
    "SE4": "10Y1001A1001A47J",
    "SI": "10YSI-ELES-----O",
    "SK": "10YSK-SEPS-----K",
}

_EIC_LENGTH = 16
_EIC_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-")
_RESOLUTIONS = {
    "PT15M": dt.timedelta(minutes=15),
    "PT30M": dt.timedelta(minutes=30),
    "PT60M": dt.timedelta(hours=1),
}
_DAY_AHEAD_CONTRACT = "A01"  # contract_MarketAgreement.type; A07 is intraday
_NO_DATA = "no matching data found"
_CURRENCY = "EUR"  # what an answer without TimeSeries is in: every zone publishes in EUR
_WH_PER_MWH = 1000.0


def zone_eic_code(zone: str) -> str:
    """The EIC code of ``zone``: a short name (NL, DE-LU, SE3, IT-NORD, ...) or an EIC code itself."""
    code = zone.strip().upper()
    known = ZONE_EIC_CODES.get(code.replace("-", "").replace("_", ""))
    if known is not None:
        return known
    if len(code) == _EIC_LENGTH and code[:2].isdigit() and set(code) <= _EIC_CHARS:
        return code
    raise SourceError(
        f"unknown ENTSO-E zone {zone!r}: set zone to a short name (NL, DE-LU, AT, FR, DK1, SE3, NO1, "
        "IT-NORD, ...) or to the zone's 16-character EIC code"
    )


def _utc_stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y%m%d%H%M")


def _whole_hours(start: dt.datetime, end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """``[start, end)`` widened to whole UTC hours (the API's periods are given to the minute)."""
    hour = dt.timedelta(hours=1)
    first = start.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    last = end.astimezone(dt.UTC)
    floor = last.replace(minute=0, second=0, microsecond=0)
    return first, floor if floor == last else floor + hour


@register_source("prices", "entsoe")
class EntsoePrices(HttpSource[EntsoeSource, FetchedPrices]):
    """Day-ahead prices of ``cfg.zone``, one request for the whole range."""

    default_base_url = "https://web-api.tp.entsoe.eu/api"

    def requests(self, start: dt.datetime, end: dt.datetime) -> list[HttpRequest]:
        if end <= start:
            return []
        eic = zone_eic_code(self.cfg.zone)
        token = self.ctx.secret(self.cfg.token_env, "ENTSO-E security token")
        first, last = _whole_hours(start, end)
        params = {
            "securityToken": token,
            "documentType": "A44",
            "in_Domain": eic,
            "out_Domain": eic,
            "contract_MarketAgreement.type": _DAY_AHEAD_CONTRACT,
            "periodStart": _utc_stamp(first),
            "periodEnd": _utc_stamp(last),
        }
        return [HttpRequest(self.base_url, params=params)]

    def parse(self, request: HttpRequest, body: bytes) -> FetchedPrices:
        return parse_entsoe_prices(body)

    def no_data(self, status: int, body: bytes) -> FetchedPrices | None:
        try:
            text = _acknowledgement_text(_xml_root(body))
        except SourceError:
            return None
        return FetchedPrices((), _CURRENCY) if text is not None and _NO_DATA in text.lower() else None

    def error_reason(self, status: int, body: bytes) -> str:
        try:
            text = _acknowledgement_text(_xml_root(body))
        except SourceError:
            text = None
        if text:
            return f"HTTP {status}: {text[:200]}"
        if status == 401:
            return "HTTP 401: ENTSO-E refused the security token (check it, or ask for API access)"
        return super().error_reason(status, body)


# --- the XML ------------------------------------------------------------------------------------


def _local(tag: str) -> str:
    """The tag without its namespace: the document namespaces carry a version that changes."""
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _child_text(element: ET.Element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return None


def _required_text(element: ET.Element, name: str) -> str:
    text = _child_text(element, name)
    if not text:
        raise SourceError(f"ENTSO-E answer: {_local(element.tag)} without {name}")
    return text


def _xml_root(body: bytes) -> ET.Element:
    # A document type declaration is where entity expansion ("billion laughs") lives; ENTSO-E never
    # sends one.
    lowered = body.lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        raise SourceError("ENTSO-E answer has a DOCTYPE or ENTITY declaration: refused")
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise SourceError(f"ENTSO-E answer is not XML: {exc}") from None


def _acknowledgement_text(root: ET.Element) -> str | None:
    """``Reason/text`` of an acknowledgement document, None for any other document."""
    if _local(root.tag) != "Acknowledgement_MarketDocument":
        return None
    texts = [_child_text(reason, "text") or "" for reason in _children(root, "Reason")]
    return "; ".join(text for text in texts if text) or "acknowledgement without a reason"


def _moment(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise SourceError(f"ENTSO-E answer: bad time {text[:30]!r}") from None
    if moment.tzinfo is None:
        raise SourceError(f"ENTSO-E answer: time {text[:30]!r} has no zone")
    return moment.astimezone(dt.UTC)


@dataclass(frozen=True, slots=True)
class _Candidate:
    """One priced interval of one TimeSeries, before series that cover the same time are chosen from."""

    sequence: int
    step: dt.timedelta
    slot: PriceSlot


def _period_points(period: ET.Element) -> dict[int, float]:
    points: dict[int, float] = {}
    for point in _children(period, "Point"):
        try:
            position = int(_required_text(point, "position"))
            amount = float(_required_text(point, "price.amount"))
        except ValueError:
            raise SourceError("ENTSO-E answer: a Point's position or price.amount is not a number") from None
        if position < 1 or position in points:
            raise SourceError(f"ENTSO-E answer: Point position {position} repeated or below 1")
        if amount != amount or abs(amount) > 1e6:  # NaN or not a price
            raise SourceError(f"ENTSO-E answer: price.amount {amount} is not plausible")
        points[position] = amount
    return points


def _period_slots(period: ET.Element, curve_type: str) -> tuple[dt.timedelta, list[PriceSlot]]:
    """The slots of one Period, one per resolution step; A03 gaps take the price before them."""
    interval = _children(period, "timeInterval")
    if not interval:
        raise SourceError("ENTSO-E answer: Period without timeInterval")
    start = _moment(_required_text(interval[0], "start"))
    end = _moment(_required_text(interval[0], "end"))
    resolution = _required_text(period, "resolution")
    step = _RESOLUTIONS.get(resolution)
    if step is None:
        raise SourceError(f"ENTSO-E answer: resolution {resolution[:12]!r} is not PT15M, PT30M or PT60M")
    count, remainder = divmod(end - start, step)
    if count < 1 or count > 10_000 or remainder:
        raise SourceError(f"ENTSO-E answer: period {start:%Y-%m-%dT%H:%MZ} is not whole {resolution} steps")
    points = _period_points(period)
    if max(points, default=0) > count:
        raise SourceError(f"ENTSO-E answer: Point position {max(points)} beyond the period's {count} steps")
    slots: list[PriceSlot] = []
    value: float | None = None
    for position in range(1, count + 1):
        if position in points:
            value = points[position]
        elif curve_type != "A03" or value is None:
            continue  # A01 has a point per step; one missing is a step without a price
        slot_start = start + (position - 1) * step
        slots.append(PriceSlot(slot_start, slot_start + step, value / _WH_PER_MWH))
    return step, slots


def _series_candidates(series: ET.Element) -> tuple[str, list[_Candidate]]:
    currency = _child_text(series, "currency_Unit.name") or _CURRENCY
    unit = (_child_text(series, "price_Measure_Unit.name") or "MWH").upper()
    if unit != "MWH":
        raise SourceError(f"ENTSO-E answer: prices per {unit[:10]}, expected per MWH")
    sequence_text = _child_text(series, "classificationSequence_AttributeInstanceComponent.position") or "1"
    try:
        sequence = int(sequence_text)
    except ValueError:
        raise SourceError(f"ENTSO-E answer: classification sequence {sequence_text[:10]!r}") from None
    curve_type = _child_text(series, "curveType") or "A01"
    candidates: list[_Candidate] = []
    for period in _children(series, "Period"):
        step, slots = _period_slots(period, curve_type)
        candidates.extend(_Candidate(sequence, step, slot) for slot in slots)
    return currency.upper(), candidates


def _without_overlaps(candidates: list[_Candidate]) -> list[PriceSlot]:
    """One price per moment. Where series overlap, the lowest classification sequence wins (sequence 1
    is the coupled SDAC auction; DE-LU and AT also publish the EXAA auction as sequence 2), then the
    finer resolution (a zone may publish both a 15-minute and an hourly series)."""
    chosen: list[PriceSlot] = []
    starts: list[dt.datetime] = []
    for candidate in sorted(candidates, key=lambda c: (c.sequence, c.step, c.slot.start)):
        slot = candidate.slot
        index = bisect.bisect_right(starts, slot.start)
        if index > 0 and chosen[index - 1].end > slot.start:
            continue
        if index < len(chosen) and chosen[index].start < slot.end:
            continue
        starts.insert(index, slot.start)
        chosen.insert(index, slot)
    return chosen


def parse_entsoe_prices(body: bytes) -> FetchedPrices:
    """The day-ahead prices in an A44 answer, per kWh; an acknowledgement saying no data is no slots."""
    root = _xml_root(body)
    acknowledgement = _acknowledgement_text(root)
    if acknowledgement is not None:
        if _NO_DATA in acknowledgement.lower():
            return FetchedPrices((), _CURRENCY)
        raise SourceError(f"ENTSO-E: {acknowledgement[:200]}")
    if _local(root.tag) != "Publication_MarketDocument":
        raise SourceError(f"ENTSO-E answer is a {_local(root.tag)[:40]}, not a Publication_MarketDocument")
    currencies: set[str] = set()
    candidates: list[_Candidate] = []
    for series in _children(root, "TimeSeries"):
        contract = _child_text(series, "contract_MarketAgreement.type")
        if contract not in (None, _DAY_AHEAD_CONTRACT):
            continue  # intraday auctions can come along in the same document (seen for ES)
        currency, series_candidates = _series_candidates(series)
        currencies.add(currency)
        candidates.extend(series_candidates)
    if len(currencies) > 1:
        raise SourceError(f"ENTSO-E answer mixes currencies {sorted(currencies)}")
    return FetchedPrices(tuple(_without_overlaps(candidates)), currencies.pop() if currencies else _CURRENCY)
