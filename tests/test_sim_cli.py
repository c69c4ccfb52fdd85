"""``v2x sim`` run / compare / sweep / generate through a real argparse parser and real files."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.cli import MONTHLY_COST_KEY, register
from sim.metrics import RESERVE_TOLERANCE_KWH, compute_metrics
from sim.report import write_power_1min_csv, write_timeseries_csv
from sim.runner import run_strategy
from sim.scenario import write_series_csv, write_trips_csv
from tests.test_sim_support import tiny_scenario, tiny_series, tiny_trips

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "sim" / "examples"
TINY_YAML = """
site:
  name: tiny
  timezone: UTC
  horizon_hours: 8
  replan_interval_minutes: 30
  grid: {import_limit_kw: 17, export_limit_kw: 10}
chargers:
  - {id: wb, max_charge_kw: 7, max_discharge_kw: 5, bidirectional: true, min_current_a: 0}
vehicles:
  - id: car
    usable_capacity_kwh: 40
    max_charge_kw: 7
    max_discharge_kw: 5
    reserve: {percent: 20}
    default_target_soc_percent: 70
    departures:
      monday: {time: "07:00", target_soc_percent: 70}
    permissions: {v2g: true, v2h: true}
    home_charger: wb
tariff:
  import: {static_price_per_kwh: 0.3}
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="v2x")
    register(p.add_subparsers(dest="command", required=True))
    return p


def run(argv: list[str]) -> tuple[int, str]:
    args = parser().parse_args(argv)
    out = io.StringIO()
    code = args.handler(args, out)
    return code, out.getvalue()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    config = tmp_path / "site.yaml"
    config.write_text(TINY_YAML, encoding="utf-8")
    series = tmp_path / "series.csv"
    write_series_csv(series, tiny_series(1.0))
    trips = tmp_path / "trips.csv"
    write_trips_csv(trips, tiny_trips(1))
    return {"config": config, "series": series, "trips": trips}


def scenario_args(files: dict[str, Path]) -> list[str]:
    return [
        "--config",
        str(files["config"]),
        "--series",
        str(files["series"]),
        "--trips",
        str(files["trips"]),
    ]


@pytest.mark.parametrize("command", [[], ["run"], ["compare"], ["sweep"], ["generate"]])
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parser().parse_args(["sim", *command, "--help"])
    assert caught.value.code == 0
    assert "usage: v2x sim" in capsys.readouterr().out


def test_run_writes_metrics_timeseries_and_plots(files: dict[str, Path], tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    code, text = run(
        ["sim", "run", *scenario_args(files), "--strategy", "mpc", "--out", str(out_dir), "--no-progress"]
    )
    assert code == 0
    assert "total cost" in text and "reserve breaches" in text and "solves" in text
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["strategy"] == "mpc" and metrics["steps"] == 96
    # Every 30 minutes, and at once where the daemon re-plans on an event (plug-in, unplug, an
    # announced departure, new prices).
    assert 48 < metrics["solves"] < 96
    assert metrics["reserve_breaches"] == 0 and len(metrics[MONTHLY_COST_KEY]) == 1
    assert MONTHLY_COST_KEY == "monthly_energy_and_degradation_cost" and "monthly_cost" not in metrics
    (month,) = metrics[MONTHLY_COST_KEY].values()
    assert month == pytest.approx(metrics["energy_cost"] + metrics["degradation_cost"])
    assert "wall time (closed loop)" in text
    with (out_dir / "timeseries.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 96 and {"car_power_kw", "car_soc_percent", "grid_kw", "solve_ms"} <= set(rows[0])
    assert {"import_kwh", "export_kwh"} <= set(rows[0])
    assert "power_1min.csv" in text
    with (out_dir / "power_1min.csv").open() as handle:
        minutes = list(csv.DictReader(handle))
    assert len(minutes) == 96 * 15 and list(minutes[0]) == ["time", "car"]
    assert [m["time"] for m in minutes[:2]] == ["2024-03-04T00:00:00Z", "2024-03-04T00:01:00Z"]
    assert minutes[-1]["time"] == "2024-03-04T23:59:00Z"
    # Each step's minutes average to the step's power in timeseries.csv.
    per_step = np.array([float(m["car"]) for m in minutes]).reshape(96, 15).mean(axis=1)
    assert per_step / 1000.0 == pytest.approx([float(r["car_power_kw"]) for r in rows], abs=1e-12)
    for png in ("week.png", "monthly_cost.png"):
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timeseries_csv_reads_back_the_runs_floats_exactly_and_its_energy(tmp_path: Path) -> None:
    """Rounded cells (1 W, 0.01 % SoC) summed over a year drift by Wh: enough for a scorer reading
    the file to see reserve breaches the run never had."""
    result = run_strategy(tiny_scenario(days=2), "mpc")
    path = tmp_path / "timeseries.csv"
    write_timeseries_csv(path, result)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))

    def column(name: str) -> list[float]:
        return [float(row[name]) for row in rows]

    series = result.scenario.series
    assert column("import_price_eur_per_kwh") == series.import_price_per_kwh.tolist()
    assert column("export_price_eur_per_kwh") == series.export_price_per_kwh.tolist()
    assert column("load_kw") == (series.load_w / 1000.0).tolist()
    assert column("pv_kw") == (series.pv_w / 1000.0).tolist()
    assert column("grid_kw") == (result.grid_w / 1000.0).tolist()
    assert column("car_power_kw") == (result.power_w[0] / 1000.0).tolist()
    assert column("car_requested_kw") == (result.requested_w[0] / 1000.0).tolist()
    assert column("car_soc_percent") == result.soc_percent[0].tolist()
    solved = [(float(row["solve_ms"]), ms) for row, ms in zip(rows, result.solve_ms.tolist(), strict=True)]
    assert solved and all(cell == ms for cell, ms in solved if not math.isnan(ms))

    # Energy from the files is the run's energy (to float summation order, far below 1 µWh): import
    # and export as counted inside each step, charge and discharge from the minutes.
    metrics = compute_metrics(result)
    hours = series.step_hours
    grid = np.array(column("grid_kw"))
    power = np.array(column("car_power_kw"))
    assert grid.min() < 0 < grid.max() and power.min() < 0 < power.max()  # imports and exports both
    assert column("import_kwh") == result.import_kwh.tolist()
    assert column("export_kwh") == result.export_kwh.tolist()
    assert sum(column("import_kwh")) == pytest.approx(metrics.import_kwh, rel=0, abs=1e-9)
    assert sum(column("export_kwh")) == pytest.approx(metrics.export_kwh, rel=0, abs=1e-9)
    # The netted step average never shows more import than the minutes do.
    assert (np.maximum(grid, 0.0) * hours <= np.array(column("import_kwh")) + 1e-12).all()
    assert (np.array(column("import_kwh")) - np.array(column("export_kwh"))) == pytest.approx(
        grid * hours, rel=0, abs=1e-9
    )
    minute_path = tmp_path / "power_1min.csv"
    write_power_1min_csv(minute_path, result)
    with minute_path.open(newline="", encoding="utf-8") as handle:
        minute_w = np.array([float(row["car"]) for row in csv.DictReader(handle)])
    assert minute_w.tolist() == result.power_1min_w[0].tolist()
    minute_h = hours / 15
    assert float(np.maximum(minute_w, 0.0).sum() * minute_h / 1000.0) == pytest.approx(
        metrics.charge_kwh, rel=0, abs=1e-9
    )
    assert float(np.maximum(-minute_w, 0.0).sum() * minute_h / 1000.0) == pytest.approx(
        metrics.discharge_kwh, rel=0, abs=1e-9
    )
    # While plugged in (no driving), the stored energy moves by exactly the battery side of the power.
    (spec,) = result.specs
    stored = np.array(column("car_soc_percent")) * spec.capacity_kwh / 100.0
    before = np.concatenate(([result.initial_energy_kwh[0]], stored[:-1]))
    moved = np.where(
        power > 0.0, power * hours * spec.charge_efficiency, power * hours / spec.discharge_efficiency
    )
    plugged = [row["car_plugged_in"] == "1" for row in rows]
    assert any(plugged) and not all(plugged)
    assert (stored - before)[plugged] == pytest.approx(moved[plugged], rel=0, abs=1e-9)
    assert stored[-1] == pytest.approx(metrics.final_energy_kwh, rel=0, abs=1e-12)
    reserve = spec.reserve_kwh - RESERVE_TOLERANCE_KWH
    assert int(((stored < reserve) & (power < 0.0)).sum()) == metrics.reserve_breaches


def test_compare_prints_one_table_with_shares(files: dict[str, Path], tmp_path: Path) -> None:
    out_dir = tmp_path / "cmp"
    code, text = run(
        [
            "sim",
            "compare",
            *scenario_args(files),
            "--with-no-discharge",
            "--out",
            str(out_dir),
            "--no-progress",
        ]
    )
    assert code == 0
    lines = text.splitlines()
    for name in ("uncontrolled", "smart", "mpc", "perfect", "mpc-no-discharge", "perfect-no-discharge"):
        assert any(line.startswith(name + " ") for line in lines), name
    assert "share of perfect saving" in text and "100.0 %" in text
    assert "stored value" in text and "total cost = energy + degradation - stored value" in text
    assert "value of discharging (perfect without discharge - perfect): " in text
    assert "value of discharging captured by mpc (perfect without discharge - mpc): " in text
    assert "discharging's own worth to mpc (mpc without discharge - mpc): " in text
    assert f"wrote comparison.json, comparison.csv, monthly_cost.png to {out_dir}" in text
    rows = json.loads((out_dir / "comparison.json").read_text())["strategies"]
    assert [r["strategy"] for r in rows][:4] == ["uncontrolled", "smart", "mpc", "perfect"]
    assert (out_dir / "monthly_cost.png").exists() and (out_dir / "comparison.csv").exists()


def test_information_options_reach_the_run(files: dict[str, Path]) -> None:
    from sim.cli import _options
    from sim.runner import RunOptions

    args = parser().parse_args(
        [
            "sim",
            "run",
            *scenario_args(files),
            "--out",
            "unused",
            "--load-forecast",
            "oracle",
            "--pv-forecast",
            "noisy",
            "--nowcast",
            "--prices",
            "all",
            "--trip-info",
            "calendar",
            "--trip-energy",
            "actual",
            "--seed",
            "3",
        ]
    )
    assert _options(args) == RunOptions(
        forecast="daemon",
        load_forecast="oracle",
        pv_forecast="noisy",
        nowcast=True,
        prices="all",
        trip_info="calendar",
        trip_energy="actual",
        seed=3,
    )
    defaults = parser().parse_args(["sim", "run", *scenario_args(files), "--out", "unused"])
    assert _options(defaults) == RunOptions()


def test_run_with_schedule_only_trip_info_announces_nothing_and_keeps_the_reserve(
    files: dict[str, Path], tmp_path: Path
) -> None:
    from controller.config import ConfigError
    from sim.cli import _options
    from sim.runner import RunOptions
    from sim.sweep import validate_points

    args = ["sim", "run", *scenario_args(files), "--strategy", "mpc", "--no-progress"]
    assert _options(parser().parse_args([*args, "--out", "x", "--trip-info", "schedule-only"])).trip_info == (
        "schedule-only"
    )
    out_dir = tmp_path / "schedule-only"
    code, text = run([*args, "--out", str(out_dir), "--trip-info", "schedule-only"])
    assert code == 0, text
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["strategy"] == "mpc" and metrics["steps"] == 96 and metrics["reserve_breaches"] == 0
    assert metrics["avoidable_shortfalls"] == 0
    scenario = tiny_scenario(days=1)
    validate_points(scenario, [{"trip_info": "schedule-only"}], RunOptions())
    with pytest.raises(ConfigError, match="trip_info"):
        validate_points(scenario, [{"trip_info": "rumour"}], RunOptions())


def test_sweep_on_a_local_process_pool(files: dict[str, Path], tmp_path: Path) -> None:
    out_dir = tmp_path / "sweep"
    code, text = run(
        [
            "sim",
            "sweep",
            *scenario_args(files),
            "--strategy",
            "smart",
            "--param",
            "reserve_percent=20,30",
            "--param",
            "forecast=daemon",
            "--workers",
            "2",
            "--out",
            str(out_dir),
            "--no-progress",
        ]
    )
    assert code == 0, text
    assert "2 point(s)" in text
    points = json.loads((out_dir / "sweep.json").read_text())["points"]
    assert [p["overrides"]["reserve_percent"] for p in points] == [20, 30]
    assert all(p["metrics"]["strategy"] == "smart" for p in points)


@pytest.mark.timeout(60)
def test_sweep_on_a_dask_cluster(files: dict[str, Path]) -> None:
    """A real cluster: the points run in a separate worker process, not in the test process."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
        protocol="tcp",
        timeout="30s",
    ) as cluster:
        with distributed.Client(cluster.scheduler_address, timeout="30s") as client:
            (worker_pid,) = client.run(os.getpid).values()
        assert worker_pid != os.getpid()
        code, text = run(
            [
                "sim",
                "sweep",
                *scenario_args(files),
                "--strategy",
                "uncontrolled",
                "--param",
                "degradation_cost_per_kwh=0.01,0.1",
                "--dask",
                cluster.scheduler_address,
                "--no-progress",
            ]
        )
    assert code == 0, text
    lines = [line for line in text.splitlines() if line.startswith(("0.01", "0.1"))]
    assert len(lines) == 2
    assert float(lines[0].split()[3]) < float(lines[1].split()[3])  # degradation cost grows


def test_generate_writes_a_scenario_that_runs(tmp_path: Path, files: dict[str, Path]) -> None:
    out_dir = tmp_path / "gen"
    code, text = run(
        [
            "sim",
            "generate",
            "--config",
            str(files["config"]),
            "--days",
            "2",
            "--seed",
            "4",
            "--out",
            str(out_dir),
        ]
    )
    assert code == 0 and "192 steps" in text
    code, text = run(
        [
            "sim",
            "run",
            "--config",
            str(files["config"]),
            "--series",
            str(out_dir / "series.csv"),
            "--trips",
            str(out_dir / "trips.csv"),
            "--strategy",
            "smart",
            "--pv-forecast",
            "noisy",
            "--nowcast",
            "--out",
            str(tmp_path / "r"),
            "--no-plots",
            "--no-progress",
        ]
    )
    assert code == 0, text


def bad(files: dict[str, Path], tmp_path: Path, kind: str) -> list[str]:
    base = ["sim", "run", *scenario_args(files), "--out", str(tmp_path / "o"), "--no-progress", "--no-plots"]
    if kind == "config":
        files["config"].write_text(TINY_YAML.replace("usable_capacity_kwh: 40", "usable_capacity_kwh: -4"))
    elif kind == "series":
        lines = files["series"].read_text().splitlines()
        lines[5] = lines[5].replace(lines[5].split(",")[3], "lots")
        files["series"].write_text("\n".join(lines) + "\n")
    elif kind == "trips":
        files["trips"].write_text(
            "vehicle,depart,arrive,energy_kwh\nvan,2024-03-04T07:00:00Z,2024-03-04T08:00:00Z,2\n"
        )
    elif kind == "no charger":
        files["config"].write_text(TINY_YAML.replace("    home_charger: wb\n", ""))
    elif kind == "no vehicles":
        files["config"].write_text(
            TINY_YAML.split("vehicles:")[0] + "tariff:\n  import: {static_price_per_kwh: 0.3}\n"
        )
    elif kind == "soc":
        base += ["--initial-soc", "car=150"]
    elif kind == "trip energy":
        base += ["--trip-energy", "actual"]  # only the calendar carries each trip's energy
    elif kind == "out":
        blocker = tmp_path / "file"
        blocker.write_text("x")
        base[base.index("--out") + 1] = str(blocker / "sub")
    return base


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("config", ["site.yaml", "vehicles[0].usable_capacity_kwh"]),
        ("series", ["series.csv", "row 5", "column load_kw", "'lots' is not a number"]),
        ("trips", ["trips.csv", "row 1", "column vehicle", "unknown vehicle 'van'"]),
        ("soc", ["--initial-soc car=150", "outside 0-100"]),
        ("trip energy", ["--trip-energy actual needs --trip-info calendar"]),
        ("no charger", ["site.yaml", "vehicles[0].home_charger is not set"]),
        ("no vehicles", ["site.yaml", "no vehicles"]),
        ("out", ["cannot create output directory"]),
    ],
)
def test_bad_inputs_exit_2_naming_the_problem(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, expected: list[str]
) -> None:
    code, _ = run(bad(files, tmp_path, kind))
    assert code == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err


def test_bad_sweep_and_compare_arguments_exit_2(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run(["sim", "sweep", *scenario_args(files), "--param", "reserve_percent", "--no-progress"])
    assert code == 2 and "NAME=V1,V2" in capsys.readouterr().err
    code, _ = run(["sim", "sweep", *scenario_args(files), "--param", "reserve_percent=150", "--no-progress"])
    assert code == 2 and "reserve" in capsys.readouterr().err
    code, _ = run(["sim", "sweep", *scenario_args(files), "--param", "vehicles.3.x=1", "--no-progress"])
    assert code == 2 and "out of range" in capsys.readouterr().err
    code, _ = run(["sim", "sweep", *scenario_args(files), "--param", "forecast=crystal", "--no-progress"])
    assert code == 2 and "crystal" in capsys.readouterr().err
    code, _ = run(["sim", "sweep", *scenario_args(files), "--param", "trip_energy=actual", "--no-progress"])
    assert code == 2 and "needs trip_info calendar" in capsys.readouterr().err
    code, _ = run(["sim", "compare", *scenario_args(files), "--strategies", "mpc,magic", "--no-progress"])
    assert code == 2 and "magic" in capsys.readouterr().err
    code, _ = run(
        [
            "sim",
            "sweep",
            *scenario_args(files),
            "--param",
            "horizon_hours=8",
            "--dask",
            "tcp://127.0.0.1:1",
            "--dask-timeout",
            "1",
        ]
    )
    assert code == 2 and "--dask tcp://127.0.0.1:1" in capsys.readouterr().err
    dask_args = ["--param", "horizon_hours=8", "--dask", "nonsense://x", "--dask-timeout", "1"]
    code, _ = run(["sim", "sweep", *scenario_args(files), *dask_args])
    assert code == 2 and "--dask nonsense://x" in capsys.readouterr().err


def test_the_shipped_example_runs_from_a_clean_clone(tmp_path: Path) -> None:
    code, text = run(
        [
            "sim",
            "run",
            "--config",
            str(EXAMPLE / "home.yaml"),
            "--series",
            str(EXAMPLE / "series.csv"),
            "--trips",
            str(EXAMPLE / "trips.csv"),
            "--strategy",
            "smart",
            "--out",
            str(tmp_path / "ex"),
            "--no-progress",
            "--no-plots",
        ]
    )
    assert code == 0 and "21 days" in text


def test_run_without_matplotlib_names_the_sim_extra(
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as in the daemon's install: no plot stack
    argv = ["sim", "run", *scenario_args(files), "--strategy", "uncontrolled", "--no-progress"]
    code, _ = run([*argv, "--out", str(tmp_path / "plots")])
    assert code == 2
    message = capsys.readouterr().err
    assert "pip install 'v2x-controller[sim]'" in message and "--no-plots" in message
    code, _ = run([*argv, "--out", str(tmp_path / "none"), "--no-plots"])
    assert code == 0 and (tmp_path / "none" / "metrics.json").exists()
