"""Tasmota energy telemetry (energy plugs, and smart meters read by an SML script)."""

from __future__ import annotations

import math
from typing import Any

from controller.config import MeterConfig
from controller.meters.payload import ParsedValue, PayloadError, load_json, number, walk
from controller.meters.registry import FormatParser, register_meter_format
from controller.values import parse_json_path

__all__ = ["Tasmota"]


@register_meter_format("tasmota")
class Tasmota(FormatParser):
    """Tasmota's ``tele/<topic>/SENSOR`` JSON: ``ENERGY.Power`` in W (a list of channels is summed),
    or the signed ``Power_curr`` of an SML script under any top-level key; ``json_path`` overrides
    both. ``scale`` applies.

    Example (energy plug)::

        {"Time":"2024-06-01T12:00:05","ENERGY":{"Total":812.345,"Power":245,"Voltage":231}}

    Example (SML script, export negative)::

        {"Time":"2024-06-01T12:00:05","MT631":{"Total_in":12345.6789,"Power_curr":-523}}
    """

    def __init__(self, meter: MeterConfig) -> None:
        super().__init__(meter)
        self._path = parse_json_path(meter.json_path) if meter.json_path else None

    def parse(self, topic: str, payload: bytes) -> ParsedValue:
        return ParsedValue(self._power(load_json(payload)) * self.meter.scale)

    def _power(self, data: Any) -> float:
        if not isinstance(data, dict):
            raise PayloadError("Tasmota payload is not a JSON object")
        if self._path is not None:
            return number(walk(data, self._path), "value")
        energy = data.get("ENERGY")
        if isinstance(energy, dict) and "Power" in energy:
            power = energy["Power"]
            if isinstance(power, list):  # multi-channel devices report one value per channel
                if not power:
                    raise PayloadError("ENERGY.Power is an empty list")
                return math.fsum(number(p, "ENERGY.Power[]") for p in power)
            return number(power, "ENERGY.Power")
        for key, section in data.items():
            if isinstance(section, dict) and "Power_curr" in section:
                return number(section["Power_curr"], f"{key}.Power_curr")
        raise PayloadError("neither ENERGY.Power nor an SML Power_curr in the payload")
