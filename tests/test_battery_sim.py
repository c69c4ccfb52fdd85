"""The home battery in the simulator: the plant's rules, the metric, and dispatcher and plant together."""

from __future__ import annotations

import dataclasses
import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.config import HomeBatteryConfig, SiteConfig, load_config
from sim.engine import Decision, SimResult, simulate
from sim.generators import generate_scenario
from sim.information import InformationModel
from sim.metrics import compute_metrics, storage_transfer_kwh
from sim.plant import Plant
from sim.runner import run_strategy
from sim.scenario import Scenario

ROOT = Path(__file__).resolve().parent.parent


def battery(control: str, **fields: Any) -> HomeBatteryConfig:
    mode: dict[str, Any] = (
        {"mode": "observe"} if control == "observe" else {"mode": "mqtt", "setpoint_topic": "home/bat/set"}
    )
    values: dict[str, Any] = {
        "id": "bat",
        "usable_capacity_kwh": 10.0,
        "max_charge_kw": 5.0,
        "max_discharge_kw": 5.0,
        "backup_reserve_percent": 10.0,
        "control": mode,
    }
    values.update(fields)
    return HomeBatteryConfig.model_validate(values)


def home(control: str, **fields: Any) -> SiteConfig:
    config = load_config(ROOT / "sim" / "examples" / "home.yaml")
    return config.model_copy(update={"home_batteries": [battery(control, **fields)]})


@functools.cache
def scenario(control: str, days: int = 3, seed: int = 3) -> Scenario:
    base = generate_scenario(
        load_config(ROOT / "sim" / "examples" / "home.yaml"),
        datetime(2023, 6, 5, tzinfo=UTC),
        days,
        seed=seed,
    )
    return dataclasses.replace(base, config=home(control))


class Told:
    """A strategy that tells the car and the battery the same every step."""

    name = "told"

    def __init__(self, car_w: float, battery_w: float | None) -> None:
        self.car_w, self.battery_w = car_w, battery_w

    def decide(self, info: InformationModel) -> Decision:
        return Decision((self.car_w,), battery_w=(self.battery_w,))


def test_observe_battery_holds_the_grid_at_zero_within_its_limits() -> None:
    plant = Plant(scenario("observe"))
    batteries = plant.batteries
    assert batteries is not None
    batteries.energy_kwh[0] = 5.0
    outcome = plant.step(0, (0.0,), load_w=1500.0, pv_w=0.0)
    assert outcome.battery_power_w[0] == pytest.approx(-1500.0)
    assert outcome.grid_w == pytest.approx(0.0, abs=1e-6)
    outcome = plant.step(1, (0.0,), load_w=500.0, pv_w=7000.0)
    assert outcome.battery_power_w[0] == pytest.approx(5000.0)  # its charge limit
    assert outcome.grid_w == pytest.approx(500.0 - 7000.0 + 5000.0)
    # At its floor it stops: the home imports again.
    batteries.energy_kwh[0] = 1.0  # the backup reserve (10 % of 10 kWh)
    outcome = plant.step(2, (0.0,), load_w=800.0, pv_w=0.0)
    assert outcome.battery_power_w[0] == pytest.approx(0.0)
    assert outcome.grid_w == pytest.approx(800.0)


def test_observe_battery_sees_a_charging_car_as_load_and_the_metric_counts_it() -> None:
    sc = scenario("observe")
    # The car charges 5 kW whenever it is home; the battery (own mode) discharges into it.
    result = simulate(sc, Told(5000.0, None), plant=Plant(sc))
    to_car, to_battery = storage_transfer_kwh(result)
    assert to_car > 1.0 and to_battery == 0.0
    assert compute_metrics(result).storage_to_storage_kwh == pytest.approx(to_car)


def test_storage_transfer_formula_per_minute() -> None:
    result = simulate(scenario("controlled"), Told(-5000.0, 3000.0), plant=Plant(scenario("controlled")))
    per = result.minutes_per_step
    assert result.load_w is not None and result.pv_w is not None
    load, pv = np.repeat(result.load_w, per), np.repeat(result.pv_w, per)
    car, bat = result.power_1min_w.sum(axis=0), result.battery_1min_w.sum(axis=0)
    expected = np.minimum(
        np.maximum(-car - np.maximum(load - pv, 0), 0), np.maximum(bat - np.maximum(pv - load, 0), 0)
    )
    to_car, to_battery = storage_transfer_kwh(result)
    assert to_car == 0.0
    assert to_battery == pytest.approx(expected.sum() * result.scenario.series.step_hours / per / 1000.0)
    assert to_battery > 0


def check_limits(result: SimResult, controlled: bool) -> None:
    (spec,) = result.battery_specs
    energy = result.battery_energy_kwh[0]
    assert energy.min() >= spec.bms_min_kwh - 1e-6 and energy.max() <= spec.capacity_kwh + 1e-6
    metrics = compute_metrics(result)
    assert metrics.battery_floor_breaches == 0
    assert metrics.reserve_breaches == 0 and metrics.avoidable_shortfalls == 0
    if controlled:
        assert energy.max() <= spec.max_soc_kwh + 0.05
    power = result.battery_1min_w[0]
    assert power.max() <= spec.max_charge_w + 1e-6 and -power.min() <= spec.max_discharge_w + 1e-6


def flat(sc: Scenario, price: float) -> Scenario:
    """Flat prices, export paid as import: moving energy between two stores only loses."""
    series = dataclasses.replace(
        sc.series,
        import_price_per_kwh=np.full(sc.steps, price),
        export_price_per_kwh=np.full(sc.steps, price),
    )
    return dataclasses.replace(sc, series=series)


def test_closed_loop_controllable_battery_never_trades_with_the_car_when_it_does_not_pay() -> None:
    """Planner, dispatcher, the daemon's site path and the plant together, three days of mpc."""
    sc = flat(scenario("controlled"), 0.30)
    result = run_strategy(sc, "mpc")
    check_limits(result, controlled=True)
    assert compute_metrics(result).storage_to_storage_kwh <= 0.05
    assert compute_metrics(run_strategy(sc, "uncontrolled")).storage_to_storage_kwh > 1.0


def test_closed_loop_controllable_battery_on_a_dynamic_tariff_stays_within_its_limits() -> None:
    result = run_strategy(scenario("controlled"), "mpc")
    check_limits(result, controlled=True)
    metrics = compute_metrics(result)
    assert metrics.battery_discharge_kwh > 1.0  # the battery does work
    assert (
        metrics.total_cost < compute_metrics(run_strategy(scenario("controlled"), "uncontrolled")).total_cost
    )


def test_closed_loop_observe_battery_feeds_the_car_no_more_than_without_the_controller() -> None:
    """With the battery in its own mode the controller only times the car. Under flat prices a
    transfer only costs the battery's wear, so the car charges from PV or once the battery is at its
    floor where it can; a full battery overnight before a departure still feeds it (the controller
    cannot stop an observed battery), as it does without the controller.

    The plan's forecast of the battery leaves the car out (its rule cannot be an LP), so in the steps
    where the car must charge while the battery still has energy the plan is indifferent between
    them, and which of those equal plans the solver returns moves the battery's share in a home by
    up to about a kWh in three days either way (eight homes of three days: 0.8-1.4 times the
    transfer without the controller, per home; this home: 11.9 against 12.0 kWh). Over the eight
    together it stays within 5 % of the transfer without the controller (measured: the same total,
    98.8 kWh each)."""
    sc = flat(scenario("observe"), 0.30)
    result = run_strategy(sc, "mpc")
    check_limits(result, controlled=False)
    metrics = compute_metrics(result)
    uncontrolled = compute_metrics(run_strategy(sc, "uncontrolled"))
    assert metrics.storage_to_storage_kwh <= uncontrolled.storage_to_storage_kwh
    assert metrics.total_cost < uncontrolled.total_cost
    transfers = {"mpc": 0.0, "uncontrolled": 0.0}
    for seed in range(1, 9):
        sc = flat(scenario("observe", seed=seed), 0.30)
        for strategy in transfers:
            result = run_strategy(sc, strategy)
            check_limits(result, controlled=False)
            transfers[strategy] += compute_metrics(result).storage_to_storage_kwh
    assert transfers["mpc"] <= 1.05 * transfers["uncontrolled"]
    dynamic = compute_metrics(run_strategy(scenario("observe"), "mpc"))
    assert dynamic.total_cost < compute_metrics(run_strategy(scenario("observe"), "uncontrolled")).total_cost
