"""Many cars on one grid connection: the fast path keeps the monolithic LP's optimum.

The cars are coupled only through the site's rows (balance, grid caps, pulses, V2G permission).
Whatever makes large sites faster must keep the optimum of the one LP that CVXPY solves from the
model: these tests compare both on random multi-car snapshots, warm re-plans included, with the
import cap binding in some steps. The benchmark's own site must also stay a valid config at every
size it measures.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import threading
import time
from datetime import timedelta
from typing import Any

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp

from benchmarks.bench_optimizer import World, import_limit_kw, site_config
from controller.config import SiteConfig
from controller.optimizer import Planner, solve_path
from controller.optimizer import decompose as decompose_module
from controller.optimizer import planner as planner_module
from controller.optimizer.decompose import USABLE_GAP, BlockSplit
from controller.optimizer.fallback import Schedule
from controller.optimizer.model import vehicle_of_columns
from controller.optimizer.planner import _solved as planner_status
from controller.optimizer.planner import netted
from controller.snapshot import Snapshot
from tests.test_battery_lp import battery
from tests.test_capacity_tariff import with_tariff
from tests.test_optimizer_helpers import T0, site, snapshot, vehicle

CARS = 12
STEPS = 96
IMPORT_KW = 40.0  # far below 12 cars x 11 kW: the cap binds whenever the cars want to charge


def fleet_site() -> SiteConfig:
    cars = [
        vehicle(
            f"ev{i}",
            capacity_kwh=[40.0, 58.0, 77.0][i % 3],
            v2g=i % 3 != 2,
            v2h=i % 4 != 3,
            reserve_percent=[20.0, 30.0][i % 2],
        )
        for i in range(CARS)
    ]
    return site(cars, import_kw=IMPORT_KW, export_kw=30.0)


def fleet_snapshot(rng: np.random.Generator, **extra: Any) -> Snapshot:
    hours = np.arange(STEPS) / 4
    price = 0.25 + 0.12 * np.sin(2 * np.pi * (hours - 12) / 24) + 0.05 * rng.standard_normal(STEPS)
    cars: list[dict[str, Any]] = []
    for i in range(CARS):
        car: dict[str, Any] = {
            "id": f"ev{i}",
            "soc_percent": float(rng.uniform(10, 90)),
            "plugged_in": bool(rng.random() < 0.9),
            "departure": {
                "at": T0 + timedelta(minutes=15 * int(rng.integers(8, STEPS + 16))),
                "target_soc_percent": float(rng.uniform(50, 90)),
            },
        }
        cars.append(car)
    return snapshot(
        STEPS,
        cars,
        time=T0 + timedelta(minutes=int(rng.integers(0, 15))),
        load_w=rng.uniform(500, 8000, STEPS),
        pv_w=np.maximum(0, 20000 * np.sin(2 * np.pi * (hours - 8) / 24)),
        import_price=price,
        export_price=price - rng.uniform(0, 0.15, STEPS),
        import_limit_w=np.where(rng.random(STEPS) < 0.25, 0.5e3 * IMPORT_KW, 1e3 * IMPORT_KW),
        **extra,
    )


def monolithic_objective(planner: Planner) -> float:
    """The one LP of the whole site, solved from scratch by CVXPY (warm start off)."""
    assert planner.model is not None and planner.last_inputs is not None
    planner.model.set_inputs(planner.last_inputs)
    problem: Any = planner.model.problem
    value = problem.solve(solver=cp.HIGHS, warm_start=False)
    assert problem.status == cp.OPTIMAL
    return float(value)


@pytest.mark.parametrize("decompose", [False, True], ids=["monolithic", "decomposed"])
def test_many_cars_keep_the_monolithic_optimum_with_a_binding_grid_cap(decompose: bool) -> None:
    rng = np.random.default_rng(20)
    planner = Planner(fleet_site(), decompose=decompose, time_limit_s=60.0)
    cap_bound = 0
    for _ in range(4):
        snap = fleet_snapshot(rng)
        plan = planner.plan(snap)
        assert plan.solver_status == "optimal" and plan.objective is not None
        reference = monolithic_objective(planner)
        assert abs(plan.objective - reference) <= 1e-4 * max(1.0, abs(reference))
        cap_w = np.asarray(snap.import_limit_w, dtype=float)[:STEPS]
        cap_bound += int(np.sum(np.asarray(plan.grid_import_w) >= cap_w - 1.0))
    assert cap_bound > 0, "the import cap never bound: the test would not cover the coupling"


@pytest.mark.parametrize("decompose", [False, True], ids=["monolithic", "decomposed"])
def test_rolling_re_plans_of_a_fleet_keep_the_optimum(decompose: bool) -> None:
    """Warm re-plans as time moves on (the shape the daemon uses) against cold monolithic solves."""
    world = World(CARS, seed=5)
    planner = Planner(site_config(CARS), decompose=decompose, time_limit_s=60.0)
    for k in range(4):
        plan = planner.plan(world.snapshot(5 * k))
        world.drift()
        assert plan.solver_status == "optimal" and plan.objective is not None
        reference = monolithic_objective(planner)
        assert abs(plan.objective - reference) <= 1e-4 * max(1.0, abs(reference))


@pytest.mark.parametrize("vehicles", [1, 10, 200, 500])
def test_benchmark_sites_are_valid_configs_at_every_size(vehicles: int) -> None:
    cfg = site_config(vehicles)
    assert len(cfg.vehicles) == vehicles
    assert import_limit_kw(vehicles) <= 1000.0
    snap = World(vehicles, seed=1, steps=192).snapshot(0)
    assert len(snap.load_w) == 192 and len(snap.vehicles) == vehicles


# ------------------------------------------------------------ decomposition on the site rows


def fleet_with_battery_and_capacity_tariff() -> SiteConfig:
    """Site columns beyond the grid's: a controllable home battery and the capacity peak."""
    config = with_tariff(fleet_site())
    return config.model_copy(update={"home_batteries": [battery()]})


def test_decomposition_keeps_the_optimum_with_a_home_battery_and_a_capacity_tariff() -> None:
    rng = np.random.default_rng(7)
    config = fleet_with_battery_and_capacity_tariff()
    decomposed = Planner(config, decompose=True, time_limit_s=60.0)  # many rounds with these: see docs
    monolithic = Planner(config, decompose=False)
    for _ in range(3):
        snap = fleet_snapshot(rng, home_batteries=[{"id": "bat", "soc_percent": float(rng.uniform(10, 90))}])
        plan, reference = decomposed.plan(snap), monolithic.plan(snap)
        assert plan.solver_status == "optimal" and plan.objective is not None
        assert reference.objective is not None
        assert abs(plan.objective - reference.objective) <= 1e-4 * max(1.0, abs(reference.objective))
        assert "bat" in plan.batteries
        lp = decomposed._lp
        assert lp is not None and lp.decomposed is not None and lp.decomposed.rounds >= 1


def test_the_split_puts_every_row_with_two_cars_or_a_site_column_in_the_master() -> None:
    planner = Planner(fleet_site(), decompose=True)
    planner.plan(fleet_snapshot(np.random.default_rng(1)))
    assert planner.model is not None and planner._lp is not None
    lp = planner._lp
    owner = vehicle_of_columns(planner.model, lp.n_cols, lp.columns_of)
    split = BlockSplit.of(lp._layout.kept_matrix, owner)
    assert split.n_blocks == CARS
    rows = sp.csr_array(lp._layout.kept_matrix)
    for r in split.link_rows[:50]:
        cols = rows.indices[rows.indptr[r] : rows.indptr[r + 1]]
        assert len(set(owner[cols].tolist())) > 1 or (owner[cols] < 0).all()
    for r, car in zip(split.block_rows, split.block_of_row, strict=True):
        cols = rows.indices[rows.indptr[r] : rows.indptr[r + 1]]
        assert set(owner[cols].tolist()) == {car}
    # 96 balance rows, the grid's pulse rows and the own-use cap couple the cars
    assert STEPS <= len(split.link_rows) <= 5 * STEPS


def test_a_proposal_column_holds_the_cars_site_row_sums_then_its_convexity_entry() -> None:
    """The master's proposal columns, gathered from the pattern, equal the sparse product they
    replace: per car, the site rows' matrix times its schedule, and a 1 in its convexity row."""
    rng = np.random.default_rng(4)
    n_link, cars = 7, 5
    block_of_col = np.repeat(np.arange(cars), 6)
    link = sp.random_array((n_link, len(block_of_col)), density=0.3, rng=rng, format="csc")
    link = sp.csc_array(link.toarray() * (block_of_col != 2))  # car 2 touches no site row
    link.sort_indices()
    columns = decompose_module._ProposalColumns(link, block_of_col, cars)
    x = rng.normal(size=len(block_of_col))
    chosen = np.array([0, 2, 4])
    indptr, indices, data = columns.of(link.data, x, chosen)
    got = sp.csc_array((data, indices, indptr), shape=(n_link + cars, len(chosen))).toarray()
    per_car = sp.csc_array((x, (np.arange(len(x)), block_of_col)), shape=(len(x), cars))
    expected = np.vstack([(link @ per_car).toarray(), np.eye(cars)])[:, chosen]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert np.diff(indptr).tolist() == [int((got[:, k] != 0).sum()) for k in range(len(chosen))]
    assert len(columns.of(link.data, x, np.zeros(0, dtype=np.int64))[2]) == 0


def test_a_decomposed_solve_cut_short_is_the_best_plan_found_once_it_is_close_enough() -> None:
    rng = np.random.default_rng(3)
    planner = Planner(fleet_site(), decompose=True)
    optimal = planner.plan(fleet_snapshot(rng))
    assert optimal.objective is not None
    lp = planner._lp
    assert lp is not None and lp.decomposed is not None
    seen_far = seen_close = False
    for rounds in range(1, 40):
        lp.decomposed.forget()  # cold, so that the first rounds cannot prove the optimum
        lp.decomposed.max_rounds = rounds  # cut as the time limit would, deterministically
        result = lp.solve(decomposed=True)
        if result.status == "kOptimal":
            break
        assert result.gap > 0.0
        if result.gap > USABLE_GAP:
            # Too far from the optimum: the plan would be the fallback.
            assert not result.optimal and result.x is None
            seen_far = True
            continue
        assert result.optimal and result.x is not None
        assert result.objective >= optimal.objective - 1e-6 * abs(optimal.objective)
        assert result.objective <= optimal.objective + result.gap * max(1.0, abs(result.objective)) + 1e-6
        assert planner_status(result).startswith("time limit: best plan found, within")
        seen_close = True
    assert seen_close, "no round count gave a usable plan short of the optimum"
    assert seen_far, "the first rounds were already within the usable gap: the fallback side is untested"
    assert planner_status(dataclasses.replace(result, status="kOptimal")) == "optimal"


def test_a_plan_out_of_time_after_a_burn_keeps_the_net_power_rather_than_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass that asks to re-solve without charge and discharge in one step, and no time left:
    the cars' net power is the plan (their energy re-run through the battery chain)."""
    rng = np.random.default_rng(8)
    planner = Planner(fleet_site())
    planner.plan(fleet_snapshot(rng))

    def burn_and_run_out(inputs: Any, schedule: Any, pass_no: int) -> bool:
        schedule.charge_kw[0, 1] += 2.0
        schedule.discharge_kw[0, 1] += 2.0
        time.sleep(0.6)  # the next pass has no time left
        return True

    monkeypatch.setattr(planner_module, "_fix_direction", burn_and_run_out)
    planner.time_limit_s = 0.5
    plan = planner.plan(fleet_snapshot(rng))
    assert not plan.fallback
    assert plan.solver_status == "optimal; charge and discharge in one step netted"


def test_netting_keeps_the_net_power_and_re_runs_the_energy() -> None:
    planner = Planner(fleet_site())
    inputs = planner.inputs(fleet_snapshot(np.random.default_rng(9)))
    n, t = len(planner.shape.vehicles), planner.shape.steps
    charge, discharge, v2l = np.zeros((n, t)), np.zeros((n, t)), np.zeros((n, t))
    charge[0, :4], discharge[0, :4] = 5.0, 3.0
    discharge[1, 2] = 4.0
    out = netted(Schedule(charge, discharge, v2l, np.zeros((n, t))), inputs, planner.shape)
    assert out.charge_kw[0, :4] == pytest.approx(2.0) and out.discharge_kw[0, :4] == pytest.approx(0.0)
    assert out.discharge_kw[1, 2] == pytest.approx(4.0)
    c = planner.shape.constants
    dt = planner.shape.step_h
    first = inputs.e0_kwh[0] + dt * c.charge_efficiency[0] * 2.0 - inputs.trip_kwh[0, 0]
    assert out.energy_kwh[0, 0] == pytest.approx(first)
    assert out.energy_kwh[2] == pytest.approx(inputs.e0_kwh[2] - np.cumsum(inputs.trip_kwh[2]))


def test_cars_priced_on_several_threads_plan_exactly_as_on_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each car group has its own HiGHS instance and its own slice of a round's arrays: the order
    the threads finish in changes nothing."""
    monkeypatch.setattr(decompose_module, "CARS_PER_INSTANCE", 2)  # 6 groups of the 12 cars
    priced_on: set[str] = set()
    propose = decompose_module._BlockGroup.propose

    def noting_thread(group: Any, cost: Any, x: Any) -> bool:
        priced_on.add(threading.current_thread().name)
        return propose(group, cost, x)

    monkeypatch.setattr(decompose_module._BlockGroup, "propose", noting_thread)
    plans: dict[int, list[tuple[tuple[float, ...], float | None]]] = {}
    for threads in (1, 2):
        monkeypatch.setattr(decompose_module, "PRICING_THREADS", threads)
        rng = np.random.default_rng(11)
        planner = Planner(fleet_site(), decompose=True, time_limit_s=60.0)
        plans[threads] = []
        for _ in range(3):
            plan = planner.plan(fleet_snapshot(rng))
            assert plan.solver_status == "optimal"
            plans[threads].append((plan.grid_import_w, plan.objective))
    assert plans[1] == plans[2]
    assert threading.current_thread().name in priced_on  # one thread: the planner's own
    assert any(name.startswith("pricing") for name in priced_on)  # two: the pool's


def _price_in_child(outcome: Any) -> None:
    outcome.put(decompose_module._pricing_pool().submit(lambda: 42).result(timeout=20))


def test_a_forked_process_prices_on_a_pool_of_its_own() -> None:
    """The parent's pool threads do not exist in a forked child: its pricing must not wait on them."""
    decompose_module._pricing_pool().submit(lambda: None).result()  # the parent's pool, with threads
    context = multiprocessing.get_context("fork")
    outcome = context.Queue()
    child = context.Process(target=_price_in_child, args=(outcome,))
    child.start()
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0 and outcome.get(timeout=1) == 42


def test_a_failing_decomposed_solve_gives_the_fallback_and_the_next_plan_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(4)
    planner = Planner(fleet_site(), decompose=True)
    planner.plan(fleet_snapshot(rng))
    with monkeypatch.context() as patch:
        patch.setattr(decompose_module._BlockGroup, "propose", lambda self, cost, x: False)
        failed = planner.plan(fleet_snapshot(rng))
    assert failed.fallback and "block LP" in failed.solver_status
    recovered = planner.plan(fleet_snapshot(rng))
    assert recovered.solver_status == "optimal" and not recovered.fallback


def test_a_large_site_decomposes_only_the_plans_where_enough_cars_can_act(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Few cars home on a large site under a binding cap: the decomposition needs many rounds
    (its master must mix many schedules of few cars), the one LP is fast; many cars home: the
    other way round. The planner picks per plan, by the cars that can charge or discharge."""
    monkeypatch.setattr(solve_path, "DECOMPOSE_FROM_ACTIVE", 6)
    rng = np.random.default_rng(8)
    planner = Planner(fleet_site(), time_limit_s=60.0)
    paths = []
    for home in (3, 10, 12, 2, 9):
        snap = fleet_snapshot(rng)
        cars = [
            car.model_copy(update={"plugged_in": i < home, "away": []}) for i, car in enumerate(snap.vehicles)
        ]
        plan = planner.plan(snap.model_copy(update={"vehicles": cars}))
        paths.append(planner.path.last_decomposed)
        assert plan.solver_status == "optimal" and plan.objective is not None
        reference = monolithic_objective(planner)
        assert abs(plan.objective - reference) <= 1e-4 * max(1.0, abs(reference))
    assert paths == [False, True, True, False, True]
    assert Planner(fleet_site(), decompose=False).plan(snap).solver_status == "optimal"
    forced = Planner(fleet_site(), decompose=True, time_limit_s=60.0)
    forced.plan(
        snap.model_copy(
            update={"vehicles": cars[:0] + [c.model_copy(update={"plugged_in": False}) for c in cars]}
        )
    )
    assert forced.path.last_decomposed


def test_a_site_below_the_threshold_never_builds_the_decomposition() -> None:
    planner = Planner(fleet_site())
    planner.plan(fleet_snapshot(np.random.default_rng(3)))
    assert planner._lp is not None and not planner._lp.can_decompose and not planner.path.last_decomposed


def test_the_site_paths_benchmark_plugs_in_the_cars_it_says_under_its_cap() -> None:
    from benchmarks import bench_site_paths

    snaps = bench_site_paths.snapshots(12, 3, 4.0)
    assert len(snaps) == bench_site_paths.PLANS
    for snap in snaps:
        assert [car.plugged_in for car in snap.vehicles] == [True] * 3 + [False] * 9
        assert set(snap.import_limit_w or []) == {20_000.0}
    cells = bench_site_paths.run_case(12, 3, 4.0, None)
    assert len(cells) == bench_site_paths.PLANS and all("one optimal" in cell for cell in cells)
