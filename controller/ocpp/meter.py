"""Pure parsing of OCPP meter values (1.6 strings, 2.x numbers) into one signed sample.

Vehicle power follows the domain sign: + charging the car, - discharging it, so
``power_w = Power.Active.Import - Power.Active.Export`` as the charger reports them.

Two kinds of bad reading: an *unreadable* one (not a number, an unknown unit, SoC outside 0-100 %)
raises MeterValueError, so the message is answered with a CALLERROR; an *implausible* one (not finite
once scaled, a negative energy register, a power above ``max_power_w``) is dropped and reported to
``on_dropped``, and the rest of the message is used as if it had not been sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.values import finite_number, utc_from_iso

__all__ = [
    "MAX_PLAUSIBLE_POWER_W",
    "DroppedReading",
    "MeterSample",
    "MeterValueError",
    "parse_meter_values",
    "parse_timestamp",
]

MAX_PLAUSIBLE_POWER_W = 1_000_000.0
"""Bound on |power| when the caller knows no better one: no EV charger moves 1 MW."""


class MeterValueError(ValueError):
    """A meter value that cannot be read (bad number, unknown unit, bad timestamp)."""


@dataclass(frozen=True, slots=True)
class MeterSample:
    """The latest readings from one MeterValues/TransactionEvent message; None where not reported."""

    at: datetime
    power_w: float | None = None
    energy_import_wh: float | None = None
    energy_export_wh: float | None = None
    soc_percent: float | None = None


@dataclass(frozen=True, slots=True)
class DroppedReading:
    """A readable but implausible reading that was left out of the sample."""

    measurand: str
    phase: str | None
    value: float  # after unit scaling (W, Wh, %); may be inf
    reason: str


DropSink = Callable[[DroppedReading], None]

_POWER_SCALE = {"W": 1.0, "kW": 1000.0}
_ENERGY_SCALE = {"Wh": 1.0, "kWh": 1000.0}
_PHASE_LINE = ("L1", "L2", "L3", "L1-N", "L2-N", "L3-N")
# Measurands we read; everything else (current, voltage, temperature …) is ignored.
_POWER_IMPORT = "Power.Active.Import"
_POWER_EXPORT = "Power.Active.Export"
_ENERGY_IMPORT = "Energy.Active.Import.Register"
_ENERGY_EXPORT = "Energy.Active.Export.Register"
_SOC = "SoC"
_POWERS = frozenset((_POWER_IMPORT, _POWER_EXPORT))
_DEFAULT_UNITS = {
    _POWER_IMPORT: "W",
    _POWER_EXPORT: "W",
    _ENERGY_IMPORT: "Wh",
    _ENERGY_EXPORT: "Wh",
    _SOC: "Percent",
}


def parse_timestamp(value: Any) -> datetime:
    """ISO 8601 with a zone (``Z`` or offset) -> UTC; the ``ocpp`` schemas do not check date-time."""
    return utc_from_iso(value, "timestamp", MeterValueError)


def _number(raw: Any) -> float:
    # 1.6 sends strings ("7400.5"), 2.x numbers.
    return finite_number(raw, "meter value", MeterValueError, strings=True)


def _unit_and_multiplier(sampled: Mapping[str, Any], measurand: str) -> tuple[str, float]:
    unit = sampled.get("unit")  # 1.6
    multiplier = 1.0
    unit_of_measure = sampled.get("unitOfMeasure")  # 2.x
    if isinstance(unit_of_measure, Mapping):
        unit = unit_of_measure.get("unit", unit)
        exponent = unit_of_measure.get("multiplier", 0)
        if not isinstance(exponent, int) or isinstance(exponent, bool) or not -9 <= exponent <= 9:
            raise MeterValueError(f"unit multiplier {exponent!r} is not a small integer")
        multiplier = 10.0**exponent
    if unit is None:
        unit = _DEFAULT_UNITS[measurand]
    if not isinstance(unit, str):
        raise MeterValueError(f"unit {unit!r} is not a string")
    return unit, multiplier


def _scaled(sampled: Mapping[str, Any], measurand: str) -> float:
    unit, multiplier = _unit_and_multiplier(sampled, measurand)
    value = _number(sampled.get("value")) * multiplier
    if measurand == _SOC:
        if unit != "Percent":
            raise MeterValueError(f"SoC unit {unit!r} is not Percent")
        if math.isfinite(value) and not 0 <= value <= 100:  # not finite: dropped by the caller
            raise MeterValueError(f"SoC {value} is outside 0-100 %")
        return value
    scales = _POWER_SCALE if measurand.startswith("Power") else _ENERGY_SCALE
    if unit not in scales:
        raise MeterValueError(f"unit {unit!r} does not fit {measurand}")
    return value * scales[unit]


def _implausible(measurand: str, value: float, max_power_w: float) -> str | None:
    """Why a scaled reading cannot be true, or None if it can."""
    if not math.isfinite(value):
        return "not finite after unit scaling"
    if measurand in (_ENERGY_IMPORT, _ENERGY_EXPORT) and value < 0:
        return "an energy register is never negative"
    if measurand in _POWERS and abs(value) > max_power_w:
        return f"above the plausible {max_power_w:g} W"
    return None


class _Collector:
    """Per measurand: the total (no phase) wins; otherwise line phases are summed."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.phases: dict[str, dict[str, float]] = {}

    def add(self, measurand: str, phase: str | None, value: float) -> None:
        if phase is None:
            self.total[measurand] = value
        else:
            self.phases.setdefault(measurand, {})[phase] = value

    def get(self, measurand: str) -> float | None:
        if measurand in self.total:
            return self.total[measurand]
        per_phase = self.phases.get(measurand)
        return sum(per_phase.values()) if per_phase else None


def _entry_values(sampled_values: Any, max_power_w: float, on_dropped: DropSink | None) -> dict[str, float]:
    """The plausible readings of one ``meterValue`` entry, per measurand."""
    if not isinstance(sampled_values, list):
        raise MeterValueError("sampledValue is not a list")
    collector = _Collector()
    dropped: set[str] = set()  # a measurand with one bad phase is not summed from the others

    def drop(measurand: str, phase: str | None, value: float, reason: str) -> None:
        dropped.add(measurand)
        if on_dropped is not None:
            on_dropped(DroppedReading(measurand, phase, value, reason))

    for sampled in sampled_values:
        if not isinstance(sampled, Mapping):
            raise MeterValueError("sampledValue entry is not an object")
        measurand = sampled.get("measurand", _ENERGY_IMPORT)
        if measurand not in _DEFAULT_UNITS:
            continue
        phase = sampled.get("phase")
        reading = _scaled(sampled, measurand)
        if phase is not None and phase not in _PHASE_LINE:
            continue  # N, L1-L2 … (neutral, line-to-line) are not per-phase energy flows
        reason = _implausible(measurand, reading, max_power_w)
        if reason is not None:
            drop(measurand, phase, reading, reason)
        else:
            collector.add(measurand, phase, reading)
    values: dict[str, float] = {}
    for measurand in _DEFAULT_UNITS:
        value = collector.get(measurand)
        if value is None or measurand in dropped:
            continue
        reason = _implausible(measurand, value, max_power_w)  # phases that only add up to too much
        if reason is not None:
            drop(measurand, None, value, f"phase sum {reason}")
        else:
            values[measurand] = value
    if dropped & _POWERS:
        # power_w is import - export: one direction alone would be read as the whole flow.
        for measurand in _POWERS:
            values.pop(measurand, None)
    return values


def parse_meter_values(
    meter_values: Iterable[Any],
    *,
    max_power_w: float = MAX_PLAUSIBLE_POWER_W,
    on_dropped: DropSink | None = None,
) -> MeterSample | None:
    """The newest reading per measurand across all ``meterValue`` entries, or None if empty.

    Raises MeterValueError for a reading that is present but unreadable, so the caller can answer
    the charger with an error instead of storing garbage. Implausible readings (see the module
    docstring; powers are checked per phase and summed) are dropped and passed to ``on_dropped``;
    the sample holds the rest. A measurand with one implausible phase is dropped from that
    ``meterValue`` entry as a whole, and so is the other power direction (``power_w`` is import
    minus export).
    """
    entries: list[tuple[datetime, Mapping[str, Any]]] = []
    for entry in meter_values:
        if not isinstance(entry, Mapping):
            raise MeterValueError("meterValue entry is not an object")
        entries.append((parse_timestamp(entry.get("timestamp")), entry))
    if not entries:
        return None
    entries.sort(key=lambda item: item[0])
    latest: dict[str, float] = {}
    for _, entry in entries:  # oldest first, so newer readings overwrite
        latest.update(_entry_values(entry.get("sampledValue"), max_power_w, on_dropped))
    power_w: float | None = None
    if _POWER_IMPORT in latest or _POWER_EXPORT in latest:
        power_w = latest.get(_POWER_IMPORT, 0.0) - latest.get(_POWER_EXPORT, 0.0)
    return MeterSample(
        at=entries[-1][0],
        power_w=power_w,
        energy_import_wh=latest.get(_ENERGY_IMPORT),
        energy_export_wh=latest.get(_ENERGY_EXPORT),
        soc_percent=latest.get(_SOC),
    )
