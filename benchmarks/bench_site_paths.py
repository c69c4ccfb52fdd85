"""Benchmark: a large site with few to many cars home under a binding import cap, planned by the one
LP, by decomposition on the site rows, and by the planner's own choice per plan.

The decomposition's master must mix the proposals of the cars that can act to meet the cap step by
step: with many such cars it needs few rounds, with few of them many. The planner therefore counts
the cars that can charge or discharge in the horizon (``solve_path.DECOMPOSE_FROM_ACTIVE``), not the
cars configured. Site: the optimiser benchmark's cars (``bench_optimizer.World``), ``--cars``
configured, the building's own load a few homes' worth, no PV, the cap at ``--kw-per-car`` per car
home (at least 20 kW); three plans 5 minutes apart per case, the default 2 s budget.

    .venv/bin/python benchmarks/bench_site_paths.py [--cars 160] [--home 5,20,100,150]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_optimizer import World, site_config  # noqa: E402
from controller.optimizer import Planner  # noqa: E402
from controller.snapshot import Snapshot  # noqa: E402

PLANS = 3
PATHS = {"one LP": False, "decomposed": True, "planner's choice": None}


def snapshots(cars: int, home: int, kw_per_car: float) -> list[Snapshot]:
    world = World(cars, seed=3)
    world.load[:] = world.load / cars * 3  # the building's own load: a few homes' worth
    world.pv[:] = 0.0
    cap_w = 1000.0 * max(20.0, kw_per_car * home)
    out = []
    for k in range(PLANS):
        world.plugged[:] = False
        world.plugged[:home] = True
        snap = world.snapshot(5 * k)
        out.append(snap.model_copy(update={"import_limit_w": [cap_w] * len(snap.load_w)}))
        world.drift()
    return out


def run_case(cars: int, home: int, kw_per_car: float, decompose: bool | None) -> list[str]:
    planner = Planner(site_config(cars), decompose=decompose)
    cells = []
    for snap in snapshots(cars, home, kw_per_car):
        started = time.perf_counter()
        plan = planner.plan(snap)
        ms = 1000 * (time.perf_counter() - started)
        how = "dec" if planner.path.last_decomposed else "one"
        status = "optimal" if plan.solver_status == "optimal" else plan.solver_status.split(",")[0]
        if plan.solver_status.startswith("time limit"):
            status = "cut: " + plan.solver_status.split("within ")[1].split(" of")[0]
        cells.append(f"{ms:6.0f} ms {how} {status}")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cars", type=int, default=160)
    parser.add_argument("--home", default="5,20,100,150", help="cars plugged in, per case")
    parser.add_argument("--kw-per-car", type=float, default=2.0)
    args = parser.parse_args()
    print(
        f"{args.cars} cars configured, cap {args.kw_per_car} kW per car home (at least 20 kW), "
        f"{PLANS} plans per case (the first with the build), 2 s budget"
    )
    for home in (int(h) for h in args.home.split(",")):
        for name, decompose in PATHS.items():
            cells = run_case(args.cars, home, args.kw_per_car, decompose)
            print(f"home {home:4d}  {name:<17} " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
