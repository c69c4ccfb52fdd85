"""Snapshot files, `v2x plan`, `v2x schema snapshot`, and what the shipped examples show."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.cli import main
from controller.config import ConfigError, load_config
from controller.domain import Plan
from controller.optimizer import Planner, SnapshotError
from controller.snapshot import Snapshot, load_snapshot, parse_snapshot

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "configs" / "snapshots"
HOME = ROOT / "configs" / "home.example.yaml"
V2H_ONLY = EXAMPLES / "v2h-only.yaml"
EXAMPLE_CONFIG = {
    "evening-peak": HOME,
    "negative-midday": HOME,
    "unreachable-target": HOME,
    "v2l-session": HOME,
    "grid-cap": HOME,
    "v2g-off": V2H_ONLY,
}


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return data


def write(tmp_path: Path, data: Any, name: str = "snap.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, default=str))
    return path


@pytest.fixture(scope="module")
def plans() -> dict[str, tuple[Plan, Snapshot]]:
    out = {}
    for name, cfg_path in EXAMPLE_CONFIG.items():
        snap = load_snapshot(EXAMPLES / f"{name}.json")
        out[name] = (Planner(load_config(cfg_path, env={})).plan(snap), snap)
    return out


def test_every_example_is_documented_and_plans_optimally(plans: dict[str, tuple[Plan, Snapshot]]) -> None:
    shipped = {p.stem for p in EXAMPLES.glob("*.json")}
    assert shipped == set(EXAMPLE_CONFIG)
    for name, (plan, snap) in plans.items():
        assert plan.solver_status == "optimal", name
        assert snap.description and "Config:" in snap.description
        assert plan.steps == 96 and not plan.fallback


def test_example_evening_peak_exports_in_the_peak_and_leaves_at_target(
    plans: dict[str, tuple[Plan, Snapshot]],
) -> None:
    plan, snap = plans["evening-peak"]
    vp = plan.vehicles["family-ev"]
    peak = int(np.argmax(plan.import_price_per_kwh[:12]))
    assert vp.power_w[peak] < -5000 and plan.grid_export_w[peak] > 5000
    assert snap.vehicles[0].departure is not None
    k = plan.step_index(snap.vehicles[0].departure.at)
    assert k is not None and vp.soc_percent[k] >= 80 - 1e-4
    assert vp.departure_shortfall_kwh < 1e-4


def test_example_negative_midday_charges_while_prices_are_negative(
    plans: dict[str, tuple[Plan, Snapshot]],
) -> None:
    plan, _ = plans["negative-midday"]
    vp = plan.vehicles["family-ev"]
    negative = [k for k, p in enumerate(plan.import_price_per_kwh) if p < -0.3]
    assert negative and all(vp.power_w[k] > 10_000 for k in negative)


def test_example_v2g_off_never_exports_car_energy(plans: dict[str, tuple[Plan, Snapshot]]) -> None:
    plan, snap = plans["v2g-off"]
    uncovered = np.maximum(np.asarray(snap.load_w) - np.asarray(snap.pv_w), 0)
    discharge = np.maximum(-np.asarray(plan.vehicles["family-ev"].power_w), 0)
    assert discharge.max() > 100  # it does cover the home ...
    assert np.all(discharge <= uncovered + 1e-6)  # ... and nothing more
    surplus = np.maximum(np.asarray(snap.pv_w) - np.asarray(snap.load_w), 0)
    assert np.all(np.asarray(plan.grid_export_w) <= surplus + 1e-6)


def test_example_unreachable_target_charges_flat_out_and_reports_shortfall(
    plans: dict[str, tuple[Plan, Snapshot]],
) -> None:
    plan, _ = plans["unreachable-target"]
    vp = plan.vehicles["family-ev"]
    assert vp.power_w[:6] == (11_000.0,) * 6
    assert vp.departure_shortfall_kwh > 30
    assert "only 40 % reachable" in vp.reason


def test_example_v2l_session_is_cut_so_the_drive_home_keeps_the_reserve(
    plans: dict[str, tuple[Plan, Snapshot]],
) -> None:
    plan, _ = plans["v2l-session"]
    vp = plan.vehicles["family-ev"]
    reserve = 100 * 80 * 17 / 100 / 77
    v2l = np.asarray(vp.v2l_power_w)
    assert v2l[0] == pytest.approx(1500.0) and v2l[-1] == 0.0  # served now, cut later
    assert min(vp.soc_percent) >= reserve - 1e-4
    assert "V2L 1.5 kW" in vp.reason


def test_example_grid_cap_is_respected_and_the_car_covers_the_rest(
    plans: dict[str, tuple[Plan, Snapshot]],
) -> None:
    plan, snap = plans["grid-cap"]
    assert snap.import_limit_w is not None
    cap = np.asarray(snap.import_limit_w)
    assert np.all(np.asarray(plan.grid_import_w) <= cap + 1e-6)
    capped = cap < 5000
    assert np.any(np.asarray(snap.load_w)[capped] > 4200)
    assert all(plan.vehicles["family-ev"].power_w[k] <= 0 for k in np.flatnonzero(capped))


# ------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("name", sorted(EXAMPLE_CONFIG))
def test_cli_plan_prints_a_table(name: str) -> None:
    out = io.StringIO()
    code = main(
        ["plan", "--config", str(EXAMPLE_CONFIG[name]), "--snapshot", str(EXAMPLES / f"{name}.json")], out=out
    )
    assert code == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("plan from ") and "solver optimal" in lines[0]
    assert any(line.startswith("family-ev: ") for line in lines)
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("time"))
    assert len(lines) - header - 1 == 96


def test_cli_plan_json_has_every_step() -> None:
    out = io.StringIO()
    code = main(
        ["plan", "--config", str(HOME), "--snapshot", str(EXAMPLES / "evening-peak.json"), "--json"], out=out
    )
    assert code == 0
    data = json.loads(out.getvalue())
    assert data["solver_status"] == "optimal" and data["fallback"] is False
    assert len(data["grid_import_w"]) == 96 == len(data["import_price_per_kwh"])
    vp = data["vehicles"]["family-ev"]
    assert len(vp["power_w"]) == 96 and len(vp["soc_percent"]) == 97
    assert vp["current_power_w"] == vp["power_w"][0] and vp["reason"]


def test_cli_plan_fallback_exits_1(tmp_path: Path) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text(HOME.read_text() + "\noptimizer:\n  solver_time_limit_s: 0.000000001\n")
    out = io.StringIO()
    code = main(["plan", "--config", str(cfg), "--snapshot", str(EXAMPLES / "evening-peak.json")], out=out)
    assert code == 1
    assert "(FALLBACK)" in out.getvalue() and "fallback plan: " in out.getvalue()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["vehicles"][0].update(soc_percent=150), "vehicles[0].soc_percent: 150 is above 100"),
        (lambda d: d.update(time="2023-11-29T15:00:00"), "time: Input should have timezone info"),
        (lambda d: d.update(pv_w=d["pv_w"][:10]), "pv_w has 10 values but load_w has 96"),
        (lambda d: d["load_w"].__setitem__(3, "lots"), "load_w[3]: 'lots' is not a number"),
        (lambda d: d["vehicles"].append(dict(d["vehicles"][0])), "vehicle 'family-ev' is listed twice"),
        (lambda d: d.update(colour="red"), "colour: is not a known field"),
        (lambda d: d["import_price_per_kwh"].__setitem__(0, 50), "import_price_per_kwh[0]: 50 is above 10"),
        (
            lambda d: d["vehicles"][0].update(
                away=[
                    {"depart": "2022-10-01T08:00:00Z", "arrive": "2022-10-01T07:00:00Z", "energy_kwh": 5},
                ]
            ),
            "vehicles[0].away[0]: arrive must be after depart",
        ),
        (
            lambda d: d["vehicles"][0].update(
                away=[
                    {"depart": "2022-10-01T08:00:00Z", "arrive": "2022-10-01T12:00:00Z", "energy_kwh": 5},
                    {"depart": "2022-10-01T11:00:00Z", "arrive": "2022-10-01T13:00:00Z", "energy_kwh": 5},
                ]
            ),
            "trip 1 departs before trip 0 arrives",
        ),
        (lambda d: d["vehicles"][0].update(id="ghost"), "vehicles[0].id: unknown vehicle 'ghost'"),
        (lambda d: d.update(step_minutes=60), "step_minutes: 60 does not match"),
        (
            lambda d: [d[k].__delitem__(slice(48, None)) for k in list(d) if k.endswith(("_w", "_kwh"))],
            "load_w: has 48 values",
        ),
    ],
)
def test_cli_plan_bad_snapshot_exit_2_with_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate: Any, expected: str
) -> None:
    data = example("evening-peak")
    mutate(data)
    path = write(tmp_path, data)
    assert main(["plan", "--config", str(HOME), "--snapshot", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: ") and expected in err, err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"time": ', "line 1, column 10: malformed JSON"),
        ("[1, 2]", "(top level): is not an object"),
        ('{"load_w": [NaN]}', "NaN is not a number JSON allows"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_cli_plan_malformed_file_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | bytes, expected: str
) -> None:
    path = tmp_path / "bad.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    assert main(["plan", "--config", str(HOME), "--snapshot", str(path)]) == 2
    assert expected in capsys.readouterr().err


def test_cli_plan_missing_files_and_bad_config_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = str(EXAMPLES / "evening-peak.json")
    assert main(["plan", "--config", str(HOME), "--snapshot", str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: {grid: {}}\n")
    assert main(["plan", "--config", str(bad), "--snapshot", snap]) == 2
    assert "site.grid.import_limit_kw: is required" in capsys.readouterr().err


def test_cli_schema_snapshot_and_config() -> None:
    out = io.StringIO()
    assert main(["schema", "snapshot"], out=out) == 0
    schema = json.loads(out.getvalue())
    assert {"time", "load_w", "pv_w", "import_price_per_kwh", "export_price_per_kwh"} <= set(
        schema["required"]
    )
    assert "VehicleSnapshot" in schema["$defs"] and "Trip" in schema["$defs"]
    out = io.StringIO()
    assert main(["schema", "config"], out=out) == 0
    assert "site" in json.loads(out.getvalue())["required"]


def test_cli_bad_schema_kind_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["schema", "plans"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_parse_snapshot_and_planner_errors_carry_paths() -> None:
    with pytest.raises(ConfigError) as info:
        parse_snapshot({"time": "2025-01-01T00:00:00Z"})
    paths = {i.path for i in info.value.issues}
    assert {"load_w", "pv_w", "import_price_per_kwh", "export_price_per_kwh"} <= paths
    data = example("evening-peak")
    data["vehicles"][0]["id"] = "other"
    snap = parse_snapshot(data)
    with pytest.raises(SnapshotError) as err:
        Planner(load_config(HOME, env={})).plan(snap)
    assert str(err.value.issues[0]).startswith("vehicles[0].id: unknown vehicle 'other'")


def test_times_are_kept_in_utc() -> None:
    snap = load_snapshot(EXAMPLES / "evening-peak.json")
    departure = snap.vehicles[0].departure
    assert departure is not None
    assert departure.at.utcoffset() is not None and departure.at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert departure.at.hour == 5 and departure.at.minute == 30  # 07:30 +02:00


def test_cli_plan_json_stdout_is_pure_json_in_a_fresh_process() -> None:
    # The solver must not print its banner to stdout: `v2x plan --json | jq` has to work.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller",
            "plan",
            "--config",
            str(HOME),
            "--snapshot",
            str(EXAMPLES / "grid-cap.json"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["solver_status"] == "optimal"
    assert "HiGHS" not in proc.stdout + proc.stderr


def test_cli_plan_into_a_closed_pipe_stops_quietly() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller",
            "plan",
            "--config",
            str(HOME),
            "--snapshot",
            str(EXAMPLES / "evening-peak.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the plan is printed (like `| head -0`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err
