"""Pure builders of SetChargingProfile payloads (camelCase, exactly as sent) per OCPP version.

* 2.1: ``operationMode: CentralSetpoint`` with ``setpoint`` in W (negative = discharge), bounded by
  ``limit`` (>= 0) and ``dischargeLimit`` (<= 0). Only the single-phase fields are used, so the
  ``ocpp`` package's broken ``setpoint_L2``-style field names never matter.
* 2.0.1 and 1.6 define no discharge: charge-only limits in A per phase; a negative limit only for a
  bidirectional charger that opted in with ``negative_limit_means_discharge``.

Every TxProfile is bounded in time (``validTo``), and the TxDefaultProfile the charger falls back to
is charge-only within the charger's and the site's fallback import limits.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controller.config import ChargerConfig, OcppVersion
from controller.domain import ChargerSchedule, SchedulePeriod, ensure_utc

__all__ = [
    "DEFAULT_PROFILE_ID",
    "TX_PROFILE_ID",
    "ChargerLimits",
    "default_profile_payload",
    "format_time",
    "profile_valid_to",
    "same_schedule",
    "tx_profile_payload",
]

DEFAULT_PROFILE_ID = 1
TX_PROFILE_ID = 2
_DEFAULT_STACK_LEVEL = 0
_TX_STACK_LEVEL = 1


def format_time(moment: datetime) -> str:
    """UTC, second precision, ``Z`` suffix: the form every charger parses."""
    return ensure_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class ChargerLimits:
    """What one charger may do, in W, and how to turn W into A per phase."""

    max_charge_w: float
    max_discharge_w: float
    default_charge_w: float
    phases: int
    voltage_v: float
    min_current_a: float
    negative_limit_means_discharge: bool

    @classmethod
    def from_config(cls, charger: ChargerConfig, site_fallback_import_w: float) -> ChargerLimits:
        max_charge_w = charger.max_charge_kw * 1000.0
        max_discharge_w = charger.max_discharge_kw * 1000.0 if charger.bidirectional else 0.0
        return cls(
            max_charge_w=max_charge_w,
            max_discharge_w=max_discharge_w,
            default_charge_w=min(max_charge_w, site_fallback_import_w),
            phases=charger.phases,
            voltage_v=charger.voltage_v,
            min_current_a=charger.min_current_a,
            negative_limit_means_discharge=charger.negative_limit_means_discharge and max_discharge_w > 0,
        )


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _round_w(value: float) -> float | int:
    # Whole watts: readable JSON, no float noise such as 7399.999999.
    rounded = round(value)
    return 0 if rounded == 0 else rounded


def _amps(power_w: float, limits: ChargerLimits, phases: int) -> float:
    """Signed W -> A per phase, toward zero to 0.1 A; below the charger's minimum it pauses (0 A)."""
    amps = abs(power_w) / (phases * limits.voltage_v)
    amps = math.floor(amps * 10 + 1e-9) / 10
    if amps < limits.min_current_a:
        return 0.0
    return math.copysign(amps, power_w) if power_w < 0 else amps


def _bounded_periods(schedule: ChargerSchedule, valid_to: datetime) -> list[tuple[int, SchedulePeriod]]:
    horizon_s = int((valid_to - schedule.start).total_seconds())
    periods = []
    for period in schedule.periods:
        offset_s = int(period.start_offset.total_seconds())
        if offset_s >= horizon_s:
            break
        periods.append((offset_s, period))
    return periods


def _v21_period(offset_s: int, period: SchedulePeriod, limits: ChargerLimits, phases: int) -> dict[str, Any]:
    max_charge_w = _clamp(period.max_charge_w, 0.0, limits.max_charge_w)
    max_discharge_w = _clamp(period.max_discharge_w, 0.0, limits.max_discharge_w)
    setpoint_w = _clamp(period.setpoint_w, -max_discharge_w, max_charge_w)
    row: dict[str, Any] = {
        "startPeriod": offset_s,
        "operationMode": "CentralSetpoint",
        "setpoint": _round_w(setpoint_w),
        "limit": _round_w(max_charge_w),
        "dischargeLimit": _round_w(-max_discharge_w),
    }
    if phases < limits.phases:
        row["numberPhases"] = phases  # a switching charger on one phase
    return row


def _legacy_period(
    offset_s: int, period: SchedulePeriod, limits: ChargerLimits, phases: int
) -> dict[str, Any]:
    max_charge_w = _clamp(period.max_charge_w, 0.0, limits.max_charge_w)
    low_w = 0.0
    if limits.negative_limit_means_discharge:
        low_w = -_clamp(period.max_discharge_w, 0.0, limits.max_discharge_w)
    # The limit is what the charger will draw: follow the setpoint, never beyond the bounds.
    limit_w = _clamp(period.setpoint_w, low_w, max_charge_w)
    return {"startPeriod": offset_s, "limit": _amps(limit_w, limits, phases), "numberPhases": phases}


def tx_profile_payload(
    version: OcppVersion,
    schedule: ChargerSchedule,
    limits: ChargerLimits,
    *,
    transaction_id: str,
    max_validity: timedelta,
) -> dict[str, Any]:
    """SetChargingProfile for the running transaction, valid until the schedule or ``max_validity`` ends."""
    valid_to = profile_valid_to(schedule, max_validity)
    periods = _bounded_periods(schedule, valid_to)
    duration_s = int((valid_to - schedule.start).total_seconds())
    # The schedule may ask for fewer phases (phase switching), never more than the charger has.
    phases = max(1, min(schedule.phases, limits.phases))
    if version is OcppVersion.V21:
        rows = [_v21_period(offset, period, limits, phases) for offset, period in periods]
        rate_unit = "W"
    else:
        rows = [_legacy_period(offset, period, limits, phases) for offset, period in periods]
        rate_unit = "A"
    charging_schedule: dict[str, Any] = {
        "startSchedule": format_time(schedule.start),
        "duration": duration_s,
        "chargingRateUnit": rate_unit,
        "chargingSchedulePeriod": rows,
    }
    if version is OcppVersion.V16:
        if not transaction_id.isdigit():
            raise ValueError(f"OCPP 1.6 transaction id {transaction_id!r} is not an integer")
        return {
            "connectorId": schedule.evse_id,
            "csChargingProfiles": {
                "chargingProfileId": TX_PROFILE_ID,
                "transactionId": int(transaction_id),
                "stackLevel": _TX_STACK_LEVEL,
                "chargingProfilePurpose": "TxProfile",
                "chargingProfileKind": "Absolute",
                "validFrom": format_time(schedule.start),
                "validTo": format_time(valid_to),
                "chargingSchedule": charging_schedule,
            },
        }
    return {
        "evseId": schedule.evse_id,
        "chargingProfile": {
            "id": TX_PROFILE_ID,
            "stackLevel": _TX_STACK_LEVEL,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute",
            "validFrom": format_time(schedule.start),
            "validTo": format_time(valid_to),
            "transactionId": transaction_id,
            "chargingSchedule": [{"id": TX_PROFILE_ID, **charging_schedule}],
        },
    }


def default_profile_payload(version: OcppVersion, limits: ChargerLimits) -> dict[str, Any]:
    """The safe TxDefaultProfile for the whole charger: charge-only, no end, within limits."""
    if version is OcppVersion.V21:
        period: dict[str, Any] = {
            "startPeriod": 0,
            "operationMode": "ChargingOnly",
            "limit": _round_w(limits.default_charge_w),
        }
        rate_unit = "W"
    else:
        period = {
            "startPeriod": 0,
            "limit": _amps(limits.default_charge_w, limits, limits.phases),
            "numberPhases": limits.phases,
        }
        rate_unit = "A"
    charging_schedule = {"chargingRateUnit": rate_unit, "chargingSchedulePeriod": [period]}
    if version is OcppVersion.V16:
        return {
            "connectorId": 0,
            "csChargingProfiles": {
                "chargingProfileId": DEFAULT_PROFILE_ID,
                "stackLevel": _DEFAULT_STACK_LEVEL,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Relative",
                "chargingSchedule": charging_schedule,
            },
        }
    return {
        "evseId": 0,
        "chargingProfile": {
            "id": DEFAULT_PROFILE_ID,
            "stackLevel": _DEFAULT_STACK_LEVEL,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": [{"id": DEFAULT_PROFILE_ID, **charging_schedule}],
        },
    }


def _value_at(schedule: ChargerSchedule, moment: datetime) -> SchedulePeriod:
    """The period in force at ``moment`` (periods are sorted; the first starts at offset 0)."""
    index = bisect.bisect_right(schedule.periods, moment - schedule.start, key=lambda p: p.start_offset)
    return schedule.periods[max(0, index - 1)]


def profile_valid_to(schedule: ChargerSchedule, max_validity: timedelta) -> datetime:
    """When a TxProfile built from ``schedule`` stops holding (``validTo``)."""
    return min(schedule.valid_until, schedule.start + max_validity)


def _watts(period: SchedulePeriod) -> tuple[int, int, int]:
    # Whole watts, as sent: float noise from the optimiser is not a change.
    return round(period.setpoint_w), round(period.max_charge_w), round(period.max_discharge_w)


def same_schedule(old: ChargerSchedule, new: ChargerSchedule, until: datetime) -> bool:
    """True when ``old`` says what ``new`` says on ``[new.start, until)``.

    Compared in absolute time, so a replan that only moves the start forward with the same values
    is "nothing changed". The caller decides how far ``old`` still holds (``until``).
    """
    if (old.charger_id, old.evse_id, old.phases) != (new.charger_id, new.evse_id, new.phases):
        return False
    if new.start < old.start:
        return False
    breakpoints = {new.start} | {new.start + p.start_offset for p in new.periods}
    breakpoints |= {old.start + p.start_offset for p in old.periods}
    for moment in sorted(b for b in breakpoints if new.start <= b < until):
        if _watts(_value_at(old, moment)) != _watts(_value_at(new, moment)):
            return False
    return True
