"""A short human reason per vehicle for what the plan does in the current step."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.domain import VehicleMode
from controller.optimizer.inputs import DepartureInfo

__all__ = ["StepFacts", "reason"]

_IDLE_KW = 0.05


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
    reserve_kwh: float
    e_max_kwh: float
    capacity_kwh: float
    import_price: float
    export_price: float
    grid_export_kw: float
    pv_surplus: bool
    v2g: bool
    next_target: DepartureInfo | None
    target_reachable_kwh: float | None
    """Energy the plan reaches at the next target when that is short of it, else None."""
    charges_later: bool
    charges_at_negative_price_later: bool
    fallback: bool


def _local_time(moment: datetime, now: datetime, timezone: str) -> str:
    zone = zoneinfo.ZoneInfo(timezone)
    local = moment.astimezone(zone)
    if moment - now >= timedelta(hours=20):
        return local.strftime("%a %H:%M")
    return local.strftime("%H:%M")


def _price(value: float, currency: str) -> str:
    return f"{value:.2f} {currency}/kWh"


def reason(f: StepFacts) -> str:
    text = _core_reason(f)
    if f.v2l_requested_kw > 0:
        if f.v2l_kw >= f.v2l_requested_kw - 1e-3:
            text += f"; V2L {f.v2l_kw:.1f} kW"
        elif f.v2l_kw > 1e-3:
            text += f"; V2L limited to {f.v2l_kw:.1f} kW by the reserve"
        else:
            text += "; V2L stopped at the reserve"
    return ("fallback plan: " + text) if f.fallback else text


def _core_reason(f: StepFacts) -> str:
    if not f.in_snapshot:
        return "not in the snapshot: nothing planned"
    p = f.power_kw
    pct = 100.0 * f.reserve_kwh / f.capacity_kwh
    if not f.available and abs(p) < _IDLE_KW:
        return "not plugged in"
    if p >= _IDLE_KW:
        if f.mode is VehicleMode.CHARGE_NOW:
            return f"charging {p:.1f} kW now (charge now)"
        if f.energy_kwh < f.reserve_kwh - 1e-6:
            return f"charging {p:.1f} kW back up to the reserve ({pct:.0f} %)"
        target = f.next_target
        if target is not None and f.energy_kwh < target.target_kwh - 1e-6:
            when = _local_time(target.at, f.now, f.timezone)
            goal = 100.0 * target.target_kwh / f.capacity_kwh
            if f.target_reachable_kwh is not None:
                reach = 100.0 * f.target_reachable_kwh / f.capacity_kwh
                return f"charging {p:.1f} kW for {when} departure (target {goal:.0f} %, only {reach:.0f} % reachable)"
            return f"charging {p:.1f} kW for {when} departure (target {goal:.0f} %)"
        if f.import_price < 0:
            return f"charging {p:.1f} kW at a negative price ({_price(f.import_price, f.currency)})"
        if f.pv_surplus:
            return f"charging {p:.1f} kW from PV surplus"
        return f"charging {p:.1f} kW at a low price ({_price(f.import_price, f.currency)})"
    if p <= -_IDLE_KW:
        if f.charges_at_negative_price_later:
            return f"discharging {-p:.1f} kW to make room for negative prices later"
        if f.v2g and f.grid_export_kw > _IDLE_KW:
            return f"exporting {-p:.1f} kW at {_price(f.export_price, f.currency)}"
        return f"discharging {-p:.1f} kW to cover the home at {_price(f.import_price, f.currency)}"
    if not f.soc_known:
        return "SoC unknown: charging only, waiting for a reading"
    if f.energy_kwh <= f.reserve_kwh + 0.05:
        return f"holding at reserve ({pct:.0f} %)"
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
