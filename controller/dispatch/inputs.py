"""What the dispatcher is told at each tick: the plan, the live facts per car and the site's meters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from controller.domain import Plan, VehicleMode

__all__ = ["BatteryLive", "DispatchInputs", "VehicleLive"]


@dataclass(frozen=True, slots=True)
class BatteryLive:
    """Live facts about one home battery at dispatch time (None = unknown or stale)."""

    battery_id: str
    soc_percent: float | None
    power_w: float | None
    """Measured power, + charging / - discharging."""


@dataclass(frozen=True, slots=True)
class VehicleLive:
    """Live facts about one vehicle at dispatch time (None = unknown)."""

    vehicle_id: str
    plugged_in: bool
    charger_id: str | None
    soc_percent: float | None
    measured_power_w: float | None = None
    mode: VehicleMode = VehicleMode.AUTO
    departure_at: datetime | None = None
    """The next departure the driver expects (for the last-hour guard on PV-surplus following)."""
    ev_max_charge_w: float | None = None
    """The EV's own charge power cap for this session (NotifyEVChargingNeeds), None = none reported."""
    ev_max_discharge_w: float | None = None
    """The EV's own discharge power cap (a magnitude), None = none reported."""
    ev_min_soc_percent: float | None = None
    """The EV's own V2X floor: no discharge at or below it (nor below the configured reserve)."""
    ceiling_soc_percent: float | None = None
    """Charging stops here (None: the config's ``max_soc_percent``): higher where the driver asked
    ``charge_now`` to a higher SoC or the next departure's target is above it."""
    charger_can_discharge: bool = True
    """False when the charger's OCPP connection cannot carry a discharge (1.6/2.0.1 without
    ``negative_limit_means_discharge``): the car is charge-only there, whatever the config says."""
    hold_soc_percent: float | None = None
    """An overdue departure's target (the car is still plugged in after it): no discharge at or below
    it; None when no departure is overdue."""


@dataclass(frozen=True, slots=True)
class DispatchInputs:
    now: datetime
    plan: Plan | None
    vehicles: tuple[VehicleLive, ...]
    grid_power_w: float | None
    """Measured grid power (+ import), None when the grid meter is missing or stale."""
    import_limit_w: float
    export_limit_w: float
    safe_mode: bool = False
    grid_lost: bool = False
    """The grid meter reports an outage: the car may cover the home (V2H) down to the reserve."""
    home_power_w: float | None = None
    """Measured home load without the cars (a ``home`` meter), None when there is none or it is stale."""
    pv_power_w: float | None = None
    """Measured PV production, None when there is none or it is stale."""
    grid_phases_w: tuple[float, float, float] | None = None
    """Measured grid power per phase L1-L3 (+ import), from the same reading as ``grid_power_w``;
    None when the grid meter gives no per-phase values, is stale, or in an outage."""
    batteries: tuple[BatteryLive, ...] = ()
    """The configured home batteries (``home_batteries``), in config order."""
    capacity_cap_w: float | None = None
    """The capacity tariff's cap on the average import for the rest of the current window
    (``peak_window.capacity_import_cap_w``), None without a capacity tariff or a fresh grid meter."""
