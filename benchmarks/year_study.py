"""Year study: mpc against the baselines and the perfect-foresight bound, under two tariffs.

Builds a full year at 15-minute steps from the public data in ../shared/data at run time (nothing
of it is committed): Dutch day-ahead prices, a measured household load scaled to 3,500 kWh/year,
Dutch PV, and seeded weekday commutes. Tariffs:

    (a) dynamic:      import (day-ahead + 0.14) x 1.21, export paid the bare day-ahead price
    (b) net_metering: the same import price, export paid the import price of the same step

The home's charger is the config's (sim/examples/home.yaml: an AC wallbox, 6 A minimum per phase on 3
phases, so anything below 4.14 kW is pulsed), and the plant accounts import and export per minute
inside each step. For each tariff it runs uncontrolled, smart, mpc, perfect, and mpc/perfect without
discharge, prints one table, and checks: mpc reaches >= 85 % (dynamic) / >= 93 % (net metering) of
the perfect-foresight saving over uncontrolled; zero reserve breaches, zero avoidable departure
shortfalls and zero steps above the SoC ceiling for mpc, perfect and both without discharge.
Shown next to them, not checked: the value of discharging (perfect without discharge minus perfect)
and what mpc captures of it; mpc when the driver announces nothing (`schedule-only`; its reserve
breaches are checked); mpc and perfect with an ideal charger (no minimum power: how far the
realistic charger's bound is from the ideal one) and with a 1-phase-switching charger.

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


# The same home with another charger: mpc and its own perfect-foresight bound.
CHARGER_VARIANTS: dict[str, dict[str, Any]] = {
    "ideal charger (no minimum power)": {"min_current_a": 0},
    "1-phase switching charger": {"phase_switching": True},
}
SCHEDULE_ONLY = "mpc, driver announces nothing (schedule-only)"


def with_charger(scenario: Scenario, changes: dict[str, Any]) -> Scenario:
    """``scenario`` with every charger's config changed by ``changes``."""
    config = scenario.config
    chargers = [c.model_copy(update=changes) for c in config.chargers]
    return replace(scenario, config=config.model_copy(update={"chargers": chargers}))


def _run(scenario: Scenario, label: str, name: str, options: RunOptions) -> tuple[str, Metrics]:
    return label, compute_metrics(run_strategy(scenario, name, options))


Job = tuple[Scenario, str, str, RunOptions]


def _jobs(scenario: Scenario, options: RunOptions, sensitivity: bool) -> list[Job]:
    jobs: list[Job] = [(scenario, name, name, options) for name in STRATEGIES]
    jobs.append((scenario, SCHEDULE_ONLY, "mpc", replace(options, trip_info="schedule-only")))
    for variant, changes in CHARGER_VARIANTS.items():
        changed = with_charger(scenario, changes)
        jobs += [(changed, f"{name}, {variant}", name, options) for name in ("mpc", "perfect")]
    if sensitivity:
        jobs += [
            (scenario, label, "mpc", replace(options, **changes)) for label, changes in SENSITIVITY.items()
        ]
    return jobs


def study(
    scenario: Scenario, options: RunOptions, workers: int, sensitivity: bool
) -> tuple[dict[str, Metrics], dict[str, Metrics]]:
    jobs = _jobs(scenario, options, sensitivity)
    results: dict[str, Metrics] = {}
    if workers <= 1:
        for job_scenario, label, name, job_options in jobs:
            started = time.perf_counter()
            results[label] = _run(job_scenario, label, name, job_options)[1]
            print(f"  {label}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_run, *job) for job in jobs]
            for future in futures:
                label, metrics = future.result()
                results[label] = metrics
                print(f"  {label}: {metrics.wall_time_s:.1f} s in the loop", file=sys.stderr, flush=True)
    main = {name: results[name] for name in STRATEGIES}
    extra = {label: m for label, m in results.items() if label not in main}
    return main, extra


# The share of the perfect-foresight saving mpc must reach, per tariff, with the realistic charger.
REQUIRED_SHARE = {"dynamic": 0.85, "net_metering": 0.93}


def _safety(name: str, m: Metrics) -> list[tuple[str, bool | None, str]]:
    return [
        (f"{name}: zero reserve breaches", m.reserve_breaches == 0, str(m.reserve_breaches)),
        (
            f"{name}: zero avoidable departure shortfalls",
            m.avoidable_shortfalls == 0,
            f"{m.avoidable_shortfalls} ({m.avoidable_shortfall_kwh:.2f} kWh)",
        ),
        (
            f"{name}: zero steps above the SoC ceiling",
            m.ceiling_breaches == 0,
            f"{m.ceiling_breaches} (at most {m.ceiling_excess_kwh_max:.3f} kWh over)",
        ),
    ]


def checks(
    tariff: Tariff, results: dict[str, Metrics], extra: dict[str, Metrics]
) -> list[tuple[str, bool | None, str]]:
    """(what, passed or None for a figure shown for information, value)."""
    mpc, perfect = results["mpc"], results["perfect"]
    base = results["uncontrolled"].total_cost
    share = saving_share(mpc.total_cost, base, perfect.total_cost)
    required = REQUIRED_SHARE[tariff]
    value = results["perfect-no-discharge"].total_cost - perfect.total_cost
    own_worth = results["mpc-no-discharge"].total_cost - mpc.total_cost
    captured = results["perfect-no-discharge"].total_cost - mpc.total_cost
    out: list[tuple[str, bool | None, str]] = [
        (
            f"mpc share of the perfect-foresight saving over uncontrolled >= {100 * required:.0f} %",
            share is not None and share >= required,
            "-" if share is None else f"{100 * share:.1f} %",
        ),
        (
            "value of discharging (perfect without discharge - perfect)",
            None,
            f"{value:.2f} {mpc.currency}",
        ),
        (
            "value of discharging captured by mpc: (perfect without discharge - mpc) / value",
            None,
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
        out += _safety(name, results[name])
    only = extra.get(SCHEDULE_ONLY)
    if only is not None:
        out.append(
            (
                f"{SCHEDULE_ONLY}: zero reserve breaches",
                only.reserve_breaches == 0,
                str(only.reserve_breaches),
            )
        )
        out.append(
            (
                f"{SCHEDULE_ONLY}: departure shortfalls (avoidable)",
                None,
                f"{only.departure_shortfalls} ({only.shortfall_kwh:.2f} kWh), avoidable "
                f"{only.avoidable_shortfalls} ({only.avoidable_shortfall_kwh:.2f} kWh)",
            )
        )
    for variant in CHARGER_VARIANTS:
        m, bound = extra.get(f"mpc, {variant}"), extra.get(f"perfect, {variant}")
        if m is None or bound is None:
            continue
        variant_share = saving_share(m.total_cost, base, bound.total_cost)
        out.append(
            (
                f"{variant}: mpc total cost, share of its own perfect-foresight saving",
                None,
                f"{m.total_cost:.2f} {m.currency}, "
                + ("-" if variant_share is None else f"{100 * variant_share:.1f} %"),
            )
        )
        out += _safety(f"mpc, {variant}", m)
    ideal = extra.get(f"perfect, {next(iter(CHARGER_VARIANTS))}")
    if ideal is not None:
        out.append(
            (
                "realistic charger's bound above the ideal charger's (perfect - perfect, ideal charger)",
                None,
                f"{perfect.total_cost - ideal.total_cost:.2f} {mpc.currency}",
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
        for text, ok, value in checks(tariff, results, extra):
            mark = "info" if ok is None else "PASS" if ok else "FAIL"
            print(f"[{mark}] {text}: {value}")
            all_ok = all_ok and ok is not False
        if extra:
            base, bound = results["uncontrolled"].total_cost, results["perfect"].total_cost
            print("\nother runs (share of the realistic charger's perfect-foresight saving):")
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
