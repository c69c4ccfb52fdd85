"""What the daemon shows of itself: the site, its vehicles and chargers, the plan, as published on
MQTT and answered on the HTTP API. Pure: state in, views out, no I/O."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from controller import __version__
from controller.config import SiteConfig
from controller.domain import Plan
from controller.mqtt import (
    BatteryStatus,
    ChargerStatus,
    ControllerStatus,
    ProfileOutcome,
    SiteFlows,
    VehicleStatus,
    battery_state,
    charger_state,
)
from controller.ocpp.model import ChargerView, ProfileRecord
from controller.site import Site, VehicleRuntime
from controller.site_batteries import BatteryRuntime, batteries_power_w, battery_power_w

__all__ = [
    "battery_statuses",
    "charger_statuses",
    "controller_status",
    "ev_limits",
    "planned_battery_power_w",
    "site_flows",
    "state_view",
    "vehicle_statuses",
]


def controller_status(
    site: Site, plan: Plan | None, now: dt.datetime, *, stopping: bool = False
) -> ControllerStatus:
    inputs = site.inputs
    return ControllerStatus(
        at=now,
        safe_mode=inputs.safe_mode(now),
        reasons=tuple(inputs.safe_mode_reasons(now)),
        stale_meters=tuple(inputs.stale_meters(now)),
        last_plan_at=plan.created_at if plan else None,
        plan_status=("fallback " if plan.fallback else "") + plan.solver_status if plan else None,
        version=__version__,
        dropped_readings={m.id: inputs.dropped_readings(m.id) for m in site.cfg.meters},
        extra={
            "grid_lost": str(inputs.is_grid_lost(now)).lower(),
            "stopping": str(stopping).lower(),
        },
    )


def site_flows(site: Site, now: dt.datetime) -> SiteFlows:
    inputs = site.inputs
    measured = [site.measured_power_w(v, now) for v in site.vehicles.values()]
    vehicles_w = [w for w in measured if w is not None]
    return SiteFlows(
        at=now,
        grid_power_w=inputs.grid_power_w(now),
        pv_power_w=inputs.pv_power_w(now),
        home_power_w=inputs.home_power_w(now),
        vehicles_power_w=sum(vehicles_w) if vehicles_w else None,
        safe_mode=inputs.safe_mode(now),
        batteries_power_w=batteries_power_w(site, now) if site.batteries else None,
        has_batteries=bool(site.batteries),
    )


def planned_battery_power_w(plan: Plan | None, battery_id: str, now: dt.datetime) -> float | None:
    """The plan's power for the battery in the step now; None without a plan for it."""
    planned = plan.batteries.get(battery_id) if plan is not None else None
    index = plan.step_index(now) if plan is not None and planned is not None else None
    if planned is None or index is None or index >= len(planned.power_w):
        return None
    return float(planned.power_w[index])


def _battery_status(
    site: Site, battery: BatteryRuntime, plan: Plan | None, now: dt.datetime
) -> BatteryStatus:
    battery_id = battery.config.id
    return BatteryStatus(
        battery_id=battery_id,
        at=now,
        soc_percent=site.inputs.battery_soc_percent(battery_id, now),
        power_w=battery_power_w(site, battery, now),
        planned_power_w=planned_battery_power_w(plan, battery_id, now),
        mode=battery.mode,
        setpoint_w=battery.setpoint_w,
        control=battery.config.control.mode,
        control_status=battery.control_status,
        control_detail=battery.control_detail,
    )


def battery_statuses(site: Site, plan: Plan | None, now: dt.datetime) -> list[BatteryStatus]:
    """Every configured home battery, in config order."""
    return [_battery_status(site, b, plan, now) for b in site.batteries.values()]


def ev_limits(vehicle: VehicleRuntime) -> dict[str, float] | None:
    """The EV's own limits for its session, only those it reported (None: none)."""
    limits = vehicle.session_limits
    return None if limits is None else limits.model_dump(exclude_none=True)


def vehicle_statuses(site: Site, now: dt.datetime) -> list[VehicleStatus]:
    statuses = []
    for vehicle in site.vehicles.values():
        departure = site.departure(vehicle, now)
        statuses.append(
            VehicleStatus(
                vehicle_id=vehicle.config.id,
                at=now,
                soc_percent=site.measured_soc(vehicle),
                reserve_percent=vehicle.config.reserve_percent,
                target_soc_percent=departure.target_soc_percent if departure else None,
                mode=vehicle.mode,
                setpoint_w=vehicle.setpoint_w,
                plugged_in=vehicle.plugged_in,
                charger_id=vehicle.charger_id,
                departure_at=departure.at if departure else None,
                v2l_active=vehicle.v2l is not None and not vehicle.v2l_cut_off,
                ev_limits=ev_limits(vehicle),
            )
        )
    return statuses


def _outcome(record: ProfileRecord | None) -> ProfileOutcome | None:
    if record is None:
        return None
    return ProfileOutcome(
        purpose=record.purpose,
        status=record.status.value,
        at=record.at,
        reason=record.reason,
        attempt=record.attempt,
        valid_to=record.valid_to,
    )


def _charger_status(view: ChargerView | None, charger_id: str, now: dt.datetime) -> ChargerStatus:
    if view is None:  # configured, never seen
        return ChargerStatus(charger_id=charger_id, at=now, connected=False)
    return ChargerStatus(
        charger_id=charger_id,
        at=now,
        connected=view.connected,
        ocpp_version=view.ocpp_version.value if view.ocpp_version else None,
        status=view.status,
        transaction_id=view.transaction_id,
        last_seen=view.last_seen,
        last_profile=_outcome(view.last_profile),
        default_profile=_outcome(view.default_profile),
    )


def charger_statuses(
    cfg: SiteConfig, views: Mapping[str, ChargerView], now: dt.datetime
) -> list[ChargerStatus]:
    """Every configured charger as the CSMS sees it, with the outcome of its last profiles."""
    ids = [c.id for c in cfg.chargers]
    ids += [cid for cid in views if cid not in ids]  # accepted without config (accept_unknown)
    return [_charger_status(views.get(cid), cid, now) for cid in ids]


def _vehicle_state(
    site: Site, vehicle: VehicleRuntime, plan: Plan | None, now: dt.datetime
) -> dict[str, Any]:
    departure = site.departure(vehicle, now)
    estimate = vehicle.tracker.estimate()
    planned = plan.vehicles.get(vehicle.config.id) if plan else None
    return {
        "plugged_in": vehicle.plugged_in,
        "charger_id": vehicle.charger_id,
        "soc_percent": estimate.soc_percent if estimate else None,
        "soc_measured": estimate.measured if estimate else False,
        "reserve_percent": round(vehicle.config.reserve_percent, 2),
        "mode": vehicle.mode.value,
        "setpoint_w": vehicle.setpoint_w,
        "departure_at": departure.at if departure else None,
        "target_soc_percent": departure.target_soc_percent if departure else None,
        "reason": planned.reason if planned else None,
        "ev_limits": ev_limits(vehicle),
    }


def state_view(
    site: Site, plan: Plan | None, chargers: list[ChargerStatus], now: dt.datetime
) -> dict[str, Any]:
    """The site now: flows, vehicles, chargers, the plan's summary (for dashboards and scripts)."""
    inputs = site.inputs
    return {
        "at": now,
        "grid_power_w": inputs.grid_power_w(now),
        "pv_power_w": inputs.pv_power_w(now),
        "safe_mode": inputs.safe_mode(now),
        "safe_mode_reasons": inputs.safe_mode_reasons(now),
        "grid_lost": inputs.is_grid_lost(now),
        "meters": inputs.meter_states(),
        "vehicles": {v.config.id: _vehicle_state(site, v, plan, now) for v in site.vehicles.values()},
        "batteries": {s.battery_id: battery_state(s) for s in battery_statuses(site, plan, now)},
        "chargers": {status.charger_id: charger_state(status) for status in chargers},
        "plan": None
        if plan is None
        else {
            "created_at": plan.created_at,
            "status": plan.solver_status,
            "fallback": plan.fallback,
            "import_cost": plan.import_cost,
            "export_revenue": plan.export_revenue,
        },
    }
