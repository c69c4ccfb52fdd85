"""Generators, public data, config overrides, tariffs, the progress bar, reports, daemon forecasts."""

from __future__ import annotations

import dataclasses
import io
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from controller.config import ConfigError
from sim.daemon_forecast import DaemonLoadForecast, DaemonPvForecast
from sim.engine import simulate
from sim.generators import generate_scenario
from sim.metrics import compute_metrics
from sim.overrides import apply_overrides, no_discharge, parse_value
from sim.progress import ProgressBar
from sim.public_data import DEFAULT_DATA_DIR, build_public_scenario, read_household_load
from sim.report import format_comparison, format_summary, format_table, monthly_cost_figure, sample_week_start
from sim.runner import RunOptions, make_strategy, run_strategy
from sim.scenario import ScenarioError
from sim.sweep import expand_grid, parse_grid
from sim.tariffs import apply_tariff
from tests.test_sim_support import START, tiny_config, tiny_scenario

HAS_DATA = (DEFAULT_DATA_DIR / "nl_day_ahead_prices_2015_2023.csv").exists()


def test_generated_scenarios_are_seeded_and_plausible() -> None:
    config = tiny_config()
    one = generate_scenario(config, START, 14, seed=5, annual_load_kwh=3650.0)
    two = generate_scenario(config, START, 14, seed=5, annual_load_kwh=3650.0)
    other = generate_scenario(config, START, 14, seed=6, annual_load_kwh=3650.0)
    assert one.series.load_w.tolist() == two.series.load_w.tolist() and one.trips == two.trips
    assert one.series.load_w.tolist() != other.series.load_w.tolist()
    s = one.series
    assert s.steps == 14 * 96
    assert (s.load_w >= 0).all() and (s.pv_w >= 0).all()
    assert s.load_w.mean() == pytest.approx(1000 * 3650 / 8760)
    assert s.pv_w[:16].max() == 0.0 and s.pv_w.max() > 1000.0  # dark at night, producing by day
    assert (s.import_price_per_kwh > s.export_price_per_kwh).all()
    # Monday and Tuesday rules over two weeks: four commutes leaving at 07:00 give or take jitter.
    assert len(one.trips) == 4
    assert all(abs((t.depart - t.depart.replace(hour=7, minute=0)).total_seconds()) < 3600 for t in one.trips)


def test_tariffs() -> None:
    day_ahead = np.array([0.1, -0.05])
    imp, exp = apply_tariff(day_ahead, "dynamic")
    assert imp.tolist() == pytest.approx([(0.1 + 0.14) * 1.21, (-0.05 + 0.14) * 1.21])
    assert exp.tolist() == day_ahead.tolist()
    imp2, exp2 = apply_tariff(day_ahead, "net_metering")
    assert exp2.tolist() == imp2.tolist() == imp.tolist()
    with pytest.raises(ValueError, match="unknown tariff"):
        apply_tariff(day_ahead, "flat")  # type: ignore[arg-type]


@pytest.mark.skipif(not HAS_DATA, reason="public data folder ../shared/data not present")
def test_public_data_scenario() -> None:
    scenario = build_public_scenario(tiny_config(), first_day=120, days=7, annual_load_kwh=3500.0, pv_kwp=4.0)
    s = scenario.series
    assert s.start == datetime(2023, 5, 1, tzinfo=UTC) and s.steps == 7 * 96
    assert s.import_price_per_kwh - 0.14 * 1.21 == pytest.approx(s.export_price_per_kwh * 1.21)
    assert (s.pv_w >= 0).all() and s.pv_w.max() <= 4000.0
    assert scenario.trips  # commutes on Mondays and Tuesdays
    year = read_household_load(DEFAULT_DATA_DIR, "house_21", 3500.0)
    assert len(year) == 35040 and year.sum() / 4000.0 == pytest.approx(3500.0)


def test_public_data_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        build_public_scenario(tiny_config(), tmp_path)
    (tmp_path / "household_loads_15min_kw.csv").write_text("house_0\n1\n")
    with pytest.raises(ScenarioError, match="no household 'house_99'") as caught:
        read_household_load(tmp_path, "house_99", 3500.0)
    assert "household_loads_15min_kw.csv" in str(caught.value)


def test_overrides_by_alias_path_and_star() -> None:
    config = tiny_config()
    changed = apply_overrides(
        config,
        {"reserve_percent": 30, "horizon_hours": 6, "vehicles.*.max_soc_percent": 95, "vehicles.0.name": "x"},
    )
    vehicle = changed.vehicles[0]
    assert vehicle.reserve_percent == 30 and vehicle.max_soc_percent == 95 and vehicle.name == "x"
    assert changed.site.horizon_hours == 6
    assert config.site.horizon_hours == 12  # the original is untouched
    assert apply_overrides(config, {}) is config
    banned = no_discharge(config).vehicles[0].permissions
    assert not banned.v2g and not banned.v2h


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"reserve_percent": 80}, "not above the reserve"),
        ({"vehicles.2.max_soc_percent": 90}, "out of range"),
        ({"vehicles.first.max_soc_percent": 90}, "not a list index"),
        ({"site.name.inner": 1}, "does not lead into the config"),
        ({"horizon_hours": "long"}, "not a number"),
        ({"bogus_field": 1}, "not a known field"),
    ],
)
def test_bad_overrides_are_config_errors(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        apply_overrides(tiny_config(), overrides)
    assert message in str(caught.value)


def test_sweep_grid_parsing() -> None:
    grid = parse_grid(["horizon_hours=24,36", "forecast=daemon,noisy", "nowcast=true"])
    assert grid == {"horizon_hours": [24, 36], "forecast": ["daemon", "noisy"], "nowcast": [True]}
    assert len(expand_grid(grid)) == 4
    assert parse_value("0.05") == 0.05 and parse_value("x") == "x"
    for bad in (["horizon_hours"], ["=1"], ["a=1", "a=2"], ["a="]):
        with pytest.raises(ConfigError):
            parse_grid(bad)


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_redraws_on_a_terminal_and_writes_one_line_otherwise() -> None:
    tty = FakeTty()
    bar = ProgressBar(tty, "mpc")
    for done in range(0, 101, 10):
        bar(done, 100)
    assert tty.getvalue().count("\r") == 11 and tty.getvalue().endswith("100 %    0.0 s\n")
    log = io.StringIO()
    bar = ProgressBar(log, "mpc")
    for done in range(0, 101):
        bar(done, 100)
    assert log.getvalue().count("\n") == 1 and "100 %" in log.getvalue()
    quiet = io.StringIO()
    ProgressBar(quiet, "x", enabled=False)(100, 100)
    assert quiet.getvalue() == ""


def test_progress_bar_time_is_the_closed_loops_wall_time() -> None:
    """Set-up before the loop (here a pause standing in for imports and the first build) is in
    neither figure; the bar's time at 100 % is the run's wall_time_s."""
    scenario = tiny_scenario(days=1)
    log = io.StringIO()
    bar = ProgressBar(log, "smart")
    calls: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        bar(done, total)

    time.sleep(0.3)
    result = simulate(scenario, make_strategy("smart", scenario), progress=progress)
    assert calls[0] == (0, 96) and calls[-1] == (96, 96)
    assert 0.0 <= result.wall_time_s - bar.elapsed_s < 0.05  # the pause is in neither
    assert log.getvalue().rstrip().endswith(f"{bar.elapsed_s:6.1f} s")


def test_summary_and_tables() -> None:
    result = run_strategy(tiny_scenario(days=1), "smart")
    text = format_summary(compute_metrics(result))
    for label in ("total cost", "V2H / V2G", "reserve breaches", "departures", "solves", "EUR"):
        assert label in text
    assert "wall time (closed loop)" in text
    table = format_table(("a", "b"), [("x", "1"), ("long name", "22")])
    assert table.splitlines() == ["a           b", "---------  --", "x           1", "long name  22"]
    assert sample_week_start(result) == 0  # shorter than a week


@pytest.mark.parametrize("months", [1, 2, 12])
def test_the_monthly_cost_plot_keeps_its_title_and_legend_inside(months: int) -> None:
    import matplotlib.pyplot as plt

    names = ("uncontrolled", "smart", "mpc", "perfect", "mpc-no-discharge", "perfect-no-discharge")
    monthly = {
        name: {f"2023-{m:02d}": 10.0 - i for m in range(1, months + 1)} for i, name in enumerate(names)
    }
    fig = monthly_cost_figure(monthly, "EUR")
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        for artist in (ax.title, ax.get_legend()):
            box = artist.get_window_extent(renderer)
            assert box.x0 >= 0 and box.x1 <= fig.bbox.x1 + 0.5 and box.y1 <= fig.bbox.y1 + 0.5, artist
    finally:
        plt.close(fig)


def test_negative_amounts_print_with_one_sign() -> None:
    """A car that ends emptier (negative stored value) and export at negative prices (negative
    revenue): each amount is printed once, with its own sign, in the summary and the table."""
    metrics = compute_metrics(run_strategy(tiny_scenario(days=1), "smart"))
    metrics = dataclasses.replace(
        metrics, import_cost=5.0, export_revenue=-0.67, energy_cost=5.67, stored_energy_value=-2.3
    )
    text = format_summary(metrics)
    assert "--" not in text
    lines = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in text.splitlines())
    assert lines["energy cost"] == "5.67 EUR (import cost 5.00 - export revenue -0.67)"
    assert lines["stored energy value"].startswith("-2.30 EUR (")
    assert lines["total cost"].endswith("EUR (energy + degradation - stored energy value)")
    table = format_comparison({"smart": metrics}).splitlines()
    header = re.split(r"\s{2,}", table[0])
    row = re.split(r"\s{2,}", table[2])
    assert row[header.index("stored value")] == "-2.30"
    assert "--" not in table[2]
    assert table[-1].startswith("(costs in EUR; total cost = energy + degradation - stored value;")
    positive = format_comparison({"smart": dataclasses.replace(metrics, stored_energy_value=1.25)})
    assert re.split(r"\s{2,}", positive.splitlines()[2])[header.index("stored value")] == "1.25"
    tiny = format_summary(dataclasses.replace(metrics, stored_energy_value=-0.001))
    tiny_lines = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in tiny.splitlines())
    assert tiny_lines["stored energy value"].startswith("0.00 EUR (")  # not "-0.00"


def test_daemon_forecasts_run_in_the_loop_and_see_only_the_past() -> None:
    scenario = tiny_scenario(days=2)
    series = scenario.series
    load = DaemonLoadForecast(scenario.config.forecast)
    pv = DaemonPvForecast(scenario.config.forecast)
    k = 120
    out = load.forecast(series.load_w[:k], None, k, 8, 96)
    changed = series.load_w.copy()
    changed[k:] = 9999.0
    assert load.forecast(changed[:k], None, k, 8, 96).tolist() == out.tolist()
    assert len(out) == 8 and (out >= 0).all()
    # PV a day ago at the same time is the profile.
    assert pv.forecast(series.pv_w[:k], None, k, 4, 96).tolist() == pytest.approx(
        series.pv_w[k - 96 : k - 92].tolist()
    )
    result = run_strategy(scenario.window(0, 96), "mpc", RunOptions(forecast="daemon"))
    assert compute_metrics(result).solves == 96


def test_window_keeps_the_trips_that_touch_it() -> None:
    scenario = tiny_scenario(days=2)
    second_day = scenario.window(96, 192)
    assert second_day.series.start == START + timedelta(days=1)
    assert len(second_day.trips) == 1 and second_day.scheduled_trips[0].depart_index == 28
