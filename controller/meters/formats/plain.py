"""A bare number per message, as many bridges and home-automation systems publish it."""

from __future__ import annotations

import re

from controller.config import MeterConfig
from controller.domain import MeterRole
from controller.meters.payload import ParsedValue, PayloadError, decode_text, number
from controller.meters.registry import FormatParser, register_meter_format

__all__ = ["Plain"]

_NUMBER_WITH_UNIT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-z%]*)\s*$")
_POWER_UNITS = {"w": 1.0, "kw": 1000.0}


@register_meter_format("plain")
class Plain(FormatParser):
    """A bare number in text, times ``scale``; or a number with a unit ``W`` or ``kW`` (``%`` for a
    ``vehicle_soc`` meter), whose unit states the scale, so ``scale`` is not applied.

    Examples: ``1234.5``, ``-300``, ``2e3``, ``230 W``, ``1.2kW``, ``57 %``.
    """

    def __init__(self, meter: MeterConfig) -> None:
        super().__init__(meter)
        self._is_soc = meter.role in (MeterRole.VEHICLE_SOC, MeterRole.BATTERY_SOC)

    def parse(self, topic: str, payload: bytes) -> ParsedValue:
        text = decode_text(payload).strip()
        match = _NUMBER_WITH_UNIT.match(text)
        if match is None:
            raise PayloadError(f"{text[:40]!r} is not a number")
        value = number(match.group(1), "value")
        unit = match.group(2).lower()
        if not unit:
            return ParsedValue(value * self.meter.scale)
        if self._is_soc:
            if unit != "%":
                raise PayloadError(f"unit {match.group(2)!r} is not a state of charge; send percent")
            return ParsedValue(value)
        if unit not in _POWER_UNITS:
            raise PayloadError(f"unit {match.group(2)!r} is not a power; send W or kW")
        return ParsedValue(value * _POWER_UNITS[unit])
