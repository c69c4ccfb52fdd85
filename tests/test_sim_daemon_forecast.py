"""The simulator's incremental daemon forecasts give the daemon's own numbers at every step."""

from __future__ import annotations

import numpy as np
import pytest

from controller.config import ForecastConfig
from controller.forecast import load_from_grid, load_history_steps, pv_from_grid, pv_history_steps
from sim.daemon_forecast import DaemonLoadForecast, DaemonPvForecast

SPD = 24  # hourly steps keep the test fast; the code does not depend on the step


def _series(days: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = days * SPD
    hours = np.arange(n) % SPD
    load = 300.0 + 800.0 * rng.random(n) + 400.0 * (hours > 17)
    load[rng.random(n) < 0.03] = np.nan  # steps nothing was measured in
    return load


def _pv(days: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hours = np.arange(days * SPD) % SPD
    sun = np.clip(np.sin((hours - 6) / 12 * np.pi), 0.0, None)
    return 3000.0 * sun * rng.uniform(0.2, 1.0, days * SPD)


@pytest.mark.parametrize("weeks", [1, 4])
def test_load_forecast_equals_the_daemons_at_every_step(weeks: int) -> None:
    settings = ForecastConfig(load_history_weeks=weeks)
    series = _series(days=40, seed=weeks)
    model = DaemonLoadForecast(settings)
    steps = 2 * SPD + 5  # past one day of lead: anchors one period further back
    for k in range(len(series) - steps):
        first = max(0, k - load_history_steps(SPD, weeks, 7))
        expected = load_from_grid(
            series[first:k], steps, SPD, weeks=weeks, default_w=settings.default_home_load_w
        )
        got = model.forecast(series[:k], None, k, steps, SPD)
        np.testing.assert_array_equal(got, expected, err_msg=f"k={k}")


def test_pv_forecast_equals_the_daemons_at_every_step() -> None:
    settings = ForecastConfig()
    series = _pv(days=20, seed=3)
    model = DaemonPvForecast(settings)
    steps = 2 * SPD
    for k in range(len(series) - steps):
        first = max(0, k - pv_history_steps(SPD, settings.pv_history_days))
        expected = pv_from_grid(series[first:k], steps, SPD, days=settings.pv_history_days)
        got = model.forecast(series[:k], None, k, steps, SPD)
        np.testing.assert_array_equal(got, expected, err_msg=f"k={k}")


def test_another_history_starts_the_tables_again() -> None:
    settings = ForecastConfig()
    model = DaemonLoadForecast(settings)
    first, second = _series(days=20, seed=1), _series(days=20, seed=2)
    k = 15 * SPD
    model.forecast(first[:k], None, k, SPD, SPD)
    for history in (second, first):  # another array, then time going back on the first
        for at in (k, k - 3):
            expected = load_from_grid(history[:at], SPD, SPD, weeks=settings.load_history_weeks)
            np.testing.assert_allclose(model.forecast(history[:at], None, at, SPD, SPD), expected)
