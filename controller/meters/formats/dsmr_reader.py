"""dsmr-reader (a Dutch/Belgian DSMR smart-meter reader) publishing its readings over MQTT."""

from __future__ import annotations

from typing import Any

from controller.config import MeterConfig
from controller.meters.payload import (
    ParsedValue,
    PayloadError,
    decode_text,
    load_json,
    number,
    phases_adding_up,
)
from controller.meters.registry import FormatParser, register_meter_format

__all__ = ["DSMR_DELIVERED", "DSMR_JSON", "DSMR_PHASE_FIELDS", "DSMR_RETURNED", "DsmrReader"]

DSMR_DELIVERED = "reading/electricity_currently_delivered"
DSMR_RETURNED = "reading/electricity_currently_returned"
DSMR_JSON = "json"
DSMR_PHASE_FIELDS = tuple(
    f"phase_currently_{direction}_l{phase}" for direction in ("delivered", "returned") for phase in (1, 2, 3)
)
"""The per-phase fields (kW, >= 0), in the JSON telegram and each on ``<prefix>/reading/<field>``."""
_NO_VALUE = frozenset({"", "None", "null"})


@register_meter_format("dsmr_reader")
class DsmrReader(FormatParser):
    """dsmr-reader's MQTT output under the prefix configured as the meter's ``topic``:
    ``<prefix>/reading/electricity_currently_delivered`` and ``..._returned`` (one bare value per
    topic, kW, both >= 0), or both in the JSON message on ``<prefix>/json``. They are combined into
    one signed W value (delivered - returned) once both halves are known; ``scale`` does not apply.

    Per phase, ``phase_currently_delivered_l1`` .. ``_l3`` and ``phase_currently_returned_l1`` ..
    ``_l3`` (kW, in the JSON message or each on ``<prefix>/reading/<field>``) give L1-L3 as
    delivered - returned, once all six are known and they add up to the total. dsmr-reader sends a
    split topic only when its value changed, so every value is held until a new one arrives, and
    each split message yields the reading with what is held; an empty value (a meter without that
    phase) makes the phases unknown.

    Example: ``dsmr/reading/electricity_currently_delivered 0.347``, or on ``dsmr/json``::

        {"id":4711,"electricity_currently_delivered":"0.000","electricity_currently_returned":"1.234",
         "phase_currently_delivered_l1":"0.209","phase_currently_delivered_l2":"0.000",
         "phase_currently_delivered_l3":"0.611","phase_currently_returned_l1":"0.000",
         "phase_currently_returned_l2":"2.054","phase_currently_returned_l3":"0.000"}
    """

    def __init__(self, meter: MeterConfig) -> None:
        super().__init__(meter)
        prefix = meter.topic.rstrip("/")
        self._delivered_topic = f"{prefix}/{DSMR_DELIVERED}"
        self._returned_topic = f"{prefix}/{DSMR_RETURNED}"
        self._json_topic = f"{prefix}/{DSMR_JSON}"
        self._phase_topics = {f"{prefix}/reading/{field}": field for field in DSMR_PHASE_FIELDS}
        self._delivered_kw: float | None = None
        self._returned_kw: float | None = None
        self._phase_kw: dict[str, float] = {}

    @property
    def topics(self) -> tuple[str, ...]:
        return (self._delivered_topic, self._returned_topic, self._json_topic, *self._phase_topics)

    def parse(self, topic: str, payload: bytes) -> ParsedValue | None:
        if topic == self._json_topic:
            self._read_json(payload)
        elif topic == self._delivered_topic:
            self._delivered_kw = _kw(decode_text(payload).strip(), "electricity_currently_delivered")
        elif topic == self._returned_topic:
            self._returned_kw = _kw(decode_text(payload).strip(), "electricity_currently_returned")
        elif topic in self._phase_topics:
            field = self._phase_topics[topic]
            text = decode_text(payload).strip()
            if text in _NO_VALUE:
                self._phase_kw.pop(field, None)
            else:
                self._phase_kw[field] = _kw(text, field)
        else:
            raise PayloadError("not a dsmr-reader topic of this meter")
        if self._delivered_kw is None or self._returned_kw is None:
            return None  # waits for the other half
        total_w = (self._delivered_kw - self._returned_kw) * 1000.0
        return ParsedValue(total_w, self._phases_w(total_w))

    def _read_json(self, payload: bytes) -> None:
        data = load_json(payload)
        if not isinstance(data, dict):
            raise PayloadError("dsmr-reader JSON is not an object")
        delivered = _kw(data.get("electricity_currently_delivered"), "electricity_currently_delivered")
        returned = _kw(data.get("electricity_currently_returned"), "electricity_currently_returned")
        phases = {f: _kw(data[f], f) for f in DSMR_PHASE_FIELDS if data.get(f) is not None}
        self._delivered_kw, self._returned_kw, self._phase_kw = delivered, returned, phases

    def _phases_w(self, total_w: float) -> tuple[float, ...]:
        held = self._phase_kw
        if any(f not in held for f in DSMR_PHASE_FIELDS):
            return ()
        phases = tuple(
            (held[f"phase_currently_delivered_l{n}"] - held[f"phase_currently_returned_l{n}"]) * 1000.0
            for n in (1, 2, 3)
        )
        return phases_adding_up(phases, total_w)


def _kw(value: Any, field: str) -> float:
    kw = number(value, field)
    if kw < 0:
        raise PayloadError(f"{field} is negative; dsmr-reader sends magnitudes")
    return kw
