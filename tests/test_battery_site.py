"""Home batteries in the site state: readings into the planner's snapshot and the dispatcher's inputs
(stale and retained values unknown, never the whole site), the home load without the battery, the
config checks with their paths and fixes, and the shipped example with a battery."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from controller.cli import main
from controller.config import ConfigError, SiteConfig, load_config, parse_config
from controller.dispatch.battery_command import BatteryCommand
from controller.domain import BatteryPlan, MeterReading, MeterRole
from controller.mqtt.payloads import plan_payload
from controller.optimizer import Planner
from controller.site import Site
from controller.site_batteries import batteries_power_w, home_load_w
from controller.snapshot import load_snapshot
from controller.views import battery_statuses, planned_battery_power_w, site_flows, state_view
from tests.conftest import EXAMPLE_ENV

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "configs" / "home_battery.example.yaml"
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
BATTERY = "house-battery"


def example_tree() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(data, dict)
    data["chargers"][0]["auth"]["password_hash"] = EXAMPLE_ENV["V2X_CHARGER_PASSWORD_HASH"]
    return data


def config(mutate: Any = None) -> SiteConfig:
    data = copy.deepcopy(example_tree())
    if mutate is not None:
        mutate(data)
    return parse_config(data, env={})


def read(site: Site, meter_id: str, value: float, at: datetime, *, retained: bool = False) -> None:
    meter = next(m for m in site.cfg.meters if m.id == meter_id)
    site.inputs.update_meter(MeterReading(meter_id, meter.role, value, at, retained=retained))


def fresh_site(cfg: SiteConfig | None = None, *, battery_w: float = 1500.0, soc: float = 64.0) -> Site:
    site = Site(cfg or config())
    read(site, "grid", 1000.0, T0)
    read(site, "pv", 2000.0, T0)
    read(site, "battery-power", battery_w, T0)
    read(site, "battery-soc", soc, T0)
    return site


def flat(n: int, value: float) -> np.ndarray:
    return np.full(n, value)


# ------------------------------------------------------------------ readings into the snapshot


def test_fresh_readings_reach_the_planner_and_the_dispatcher() -> None:
    site = fresh_site()
    snap = site.planner_snapshot(T0, flat(96, 500.0), flat(96, 0.0))
    assert [(b.id, b.soc_percent, b.power_w) for b in snap.home_batteries] == [(BATTERY, 64.0, 1500.0)]
    inputs = site.dispatch_inputs(T0, None)
    assert [(b.battery_id, b.soc_percent, b.power_w) for b in inputs.batteries] == [(BATTERY, 64.0, 1500.0)]


def test_a_stale_battery_is_unknown_but_the_site_is_not_in_safe_mode() -> None:
    site = fresh_site()
    later = T0 + timedelta(seconds=100)  # power stale after 60 s, SoC fresh for 300 s
    read(site, "grid", 900.0, later)
    read(site, "pv", 1900.0, later)
    inputs = site.dispatch_inputs(later, None)
    assert inputs.batteries[0].power_w is None and inputs.batteries[0].soc_percent == 64.0
    assert not inputs.safe_mode
    much_later = T0 + timedelta(seconds=400)
    read(site, "grid", 900.0, much_later)
    read(site, "pv", 1900.0, much_later)
    snap = site.planner_snapshot(much_later, flat(96, 500.0), flat(96, 0.0))
    assert snap.home_batteries[0].soc_percent is None and snap.home_batteries[0].power_w is None
    assert not site.inputs.safe_mode(much_later)
    assert {"battery-power", "battery-soc"} <= set(site.inputs.stale_meters(much_later))


def test_a_battery_never_heard_from_is_in_the_snapshot_with_an_unknown_soc() -> None:
    site = Site(config())
    snap = site.snapshot(T0, flat(96, 500.0), flat(96, 0.0))
    assert [(b.id, b.soc_percent, b.power_w) for b in snap.home_batteries] == [(BATTERY, None, None)]


def test_a_retained_battery_value_of_unknown_age_counts_as_unknown() -> None:
    site = Site(config())
    read(site, "battery-soc", 80.0, T0, retained=True)
    read(site, "battery-power", -900.0, T0, retained=True)
    assert site.inputs.battery_soc_percent(BATTERY, T0) is None
    assert site.inputs.battery_power_w(BATTERY, T0) is None


def test_modbus_readings_feed_the_same_inputs_and_age_out() -> None:
    def modbus(data: dict[str, Any]) -> None:
        data["home_batteries"][0]["control"] = {"mode": "modbus", "host": "192.168.1.40"}
        data["meters"] = [m for m in data["meters"] if not m["id"].startswith("battery")]

    site = Site(config(modbus))
    site.inputs.update_battery_device(BATTERY, 42.5, -700.0, T0, stale_after_s=30.0)
    assert site.dispatch_inputs(T0 + timedelta(seconds=29), None).batteries[0].soc_percent == 42.5
    snap = site.snapshot(T0 + timedelta(seconds=10), flat(96, 500.0), flat(96, 0.0))
    assert snap.home_batteries[0].power_w == -700.0
    gone = site.dispatch_inputs(T0 + timedelta(seconds=31), None).batteries[0]
    assert gone.soc_percent is None and gone.power_w is None
    with pytest.raises(KeyError):
        site.inputs.update_battery_device("no-such-battery", 50.0, 0.0, T0, stale_after_s=30.0)


# ------------------------------------------------------------------ the home load


def test_the_home_load_leaves_the_battery_out() -> None:
    charging = fresh_site(battery_w=1500.0)
    assert home_load_w(charging, T0) == pytest.approx(1000.0 + 2000.0 - 1500.0)
    discharging = fresh_site(battery_w=-800.0)
    assert home_load_w(discharging, T0) == pytest.approx(1000.0 + 2000.0 + 800.0)
    assert batteries_power_w(discharging, T0) == pytest.approx(-800.0)


def test_no_home_load_while_the_batterys_power_is_unknown() -> None:
    site = fresh_site()
    later = T0 + timedelta(seconds=90)
    read(site, "grid", 1000.0, later)
    read(site, "pv", 2000.0, later)
    assert home_load_w(site, later) is None  # the battery's power is stale: the load is not known


def test_without_a_power_meter_a_commanded_battery_counts_with_its_setpoint() -> None:
    def no_power_meter(data: dict[str, Any]) -> None:
        data["meters"] = [m for m in data["meters"] if m["id"] != "battery-power"]

    site = Site(config(no_power_meter))
    read(site, "grid", 1000.0, T0)
    read(site, "pv", 2000.0, T0)
    assert home_load_w(site, T0) is None  # in its own mode, nothing says what it does
    command = BatteryCommand(BATTERY, 2000.0, "charge", T0 + timedelta(minutes=5), send=True)
    site.batteries[BATTERY].commanded(command)
    assert home_load_w(site, T0) == pytest.approx(1000.0)
    assert home_load_w(site, T0 + timedelta(minutes=6)) is None  # the command ran out


# ------------------------------------------------------------------ what is shown


def test_the_state_shows_each_battery_and_the_plans_power_now() -> None:
    site = fresh_site()
    assert planned_battery_power_w(None, BATTERY, T0) is None
    snap = site.planner_snapshot(T0, flat(96, 500.0), flat(96, 0.0))
    plan = Planner(site.cfg).plan(snap)
    step = plan.step_index(T0 + timedelta(minutes=20))
    assert step == 1
    powers = tuple([-1200.0, 800.0] + [0.0] * (plan.steps - 2))
    socs = tuple([60.0] * (plan.steps + 1))
    mine = dataclasses.replace(plan, batteries={BATTERY: BatteryPlan(BATTERY, True, powers, socs)})
    assert planned_battery_power_w(mine, BATTERY, T0 + timedelta(minutes=1)) == -1200.0
    assert planned_battery_power_w(mine, BATTERY, T0 + timedelta(minutes=20)) == 800.0
    assert planned_battery_power_w(mine, "other", T0) is None
    assert planned_battery_power_w(mine, BATTERY, T0 + timedelta(days=3)) is None  # beyond the plan
    assert battery_statuses(site, mine, T0)[0].planned_power_w == -1200.0
    payload = json.loads(plan_payload(mine, T0))
    assert payload["batteries"][BATTERY]["power_w"][:2] == [-1200, 800]
    assert payload["batteries"][BATTERY]["controlled"] is True
    assert "batteries" not in json.loads(plan_payload(dataclasses.replace(plan, batteries={}), T0))

    status = battery_statuses(site, None, T0)[0]
    assert (status.soc_percent, status.power_w, status.mode, status.control) == (64.0, 1500.0, "auto", "mqtt")
    assert status.control_status == "idle"
    state = state_view(site, None, [], T0)
    assert state["batteries"][BATTERY]["soc_percent"] == 64.0
    assert state["batteries"][BATTERY]["control"] == "mqtt"
    assert site_flows(site, T0).batteries_power_w == 1500.0


# ------------------------------------------------------------------ config checks


def _meter(data: dict[str, Any], meter_id: str) -> dict[str, Any]:
    meter: dict[str, Any] = next(m for m in data["meters"] if m["id"] == meter_id)
    return meter


def _drop_meter(meter_id: str) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        data["meters"] = [m for m in data["meters"] if m["id"] != meter_id]

    return mutate


def _control(control: dict[str, Any]) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        data["home_batteries"][0]["control"] = control

    return mutate


def _unknown_battery(data: dict[str, Any]) -> None:
    _meter(data, "battery-soc")["battery"] = "garage-battery"


def _battery_on_grid_meter(data: dict[str, Any]) -> None:
    _meter(data, "grid")["battery"] = BATTERY


def _duplicate(data: dict[str, Any]) -> None:
    data["home_batteries"].append(copy.deepcopy(data["home_batteries"][0]))


def _setpoint_on_meter_topic(data: dict[str, Any]) -> None:
    data["home_batteries"][0]["control"]["setpoint_topic"] = "inverter/battery/power"


def _modbus_with_soc_meter(data: dict[str, Any]) -> None:
    data["home_batteries"][0]["control"] = {"mode": "modbus", "host": "192.168.1.40"}


BROKEN = [
    (
        "unknown_battery",
        _unknown_battery,
        "meters[3].battery",
        "unknown home battery 'garage-battery'",
        "use one of",
    ),
    ("battery_on_grid_meter", _battery_on_grid_meter, "meters[0].battery", "role grid", "remove battery"),
    ("duplicate_battery", _duplicate, "home_batteries[1].id", "duplicate id", "its own id"),
    (
        "mqtt_without_soc_meter",
        _drop_meter("battery-soc"),
        "home_batteries[0].control.mode",
        "control mqtt needs its SoC from meters",
        "add a meter with role battery_soc and battery: house-battery",
    ),
    (
        "observe_without_power_meter",
        lambda d: (_control({"mode": "observe"})(d), _drop_meter("battery-power")(d)),
        "home_batteries[0].control.mode",
        "control observe needs its power and SoC from meters, but no meter with role battery",
        "add a meter with role battery and battery: house-battery",
    ),
    (
        "modbus_with_a_soc_meter",
        _modbus_with_soc_meter,
        "meters[3].role",
        "read over Modbus",
        "remove this meter",
    ),
    (
        "setpoint_on_a_meter_topic",
        _setpoint_on_meter_topic,
        "home_batteries[0].control.setpoint_topic",
        "also the topic of meter 'battery-power'",
        "a topic of their own",
    ),
]


@pytest.mark.parametrize(("name", "mutate", "path", "message", "fix"), BROKEN, ids=[c[0] for c in BROKEN])
def test_a_broken_battery_config_names_the_field_and_the_fix(
    name: str, mutate: Any, path: str, message: str, fix: str
) -> None:
    data = copy.deepcopy(example_tree())
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    found = [i for i in info.value.issues if i.path == path]
    assert found, [str(i) for i in info.value.issues]
    assert message in found[0].message and fix in found[0].fix, str(found[0])


def test_observe_with_both_meters_and_modbus_without_meters_are_fine() -> None:
    observe = config(_control({"mode": "observe"}))
    assert observe.home_batteries[0].control.mode == "observe"

    def modbus(data: dict[str, Any]) -> None:
        _control({"mode": "modbus", "host": "192.168.1.40"})(data)
        data["meters"] = [m for m in data["meters"] if not m["id"].startswith("battery")]

    assert config(modbus).home_batteries[0].control.mode == "modbus"


# ------------------------------------------------------------------ the shipped example


def test_the_example_with_a_battery_loads_as_documented() -> None:
    cfg = load_config(EXAMPLE, env=EXAMPLE_ENV)
    battery = cfg.home_batteries[0]
    assert (battery.usable_capacity_kwh, battery.max_charge_kw, battery.max_discharge_kw) == (10, 5, 5)
    assert (battery.charge_efficiency, battery.discharge_efficiency) == (0.95, 0.95)
    assert battery.control.mode == "mqtt"
    roles = {m.role for m in cfg.meters if m.battery == battery.id}
    assert roles == {MeterRole.BATTERY, MeterRole.BATTERY_SOC}


def test_the_examples_commented_observe_control_is_valid_when_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    commented = "    # control: {mode: observe}"
    assert commented in text
    lines = text.splitlines()
    start = lines.index("    control:")
    kept = lines[:start] + lines[start + 4 :]  # the mqtt control block
    observe = "\n".join(kept).replace(commented, "    control: {mode: observe}")
    path = tmp_path / "observe.yaml"
    path.write_text(observe)
    assert load_config(path, env=EXAMPLE_ENV).home_batteries[0].control.mode == "observe"


def test_the_example_passes_check_config_and_plans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    assert main(["check-config", str(EXAMPLE)], out=out) == 0, out.getvalue()
    assert "meter battery-soc: battery_soc" in out.getvalue()

    snap = json.loads((ROOT / "configs" / "snapshots" / "evening-peak.json").read_text())
    snap["home_batteries"] = [{"id": BATTERY, "soc_percent": 60.0, "power_w": -500.0}]
    path = tmp_path / "with-battery.json"
    path.write_text(json.dumps(snap))
    assert load_snapshot(path).home_batteries[0].soc_percent == 60.0
    out = io.StringIO()
    assert main(["plan", "--config", str(EXAMPLE), "--snapshot", str(path), "--json"], out=out) == 0
    plan = json.loads(out.getvalue())
    assert plan["solver_status"] == "optimal" and plan["steps"] == 96


def test_the_load_history_leaves_the_battery_out(tmp_path: Path) -> None:
    """What the load forecast learns from: grid 3 kW while the battery charges 2.5 kW is 500 W of home."""
    from controller.app import Daemon
    from tests.conftest import stored

    data = example_tree()
    data["storage"] = {"path": str(tmp_path / "v2x.sqlite")}
    data["api"] = {"enabled": False}
    daemon = Daemon(parse_config(data, env={}))
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    for meter_id, value in (("grid", 3000.0), ("pv", 0.0), ("battery-power", 2500.0)):
        read(daemon.site, meter_id, value, now)
    daemon.forecasts.record_flows(now)
    later = now + timedelta(minutes=1, seconds=10)  # the battery's power meter stale (60 s): no load known
    read(daemon.site, "grid", 3000.0, later)
    read(daemon.site, "pv", 0.0, later)
    daemon.forecasts.record_flows(later)
    stored(daemon).flush_history()
    home = stored(daemon).history("_home_load", now - timedelta(minutes=1), now + timedelta(minutes=5))
    assert [(p.bucket_start, p.mean) for p in home] == [(now, 500.0)]
    stored(daemon).close()
