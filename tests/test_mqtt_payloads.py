"""Published payloads, topic layout and discovery configs (pure parts of the MQTT adapter)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from controller.config import MqttConfig, parse_config
from controller.domain import Plan, VehicleMode, VehiclePlan
from controller.mqtt.discovery import discovery_messages
from controller.mqtt.payloads import (
    SiteFlows,
    VehicleStatus,
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
    assert t.status == "home/v2x/status" and t.command_filter == "home/v2x/cmd/+/+"
    assert t.parse_command("home/v2x/cmd/ev/mode") == ("ev", "mode")
    assert t.parse_command("home/v2x/cmd/ev/mode/extra") is None
    assert t.parse_command("other/cmd/ev/mode") is None
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
