"""Shelly Pro 3EM (a Gen2 three-phase energy meter) over MQTT, in every shape it publishes its status."""

from __future__ import annotations

import math
import re
from typing import Any

from controller.config import MeterConfig
from controller.meters.payload import (
    MAX_POWER_W,
    ParsedValue,
    PayloadError,
    has_path,
    load_json,
    number,
    walk,
)
from controller.meters.registry import FormatParser, register_meter_format
from controller.values import parse_json_path

__all__ = ["ShellyPro3EM"]

_PHASES = ("a_act_power", "b_act_power", "c_act_power")
_TOTAL = "total_act_power"
_COMPONENT = re.compile(r"(?:^|/)(em:\d+)$")
_NOTIFY_PARTIAL = "NotifyStatus"
_NOTIFY_FULL = "NotifyFullStatus"


@register_meter_format("shelly_pro3em")
class ShellyPro3EM(FormatParser):
    """The Shelly Pro 3EM's ``em`` status: ``total_act_power`` in W (signed, export negative) plus the
    phases ``a/b/c_act_power`` (summed when the total is missing); ``scale`` applies, ``json_path``
    reads another field of the status instead. The component is ``em:<n>`` from the topic's end,
    else ``em:0``. Shapes read:

    * ``<prefix>/status/em:0`` (``status_ntf``): the status object itself;
    * ``<prefix>/events/rpc`` (``rpc_ntf``): ``NotifyFullStatus`` with every component, and
      ``NotifyStatus`` with the changed fields only, merged into the last accepted reading
      (other components and ``NotifyEvent`` are skipped);
    * an RPC reply ``{"id": .., "result": {..}}`` to ``EM.GetStatus`` or ``Shelly.GetStatus``, and a
      bare ``Shelly.GetStatus`` object.

    Example (``shellypro3em-c8f09e8871a4/status/em:0``, shortened)::

        {"id":0,"a_act_power":951.2,"b_act_power":-951.1,"c_act_power":715.1,"total_act_power":715.175}

    Example (``shellypro3em-c8f09e8871a4/events/rpc``, only phase b changed)::

        {"method":"NotifyStatus","params":{"ts":1718793607.11,"em:0":{"id":0,"b_act_power":400.0}}}
    """

    def __init__(self, meter: MeterConfig) -> None:
        super().__init__(meter)
        self._path = parse_json_path(meter.json_path) if meter.json_path else None
        component = _COMPONENT.search(meter.topic)
        self._component = component.group(1) if component else "em:0"
        self._held_w: dict[str, float] = {}  # the last accepted reading's fields, for NotifyStatus deltas
        self._pending_w: dict[str, float] = {}

    def parse(self, topic: str, payload: bytes) -> ParsedValue | None:
        data = load_json(payload)
        if not isinstance(data, dict):
            raise PayloadError("Shelly payload is not a JSON object")
        found = _em_status(data, self._component)
        if found is None:
            return None  # a notification about another component (sys, wifi, emdata ...)
        status, partial = found
        if self._path is not None:
            if partial and not has_path(status, self._path):
                return None
            value = number(walk(status, self._path), "value") * self.meter.scale
            self._pending_w = {}
            return ParsedValue(value)
        return self._power(status, partial)

    def accepted(self) -> None:
        self._held_w = self._pending_w

    def _power(self, status: dict[str, Any], partial: bool) -> ParsedValue | None:
        held = dict(self._held_w) if partial else {}
        for key in (*_PHASES, _TOTAL):
            if status.get(key) is not None:
                held[key] = number(status[key], key) * self.meter.scale
                if key != _TOTAL and abs(held[key]) > MAX_POWER_W:  # the total: in the core's checks
                    raise PayloadError(f"{key} {held[key]:g} W is implausible (check the unit or scale)")
        phases = tuple(held[k] for k in _PHASES if k in held)
        if status.get(_TOTAL) is not None:
            self._pending_w = held
            return ParsedValue(held[_TOTAL], phases)
        if len(phases) == 3 and any(status.get(k) is not None for k in _PHASES):
            self._pending_w = held
            return ParsedValue(math.fsum(phases), phases)
        if partial:
            # NotifyStatus lists only what changed; without a power field it carries no reading.
            return None
        raise PayloadError("no total_act_power in the payload")


def _em_status(data: dict[str, Any], component: str) -> tuple[dict[str, Any], bool] | None:
    """The ``em`` status object in any of the shapes the device publishes, and whether it is partial
    (a NotifyStatus delta); None when the message is about other components only."""
    if "method" in data or "params" in data:
        method, params = data.get("method"), data.get("params")
        if not isinstance(method, str) or not isinstance(params, dict):
            raise PayloadError("Shelly RPC notification without a method name and params object")
        if method not in (_NOTIFY_PARTIAL, _NOTIFY_FULL):
            return None  # NotifyEvent and other notifications carry no meter status
        status = params.get(component)
        if status is None:
            return None
        if not isinstance(status, dict):
            raise PayloadError(f"params.{component} is not an object")
        return status, method == _NOTIFY_PARTIAL
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
