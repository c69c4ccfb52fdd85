"""One configured meter: its format's parser, found by name, plus the checks every meter shares."""

from __future__ import annotations

from controller.config import MeterConfig
from controller.domain import MeterRole
from controller.meters.payload import MAX_POWER_W, ParsedValue, PayloadError
from controller.meters.registry import FormatParser, find_meter_format

__all__ = ["MeterParser", "make_parser"]


class MeterParser:
    """Turns one meter's payloads into normalised values: W with the grid sign (+ import / - export)
    after the meter's ``sign``, or percent 0-100 for ``vehicle_soc``.

    The format (``meter.format``) is looked up in the registry; this class only talks to its
    :class:`~controller.meters.registry.FormatParser` interface.
    """

    def __init__(self, meter: MeterConfig) -> None:
        self.meter = meter
        self.is_soc = meter.role is MeterRole.VEHICLE_SOC
        self.format_parser: FormatParser = find_meter_format(meter.format)(meter)
        self.topics: tuple[str, ...] = self.format_parser.topics

    def parse(self, topic: str, payload: bytes) -> ParsedValue | None:
        """The normalised value; None while the format has no reading yet (a split dsmr reading still
        incomplete, a Shelly notification that carries no power of this meter).

        Raises PayloadError for anything unusable (malformed, wrong type, NaN, implausible size).
        """
        parsed = self.format_parser.parse(topic, payload)
        if parsed is None:
            return None
        checked = self._check(parsed)
        self.format_parser.accepted()  # only a reading that passed the checks may be merged into later ones
        return checked

    def _check(self, parsed: ParsedValue) -> ParsedValue:
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
    """The parser of one configured meter (the MQTT client builds one per meter at start)."""
    return MeterParser(meter)
