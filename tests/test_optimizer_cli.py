"""Snapshot files, `v2x plan`, `v2x schema snapshot`, and what the shipped examples show."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from controller.cli import main
from controller.config import ConfigError, load_config, parse_config
from controller.domain import Plan
from controller.optimizer import Planner, SnapshotError
from controller.snapshot import Snapshot, load_snapshot, parse_snapshot
from tests.conftest import EXAMPLE_ENV

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


@pytest.fixture(autouse=True)
def _example_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """`v2x plan` on configs/home.example.yaml reads the charger's password hash from the environment."""
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)


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
        out[name] = (Planner(load_config(cfg_path, env=EXAMPLE_ENV)).plan(snap), snap)
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
    # The example's wallbox runs at 4.14 kW at least (6 A on three phases) and the home never draws
    # that much: every discharge would be a pulse mostly exported, so the car gives nothing.
    plan, snap = plans["v2g-off"]
    uncovered = np.maximum(np.asarray(snap.load_w) - np.asarray(snap.pv_w), 0)
    assert uncovered.max() < 4140
    surplus = np.maximum(np.asarray(snap.pv_w) - np.asarray(snap.load_w), 0)
    assert min(plan.vehicles["family-ev"].power_w) >= 0
    assert np.all(np.asarray(plan.grid_export_w) <= surplus + 1e-6)
    # A box without a minimum covers the home, and nothing more; one that switches to one phase
    # (1.38 kW at least) only in the steps where the home covers that pulse.
    for charger, smallest_w in (({"min_current_a": 0}, 0.0), ({"phase_switching": True}, 1380.0)):
        data = yaml.safe_load(V2H_ONLY.read_text())
        data["chargers"][0].update(charger)
        plan = Planner(parse_config(data, env={})).plan(snap)
        discharge = np.maximum(-np.asarray(plan.vehicles["family-ev"].power_w), 0)
        assert discharge.max() > 100, charger  # it does cover the home ...
        assert np.all(discharge <= uncovered + 1e-6)  # ... and nothing more
        assert np.all(discharge[uncovered < smallest_w] == 0), charger
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
    plan, snap = plans["v2l-session"]
    vp = plan.vehicles["family-ev"]
    car = load_config(HOME, env=EXAMPLE_ENV).vehicles[0]
    capacity, eta_d = car.usable_capacity_kwh, car.discharge_efficiency
    reserve_kwh = 80 * 17 / 100  # 80 km at 17 kWh/100 km
    state = snap.vehicles[0]
    assert state.v2l is not None and state.v2l.end is not None and state.soc_percent is not None
    trip = state.away[0]
    session_end = plan.step_index(state.v2l.end)
    assert session_end is not None and plan.start >= state.v2l.start  # the session runs from step 0
    v2l = np.asarray(vp.v2l_power_w)
    # Served in full while the budget allows, then cut for good, well before the session ends.
    cut = int(np.argmax(v2l < 1500.0 - 1e-6))
    assert cut >= 4 and np.all(v2l[:cut] == pytest.approx(1500.0))
    assert cut + 1 < session_end and np.all(v2l[cut + 1 :] == 0.0)
    assert state.v2l.power_w == 1500.0  # still asked for where it is cut
    # The budget: everything above the reserve that the drive home does not need.
    hours = plan.step.total_seconds() / 3600
    served_kwh = float(v2l.sum()) / 1000 * hours
    budget_kwh = capacity * state.soc_percent / 100 - trip.energy_kwh - reserve_kwh
    assert served_kwh / eta_d == pytest.approx(budget_kwh, abs=1e-3)
    # ... so the drive home ends exactly at the reserve, never below it.
    arrive = plan.step_index(trip.arrive)
    assert arrive is not None
    assert vp.soc_percent[arrive] == pytest.approx(100 * reserve_kwh / capacity, abs=1e-3)
    assert min(vp.soc_percent) >= 100 * reserve_kwh / capacity - 1e-4
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
    assert "battery wear" in lines[1] and ", total cost " in lines[1]
    assert any(line.startswith("family-ev: ") for line in lines)
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("time"))
    assert len(lines) - header - 1 == 96


PLAN_FIELDS = {
    "created_at",
    "start",
    "step_minutes",
    "steps",
    "solver_status",
    "solve_time_ms",
    "fallback",
    "objective",
    "import_cost",
    "export_revenue",
    "degradation_cost",
    "total_cost",
    "notes",
    "vehicles",
    "batteries",
    "grid_import_w",
    "grid_export_w",
    "import_price_per_kwh",
    "export_price_per_kwh",
}
VEHICLE_FIELDS = {
    "reason",
    "current_power_w",
    "departure_shortfall_kwh",
    "throughput_kwh",
    "power_w",
    "soc_percent",
    "v2l_power_w",
}


def documented_json_fields() -> tuple[set[str], set[str]]:
    """The fields docs/optimizer.md lists for `v2x plan --json` (plan level, per vehicle)."""
    text = (ROOT / "docs" / "optimizer.md").read_text()
    section = text.split("### Plan JSON", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| `")]
    plan_fields = {r[1].strip().strip("`") for r in rows if not r[1].strip().startswith("`vehicles.")}
    vehicle_fields = {
        r[1].strip().strip("`").split(".", 2)[2] for r in rows if r[1].strip().startswith("`vehicles.")
    }
    return plan_fields, vehicle_fields


def test_cli_plan_json_carries_every_documented_field() -> None:
    out = io.StringIO()
    snap_path = EXAMPLES / "evening-peak.json"
    code = main(["plan", "--config", str(HOME), "--snapshot", str(snap_path), "--json"], out=out)
    assert code == 0
    data = json.loads(out.getvalue())
    assert documented_json_fields() == (PLAN_FIELDS, VEHICLE_FIELDS)
    assert set(data) == PLAN_FIELDS
    snap = load_snapshot(snap_path)
    cfg = load_config(HOME, env=EXAMPLE_ENV)
    car = cfg.vehicles[0]
    n = 96
    dt = 0.25

    # The step grid and the solver.
    assert datetime.fromisoformat(data["created_at"]) == snap.time
    start = datetime.fromisoformat(data["start"])
    assert start == snap.time.replace(minute=snap.time.minute // 15 * 15, second=0, microsecond=0)
    assert data["step_minutes"] == 15 and data["steps"] == n
    assert data["solver_status"] == "optimal" and data["fallback"] is False
    assert isinstance(data["solve_time_ms"], float) and 0 < data["solve_time_ms"] < 2000
    assert isinstance(data["objective"], float)
    assert isinstance(data["notes"], list) and all(isinstance(x, str) for x in data["notes"])

    # Per step: grid and prices, and the balance with the home and the car.
    imp, exp = np.asarray(data["grid_import_w"]), np.asarray(data["grid_export_w"])
    assert imp.shape == exp.shape == (n,)
    assert np.all(imp >= 0) and np.all(exp >= 0)
    assert data["import_price_per_kwh"] == snap.import_price_per_kwh[:n]
    assert data["export_price_per_kwh"] == snap.export_price_per_kwh[:n]
    assert set(data["vehicles"]) == {"family-ev"}
    vp = data["vehicles"]["family-ev"]
    assert set(vp) == VEHICLE_FIELDS
    power = np.asarray(vp["power_w"])
    soc = np.asarray(vp["soc_percent"])
    v2l = np.asarray(vp["v2l_power_w"])
    assert power.shape == v2l.shape == (n,) and soc.shape == (n + 1,)
    home = np.asarray(snap.load_w[:n]) - np.asarray(snap.pv_w[:n])
    assert np.allclose(imp - exp, home + power, atol=0.2)  # rounded to 0.1 W
    # Both at once only where the car is pulsed below the wallbox's 4.14 kW: the pulse exports
    # what the home does not take (1 - load / 4.14 of the discharge).
    pulsed = (np.abs(power) > 0) & (np.abs(power) < 4140 - 1)
    assert np.all(np.minimum(imp, exp)[~pulsed] == 0)
    share = np.where((home > 0) & (home < 4140), 1 - home / 4140, 0.0)
    assert np.allclose(
        exp, np.maximum(np.maximum(-(home + power), 0), share * np.maximum(-power, 0)), atol=0.2
    )
    assert vp["current_power_w"] == power[0]
    assert np.all(v2l == 0)

    # Per vehicle: SoC trajectory from the snapshot's SoC, following the setpoints.
    assert snap.vehicles[0].soc_percent is not None
    assert soc[0] == pytest.approx(snap.vehicles[0].soc_percent)
    stored = np.where(power > 0, power * car.charge_efficiency, power / car.discharge_efficiency)
    gained = stored / 1000 * dt / car.usable_capacity_kwh * 100
    assert np.allclose(np.diff(soc), gained, atol=2e-3)  # no trip in this snapshot
    assert any(word in vp["reason"] for word in ("charging", "exporting", "holding", "waiting"))

    # Totals: money, energy through the battery, shortfall.
    import_cost = float(np.dot(data["import_price_per_kwh"], imp / 1000 * dt))
    export_revenue = float(np.dot(data["export_price_per_kwh"], exp / 1000 * dt))
    assert data["import_cost"] == pytest.approx(import_cost, abs=1e-4)
    assert data["export_revenue"] == pytest.approx(export_revenue, abs=1e-4)
    through = float(
        np.sum(np.where(power > 0, power * car.charge_efficiency, -power / car.discharge_efficiency))
        / 1000
        * dt
    )
    assert vp["throughput_kwh"] == pytest.approx(through, abs=1e-3) and through > 10
    assert data["degradation_cost"] == pytest.approx(car.degradation_cost_per_kwh * through, abs=1e-4)
    assert data["total_cost"] == pytest.approx(
        data["import_cost"] - data["export_revenue"] + data["degradation_cost"], abs=1e-9
    )
    # total_cost leaves out the penalties and the value of energy left at the end (objective has them).
    assert data["total_cost"] != pytest.approx(data["objective"], abs=1e-3)
    departure = snap.vehicles[0].departure
    assert departure is not None
    k = int((departure.at - start) / timedelta(minutes=15))
    assert soc[k] >= departure.target_soc_percent - 1e-3 and vp["departure_shortfall_kwh"] == 0.0


def test_cli_plan_json_of_a_fallback_plan_and_a_shortfall(tmp_path: Path) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text(HOME.read_text() + "\noptimizer:\n  solver_time_limit_s: 0.000000001\n")
    out = io.StringIO()
    snap_path = EXAMPLES / "unreachable-target.json"
    assert main(["plan", "--config", str(cfg), "--snapshot", str(snap_path), "--json"], out=out) == 1
    data = json.loads(out.getvalue())
    assert set(data) == PLAN_FIELDS
    assert data["fallback"] is True and data["objective"] is None
    assert data["solver_status"].startswith("fallback: time limit")
    assert data["solve_time_ms"] == 0.0
    vp = data["vehicles"]["family-ev"]
    assert vp["reason"].startswith("fallback plan: ")
    assert vp["departure_shortfall_kwh"] > 30  # 20 % -> 90 % in 1.5 h: reported in the fallback too
    assert data["total_cost"] == pytest.approx(
        data["import_cost"] - data["export_revenue"] + data["degradation_cost"], abs=1e-9
    )


def test_readme_and_docs_give_each_example_its_config() -> None:
    readme = (ROOT / "README.md").read_text()
    docs = (ROOT / "docs" / "optimizer.md").read_text()
    for name, cfg_path in EXAMPLE_CONFIG.items():
        cfg = cfg_path.relative_to(ROOT).as_posix()
        assert f"v2x plan --config {cfg} --snapshot configs/snapshots/{name}.json" in readme, name
        assert f"| `{name}.json` | `{cfg}` |" in docs, name
        assert f"Config: {cfg}." in (load_snapshot(EXAMPLES / f"{name}.json").description or ""), name


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
        Planner(load_config(HOME, env=EXAMPLE_ENV)).plan(snap)
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
