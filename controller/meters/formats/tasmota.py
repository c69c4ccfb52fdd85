"""Tasmota energy telemetry (energy plugs, and smart meters read by an SML script)."""

from __future__ import annotations

import math
import re
from typing import Any

from controller.config import MeterConfig
from controller.meters.payload import (
    MAX_POWER_W,
    ParsedValue,
    PayloadError,
    load_json,
    number,
    phases_adding_up,
    walk,
)
from controller.meters.registry import FormatParser, register_meter_format
from controller.values import parse_json_path

__all__ = ["Tasmota"]

# Per-phase power next to ``Power_curr`` in an SML script's section, as the Tasmota docs' scripts and
# common ones name it: Power_p1, Power_L1, Power_curr_p1, Power_curr_L1 (any case).
_PHASE_KEY = re.compile(r"^power(?:_curr)?_(?:p|l)([123])$", re.IGNORECASE)


@register_meter_format("tasmota")
class Tasmota(FormatParser):
    """Tasmota's ``tele/<topic>/SENSOR`` JSON: ``ENERGY.Power`` in W (a list of channels is summed),
    or the signed ``Power_curr`` of an SML script under any top-level key; ``json_path`` overrides
    both. ``scale`` applies. Next to ``Power_curr``, the phases ``Power_p1``..``Power_p3`` (or
    ``Power_L1``.., ``Power_curr_p1``..) are read as L1-L3 when all three are there and add up to
    ``Power_curr``; ``ENERGY.Power`` lists are channels, not necessarily phases, and give none.

    Example (energy plug)::

        {"Time":"2024-06-01T12:00:05","ENERGY":{"Total":812.345,"Power":245,"Voltage":231}}

    Example (SML script, export negative)::

        {"Time":"2024-06-01T12:00:05","MT631":{"Total_in":12345.6789,"Power_curr":-523}}

    Example (SML script with the phases, OBIS 36.7.0, 56.7.0, 76.7.0)::

        {"Time":"2024-06-01T12:00:05","SML":{"Total_in":12345.6789,"Power_curr":1180,
         "Power_p1":1410,"Power_p2":-380,"Power_p3":150}}
    """

    def __init__(self, meter: MeterConfig) -> None:
        super().__init__(meter)
        self._path = parse_json_path(meter.json_path) if meter.json_path else None

    def parse(self, topic: str, payload: bytes) -> ParsedValue:
        data = load_json(payload)
        if not isinstance(data, dict):
            raise PayloadError("Tasmota payload is not a JSON object")
        scale = self.meter.scale
        if self._path is not None:
            return ParsedValue(number(walk(data, self._path), "value") * scale)
        energy = data.get("ENERGY")
        if isinstance(energy, dict) and "Power" in energy:
            return ParsedValue(_energy_power(energy["Power"]) * scale)
        for key, section in data.items():
            if isinstance(section, dict) and "Power_curr" in section:
                total_w = number(section["Power_curr"], f"{key}.Power_curr") * scale
                return ParsedValue(total_w, _sml_phases_w(key, section, scale, total_w))
        raise PayloadError("neither ENERGY.Power nor an SML Power_curr in the payload")


def _energy_power(power: Any) -> float:
    if isinstance(power, list):  # multi-channel devices report one value per channel
        if not power:
            raise PayloadError("ENERGY.Power is an empty list")
        return math.fsum(number(p, "ENERGY.Power[]") for p in power)
    return number(power, "ENERGY.Power")


def _sml_phases_w(key: str, section: dict[str, Any], scale: float, total_w: float) -> tuple[float, ...]:
    """L1-L3 from an SML section, or () when it has not exactly one value per phase or they do not
    add up to the total. A phase value that is not a number, or is implausible, refuses the message."""
    found: dict[int, float] = {}
    for name, value in section.items():
        match = _PHASE_KEY.match(name)
        if match is None:
            continue
        phase = int(match.group(1))
        if phase in found:
            return ()  # two names for one phase: which one is meant is unknown
        found[phase] = number(value, f"{key}.{name}") * scale
        if abs(found[phase]) > MAX_POWER_W:
            raise PayloadError(f"{key}.{name} {found[phase]:g} W is implausible (check the unit or scale)")
    if len(found) != 3:
        return ()
    # Some meters send the magnitude per phase: those do not add up to the signed total.
    return phases_adding_up((found[1], found[2], found[3]), total_w)
