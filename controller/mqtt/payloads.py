"""What the controller publishes: typed inputs and their compact JSON (pure)."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.domain import Plan, VehicleMode, ensure_utc, utc_text

__all__ = [
    "BatteryStatus",
    "ChargerStatus",
    "ControllerStatus",
    "ProfileOutcome",
    "SiteFlows",
    "VehicleStatus",
    "battery_payload",
    "battery_state",
    "charger_payload",
    "charger_state",
    "controller_payload",
    "dumps",
    "plan_payload",
    "reply_payload",
    "site_payload",
    "vehicle_payload",
]

PLAN_HORIZON = dt.timedelta(hours=24)


def dumps(data: Any) -> bytes:
    """Compact JSON; NaN/inf never leave the process (they are not JSON)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else utc_text(moment)


def _num(value: float | None, digits: int = 1) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    rounded = round(value, digits)
    return rounded + 0.0  # turns -0.0 into 0.0


@dataclass(frozen=True, slots=True)
class SiteFlows:
    """Power flows in W at ``at``: grid + import / - export, PV production, home load, vehicles + charging."""

    at: dt.datetime
    grid_power_w: float | None
    pv_power_w: float | None = None
    home_power_w: float | None = None
    vehicles_power_w: float | None = None
    safe_mode: bool = False
    batteries_power_w: float | None = None
    """The home batteries together, + charging (None when one is unknown)."""
    has_batteries: bool = False
    """The site has home batteries: only then is ``batteries_w`` in the payload."""


@dataclass(frozen=True, slots=True)
class VehicleStatus:
    vehicle_id: str
    at: dt.datetime
    soc_percent: float | None
    reserve_percent: float
    target_soc_percent: float | None
    mode: VehicleMode
    setpoint_w: float
    plugged_in: bool
    charger_id: str | None = None
    departure_at: dt.datetime | None = None
    v2l_active: bool = False
    ev_limits: dict[str, float] | None = None
    """The EV's own limits for this session (NotifyEVChargingNeeds), only those it reported."""


@dataclass(frozen=True, slots=True)
class BatteryStatus:
    """One home battery: what it does, what the plan wants of it now, and how its control fares."""

    battery_id: str
    at: dt.datetime
    soc_percent: float | None
    power_w: float | None
    """Measured, + charging / - discharging; None when unknown or stale."""
    planned_power_w: float | None
    """The plan's power for the step now (None without a plan for it)."""
    mode: str
    """What the battery was last told: charge, discharge, hold or auto (its own mode)."""
    setpoint_w: float
    control: str
    """observe, mqtt or modbus."""
    control_status: str
    """observe, idle, ok, refused, unreachable or released."""
    control_detail: str = ""


@dataclass(frozen=True, slots=True)
class ProfileOutcome:
    """What became of the last charging profile of one purpose sent to a charger.

    ``status``: accepted, rejected (the charger said no; not retried), timeout or failed (retried
    with backoff), not_connected, deferred or superseded; ``reason`` as the charger gave it.
    """

    purpose: str
    status: str
    at: dt.datetime
    reason: str = ""
    attempt: int = 1
    valid_to: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class ChargerStatus:
    """One charger as the CSMS sees it, and what became of the profiles sent to it."""

    charger_id: str
    at: dt.datetime
    connected: bool
    ocpp_version: str | None = None
    status: str | None = None
    transaction_id: str | None = None
    last_seen: dt.datetime | None = None
    last_profile: ProfileOutcome | None = None
    """The last TxProfile (the live schedule)."""
    default_profile: ProfileOutcome | None = None
    """The safe TxDefaultProfile installed after boot."""


@dataclass(frozen=True, slots=True)
class ControllerStatus:
    at: dt.datetime
    safe_mode: bool
    reasons: tuple[str, ...] = ()
    stale_meters: tuple[str, ...] = ()
    last_plan_at: dt.datetime | None = None
    plan_status: str | None = None
    version: str = ""
    dropped_readings: dict[str, int] = field(default_factory=dict)
    """Per meter, messages refused as unusable or implausible since the start."""
    extra: dict[str, str] = field(default_factory=dict)


def site_payload(flows: SiteFlows) -> bytes:
    batteries = {"batteries_w": _num(flows.batteries_power_w)} if flows.has_batteries else {}
    return dumps(
        {
            "at": _iso(flows.at),
            "grid_w": _num(flows.grid_power_w),
            "pv_w": _num(flows.pv_power_w),
            "home_w": _num(flows.home_power_w),
            "vehicles_w": _num(flows.vehicles_power_w),
            **batteries,
            "safe_mode": flows.safe_mode,
        }
    )


def vehicle_payload(status: VehicleStatus) -> bytes:
    return dumps(
        {
            "at": _iso(status.at),
            "soc_percent": _num(status.soc_percent),
            "reserve_percent": _num(status.reserve_percent),
            "target_soc_percent": _num(status.target_soc_percent),
            "mode": status.mode.value,
            "setpoint_w": _num(status.setpoint_w),
            "plugged_in": status.plugged_in,
            "charger_id": status.charger_id,
            "departure_at": _iso(status.departure_at),
            "v2l_active": status.v2l_active,
            "ev_limits": status.ev_limits,
        }
    )


def battery_state(status: BatteryStatus) -> dict[str, Any]:
    """The battery as JSON-ready data: the MQTT payload and the HTTP ``/state`` entry are this."""
    return {
        "at": _iso(status.at),
        "soc_percent": _num(status.soc_percent),
        "power_w": _num(status.power_w),
        "planned_power_w": _num(status.planned_power_w),
        "mode": status.mode,
        "setpoint_w": _num(status.setpoint_w),
        "control": status.control,
        "control_status": status.control_status,
        "control_detail": status.control_detail or None,
    }


def battery_payload(status: BatteryStatus) -> bytes:
    return dumps(battery_state(status))


def _outcome(outcome: ProfileOutcome | None) -> dict[str, Any] | None:
    if outcome is None:
        return None
    return {
        "purpose": outcome.purpose,
        "status": outcome.status,
        "accepted": outcome.status == "accepted",
        "reason": outcome.reason or None,
        "at": _iso(outcome.at),
        "attempt": outcome.attempt,
        "valid_to": _iso(outcome.valid_to),
    }


def charger_state(status: ChargerStatus) -> dict[str, Any]:
    """The charger as JSON-ready data: the MQTT payload and the HTTP ``/state`` entry are this."""
    return {
        "at": _iso(status.at),
        "connected": status.connected,
        "ocpp_version": status.ocpp_version,
        "status": status.status,
        "transaction_id": status.transaction_id,
        "last_seen": _iso(status.last_seen),
        "last_profile": _outcome(status.last_profile),
        "default_profile": _outcome(status.default_profile),
    }


def charger_payload(status: ChargerStatus) -> bytes:
    return dumps(charger_state(status))


def controller_payload(status: ControllerStatus) -> bytes:
    return dumps(
        {
            "at": _iso(status.at),
            "state": "safe_mode" if status.safe_mode else "running",
            "safe_mode": status.safe_mode,
            "reasons": list(status.reasons),
            "stale_meters": list(status.stale_meters),
            "last_plan_at": _iso(status.last_plan_at),
            "plan_status": status.plan_status,
            "version": status.version,
            "dropped_readings": status.dropped_readings,
            **status.extra,
        }
    )


def _series(values: Sequence[float], digits: int) -> list[float | int | None]:
    if digits == 0:
        return [None if not math.isfinite(v) else round(v) for v in values]
    return [_num(v, digits) for v in values]


def plan_payload(plan: Plan, now: dt.datetime, horizon: dt.timedelta = PLAN_HORIZON) -> bytes:
    """The plan from the step containing ``now`` for at most ``horizon``: W as integers, prices 4 decimals."""
    now = ensure_utc(now)
    first = plan.step_index(now)
    if first is None:
        first = 0 if now < plan.start else plan.steps
    count = max(0, min(plan.steps - first, int(horizon // plan.step)))
    window = slice(first, first + count)
    return dumps(
        {
            "created_at": _iso(plan.created_at),
            "start": _iso(plan.start + plan.step * first),
            "step_s": int(plan.step.total_seconds()),
            "steps": count,
            "status": plan.solver_status,
            "fallback": plan.fallback,
            "grid_import_w": _series(plan.grid_import_w[window], 0),
            "grid_export_w": _series(plan.grid_export_w[window], 0),
            "import_price": _series(plan.import_price_per_kwh[window], 4),
            "export_price": _series(plan.export_price_per_kwh[window], 4),
            "vehicles": {
                vid: {
                    "power_w": _series(vp.power_w[window], 0),
                    "soc_percent": _series(vp.soc_percent[first : first + count + 1], 1),
                    "reason": vp.reason,
                    "shortfall_kwh": _num(vp.departure_shortfall_kwh, 2),
                }
                for vid, vp in plan.vehicles.items()
            },
            **_battery_plans(plan, first, count),
            "notes": list(plan.notes),
        }
    )


def _battery_plans(plan: Plan, first: int, count: int) -> dict[str, Any]:
    """``{"batteries": {id: {"power_w", "soc_percent", "controlled", "reason"}}}`` where the plan
    carries home batteries (an ``observe`` one: the forecast of its own rule, ``controlled`` false)."""
    if not plan.batteries:
        return {}
    return {
        "batteries": {
            bid: {
                "power_w": _series(bp.power_w[first : first + count], 0),
                "soc_percent": _series(bp.soc_percent[first : first + count + 1], 1),
                "controlled": bp.controlled,
                "reason": bp.reason,
            }
            for bid, bp in plan.batteries.items()
        }
    }


def reply_payload(
    vehicle_id: str,
    command: str,
    ok: bool,
    at: dt.datetime,
    request_id: str | None = None,
    error: str | None = None,
) -> bytes:
    return dumps(
        {
            "ok": ok,
            "vehicle_id": vehicle_id,
            "command": command,
            "request_id": request_id,
            "error": error,
            "at": _iso(at),
        }
    )
