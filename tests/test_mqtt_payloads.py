"""Published payloads, topic layout and discovery configs (pure parts of the MQTT adapter)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import zoneinfo
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import pytest

from controller.commands import SetDeparture, SetMode, parse_command
from controller.config import MqttConfig, load_config, parse_config
from controller.domain import Plan, VehicleMode, VehiclePlan
from controller.mqtt.discovery import discovery_messages
from controller.mqtt.payloads import (
    ControllerStatus,
    SiteFlows,
    VehicleStatus,
    controller_payload,
    dumps,
    plan_payload,
    reply_payload,
    site_payload,
    vehicle_payload,
)
from controller.mqtt.topics import Topics
from tests.conftest import EXAMPLE_ENV

T0 = dt.datetime(2025, 1, 15, 0, 0, tzinfo=dt.UTC)
Q = dt.timedelta(minutes=15)


def plan(n: int = 8) -> Plan:
    return Plan(
        created_at=T0,
        start=T0,
        step=Q,
        vehicles={
            "ev": VehiclePlan(
                "ev", tuple(float(i) for i in range(n)), tuple(50.0 + i for i in range(n + 1)), "r"
            )
        },
        grid_import_w=tuple(float(i) * 1000.4 for i in range(n)),
        grid_export_w=tuple([0.0] * n),
        import_price_per_kwh=tuple([0.123456] * n),
        export_price_per_kwh=tuple([float("nan")] * n),
        solver_status="optimal",
        solve_time_ms=1.0,
        notes=("fallback off",),
    )


def load(b: bytes) -> Any:
    return json.loads(b)


def test_plan_is_cut_to_now_and_the_horizon() -> None:
    out = load(plan_payload(plan(), T0 + 2 * Q + dt.timedelta(minutes=1), horizon=dt.timedelta(hours=1)))
    assert out["start"] == "2025-01-15T00:30:00Z" and out["steps"] == 4
    assert out["grid_import_w"] == [2001, 3001, 4002, 5002]
    assert out["vehicles"]["ev"]["power_w"] == [2, 3, 4, 5]
    assert out["vehicles"]["ev"]["soc_percent"] == [52.0, 53.0, 54.0, 55.0, 56.0]
    assert out["import_price"] == [0.1235] * 4
    assert out["export_price"] == [None] * 4  # NaN never leaves as invalid JSON
    assert out["notes"] == ["fallback off"]


def test_plan_before_start_and_after_end() -> None:
    early = load(plan_payload(plan(), T0 - dt.timedelta(hours=1)))
    assert early["steps"] == 8 and early["start"] == "2025-01-15T00:00:00Z"
    late = load(plan_payload(plan(), T0 + dt.timedelta(hours=5)))
    assert late["steps"] == 0 and late["grid_import_w"] == []


def test_site_and_vehicle_payloads() -> None:
    site = load(site_payload(SiteFlows(T0, -0.04, None, float("inf"))))
    assert site["grid_w"] == 0.0 and site["pv_w"] is None and site["home_w"] is None
    v = load(vehicle_payload(VehicleStatus("ev", T0, None, 20.0, None, VehicleMode.NO_DISCHARGE, 0.0, False)))
    assert v["mode"] == "no_discharge" and v["soc_percent"] is None and v["plugged_in"] is False


def test_reply_and_dumps() -> None:
    r = load(reply_payload("ev", "mode", False, T0, "r1", "bad"))
    assert r == {
        "ok": False,
        "vehicle_id": "ev",
        "command": "mode",
        "request_id": "r1",
        "error": "bad",
        "at": "2025-01-15T00:00:00Z",
    }
    with pytest.raises(ValueError):
        dumps({"x": float("nan")})


def test_topics() -> None:
    t = Topics.from_config(MqttConfig(base_topic="home/v2x/", discovery_prefix="homeassistant"))
    # Every level under cmd/ is subscribed, so a topic with too many or too few levels is seen and answered.
    assert t.status == "home/v2x/status" and t.command_filter == "home/v2x/cmd/#"
    assert t.parse_command("home/v2x/cmd/ev/mode") == ("ev", "mode")
    assert t.parse_command("home/v2x/cmd/ev/mode/extra") is None
    assert t.parse_command("other/cmd/ev/mode") is None
    assert t.command_levels("home/v2x/cmd/ev/mode/extra") == ("ev", "mode", "extra")
    assert t.command_levels("home/v2x/cmd/ev") == ("ev",)
    assert t.command_levels("home/v2x/cmd") == ()
    assert t.command_levels("home/v2x/cmdx/ev/mode") is None
    assert t.command_levels("home/v2x/state/site") is None
    assert t.reply("ev", "mode") == "home/v2x/reply/ev/mode"
    assert t.node_id == "home_v2x"
    assert t.discovery("sensor", "x") == "homeassistant/sensor/home_v2x/x/config"


def test_discovery_covers_site_and_each_vehicle_with_safe_ids() -> None:
    cfg = parse_config(
        {
            "site": {"grid": {"import_limit_kw": 11}},
            "vehicles": [
                {"id": "car.1", "usable_capacity_kwh": 60},
                {"id": "van", "usable_capacity_kwh": 80},
            ],
            "tariff": {"import": {"static_price_per_kwh": 0.3}},
        }
    )
    topics = Topics.from_config(cfg.mqtt)
    messages = dict(discovery_messages(cfg, topics))
    assert len(messages) == 5 + 2 * (4 + 4)
    assert "homeassistant/sensor/v2x/car_1_soc/config" in messages
    for vehicle in ("car_1", "van"):
        assert f"homeassistant/select/v2x/{vehicle}_mode_select/config" in messages
        assert f"homeassistant/number/v2x/{vehicle}_departure_target/config" in messages
        assert f"homeassistant/text/v2x/{vehicle}_departure_time/config" in messages
        assert f"homeassistant/button/v2x/{vehicle}_clear_departure/config" in messages
    car = load(messages["homeassistant/select/v2x/car_1_mode_select/config"])
    assert car["command_topic"] == "v2x/cmd/car.1/mode" and car["state_topic"] == "v2x/state/vehicle/car.1"
    for topic, payload in messages.items():
        config = load(payload)
        assert config["availability_topic"] == "v2x/status"
        assert config["unique_id"].startswith("v2x_") and "." not in topic
        assert config["device"]["identifiers"] == ["v2x"]


# What Home Assistant's MQTT discovery accepts (homeassistant.components.mqtt and sensor constants).
COMPONENTS = "sensor|binary_sensor|select|number|text|button"
HA_TOPIC = re.compile(rf"^ha/({COMPONENTS})/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/config$")
HA_ENTITY_ID = re.compile(rf"^({COMPONENTS})\.(?!_)(?!.*__)[a-z0-9_]+(?<!_)$")
HA_UNITS = {"power": {"W", "kW"}, "battery": {"%"}}
# Required options per component and those with a state shown from state_topic (button has none).
HA_REQUIRED = {
    "select": {"command_topic", "options"},
    "number": {"command_topic", "min", "max", "step"},
    "text": {"command_topic"},
    "button": {"command_topic"},
}
NUMBER_MODES = {"auto", "box", "slider"}


def ha_environment(timezone: str) -> jinja2.Environment:
    """jinja2 with the few Home Assistant template functions the configs use (HA's timezone = the site's)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.globals["as_datetime"] = dt.datetime.fromisoformat
    env.globals["as_local"] = lambda moment: moment.astimezone(zoneinfo.ZoneInfo(timezone))
    return env


def check_control(component: str, config: dict[str, Any], value: str) -> None:
    """A control's options as Home Assistant's schema wants them, and its state as it accepts it."""
    assert HA_REQUIRED[component] <= set(config), (component, config)
    assert config["command_topic"].startswith("home/V2X-1/cmd/") and config["retain"] is False
    if component == "select":
        assert value in config["options"]
    elif component == "number":
        assert config["min"] < config["max"] and config["step"] > 0 and config["mode"] in NUMBER_MODES
        assert value == "None" or config["min"] <= float(value) <= config["max"]  # "None": unknown
    elif component == "text":
        assert 0 <= config["min"] < config["max"] <= 255 and re.compile(config["pattern"])
        assert value == "" or re.fullmatch(config["pattern"], value)


def test_discovery_configs_are_valid_for_home_assistant_and_render_the_published_state() -> None:
    cfg = parse_config(
        {
            "site": {"grid": {"import_limit_kw": 11}},
            "vehicles": [
                {"id": "Car.1", "usable_capacity_kwh": 60},
                {"id": "van", "usable_capacity_kwh": 80},
            ],
            "tariff": {"import": {"static_price_per_kwh": 0.3}},
            "mqtt": {"base_topic": "home/V2X-1", "discovery_prefix": "ha"},
        }
    )
    topics = Topics.from_config(cfg.mqtt)
    published = {
        topics.site: site_payload(SiteFlows(T0, -1200.0, None, 800.0, 0.0)),
        topics.controller: controller_payload(ControllerStatus(T0, True, ("meter grid (grid) is stale",))),
        topics.vehicle("Car.1"): vehicle_payload(
            VehicleStatus("Car.1", T0, 55.5, 20.0, None, VehicleMode.CHARGE_NOW, -3700.0, True)
        ),
        topics.vehicle("van"): vehicle_payload(
            VehicleStatus("van", T0, None, 20.0, 80.0, VehicleMode.AUTO, 0.0, False)
        ),
    }
    env = ha_environment(cfg.site.timezone)
    unique_ids: set[str] = set()
    rendered: dict[str, str] = {}
    for topic, payload in discovery_messages(cfg, topics):
        config = load(payload)
        component = HA_TOPIC.match(topic)
        assert component is not None, topic
        assert config["unique_id"] not in unique_ids
        unique_ids.add(config["unique_id"])
        assert HA_ENTITY_ID.match(config["default_entity_id"]), config["default_entity_id"]
        assert config["default_entity_id"].split(".")[0] == component.group(1)
        assert config["availability_topic"] == "home/V2X-1/status" and config["device"]["identifiers"]
        assert config["origin"]["name"] == "v2x-controller"
        device_class = config.get("device_class")
        if component.group(1) == "button":
            assert "state_topic" not in config and json.loads(config["payload_press"]) == {"clear": True}
            continue
        if "unit_of_measurement" in config:
            assert component.group(1) == "number" or config["state_class"] == "measurement"
            assert config["unit_of_measurement"] in HA_UNITS.get(
                device_class, {config["unit_of_measurement"]}
            )
        # The template must render against what the controller publishes on that state topic.
        state = json.loads(published[config["state_topic"]])
        value = env.from_string(config["value_template"]).render(value_json=state).strip()
        rendered[config["unique_id"]] = value
        if component.group(1) in HA_REQUIRED:
            check_control(component.group(1), config, value)
        elif component.group(1) == "binary_sensor":
            assert value in ("ON", "OFF")
        elif device_class == "enum":
            assert value in config["options"] and "unit_of_measurement" not in config
        else:
            assert value == "None" or float(value) == float(value)  # "None" is unknown to HA
    node = "home_V2X-1"
    assert rendered[f"{node}_grid_power"] == "-1200.0" and rendered[f"{node}_pv_power"] == "None"
    assert rendered[f"{node}_safe_mode"] == "ON"
    assert rendered[f"{node}_Car_1_soc"] == "55.5" and rendered[f"{node}_Car_1_mode"] == "charge_now"
    assert rendered[f"{node}_van_target"] == "80.0"
    assert rendered[f"{node}_Car_1_mode_select"] == "charge_now"
    assert (
        rendered[f"{node}_van_departure_target"] == "80.0"
        and rendered[f"{node}_Car_1_departure_target"] == "None"
    )
    assert rendered[f"{node}_van_departure_time"] == ""  # no departure planned


ROOT = Path(__file__).resolve().parents[1]


def example_controls() -> tuple[Any, dict[str, dict[str, Any]]]:
    """The example config and its vehicle's control configs by component."""
    cfg = load_config(ROOT / "configs" / "home.example.yaml", env=EXAMPLE_ENV)
    topics = Topics.from_config(cfg.mqtt)
    vid = cfg.vehicles[0].id
    controls = {}
    for topic, payload in discovery_messages(cfg, topics):
        component = topic.split("/")[1]
        if component in HA_REQUIRED and f"/{vid}_" in topic:
            controls[component] = load(payload)
    assert set(controls) == set(HA_REQUIRED)
    return cfg, controls


def press(cfg: Any, config: dict[str, Any], payload: str, now: dt.datetime) -> Any:
    """What the controller makes of a control's publish: the command on its command topic."""
    topics = Topics.from_config(cfg.mqtt)
    parsed = topics.parse_command(config["command_topic"])
    assert parsed is not None
    return parse_command(cfg, parsed[0], parsed[1], payload.encode(), now)


def ha_state(cfg: Any, config: dict[str, Any], status: VehicleStatus) -> tuple[str, dict[str, Any]]:
    """An entity's state and attributes, as Home Assistant renders them from the published vehicle state."""
    env = ha_environment(cfg.site.timezone)
    state = json.loads(vehicle_payload(status))
    value = env.from_string(config["value_template"]).render(value_json=state).strip()
    attributes = json.loads(env.from_string(config["json_attributes_template"]).render(value_json=state))
    return value, attributes


def render_command(cfg: Any, config: dict[str, Any], value: Any, attributes: dict[str, Any]) -> str:
    """The command template as Home Assistant renders it: ``value`` and ``this`` (the entity's state)."""
    template = ha_environment(cfg.site.timezone).from_string(config["command_template"])
    return template.render(value=value, this=SimpleNamespace(attributes=attributes))


def test_mode_select_and_clear_button_publish_commands_the_controller_accepts() -> None:
    cfg, controls = example_controls()
    vid = cfg.vehicles[0].id
    select = controls["select"]
    for option in select["options"]:  # no command_template: the option itself is published
        command = press(cfg, select, option, T0)
        assert isinstance(command, SetMode) and command.mode.value == option and command.vehicle_id == vid
    clear = press(cfg, controls["button"], controls["button"]["payload_press"], T0)
    assert clear == SetDeparture(vid, None)


def test_departure_target_number_sends_the_planned_departure_time() -> None:
    cfg, controls = example_controls()
    vehicle = cfg.vehicles[0]
    number = controls["number"]
    # Whole percents only, each a target the controller takes: above the reserve, up to max_soc_percent.
    assert number["min"] > vehicle.reserve_percent >= number["min"] - 1
    assert number["max"] == vehicle.max_soc_percent and number["step"] == 1
    leave = T0 + dt.timedelta(days=3, hours=6, minutes=30)  # days ahead: the exact time keeps the day
    status = VehicleStatus(vehicle.id, T0, 50.0, vehicle.reserve_percent, 80.0, VehicleMode.AUTO, 0.0, True)
    value, attributes = ha_state(cfg, number, dataclasses.replace(status, departure_at=leave))
    assert value == "80.0" and attributes["departure_at"] == "2025-01-18T06:30:00Z"
    for target in (number["min"], 65, number["max"]):  # Home Assistant passes a whole number as an int
        command = press(cfg, number, render_command(cfg, number, target, attributes), T0)
        assert isinstance(command, SetDeparture) and command.departure is not None
        assert command.departure.at == leave and command.departure.target_soc_percent == target
    # No departure planned: refused with a reply that says what is missing.
    _, none_planned = ha_state(cfg, number, status)
    with pytest.raises(ValueError, match="missing at"):
        press(cfg, number, render_command(cfg, number, 70, none_planned), T0)


def test_departure_time_text_shows_and_sends_site_local_time_with_the_planned_target() -> None:
    cfg, controls = example_controls()
    vehicle = cfg.vehicles[0]
    text = controls["text"]
    leave = T0 + dt.timedelta(hours=6, minutes=30)  # 07:30 in Amsterdam
    status = VehicleStatus(
        vehicle.id, T0, 50.0, vehicle.reserve_percent, 75.0, VehicleMode.AUTO, 0.0, True, departure_at=leave
    )
    value, attributes = ha_state(cfg, text, status)
    assert value == "07:30" and re.fullmatch(text["pattern"], value)
    command = press(cfg, text, render_command(cfg, text, value, attributes), T0)
    assert isinstance(command, SetDeparture) and command.departure is not None
    assert command.departure.at == leave and command.departure.target_soc_percent == 75.0
    # A new time with the planned target; without a valid planned target the configured default.
    for planned, expected in (
        (75.0, 75.0),
        (None, vehicle.default_target_soc_percent),
        (100.0, vehicle.default_target_soc_percent),
    ):
        attributes["target_soc_percent"] = planned
        command = press(cfg, text, render_command(cfg, text, "9:05", attributes), T0)
        assert isinstance(command, SetDeparture) and command.departure is not None
        assert command.departure.at == dt.datetime(2025, 1, 15, 8, 5, tzinfo=dt.UTC)
        assert command.departure.target_soc_percent == expected
    for bad in ("24:00", "7.30", "07:30:00", "now"):  # the frontend refuses what the pattern does not match
        assert not re.fullmatch(text["pattern"], bad)
