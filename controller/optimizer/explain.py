"""A short human reason per vehicle for what the plan does in the current step."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.domain import VehicleMode
from controller.optimizer.inputs import DepartureInfo, TripInfo
from controller.snapshot import DepartureHold

__all__ = ["StepFacts", "reason"]

_IDLE_KW = 0.05
_PULSE_TOLERANCE_KW = 1e-3


@dataclass(frozen=True, slots=True)
class StepFacts:
    """What is true for one vehicle in the current step (real kW, not scaled)."""

    now: datetime
    timezone: str
    currency: str
    power_kw: float
    v2l_kw: float
    v2l_requested_kw: float
    available: bool
    in_snapshot: bool
    soc_known: bool
    mode: VehicleMode
    energy_kwh: float
    energy_end_kwh: float
    """Energy planned at the end of the current step."""
    reserve_kwh: float
    floor_kwh: float
    """The reserve the plan keeps: the configured one, raised by the car's own V2X floor."""
    e_max_kwh: float
    capacity_kwh: float
    import_price: float
    export_price: float
    grid_export_kw: float
    pv_surplus: bool
    v2g: bool
    next_target: DepartureInfo | None
    next_trip: TripInfo | None
    """The next trip in ``away`` that starts after now."""
    target_reachable_kwh: float | None
    """Energy the plan reaches at the next target when that is short of it, else None."""
    charges_later: bool
    charges_at_negative_price_later: bool
    fallback: bool
    min_charge_kw: float = 0.0
    """The charger's smallest charging power: a lower average is a pulse at it (0: none)."""
    min_discharge_kw: float = 0.0
    hold: DepartureHold | None = None
    """An overdue departure whose target the car holds (still plugged in after it)."""


def _local_time(moment: datetime, now: datetime, timezone: str) -> str:
    zone = zoneinfo.ZoneInfo(timezone)
    local = moment.astimezone(zone)
    if moment - now >= timedelta(hours=20):
        return local.strftime("%a %H:%M")
    return local.strftime("%H:%M")


def _price(value: float, currency: str) -> str:
    return f"{value:.2f} {currency}/kWh"


def reason(f: StepFacts) -> str:
    text = _core_reason(f) + _pulse(f) + _overdue(f)
    if f.v2l_requested_kw > 0:
        if f.v2l_kw >= f.v2l_requested_kw - 1e-3:
            text += f"; V2L {f.v2l_kw:.1f} kW"
        elif f.energy_end_kwh <= f.floor_kwh + 0.05:
            if f.v2l_kw > 1e-3:
                text += f"; V2L limited to {f.v2l_kw:.1f} kW by the reserve"
            else:
                text += "; V2L stopped at the reserve"
        else:  # above the reserve: the energy is kept for something later
            cut = f"limited to {f.v2l_kw:.1f} kW" if f.v2l_kw > 1e-3 else "stopped"
            text += f"; V2L {cut} {_v2l_kept_for(f)}"
    return ("fallback plan: " + text) if f.fallback else text


def _pulse(f: StepFacts) -> str:
    """How a power below the charger's minimum is delivered: a pulse at the minimum for a share of
    the step (the dispatcher's duty cycle)."""
    p = f.power_kw
    minimum = f.min_charge_kw if p > 0 else f.min_discharge_kw
    if abs(p) < _IDLE_KW or abs(p) >= minimum - _PULSE_TOLERANCE_KW:
        return ""
    return f"; pulsed at the {minimum:.1f} kW minimum for {100.0 * abs(p) / minimum:.0f} % of the step"


def _overdue(f: StepFacts) -> str:
    """A car still plugged in after its departure: the driver is about to leave."""
    if f.hold is None:
        return ""
    when = _local_time(f.hold.departure_at, f.now, f.timezone)
    return f"; departure {when} overdue: holding {f.hold.soc_percent:.0f} %"


def _v2l_kept_for(f: StepFacts) -> str:
    """Why V2L is cut while the car is above its reserve: what the energy is kept for."""
    if f.mode is VehicleMode.CHARGE_NOW:
        return "to charge now"
    trip, target = f.next_trip, f.next_target
    if trip is not None and (target is None or trip.depart < target.at):
        return f"to keep energy for the {_local_time(trip.depart, f.now, f.timezone)} trip"
    if target is not None:
        what = "trip" if target.trip else "departure"
        return f"to keep energy for the {_local_time(target.at, f.now, f.timezone)} {what}"
    return "to keep energy for later"


def _core_reason(f: StepFacts) -> str:
    if not f.in_snapshot:
        return "not in the snapshot: nothing planned"
    p = f.power_kw
    if not f.available and abs(p) < _IDLE_KW:
        return "not plugged in"
    if p >= _IDLE_KW:
        return _charging_reason(f, p)
    if p <= -_IDLE_KW:
        return _discharging_reason(f, -p)
    return _holding_reason(f)


def _reserve_percent(f: StepFacts) -> float:
    return 100.0 * f.reserve_kwh / f.capacity_kwh


def _charging_reason(f: StepFacts, power_kw: float) -> str:
    """Why the car charges ``power_kw`` now: the first of mode, reserve, goals and prices that holds."""
    if f.mode is VehicleMode.CHARGE_NOW:
        return f"charging {power_kw:.1f} kW now (charge now)"
    if f.energy_kwh < f.reserve_kwh - 1e-6:
        return f"charging {power_kw:.1f} kW back up to the reserve ({_reserve_percent(f):.0f} %)"
    goal = _charging_goal(f, power_kw)
    if goal is not None:
        return goal
    if f.import_price < 0:
        return f"charging {power_kw:.1f} kW at a negative price ({_price(f.import_price, f.currency)})"
    if f.pv_surplus:
        return f"charging {power_kw:.1f} kW from PV surplus"
    return f"charging {power_kw:.1f} kW at a low price ({_price(f.import_price, f.currency)})"


def _charging_goal(f: StepFacts, power_kw: float) -> str | None:
    """The next trip or target the charging is for, None when the car already holds enough."""
    target, trip = f.next_target, f.next_trip
    trip_first = trip is not None and (target is None or trip.depart < target.at)
    if trip is not None and trip_first and f.energy_kwh < f.floor_kwh + trip.energy_kwh - 1e-6:
        # The trip would take the car below its reserve: this energy is for the drive.
        when = _local_time(trip.depart, f.now, f.timezone)
        return (
            f"charging {power_kw:.1f} kW for the {when} trip ({trip.energy_kwh + trip.clipped_kwh:.0f} kWh)"
        )
    if target is not None and f.energy_kwh < target.target_kwh - 1e-6:
        return _target_reason(f, power_kw, target)
    return None


def _target_reason(f: StepFacts, power_kw: float, target: DepartureInfo) -> str:
    when = _local_time(target.at, f.now, f.timezone)
    goal = 100.0 * target.target_kwh / f.capacity_kwh
    what = f"the {when} trip" if target.trip else f"{when} departure"
    if f.target_reachable_kwh is not None:
        reach = 100.0 * f.target_reachable_kwh / f.capacity_kwh
        return f"charging {power_kw:.1f} kW for {what} (target {goal:.0f} %, only {reach:.0f} % reachable)"
    return f"charging {power_kw:.1f} kW for {what} (target {goal:.0f} %)"


def _discharging_reason(f: StepFacts, discharge_kw: float) -> str:
    """Why the car discharges ``discharge_kw`` now."""
    if f.charges_at_negative_price_later:
        return f"discharging {discharge_kw:.1f} kW to make room for negative prices later"
    if f.v2g and f.grid_export_kw > _IDLE_KW:
        return f"exporting {discharge_kw:.1f} kW at {_price(f.export_price, f.currency)}"
    return f"discharging {discharge_kw:.1f} kW to cover the home at {_price(f.import_price, f.currency)}"


def _holding_reason(f: StepFacts) -> str:
    """Why the car neither charges nor discharges now."""
    if not f.soc_known:
        return "SoC unknown: charging only, waiting for a reading"
    if f.energy_kwh <= f.reserve_kwh + 0.05:
        return f"holding at reserve ({_reserve_percent(f):.0f} %)"
    if f.energy_kwh >= f.e_max_kwh - 0.05:
        return f"full (max SoC {100.0 * f.e_max_kwh / f.capacity_kwh:.0f} %)"
    if f.charges_later and f.next_target is not None:
        when = _local_time(f.next_target.at, f.now, f.timezone)
        return f"waiting for cheaper hours before the {when} departure"
    if f.charges_later:
        return "waiting for cheaper hours"
    if f.mode is VehicleMode.NO_DISCHARGE:
        return "holding (no discharge)"
    return "holding: nothing to gain now"
