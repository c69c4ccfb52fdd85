"""Benchmark: one year of closed-loop ``mpc`` at 15-minute steps (35,040 plans), and where the time goes.

The year comes from the public data in ../shared/data (Dutch day-ahead prices 2023, a household
load, Dutch PV; see ``sim.public_data``). Without that folder the benchmark says so and exits with
status 2; ``--synthetic`` runs a year from the seeded generators instead (not comparable with the
public-data figures). Each step: the information model builds what is known, the daemon's site
builds the planner's Snapshot, the real Planner solves, the real Dispatcher turns the plan into a
setpoint, and the plant applies it.

The time is split three ways: the solver (HiGHS ``run()``), the planner's Python around it
(``Planner.plan`` less the solver) and the simulator's Python (the rest of the loop: information
model, the daemon's snapshot and dispatch path, the plant), then in detail.

    .venv/bin/python benchmarks/bench_sim.py [--days 365] [--repeat 2] [--data-dir DIR] [--synthetic]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from controller.config import load_config  # noqa: E402
from sim.controlled import ModelPredictiveControl  # noqa: E402
from sim.engine import simulate  # noqa: E402
from sim.generators import generate_scenario  # noqa: E402
from sim.metrics import compute_metrics  # noqa: E402
from sim.plant import Plant  # noqa: E402
from sim.public_data import DEFAULT_DATA_DIR, build_public_scenario  # noqa: E402
from sim.runner import RunOptions  # noqa: E402
from sim.scenario import Scenario  # noqa: E402

PUBLIC_FILES = (
    "nl_day_ahead_prices_2015_2023.csv",
    "household_loads_15min_kw.csv",
    "pv_netherlands_2019_kw_per_kwp.csv",
)


class MissingDataError(RuntimeError):
    """The public data the benchmark runs on is not there (and ``--synthetic`` was not given)."""


def missing_public_files(data_dir: Path) -> list[str]:
    return [name for name in PUBLIC_FILES if not (data_dir / name).is_file()]


def scenario_for(days: int, data_dir: Path, synthetic: bool = False) -> Scenario:
    """The public-data year (or ``days`` of it); the seeded synthetic one only when asked for."""
    config = load_config(ROOT / "sim" / "examples" / "home.yaml")
    if synthetic:
        return generate_scenario(config, datetime(2023, 1, 1, tzinfo=UTC), days, seed=1)
    missing = missing_public_files(data_dir)
    if missing:
        raise MissingDataError(
            f"no public data in {data_dir} (missing {', '.join(missing)}): see ../shared/data/README.md, "
            "pass --data-dir, or --synthetic for a generated year (figures not comparable)"
        )
    return build_public_scenario(
        config, data_dir, 2023, "dynamic", "house_21", 3500.0, 4.0, days=None if days >= 365 else days
    )


def time_split(wall_s: float, solver_s: float, plan_s: float) -> list[tuple[str, float]]:
    """Solver, the planner's Python around it, and the simulator's Python (all the rest)."""
    return [
        ("solver (HiGHS run)", solver_s),
        ("planner Python (Planner.plan less the solver)", plan_s - solver_s),
        ("simulator Python (information, site snapshot, dispatch, plant, loop)", wall_s - plan_s),
    ]


def one_run(scenario: Scenario) -> None:
    plant = Plant(scenario)
    info = RunOptions().information(scenario, plant)
    strategy = ModelPredictiveControl(scenario.config)
    started = time.perf_counter()
    result = simulate(scenario, strategy, info=info, plant=plant)
    wall = time.perf_counter() - started
    metrics = compute_metrics(result)
    plan_ms = result.solve_ms[~np.isnan(result.solve_ms)]
    solver_ms = result.solver_ms[~np.isnan(result.solver_ms)]
    parts = [
        ("Planner.plan: solver (HiGHS run)", strategy.solver_s),
        (
            "Planner.plan: re-solve around the solver (parameters, read back)",
            strategy.resolve_s - strategy.solver_s,
        ),
        ("Planner.plan: snapshot -> optimiser arrays", strategy.translate_s),
        ("Planner.plan: arrays -> Plan (reasons)", strategy.build_s),
        (
            "Planner.plan: rest",
            strategy.plan_s - strategy.resolve_s - strategy.translate_s - strategy.build_s,
        ),
        ("Snapshot building + validation (pydantic)", strategy.snapshot_s),
        ("information model (observe: prices, forecasts, trips)", strategy.observe_s),
        ("dispatcher", strategy.dispatch_s),
        ("plant", result.plant_time_s),
    ]
    accounted = sum(seconds for _, seconds in parts)
    parts.append(("engine loop and the rest", wall - accounted))
    print(f"steps {scenario.steps}, plans {len(plan_ms)}, fallbacks {metrics.fallbacks}")
    print(f"wall time {wall:.1f} s ({1000 * wall / scenario.steps:.2f} ms per step)")
    for label, seconds in time_split(wall, strategy.solver_s, strategy.plan_s):
        print(f"  {label:<70} {seconds:7.1f} s  {100 * seconds / wall:5.1f} %")
    print("in detail:")
    print(
        f"Planner.plan per call: median {statistics.median(plan_ms):.2f} ms, "
        f"p95 {np.percentile(plan_ms, 95):.2f} ms, max {plan_ms.max():.1f} ms (first call, with build: "
        f"{plan_ms[0]:.0f} ms)"
    )
    print(f"solver's own time per call: median {statistics.median(solver_ms):.2f} ms")
    for label, seconds in parts:
        print(f"  {label:<66} {seconds:7.1f} s  {100 * seconds / wall:5.1f} %")
    print(
        f"total cost {metrics.total_cost:.2f} {metrics.currency}, reserve breaches {metrics.reserve_breaches}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=2, help="runs (the machine is shared; compare them)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="run a year from the seeded generators instead of the public data",
    )
    args = parser.parse_args(argv)
    try:
        scenario = scenario_for(args.days, args.data_dir, args.synthetic)
    except MissingDataError as exc:
        print(f"bench_sim: {exc}", file=sys.stderr)
        return 2
    print(f"bench_sim: closed-loop mpc over {scenario.name} ({scenario.steps} steps of 15 min)")
    for run in range(1, args.repeat + 1):
        print(f"\nrun {run}/{args.repeat}")
        one_run(scenario)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
