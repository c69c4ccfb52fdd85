"""Optimiser speed for 96 steps (24 h of 15 minutes) with 1, 10 and 50 vehicles.

For each size, in a fresh process (so peak memory is per size):

* first build + solve: ``Planner(config)`` and its first ``plan()`` (CVXPY canonicalisation,
  compiling the LP, a cold HiGHS solve);
* re-solve: ``planner.plan(snapshot)`` over varied snapshots, split by ``Planner.last_timings``:
  ``resolve`` = parameter update + solve + the solution read back into setpoint and energy arrays;
  ``+plan`` = that plus the ``Plan`` built from them (grid, totals, SoC, reasons); ``plan()`` = the
  whole call, snapshot translation included. Median and p95, with the solver's own time beside
  them: the wall time of HiGHS ``run()`` alone (its warm dual simplex and its own per-run setup),
  nothing of ours. Two sequences: "rolling" (a daemon re-planning every 5 minutes as time moves on
  and forecasts change) and "random" (unrelated snapshots);
* CVXPY's own DPP re-solve: set the parameters, ``problem.solve(solver=HIGHS)``;
* rebuild: a new model and ``problem.solve()`` for every snapshot (no parameter reuse);
* peak RSS of the process.

Then one perfect-foresight solve over a year (35,040 steps, one vehicle, 365 trips).

    .venv/bin/python benchmarks/bench_optimizer.py [--snapshots 50] [--sizes 1,10,50] [--no-year]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from controller.config import SiteConfig, parse_config  # noqa: E402
from controller.snapshot import Snapshot  # noqa: E402

STEPS = 96
T0 = datetime(2025, 3, 3, 16, 0, tzinfo=UTC)


def site_config(vehicles: int) -> SiteConfig:
    """A site with ``vehicles`` cars on their own chargers: 2 of 3 V2G, the rest V2H only."""
    return parse_config(
        {
            "site": {
                "grid": {"import_limit_kw": max(17.3, 6.0 * vehicles), "export_limit_kw": 4.0 * vehicles + 6}
            },
            "chargers": [
                {"id": f"wb{i}", "max_charge_kw": 11, "max_discharge_kw": 10, "bidirectional": True}
                for i in range(vehicles)
            ],
            "vehicles": [
                {
                    "id": f"ev{i}",
                    "usable_capacity_kwh": [40, 58, 64, 77, 82][i % 5],
                    "max_discharge_kw": 10,
                    "home_charger": f"wb{i}",
                    "reserve": {"percent": 20},
                    "max_soc_percent": 90,
                    "permissions": {"v2g": i % 3 != 2, "v2h": True, "v2l": True},
                }
                for i in range(vehicles)
            ],
            "tariff": {"import": {"static_price_per_kwh": 0.3}},
        },
        env={},
    )


class World:
    """Forecasts and cars that evolve like a real site's, for rolling or random snapshots."""

    def __init__(self, vehicles: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.vehicles = vehicles
        days = 4
        hours = np.arange(days * 96) / 4
        self.price = (
            0.27
            + 0.10 * np.sin(2 * np.pi * (hours - 13) / 24)
            + 0.05 * np.sin(2 * np.pi * (hours - 4) / 12)
            + 0.02 * self.rng.standard_normal(days * 96)
        )
        self.load = (
            vehicles
            * (400 + 300 * (1 + np.sin(2 * np.pi * (hours - 15) / 24)))
            * self.rng.uniform(0.7, 1.3, days * 96)
        )
        self.pv = vehicles * np.maximum(0, 1500 * np.sin(2 * np.pi * (hours + 16 - 7) / 24))
        self.soc = self.rng.uniform(25, 85, vehicles)
        self.plugged = self.rng.random(vehicles) < 0.9
        self.departure_h = self.rng.uniform(13, 18, vehicles)  # 05:00-10:00 next morning, from 16:00

    def snapshot(self, minutes: int) -> Snapshot:
        now = T0 + timedelta(minutes=minutes)
        first = minutes // 15
        window = slice(first, first + STEPS)
        noise = self.rng.normal(1.0, 0.05, STEPS)
        cars = []
        for i in range(self.vehicles):
            state: dict[str, Any] = {
                "id": f"ev{i}",
                "soc_percent": float(self.soc[i]),
                "plugged_in": bool(self.plugged[i]),
                "departure": {
                    "at": T0 + timedelta(hours=float(self.departure_h[i]) + 24 * (minutes // 1440)),
                    "target_soc_percent": 80.0,
                },
            }
            if i % 7 == 3:
                state["away"] = [
                    {
                        "depart": T0 + timedelta(hours=2),
                        "arrive": T0 + timedelta(hours=4),
                        "energy_kwh": 6.0,
                    }
                ]
            if i % 11 == 5:
                state["v2l"] = {
                    "start": T0 + timedelta(hours=1),
                    "end": T0 + timedelta(hours=3),
                    "power_w": 1500,
                }
            cars.append(state)
        imp = self.price[window] + 0.01 * self.rng.standard_normal(STEPS)
        return Snapshot.model_validate(
            {
                "time": now,
                "vehicles": cars,
                "load_w": (self.load[window] * noise).tolist(),
                "pv_w": (self.pv[window] * noise).tolist(),
                "import_price_per_kwh": imp.tolist(),
                "export_price_per_kwh": (imp - 0.12).tolist(),
                "import_limit_w": np.where(
                    (np.arange(STEPS) + first) % 96 < 4,
                    0.5e3 * max(17.3, 6.0 * self.vehicles),
                    1e3 * max(17.3, 6.0 * self.vehicles),
                ).tolist(),
            }
        )

    def drift(self) -> None:
        """Five minutes pass: cars charge or drive a little, someone plugs in or out."""
        self.soc = np.clip(self.soc + self.rng.normal(0.3, 0.5, self.vehicles), 5, 95)
        flip = self.rng.random(self.vehicles) < 0.02
        self.plugged = np.where(flip, ~self.plugged, self.plugged)

    def scramble(self) -> None:
        self.soc = self.rng.uniform(5, 95, self.vehicles)
        self.plugged = self.rng.random(self.vehicles) < 0.85
        self.departure_h = self.rng.uniform(1, 30, self.vehicles)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run_size(vehicles: int, count: int) -> dict[str, Any]:
    import cvxpy as cp

    from controller.optimizer import Planner, ScheduleModel

    cfg = site_config(vehicles)
    world = World(vehicles, seed=vehicles)
    rolling = []
    for k in range(count + 1):
        rolling.append(world.snapshot(5 * k))
        world.drift()
    world = World(vehicles, seed=1000 + vehicles)
    random_snaps = []
    for _ in range(count):
        world.scramble()
        random_snaps.append(world.snapshot(5 * int(world.rng.integers(0, 288))))

    started = time.perf_counter()
    planner = Planner(cfg)
    first = planner.plan(rolling[0])
    first_ms = 1000 * (time.perf_counter() - started)
    assert planner._lp is not None
    out: dict[str, Any] = {
        "vehicles": vehicles,
        "snapshots": count,
        "lp_columns": planner._lp.n_cols,
        "lp_rows": planner._lp.n_rows,
        "first_ms": first_ms,
        "first_status": first.solver_status,
    }
    for name, snaps in (("rolling", rolling[1:]), ("random", random_snaps)):
        totals, resolve, built, solver, fallbacks = [], [], [], [], 0
        for snap in snaps:
            t = time.perf_counter()
            plan = planner.plan(snap)
            totals.append(1000 * (time.perf_counter() - t))
            timings = planner.last_timings
            assert timings is not None
            resolve.append(timings.resolve_ms)
            built.append(timings.resolve_ms + timings.build_ms)
            solver.append(timings.solver_ms)
            fallbacks += plan.fallback
        out[name] = {
            "plan_median_ms": statistics.median(totals),
            "plan_p95_ms": _pct(totals, 95),
            "resolve_median_ms": statistics.median(resolve),
            "resolve_p95_ms": _pct(resolve, 95),
            "solver_median_ms": statistics.median(solver),
            "resolve_x": statistics.median(r / s for r, s in zip(resolve, solver, strict=True)),
            "built_median_ms": statistics.median(built),
            "built_x": statistics.median(b / s for b, s in zip(built, solver, strict=True)),
            "plan_x": statistics.median(t / s for t, s in zip(totals, solver, strict=True)),
            "fallbacks": fallbacks,
        }

    # CVXPY's own DPP path, and agreement with the fast path on the same snapshots.
    assert planner.model is not None
    problem: Any = planner.model.problem
    dpp_ms, worst_gap = [], 0.0
    dpp_count = {1: min(count, 20), 10: 5}.get(vehicles, 2)
    for snap in random_snaps[:dpp_count]:
        plan = planner.plan(snap)
        inputs = planner.last_inputs
        assert inputs is not None
        t = time.perf_counter()
        planner.model.set_inputs(inputs)
        value = problem.solve(solver=cp.HIGHS)
        dpp_ms.append(1000 * (time.perf_counter() - t))
        assert plan.objective is not None
        worst_gap = max(worst_gap, abs(value - plan.objective) / max(1.0, abs(value)))
    out["cvxpy_dpp_median_ms"] = statistics.median(dpp_ms)
    out["cvxpy_dpp_count"] = dpp_count
    out["worst_relative_objective_gap"] = worst_gap

    rebuild_count = {1: count, 10: 10}.get(vehicles, 3)
    rebuild_ms = []
    for snap in random_snaps[:rebuild_count]:
        inputs = planner.inputs(snap)
        t = time.perf_counter()
        model = ScheduleModel(planner.shape)
        model.set_inputs(inputs)
        fresh: Any = model.problem
        fresh.solve(solver=cp.HIGHS)
        rebuild_ms.append(1000 * (time.perf_counter() - t))
    out["rebuild_median_ms"] = statistics.median(rebuild_ms)
    out["rebuild_count"] = rebuild_count
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_year() -> dict[str, Any]:
    from controller.optimizer import plan_foresight

    days = 365
    steps = days * 96
    cfg = site_config(1)
    rng = np.random.default_rng(365)
    hours = np.arange(steps) / 4
    price = 0.27 + 0.10 * np.sin(2 * np.pi * (hours - 13) / 24) + 0.03 * rng.standard_normal(steps)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    trips = []
    for d in range(days):
        depart = start + timedelta(days=d, hours=float(rng.uniform(6, 9)))
        trips.append(
            {
                "depart": depart,
                "arrive": depart + timedelta(hours=float(rng.uniform(4, 10))),
                "energy_kwh": float(rng.uniform(4, 20)),
                "target_soc_percent": 75.0,
            }
        )
    snap = Snapshot.model_validate(
        {
            "time": start,
            "vehicles": [{"id": "ev0", "soc_percent": 60.0, "plugged_in": True, "away": trips}],
            "load_w": (400 + 300 * (1 + np.sin(2 * np.pi * (hours - 15) / 24))).tolist(),
            "pv_w": np.maximum(0, 3000 * np.sin(2 * np.pi * (hours - 7) / 24)).tolist(),
            "import_price_per_kwh": price.tolist(),
            "export_price_per_kwh": (price - 0.12).tolist(),
        }
    )
    t = time.perf_counter()
    plan = plan_foresight(cfg, snap)
    total_s = time.perf_counter() - t
    return {
        "steps": steps,
        "trips": len(trips),
        "status": plan.solver_status,
        "total_s": total_s,
        "solver_s": plan.solve_time_ms / 1000,
        "shortfall_kwh": plan.vehicles["ev0"].departure_shortfall_kwh,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False, cwd=ROOT, timeout=1800
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {args} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--snapshots", type=int, default=50)
    parser.add_argument("--sizes", default="1,10,50")
    parser.add_argument("--no-year", action="store_true", help="skip the year-long perfect-foresight solve")
    parser.add_argument("--child-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-year", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_size is not None:
        print(json.dumps(run_size(args.child_size, args.snapshots)))
        return
    if args.child_year:
        print(json.dumps(run_year()))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"optimiser, {STEPS} steps of 15 min, {args.snapshots} snapshots per sequence, times in ms")
    print(
        f"{'vehicles':>8} {'LP cols x rows':>15} {'first':>7} {'sequence':>8} {'plan()':>7} {'p95':>7} "
        f"{'resolve':>7} {'p95':>7} {'+plan':>7} {'solver':>7} {'res/sol':>7} {'+pl/sol':>7} {'plan/sol':>8} "
        f"{'cvxpy':>8} {'rebuild':>8} "
        f"{'peak MB':>7}"
    )
    results = {}
    for n in sizes:
        r = child(["--child-size", str(n), "--snapshots", str(args.snapshots)])
        results[n] = r
        for i, seq in enumerate(("rolling", "random")):
            q = r[seq]
            size = f"{r['lp_columns']} x {r['lp_rows']}"
            head = f"{n:>8} {size:>15} {r['first_ms']:>7.0f}" if i == 0 else " " * 32
            tail = (
                f" {r['cvxpy_dpp_median_ms']:>8.1f} {r['rebuild_median_ms']:>8.1f} {r['peak_rss_mb']:>7.0f}"
                if i == 0
                else ""
            )
            print(
                f"{head} {seq:>8} {q['plan_median_ms']:>7.2f} {q['plan_p95_ms']:>7.2f} {q['resolve_median_ms']:>7.2f} "
                f"{q['resolve_p95_ms']:>7.2f} {q['built_median_ms']:>7.2f} {q['solver_median_ms']:>7.2f} "
                f"{q['resolve_x']:>7.2f} {q['built_x']:>7.2f} {q['plan_x']:>8.2f}"
                + tail
                + (f"  ({q['fallbacks']} fallbacks)" if q["fallbacks"] else "")
            )
    print("first: Planner(config) + first plan() (canonicalisation, LP compile, cold solve)")
    print("plan(): the whole call (snapshot -> Plan with reasons), median and p95")
    print(
        "resolve: parameter update + solver + solution read back into setpoint/energy arrays, median and p95"
    )
    print(
        "+plan: resolve + building the Plan from them (grid, totals, SoC, reasons): plan() minus translation"
    )
    print(
        "solver: wall time of HiGHS run() alone, the solver's own time (warm dual simplex + its per-run setup)"
    )
    print("res/sol, +pl/sol, plan/sol: medians of the per-snapshot ratios to the solver's own time")
    print(
        "cvxpy: set parameters + problem.solve(HIGHS), CVXPY's own DPP re-solve; rebuild: new model + problem.solve();"
        " solves timed: "
        + ", ".join(
            f"{n} veh. {results[n]['cvxpy_dpp_count']} / {results[n]['rebuild_count']}" for n in sizes
        )
    )
    gap = max(r["worst_relative_objective_gap"] for r in results.values())
    print(f"fast path vs problem.solve(): worst relative objective gap {gap:.1e}")
    if 1 in results:
        print(
            f"target 1 vehicle median re-solve <= 3 ms: plan() {results[1]['rolling']['plan_median_ms']:.2f} ms "
            f"rolling, {results[1]['random']['plan_median_ms']:.2f} ms random"
        )
    if 50 in results:
        print(
            f"target 50 vehicles median <= 250 ms: plan() {results[50]['rolling']['plan_median_ms']:.1f} ms "
            f"rolling, {results[50]['random']['plan_median_ms']:.1f} ms random"
        )
    seqs = ("rolling", "random")
    worst_res = max(r[q]["resolve_x"] for r in results.values() for q in seqs)
    worst_built = max(r[q]["built_x"] for r in results.values() for q in seqs)
    worst_plan = max(r[q]["plan_x"] for r in results.values() for q in seqs)
    print(
        f"target re-solve overhead <= 1.5x the solver's own time: worst median re-solve/solver {worst_res:.2f}x "
        f"(with the Plan and its reasons {worst_built:.2f}x, whole plan() {worst_plan:.2f}x)"
    )
    if not args.no_year:
        y = child(["--child-year"])
        print(
            f"perfect foresight, 1 vehicle, {y['steps']} steps (365 days, {y['trips']} trips) in one solve: "
            f"{y['status']}, {y['total_s']:.1f} s total, solver {y['solver_s']:.1f} s, "
            f"shortfall {y['shortfall_kwh']:.2f} kWh, peak {y['peak_rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
