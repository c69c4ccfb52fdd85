"""Many cars on one grid connection: the fast path keeps the monolithic LP's optimum.

The cars are coupled only through the site's rows (balance, grid caps, pulses, V2G permission).
Whatever makes large sites faster must keep the optimum of the one LP that CVXPY solves from the
model: these tests compare both on random multi-car snapshots, warm re-plans included, with the
import cap binding in some steps. The benchmark's own site must also stay a valid config at every
size it measures.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import cvxpy as cp
import numpy as np
import pytest

from benchmarks.bench_optimizer import World, import_limit_kw, site_config
from controller.config import SiteConfig
from controller.optimizer import Planner
from controller.snapshot import Snapshot
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


def fleet_snapshot(rng: np.random.Generator) -> Snapshot:
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
    )


def monolithic_objective(planner: Planner) -> float:
    """The one LP of the whole site, solved from scratch by CVXPY (warm start off)."""
    assert planner.model is not None and planner.last_inputs is not None
    planner.model.set_inputs(planner.last_inputs)
    problem: Any = planner.model.problem
    value = problem.solve(solver=cp.HIGHS, warm_start=False)
    assert problem.status == cp.OPTIMAL
    return float(value)


def test_many_cars_keep_the_monolithic_optimum_with_a_binding_grid_cap() -> None:
    rng = np.random.default_rng(20)
    planner = Planner(fleet_site())
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


def test_rolling_re_plans_of_a_fleet_keep_the_optimum() -> None:
    """Warm re-plans as time moves on (the shape the daemon uses) against cold monolithic solves."""
    world = World(CARS, seed=5)
    planner = Planner(site_config(CARS))
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
