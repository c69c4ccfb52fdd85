"""Per plugged-in car: what the plan asks of it now, within its own limits, permissions and reserve.

The site-level steps (home-load and PV-surplus following, grid clamps) adjust these afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controller.config import ChargerConfig, SiteConfig, VehicleConfig, power_limits_kw
from controller.dispatch.inputs import DispatchInputs, VehicleLive
from controller.domain import Plan, VehicleMode, align_to_step

__all__ = ["DEPARTURE_GUARD", "CarSetpoint", "car_setpoint"]

# A plan step importing less than this is "no import": its charging comes from PV.
_SURPLUS_IMPORT_TOLERANCE_W = 50.0
# Discharge stops this close above the reserve, so SoC noise cannot push the car below it.
_RESERVE_MARGIN_PERCENT = 0.5
# This close to a departure, measured PV surplus or home load that differ from the forecast no longer
# move the car's power away from the target: less charging or more discharging than planned would
# leave no later plan the time to make it up.
DEPARTURE_GUARD = timedelta(hours=1)
# A planned power this small is solver noise, not an intent to charge or discharge. Anything larger
# is delivered (as a pulse below the charger's minimum): dropping it would leave a departure short.
_PLANNED_NOISE_W = 1.0
# SoC readings come in whole percent (or coarser): charging aims this far below the ceiling, so a
# reading that lags or rounds down cannot carry the car over it.
_SOC_RESOLUTION_MARGIN_PERCENT = 0.5


@dataclass(slots=True)
class CarSetpoint:
    """One plugged-in car's setpoint while the dispatcher works on it."""

    live: VehicleLive
    vehicle: VehicleConfig
    charger: ChargerConfig
    setpoint_w: float
    max_charge_w: float
    max_discharge_w: float
    may_discharge: bool = False
    follow_load: bool = False
    follow_surplus: bool = False
    departure_soon: bool = False
    urgent: bool = False
    ev_capped: bool = False
    """The EV's own power limit is below the config's."""
    phases: int = 3
    """Phases the charger runs on for this setpoint (one on a switching charger at low power)."""
    max_instant_w: float = math.inf
    """The most the car may draw or give at any instant (a magnitude): a limit's headroom. A step
    average below the charger's minimum is delivered as a pulse at the minimum only when the
    minimum fits under this; the grid and phase clamps lower it where they bind."""
    reasons: list[str] = field(default_factory=list)


def car_setpoint(
    config: SiteConfig, inputs: DispatchInputs, now: datetime, live: VehicleLive
) -> CarSetpoint | None:
    """The car's setpoint from the plan, or None when it is not plugged into a known charger."""
    car = _with_power_limits(config, live)
    if car is None:
        return None
    planned_w = _planned_w(inputs.plan, now, car)
    car.may_discharge = _discharge_allowed(inputs, car)
    planned_w = _directed_w(inputs, now, car, planned_w)
    _cap_at_ceiling(config, now, car)
    car.setpoint_w = max(-car.max_discharge_w, min(car.max_charge_w, planned_w))
    if car.ev_capped and car.setpoint_w != planned_w:
        car.urgent = True  # the EV's own limit: a lower setpoint goes out at once
    car.follow_surplus = (
        planned_w >= 0
        and not inputs.grid_lost
        and live.mode is VehicleMode.AUTO
        and not _at_max_soc(live, car.vehicle)
        and _plan_charges_from_surplus(inputs.plan, now, planned_w)
    )
    car.departure_soon = live.departure_at is not None and now <= live.departure_at <= now + DEPARTURE_GUARD
    return car


def _with_power_limits(config: SiteConfig, live: VehicleLive) -> CarSetpoint | None:
    """A setpoint of 0 W within the config's power limits, lowered by the charger and the EV."""
    vehicle = config.vehicle(live.vehicle_id)
    charger_id = live.charger_id or (vehicle.home_charger if vehicle else None)
    charger = config.charger(charger_id) if charger_id else None
    if vehicle is None or charger is None or not live.plugged_in:
        return None
    max_charge_kw, max_discharge_kw = power_limits_kw(vehicle, charger)
    car = CarSetpoint(
        live, vehicle, charger, 0.0, 1000.0 * max_charge_kw, 1000.0 * max_discharge_kw, phases=charger.phases
    )
    if not live.charger_can_discharge and car.max_discharge_w > 0:
        # The profile sent there says limit 0: a discharge counted here would be a phantom.
        car.max_discharge_w = 0.0
        car.reasons.append("charger's OCPP version cannot discharge: charge only")
    _apply_ev_caps(live, car)
    return car


def _apply_ev_caps(live: VehicleLive, car: CarSetpoint) -> None:
    """The EV's own power caps lower the config's (never raise them); every later clamp uses them."""
    if live.ev_max_charge_w is not None and live.ev_max_charge_w < car.max_charge_w:
        car.max_charge_w = max(0.0, live.ev_max_charge_w)
        car.ev_capped = True
        car.reasons.append(f"EV charge limit {car.max_charge_w:.0f} W")
    if live.ev_max_discharge_w is not None and live.ev_max_discharge_w < car.max_discharge_w:
        car.max_discharge_w = max(0.0, live.ev_max_discharge_w)
        car.ev_capped = True
        car.reasons.append(f"EV discharge limit {car.max_discharge_w:.0f} W")


def _cap_at_ceiling(config: SiteConfig, now: datetime, car: CarSetpoint) -> None:
    """Charging no faster than reaches the SoC ceiling by the end of the current plan step.

    The ceiling is checked within the step, not only at its start: every later step (PV surplus,
    an export limit's absorption) sees the lowered ``max_charge_w``.
    """
    soc = car.live.soc_percent
    if soc is None or car.max_charge_w <= 0:
        return
    vehicle = car.vehicle
    ceiling = _ceiling_percent(car.live, vehicle)
    room_kwh = vehicle.usable_capacity_kwh * (ceiling - _SOC_RESOLUTION_MARGIN_PERCENT - soc) / 100
    step = timedelta(minutes=config.site.plan_step_minutes)
    left_s = max((align_to_step(now, step) + step - now).total_seconds(), config.site.dispatch_interval_s)
    cap_w = max(0.0, room_kwh) * 1000.0 / vehicle.charge_efficiency / (left_s / 3600.0)
    if cap_w < car.max_charge_w:
        car.max_charge_w = cap_w
        car.reasons.append(f"near max SoC {ceiling:g} %: charging at most {cap_w:.0f} W")


def _ceiling_percent(live: VehicleLive, vehicle: VehicleConfig) -> float:
    return vehicle.max_soc_percent if live.ceiling_soc_percent is None else live.ceiling_soc_percent


def _at_max_soc(live: VehicleLive, vehicle: VehicleConfig) -> bool:
    return live.soc_percent is not None and live.soc_percent >= _ceiling_percent(live, vehicle)


def _planned_w(plan: Plan | None, now: datetime, car: CarSetpoint) -> float:
    """What the driver's mode or the plan asks for now, nothing more once the car is at its max SoC."""
    live = car.live
    if live.mode is VehicleMode.CHARGE_NOW:
        planned_w = car.max_charge_w
        car.reasons.append("charge now")
    else:
        planned_w = _plan_power_w(plan, now, live.vehicle_id, car.reasons)
    if planned_w > 0 and _at_max_soc(live, car.vehicle):
        planned_w = 0.0
        car.reasons.append("at max SoC")
    return planned_w


def _plan_power_w(plan: Plan | None, now: datetime, vehicle_id: str, reasons: list[str]) -> float:
    if plan is None:
        reasons.append("no plan yet: idle")
        return 0.0
    index = plan.step_index(now)
    vehicle_plan = plan.vehicles.get(vehicle_id)
    if index is None or vehicle_plan is None:
        reasons.append("plan does not cover now: idle")
        return 0.0
    if vehicle_plan.reason:
        reasons.append(vehicle_plan.reason)
    planned_w = vehicle_plan.power_w[index]
    return 0.0 if abs(planned_w) < _PLANNED_NOISE_W else planned_w


def _discharge_allowed(inputs: DispatchInputs, car: CarSetpoint) -> bool:
    """May the car discharge now at all; a refusal is a reason and goes out at once."""
    if car.max_discharge_w <= 0:
        return False  # no V2H permission or a charge-only charger
    blocked = _discharge_blocked(inputs, car.live, car.vehicle)
    if blocked is not None:
        car.reasons.append(blocked)
        car.urgent = True
        return False
    return True


def _discharge_blocked(inputs: DispatchInputs, live: VehicleLive, vehicle: VehicleConfig) -> str | None:
    if live.mode is not VehicleMode.AUTO:
        return f"mode {live.mode.value}: no discharge"
    if inputs.safe_mode and not inputs.grid_lost:
        return "safe mode: no discharge"
    if live.soc_percent is None:
        return "SoC unknown: no discharge"
    if live.soc_percent <= vehicle.reserve_percent + _RESERVE_MARGIN_PERCENT:
        return "at reserve: no discharge"
    if live.ev_min_soc_percent is not None and live.soc_percent <= live.ev_min_soc_percent:
        return "at the EV's V2X floor: no discharge"
    if live.hold_soc_percent is not None and live.soc_percent <= live.hold_soc_percent:
        return f"departure overdue: holding {live.hold_soc_percent:.0f} %: no discharge"
    return None


def _directed_w(inputs: DispatchInputs, now: datetime, car: CarSetpoint, planned_w: float) -> float:
    """An outage stops charging (a V2H car covers the home instead); a planned discharge happens only
    where allowed, and follows the measured home load unless the plan means it to export."""
    if inputs.grid_lost:
        # Outage: nothing to charge from; a V2H car keeps the home up down to its reserve.
        car.follow_load = car.may_discharge and car.vehicle.permissions.v2h
        car.reasons.append("grid outage: covering the home" if car.follow_load else "grid outage: idle")
        return 0.0
    if planned_w < 0:
        if not car.may_discharge:
            return 0.0
        # Discharge without intended export follows the measured load: never export by accident.
        car.follow_load = not (car.vehicle.permissions.v2g and _plan_exports(inputs.plan, now))
    return planned_w


def _plan_exports(plan: Plan | None, now: datetime) -> bool:
    index = plan.step_index(now) if plan is not None else None
    return plan is not None and index is not None and plan.grid_export_w[index] > 0


def _plan_charges_from_surplus(plan: Plan | None, now: datetime, planned_w: float) -> bool:
    """The plan imports nothing now and charges (or exports) from PV: the surplus is what counts."""
    index = plan.step_index(now) if plan is not None else None
    if plan is None or index is None or plan.grid_import_w[index] > _SURPLUS_IMPORT_TOLERANCE_W:
        return False
    return planned_w > 0 or plan.grid_export_w[index] > 0
