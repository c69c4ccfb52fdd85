"""Home batteries at dispatch time: the plan's setpoint, corrected live like the cars'.

For each battery with ``control`` mqtt or modbus (an ``observe`` battery gets no command), in order:

1. no plan step, a fallback plan, safe mode, an unknown SoC or power: ``auto`` (the battery's own
   self-consumption mode, which it also returns to by itself after ``valid_until``);
2. the planned setpoint of the current step;
3. live following, on the grid meter less the battery's own measured power (the site without it)
   plus the cars' new setpoints: a planned discharge covers the measured home load (with
   ``cover_home_before_cars`` the cars' V2H counts as not there yet: the battery covers first;
   otherwise it covers what the cars leave), and the cars' charging only where the plan itself has
   the battery discharge while a car charges (it pays there); a battery that may export keeps a
   larger planned discharge. A planned charge without grid charging takes the measured PV surplus,
   up to the plan; a planned hold or charge also stores a surplus beyond the plan's export where
   storing beats exporting, and a planned hold covers a home load beyond the plan's import where
   the import price is at least the plan's mean (what stored energy is usually worth);
4. SoC limits: no discharge at or below ``floor_percent``, no charge at or above ``max_soc_percent``;
5. the grid caps (import, export, capacity tariff) and the per-phase fuse, with the cars' new
   setpoints already in: charging is cut first on import, discharge on export (the battery is
   taken as three-phase, a third on each phase);
6. a deadband like the chargers': a change within ``deadband_w`` is not sent, a keep-alive is sent
   before ``valid_until`` runs out.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.config import HomeBatteryConfig, SiteConfig
from controller.dispatch.battery_command import BatteryCommand, BatteryMode
from controller.dispatch.car_setpoint import CarSetpoint
from controller.dispatch.inputs import BatteryLive, DispatchInputs
from controller.dispatch.send_policy import SentCommand

__all__ = [
    "BatterySent",
    "battery_command",
    "cars_power_w",
    "limit_observe_feed",
    "observe_feed_w",
    "site_now",
]

_VALID_INTERVALS = 6
"""``valid_until`` is this many dispatch intervals ahead (at least 30 s)."""


@dataclass(slots=True)
class BatterySent:
    setpoint_w: float
    mode: BatteryMode
    at: datetime
    valid_until: datetime


@dataclass(frozen=True, slots=True)
class SiteNow:
    """The site at this tick: grid without the cars' measured power plus their new setpoints."""

    grid_w: float | None
    """What the grid meter would read with the cars at their new setpoints (battery as measured)."""
    cars_charge_w: float
    cars_discharge_w: float
    phases_w: tuple[float, float, float] | None


def battery_command(
    config: SiteConfig,
    battery: HomeBatteryConfig,
    inputs: DispatchInputs,
    site: SiteNow,
    last: BatterySent | None,
    deadband_w: float,
) -> BatteryCommand:
    now = inputs.now
    interval = timedelta(seconds=max(5.0, config.site.dispatch_interval_s) * _VALID_INTERVALS)
    live = next((b for b in inputs.batteries if b.battery_id == battery.id), None)
    reasons: list[str] = []
    setpoint_w, mode = _setpoint(config, battery, inputs, site, live, reasons)
    valid_until = now + interval
    send = _should_send(last, setpoint_w, mode, now, interval, deadband_w)
    return BatteryCommand(battery.id, setpoint_w, mode, valid_until, send, tuple(reasons))


def _should_send(
    last: BatterySent | None,
    setpoint_w: float,
    mode: BatteryMode,
    now: datetime,
    interval: timedelta,
    deadband_w: float,
) -> bool:
    if last is None or last.mode != mode:
        return True
    if now >= last.valid_until - interval / 3:
        return True  # keep-alive before the battery falls back by itself
    if mode == "auto":
        return False
    if (setpoint_w == 0.0) != (last.setpoint_w == 0.0):
        return True
    return abs(setpoint_w - last.setpoint_w) > deadband_w


def _setpoint(
    config: SiteConfig,
    battery: HomeBatteryConfig,
    inputs: DispatchInputs,
    site: SiteNow,
    live: BatteryLive | None,
    reasons: list[str],
) -> tuple[float, BatteryMode]:
    plan = inputs.plan
    index = plan.step_index(inputs.now) if plan is not None else None
    planned = plan.batteries.get(battery.id) if plan is not None else None
    why = None
    if inputs.safe_mode:
        why = "safe mode"
    elif live is None or live.soc_percent is None:
        why = "SoC unknown or stale"
    elif live.power_w is None:
        why = "power unknown or stale"
    elif plan is None or plan.fallback or planned is None or index is None or not planned.power_w:
        why = "no plan for this step"
    if why is not None or live is None or live.soc_percent is None or planned is None or index is None:
        reasons.append(f"{why}: left in its own mode")
        return 0.0, "auto"
    assert plan is not None
    setpoint_w = planned.power_w[index]
    reasons.append(f"plan {setpoint_w:.0f} W")
    if site.grid_w is not None and live.power_w is not None and not inputs.grid_lost:
        setpoint_w = _follow(battery, inputs, site, live.power_w, setpoint_w, index, reasons)
    setpoint_w = _soc_limits(battery, live.soc_percent, setpoint_w, reasons)
    if site.grid_w is not None and live.power_w is not None and not inputs.grid_lost:
        setpoint_w = _caps(config, inputs, site, live.power_w, setpoint_w, reasons)
    if abs(setpoint_w) < 1.0:
        return 0.0, "hold"
    return setpoint_w, "charge" if setpoint_w > 0 else "discharge"


def _follow(
    battery: HomeBatteryConfig,
    inputs: DispatchInputs,
    site: SiteNow,
    measured_w: float,
    planned_w: float,
    index: int,
    reasons: list[str],
) -> float:
    assert site.grid_w is not None and inputs.plan is not None
    plan = inputs.plan
    without_w = site.grid_w - measured_w  # the site with the cars' new setpoints, without the battery
    load_w = without_w
    if battery.cover_home_before_cars:
        load_w += site.cars_discharge_w
    cars_planned = any(
        v.power_w and index < len(v.power_w) and v.power_w[index] > 0 for v in plan.vehicles.values()
    )
    if not cars_planned:
        load_w -= site.cars_charge_w  # never into a charging car unless the plan has it pay
    if planned_w < 0:
        follow_w = -min(battery.max_discharge_kw * 1000.0, max(0.0, load_w))
        if battery.grid_export and follow_w > planned_w:
            return planned_w  # a planned export stays
        reasons.append(f"following home load {max(0.0, load_w):.0f} W")
        return follow_w
    surplus_w = max(0.0, -without_w)
    if planned_w > 0 and not battery.grid_charging:
        planned_w = min(planned_w, surplus_w)
        reasons.append(f"following PV surplus {surplus_w:.0f} W")
    import_price, export_price = plan.import_price_per_kwh[index], plan.export_price_per_kwh[index]
    extra_w = surplus_w - planned_w - plan.grid_export_w[index]  # export beyond the plan's
    stored_value = import_price * battery.charge_efficiency * battery.discharge_efficiency
    if extra_w > 0 and stored_value - battery.degradation_cost_per_kwh > export_price:
        reasons.append(f"storing {extra_w:.0f} W more PV surplus than forecast")
        return min(battery.max_charge_kw * 1000.0, planned_w + extra_w)
    unplanned_w = load_w - plan.grid_import_w[index]
    if planned_w == 0.0 and unplanned_w > 0 and import_price >= _mean(plan.import_price_per_kwh):
        # More import than planned at a price above the energy's usual worth: cover it.
        reasons.append(f"covering {unplanned_w:.0f} W more home load than forecast")
        return -min(battery.max_discharge_kw * 1000.0, unplanned_w)
    return planned_w


def _mean(values: tuple[float, ...]) -> float:
    return sum(values) / len(values) if values else 0.0


def _soc_limits(
    battery: HomeBatteryConfig, soc_percent: float, setpoint_w: float, reasons: list[str]
) -> float:
    if setpoint_w < 0 and soc_percent <= battery.floor_percent:
        reasons.append(f"at its floor {battery.floor_percent:g} %: no discharge")
        return 0.0
    if setpoint_w > 0 and soc_percent >= battery.max_soc_percent:
        reasons.append(f"at its max {battery.max_soc_percent:g} %: no charge")
        return 0.0
    return max(-battery.max_discharge_kw * 1000.0, min(battery.max_charge_kw * 1000.0, setpoint_w))


def _caps(
    config: SiteConfig,
    inputs: DispatchInputs,
    site: SiteNow,
    measured_w: float,
    setpoint_w: float,
    reasons: list[str],
) -> float:
    """Grid caps and the per-phase fuse, with the cars as set: charging cut on import, discharge on export."""
    assert site.grid_w is not None
    predicted_w = site.grid_w - measured_w + setpoint_w
    import_cap_w = inputs.import_limit_w
    if inputs.capacity_cap_w is not None:
        import_cap_w = min(import_cap_w, max(inputs.capacity_cap_w, site.grid_w - measured_w))
    if setpoint_w > 0 and predicted_w > import_cap_w:
        setpoint_w = max(0.0, setpoint_w - (predicted_w - import_cap_w))
        reasons.append("import limit: charging reduced")
    elif setpoint_w < 0 and predicted_w < -inputs.export_limit_w:
        setpoint_w = min(0.0, setpoint_w + (-inputs.export_limit_w - predicted_w))
        reasons.append("export limit: discharge reduced")
    grid = config.site.grid
    if grid.phase_fuse_a is None or site.phases_w is None:
        return setpoint_w
    fuse_w = grid.phase_fuse_a * grid.phase_voltage_v
    phases = [p + (setpoint_w - measured_w) / 3.0 for p in site.phases_w]
    if setpoint_w > 0 and max(phases) > fuse_w:
        setpoint_w = max(0.0, setpoint_w - 3.0 * (max(phases) - fuse_w))
        reasons.append(f"fuse {grid.phase_fuse_a:g} A: charging reduced")
    elif setpoint_w < 0 and min(phases) < -fuse_w:
        setpoint_w = min(0.0, setpoint_w + 3.0 * (-fuse_w - min(phases)))
        reasons.append(f"fuse {grid.phase_fuse_a:g} A: discharge reduced")
    return setpoint_w


def observe_feed_w(config: SiteConfig, inputs: DispatchInputs, cars_measured_w: float) -> float:
    """What the ``observe`` batteries are measured to discharge into the cars now (W, >= 0).

    Their discharge beyond the home's own net load (grid less cars less batteries); without a grid
    reading, their whole discharge.
    """
    discharge_w = 0.0
    batteries_w = 0.0
    for live in inputs.batteries:
        spec = config.home_battery(live.battery_id)
        if live.power_w is None:
            continue
        batteries_w += live.power_w
        if spec is not None and spec.control.mode == "observe" and live.power_w < 0:
            discharge_w += -live.power_w
    if discharge_w == 0.0 or inputs.grid_power_w is None:
        return discharge_w
    home_w = inputs.grid_power_w - cars_measured_w - batteries_w
    return max(0.0, min(discharge_w, discharge_w - max(0.0, home_w)))


def site_now(
    inputs: DispatchInputs,
    setpoints_w: Mapping[str, float],
    measured_w: Mapping[str, float],
) -> SiteNow:
    """The site this tick from the cars' new setpoints and their measured (or last sent) power."""
    change_w = sum(setpoints_w.values()) - sum(measured_w.values())
    grid_w = None if inputs.grid_power_w is None else inputs.grid_power_w + change_w
    phases = inputs.grid_phases_w
    if phases is not None:
        phases = (phases[0] + change_w / 3, phases[1] + change_w / 3, phases[2] + change_w / 3)
    return SiteNow(
        grid_w=grid_w,
        cars_charge_w=sum(max(0.0, w) for w in setpoints_w.values()),
        cars_discharge_w=sum(max(0.0, -w) for w in setpoints_w.values()),
        phases_w=phases,
    )


def limit_observe_feed(
    config: SiteConfig, inputs: DispatchInputs, cars: Collection[CarSetpoint], sent: Mapping[str, SentCommand]
) -> None:
    """While an ``observe`` battery discharges into charging cars, their charging is reduced by that
    much (the largest first), except within the hour before a car's departure (invariant 2)."""
    if not any(b.control.mode == "observe" for b in config.home_batteries):
        return
    measured_w = sum(_car_power_w(car, sent) for car in cars)
    feed_w = observe_feed_w(config, inputs, measured_w)
    for car in sorted(cars, key=lambda c: -c.setpoint_w):
        if feed_w <= 0 or car.setpoint_w <= 0 or car.departure_soon:
            continue
        cut_w = min(car.setpoint_w, feed_w)
        feed_w -= cut_w
        car.setpoint_w -= cut_w
        car.reasons.append(f"home battery discharging {cut_w:.0f} W into the car: charging reduced")


def _car_power_w(car: CarSetpoint, sent: Mapping[str, SentCommand]) -> float:
    if car.live.measured_power_w is not None:
        return car.live.measured_power_w
    last = sent.get(car.charger.id)
    return last.setpoint_w if last is not None else 0.0


def cars_power_w(
    cars: Collection[CarSetpoint], sent: Mapping[str, SentCommand]
) -> tuple[dict[str, float], dict[str, float]]:
    """Per charger: the car's new setpoint, and its measured power (else the setpoint last sent)."""
    return (
        {car.charger.id: car.setpoint_w for car in cars},
        {car.charger.id: _car_power_w(car, sent) for car in cars},
    )
