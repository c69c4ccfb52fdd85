"""Year study: mpc against the baselines and the perfect-foresight bound, under two tariffs.

Builds a full year at 15-minute steps from the public data in ../shared/data at run time (nothing
of it is committed): Dutch day-ahead prices, a measured household load scaled to 3,500 kWh/year,
Dutch PV, and seeded weekday commutes. Tariffs:

    (a) dynamic:      import (day-ahead + 0.14) x 1.21, export paid the bare day-ahead price
    (b) net_metering: the same import price, export paid the import price of the same step

For each tariff it runs uncontrolled, smart, mpc, perfect, and mpc/perfect without discharge,
prints one table, and checks: mpc reaches >= 90 % of the perfect-foresight saving over
uncontrolled; under net metering the value of discharging captured by mpc is >= 75 % of it (value:
perfect without discharge minus perfect; captured: perfect without discharge minus mpc, so forecast
errors count against mpc; shown next to it, not checked: discharging's own worth to mpc, mpc without
discharge minus mpc); zero reserve breaches; zero avoidable departure shortfalls.

    .venv/bin/python benchmarks/year_study.py [--days 28] [--workers 2] [--out DIR]

Exit code 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from controller.config import load_config  # noqa: E402
from sim.information import FORECAST_MODELS  # noqa: E402
from sim.metrics import Metrics, compute_metrics, saving_share  # noqa: E402
from sim.public_data import DEFAULT_DATA_DIR, build_public_scenario  # noqa: E402
from sim.report import format_comparison, write_metrics_json  # noqa: E402
from sim.runner import RunOptions, run_strategy  # noqa: E402
from sim.scenario import Scenario  # noqa: E402
from sim.tariffs import TARIFFS, Tariff  # noqa: E402

STRATEGIES = ("uncontrolled", "smart", "mpc", "perfect", "mpc-no-discharge", "perfect-no-discharge")
# mpc under other information models: how much of the gap to the bound is forecast error?
SENSITIVITY: dict[str, dict[str, Any]] = {
    "PV from a weather forecast (noisy model)": {"pv_forecast": "noisy"},
    "load and PV from the noisy model": {"forecast": "noisy"},
    "current step known (nowcast)": {"nowcast": True},
    "PV noisy + nowcast": {"pv_forecast": "noisy", "nowcast": True},
    "trip calendar known (estimated energy)": {"trip_info": "calendar"},
    "oracle forecasts, all prices and trips known": {
        "forecast": "oracle",
        "prices": "all",
        "trip_info": "calendar",
        "trip_energy": "actual",
    },
}


def _run(scenario: Scenario, label: str, name: str, options: RunOptions) -> tuple[str, Metrics]:
    return label, compute_metrics(run_strategy(scenario, name, options))


def study(
    scenario: Scenario, options: RunOptions, workers: int, sensitivity: bool
) -> tuple[dict[str, Metrics], dict[str, Metrics]]:
    jobs = [(name, name, options) for name in STRATEGIES]
    if sensitivity:
        jobs += [(label, "mpc", replace(options, **changes)) for label, changes in SENSITIVITY.items()]
    results: dict[str, Metrics] = {}
    if workers <= 1:
        for label, name, job_options in jobs:
            started = time.perf_counter()
            results[label] = _run(scenario, label, name, job_options)[1]
            print(f"  {label}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_run, scenario, *job) for job in jobs]
            for future in futures:
                label, metrics = future.result()
                results[label] = metrics
                print(f"  {label}: {metrics.wall_time_s:.1f} s in the loop", file=sys.stderr, flush=True)
    main = {name: results[name] for name in STRATEGIES}
    extra = {label: results[label] for label in SENSITIVITY if label in results}
    return main, extra


def checks(tariff: Tariff, results: dict[str, Metrics]) -> list[tuple[str, bool | None, str]]:
    """(what, passed or None for a figure shown for information, value)."""
    mpc, perfect = results["mpc"], results["perfect"]
    share = saving_share(mpc.total_cost, results["uncontrolled"].total_cost, perfect.total_cost)
    value = results["perfect-no-discharge"].total_cost - perfect.total_cost
    own_worth = results["mpc-no-discharge"].total_cost - mpc.total_cost
    captured = results["perfect-no-discharge"].total_cost - mpc.total_cost
    out: list[tuple[str, bool | None, str]] = [
        (
            "mpc share of the perfect-foresight saving over uncontrolled >= 90 %",
            share is not None and share >= 0.90,
            "-" if share is None else f"{100 * share:.1f} %",
        ),
        (
            "value of discharging (perfect without discharge - perfect)",
            None,
            f"{value:.2f} {mpc.currency}",
        ),
        (
            "value of discharging captured by mpc: (perfect without discharge - mpc) / value"
            + (" >= 75 %" if tariff == "net_metering" else ""),
            (value > 0 and captured / value >= 0.75) if tariff == "net_metering" else None,
            f"{captured:.2f} {mpc.currency} = {100 * captured / value:.1f} %" if value > 0 else "-",
        ),
        (
            "  discharging's own worth to mpc (mpc without discharge - mpc)",
            None,
            f"{own_worth:.2f} {mpc.currency} = {100 * own_worth / value:.1f} % of the value"
            if value > 0
            else "-",
        ),
    ]
    for name in ("mpc", "perfect", "mpc-no-discharge", "perfect-no-discharge"):
        m = results[name]
        out.append((f"{name}: zero reserve breaches", m.reserve_breaches == 0, str(m.reserve_breaches)))
        out.append(
            (
                f"{name}: zero avoidable departure shortfalls",
                m.avoidable_shortfalls == 0,
                f"{m.avoidable_shortfalls} ({m.avoidable_shortfall_kwh:.2f} kWh)",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=ROOT / "sim" / "examples" / "home.yaml")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--year", type=int, default=2023, help="year of day-ahead prices (default 2023)")
    parser.add_argument("--house", default="house_21", help="household load column (default house_21)")
    parser.add_argument("--load-kwh", type=float, default=3500.0)
    parser.add_argument("--pv-kwp", type=float, default=4.0)
    parser.add_argument("--first-day", type=int, default=0)
    parser.add_argument("--days", type=int, help="shorter study (default: the whole year)")
    parser.add_argument("--tariffs", default=",".join(TARIFFS))
    parser.add_argument("--forecast", default="daemon", choices=FORECAST_MODELS)
    parser.add_argument("--workers", type=int, default=1, help="strategies in parallel processes")
    parser.add_argument(
        "--no-sensitivity", action="store_true", help="skip mpc under other information models"
    )
    parser.add_argument("--out", type=Path, help="write year_study.json here")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    options = RunOptions(forecast=args.forecast)
    all_ok = True
    report: dict[str, Any] = {}
    for tariff in [t.strip() for t in args.tariffs.split(",") if t.strip()]:
        if tariff not in TARIFFS:
            parser.error(f"unknown tariff {tariff!r}")
        scenario = build_public_scenario(
            config,
            args.data_dir,
            args.year,
            tariff,
            args.house,
            args.load_kwh,
            args.pv_kwp,
            args.first_day,
            args.days,
        )
        print(
            f"{scenario.name}: {scenario.steps} steps, {len(scenario.trips)} trips",
            file=sys.stderr,
            flush=True,
        )
        results, extra = study(scenario, options, args.workers, not args.no_sensitivity)
        label = "(a) dynamic import, export at day-ahead" if tariff == "dynamic" else "(b) net metering"
        print(
            f"\n## {label}: {scenario.name}, {scenario.steps} steps of 15 min; controller information: "
            f"day-ahead prices as published, load and PV forecast '{args.forecast}', the next departure as "
            "announced and later trips from the weekly schedule"
        )
        print(format_comparison(results))
        for text, ok, value in checks(tariff, results):
            mark = "info" if ok is None else "PASS" if ok else "FAIL"
            print(f"[{mark}] {text}: {value}")
            all_ok = all_ok and ok is not False
        if extra:
            base, bound = results["uncontrolled"].total_cost, results["perfect"].total_cost
            print("\nmpc under other information models (not part of the checks):")
            for name, m in extra.items():
                share = saving_share(m.total_cost, base, bound)
                shown = "-" if share is None else f"{100 * share:.1f} %"
                print(f"  {name:<45} total cost {m.total_cost:9.2f}  share of perfect saving {shown}")
        report[tariff] = {name: m.to_dict() for name, m in {**results, **extra}.items()}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_metrics_json(args.out / "year_study.json", report)
    print("\nall checks passed" if all_ok else "\nsome checks FAILED")
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
