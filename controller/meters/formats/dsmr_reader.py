"""dsmr-reader (a Dutch/Belgian DSMR smart-meter reader) publishing its readings over MQTT."""

from __future__ import annotations

from typing import Any

from controller.config import MeterConfig
from controller.meters.payload import ParsedValue, PayloadError, decode_text, load_json, number
from controller.meters.registry import FormatParser, register_meter_format

__all__ = ["DSMR_DELIVERED", "DSMR_JSON", "DSMR_RETURNED", "DsmrReader"]

DSMR_DELIVERED = "reading/electricity_currently_delivered"
DSMR_RETURNED = "reading/electricity_currently_returned"
DSMR_JSON = "json"


@register_meter_format("dsmr_reader")
class DsmrReader(FormatParser):
    """dsmr-reader's MQTT output under the prefix configured as the meter's ``topic``:
    ``<prefix>/reading/electricity_currently_delivered`` and ``..._returned`` (one bare value per
    topic, kW, both >= 0), or both in the JSON message on ``<prefix>/json``. They are combined into
    one signed W value (delivered - returned) once both halves are known; ``scale`` does not apply.

    Example: ``dsmr/reading/electricity_currently_delivered 0.347``, or on ``dsmr/json``::

        {"id":4711,"electricity_currently_delivered":"0.000","electricity_currently_returned":"1.234"}
    """

    def __init__(self, meter: MeterConfig) -> None:
        super().__init__(meter)
        prefix = meter.topic.rstrip("/")
        self._delivered_topic = f"{prefix}/{DSMR_DELIVERED}"
        self._returned_topic = f"{prefix}/{DSMR_RETURNED}"
        self._json_topic = f"{prefix}/{DSMR_JSON}"
        self._delivered_kw: float | None = None
        self._returned_kw: float | None = None

    @property
    def topics(self) -> tuple[str, ...]:
        return (self._delivered_topic, self._returned_topic, self._json_topic)

    def parse(self, topic: str, payload: bytes) -> ParsedValue | None:
        if topic == self._json_topic:
            data = load_json(payload)
            if not isinstance(data, dict):
                raise PayloadError("dsmr-reader JSON is not an object")
            delivered = _kw(data.get("electricity_currently_delivered"), "delivered")
            returned = _kw(data.get("electricity_currently_returned"), "returned")
            self._delivered_kw, self._returned_kw = delivered, returned
        elif topic == self._delivered_topic:
            self._delivered_kw = _kw(decode_text(payload).strip(), "delivered")
        elif topic == self._returned_topic:
            self._returned_kw = _kw(decode_text(payload).strip(), "returned")
        else:
            raise PayloadError("not a dsmr-reader topic of this meter")
        if self._delivered_kw is None or self._returned_kw is None:
            return None  # waits for the other half
        return ParsedValue((self._delivered_kw - self._returned_kw) * 1000.0)


def _kw(value: Any, what: str) -> float:
    kw = number(value, f"electricity_currently_{what}")
    if kw < 0:
        raise PayloadError(f"electricity_currently_{what} is negative; dsmr-reader sends magnitudes")
    return kw
