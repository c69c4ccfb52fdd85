"""One configured meter: its format's parser, found by name, plus the checks every meter shares."""

from __future__ import annotations

from controller.config import MeterConfig, SiteConfig
from controller.domain import MeterRole
from controller.meters.bounds import apply_bounds, meter_bounds
from controller.meters.payload import ParsedValue
from controller.meters.registry import FormatParser, find_meter_format

__all__ = ["MeterParser", "make_parser"]


class MeterParser:
    """Turns one meter's payloads into normalised values: W with the grid sign (+ import / - export)
    after the meter's ``sign``, or percent 0-100 for ``vehicle_soc``.

    The format (``meter.format``) is looked up in the registry; this class only talks to its
    :class:`~controller.meters.registry.FormatParser` interface. The role's physical bounds come
    from :func:`~controller.meters.bounds.meter_bounds` for ``site`` (without it: ±10 MW).
    """

    def __init__(self, meter: MeterConfig, site: SiteConfig | None = None) -> None:
        self.meter = meter
        self.is_soc = meter.role in (MeterRole.VEHICLE_SOC, MeterRole.BATTERY_SOC)
        self.bounds = meter_bounds(meter, site)
        self.format_parser: FormatParser = find_meter_format(meter.format)(meter)
        self.topics: tuple[str, ...] = self.format_parser.topics

    def parse(self, topic: str, payload: bytes) -> ParsedValue | None:
        """The normalised value; None while the format has no reading yet (a split dsmr reading still
        incomplete, a Shelly notification that carries no power of this meter).

        Raises PayloadError for anything unusable (malformed, wrong type, NaN), and its subclass
        ImplausibleReading for a value outside the role's bounds. A small negative on a role that
        cannot be negative is returned as 0 (without per-phase values).
        """
        parsed = self.format_parser.parse(topic, payload)
        if parsed is None:
            return None
        checked = self._check(parsed)
        self.format_parser.accepted()  # only a reading that passed the checks may be merged into later ones
        return checked

    def _check(self, parsed: ParsedValue) -> ParsedValue:
        if self.is_soc:
            return ParsedValue(apply_bounds(parsed.value, self.bounds))
        value = parsed.value * self.meter.sign
        checked = apply_bounds(value, self.bounds)
        if checked != value:  # clamped: per-phase values would no longer add up to it
            return ParsedValue(checked)
        return ParsedValue(checked, tuple(p * self.meter.sign for p in parsed.phases_w))


def make_parser(meter: MeterConfig, site: SiteConfig | None = None) -> MeterParser:
    """The parser of one configured meter, bounded for ``site`` (the MQTT client builds one per
    meter at start)."""
    return MeterParser(meter, site)
