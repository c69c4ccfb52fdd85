"""Year study with a home battery: the example home (sim/examples/home.yaml) plus a 10 kWh battery
(5 kW both ways, 95 % / 95 %), both tariffs of benchmarks/year_study.py (dynamic; net metering).

For each tariff it runs, with the battery controllable (``control: mqtt``): uncontrolled (the battery
in its own self-consumption mode, the car on a plain wallbox), mpc and perfect; and the same home
with the battery in ``observe`` (its own mode, the controller planning around it): mpc and perfect.
It prints per run the cost, the battery's energy, cycles and wear, and the storage-to-storage energy
(``sim.metrics.storage_transfer_kwh``), then the perfect-foresight share of mpc over uncontrolled
and the money the controllable battery earns against the observe one.

    .venv/bin/python benchmarks/bench_home_battery.py [--days 365] [--workers 2] [--tariffs dynamic]
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

from controller.config import HomeBatteryConfig, SiteConfig, load_config  # noqa: E402
from sim.metrics import Metrics, compute_metrics, saving_share  # noqa: E402
from sim.public_data import DEFAULT_DATA_DIR, build_public_scenario  # noqa: E402
from sim.runner import RunOptions, run_strategy  # noqa: E402
from sim.scenario import Scenario  # noqa: E402
from sim.tariffs import TARIFFS  # noqa: E402

RUNS = (
    ("uncontrolled", "controlled"),
    ("mpc", "controlled"),
    ("perfect", "controlled"),
    ("mpc", "observe"),
    ("perfect", "observe"),
)


def with_battery(config: SiteConfig, control: str) -> SiteConfig:
    """The home with a 10 kWh, 5 kW battery, controlled over MQTT or observed."""
    mode: dict[str, Any] = (
        {"mode": "mqtt", "setpoint_topic": "home/battery/set"}
        if control == "controlled"
        else {"mode": "observe"}
    )
    battery = HomeBatteryConfig.model_validate(
        {
            "id": "battery",
            "usable_capacity_kwh": 10.0,
            "max_charge_kw": 5.0,
            "max_discharge_kw": 5.0,
            "charge_efficiency": 0.95,
            "discharge_efficiency": 0.95,
            "min_soc_percent": 5.0,
            "backup_reserve_percent": 10.0,
            "degradation_cost_per_kwh": 0.02,
            "control": mode,
        }
    )
    return config.model_copy(update={"home_batteries": [battery]})


def _run(scenario: Scenario, name: str, control: str) -> tuple[str, Metrics, float]:
    started = time.perf_counter()
    changed = replace(scenario, config=with_battery(scenario.config, control))
    metrics = compute_metrics(run_strategy(changed, name, RunOptions()))
    return f"{name} ({control})", metrics, time.perf_counter() - started


def _row(label: str, m: Metrics) -> str:
    return (
        f"{label:<26} {m.total_cost:>9.2f} {m.import_kwh:>8.0f} {m.export_kwh:>8.0f} "
        f"{m.battery_charge_kwh:>8.0f} {m.battery_discharge_kwh:>8.0f} {m.battery_cycles:>7.1f} "
        f"{m.battery_degradation_cost:>7.2f} {m.storage_to_storage_kwh:>8.2f} {m.battery_floor_breaches:>5d} "
        f"{m.reserve_breaches:>5d} {m.avoidable_shortfalls:>5d}"
    )


def report(tariff: str, results: dict[str, Metrics]) -> None:
    print(f"\n## {tariff}")
    print(
        f"{'run':<26} {'cost':>9} {'imp kWh':>8} {'exp kWh':>8} {'bat in':>8} {'bat out':>8} "
        f"{'cycles':>7} {'wear':>7} {'s2s kWh':>8} {'floor':>5} {'resv':>5} {'short':>5}"
    )
    for label, m in results.items():
        print(_row(label, m))
    unc = results["uncontrolled (controlled)"].total_cost
    for control in ("controlled", "observe"):
        mpc, perfect = results[f"mpc ({control})"].total_cost, results[f"perfect ({control})"].total_cost
        share = saving_share(mpc, unc, perfect)
        shown = "n/a" if share is None else f"{100 * share:.1f} %"
        print(
            f"perfect-foresight share, battery {control}: mpc {shown} (uncontrolled {unc:.2f}, bound {perfect:.2f})"
        )
    for name in ("mpc", "perfect"):
        gain = results[f"{name} (observe)"].total_cost - results[f"{name} (controlled)"].total_cost
        print(f"{name}: the controllable battery saves {gain:.2f} against the same home with it in observe")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=ROOT / "sim" / "examples" / "home.yaml")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--days", type=int, help="shorter study (default: the whole year)")
    parser.add_argument("--first-day", type=int, default=0)
    parser.add_argument("--tariffs", default=",".join(TARIFFS))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    for tariff in [t.strip() for t in args.tariffs.split(",") if t.strip()]:
        scenario = build_public_scenario(
            config, args.data_dir, 2023, tariff, "house_21", 3500.0, 4.0, args.first_day, args.days
        )
        print(f"{scenario.name}: {scenario.steps} steps", file=sys.stderr, flush=True)
        results: dict[str, Metrics] = {}
        if args.workers <= 1:
            for name, control in RUNS:
                label, metrics, seconds = _run(scenario, name, control)
                results[label] = metrics
                print(f"  {label}: {seconds:.0f} s", file=sys.stderr, flush=True)
        else:
            with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(_run, scenario, name, control) for name, control in RUNS]
                for future in futures:
                    label, metrics, seconds = future.result()
                    results[label] = metrics
                    print(f"  {label}: {seconds:.0f} s", file=sys.stderr, flush=True)
        report(tariff, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
