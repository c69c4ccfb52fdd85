"""Forecasts from history: weekly profile, daily fallback, recent bias, external PV forecast."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from controller.forecast import (
    forecast_load_w,
    forecast_pv_w,
    history_grid,
    load_from_grid,
    load_history_steps,
    pv_from_grid,
    pv_history_steps,
    resample_to_grid,
)
from controller.forecast.profile import PV_HOLD_HOURS

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
    weekly = forecast_load_w(history, START, STEP, 96, weekly_weight=1.0, blend_hours=0)
    assert weekly[32] == pytest.approx(3000.0)
    assert weekly[31] == pytest.approx(300.0) and weekly[33] == pytest.approx(300.0)
    # By default the same weekday is blended with the last seven days (one Monday among them).
    blended = forecast_load_w(history, START, STEP, 96, blend_hours=0)
    assert blended[32] == pytest.approx(0.3 * 3000.0 + 0.7 * (3000.0 + 6 * 300.0) / 7)
    assert blended[31] == pytest.approx(300.0)


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


def test_pv_follows_the_weather_of_the_last_hour_then_fades_to_the_profile() -> None:
    per_day = 96
    sunny_day = np.array([max(0.0, 4000.0 * np.sin(np.pi * (i - 24) / 48)) for i in range(per_day)])
    grid = np.tile(sunny_day, 7)
    profile = pv_from_grid(grid[: 6 * per_day + 40], 40, per_day, days=6)  # 10:00, a clear morning
    cloudy = grid[: 6 * per_day + 40].copy()
    cloudy[-4:] *= 0.5  # the last hour gave half the usual
    forecast = pv_from_grid(cloudy, 40, per_day, days=6)
    assert forecast[0] == pytest.approx(0.5 * profile[0], rel=0.05)
    assert forecast[0] / profile[0] < forecast[16] / profile[16] < forecast[32] / profile[32] < 1.0
    # At night there is no weather to read: the profile stands.
    night = pv_from_grid(grid[: 6 * per_day + 4], 8, per_day, days=6)
    assert night.tolist() == pytest.approx(sunny_day[4:12].tolist())


def test_pv_on_the_first_day_holds_the_last_hour_where_no_day_was_measured() -> None:
    per_day = 96
    sunny_day = np.array([max(0.0, 4000.0 * np.sin(np.pi * (i - 24) / 48)) for i in range(per_day)])
    today = sunny_day[:56]  # installed at midnight, now 14:00
    forecast = pv_from_grid(today, per_day, per_day)
    # 14:00 to midnight was never measured: the last hour's PV, fading over about an hour.
    hold = np.exp(-np.arange(per_day) / (PV_HOLD_HOURS * 4))
    assert forecast[:40].tolist() == pytest.approx((today[-4:].mean() * hold[:40]).tolist())
    assert forecast[0] > 3000.0
    # Tomorrow until 14:00 was measured today: that profile stands (no earlier day to scale it by).
    assert forecast[40:].tolist() == pytest.approx(sunny_day[:56].tolist())
    # At night nothing shines to hold; and with no measurement at all there is nothing to hold.
    assert pv_from_grid(sunny_day[:8], 8, per_day).tolist() == [0.0] * 8
    assert pv_from_grid(np.full(4, np.nan), 8, per_day).tolist() == [0.0] * 8


def test_forecasts_never_go_negative() -> None:
    history = [(START - timedelta(hours=1) + i * STEP, -500.0) for i in range(4)]
    assert np.all(forecast_load_w(history, START, STEP, 8) >= 0)
    assert np.all(forecast_pv_w(history, START, STEP, 8) >= 0)


def test_history_grid_places_readings_before_start_and_ignores_later_ones() -> None:
    history = [
        (START - timedelta(minutes=10), 100.0),  # the step just before start
        (START - timedelta(minutes=40), 300.0),  # three steps back
        (START - timedelta(days=30), 999.0),  # older than the grid
        (START + timedelta(minutes=1), 5000.0),  # now or later: not history yet
    ]
    grid = history_grid(history, START + timedelta(minutes=7), STEP, 4)
    assert grid[3] == 100.0 and grid[1] == 300.0
    assert np.isnan(grid[0]) and np.isnan(grid[2])


def test_readings_and_grid_paths_give_the_same_forecast() -> None:
    # The daemon forecasts from timestamped readings, the simulator from its grid: one code path.
    rng = np.random.default_rng(3)
    per_day = 96
    length = load_history_steps(per_day, 4, 7, 4)
    grid = rng.uniform(0.0, 3000.0, length)
    grid[rng.random(length) < 0.2] = np.nan  # gaps
    readings = [
        (START - (length - i) * STEP + timedelta(minutes=3), float(v))
        for i, v in enumerate(grid)
        if not np.isnan(v)
    ]
    assert forecast_load_w(readings, START, STEP, 192).tolist() == pytest.approx(
        load_from_grid(grid, 192, per_day).tolist()
    )
    assert forecast_pv_w(readings, START, STEP, 192).tolist() == pytest.approx(
        pv_from_grid(grid[-pv_history_steps(per_day, 7) :], 192, per_day).tolist()
    )
    # A week-old gap falls back to the days before; no history at all gives the default.
    assert load_from_grid(np.array([]), 4, per_day, default_w=321.0).tolist() == [321.0] * 4
    assert pv_from_grid(np.full(per_day, np.nan), 4, per_day).tolist() == [0.0] * 4
