"""Forecasts from history: weekly profile, daily fallback, recent bias, external PV forecast."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from controller.forecast import forecast_load_w, forecast_pv_w, resample_to_grid

STEP = timedelta(minutes=15)
START = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # a Monday


def test_resample_means_per_step_and_skips_nan() -> None:
    history = [
        (START, 100.0),
        (START + timedelta(minutes=5), 300.0),
        (START + timedelta(minutes=16), float("nan")),
    ]
    assert resample_to_grid(history, STEP) == {START: 200.0}


def test_weekly_profile_repeats_the_same_weekday_and_time() -> None:
    # Four weeks of history: Mondays 08:00-08:15 draw 3 kW, everything else 300 W.
    history = []
    for k in range(1, 5):
        day = START - k * timedelta(days=7)
        for i in range(7 * 96):
            moment = day + i * STEP
            busy = moment.weekday() == 0 and moment.hour == 8 and moment.minute == 0
            history.append((moment, 3000.0 if busy else 300.0))
    forecast = forecast_load_w(history, START, STEP, 96, blend_hours=0)
    assert forecast[32] == pytest.approx(3000.0)
    assert forecast[31] == pytest.approx(300.0) and forecast[33] == pytest.approx(300.0)


def test_daily_fallback_then_default() -> None:
    history = [(START - timedelta(days=1) + i * STEP, 500.0 + i) for i in range(96)]
    forecast = forecast_load_w(history, START, STEP, 96 * 2, blend_hours=0)
    assert forecast[10] == pytest.approx(510.0)
    assert forecast[96 + 10] == pytest.approx(510.0)  # two days ahead reuses the last day it has
    assert np.all(forecast_load_w([], START, STEP, 4, default_w=450.0) == 450.0)


def test_recent_bias_fades_over_the_horizon() -> None:
    history = [(START - timedelta(days=1) + i * STEP, 400.0) for i in range(96 - 12)]
    history += [(START - 12 * STEP + i * STEP, 1400.0) for i in range(12)]  # the last 3 h ran 1 kW high
    forecast = forecast_load_w(history, START, STEP, 96, blend_hours=3.0)
    assert forecast[0] > 1000.0
    assert forecast[80] == pytest.approx(400.0, abs=20.0)
    assert np.all(np.diff(forecast[:48]) <= 1e-9)


def test_pv_from_recent_days_and_external_wins() -> None:
    history = [(START - timedelta(days=d) + timedelta(hours=12), 4000.0 + 200 * d) for d in range(1, 4)]
    forecast = forecast_pv_w(history, START, STEP, 96)
    assert forecast[48] == pytest.approx(4400.0) and forecast[0] == 0.0
    external = {START + 48 * STEP: 1234.0}
    assert forecast_pv_w(history, START, STEP, 96, external=external)[48] == 1234.0


def test_forecasts_never_go_negative() -> None:
    history = [(START - timedelta(hours=1) + i * STEP, -500.0) for i in range(4)]
    assert np.all(forecast_load_w(history, START, STEP, 8) >= 0)
    assert np.all(forecast_pv_w(history, START, STEP, 8) >= 0)
