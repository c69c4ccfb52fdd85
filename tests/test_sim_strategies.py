"""Each strategy on a tiny scenario, and the metrics that judge them."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from controller.config import parse_config
from sim.baselines import SmartCharging, Uncontrolled
from sim.engine import Decision, simulate
from sim.information import InformationModel
from sim.metrics import compute_metrics, monthly_cost, saving_share, step_cost
from sim.plant import Plant
from sim.runner import RunOptions, run_point, run_strategy
from sim.scenario import Scenario, Series
from tests.test_sim_support import START, STEP, TINY_SITE, tiny_scenario


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
    assert m.reserve_breaches == 0
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
