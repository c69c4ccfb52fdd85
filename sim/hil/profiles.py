"""Charging profiles as a charger keeps them: parsed from SetChargingProfile, asked what is in force.

A profile's period in force at a moment gives a *request*: a power (W, vehicle sign) and the phases
it is for. What the charger then delivers is :class:`sim.charger_model.ChargerModel`'s business.

* 2.1 ``CentralSetpoint``: the ``setpoint`` (− = discharge), within ``limit`` / ``dischargeLimit``;
  any other operation mode (``ChargingOnly``, none): charge at ``limit``.
* Rate unit ``A`` (1.6, 2.0.1): ``limit`` A per phase × ``numberPhases`` × voltage; a negative limit
  is discharge only for a charger with ``negative_limit_means_discharge`` (else 0).
* ``Absolute`` profiles start at ``startSchedule``; ``Relative`` ones at the transaction's start;
  outside ``validFrom``/``validTo`` or after ``duration`` a profile says nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.config import ChargerConfig, OcppVersion

__all__ = ["Period", "Request", "StoredProfile", "parse_profile", "request_at"]

Json = dict[str, Any]
Request = tuple[float, int]
"""(requested power W with the vehicle sign, phases)."""


@dataclass(frozen=True, slots=True)
class Period:
    start_s: float
    power_w: float
    phases: int


@dataclass(frozen=True, slots=True)
class StoredProfile:
    purpose: str
    evse_id: int
    transaction_id: str | None
    stack_level: int
    start: datetime | None
    """Absolute start; None: relative to the transaction's start."""
    valid_from: datetime | None
    valid_to: datetime | None
    duration_s: float | None
    periods: tuple[Period, ...]


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _period_power_w(row: Json, unit: str, charger: ChargerConfig, phases: int) -> float:
    limit = float(row.get("limit", 0.0))
    if unit == "A":
        power = limit * phases * charger.voltage_v
        allowed = charger.negative_limit_means_discharge and charger.bidirectional
        return power if power >= 0 or allowed else 0.0
    if row.get("operationMode") == "CentralSetpoint" and "setpoint" in row:
        setpoint = float(row["setpoint"])
        low = float(row.get("dischargeLimit", -abs(setpoint)))
        return min(max(setpoint, low), max(limit, 0.0)) if "limit" in row else max(setpoint, low)
    return max(limit, 0.0)


def parse_profile(version: OcppVersion, payload: Json, charger: ChargerConfig) -> StoredProfile:
    """A SetChargingProfile request's profile (KeyError/ValueError when it cannot be read)."""
    if version is OcppVersion.V16:
        profile = payload["csChargingProfiles"]
        schedule = profile["chargingSchedule"]
        evse_id = int(payload["connectorId"])
    else:
        profile = payload["chargingProfile"]
        schedule = profile["chargingSchedule"][0]
        evse_id = int(payload["evseId"])
    unit = schedule["chargingRateUnit"]
    rows = sorted(schedule["chargingSchedulePeriod"], key=lambda r: float(r["startPeriod"]))
    periods = []
    for row in rows:
        phases = int(row.get("numberPhases", charger.phases))
        power = _period_power_w(row, unit, charger, phases)
        periods.append(Period(float(row["startPeriod"]), power, phases))
    transaction = profile.get("transactionId")
    relative = profile.get("chargingProfileKind") == "Relative"
    duration = schedule.get("duration")
    return StoredProfile(
        purpose=profile["chargingProfilePurpose"],
        evse_id=evse_id,
        transaction_id=None if transaction is None else str(transaction),
        stack_level=int(profile.get("stackLevel", 0)),
        start=None if relative else _time(schedule.get("startSchedule")) or _time(profile.get("validFrom")),
        valid_from=_time(profile.get("validFrom")),
        valid_to=_time(profile.get("validTo")),
        duration_s=None if duration is None else float(duration),
        periods=tuple(periods),
    )


def request_at(profile: StoredProfile, now: datetime, transaction_start: datetime | None) -> Request | None:
    """The request in force at ``now`` (None: the profile says nothing then)."""
    if profile.valid_from is not None and now < profile.valid_from:
        return None
    if profile.valid_to is not None and now >= profile.valid_to:
        return None
    start = profile.start if profile.start is not None else transaction_start
    if start is None:
        start = now
    offset = (now - start).total_seconds()
    if offset < 0 or (profile.duration_s is not None and offset >= profile.duration_s):
        return None
    chosen = None
    for period in profile.periods:
        if period.start_s > offset:
            break
        chosen = period
    return None if chosen is None else (chosen.power_w, chosen.phases)


def in_force(
    profiles: dict[str, StoredProfile], now: datetime, transaction_start: datetime | None
) -> Request | None:
    """What a charger's profiles ask for at ``now``: the TxProfile, else the TxDefaultProfile."""
    for purpose in ("TxProfile", "TxDefaultProfile"):
        profile = profiles.get(purpose)
        if profile is not None:
            found = request_at(profile, now, transaction_start)
            if found is not None:
                return found
    return None
