"""SiteMqttClient against real brokers: the shared one on 127.0.0.1:1883 (a topic prefix per test) and
a Mosquitto this module starts, kills and restarts for the reconnect test."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import structlog

from controller.clock import ManualClock, SystemClock
from controller.commands import Command, SetMode, V2LCommand
from controller.config import MeterConfig, SiteConfig, TlsConfig, parse_config
from controller.domain import MeterReading, Plan, VehicleMode, VehiclePlan
from controller.mqtt import (
    ChargerStatus,
    CommandRejected,
    ControllerStatus,
    ProfileOutcome,
    SiteFlows,
    SiteMqttClient,
    VehicleStatus,
)
from controller.mqtt.client import build_tls_context
from controller.site_inputs import SiteInputs

BROKER_HOST = "127.0.0.1"
BROKER_PORT = 1883
ROOT = Path(__file__).resolve().parent.parent
T0 = dt.datetime(2025, 1, 15, 12, 0, tzinfo=dt.UTC)

SHELLY_EM0 = (
    b'{"id":0,"a_current":4.029,"a_voltage":236.1,"a_act_power":951.2,"a_aprt_power":951.9,"a_pf":1.00,'
    b'"b_current":4.027,"b_voltage":236.201,"b_act_power":-951.1,"b_aprt_power":951.8,"b_pf":1.00,'
    b'"c_current":3.03,"c_voltage":236.097,"c_act_power":715.1,"c_aprt_power":715.9,"c_pf":1.00,'
    b'"n_current":null,"total_current":11.087,"total_act_power":715.175,"total_aprt_power":2619.726}'
)
TASMOTA_ENERGY = b'{"Time":"2024-06-01T12:00:05","ENERGY":{"Total":812.345,"Power":2450,"Voltage":231}}'
TASMOTA_SML = b'{"Time":"2024-06-01T12:00:05","SML":{"Total_in":12345.6789,"Power_curr":-523}}'


def uid() -> str:
    return uuid.uuid4().hex[:12]


def site_config(
    prefix: str, port: int = BROKER_PORT, extra_meters: list[dict[str, Any]] | None = None, **mqtt: Any
) -> SiteConfig:
    return parse_config(
        {
            "site": {
                "name": "test",
                "grid": {"import_limit_kw": 17.3, "export_limit_kw": 10, "fallback_import_limit_kw": 11},
            },
            "vehicles": [
                {
                    "id": "ev",
                    "name": "Test EV",
                    "usable_capacity_kwh": 60,
                    "max_discharge_kw": 10,
                    "permissions": {"v2g": True, "v2l": True},
                }
            ],
            "meters": [
                {
                    "id": "grid",
                    "role": "grid",
                    "topic": f"{prefix}/shelly/status/em:0",
                    "format": "shelly_pro3em",
                    "stale_after_s": 30,
                },
                {"id": "pv", "role": "pv", "topic": f"{prefix}/tele/pv/SENSOR", "format": "tasmota"},
                {
                    "id": "sml",
                    "role": "home",
                    "topic": f"{prefix}/tele/sml/SENSOR",
                    "format": "tasmota",
                    "sign": -1,
                },
                {"id": "dsmr", "role": "home", "topic": f"{prefix}/dsmr", "format": "dsmr_reader"},
                {
                    "id": "heatpump",
                    "role": "home",
                    "topic": f"{prefix}/heatpump/power",
                    "format": "plain",
                    "scale": 1000,
                },
                {
                    "id": "ev-soc",
                    "role": "vehicle_soc",
                    "topic": f"{prefix}/car/state",
                    "format": "json",
                    "json_path": "battery.soc",
                    "vehicle": "ev",
                    "stale_after_s": 900,
                },
                {"id": "ev-v2l", "role": "v2l", "topic": f"{prefix}/car/v2l", "vehicle": "ev"},
                *(extra_meters or []),
            ],
            "tariff": {
                "import": {
                    "dynamic_topic": f"{prefix}/prices/import",
                    "dynamic_multiplier": 1.21,
                    "dynamic_markup_per_kwh": 0.15,
                },
                "export": {"dynamic_topic": f"{prefix}/prices/export"},
            },
            "grid_signals": {
                "limit_topic": f"{prefix}/grid/limits",
                "outage_topic": f"{prefix}/grid/outage",
                "guaranteed_import_kw": 4.2,
            },
            "mqtt": {
                "host": BROKER_HOST,
                "port": port,
                "client_id": f"v2x-test-{uid()}",
                "base_topic": f"{prefix}/v2x",
                "discovery_prefix": f"{prefix}/ha",
                "keepalive_s": 5,
                **mqtt,
            },
        }
    )


@pytest.fixture
def prefix() -> str:
    return f"v2x-test/{uid()}"


@contextlib.asynccontextmanager
async def running(client: SiteMqttClient) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(client.run())
    try:
        await client.wait_connected(5)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def peer(port: int = BROKER_PORT) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(BROKER_HOST, port, identifier=f"peer-{uid()}") as c:
        yield c


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def collect(
    c: aiomqtt.Client, topic_filter: str, count: int, timeout_s: float = 5.0
) -> dict[str, bytes]:
    """Subscribe and gather messages (retained ones included) until ``count`` distinct topics arrived."""
    await c.subscribe(topic_filter, qos=1)
    got: dict[str, bytes] = {}
    async with asyncio.timeout(timeout_s):
        async for m in c.messages:
            assert isinstance(m.payload, bytes)
            got[m.topic.value] = m.payload
            if len(got) >= count:
                break
    return got


# ------------------------------------------------------------------- ingestion


async def test_every_preset_over_the_broker(prefix: str) -> None:
    clock = SystemClock()
    seen: list[str] = []
    client = SiteMqttClient(site_config(prefix), clock, on_reading=lambda r: seen.append(r.meter_id))
    async with running(client), peer() as p:
        await p.publish(f"{prefix}/shelly/status/em:0", SHELLY_EM0)
        await p.publish(f"{prefix}/tele/pv/SENSOR", TASMOTA_ENERGY)
        await p.publish(f"{prefix}/tele/sml/SENSOR", TASMOTA_SML)
        await p.publish(f"{prefix}/dsmr/reading/electricity_currently_delivered", b"0.347")
        await p.publish(f"{prefix}/dsmr/reading/electricity_currently_returned", b"0.000")
        await p.publish(f"{prefix}/heatpump/power", b"1.25")
        await p.publish(f"{prefix}/car/state", b'{"battery":{"soc":67.5,"range_km":301}}')
        await p.publish(f"{prefix}/car/v2l", b"1800")
        await eventually(lambda: len(seen) == 7)
        inputs = client.inputs
        now = clock.now()
        assert inputs.grid_power_w(now) == pytest.approx(715.175)
        assert inputs.phases_w("grid") == pytest.approx((951.2, -951.1, 715.1))
        assert inputs.pv_power_w(now) == 2450.0
        assert inputs.home_power_w(now) == pytest.approx(523.0 + 347.0 + 1250.0)
        assert inputs.vehicle_soc_percent("ev", now) == 67.5
        assert inputs.v2l_power_w("ev", now) == 1800.0
        assert not inputs.safe_mode(now)
        assert client.accepted == 7 and client.rejected == 0


async def test_shelly_rpc_notifications_over_the_broker(prefix: str) -> None:
    from tests.test_meters import (
        SHELLY_FULL_STATUS,
        SHELLY_NOTIFY_EVENT,
        SHELLY_NOTIFY_ONE_PHASE,
        SHELLY_NOTIFY_SYS,
        SHELLY_NOTIFY_TOTAL,
    )

    topic = f"{prefix}/shellypro3em-c8f09e8871a4/events/rpc"
    cfg = site_config(prefix)
    # The site's grid meter read from its RPC notifications (signed: the notifications mix import and export).
    rpc_grid = MeterConfig.model_validate(
        {"id": "grid", "role": "grid", "topic": topic, "format": "shelly_pro3em"}
    )
    cfg = cfg.model_copy(update={"meters": [rpc_grid, *cfg.meters[1:]]})
    clock = SystemClock()
    client = SiteMqttClient(cfg, clock)
    with structlog.testing.capture_logs() as logs:
        async with running(client), peer() as p:
            for payload in (SHELLY_FULL_STATUS, SHELLY_NOTIFY_SYS, SHELLY_NOTIFY_EVENT, SHELLY_NOTIFY_TOTAL):
                await p.publish(topic, payload, qos=1)
            await eventually(lambda: client.accepted == 2)
            reading = client.inputs.reading("grid")
            assert reading is not None and reading.value == pytest.approx(-1446.4)  # exporting
            await p.publish(topic, SHELLY_NOTIFY_ONE_PHASE, qos=1)
            await eventually(lambda: client.accepted == 3)
            assert client.inputs.phases_w("grid") == pytest.approx((-1210.4, 400.0, 715.1))
    assert client.rejected == 0 and not [e for e in logs if e["log_level"] == "warning"]


async def test_retained_site_meter_value_is_not_taken_as_fresh(prefix: str) -> None:
    """A retained grid value is ignored; a retained car SoC is kept but marked retained, so the
    daemon plans on it as an estimate and allows no discharge or V2L until a live reading."""
    cfg = site_config(prefix)
    readings: list[MeterReading] = []
    async with peer() as p:
        await p.publish(f"{prefix}/shelly/status/em:0", SHELLY_EM0, qos=1, retain=True)
        await p.publish(f"{prefix}/car/state", b'{"battery":{"soc":40}}', qos=1, retain=True)
        try:
            client = SiteMqttClient(cfg, SystemClock(), on_reading=readings.append)
            async with running(client):
                await eventually(lambda: client.inputs.reading("ev-soc") is not None)
                await asyncio.sleep(0.2)
                assert client.inputs.reading("grid") is None  # unknown age: ignored
                assert [(r.meter_id, r.value, r.retained) for r in readings] == [("ev-soc", 40.0, True)]
                await p.publish(f"{prefix}/car/state", b'{"battery":{"soc":41}}', qos=1)
                await eventually(lambda: len(readings) == 2)
                assert (readings[1].value, readings[1].retained) == (41.0, False)
        finally:
            await p.publish(f"{prefix}/shelly/status/em:0", b"", qos=1, retain=True)
            await p.publish(f"{prefix}/car/state", b"", qos=1, retain=True)


async def test_stale_meter_enters_safe_mode_until_fresh_data(prefix: str) -> None:
    clock = ManualClock(T0)
    cfg = site_config(prefix)
    client = SiteMqttClient(cfg, clock)
    site_meters = [
        f"{prefix}/shelly/status/em:0",
        f"{prefix}/tele/pv/SENSOR",
        f"{prefix}/tele/sml/SENSOR",
        f"{prefix}/heatpump/power",
    ]
    payloads = [SHELLY_EM0, TASMOTA_ENERGY, TASMOTA_SML, b"0.5"]
    async with running(client), peer() as p:
        assert client.inputs.safe_mode(clock.now())  # nothing heard yet
        for topic, payload in zip(site_meters, payloads, strict=True):
            await p.publish(topic, payload)
        await p.publish(
            f"{prefix}/dsmr/json",
            b'{"electricity_currently_delivered":0.1,"electricity_currently_returned":0}',
        )
        await eventually(lambda: client.accepted == 5)
        assert not client.inputs.safe_mode(clock.now())
        clock.advance(dt.timedelta(seconds=31))  # the grid meter's timeout is 30 s, the others 60 s
        assert client.inputs.safe_mode(clock.now())
        assert client.inputs.safe_mode_reasons(clock.now()) == ["meter grid (grid) is stale"]
        await p.publish(site_meters[0], SHELLY_EM0)
        await eventually(lambda: not client.inputs.safe_mode(clock.now()))
        clock.advance(dt.timedelta(seconds=30))
        assert "pv" in client.inputs.stale_meters(clock.now()) and client.inputs.safe_mode(clock.now())


async def test_signals_resolve_and_expire(prefix: str) -> None:
    clock = ManualClock(T0)
    kinds: list[str] = []
    client = SiteMqttClient(site_config(prefix), clock, on_signal=kinds.append)
    prices = [
        {
            "start": (T0 + i * dt.timedelta(hours=1)).isoformat(),
            "end": (T0 + (i + 1) * dt.timedelta(hours=1)).isoformat(),
            "value": v,
        }
        for i, v in enumerate([0.10, 0.20])
    ]
    async with running(client), peer() as p:
        await p.publish(f"{prefix}/prices/import", json.dumps(prices).encode(), qos=1)
        await p.publish(
            f"{prefix}/prices/export", json.dumps({"unit": "EUR/MWh", "prices": prices[:1]}).encode(), qos=1
        )
        await p.publish(
            f"{prefix}/grid/limits",
            json.dumps({"import_kw": 3, "export_kw": 0, "duration_s": 900}).encode(),
            qos=1,
        )
        await eventually(lambda: len(kinds) == 3)
        assert kinds == ["import_prices", "export_prices", "limits"]
        grid = client.inputs.prices_on_grid(T0, dt.timedelta(minutes=30), 4)
        assert grid.import_per_kwh.tolist() == pytest.approx([0.271, 0.271, 0.392, 0.392])
        assert grid.export_per_kwh.tolist()[:2] == pytest.approx([0.0001, 0.0001])
        limits = client.inputs.limits_at(clock.now())
        assert (limits.import_limit_w, limits.export_limit_w) == (4200.0, 0.0)  # 3 kW floored to 4.2 kW
        clock.advance(dt.timedelta(minutes=15))
        limits = client.inputs.limits_at(clock.now())
        assert (limits.import_limit_w, limits.export_limit_w) == (11000.0, 10000.0)  # expired: fallback
        # A newer message for the same window wins.
        newer = [{**prices[0], "value": 0.5}]
        await p.publish(f"{prefix}/prices/import", json.dumps(newer).encode(), qos=1)
        await eventually(lambda: len(kinds) == 4)
        assert client.inputs.prices_on_grid(T0, dt.timedelta(hours=1), 1).import_per_kwh[0] == pytest.approx(
            0.755
        )


async def test_grid_outage_topic_switches_the_grid_state(prefix: str) -> None:
    kinds: list[str] = []
    client = SiteMqttClient(site_config(prefix), ManualClock(T0), on_signal=kinds.append)
    async with running(client), peer() as p:
        await p.publish(f"{prefix}/grid/outage", b"lost", qos=1)
        await eventually(lambda: client.inputs.grid_lost)
        await p.publish(f"{prefix}/grid/outage", b"lost", qos=1)  # no change: no new signal
        await p.publish(f"{prefix}/grid/outage", b"perhaps", qos=1)  # garbage: logged, ignored
        await p.publish(f"{prefix}/grid/outage", b'{"grid_lost": false}', qos=1)
        await eventually(lambda: not client.inputs.grid_lost)
        assert kinds == ["grid_state", "grid_state"]
        assert client.rejected == 1


MALFORMED: list[tuple[str, bytes]] = [
    ("shelly/status/em:0", b'{"total_act_power": '),  # wrong JSON
    ("shelly/status/em:0", b'{"total_act_power": "lots"}'),  # wrong type
    ("shelly/status/em:0", b'{"total_act_power": NaN}'),  # NaN
    ("tele/pv/SENSOR", b'{"ENERGY":{"Power":1e12}}'),  # huge
    ("tele/pv/SENSOR", b'{"ENERGY":{"Power":' + b"9" * 600 + b"}}"),  # huge integer
    ("heatpump/power", b"3 kWh"),  # wrong unit
    ("car/state", b'{"battery":{"soc":0.8e3}}'),  # SoC out of range: wrong unit
    ("tele/sml/SENSOR", b'{"SML":{"Power_curr":1}, "pad":"' + b"x" * 20_000 + b'"}'),  # oversized
    ("prices/import", b"[{]"),
    (
        "prices/import",
        json.dumps(
            [{"start": "2025-01-15T00:00:00Z", "end": "2025-01-15T01:00:00Z", "value": 85.0}]
        ).encode(),
    ),
    ("prices/export", b" " * 300_000),
    ("grid/limits", b'{"import_kw": -3, "duration_s": 60}'),
    ("grid/limits", b'{"import_w": 1, "import_kw": 1, "duration_s": 60}'),
    ("grid/limits", b"null"),
]


async def test_malformed_payloads_are_logged_with_topic_and_ignored(prefix: str) -> None:
    client = SiteMqttClient(site_config(prefix), SystemClock(), log_interval_s=0)
    with structlog.testing.capture_logs() as logs:
        async with running(client) as task, peer() as p:
            for suffix, payload in MALFORMED:
                await p.publish(f"{prefix}/{suffix}", payload, qos=1)
            await eventually(lambda: client.rejected == len(MALFORMED))
            await p.publish(f"{prefix}/shelly/status/em:0", SHELLY_EM0)  # still alive and ingesting
            await eventually(lambda: client.accepted == 1)
            assert not task.done()
    rejected = [e for e in logs if e["event"] in ("meter_payload_rejected", "signal_rejected")]
    assert [e["topic"] for e in rejected] == [f"{prefix}/{s}" for s, _ in MALFORMED]
    assert all(e["log_level"] == "warning" and e["reason"] for e in rejected)
    assert "invalid JSON" in rejected[0]["reason"] and "exceeds" in rejected[7]["reason"]
    assert client.inputs.reading("pv") is None and client.inputs.price_updates == 0


async def test_warnings_are_rate_limited_per_topic(prefix: str) -> None:
    client = SiteMqttClient(site_config(prefix), SystemClock(), log_interval_s=60)
    with structlog.testing.capture_logs() as logs:
        async with running(client), peer() as p:
            for _ in range(5):
                await p.publish(f"{prefix}/heatpump/power", b"garbage", qos=1)
            await eventually(lambda: client.rejected == 5)
    assert len([e for e in logs if e["event"] == "meter_payload_rejected"]) == 1


class ExplodingInputs(SiteInputs):
    def update_meter(self, reading: MeterReading, phases_w: tuple[float, ...] = ()) -> bool:
        if reading.meter_id == "pv":
            raise RuntimeError("bug")
        return super().update_meter(reading, phases_w)


async def test_failing_state_or_callbacks_never_drop_the_connection(prefix: str) -> None:
    cfg = site_config(prefix)

    def bad_callback(reading: MeterReading) -> None:
        raise ValueError("callback bug")

    def bad_signal_callback(kind: str) -> None:
        raise ZeroDivisionError(kind)

    client = SiteMqttClient(
        cfg, SystemClock(), ExplodingInputs(cfg), on_reading=bad_callback, on_signal=bad_signal_callback
    )
    with structlog.testing.capture_logs() as logs:
        async with running(client) as task, peer() as p:
            await p.publish(f"{prefix}/tele/pv/SENSOR", TASMOTA_ENERGY, qos=1)
            await p.publish(f"{prefix}/heatpump/power", b"1", qos=1)
            await p.publish(f"{prefix}/grid/limits", b'{"import_kw": 5, "duration_s": 60}', qos=1)
            await eventually(lambda: client.accepted == 2 and client.inputs.limit_updates == 1)
            assert client.connected and client.connections == 1 and not task.done()
    events = [e["event"] for e in logs]
    assert "ingest_failed" in events and "on_reading_failed" in events and "on_signal_failed" in events


class BuggyClient(SiteMqttClient):
    """Fails once while connecting and on every command, to show both failures are contained."""

    failed_connects = 0

    async def _on_connect(self, client: aiomqtt.Client) -> None:
        if self.failed_connects == 0:
            self.failed_connects += 1
            raise RuntimeError("connect bug")
        await super()._on_connect(client)

    async def _dispatch(self, message: aiomqtt.Message) -> None:
        raise RuntimeError("command bug")  # only commands get here: meters are handled on arrival


async def test_unexpected_errors_are_logged_and_survived(prefix: str) -> None:
    client = BuggyClient(site_config(prefix), SystemClock(), reconnect_min_s=0.05, reconnect_max_s=0.1)
    with structlog.testing.capture_logs() as logs:
        async with running(client) as task, peer() as p:
            await p.publish(f"{prefix}/v2x/cmd/ev/mode", b"auto", qos=1)
            await p.publish(f"{prefix}/heatpump/power", b"2", qos=1)
            await eventually(lambda: client.accepted == 1)
            await eventually(lambda: any(e["event"] == "message_failed" for e in logs))
            assert client.connections == 1 and not task.done()
    events = [e["event"] for e in logs]
    assert events.count("mqtt_failed") == 1 and "message_failed" in events


class DroppingClient(SiteMqttClient):
    """Fails right after every connect (as a publish refused on connect would), except that the
    connections numbered in ``hold`` stay up for ``hold_s`` first; records each backoff attempt."""

    def __init__(self, *args: Any, hold: tuple[int, ...] = (), hold_s: float = 0.0, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.hold, self.hold_s = hold, hold_s
        self.attempts: list[int] = []

    async def _on_connect(self, client: aiomqtt.Client) -> None:
        await super()._on_connect(client)
        if self.connections in self.hold:
            await asyncio.sleep(self.hold_s)
        raise RuntimeError("publish failed on connect")

    def backoff_s(self, attempt: int) -> float:
        self.attempts.append(attempt)
        return super().backoff_s(attempt)


async def _run_until(client: SiteMqttClient, check: Callable[[], bool]) -> None:
    task = asyncio.create_task(client.run())
    try:
        await eventually(check, timeout_s=10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_backoff_grows_when_the_connection_drops_right_after_connecting(prefix: str) -> None:
    client = DroppingClient(site_config(prefix), SystemClock(), reconnect_min_s=0.01, reconnect_max_s=0.04)
    with structlog.testing.capture_logs():
        await _run_until(client, lambda: len(client.attempts) >= 5)
    assert client.attempts[:5] == [0, 1, 2, 3, 4]
    assert client.connections >= 5


async def test_backoff_starts_afresh_after_a_connection_that_held(prefix: str) -> None:
    client = DroppingClient(
        site_config(prefix),
        SystemClock(),
        reconnect_min_s=0.01,
        reconnect_max_s=0.04,
        reconnect_reset_after_s=0.3,
        hold=(3,),
        hold_s=0.4,
    )
    with structlog.testing.capture_logs():
        await _run_until(client, lambda: len(client.attempts) >= 5)
    assert client.attempts[:5] == [0, 1, 0, 1, 2]


async def test_publish_to_an_invalid_topic_is_logged_not_raised(prefix: str) -> None:
    client = SiteMqttClient(site_config(prefix), SystemClock())
    with structlog.testing.capture_logs() as logs:
        async with running(client) as task:
            assert await client.publish_raw(f"{prefix}/car/+/v2l", b"OFF") is False
            assert await client.publish_raw(f"{prefix}/car/#", b"OFF", retain=True) is False
            assert await client.publish_raw(f"{prefix}/car/v2l", b"OFF") is True
            assert client.connected and client.connections == 1 and not task.done()
    refused = [e for e in logs if e["event"] == "mqtt_publish_refused"]
    assert [e["topic"] for e in refused] == [f"{prefix}/car/+/v2l", f"{prefix}/car/#"]
    assert all(e["log_level"] == "warning" for e in refused)


# -------------------------------------------------------------------- commands


async def test_commands_are_validated_queued_and_acknowledged(prefix: str) -> None:
    client = SiteMqttClient(site_config(prefix), ManualClock(T0), log_interval_s=0)
    base = f"{prefix}/v2x"
    with structlog.testing.capture_logs() as logs:
        await _exchange_commands(client, base)
    rejected = {e["topic"] for e in logs if e["event"] == "command_rejected" and e["log_level"] == "warning"}
    assert rejected == {f"{base}/cmd/{t}" for t in ("ev/v2l", "ghost/mode", "ev/weekly_departure")}


async def _exchange_commands(client: SiteMqttClient, base: str) -> None:
    async with running(client), peer() as p:
        await p.subscribe(f"{base}/reply/#", qos=1)
        await p.publish(f"{base}/cmd/ev/mode", b'{"mode":"charge_now","request_id":"r1"}', qos=1)
        await p.publish(f"{base}/cmd/ev/v2l", b'{"action":"start","power_w":-1,"request_id":"r2"}', qos=1)
        await p.publish(f"{base}/cmd/ghost/mode", b"auto", qos=1)
        await p.publish(
            f"{base}/cmd/ev/departure", b'{"at":"2025-01-16T07:30:00+01:00","target_soc_percent":80}', qos=1
        )
        huge = b'{"action":"start","power_w":' + b"9" * 400 + b',"request_id":"r5"}'
        await p.publish(f"{base}/cmd/ev/weekly_departure", b'{"weekday":"someday","request_id":"r6"}', qos=1)
        replies = []
        async with asyncio.timeout(5):
            async for m in p.messages:
                assert isinstance(m.payload, bytes)
                replies.append((m.topic.value, json.loads(m.payload)))
                if len(replies) == 5:
                    break
        await p.publish(f"{base}/cmd/ev/v2l", huge, qos=1)
        async with asyncio.timeout(5):
            async for m in p.messages:
                assert isinstance(m.payload, bytes)
                huge_reply = json.loads(m.payload)
                break
    by_topic = {t: r for t, r in replies}
    ok = by_topic[f"{base}/reply/ev/mode"]
    assert ok["ok"] is True and ok["request_id"] == "r1" and ok["error"] is None and ok["command"] == "mode"
    bad = by_topic[f"{base}/reply/ev/v2l"]
    assert bad["ok"] is False and bad["request_id"] == "r2" and "power_w" in bad["error"]
    assert by_topic[f"{base}/reply/ghost/mode"]["error"] == "unknown vehicle 'ghost'"
    assert by_topic[f"{base}/reply/ev/departure"]["ok"] is True
    weekly = by_topic[f"{base}/reply/ev/weekly_departure"]
    assert weekly["ok"] is False and weekly["request_id"] == "r6" and "weekday" in weekly["error"]
    assert huge_reply["ok"] is False and huge_reply["request_id"] == "r5" and "power_w" in huge_reply["error"]
    queued = [client.commands.get_nowait() for _ in range(client.commands.qsize())]
    assert queued[0] == SetMode("ev", VehicleMode.CHARGE_NOW, "r1")
    assert len(queued) == 2 and queued[1].vehicle_id == "ev"


async def test_command_handler_can_refuse_and_retained_commands_are_ignored(prefix: str) -> None:
    handled: list[Command] = []

    async def handler(command: Command) -> None:
        if isinstance(command, V2LCommand):
            raise CommandRejected("vehicle is not plugged in")
        if isinstance(command, SetMode) and command.mode is VehicleMode.AUTO:
            raise RuntimeError("boom")
        handled.append(command)

    base = f"{prefix}/v2x"
    client = SiteMqttClient(site_config(prefix), SystemClock(), on_command=handler)
    async with peer() as p:
        await p.publish(f"{base}/cmd/ev/mode", b"no_discharge", qos=1, retain=True)
        try:
            async with running(client) as task:
                await p.subscribe(f"{base}/reply/#", qos=1)
                await p.publish(f"{base}/cmd/ev/v2l", b"start", qos=1)
                await p.publish(f"{base}/cmd/ev/mode", b"auto", qos=1)
                await p.publish(f"{base}/cmd/ev/mode", b"charge_now", qos=1)
                replies = []
                async with asyncio.timeout(5):
                    async for m in p.messages:
                        assert isinstance(m.payload, bytes)
                        replies.append(json.loads(m.payload))
                        if len(replies) == 3:
                            break
                assert not task.done()
        finally:
            await p.publish(f"{base}/cmd/ev/mode", b"", qos=1, retain=True)
    assert [r["error"] for r in replies] == ["vehicle is not plugged in", "internal error", None]
    assert handled == [SetMode("ev", VehicleMode.CHARGE_NOW)]  # the retained no_discharge never ran


# ------------------------------------------------------------------ publishing


def sample_plan(start: dt.datetime) -> Plan:
    n = 4 * 30  # 30 h of 15-min steps: only the next 24 h are published
    return Plan(
        created_at=start,
        start=start,
        step=dt.timedelta(minutes=15),
        vehicles={
            "ev": VehiclePlan(
                "ev", tuple([3700.4] * n), tuple([50.0 + i * 0.1 for i in range(n + 1)]), "cheap hours"
            )
        },
        grid_import_w=tuple([4000.0] * n),
        grid_export_w=tuple([0.0] * n),
        import_price_per_kwh=tuple([0.25123] * n),
        export_price_per_kwh=tuple([0.07] * n),
        solver_status="optimal",
        solve_time_ms=12.5,
    )


async def test_state_plan_status_and_discovery_are_published_retained(prefix: str) -> None:
    clock = ManualClock(T0 + dt.timedelta(minutes=20))
    client = SiteMqttClient(site_config(prefix), clock)
    base = f"{prefix}/v2x"
    async with running(client):
        assert await client.publish_site_flows(SiteFlows(clock.now(), -1200.0, 4000.0, 800.0, 2000.0))
        assert await client.publish_vehicle(
            VehicleStatus("ev", clock.now(), 55.0, 20.0, 80.0, VehicleMode.AUTO, -3700.0, True, "wb")
        )
        assert await client.publish_plan(sample_plan(T0))
        assert await client.publish_status(
            ControllerStatus(clock.now(), True, ("meter grid (grid) is stale",), ("grid",))
        )
        rejected = ProfileOutcome("TxProfile", "rejected", clock.now(), "Rejected (TxNotFound)", 1, None)
        installed = ProfileOutcome("TxDefaultProfile", "accepted", T0, "", 2, T0 + dt.timedelta(days=1))
        assert await client.publish_charger(
            ChargerStatus("wb", clock.now(), True, "2.1", "Occupied", "tx-1", T0, rejected, installed)
        )
        async with peer() as p:
            state = await collect(p, f"{base}/#", 6)
        async with peer() as p:
            discovery = await collect(p, f"{prefix}/ha/#", 9)
    assert state[f"{base}/status"] == b"online"
    site = json.loads(state[f"{base}/state/site"])
    assert site == {
        "at": "2025-01-15T12:20:00Z",
        "grid_w": -1200.0,
        "pv_w": 4000.0,
        "home_w": 800.0,
        "vehicles_w": 2000.0,
        "safe_mode": False,
    }
    vehicle = json.loads(state[f"{base}/state/vehicle/ev"])
    assert vehicle["soc_percent"] == 55.0 and vehicle["mode"] == "auto" and vehicle["setpoint_w"] == -3700.0
    plan = json.loads(state[f"{base}/state/plan"])
    assert plan["start"] == "2025-01-15T12:15:00Z" and plan["steps"] == 96 and plan["step_s"] == 900
    assert plan["vehicles"]["ev"]["power_w"][0] == 3700 and len(plan["vehicles"]["ev"]["soc_percent"]) == 97
    assert plan["import_price"][0] == 0.2512
    charger = json.loads(state[f"{base}/state/charger/wb"])
    assert charger == {
        "at": "2025-01-15T12:20:00Z",
        "connected": True,
        "ocpp_version": "2.1",
        "status": "Occupied",
        "transaction_id": "tx-1",
        "last_seen": "2025-01-15T12:00:00Z",
        "last_profile": {
            "purpose": "TxProfile",
            "status": "rejected",
            "accepted": False,
            "reason": "Rejected (TxNotFound)",
            "at": "2025-01-15T12:20:00Z",
            "attempt": 1,
            "valid_to": None,
        },
        "default_profile": {
            "purpose": "TxDefaultProfile",
            "status": "accepted",
            "accepted": True,
            "reason": None,
            "at": "2025-01-15T12:00:00Z",
            "attempt": 2,
            "valid_to": "2025-01-16T12:00:00Z",
        },
    }
    controller = json.loads(state[f"{base}/state/controller"])
    assert controller["state"] == "safe_mode" and controller["stale_meters"] == ["grid"]
    node = f"v2x-test_{prefix.split('/')[1]}_v2x"
    grid_sensor = json.loads(discovery[f"{prefix}/ha/sensor/{node}/grid_power/config"])
    assert grid_sensor["state_topic"] == f"{base}/state/site"
    assert grid_sensor["unit_of_measurement"] == "W" and grid_sensor["device_class"] == "power"
    assert grid_sensor["availability_topic"] == f"{base}/status"
    soc = json.loads(discovery[f"{prefix}/ha/sensor/{node}/ev_soc/config"])
    assert soc["value_template"] == "{{ value_json.soc_percent }}" and soc["device_class"] == "battery"
    assert f"{prefix}/ha/binary_sensor/{node}/safe_mode/config" in discovery
    await clear_retained(prefix, list(state) + list(discovery))


async def clear_retained(prefix: str, topics: list[str], port: int = BROKER_PORT) -> None:
    async with peer(port) as p:
        for topic in topics:
            assert topic.startswith(prefix)
            await p.publish(topic, b"", qos=1, retain=True)


async def test_cancel_publishes_offline_and_disconnects(prefix: str) -> None:
    client = SiteMqttClient(site_config(prefix), SystemClock())
    async with running(client):
        pass
    assert not client.connected
    async with peer() as p:
        got = await collect(p, f"{prefix}/v2x/status", 1)
    assert got[f"{prefix}/v2x/status"] == b"offline"
    assert not await client.publish_status(ControllerStatus(T0, False))  # not connected: not sent
    await clear_retained(prefix, [f"{prefix}/v2x/status"])


CHILD = """
import asyncio, json, sys
from controller.clock import SystemClock
from controller.config import parse_config
from controller.mqtt import SiteMqttClient

async def main():
    client = SiteMqttClient(parse_config(json.loads(sys.argv[1])), SystemClock())
    task = asyncio.create_task(client.run())
    await client.wait_connected(10)
    print("connected", flush=True)
    await task

asyncio.run(main())
"""


async def test_last_will_offline_when_the_process_dies(prefix: str) -> None:
    cfg = site_config(prefix)
    config_json = json.dumps(
        cfg.model_dump(mode="json", by_alias=True, exclude={"mqtt": {"password"}, "api": {"token"}})
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, config_json, stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            while (line := await proc.stdout.readline()) and line.strip() != b"connected":
                pass
        assert line.strip() == b"connected"
        async with peer() as p:
            assert (await collect(p, f"{prefix}/v2x/status", 1))[f"{prefix}/v2x/status"] == b"online"
        proc.send_signal(signal.SIGKILL)  # no clean disconnect: the broker must publish the will
        await asyncio.wait_for(proc.wait(), 10)
        async with peer() as p:
            await p.subscribe(f"{prefix}/v2x/status", qos=1)
            async with asyncio.timeout(15):
                async for m in p.messages:
                    if m.payload == b"offline":
                        break
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    await clear_retained(prefix, [f"{prefix}/v2x/status"])


# ------------------------------------------------------------------- reconnect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A private Mosquitto on 127.0.0.1 that a test can kill and start again on the same port.

    ``listener_options`` go under the listener (TLS files, ``password_file``, ``allow_anonymous``).
    """

    def __init__(self, tmp: Path, listener_options: str = "allow_anonymous true\n") -> None:
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(
            f"per_listener_settings true\npersistence false\nlistener {self.port} 127.0.0.1\n{listener_options}"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.kill()


async def test_broker_killed_and_restarted_mid_stream(prefix: str, broker: Broker) -> None:
    client = SiteMqttClient(
        site_config(prefix, port=broker.port), SystemClock(), reconnect_min_s=0.05, reconnect_max_s=0.3
    )
    meter_topic = f"{prefix}/heatpump/power"
    stop = asyncio.Event()
    sent = 0

    async def stream() -> None:
        """A meter that keeps publishing (QoS 0, MQTT 3.1.1 on a bare socket) through the outage and
        reconnects like a real device."""
        nonlocal sent
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(BROKER_HOST, broker.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            try:
                client_id = f"meter-{uid()}".encode()
                connect = b"\x00\x04MQTT\x04\x02\x00\x00" + len(client_id).to_bytes(2, "big") + client_id
                writer.write(bytes([0x10, len(connect)]) + connect)
                async with asyncio.timeout(2):
                    assert (await reader.readexactly(4))[3] == 0  # CONNACK: accepted
                while not stop.is_set():
                    sent += 1
                    body = (
                        len(meter_topic).to_bytes(2, "big") + meter_topic.encode() + str(sent % 10).encode()
                    )
                    writer.write(bytes([0x30, len(body)]) + body)
                    await writer.drain()
                    await asyncio.sleep(0.002)
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.05)
            finally:
                writer.close()

    async with running(client) as task:
        streamer = asyncio.create_task(stream())
        try:
            await eventually(lambda: client.accepted >= 100)
            assert client.connections == 1
            broker.kill()  # mid-stream: the meter is still sending
            await eventually(lambda: not client.connected)
            # While the broker is down: publishing does not raise; retained state is kept for later.
            assert not await client.publish_status(ControllerStatus(T0, False, version="during-outage"))
            await asyncio.sleep(0.5)  # several failed reconnect attempts
            assert not task.done()
            accepted_before, sent_before = client.accepted, sent
            broker.start()
            await client.wait_connected(10)
            assert client.connections == 2
            # Resubscribed (the restarted broker has no session): the stream resumes.
            await eventually(lambda: client.accepted >= accepted_before + 100, timeout_s=10)
            assert sent > sent_before
        finally:
            stop.set()
            async with asyncio.timeout(10):
                await streamer
        async with peer(broker.port) as p:
            state = await collect(p, f"{prefix}/v2x/#", 2)
            assert state[f"{prefix}/v2x/status"] == b"online"  # birth message published again
            assert json.loads(state[f"{prefix}/v2x/state/controller"])["version"] == "during-outage"
            await p.publish(f"{prefix}/v2x/cmd/ev/mode", b"auto", qos=1)
            await eventually(lambda: client.commands.qsize() == 1)
        reading = client.inputs.reading("heatpump")
        assert reading is not None and 0 <= reading.value < 1_000_000
        assert not task.done() and client.rejected == 0


def write_tls_files(tmp: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1: (ca, cert, key) PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "v2x test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    import ipaddress

    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture
def readable_tmp() -> Iterator[Path]:
    """A temporary folder Mosquitto can read after it drops root for its own user (pytest's is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="v2x-mqtt-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_tls_and_password_from_the_config(prefix: str, readable_tmp: Path) -> None:
    ca, cert, key = write_tls_files(readable_tmp)
    passwords = readable_tmp / "passwd"
    make_passwords = await asyncio.create_subprocess_exec(
        "mosquitto_passwd", "-b", "-c", str(passwords), "v2x", "s3cret"
    )
    assert await asyncio.wait_for(make_passwords.wait(), 10) == 0
    for path in (ca, cert, key, passwords):
        path.chmod(0o644)
    broker = Broker(
        readable_tmp,
        f"allow_anonymous false\npassword_file {passwords}\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n",
    )
    broker.start()
    tls = {"enabled": True, "ca_file": str(ca)}
    try:
        client = SiteMqttClient(
            site_config(prefix, port=broker.port, username="v2x", password="s3cret", tls=tls), SystemClock()
        )
        async with running(client):
            context = build_tls_context(TlsConfig(enabled=True, ca_file=ca))
            async with aiomqtt.Client(
                BROKER_HOST, broker.port, username="v2x", password="s3cret", tls_context=context
            ) as p:
                await p.publish(f"{prefix}/heatpump/power", b"1.5", qos=1)
                await eventually(lambda: client.accepted == 1)
        refused = {
            "wrong password": site_config(prefix, port=broker.port, username="v2x", password="nope", tls=tls),
            "unknown CA": site_config(
                prefix, port=broker.port, username="v2x", password="s3cret", tls={"enabled": True}
            ),
        }
        for why, cfg in refused.items():
            failing = SiteMqttClient(cfg, SystemClock(), reconnect_min_s=0.05, reconnect_max_s=0.1)
            with structlog.testing.capture_logs() as logs:
                task = asyncio.create_task(failing.run())
                await eventually(lambda: any(e["event"] == "mqtt_disconnected" for e in logs))
                assert not failing.connected and not task.done(), why
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            errors = " ".join(e["error"] for e in logs if e["event"] == "mqtt_disconnected").lower()
            expected = "not authorized" if why == "wrong password" else "certificate verify failed"
            assert expected in errors, errors
    finally:
        broker.kill()


async def test_unreachable_broker_keeps_retrying_without_crashing(prefix: str) -> None:
    client = SiteMqttClient(
        site_config(prefix, port=free_port()), SystemClock(), reconnect_min_s=0.02, reconnect_max_s=0.05
    )
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(client.run())
        await asyncio.sleep(0.5)
        assert not task.done() and not client.connected
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    attempts = [e for e in logs if e["event"] == "mqtt_disconnected"]
    assert len(attempts) >= 3 and "refused" in attempts[0]["error"].lower()


# ------------------------------------------------------------------ small parts


def test_backoff_doubles_caps_and_jitters() -> None:
    import random

    cfg = site_config("x")
    client = _bare(cfg, random.Random(1))
    delays = [client.backoff_s(a) for a in range(12)]
    # The client's default maximum (60 s) is held to the 5 s cap: the broker is seen within seconds.
    assert client.reconnect.max_s == 5.0
    assert all(1.0 <= d <= min(5.0, 2 ** (a + 1)) for a, d in enumerate(delays))
    assert len(set(delays)) == len(delays)  # jittered


def _bare(cfg: SiteConfig, rng: Any) -> SiteMqttClient:
    async def make() -> SiteMqttClient:
        return SiteMqttClient(cfg, SystemClock(), rng=rng)

    return asyncio.run(make())


def test_tls_context_from_config(tmp_path: Path) -> None:
    import ssl

    assert build_tls_context(TlsConfig()) is None
    ctx = build_tls_context(TlsConfig(enabled=True, insecure_skip_verify=True))
    assert ctx is not None and ctx.verify_mode is ssl.CERT_NONE and not ctx.check_hostname
    strict = build_tls_context(TlsConfig(enabled=True))
    assert strict is not None and strict.verify_mode is ssl.CERT_REQUIRED
    with pytest.raises(OSError):
        build_tls_context(TlsConfig(enabled=True, ca_file=tmp_path / "missing.pem"))


def test_reconnect_bounds_are_checked() -> None:
    async def make() -> None:
        SiteMqttClient(site_config("x"), SystemClock(), reconnect_min_s=5, reconnect_max_s=1)

    with pytest.raises(ValueError, match="reconnect"):
        asyncio.run(make())

    async def make_reset() -> None:
        SiteMqttClient(site_config("x"), SystemClock(), reconnect_reset_after_s=-1)

    with pytest.raises(ValueError, match="reconnect_reset_after_s"):
        asyncio.run(make_reset())
