"""Published payloads, topic layout and discovery configs (pure parts of the MQTT adapter)."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import jinja2
import pytest

from controller.config import MqttConfig, parse_config
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
    assert len(messages) == 5 + 2 * 4
    assert "homeassistant/sensor/v2x/car_1_soc/config" in messages
    for topic, payload in messages.items():
        config = load(payload)
        assert config["availability_topic"] == "v2x/status"
        assert config["unique_id"].startswith("v2x_") and "." not in topic
        assert config["device"]["identifiers"] == ["v2x"]


# What Home Assistant's MQTT discovery accepts (homeassistant.components.mqtt and sensor constants).
HA_TOPIC = re.compile(r"^ha/(sensor|binary_sensor)/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/config$")
HA_ENTITY_ID = re.compile(r"^(sensor|binary_sensor)\.(?!_)(?!.*__)[a-z0-9_]+(?<!_)$")
HA_UNITS = {"power": {"W", "kW"}, "battery": {"%"}}


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
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
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
        if "unit_of_measurement" in config:
            assert config["state_class"] == "measurement"
            assert config["unit_of_measurement"] in HA_UNITS.get(
                device_class, {config["unit_of_measurement"]}
            )
        # The template must render against what the controller publishes on that state topic.
        state = json.loads(published[config["state_topic"]])
        value = env.from_string(config["value_template"]).render(value_json=state).strip()
        rendered[config["unique_id"]] = value
        if component.group(1) == "binary_sensor":
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
