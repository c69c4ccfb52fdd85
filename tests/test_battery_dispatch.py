"""Dispatcher.dispatch_batteries: the plan's battery setpoint, corrected live; observe batteries."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from controller.config import HomeBatteryConfig, SiteConfig
from controller.dispatch import Dispatcher, DispatchInputs
from controller.dispatch.inputs import BatteryLive
from controller.domain import BatteryPlan, Plan
from tests.test_dispatch import T0, inputs, plan, site


def with_battery(control: str = "mqtt", **fields: Any) -> SiteConfig:
    mode: dict[str, Any] = (
        {"mode": "observe"} if control == "observe" else {"mode": "mqtt", "setpoint_topic": "home/bat/set"}
    )
    values: dict[str, Any] = {
        "id": "bat",
        "usable_capacity_kwh": 10.0,
        "max_charge_kw": 5.0,
        "max_discharge_kw": 5.0,
        "backup_reserve_percent": 20.0,
        "control": mode,
    }
    values.update(fields)
    return site().model_copy(update={"home_batteries": [HomeBatteryConfig.model_validate(values)]})


def battery_plan(car_w: list[float], battery_w: list[float], export_w: list[float] | None = None) -> Plan:
    base = plan(car_w, export_w)
    n = len(battery_w)
    planned = BatteryPlan("bat", True, tuple(battery_w), tuple([50.0] * (n + 1)), "planned")
    return dataclasses.replace(base, batteries={"bat": planned})


def battery_inputs(
    p: Plan | None, grid_w: float | None, soc: float | None = 50.0, battery_w: float | None = 0.0, **kw: Any
) -> DispatchInputs:
    base = inputs(p, grid_w, car_w=kw.pop("car_w", 0.0), soc=kw.pop("car_soc", 60.0), **kw)
    return dataclasses.replace(base, batteries=(BatteryLive("bat", soc, battery_w),))


def one(dispatcher: Dispatcher, given: DispatchInputs) -> Any:
    dispatcher.dispatch(given)
    (command,) = dispatcher.dispatch_batteries(given)
    return command


def test_planned_discharge_follows_the_measured_home_load() -> None:
    d = Dispatcher(with_battery())
    # The battery discharges 1 kW now and the grid still imports 800 W: the home needs 1.8 kW.
    command = one(d, battery_inputs(battery_plan([0.0] * 4, [-1000.0] * 4), 800.0, battery_w=-1000.0))
    assert command.mode == "discharge"
    assert command.setpoint_w == pytest.approx(-1800.0)
    assert command.send and command.valid_until > T0 + timedelta(minutes=1)


def test_discharge_never_goes_into_a_car_the_plan_does_not_charge_from_it() -> None:
    d = Dispatcher(with_battery())
    p = battery_plan([7000.0] * 4, [-1000.0] * 4)
    command = one(d, battery_inputs(p, 7500.0, battery_w=0.0, car_w=7000.0))
    # The plan has both in this step (it pays there): the home and the car, up to the battery's 5 kW.
    assert command.setpoint_w == pytest.approx(-5000.0)
    p_home_only = battery_plan([0.0] * 4, [-1000.0] * 4)
    d2 = Dispatcher(with_battery())
    command = one(d2, battery_inputs(p_home_only, 7500.0, battery_w=0.0, car_w=7000.0))
    # Nothing planned for the car: only the home's 500 W.
    assert command.setpoint_w == pytest.approx(-500.0)


def test_charge_without_grid_charging_takes_only_the_measured_surplus() -> None:
    d = Dispatcher(with_battery())
    command = one(d, battery_inputs(battery_plan([0.0] * 4, [3000.0] * 4), -1200.0, battery_w=0.0))
    assert command.mode == "charge" and command.setpoint_w == pytest.approx(1200.0)


def test_unknown_soc_safe_mode_and_no_plan_hand_the_battery_back() -> None:
    d = Dispatcher(with_battery())
    p = battery_plan([0.0] * 4, [-1000.0] * 4)
    assert one(d, battery_inputs(p, 500.0, soc=None)).mode == "auto"
    assert one(Dispatcher(with_battery()), battery_inputs(p, 500.0, safe_mode=True)).mode == "auto"
    assert one(Dispatcher(with_battery()), battery_inputs(None, 500.0)).mode == "auto"
    assert one(Dispatcher(with_battery()), battery_inputs(p, 500.0, battery_w=None)).mode == "auto"


def test_floor_and_ceiling_stop_the_battery() -> None:
    p = battery_plan([0.0] * 4, [-1000.0] * 4)
    command = one(Dispatcher(with_battery()), battery_inputs(p, 1000.0, soc=20.0))
    assert command.mode == "hold" and command.setpoint_w == 0.0
    p = battery_plan([0.0] * 4, [2000.0] * 4)
    command = one(Dispatcher(with_battery(grid_charging=True)), battery_inputs(p, 0.0, soc=100.0))
    assert command.mode == "hold"


def test_import_cap_cuts_battery_grid_charging_with_the_cars_setpoints_in() -> None:
    d = Dispatcher(with_battery(grid_charging=True))
    p = battery_plan([11000.0] * 4, [5000.0] * 4)
    command = one(d, battery_inputs(p, 12000.0, battery_w=0.0, car_w=11000.0, import_w=15000.0))
    # The grid without the battery reads 12 kW with the car at 11 kW: 3 kW left under the cap.
    assert command.setpoint_w == pytest.approx(3000.0)
    assert any("import limit" in r for r in command.reasons)


def test_deadband_and_keep_alive() -> None:
    d = Dispatcher(with_battery())
    p = battery_plan([0.0] * 40, [-1000.0] * 40)
    first = one(d, battery_inputs(p, 0.0, battery_w=-1000.0))
    assert first.send
    later = one(d, battery_inputs(p, 100.0, battery_w=-1000.0, now=T0 + timedelta(seconds=70)))
    assert not later.send  # 100 W within the deadband
    bigger = one(d, battery_inputs(p, 900.0, battery_w=-1000.0, now=T0 + timedelta(seconds=80)))
    assert bigger.send
    # The battery now runs the 1.9 kW sent; the home still needs 1.9 kW: nothing new.
    kept = one(d, battery_inputs(p, 0.0, battery_w=-1900.0, now=T0 + timedelta(seconds=85)))
    assert not kept.send
    valid_s = (bigger.valid_until - (T0 + timedelta(seconds=80))).total_seconds()
    alive_at = T0 + timedelta(seconds=80 + valid_s * 0.7)
    alive = one(d, battery_inputs(p, 0.0, battery_w=-1900.0, now=alive_at))
    assert alive.send  # a keep-alive before valid_until runs out


def test_observe_battery_gets_no_command_and_stops_feeding_a_charging_car() -> None:
    d = Dispatcher(with_battery("observe"))
    p = battery_plan([7000.0] * 4, [0.0] * 4)
    # The battery discharges 5 kW: 500 W for the home, 4.5 kW into the charging car.
    given = battery_inputs(p, 2500.0, battery_w=-5000.0, car_w=7000.0)
    commands = d.dispatch(given)
    assert d.dispatch_batteries(given) == []
    (car,) = commands
    assert car.setpoint_w == pytest.approx(2500.0)
    assert any("home battery" in r for r in car.reasons)


def test_observe_battery_does_not_hold_back_a_car_about_to_leave() -> None:
    d = Dispatcher(with_battery("observe"))
    p = battery_plan([7000.0] * 4, [0.0] * 4)
    given = battery_inputs(
        p, 2500.0, battery_w=-5000.0, car_w=7000.0, departure_at=T0 + timedelta(minutes=30)
    )
    (car,) = d.dispatch(given)
    assert car.setpoint_w == pytest.approx(7000.0)


def test_planned_hold_covers_home_load_beyond_the_plan_at_a_dear_price_only() -> None:
    # The plan expected no import now (hold); the home draws 900 W more than forecast.
    p = battery_plan([0.0] * 4, [0.0] * 4)
    dear = dataclasses.replace(p, import_price_per_kwh=(0.40, 0.20, 0.20, 0.20))
    command = one(Dispatcher(with_battery()), battery_inputs(dear, 900.0, battery_w=0.0))
    assert command.setpoint_w == pytest.approx(-900.0)
    cheap = dataclasses.replace(p, import_price_per_kwh=(0.10, 0.40, 0.40, 0.40))
    command = one(Dispatcher(with_battery()), battery_inputs(cheap, 900.0, battery_w=0.0))
    assert command.mode == "hold"  # kept for the dear hours the plan saves it for


def test_surplus_beyond_the_plans_export_is_stored_not_more() -> None:
    # The plan charges 1 kW and exports 500 W; PV gives 2.5 kW beyond the home: 1 kW more to store.
    # (The car is full: it takes no surplus.)
    p = battery_plan([0.0] * 4, [1000.0] * 4, export_w=[500.0] * 4)
    command = one(Dispatcher(with_battery()), battery_inputs(p, -2500.0, battery_w=0.0, car_soc=100.0))
    assert command.setpoint_w == pytest.approx(2000.0)
