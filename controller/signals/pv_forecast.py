"""PV production forecasts (pure): the price-slot format with power values in W or kW."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from controller.signals.payload import (
    MAX_LIMIT_W,
    MAX_PRICE_SLOTS,
    Segment,
    SignalError,
    issued_at_of,
    load_json,
    parse_slots,
    unwrap_envelope,
)

__all__ = ["PowerForecast", "parse_pv_forecast"]

_POWER_UNITS = {"w": 1.0, "kw": 1000.0}


@dataclass(frozen=True, slots=True)
class PowerForecast:
    """A forecast of power in W over time windows, e.g. PV production from a forecast service."""

    segments: tuple[Segment, ...]
    issued_at: dt.datetime | None = None


def _plausible_pv(i: int, value: float) -> None:
    if not 0 <= value <= MAX_LIMIT_W:
        raise SignalError(f"slot {i} PV power {value:g} W is not between 0 and {MAX_LIMIT_W:g} W")


def parse_pv_forecast(payload: bytes) -> PowerForecast:
    """A PV production forecast in the price-slot format; ``value`` in W (or kW with ``"unit": "kW"``)."""
    items, envelope = unwrap_envelope(load_json(payload), "forecast")
    if not items:
        raise SignalError("no forecast slots")
    if len(items) > MAX_PRICE_SLOTS:
        raise SignalError(f"{len(items)} slots exceed {MAX_PRICE_SLOTS}")
    unit = envelope.get("unit", "W")
    factor = _POWER_UNITS.get(unit.lower()) if isinstance(unit, str) else None
    if factor is None:
        raise SignalError(f"unit {str(unit)[:20]!r} is not W or kW")
    issued_at = issued_at_of(envelope)
    return PowerForecast(tuple(parse_slots(items, factor, _plausible_pv)), issued_at)
