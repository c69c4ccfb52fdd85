"""Meter payload parsers: raw MQTT payloads -> one normalised value (pure, no I/O).

Power is normalised to W with the grid sign (+ import / - export) after the meter's ``sign``;
``vehicle_soc`` meters yield percent 0-100. Each configured meter gets one parser from
:func:`make_parser`; it names the topics it needs and turns ``(topic, payload)`` into a
:class:`ParsedValue`, or raises :class:`PayloadError` saying why the payload was refused.

Presets:

* ``tasmota``: ``tele/<t>/SENSOR`` JSON, ``ENERGY.Power`` (a list of channels is summed) or an SML
  script's signed ``Power_curr`` under any top-level key (``json_path`` overrides both).
* ``shelly_pro3em``: ``<prefix>/status/em:0``, ``total_act_power`` plus ``a/b/c_act_power``; also the
  RPC notifications on ``<prefix>/events/rpc`` (``NotifyStatus`` deltas are merged, other
  components and events are skipped) and ``EM.GetStatus``/``Shelly.GetStatus`` replies.
* ``dsmr_reader``: the topic is the dsmr-reader prefix; ``<prefix>/reading/electricity_currently_delivered``
  and ``..._returned`` (kW, both >= 0) are combined into one signed W value, as is ``<prefix>/json``.
* ``plain``: a bare number (``scale`` applies), or a number with a unit ``W``/``kW`` (``%`` for SoC).
* ``json``: a number at ``json_path`` (dotted, list indexes as numbers: ``a.0.b``), times ``scale``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from controller.config import MeterConfig, MeterFormat
from controller.domain import MeterRole
from controller.values import finite_number, parse_json_path

__all__ = [
    "MAX_METER_PAYLOAD_BYTES",
    "MAX_POWER_W",
    "MeterParser",
    "ParsedValue",
    "PayloadError",
    "make_parser",
    "parse_json_path",
]

MAX_METER_PAYLOAD_BYTES = 16 * 1024
# Larger than any grid connection this controller can serve; beyond it a reading is a unit error.
MAX_POWER_W = 10_000_000.0

DSMR_DELIVERED = "reading/electricity_currently_delivered"
DSMR_RETURNED = "reading/electricity_currently_returned"
DSMR_JSON = "json"

_SHELLY_PHASES = ("a_act_power", "b_act_power", "c_act_power")
_SHELLY_COMPONENT = re.compile(r"(?:^|/)(em:\d+)$")
_SHELLY_NOTIFY_PARTIAL = "NotifyStatus"
_SHELLY_NOTIFY_FULL = "NotifyFullStatus"

_NUMBER_WITH_UNIT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-z%]*)\s*$")
_POWER_UNITS = {"w": 1.0, "kw": 1000.0}


class PayloadError(ValueError):
    """A payload that cannot be used; the message says why, for the log."""


@dataclass(frozen=True, slots=True)
class ParsedValue:
    """A normalised reading: W (+ import) for power roles, percent for ``vehicle_soc``."""

    value: float
    phases_w: tuple[float, ...] = ()


def _walk(data: Any, path: tuple[str | int, ...]) -> Any:
    node = data
    for part in path:
        if isinstance(part, int) and isinstance(node, list):
            if part >= len(node):
                raise PayloadError(f"index {part} is past the end of a list of {len(node)}")
            node = node[part]
        elif isinstance(node, dict) and str(part) in node:
            node = node[str(part)]
        else:
            raise PayloadError(f"no {part!r} in the payload")
    return node


def _number(value: Any, what: str) -> float:
    """A JSON number (or a numeric string, which some devices send) as a finite float."""
    return finite_number(value, what, PayloadError, strings=True)


def _decode(payload: bytes) -> str:
    if len(payload) > MAX_METER_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds {MAX_METER_PAYLOAD_BYTES}")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("payload is not UTF-8 text") from None


def _load_json(payload: bytes) -> Any:
    text = _decode(payload)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and Python's limit on huge integer literals.
        raise PayloadError(f"invalid JSON: {str(exc)[:80]}") from None


def _has_path(data: Any, path: tuple[str | int, ...]) -> bool:
    try:
        _walk(data, path)
    except PayloadError:
        return False
    return True


def _shelly_em_status(data: dict[str, Any], component: str) -> tuple[dict[str, Any], bool] | None:
    """The ``em`` status object in any of the shapes a Shelly Gen2 device publishes, and whether it
    is partial; None when the message is about other components only.

    * ``<prefix>/status/em:0`` (``status_ntf``): the status object itself;
    * ``<prefix>/events/rpc`` (``rpc_ntf``): ``{"method": "NotifyStatus", "params": {"ts": ..,
      "em:0": {..changed fields only..}}}`` or ``NotifyFullStatus`` with every component;
    * an RPC reply ``{"id": .., "result": {..}}`` to ``EM.GetStatus`` (the status) or
      ``Shelly.GetStatus`` (every component), and a bare ``Shelly.GetStatus`` object.
    """
    if "method" in data or "params" in data:
        method, params = data.get("method"), data.get("params")
        if not isinstance(method, str) or not isinstance(params, dict):
            raise PayloadError("Shelly RPC notification without a method name and params object")
        if method not in (_SHELLY_NOTIFY_PARTIAL, _SHELLY_NOTIFY_FULL):
            return None  # NotifyEvent and other notifications carry no meter status
        status = params.get(component)
        if status is None:
            return None
        if not isinstance(status, dict):
            raise PayloadError(f"params.{component} is not an object")
        return status, method == _SHELLY_NOTIFY_PARTIAL
    if "result" in data:
        result = data["result"]
        if not isinstance(result, dict):
            raise PayloadError("Shelly RPC result is not an object")
        data = result
    if component in data:
        status = data[component]
        if not isinstance(status, dict):
            raise PayloadError(f"{component} is not an object")
        return status, False
    return data, False


class MeterParser:
    """Turns one meter's payloads into normalised values; see the module docstring for presets."""

    def __init__(self, meter: MeterConfig) -> None:
        self.meter = meter
        self.is_soc = meter.role is MeterRole.VEHICLE_SOC
        self._path = parse_json_path(meter.json_path) if meter.json_path else None
        self._dsmr_delivered_kw: float | None = None
        self._dsmr_returned_kw: float | None = None
        component = _SHELLY_COMPONENT.search(meter.topic)
        self._shelly_component = component.group(1) if component else "em:0"
        self._shelly_held_w: dict[str, float] = {}  # merges NotifyStatus deltas
        if meter.format is MeterFormat.DSMR_READER:
            prefix = meter.topic.rstrip("/")
            self.topics: tuple[str, ...] = (
                f"{prefix}/{DSMR_DELIVERED}",
                f"{prefix}/{DSMR_RETURNED}",
                f"{prefix}/{DSMR_JSON}",
            )
        else:
            self.topics = (meter.topic,)

    def parse(self, topic: str, payload: bytes) -> ParsedValue | None:
        """The normalised value; None while a split reading (dsmr) is still incomplete, or for a
        Shelly notification that carries no power of this meter.

        Raises PayloadError for anything unusable (malformed, wrong type, NaN, implausible size).
        """
        fmt = self.meter.format
        if fmt is MeterFormat.PLAIN:
            return self._finish(self._plain(payload))
        if fmt is MeterFormat.DSMR_READER:
            raw = self._dsmr(topic, payload)
            return None if raw is None else self._finish(ParsedValue(raw))
        data = _load_json(payload)
        if fmt is MeterFormat.JSON:
            assert self._path is not None  # config guarantees json_path for format json
            return self._finish(ParsedValue(_number(_walk(data, self._path), "value") * self.meter.scale))
        if fmt is MeterFormat.TASMOTA:
            return self._finish(ParsedValue(self._tasmota(data) * self.meter.scale))
        found = self._shelly(data)
        if found is None:
            return None
        parsed, held_w = found
        finished = self._finish(parsed)
        self._shelly_held_w = held_w  # only a reading that passed the checks is merged into later ones
        return finished

    # ------------------------------------------------------------------ presets

    def _plain(self, payload: bytes) -> ParsedValue:
        text = _decode(payload).strip()
        match = _NUMBER_WITH_UNIT.match(text)
        if match is None:
            raise PayloadError(f"{text[:40]!r} is not a number")
        number = _number(match.group(1), "value")
        unit = match.group(2).lower()
        if not unit:
            return ParsedValue(number * self.meter.scale)
        # An explicit unit states the scale, so the configured scale (for bare numbers) is not applied.
        if self.is_soc:
            if unit != "%":
                raise PayloadError(f"unit {match.group(2)!r} is not a state of charge; send percent")
            return ParsedValue(number)
        if unit not in _POWER_UNITS:
            raise PayloadError(f"unit {match.group(2)!r} is not a power; send W or kW")
        return ParsedValue(number * _POWER_UNITS[unit])

    def _tasmota(self, data: Any) -> float:
        if not isinstance(data, dict):
            raise PayloadError("Tasmota payload is not a JSON object")
        if self._path is not None:
            return _number(_walk(data, self._path), "value")
        energy = data.get("ENERGY")
        if isinstance(energy, dict) and "Power" in energy:
            power = energy["Power"]
            if isinstance(power, list):  # multi-channel devices report one value per channel
                if not power:
                    raise PayloadError("ENERGY.Power is an empty list")
                return math.fsum(_number(p, "ENERGY.Power[]") for p in power)
            return _number(power, "ENERGY.Power")
        for key, section in data.items():
            if isinstance(section, dict) and "Power_curr" in section:
                return _number(section["Power_curr"], f"{key}.Power_curr")
        raise PayloadError("neither ENERGY.Power nor an SML Power_curr in the payload")

    def _shelly(self, data: Any) -> tuple[ParsedValue, dict[str, float]] | None:
        if not isinstance(data, dict):
            raise PayloadError("Shelly payload is not a JSON object")
        found = _shelly_em_status(data, self._shelly_component)
        if found is None:
            return None  # a notification about another component (sys, wifi, emdata ...)
        status, partial = found
        if self._path is not None:
            if partial and not _has_path(status, self._path):
                return None
            return ParsedValue(_number(_walk(status, self._path), "value") * self.meter.scale), {}
        held = dict(self._shelly_held_w) if partial else {}
        for key in (*_SHELLY_PHASES, "total_act_power"):
            if status.get(key) is not None:
                held[key] = _number(status[key], key) * self.meter.scale
                if key != "total_act_power" and abs(held[key]) > MAX_POWER_W:  # the total: in _finish
                    raise PayloadError(f"{key} {held[key]:g} W is implausible (check the unit or scale)")
        phases = tuple(held[k] for k in _SHELLY_PHASES if k in held)
        if status.get("total_act_power") is not None:
            return ParsedValue(held["total_act_power"], phases), held
        if len(phases) == 3 and any(status.get(k) is not None for k in _SHELLY_PHASES):
            return ParsedValue(math.fsum(phases), phases), held
        if partial:
            # NotifyStatus lists only what changed; without a power field it carries no reading.
            return None
        raise PayloadError("no total_act_power in the payload")

    def _dsmr(self, topic: str, payload: bytes) -> float | None:
        delivered_topic, returned_topic, json_topic = self.topics
        if topic == json_topic:
            data = _load_json(payload)
            if not isinstance(data, dict):
                raise PayloadError("dsmr-reader JSON is not an object")
            delivered = self._dsmr_kw(data.get("electricity_currently_delivered"), "delivered")
            returned = self._dsmr_kw(data.get("electricity_currently_returned"), "returned")
            self._dsmr_delivered_kw, self._dsmr_returned_kw = delivered, returned
        elif topic == delivered_topic:
            self._dsmr_delivered_kw = self._dsmr_kw(self._bare(payload), "delivered")
        elif topic == returned_topic:
            self._dsmr_returned_kw = self._dsmr_kw(self._bare(payload), "returned")
        else:
            raise PayloadError("not a dsmr-reader topic of this meter")
        if self._dsmr_delivered_kw is None or self._dsmr_returned_kw is None:
            return None
        return (self._dsmr_delivered_kw - self._dsmr_returned_kw) * 1000.0

    @staticmethod
    def _bare(payload: bytes) -> str:
        return _decode(payload).strip()

    @staticmethod
    def _dsmr_kw(value: Any, what: str) -> float:
        kw = _number(value, f"electricity_currently_{what}")
        if kw < 0:
            raise PayloadError(f"electricity_currently_{what} is negative; dsmr-reader sends magnitudes")
        return kw

    # ------------------------------------------------------------------- checks

    def _finish(self, parsed: ParsedValue) -> ParsedValue:
        value = parsed.value
        if self.is_soc:
            if not 0.0 <= value <= 100.0:
                raise PayloadError(f"SoC {value:g} is outside 0-100 % (check the unit or scale)")
            return parsed
        value *= self.meter.sign
        if abs(value) > MAX_POWER_W:
            raise PayloadError(f"power {value:g} W is implausible (check the unit or scale)")
        if self.meter.role is MeterRole.V2L and value < 0:
            raise PayloadError("V2L power is a draw and must be >= 0 W (set sign: -1 if it reports negative)")
        phases = tuple(p * self.meter.sign for p in parsed.phases_w)
        return ParsedValue(value, phases)


def make_parser(meter: MeterConfig) -> MeterParser:
    return MeterParser(meter)
