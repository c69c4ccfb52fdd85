"""The home battery in the LP: properties over random snapshots, and the rules one by one."""

from __future__ import annotations

import functools
import os
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.config import HomeBatteryConfig, SiteConfig
from controller.domain import Plan
from controller.optimizer import Planner
from controller.snapshot import Snapshot
from tests.test_optimizer_helpers import T0, site, snapshot, vehicle

SETTINGS = settings(
    max_examples=int(os.environ.get("V2X_OPTIMIZER_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
STEPS = 32  # 8 h of 15 minutes
TOL_KW = 1e-3


def battery(control: str = "mqtt", **fields: Any) -> HomeBatteryConfig:
    mode: dict[str, Any] = (
        {"mode": "observe"} if control == "observe" else {"mode": "mqtt", "setpoint_topic": "home/bat/set"}
    )
    values: dict[str, Any] = {
        "id": "bat",
        "usable_capacity_kwh": 10.0,
        "max_charge_kw": 5.0,
        "max_discharge_kw": 5.0,
        "min_soc_percent": 5.0,
        "backup_reserve_percent": 20.0,
        "max_soc_percent": 95.0,
        "degradation_cost_per_kwh": 0.02,
        "control": mode,
    }
    values.update(fields)
    return HomeBatteryConfig.model_validate(values)


def config(*batteries: HomeBatteryConfig, v2g: bool = True) -> SiteConfig:
    cfg = site([vehicle("a", v2g=v2g)], horizon_hours=8, charger={"min_current_a": 0})
    return cfg.model_copy(update={"home_batteries": list(batteries)})


@functools.cache
def planner(name: str) -> Planner:
    return Planner(SHAPES[name])


SHAPES: dict[str, SiteConfig] = {
    "free": config(battery(grid_charging=True, grid_export=True)),
    "own_use": config(battery()),
    "dc": config(battery(coupling="dc", inverter_ac_kw=6.0)),
}


def battery_snapshot(
    soc: float | None, car_soc: float, load: Any, pv: Any, price: Any, export: Any = 0.05, **extra: Any
) -> Snapshot:
    return snapshot(
        STEPS,
        [{"id": "a", "soc_percent": car_soc, "plugged_in": True}],
        load_w=load,
        pv_w=pv,
        import_price=price,
        export_price=export,
        home_batteries=[{"id": "bat", "soc_percent": soc}],
        **extra,
    )


def flows_kw(plan: Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    car = np.array(plan.vehicles["a"].power_w) / 1000.0
    bat = np.array(plan.batteries["bat"].power_w) / 1000.0
    grid = (np.array(plan.grid_import_w) - np.array(plan.grid_export_w)) / 1000.0
    return car, bat, grid


series = st.lists(st.floats(0.0, 8000.0), min_size=STEPS, max_size=STEPS)
prices = st.lists(st.floats(-0.1, 0.6), min_size=STEPS, max_size=STEPS)


@SETTINGS
@given(
    shape=st.sampled_from(sorted(SHAPES)),
    soc=st.floats(0.0, 100.0),
    car_soc=st.floats(10.0, 90.0),
    load=series,
    pv=series,
    price=prices,
)
def test_every_plan_closes_and_keeps_the_battery_within_its_limits(
    shape: str, soc: float, car_soc: float, load: list[float], pv: list[float], price: list[float]
) -> None:
    cfg = SHAPES[shape]
    spec = cfg.home_batteries[0]
    export = [min(p, 0.05) for p in price]
    plan = planner(shape).plan(battery_snapshot(soc, car_soc, load, pv, price, export))
    assert plan.solver_status == "optimal"
    car, bat, grid = flows_kw(plan)
    net = (np.array(load) - np.array(pv)) / 1000.0
    np.testing.assert_allclose(grid, net + car + bat, atol=TOL_KW)  # the balance closes
    bp = plan.batteries["bat"]
    socs = np.array(bp.soc_percent)
    assert socs.max() <= max(spec.max_soc_percent, soc) + 1e-4
    if soc >= spec.floor_percent:
        assert socs.min() >= spec.floor_percent - 1e-4
    else:  # below its floor: never lower than it started
        assert socs.min() >= soc - 1e-4
    assert (bat <= spec.max_charge_kw + TOL_KW).all() and (bat >= -spec.max_discharge_kw - TOL_KW).all()
    if not spec.grid_charging:
        assert (np.maximum(bat, 0.0) <= np.maximum(-net, 0.0) + TOL_KW).all()
    if not spec.grid_export:
        assert (np.maximum(-bat, 0.0) <= np.maximum(net, 0.0) + np.maximum(car, 0.0) + TOL_KW).all()
    if spec.inverter_ac_kw is not None:
        assert (
            np.maximum(-bat, 0.0) <= np.maximum(spec.inverter_ac_kw - np.array(pv) / 1000.0, 0.0) + TOL_KW
        ).all()


@SETTINGS
@given(
    price=st.floats(0.05, 0.5),
    soc=st.floats(30.0, 95.0),
    car_soc=st.floats(10.0, 60.0),
    load=series,
    pv=series,
)
def test_flat_prices_never_move_energy_from_one_storage_into_the_other(
    price: float, soc: float, car_soc: float, load: list[float], pv: list[float]
) -> None:
    """With one price all day, moving a kWh from the battery into the car (or back) only loses
    both efficiencies and wear: the plan never does it."""
    plan = planner("free").plan(
        battery_snapshot(
            soc,
            car_soc,
            load,
            pv,
            price,
            price * 0.5,
        )
    )
    car, bat, _ = flows_kw(plan)
    net = (np.array(load) - np.array(pv)) / 1000.0
    surplus, home = np.maximum(-net, 0.0), np.maximum(net, 0.0)
    to_car = np.minimum(np.maximum(-bat - home, 0.0), np.maximum(car - surplus, 0.0))
    to_battery = np.minimum(np.maximum(-car - home, 0.0), np.maximum(bat - surplus, 0.0))
    assert to_car.max() <= TOL_KW
    assert to_battery.max() <= TOL_KW


def test_cheap_hours_fill_the_battery_for_the_dear_ones_only_when_it_pays() -> None:
    price = np.where(np.arange(STEPS) < 16, 0.10, 0.50)
    plan = planner("free").plan(battery_snapshot(30.0, 80.0, 800.0, 0.0, price, 0.0))
    _, bat, _ = flows_kw(plan)
    assert bat[:16].sum() > 0 and bat[16:].sum() < 0  # charge cheap, discharge dear
    # A spread below the round trip (0.95 x 0.95) and the wear: no cycling.
    small = np.where(np.arange(STEPS) < 16, 0.30, 0.31)
    plan = planner("free").plan(battery_snapshot(30.0, 80.0, 800.0, 0.0, small, 0.0))
    _, bat, _ = flows_kw(plan)
    assert np.maximum(bat, 0.0).sum() <= TOL_KW


def test_unknown_soc_holds_the_battery() -> None:
    price = np.where(np.arange(STEPS) < 16, 0.10, 0.50)
    plan = planner("free").plan(battery_snapshot(None, 50.0, 800.0, 3000.0, price))
    assert plan.batteries["bat"].power_w == (0.0,) * STEPS
    assert "unknown" in plan.batteries["bat"].reason


def test_without_a_controllable_battery_the_lp_has_no_battery_part() -> None:
    bare = Planner(config())
    assert (
        bare.model is not None and bare.model.batteries is None and bare.model.observe_import_penalty is None
    )
    observed = Planner(config(battery("observe")))
    assert observed.model is not None and observed.model.batteries is None
    assert observed.model.observe_import_penalty is not None
    names = {p.name() for p in bare.model.problem.parameters()}
    assert not any(name.startswith("battery") for name in names)


def test_observe_battery_is_forecast_and_the_car_waits_while_it_would_discharge() -> None:
    cfg = config(battery("observe"))
    # Evening load, a battery with energy: it covers the home; the car needs 9 kWh by the horizon's end.
    snap = snapshot(
        STEPS,
        [
            {
                "id": "a",
                "soc_percent": 30,
                "plugged_in": True,
                "departure": {"at": T0 + timedelta(hours=7, minutes=45), "target_soc_percent": 45},
            }
        ],
        load_w=1000.0,
        import_price=0.2,
        export_price=0.05,
        home_batteries=[{"id": "bat", "soc_percent": 90}],
    )
    plan = Planner(cfg).plan(snap)
    bp = plan.batteries["bat"]
    assert not bp.controlled
    power = np.array(bp.power_w)
    assert power[0] == pytest.approx(-1000.0)
    socs = np.array(bp.soc_percent)
    assert socs.min() >= 20.0 - 1e-6  # its own floor (backup reserve)
    car = np.array(plan.vehicles["a"].power_w)
    discharging = power < -1e-3
    assert car[discharging].max(initial=0.0) <= 1e-3 and car[~discharging].sum() > 0
    # The grid meter reads what the battery leaves: ~0 while it covers the home.
    assert max(plan.grid_import_w[k] for k in np.flatnonzero(discharging)) <= car.max() + 1e-3
    # Flat prices: a transfer costs the battery's wear, per kWh out of its cells.
    planner = Planner(cfg)
    planner.plan(snap)
    assert planner.last_inputs is not None
    penalty = planner.last_inputs.observe_import_penalty
    assert penalty[discharging] == pytest.approx(0.02 / 0.95)
    assert (penalty[~discharging[: len(penalty)]] == 0.0).all()


def test_observe_battery_yields_to_a_departure_that_needs_the_charge() -> None:
    cfg = config(battery("observe"))
    snap = snapshot(
        STEPS,
        [
            {
                "id": "a",
                "soc_percent": 30,
                "plugged_in": True,
                "departure": {"at": T0.replace(hour=20), "target_soc_percent": 60},
            }
        ],
        load_w=1000.0,
        home_batteries=[{"id": "bat", "soc_percent": 95}],
    )
    plan = Planner(cfg).plan(snap)
    assert plan.vehicles["a"].departure_shortfall_kwh <= 0.05


def test_battery_below_its_floor_recovers_only_from_pv_without_grid_charging() -> None:
    pv = np.where((np.arange(STEPS) >= 4) & (np.arange(STEPS) < 12), 4000.0, 0.0)
    plan = planner("own_use").plan(battery_snapshot(10.0, 60.0, 500.0, pv, 0.05))
    _, bat, _ = flows_kw(plan)
    assert bat[:4].max() <= TOL_KW  # no grid charging even below the floor
    assert bat[4:12].sum() > 0
    assert plan.batteries["bat"].soc_percent[12] >= 20.0 - 1e-4
