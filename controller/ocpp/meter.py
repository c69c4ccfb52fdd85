"""Pure parsing of OCPP meter values (1.6 strings, 2.x numbers) into one signed sample.

Vehicle power follows the domain sign: + charging the car, - discharging it, so
``power_w = Power.Active.Import - Power.Active.Export`` as the charger reports them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.values import finite_number, utc_from_iso

__all__ = ["MeterSample", "MeterValueError", "parse_meter_values", "parse_timestamp"]


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


_POWER_SCALE = {"W": 1.0, "kW": 1000.0}
_ENERGY_SCALE = {"Wh": 1.0, "kWh": 1000.0}
_PHASE_LINE = ("L1", "L2", "L3", "L1-N", "L2-N", "L3-N")
# Measurands we read; everything else (current, voltage, temperature …) is ignored.
_POWER_IMPORT = "Power.Active.Import"
_POWER_EXPORT = "Power.Active.Export"
_ENERGY_IMPORT = "Energy.Active.Import.Register"
_ENERGY_EXPORT = "Energy.Active.Export.Register"
_SOC = "SoC"
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
        if not 0 <= value <= 100:
            raise MeterValueError(f"SoC {value} is outside 0-100 %")
        return value
    scales = _POWER_SCALE if measurand.startswith("Power") else _ENERGY_SCALE
    if unit not in scales:
        raise MeterValueError(f"unit {unit!r} does not fit {measurand}")
    return value * scales[unit]


class _Collector:
    """Per measurand: the total (no phase) wins; otherwise line phases are summed."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.phases: dict[str, dict[str, float]] = {}

    def add(self, measurand: str, phase: Any, value: float) -> None:
        if phase is None:
            self.total[measurand] = value
        elif phase in _PHASE_LINE:
            self.phases.setdefault(measurand, {})[phase] = value
        # N, L1-L2 … (neutral, line-to-line) are not per-phase energy flows: ignored.

    def get(self, measurand: str) -> float | None:
        if measurand in self.total:
            return self.total[measurand]
        per_phase = self.phases.get(measurand)
        return sum(per_phase.values()) if per_phase else None


def parse_meter_values(meter_values: Iterable[Any]) -> MeterSample | None:
    """The newest reading per measurand across all ``meterValue`` entries, or None if empty.

    Raises MeterValueError for a reading that is present but unreadable, so the caller can answer
    the charger with an error instead of storing garbage.
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
        collector = _Collector()
        sampled_values = entry.get("sampledValue")
        if not isinstance(sampled_values, list):
            raise MeterValueError("sampledValue is not a list")
        for sampled in sampled_values:
            if not isinstance(sampled, Mapping):
                raise MeterValueError("sampledValue entry is not an object")
            measurand = sampled.get("measurand", _ENERGY_IMPORT)
            if measurand not in _DEFAULT_UNITS:
                continue
            collector.add(measurand, sampled.get("phase"), _scaled(sampled, measurand))
        for measurand in _DEFAULT_UNITS:
            value = collector.get(measurand)
            if value is not None:
                latest[measurand] = value
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
