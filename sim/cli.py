"""``v2x sim``: run, compare and sweep closed-loop simulations; generate synthetic scenarios.

Wire it into a parser with :func:`register`; each sub-command's handler takes the parsed arguments
and an output stream and returns the exit code (0 ok, 1 failure, 2 bad input).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from controller.config import ConfigError
from sim.information import FORECAST_MODELS

__all__ = ["register"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

Handler = Callable[[argparse.Namespace, TextIO], int]
MONTHLY_COST_KEY = "monthly_energy_and_degradation_cost"
"""Key of ``run``'s per-month cost in ``metrics.json``: energy + degradation cost per UTC month, without
the stored-energy value (so the months do not add up to ``total_cost``)."""
STRATEGY_CHOICES = ("mpc", "uncontrolled", "smart", "perfect", "mpc-no-discharge", "perfect-no-discharge")
FORECAST_CHOICES = FORECAST_MODELS


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``sim`` with its sub-commands to a ``v2x``-style parser."""
    parser = subparsers.add_parser(
        "sim",
        help="closed-loop simulation of a home: run, compare strategies, sweep parameters",
        description="Simulate the controller against a modelled home (see docs/simulator.md).",
    )
    sub = parser.add_subparsers(dest="sim_command", metavar="SIM_COMMAND", required=True)
    from sim.hil.command import register_hil

    register_hil(sub)

    p = sub.add_parser(
        "run",
        help="run one strategy; write metrics.json, timeseries.csv and plots",
        description="Run one strategy in closed loop on a scenario; print a summary and, with --out, write "
        "metrics.json, timeseries.csv and PNG plots. Exit 0 on success, 2 on bad input.",
    )
    _scenario_args(p)
    p.add_argument("--strategy", choices=STRATEGY_CHOICES, default="mpc", help="strategy (default mpc)")
    p.add_argument("--out", required=True, type=Path, help="output directory (created)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser(
        "compare",
        help="run all strategies on one scenario and print one table",
        description="Run uncontrolled, smart, mpc and perfect on one scenario and print one table with each "
        "strategy's cost and its share of the perfect-foresight saving. Exit 0 on success, 2 on bad input.",
    )
    _scenario_args(p)
    p.add_argument(
        "--strategies",
        default="uncontrolled,smart,mpc,perfect",
        help="comma-separated strategies (default uncontrolled,smart,mpc,perfect)",
    )
    p.add_argument(
        "--with-no-discharge",
        action="store_true",
        help="also run mpc and perfect without V2G/V2H: the value of discharging",
    )
    p.add_argument("--out", type=Path, help="directory for comparison.json/.csv and the monthly cost plot")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plot")
    p.set_defaults(handler=cmd_compare)

    p = sub.add_parser(
        "sweep",
        help="run a grid of parameters on a process pool or a Dask cluster",
        description="Run a strategy over every combination of --param values, on a local process pool or "
        "on an existing Dask cluster (--dask ADDRESS). Exit 0 on success, 2 on bad input.",
    )
    _scenario_args(p)
    p.add_argument("--strategy", choices=STRATEGY_CHOICES, default="mpc", help="strategy (default mpc)")
    p.add_argument(
        "--param",
        action="append",
        required=True,
        metavar="NAME=V1,V2",
        help="a swept parameter (repeat for a grid): degradation_cost_per_kwh, reserve_percent, horizon_hours, "
        "replan_interval_minutes, max_soc_percent, forecast, or a dotted config path such as vehicles.0.max_soc_percent",
    )
    p.add_argument("--workers", type=int, help="local worker processes (default: CPU count)")
    p.add_argument(
        "--dask", metavar="ADDRESS", help="run on an existing Dask scheduler, e.g. tcp://10.0.0.5:8786"
    )
    p.add_argument(
        "--dask-timeout", type=float, default=10.0, metavar="SECONDS", help="connect timeout (default 10)"
    )
    p.add_argument("--out", type=Path, help="directory for sweep.csv and sweep.json")
    p.set_defaults(handler=cmd_sweep)

    p = sub.add_parser(
        "generate",
        help="write a seeded synthetic scenario (series.csv, trips.csv)",
        description="Write a seeded synthetic scenario (household load, PV, prices, commutes) as "
        "series.csv and trips.csv. Exit 0 on success, 2 on bad input.",
    )
    p.add_argument("--config", required=True, type=Path, help="site config YAML")
    p.add_argument("--start", default="2024-03-04", help="first day, ISO date (UTC midnight)")
    p.add_argument("--days", type=float, default=14.0, help="length in days (default 14)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--tariff", choices=("dynamic", "net_metering"), default="dynamic")
    p.add_argument("--load-kwh", type=float, default=3500.0, help="household energy per year (default 3500)")
    p.add_argument("--pv-kwp", type=float, default=5.0, help="PV peak power (default 5 kWp)")
    p.add_argument("--out", required=True, type=Path, help="output directory (created)")
    p.set_defaults(handler=cmd_generate)


def _scenario_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="site config YAML (the daemon's format)")
    p.add_argument(
        "--series",
        required=True,
        type=Path,
        help="CSV timestamp,import_price_eur_per_kwh,export_price_eur_per_kwh,load_kw,pv_kw",
    )
    p.add_argument("--trips", type=Path, help="CSV vehicle,depart,arrive,energy_kwh (default: no trips)")
    p.add_argument(
        "--initial-soc",
        action="append",
        default=[],
        metavar="[VEHICLE=]PERCENT",
        help="SoC at the start (default: each car's default target)",
    )
    p.add_argument("--forecast", choices=FORECAST_CHOICES, default="daemon", help="load/PV forecast model")
    p.add_argument(
        "--load-forecast", choices=FORECAST_CHOICES, help="load forecast model (default: --forecast)"
    )
    p.add_argument("--pv-forecast", choices=FORECAST_CHOICES, help="PV forecast model (default: --forecast)")
    p.add_argument(
        "--nowcast",
        action="store_true",
        help="diagnosis: the current step's load and PV are known exactly (live meter idealised)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the noisy forecast model")
    p.add_argument(
        "--prices",
        choices=("day-ahead", "all"),
        default="day-ahead",
        help="day-ahead: prices for the next local day known from 12:00 site time; all: known in advance",
    )
    p.add_argument(
        "--trip-info",
        choices=("schedule", "schedule-only", "calendar"),
        default="schedule",
        help="what mpc knows of the trips after the announced next departure: the config's weekly "
        "schedule (default: what the daemon has when the driver announces each next departure), the "
        "weekly schedule alone with nothing announced (schedule-only; the daemon learns how early the "
        "driver leaves) or, for diagnosis, the driver's trip calendar",
    )
    p.add_argument(
        "--trip-energy",
        choices=("estimate", "actual"),
        default="estimate",
        help="with --trip-info calendar: a coming trip's energy (default: mean of past trips)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


# ------------------------------------------------------------------- helpers


class _BadInput(Exception):
    pass


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _config_error(exc: ConfigError) -> int:
    print(f"{exc.source}: {len(exc.issues)} problem(s)", file=sys.stderr)
    for issue in exc.issues:
        print(f"  {issue}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _initial_soc(specs: list[str], vehicle_ids: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for spec in specs:
        vehicle, sep, value = spec.rpartition("=")
        targets = [vehicle] if sep else vehicle_ids
        if sep and vehicle not in vehicle_ids:
            raise _BadInput(
                f"--initial-soc {spec}: unknown vehicle {vehicle!r}; known: {', '.join(vehicle_ids)}"
            )
        try:
            percent = float(value)
        except ValueError:
            raise _BadInput(f"--initial-soc {spec}: {value!r} is not a number") from None
        if not 0 <= percent <= 100:
            raise _BadInput(f"--initial-soc {spec}: {percent:g} is outside 0-100 %")
        out.update(dict.fromkeys(targets, percent))
    return out


def _load(args: argparse.Namespace) -> Any:
    """The scenario of the command line, or raises ConfigError / ScenarioError / _BadInput."""
    from controller.config import load_config
    from sim.scenario import load_scenario

    config = load_config(args.config)
    if not config.vehicles:
        raise _BadInput(f"{args.config}: the config has no vehicles to simulate")
    for i, vehicle in enumerate(config.vehicles):
        if vehicle.home_charger is None:
            raise _BadInput(
                f"{args.config}: vehicles[{i}].home_charger is not set; the simulator needs the charger "
                f"{vehicle.id!r} uses at home"
            )
    initial = _initial_soc(args.initial_soc, [v.id for v in config.vehicles])
    return load_scenario(args.config, args.series, args.trips, initial)


def _options(args: argparse.Namespace) -> Any:
    from sim.runner import RunOptions

    if args.trip_energy == "actual" and args.trip_info != "calendar":
        # Only the calendar carries per-trip energy: the schedule's trips use typical_trip_km.
        raise _BadInput("--trip-energy actual needs --trip-info calendar")
    return RunOptions(
        forecast=args.forecast,
        load_forecast=args.load_forecast,
        pv_forecast=args.pv_forecast,
        nowcast=args.nowcast,
        seed=args.seed,
        prices=args.prices,
        trip_info=args.trip_info,
        trip_energy=args.trip_energy,
    )


def _out_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _BadInput(f"cannot create output directory {path}: {exc.strerror or exc}") from None
    return path


def _guarded(body: Callable[[], int]) -> int:
    from sim.scenario import ScenarioError

    try:
        return body()
    except ConfigError as exc:
        return _config_error(exc)
    except ScenarioError as exc:
        return _error(str(exc))
    except _BadInput as exc:
        return _error(str(exc))


# ------------------------------------------------------------------ commands


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    def body() -> int:
        from sim.metrics import compute_metrics, monthly_cost
        from sim.progress import ProgressBar
        from sim.report import (
            format_summary,
            plot_monthly_cost,
            plot_sample_week,
            write_metrics_json,
            write_power_1min_csv,
            write_timeseries_csv,
        )
        from sim.runner import run_strategy

        scenario = _load(args)
        directory = _out_dir(args.out)
        bar = ProgressBar(sys.stderr, args.strategy, enabled=not args.no_progress)
        result = run_strategy(scenario, args.strategy, _options(args), progress=bar)
        metrics = compute_metrics(result)
        monthly = monthly_cost(result)
        print(format_summary(metrics), file=out)
        write_metrics_json(
            directory / "metrics.json",
            {**metrics.to_dict(), MONTHLY_COST_KEY: monthly},
        )
        write_timeseries_csv(directory / "timeseries.csv", result)
        write_power_1min_csv(directory / "power_1min.csv", result)
        written = ["metrics.json", "timeseries.csv", "power_1min.csv"]
        if not args.no_plots:
            plot_sample_week(directory / "week.png", result)
            plot_monthly_cost(directory / "monthly_cost.png", {result.strategy: monthly}, metrics.currency)
            written += ["week.png", "monthly_cost.png"]
        print(f"wrote {', '.join(written)} to {directory}", file=out)
        return EXIT_OK

    return _guarded(body)


def cmd_compare(args: argparse.Namespace, out: TextIO) -> int:
    def body() -> int:
        from sim.metrics import Metrics, compute_metrics, monthly_cost
        from sim.progress import ProgressBar
        from sim.report import comparison_rows, format_comparison, plot_monthly_cost, write_metrics_json
        from sim.runner import run_strategy

        names = [n.strip() for n in args.strategies.split(",") if n.strip()]
        unknown = [n for n in names if n not in STRATEGY_CHOICES]
        if unknown or not names:
            raise _BadInput(
                f"--strategies: unknown {', '.join(unknown) or '(none given)'}; use {', '.join(STRATEGY_CHOICES)}"
            )
        if args.with_no_discharge:
            names += [n for n in ("mpc-no-discharge", "perfect-no-discharge") if n not in names]
        scenario = _load(args)
        directory = _out_dir(args.out) if args.out else None
        options = _options(args)
        results: dict[str, Metrics] = {}
        monthly: dict[str, dict[str, float]] = {}
        for name in names:
            bar = ProgressBar(sys.stderr, f"{name:>22}", enabled=not args.no_progress)
            result = run_strategy(scenario, name, options, progress=bar)
            results[name] = compute_metrics(result)
            monthly[name] = monthly_cost(result)
        print(f"{scenario.name}: {scenario.steps} steps of {scenario.series.step}", file=out)
        print(format_comparison(results), file=out)
        value_line = _discharge_value_line(results)
        if value_line:
            print(value_line, file=out)
        if directory is not None:
            rows = comparison_rows(results)
            write_metrics_json(directory / "comparison.json", {"scenario": scenario.name, "strategies": rows})
            with (directory / "comparison.csv").open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            written = ["comparison.json", "comparison.csv"]
            if not args.no_plots:
                currency = next(iter(results.values())).currency
                plot_monthly_cost(directory / "monthly_cost.png", monthly, currency)
                written.append("monthly_cost.png")
            print(f"wrote {', '.join(written)} to {directory}", file=out)
        return EXIT_OK

    return _guarded(body)


def _discharge_value_line(results: dict[str, Any]) -> str | None:
    """The value of discharging and two different shares of it (the year study prints the same)."""
    names = ("mpc", "mpc-no-discharge", "perfect", "perfect-no-discharge")
    if not all(n in results for n in names):
        return None
    without = results["perfect-no-discharge"].total_cost
    value = without - results["perfect"].total_cost
    # Forecast errors count against mpc here...
    captured = without - results["mpc"].total_cost
    # ...and not here: what discharging adds to mpc's own result.
    own_worth = results["mpc-no-discharge"].total_cost - results["mpc"].total_cost

    def share(amount: float) -> str:
        return f"{amount:.2f}" if abs(value) < 1e-9 else f"{amount:.2f} = {100.0 * amount / value:.1f} %"

    return (
        f"value of discharging (perfect without discharge - perfect): {value:.2f}\n"
        f"value of discharging captured by mpc (perfect without discharge - mpc): {share(captured)}\n"
        f"discharging's own worth to mpc (mpc without discharge - mpc): {share(own_worth)}"
    )


def cmd_sweep(args: argparse.Namespace, out: TextIO) -> int:
    def body() -> int:
        from sim.report import format_table, write_metrics_json
        from sim.sweep import expand_grid, parse_grid, run_sweep

        grid = parse_grid(args.param)
        points = expand_grid(grid)
        if args.workers is not None and args.workers < 1:
            raise _BadInput(f"--workers {args.workers}: use 1 or more")
        scenario = _load(args)
        directory = _out_dir(args.out) if args.out else None

        def done(count: int, total: int, result: dict[str, Any]) -> None:
            if not args.no_progress:
                m = result["metrics"]
                print(
                    f"[{count}/{total}] {result['overrides']}: total cost {m['total_cost']:.2f}",
                    file=sys.stderr,
                )

        try:
            results = run_sweep(
                scenario,
                args.strategy,
                points,
                _options(args),
                args.workers,
                args.dask,
                on_done=done,
                dask_timeout_s=args.dask_timeout,
            )
        except RuntimeError as exc:
            raise _BadInput(str(exc)) from None
        except OSError as exc:  # an unreachable Dask scheduler
            raise _BadInput(f"--dask {args.dask}: {exc}") from None
        names = list(grid)
        header = (
            *names,
            "total cost",
            "energy",
            "degradation",
            "V2H kWh",
            "V2G kWh",
            "breaches",
            "avoidable",
            "median ms",
        )
        rows = []
        for r in results:
            m = r["metrics"]
            rows.append(
                (
                    *(str(r["overrides"][n]) for n in names),
                    f"{m['total_cost']:.2f}",
                    f"{m['energy_cost']:.2f}",
                    f"{m['degradation_cost']:.2f}",
                    f"{m['v2h_kwh']:.1f}",
                    f"{m['v2g_kwh']:.1f}",
                    str(m["reserve_breaches"]),
                    str(m["avoidable_shortfalls"]),
                    "-" if m["solve_ms_median"] is None else f"{m['solve_ms_median']:.2f}",
                )
            )
        print(f"{scenario.name}: {args.strategy}, {len(points)} point(s)", file=out)
        print(format_table(header, rows), file=out)
        if directory is not None:
            write_metrics_json(directory / "sweep.json", {"strategy": args.strategy, "points": results})
            with (directory / "sweep.csv").open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                writer.writerows(rows)
            print(f"wrote sweep.json, sweep.csv to {directory}", file=out)
        return EXIT_OK

    return _guarded(body)


def cmd_generate(args: argparse.Namespace, out: TextIO) -> int:
    def body() -> int:
        from controller.config import load_config
        from sim.generators import generate_scenario
        from sim.scenario import write_series_csv, write_trips_csv

        config = load_config(args.config)
        try:
            start = datetime.fromisoformat(args.start)
        except ValueError:
            raise _BadInput(f"--start {args.start!r} is not an ISO date such as 2024-03-04") from None
        start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
        if not 0 < args.days <= 3660:
            raise _BadInput(f"--days {args.days:g}: use more than 0 and at most 3660")
        if args.load_kwh < 0 or args.pv_kwp < 0:
            raise _BadInput("--load-kwh and --pv-kwp must be >= 0")
        scenario = generate_scenario(
            config, start, args.days, args.seed, args.tariff, args.load_kwh, args.pv_kwp
        )
        directory = _out_dir(args.out)
        write_series_csv(directory / "series.csv", scenario.series)
        write_trips_csv(directory / "trips.csv", scenario.trips)
        print(
            f"wrote series.csv ({scenario.steps} steps) and trips.csv ({len(scenario.trips)} trips) to {directory}",
            file=out,
        )
        return EXIT_OK

    return _guarded(body)
