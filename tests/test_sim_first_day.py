"""The controller's first day at a home: no measured history yet, so its forecasts start from what
it measures now."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sim.metrics import compute_metrics
from sim.runner import run_strategy
from sim.scenario import load_scenario

EXAMPLES = Path(__file__).resolve().parent.parent / "sim" / "examples"


def test_on_the_first_day_the_returning_car_charges_from_the_pv_that_shines(tmp_path: Path) -> None:
    # The example home's first day (1 May 2023): the car is back at 15:17 UTC needing 6 kWh, while
    # the PV still covers the home and exports at a fraction of the night's import price.
    series = tmp_path / "series.csv"
    series.write_text("".join((EXAMPLES / "series.csv").read_text().splitlines(keepends=True)[: 1 + 97]))
    trips = tmp_path / "trips.csv"
    trips.write_text("".join((EXAMPLES / "trips.csv").read_text().splitlines(keepends=True)[:2]))
    scenario = load_scenario(EXAMPLES / "home.yaml", series, trips)
    mpc = run_strategy(scenario, "mpc")  # the daemon's own forecasts, from no history at all
    charging_kw = np.clip(mpc.power_w[0], 0.0, None) / 1000.0
    surplus = scenario.series.pv_w > scenario.series.load_w
    charged_kwh = charging_kw.sum() * 0.25
    assert charged_kwh > 5.0
    # Without PV in the forecast (no day measured yet) the plan waited for the night's prices.
    assert charging_kw[surplus].sum() * 0.25 >= 0.5 * charged_kwh
    uncontrolled = run_strategy(scenario, "uncontrolled")
    assert compute_metrics(mpc).total_cost <= compute_metrics(uncontrolled).total_cost + 0.02
