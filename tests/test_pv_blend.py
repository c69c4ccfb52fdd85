"""The PV forecast the plan uses: fetched forecasts scaled by the measured PV (bounded, fading), the
history profile where none covers a step, the mean of several sources; and the daemon using it."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from controller.config import parse_config
from controller.forecast.profile import PV_HOLD_HOURS
from controller.forecast.pv_blend import (
    BoolArray,
    FloatArray,
    blend_pv_w,
    combine_sources,
    fade_scale,
    measured_scale,
)
from controller.signals import PowerForecast, parse_pv_forecast
from tests.conftest import EXAMPLE_ENV, stored

ROOT = Path(__file__).resolve().parents[1]
STEP = timedelta(minutes=15)  # 4 steps an hour
N = 24  # 6 hours ahead


def arr(*values: float) -> FloatArray:
    return np.array(values, dtype=np.float64)


def full(n: int, value: float) -> FloatArray:
    return np.full(n, value, dtype=np.float64)


def everywhere(n: int) -> BoolArray:
    return np.ones(n, dtype=np.bool_)


def source(n: int, value: float) -> tuple[FloatArray, BoolArray]:
    return full(n, value), everywhere(n)


def blend(
    ahead_w: float,
    recent_fetched_w: float,
    recent_measured_w: float,
    history_w: float = 0.0,
    recent: int = 12,
) -> FloatArray:
    return blend_pv_w(
        [source(N, ahead_w)],
        full(N, history_w),
        full(recent, recent_measured_w),
        [source(recent, recent_fetched_w)],
        STEP,
    ).power_w


def test_measured_above_the_forecast_scales_it_up_fading_to_1_after_4_hours() -> None:
    out = blend(ahead_w=1000.0, recent_fetched_w=1000.0, recent_measured_w=1200.0)
    assert out[0] == pytest.approx(1200.0)
    assert out[4] == pytest.approx(1000.0 * (1 + 0.2 * 0.75))  # 1 h in: three quarters of the way
    assert out[8] == pytest.approx(1100.0)  # 2 h
    assert list(out[16:]) == pytest.approx([1000.0] * (N - 16))  # 4 h and later: the forecast as fetched


def test_measured_below_the_forecast_scales_it_down() -> None:
    out = blend(ahead_w=1000.0, recent_fetched_w=2000.0, recent_measured_w=1600.0)
    assert out[0] == pytest.approx(800.0)
    assert out[8] == pytest.approx(900.0)


@pytest.mark.parametrize(("measured_w", "scale"), [(3000.0, 1.5), (100.0, 0.5), (0.0, 0.5)])
def test_scale_is_clipped(measured_w: float, scale: float) -> None:
    assert measured_scale(full(12, measured_w), full(12, 1000.0), everywhere(12), STEP) == scale
    assert blend(1000.0, 1000.0, measured_w)[0] == pytest.approx(1000.0 * scale)


def test_scale_compares_only_the_last_3_daylight_hours() -> None:
    # 6 h back: 3 h at half the forecast, then 3 h at 1.2 times it; only the latter count
    measured = np.concatenate([full(12, 500.0), full(12, 1200.0)])
    assert measured_scale(measured, full(24, 1000.0), everywhere(24), STEP) == pytest.approx(1.2)
    # night steps (forecast under 50 W) do not count, however far off they are
    measured = np.concatenate([full(12, 1200.0), full(12, 30.0)])
    fetched = np.concatenate([full(12, 1000.0), full(12, 10.0)])
    assert measured_scale(measured, fetched, everywhere(24), STEP) == pytest.approx(1.2)


def test_scale_is_1_without_enough_to_compare() -> None:
    night = measured_scale(full(24, 0.0), full(24, 20.0), everywhere(24), STEP)
    dawn = measured_scale(arr(0, 0, 0, 900), arr(0, 0, 0, 300), everywhere(4), STEP)  # 15 min of daylight
    no_meter = measured_scale(full(24, np.nan), full(24, 1000.0), everywhere(24), STEP)
    no_recent_forecast = measured_scale(full(24, 800.0), full(24, 1000.0), np.zeros(24, dtype=np.bool_), STEP)
    assert night == dawn == no_meter == no_recent_forecast == 1.0
    # two steps (30 min) of daylight are enough
    assert measured_scale(arr(0, 0, 600, 600), arr(0, 0, 500, 500), everywhere(4), STEP) == pytest.approx(1.2)


def test_unmeasured_steps_are_left_out_of_the_ratio() -> None:
    measured = arr(np.nan, 1500.0, np.nan, 1500.0)
    fetched = arr(100_000.0, 1000.0, 100_000.0, 1000.0)
    assert measured_scale(measured, fetched, everywhere(4), STEP) == pytest.approx(1.5)


def test_fade_is_linear_over_4_hours_on_any_step() -> None:
    assert list(fade_scale(0.5, 6, timedelta(hours=1))) == pytest.approx([0.5, 0.625, 0.75, 0.875, 1.0, 1.0])
    assert list(fade_scale(1.5, 3, timedelta(hours=2))) == pytest.approx([1.5, 1.25, 1.0])


def test_steps_no_source_covers_take_the_history_profile() -> None:
    covered = np.zeros(N, dtype=np.bool_)
    covered[:8] = True
    history = np.linspace(0.0, 2300.0, N)
    out = blend_pv_w([(full(N, 1000.0), covered)], history, full(12, 1000.0), [source(12, 1000.0)], STEP)
    assert list(out.power_w[:8]) == [1000.0] * 8
    assert list(out.power_w[8:]) == pytest.approx(list(history[8:]))  # not scaled: the profile has its own
    assert list(out.fetched) == list(covered)
    nothing = blend_pv_w([], history, full(12, 1000.0), [], STEP)
    assert list(nothing.power_w) == pytest.approx(list(history)) and nothing.scale == 1.0


def test_several_sources_are_averaged_where_they_cover() -> None:
    a_covered = everywhere(4)
    b_covered = np.array([True, True, False, False])
    mean, covered = combine_sources(
        [(arr(1000, 1000, 1000, 1000), a_covered), (arr(2000, 3000, 9999, 9999), b_covered)], 4
    )
    assert list(mean) == [1500.0, 2000.0, 1000.0, 1000.0] and covered.all()
    # the recent comparison uses the same mean: (800 + 1600) / 2 = 1200 forecast, 1500 measured
    out = blend_pv_w(
        [source(N, 1000.0), source(N, 3000.0)],
        full(N, 0.0),
        full(12, 1500.0),
        [source(12, 800.0), source(12, 1600.0)],
        STEP,
    )
    assert out.scale == pytest.approx(1.25)
    assert out.power_w[0] == pytest.approx(2000.0 * 1.25)


def test_blend_never_goes_negative() -> None:
    out = blend_pv_w([(full(N, -50.0), everywhere(N))], full(N, -1.0), full(12, 0.0), [], STEP)
    assert (out.power_w >= 0.0).all()


# ------------------------------------------------------------------------ the daemon's forecasts


def test_daemon_plans_with_the_fetched_forecast_scaled_by_measured_pv(tmp_path: Path) -> None:
    from controller.app import Daemon

    data: dict[str, Any] = yaml.safe_load((ROOT / "configs" / "home.example.yaml").read_text())
    data["storage"] = {"path": str(tmp_path / "v2x.sqlite")}
    data["api"] = {"enabled": False}
    daemon = Daemon(parse_config(data, env=EXAMPLE_ENV))
    step = daemon.site.step
    now = datetime(2026, 6, 1, 10, 7, tzinfo=UTC)
    start = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    store = stored(daemon)
    at = start - timedelta(hours=3)
    while at < start:  # the last 3 hours: 1500 W measured
        store.record_reading("_pv", at, 1500.0)
        at += timedelta(minutes=1)
    store.flush_history(now)
    # the fetched forecast said 2000 W from 04:00 to 16:00
    fetched = PowerForecast(((start - timedelta(hours=6), start + timedelta(hours=6), 2000.0),))
    daemon.forecasts.update_fetched_pv("open_meteo", fetched, now)
    # an MQTT forecast still wins where it covers a step
    noon = start + timedelta(hours=2)
    mqtt = {
        "unit": "kW",
        "forecast": [{"start": noon.isoformat(), "end": (noon + step).isoformat(), "value": 3.5}],
    }
    daemon.inputs.update_pv_forecast(parse_pv_forecast(json.dumps(mqtt).encode()), now)

    _, pv_w = daemon.forecasts.forecasts(now)

    per_hour = round(timedelta(hours=1) / step)
    assert pv_w[0] == pytest.approx(1500.0)  # scaled by 1500 / 2000
    assert pv_w[per_hour] == pytest.approx(2000.0 * (1 - 0.25 * 0.75))  # fading back
    assert pv_w[2 * per_hour] == 3500.0  # MQTT
    assert pv_w[5 * per_hour] == pytest.approx(2000.0)  # faded out
    # Past the fetched forecast: the history profile, which has no day measured, so the last hour's
    # 1500 W held, faded by 6 hours.
    assert pv_w[6 * per_hour] == pytest.approx(1500.0 * math.exp(-6.0 / PV_HOLD_HOURS))
    store.close()
