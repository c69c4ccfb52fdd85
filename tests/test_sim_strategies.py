"""Each strategy on a tiny scenario, and the metrics that judge them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from controller.config import parse_config
from controller.dispatch import ChargerCommand
from controller.domain import ChargerSchedule, SchedulePeriod
from sim.baselines import SmartCharging, StepDelivery, Uncontrolled
from sim.controlled import ModelPredictiveControl, average_w, schedule_in_step
from sim.engine import Decision, simulate
from sim.information import InformationModel
from sim.metrics import compute_metrics, monthly_cost, saving_share, step_cost
from sim.plant import Plant
from sim.runner import RunOptions, run_point, run_strategy
from sim.scenario import Scenario, Series
from tests.test_sim_support import START, STEP, TINY_SITE, tiny_config, tiny_scenario


@pytest.fixture(scope="module")
def runs() -> dict[str, object]:
    scenario = tiny_scenario(days=2, soc=50.0)
    names = ("uncontrolled", "smart", "mpc", "perfect", "mpc-no-discharge", "perfect-no-discharge")
    return {name: run_strategy(scenario, name) for name in names}


def balance_closes(result: object) -> None:
    from sim.engine import SimResult

    assert isinstance(result, SimResult)
    series = result.scenario.series
    np.testing.assert_allclose(result.grid_w, series.load_w - series.pv_w + result.power_w.sum(axis=0))


@pytest.mark.parametrize("name", ["uncontrolled", "smart", "mpc", "perfect"])
def test_every_strategy_is_safe_and_meets_departures(runs: dict[str, object], name: str) -> None:
    result = runs[name]
    balance_closes(result)
    m = compute_metrics(result)  # type: ignore[arg-type]
    assert m.departures == 2
    assert m.reserve_breaches == 0 and m.ceiling_breaches == 0
    assert m.avoidable_shortfalls == 0 and m.departure_shortfalls == 0
    assert m.import_limit_exceeded_steps == 0
    assert m.lowest_soc_percent is not None and m.lowest_soc_percent >= 20.0 - 0.01


def test_perfect_foresight_is_the_cheapest(runs: dict[str, object]) -> None:
    costs = {name: compute_metrics(r).total_cost for name, r in runs.items()}  # type: ignore[arg-type]
    assert costs["perfect"] <= min(costs.values()) + 1e-6
    assert costs["perfect"] < costs["uncontrolled"] - 1.0
    assert costs["mpc"] < costs["smart"] <= costs["uncontrolled"] + 1e-9
    share = saving_share(costs["mpc"], costs["uncontrolled"], costs["perfect"])
    assert share is not None and 0.5 < share <= 1.0


def test_uncontrolled_charges_at_full_power_from_plug_in_until_the_target(runs: dict[str, object]) -> None:
    result = runs["uncontrolled"]
    m = compute_metrics(result)  # type: ignore[arg-type]
    power = result.power_w[0]  # type: ignore[attr-defined]
    assert power[0] == 7000.0  # 50 % < 70 % target: full power at once
    assert m.discharge_kwh == 0.0
    arrive = result.scenario.scheduled_trips[0].arrive_index  # type: ignore[attr-defined]
    assert power[arrive] == 7000.0  # back from the first trip below target: full power again
    soc = result.soc_percent[0]  # type: ignore[attr-defined]
    assert soc[arrive - 1] < 70.0 and soc.max() <= 70.0 + 1e-6  # stops at the target


def test_smart_charges_in_the_cheapest_slots_only(runs: dict[str, object]) -> None:
    result = runs["smart"]
    power = result.power_w[0]  # type: ignore[attr-defined]
    prices = result.scenario.series.import_price_per_kwh  # type: ignore[attr-defined]
    charging = power > 0
    assert charging.any()
    assert prices[charging].max() <= 0.10 + 1e-9  # the night steps only
    assert (power >= 0).all()


def test_mpc_discharges_into_the_evening_peak_and_solves_every_step(runs: dict[str, object]) -> None:
    result = runs["mpc"]
    m = compute_metrics(result)  # type: ignore[arg-type]
    assert m.solves == result.scenario.steps  # type: ignore[attr-defined]
    assert m.fallbacks == 0
    assert m.solve_ms_median is not None and m.solver_ms_median is not None
    assert m.discharge_kwh > 1.0 and m.v2h_kwh + m.v2g_kwh <= m.discharge_kwh + 1e-9
    peak = result.scenario.series.import_price_per_kwh >= 0.6  # type: ignore[attr-defined]
    assert (result.power_w[0][peak] < 0).any()  # type: ignore[attr-defined]


def test_no_discharge_variants_never_discharge(runs: dict[str, object]) -> None:
    for name in ("mpc-no-discharge", "perfect-no-discharge"):
        m = compute_metrics(runs[name])  # type: ignore[arg-type]
        assert m.discharge_kwh == 0.0 and m.strategy == name
    costs = {n: compute_metrics(runs[n]).total_cost for n in ("perfect", "perfect-no-discharge")}  # type: ignore[arg-type]
    assert costs["perfect"] <= costs["perfect-no-discharge"] + 1e-6


def net_metering_scenario() -> Scenario:
    """Export paid the import price, dear for ten hours a day: the upper-quartile price (0.60) is
    above the mean (0.36), so the optimiser's terminal value is not the mean import price."""
    scenario = tiny_scenario(days=2, soc=60.0)
    series = scenario.series
    hours = np.array([series.time_at(k).hour for k in range(series.steps)])
    price = np.where(hours < 6, 0.10, np.where(hours < 14, 0.25, 0.60))
    priced = Series(series.start, series.step, price, price.copy(), series.load_w, series.pv_w)
    return Scenario(
        scenario.config, priced, scenario.trips, dict(scenario.initial_soc_percent), "net metering"
    )


def test_the_stored_energy_is_valued_as_the_perfect_solve_values_it() -> None:
    scenario = net_metering_scenario()
    perfect = compute_metrics(run_strategy(scenario, "perfect"))
    assert perfect.terminal_price_per_kwh == pytest.approx(0.60)
    mpc = compute_metrics(run_strategy(scenario, "mpc"))
    assert perfect.total_cost <= mpc.total_cost + 1e-4  # within the solver's tolerance
    # Perfect foresight solved with another terminal value, scored under the same metric, costs more.
    for value in (0.0, float(scenario.series.import_price_per_kwh.mean()), 1.0):
        config = scenario.config.model_copy(
            update={
                "optimizer": scenario.config.optimizer.model_copy(update={"terminal_value_per_kwh": value})
            }
        )
        other = run_strategy(scenario.with_config(config), "perfect")
        other.scenario = scenario
        assert perfect.total_cost <= compute_metrics(other).total_cost + 1e-4, value
    configured = scenario.with_config(
        scenario.config.model_copy(
            update={"optimizer": scenario.config.optimizer.model_copy(update={"terminal_value_per_kwh": 0.2})}
        )
    )
    assert compute_metrics(run_strategy(configured, "uncontrolled")).terminal_price_per_kwh == 0.2


def test_perfect_solves_once() -> None:
    result = run_strategy(tiny_scenario(days=1), "perfect")
    assert compute_metrics(result).solves == 1


def test_smart_respects_the_import_limit_with_two_cars() -> None:
    data = dict(TINY_SITE)
    data["site"] = {**TINY_SITE["site"], "grid": {"import_limit_kw": 8.0, "export_limit_kw": 5.0}}
    second = {**TINY_SITE["vehicles"][0], "id": "car2"}
    data["vehicles"] = [TINY_SITE["vehicles"][0], second]
    config = parse_config(data, "two cars")
    scenario = tiny_scenario(days=1)
    flat = Series(START, STEP, *(np.full(96, v) for v in (0.2, 0.1, 1000.0, 0.0)))
    both = Scenario(config, flat, scenario.trips, {"car": 20.0, "car2": 20.0})
    result = simulate(both, SmartCharging(config))
    assert result.grid_w.max() <= 8000.0 + 1e-6
    unc = simulate(both, Uncontrolled(config))
    assert unc.grid_w.max() == pytest.approx(15_000.0)  # a plain wallbox ignores the fuse


class Fixed:
    """A strategy asking for one power at every step."""

    name = "fixed"

    def __init__(self, power_w: float) -> None:
        self.power_w = power_w

    def decide(self, info: InformationModel) -> Decision:
        return Decision((self.power_w,))


def flat_scenario(load_w: float, pv_w: float, soc: float = 50.0, steps: int = 8) -> Scenario:
    series = Series(
        START, STEP, np.full(steps, 0.4), np.full(steps, 0.1), np.full(steps, load_w), np.full(steps, pv_w)
    )
    return Scenario(tiny_scenario().config, series, (), {"car": soc})


def test_v2h_covers_the_home_and_the_rest_is_v2g() -> None:
    result = simulate(flat_scenario(1000.0, 0.0), Fixed(-4000.0))
    m = compute_metrics(result)
    assert m.discharge_kwh == pytest.approx(8.0)
    assert m.v2h_kwh == pytest.approx(2.0) and m.v2g_kwh == pytest.approx(6.0)
    assert m.export_kwh == pytest.approx(6.0) and m.import_kwh == 0.0
    assert m.energy_cost == pytest.approx(-0.6)
    # Battery side: 8 kWh delivered took 8/0.9 out of the battery.
    assert m.throughput_kwh == pytest.approx(8 / 0.9)
    assert m.degradation_cost == pytest.approx(0.02 * 8 / 0.9)
    assert m.stored_energy_value == pytest.approx(-8 / 0.9 * 0.4)  # the mean import price (above export)
    assert m.total_cost == pytest.approx(m.energy_cost + m.degradation_cost - m.stored_energy_value)
    assert sum(monthly_cost(result).values()) == pytest.approx(m.energy_cost + m.degradation_cost)
    assert step_cost(result).sum() == pytest.approx(m.energy_cost)


def test_discharging_below_the_reserve_is_a_breach_and_arriving_below_it_is_not() -> None:
    result = simulate(flat_scenario(0.0, 0.0, soc=25.0), Fixed(-5000.0))
    m = compute_metrics(result)
    assert m.reserve_breaches > 0
    assert m.lowest_breach_soc_percent is not None and m.lowest_breach_soc_percent < 20.0
    idle = compute_metrics(simulate(flat_scenario(0.0, 0.0, soc=10.0), Fixed(0.0)))
    assert idle.reserve_breaches == 0 and idle.lowest_soc_percent == pytest.approx(10.0)


def test_peak_and_limit_counts() -> None:
    m = compute_metrics(simulate(flat_scenario(12_000.0, 0.0), Fixed(7000.0)))
    assert m.peak_import_kw == pytest.approx(19.0)
    assert m.import_limit_exceeded_steps == 8


def test_run_point_applies_config_and_option_overrides() -> None:
    scenario = tiny_scenario(days=1)
    out = run_point(scenario, "uncontrolled", {"reserve_percent": 30, "forecast": "oracle"}, RunOptions())
    assert out["overrides"] == {"reserve_percent": 30, "forecast": "oracle"}
    assert out["metrics"]["strategy"] == "uncontrolled" and out["metrics"]["steps"] == 96


def test_departure_time_in_the_plant_matches_the_trip() -> None:
    scenario = tiny_scenario()
    plant = Plant(scenario)
    trip = scenario.scheduled_trips[0]
    assert scenario.series.time_at(trip.depart_index) == START + timedelta(hours=7)
    assert plant.away[0, trip.depart_index] and not plant.away[0, trip.depart_index - 1]


# ------------------------------------------------------------------ inside a step

AC: dict[str, Any] = {"chargers__0__min_current_a": 6.0}  # the tiny box at 6 A: 4.14 kW minimum on 3 phases


def test_ceiling_breaches_count_an_overshoot_and_not_a_car_that_arrives_full() -> None:
    # Max SoC 90 % = 36 kWh; from 88 % at 7 kW (1.575 kWh a step) the car passes it and fills up.
    over = compute_metrics(simulate(flat_scenario(0.0, 0.0, soc=88.0), Fixed(7000.0)))
    assert over.ceiling_breaches == 4  # 36.775, 38.35, 39.925, then 40 (full)
    assert over.ceiling_excess_kwh_max == pytest.approx(4.0)
    assert over.reserve_breaches == 0
    for power in (0.0, -1000.0):  # above the ceiling from the start, never charged
        full = compute_metrics(simulate(flat_scenario(0.0, 0.0, soc=95.0), Fixed(power)))
        assert full.ceiling_breaches == 0 and full.ceiling_excess_kwh_max == 0.0
    below = compute_metrics(simulate(flat_scenario(0.0, 0.0, soc=50.0), Fixed(7000.0)))
    assert below.ceiling_breaches == 0  # 50 % + 8 x 1.575 kWh ends at 81.5 %


class Pulsed:
    """A V2G car discharging at the 4.14 kW minimum for the first quarter of every step."""

    name = "pulsed"

    def decide(self, info: InformationModel) -> Decision:
        return Decision((-1035.0,), pieces=(((0.0, -4140.0, 3), (225.0, 0.0, 3)),))


def ac_flat_scenario(load_w: float, soc: float = 50.0, steps: int = 8) -> Scenario:
    flat = flat_scenario(load_w, 0.0, soc, steps)
    return Scenario(tiny_scenario(**AC).config, flat.series, (), {"car": soc})


def test_metrics_count_the_flows_inside_the_step_not_the_netted_average() -> None:
    result = simulate(ac_flat_scenario(1000.0), Pulsed())
    m = compute_metrics(result)
    steps = 8
    # Netted per step the grid shows -35 W: no import and 8.75 Wh of export a step.
    assert result.grid_w.tolist() == pytest.approx([-35.0] * steps)
    assert m.import_kwh == pytest.approx(steps * 11 / 60)  # the load, 11 minutes a step
    export_step = (3 * 3.14 + 2.105) / 60
    assert m.export_kwh == pytest.approx(steps * export_step)
    assert m.import_cost == pytest.approx(0.4 * m.import_kwh)
    assert m.energy_cost == pytest.approx(0.4 * m.import_kwh - 0.1 * m.export_kwh)
    assert m.discharge_kwh == pytest.approx(steps * 4.14 * 225 / 3600)
    assert m.v2h_kwh == pytest.approx(steps * 4 * 1.0 / 60)  # the 1 kW home during the 4 minutes
    assert m.v2g_kwh == pytest.approx(m.export_kwh)
    assert m.peak_export_kw == pytest.approx(3.14) and m.peak_import_kw == pytest.approx(1.0)
    assert result.import_kwh.sum() == pytest.approx(m.import_kwh)
    assert result.power_1min_w.shape == (1, steps * 15) and result.minutes_per_step == 15
    assert step_cost(result).sum() == pytest.approx(m.energy_cost)


def sub_minimum_minutes(result: object, min_w: float) -> npt.NDArray[np.int_]:
    """Per step, the minutes a car ran between 0 and the charger's minimum (a pulse's last minute)."""
    from sim.engine import SimResult

    assert isinstance(result, SimResult)
    minutes = np.abs(result.power_1min_w[0]).reshape(-1, result.minutes_per_step)
    out: npt.NDArray[np.int_] = ((minutes > 1e-6) & (minutes < min_w - 1e-6)).sum(axis=1)
    return out


def test_uncontrolled_delivers_its_last_small_step_as_a_pulse_at_the_minimum() -> None:
    scenario = tiny_scenario(days=1, soc=50.0, **AC)
    result = simulate(scenario, Uncontrolled(scenario.config))
    requested = result.requested_w[0]
    small = np.flatnonzero((requested > 0) & (requested < 4140.0))
    assert small.size > 0  # the last step before the target needs less than the minimum
    for k in small:
        minutes = result.power_1min_w[0, 15 * k : 15 * (k + 1)]
        on = minutes > 0
        assert minutes[0] == 4140.0 and on[: np.argmin(on)].all() and not on[np.argmin(on) :].any()
        # The pulse delivers the step's average to the second (within 1 s at 4.14 kW).
        assert abs(minutes.mean() - requested[k]) <= 4140.0 / 900 + 1e-9
    assert (sub_minimum_minutes(result, 4140.0) <= 1).all()
    assert compute_metrics(result).departure_shortfalls == 0


def test_step_delivery_pulses_below_the_lowest_minimum_and_carries_the_rounding() -> None:
    config = tiny_config(chargers__0__min_current_a=6.0)
    delivery = StepDelivery(config, 900)
    train = delivery.train(0, [1000.0, 1000.0, 1000.0, 5000.0, -1000.0, 0.0])
    on_s = [p[1][0] for p in train[:3] if p is not None]
    assert sum(on_s) == round(3 * 1000.0 / 4140.0 * 900)  # carried: exact over the run
    assert train[0] is not None and train[0][0] == (0.0, 4140.0, 3)
    assert train[3] == ((0.0, 5000.0, 3),)
    assert train[4] is not None and train[4][0] == (0.0, -4140.0, 3)
    assert train[5] == ((0.0, 0.0, 3),)
    assert delivery.pieces(0, 1000.0) == ((0.0, 4140.0, 3), (217.0, 0.0, 3))
    switching = StepDelivery(
        tiny_config(chargers__0__min_current_a=6.0, chargers__0__phase_switching=True), 900
    )
    assert switching.pieces(0, 2000.0) == ((0.0, 2000.0, 1),)  # one phase runs it continuously
    assert switching.pieces(0, 690.0) == ((0.0, 1380.0, 1), (450.0, 0.0, 1))
    assert switching.pieces(0, 7000.0) == ((0.0, 7000.0, 3),)


def test_perfect_replays_its_plan_as_the_charger_can_run_it() -> None:
    scenario = tiny_scenario(days=2, soc=50.0, **AC)
    result = run_strategy(scenario, "perfect")
    assert (sub_minimum_minutes(result, 4140.0) <= 1).all()
    requested = result.requested_w[0]
    plugged = result.plugged_in[0]
    # Each step delivers its planned average to within a second of pulse (or the battery's edge).
    delivered = result.power_1min_w[0].reshape(-1, 15).mean(axis=1)
    close = np.abs(delivered - requested) <= 4140.0 / 900 + 1e-6
    assert close[plugged].mean() > 0.95
    assert compute_metrics(result).reserve_breaches == 0


class HandSchedules:
    """A dispatcher that sends one schedule at the first step and nothing after it."""

    def __init__(self, schedule: ChargerSchedule) -> None:
        self.schedule = schedule
        self.calls = 0

    def dispatch(self, inputs: object) -> list[ChargerCommand]:
        self.calls += 1
        send = self.calls == 1
        return [ChargerCommand("wb", "car", 4140.0, self.schedule, send)]

    def forget(self, charger_id: str) -> None:
        pass


def test_mpc_holds_the_last_schedule_sent_and_its_later_periods_run() -> None:
    scenario = tiny_scenario(days=1, soc=50.0, **AC)
    periods = (
        SchedulePeriod(timedelta(0), 4140.0, 7000.0, 5000.0),
        SchedulePeriod(timedelta(seconds=225), 0.0, 7000.0, 5000.0),
        SchedulePeriod(timedelta(minutes=15), 7000.0, 7000.0, 5000.0),
        SchedulePeriod(timedelta(minutes=30), -2000.0, 7000.0, 5000.0),
        SchedulePeriod(timedelta(minutes=40), -5000.0, 7000.0, 5000.0),
    )
    schedule = ChargerSchedule("wb", START, START + timedelta(minutes=50), periods)
    strategy = ModelPredictiveControl(scenario.config)
    strategy.dispatcher = HandSchedules(schedule)  # type: ignore[assignment]
    result = simulate(scenario, strategy)
    requested = result.requested_w[0]
    assert requested[:4].tolist() == pytest.approx(
        [1035.0, 7000.0, (-2000.0 * 10 - 5000.0 * 5) / 15, -5000.0 / 3]
    )
    assert (requested[4:] == 0.0).all()  # after valid_until: nothing
    minutes = result.power_1min_w[0]
    assert minutes[:3].tolist() == [4140.0] * 3 and minutes[3] == pytest.approx(4140.0 * 0.75)
    assert minutes[15:30].tolist() == [7000.0] * 15
    assert minutes[30:40].tolist() == [0.0] * 10  # -2 kW is below the 4.14 kW minimum: paused
    assert minutes[40:50].tolist() == [-5000.0] * 10
    assert (minutes[50:] == 0.0).all()  # valid until 50 minutes after it was sent


def test_a_held_schedule_in_one_step() -> None:
    now = START + timedelta(minutes=10)
    periods = (
        SchedulePeriod(timedelta(0), 5000.0, 7000.0),
        SchedulePeriod(timedelta(minutes=10), 4140.0, 7000.0),
        SchedulePeriod(timedelta(minutes=10, seconds=225), 0.0, 7000.0),
        SchedulePeriod(timedelta(minutes=25), 7000.0, 7000.0),
    )
    schedule = ChargerSchedule("wb", START, now + timedelta(minutes=20), periods, phases=1)
    first = schedule_in_step(schedule, now, STEP)
    assert first == ((0.0, 4140.0, 1), (225.0, 0.0, 1))
    assert average_w(first, 900.0) == pytest.approx(1035.0)
    second = schedule_in_step(schedule, now + STEP, STEP)
    assert second == ((0.0, 7000.0, 1), (300.0, 0.0, 1))  # valid until 5 minutes into the step
    assert average_w(second, 900.0) == pytest.approx(7000.0 / 3)
    assert schedule_in_step(schedule, now + 2 * STEP, STEP) is None
    assert schedule_in_step(None, now, STEP) is None and average_w(None, 900.0) == 0.0


def test_mpc_on_an_ac_box_runs_the_dispatchers_pulses_inside_the_step() -> None:
    result = run_strategy(tiny_scenario(days=2, soc=50.0, **AC), "mpc")
    requested = np.abs(result.requested_w[0])
    assert ((requested > 0) & (requested < 4140.0)).any()  # the plan asked for less than the minimum
    assert (sub_minimum_minutes(result, 4140.0) <= 1).all()  # delivered as pulses, never in between
    netted = np.maximum(result.grid_w, 0.0) * 0.25 / 1000.0
    assert (result.import_kwh >= netted - 1e-12).all()
    assert result.import_kwh.sum() > netted.sum() + 0.1  # pulses over PV import inside the step
    m = compute_metrics(result)
    assert m.reserve_breaches == 0 and m.ceiling_breaches == 0 and m.departure_shortfalls == 0
