"""Benchmark: the capacity tariff's term against the same closed loop without it.

The example home (``sim/examples/``: 21 days of May 2023, one V2G car, the example trips) runs the
``mpc`` strategy twice: with ``sim/examples/home_capacity.yaml`` (4.2 EUR per kW and month, about
50 EUR per kW and year, a 2.5 kW minimum) and with the same config without ``tariff.capacity``
(no peak term in the plan, no cap in the dispatcher). Both runs are billed under the tariff: each
month's highest 15-minute average import, its cost, and the total cost.

    .venv/bin/python benchmarks/bench_capacity_tariff.py [--days 21] [--strategy mpc]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sim.engine import SimResult  # noqa: E402
from sim.metrics import compute_metrics, monthly_peaks  # noqa: E402
from sim.runner import run_strategy  # noqa: E402
from sim.scenario import Scenario, load_scenario  # noqa: E402

EXAMPLES = ROOT / "sim" / "examples"


def example_scenario(days: float | None = None) -> Scenario:
    """The example home with the capacity tariff, cut to its first ``days`` (None: the whole series)."""
    scenario = load_scenario(EXAMPLES / "home_capacity.yaml", EXAMPLES / "series.csv", EXAMPLES / "trips.csv")
    if days is not None:
        steps = min(scenario.series.steps, round(days * 24 / scenario.series.step_hours))
        scenario = scenario.window(0, steps)
    return scenario


def without_tariff(scenario: Scenario) -> Scenario:
    """The same scenario planned and dispatched without the capacity tariff."""
    config = scenario.config
    return scenario.with_config(
        config.model_copy(update={"tariff": config.tariff.model_copy(update={"capacity": None})})
    )


def billed(scenario: Scenario, result: SimResult) -> tuple[dict[str, float], float, float]:
    """(monthly peaks kW, capacity cost, total cost) of a run, billed under ``scenario``'s tariff."""
    tariff = scenario.config.tariff.capacity
    assert tariff is not None
    peaks = monthly_peaks(result, tariff.window_minutes)
    capacity_cost = sum(tariff.price_per_kw_month * max(kw, tariff.minimum_peak_kw) for kw in peaks.values())
    metrics = compute_metrics(result)  # result of the run without the term: its total has no capacity cost
    base_total = metrics.total_cost - metrics.capacity_cost
    return peaks, capacity_cost, base_total + capacity_cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=None, help="first days of the series (default: all 21)")
    parser.add_argument("--strategy", default="mpc", help="sim strategy (default mpc)")
    args = parser.parse_args()
    scenario = example_scenario(args.days)
    currency = scenario.config.site.currency
    print(f"scenario: {scenario.name}, {scenario.series.steps} steps, strategy {args.strategy}")
    print(f"{'run':<16} {'month':<8} {'peak kW':>8} {'capacity':>9} {'total cost':>11} {'wall s':>7}")
    for label, run_scenario in (("with term", scenario), ("without term", without_tariff(scenario))):
        started = time.perf_counter()
        result = run_strategy(run_scenario, args.strategy)
        wall_s = time.perf_counter() - started
        peaks, capacity_cost, total = billed(scenario, result)
        for month, kw in peaks.items():
            print(f"{label:<16} {month:<8} {kw:8.2f}")
        print(
            f"{label:<16} {'all':<8} {'':>8} {capacity_cost:9.2f} {total:11.2f} {wall_s:7.1f}  ({currency})"
        )


if __name__ == "__main__":
    main()
