"""Home batteries over the real broker on 127.0.0.1:1883: setpoints (QoS 1, not retained) and their
keep-alive, the release, a missing broker, battery meters (a malformed one logged with its topic and
ignored), the published battery state and its Home Assistant discovery."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import aiomqtt
import pytest
import structlog

from controller.battery.control import BatteryControls
from controller.battery.mqtt_control import MqttBatteryControl, setpoint_payload
from controller.clock import SystemClock
from controller.config import MqttControl, SiteConfig, parse_config
from controller.dispatch.battery_command import BatteryCommand, BatteryMode
from controller.mqtt import SiteMqttClient
from controller.mqtt.discovery import discovery_messages
from controller.mqtt.topics import Topics
from controller.site import Site
from controller.views import battery_statuses
from tests.test_mqtt_client import BROKER_HOST, collect, eventually, peer, running, uid

BATTERY = "house"


class SteppedClock(SystemClock):
    """Real wall time; a monotonic time the test moves on (the keep-alive interval)."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def monotonic(self) -> float:
        return super().monotonic() + self.offset_s


def battery_config(prefix: str, control: dict[str, Any] | None = None, port: int = 1883) -> SiteConfig:
    return parse_config(
        {
            "site": {"name": "test", "grid": {"import_limit_kw": 17.3, "export_limit_kw": 10}},
            "tariff": {"import": {"static_price_per_kwh": 0.30}},
            "meters": [
                {"id": "grid", "role": "grid", "topic": f"{prefix}/grid"},
                {"id": "bat-w", "role": "battery", "battery": BATTERY, "topic": f"{prefix}/bat/power"},
                {
                    "id": "bat-soc",
                    "role": "battery_soc",
                    "battery": BATTERY,
                    "topic": f"{prefix}/bat/state",
                    "format": "json",
                    "json_path": "soc",
                    "stale_after_s": 300,
                },
            ],
            "home_batteries": [
                {
                    "id": BATTERY,
                    "name": "House battery",
                    "usable_capacity_kwh": 10,
                    "max_charge_kw": 5,
                    "max_discharge_kw": 5,
                    "control": control
                    or {"mode": "mqtt", "setpoint_topic": f"{prefix}/bat/setpoint", "resend_s": 30},
                }
            ],
            "mqtt": {
                "host": BROKER_HOST,
                "port": port,
                "client_id": f"v2x-test-{uid()}",
                "base_topic": f"{prefix}/v2x",
                "discovery_prefix": f"{prefix}/ha",
            },
        }
    )


@pytest.fixture
def prefix() -> str:
    return f"v2x-test/{uid()}"


def command(power_w: float, mode: BatteryMode, *, send: bool = True, minutes: int = 5) -> BatteryCommand:
    until = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=minutes)
    return BatteryCommand(BATTERY, power_w, mode, until, send=send)


async def next_message(c: aiomqtt.Client, timeout_s: float = 3.0) -> aiomqtt.Message:
    async with asyncio.timeout(timeout_s):
        async for message in c.messages:
            return message
    raise AssertionError("no message")


async def no_message(c: aiomqtt.Client, wait_s: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        await next_message(c, wait_s)


def test_the_setpoint_payload() -> None:
    until = dt.datetime(2026, 3, 2, 12, 5, tzinfo=dt.UTC)
    payload = json.loads(setpoint_payload(BatteryCommand(BATTERY, -2400.4, "discharge", until, send=True)))
    assert payload == {"power_w": -2400, "mode": "discharge", "valid_until": "2026-03-02T12:05:00Z"}
    hold = json.loads(setpoint_payload(BatteryCommand(BATTERY, 900.0, "hold", until, send=True)))
    assert hold["power_w"] == 0 and hold["mode"] == "hold"


async def test_setpoints_go_out_at_qos_1_not_retained_and_again_as_a_keep_alive(prefix: str) -> None:
    cfg = battery_config(prefix)
    clock = SteppedClock()
    client = SiteMqttClient(cfg, clock)
    site = Site(cfg, client.inputs)
    controls = BatteryControls(site, clock, client.publish_raw)
    control = controls.controls[BATTERY]
    assert isinstance(control, MqttBatteryControl)
    async with running(client), peer() as p:
        await p.subscribe(f"{prefix}/bat/setpoint", qos=1)
        charge = command(2500.0, "charge")
        await controls.apply([charge])
        message = await next_message(p)
        assert message.qos == 1 and not message.retain
        body = json.loads(message.payload)
        assert body["power_w"] == 2500 and body["mode"] == "charge"
        assert dt.datetime.fromisoformat(body["valid_until"]) == charge.valid_until
        assert site.batteries[BATTERY].control_status == "ok" and site.batteries[BATTERY].setpoint_w == 2500.0

        await controls.apply([command(2500.0, "charge", send=False)])  # unchanged, keep-alive not due
        await no_message(p)
        clock.offset_s += 31  # resend_s 30
        later = command(2500.0, "charge", send=False, minutes=6)
        await controls.apply([later])
        again = json.loads((await next_message(p)).payload)
        assert (
            again["mode"] == "charge" and dt.datetime.fromisoformat(again["valid_until"]) == later.valid_until
        )
        assert control.sent == 2

        controls.begin_stop()  # stopping: nothing but the release goes out
        await controls.apply([command(-3000.0, "discharge")])
        await no_message(p)
        outcome = await controls.release_all(2.0)
        assert outcome == {BATTERY: "released"}
        released = json.loads((await next_message(p)).payload)
        assert released["mode"] == "auto" and released["power_w"] == 0
    # A retained setpoint would outlive the controller: none is left on the broker.
    async with peer() as p:
        await p.subscribe(f"{prefix}/bat/setpoint", qos=1)
        await no_message(p)


async def test_without_a_broker_the_setpoint_is_not_sent_and_the_control_is_shown_unreachable(
    prefix: str,
) -> None:
    cfg = battery_config(prefix)
    clock = SystemClock()
    client = SiteMqttClient(cfg, clock)  # never connected
    site = Site(cfg, client.inputs)
    controls = BatteryControls(site, clock, client.publish_raw)
    with structlog.testing.capture_logs() as logs:
        await controls.apply([command(1000.0, "charge")])
        await controls.apply([command(1000.0, "charge", send=False)])
    assert site.batteries[BATTERY].control_status == "unreachable"
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["battery_setpoint_not_sent"]
    assert controls.problems() == [
        f"battery {BATTERY}: unreachable (MQTT broker not connected or the setpoint was refused)"
    ]
    body = controls.add_to_health({"status": "ok", "degraded": []})
    assert body["status"] == "degraded" and body["degraded"][0]["what"] == "batteries"
    assert await controls.release_all(1.0) == {BATTERY: "unreachable"}


async def test_a_setpoint_topic_the_client_refuses_is_logged_not_raised(prefix: str) -> None:
    cfg = battery_config(prefix)
    clock = SystemClock()
    client = SiteMqttClient(cfg, clock)
    site = Site(cfg, client.inputs)
    control = MqttBatteryControl(
        site.batteries[BATTERY],
        MqttControl(mode="mqtt", setpoint_topic=f"{prefix}/ok"),
        client.publish_raw,
        clock,
    )
    control.control = control.control.model_copy(update={"setpoint_topic": f"{prefix}/+/bad"})
    async with running(client):
        await control.apply(command(1000.0, "charge"))
    assert site.batteries[BATTERY].control_status == "unreachable"


async def test_battery_meters_over_the_broker_and_a_malformed_one_is_logged_and_ignored(prefix: str) -> None:
    cfg = battery_config(prefix)
    client = SiteMqttClient(cfg, SystemClock(), log_interval_s=0)
    with structlog.testing.capture_logs() as logs:
        async with running(client) as task, peer() as p:
            await p.publish(f"{prefix}/bat/state", b'{"soc": "lots"}', qos=1)
            await p.publish(f"{prefix}/bat/power", b"garbage", qos=1)
            await p.publish(f"{prefix}/bat/state", b'{"soc": 250}', qos=1)  # beyond 100 %: implausible
            await eventually(lambda: client.rejected == 3)
            await p.publish(f"{prefix}/bat/state", b'{"soc": 71.5}', qos=1)
            await p.publish(f"{prefix}/bat/power", b"-1800", qos=1)
            await eventually(lambda: client.accepted == 2)
            assert not task.done()
    now = client.clock.now()
    assert client.inputs.battery_soc_percent(BATTERY, now) == 71.5
    assert client.inputs.battery_power_w(BATTERY, now) == -1800.0
    rejected = [e for e in logs if e["event"] == "meter_payload_rejected"]
    assert [e["topic"] for e in rejected] == [
        f"{prefix}/bat/state",
        f"{prefix}/bat/power",
        f"{prefix}/bat/state",
    ]
    assert all(e["log_level"] == "warning" and e["reason"] for e in rejected)
    assert client.inputs.dropped_readings("bat-soc") == 2 and client.inputs.dropped_readings("bat-w") == 1


async def test_the_battery_state_is_published_retained_with_its_discovery(prefix: str) -> None:
    cfg = battery_config(prefix)
    clock = SystemClock()
    client = SiteMqttClient(cfg, clock)
    site = Site(cfg, client.inputs)
    async with running(client), peer() as p:
        await p.publish(f"{prefix}/bat/state", b'{"soc": 55}', qos=1)
        await p.publish(f"{prefix}/bat/power", b"1200", qos=1)
        await eventually(lambda: client.accepted == 2)
        for status in battery_statuses(site, None, clock.now()):
            assert await client.publish_battery(status)
        got = await collect(p, f"{prefix}/v2x/state/battery/#", 1)
        discovery = await collect(p, f"{prefix}/ha/sensor/+/battery_{BATTERY}_soc/config", 1)
    state = json.loads(got[f"{prefix}/v2x/state/battery/{BATTERY}"])
    assert state["soc_percent"] == 55.0 and state["power_w"] == 1200.0
    assert state["mode"] == "auto" and state["control"] == "mqtt" and state["control_status"] == "idle"
    assert state["planned_power_w"] is None
    config = json.loads(next(iter(discovery.values())))
    assert config["state_topic"] == f"{prefix}/v2x/state/battery/{BATTERY}"
    assert config["value_template"] == "{{ value_json.soc_percent }}" and config["device_class"] == "battery"


def test_discovery_has_each_batterys_sensors() -> None:
    cfg = battery_config("p")
    topics = Topics.from_config(cfg.mqtt)
    configs = {topic: json.loads(payload) for topic, payload in discovery_messages(cfg, topics)}
    mine = {t.split("/")[-2]: c for t, c in configs.items() if f"battery_{BATTERY}_" in t}
    assert set(mine) == {f"battery_{BATTERY}_{k}" for k in ("soc", "power", "planned", "mode", "control")}
    state = f"p/v2x/state/battery/{BATTERY}"
    assert all(c["state_topic"] == state for c in mine.values())
    fields = {k: c["value_template"] for k, c in mine.items()}
    assert fields[f"battery_{BATTERY}_power"] == "{{ value_json.power_w }}"
    assert fields[f"battery_{BATTERY}_planned"] == "{{ value_json.planned_power_w }}"
    assert mine[f"battery_{BATTERY}_power"]["unit_of_measurement"] == "W"
    assert mine[f"battery_{BATTERY}_mode"]["options"] == ["charge", "discharge", "hold", "auto"]
    assert "refused" in mine[f"battery_{BATTERY}_control"]["options"]
    site_sensor = next(c for t, c in configs.items() if t.endswith("/batteries_power/config"))
    assert site_sensor["value_template"] == "{{ value_json.batteries_w }}"
    assert mine[f"battery_{BATTERY}_soc"]["name"] == "House battery SoC"


def test_the_site_payload_carries_the_batteries_only_where_there_are_some() -> None:
    from controller.mqtt.payloads import SiteFlows, site_payload

    at = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
    without = json.loads(site_payload(SiteFlows(at, 500.0)))
    assert "batteries_w" not in without
    unknown = json.loads(site_payload(SiteFlows(at, 500.0, has_batteries=True)))
    assert unknown["batteries_w"] is None
    known = json.loads(site_payload(SiteFlows(at, 500.0, batteries_power_w=-1234.56, has_batteries=True)))
    assert known["batteries_w"] == -1234.6
