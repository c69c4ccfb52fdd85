"""The embedded MQTT broker (amqtt) and the virtual meters of :mod:`sim.hil`: retained and QoS 1
messages through the broker, meter payloads that the daemon's own parsers read back to the values
published, a clean stop that frees the port, and the real daemon running against the broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from controller.clock import ScaledClock
from controller.config import SiteConfig, parse_config
from controller.meters import MeterParser
from sim.hil.broker import EmbeddedBroker
from sim.hil.meters import (
    HomeMeters,
    MeterValues,
    ShellyPro3EM,
    SocMeter,
    TasmotaPower,
    VirtualMeters,
)
from tests.chaos_support import chaos_site, poll_api
from tests.daemon_support import broker as broker_client
from tests.daemon_support import running_daemon
from tests.ocpp_support import wait_until

Json = dict[str, Any]


def site_config(meters: list[Json]) -> SiteConfig:
    """configs/minimal.yaml with ``meters``."""
    return parse_config(
        {
            "site": {"grid": {"import_limit_kw": 11}},
            "chargers": [{"id": "wallbox"}],
            "vehicles": [{"id": "car", "usable_capacity_kwh": 60, "home_charger": "wallbox"}],
            "tariff": {"import": {"static_price_per_kwh": 0.30}},
            "meters": meters,
        }
    )


@contextlib.asynccontextmanager
async def recorder(port: int, topic_filter: str = "#", qos: int = 1) -> AsyncIterator[list[aiomqtt.Message]]:
    """A client subscribed to ``topic_filter`` collecting every message into the list."""
    messages: list[aiomqtt.Message] = []
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"rec-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(topic_filter, qos=qos)

        async def read() -> None:
            async for message in client.messages:
                messages.append(message)

        reader = asyncio.create_task(read())
        try:
            yield messages
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def payload_of(message: aiomqtt.Message) -> bytes:
    assert isinstance(message.payload, bytes)
    return message.payload


async def test_broker_delivers_retained_and_qos1_messages() -> None:
    async with (
        EmbeddedBroker() as broker,
        aiomqtt.Client("127.0.0.1", broker.port, identifier="publisher") as pub,
    ):
        assert broker.port > 0 and broker.running
        await pub.publish("home/status", b"online", qos=1, retain=True)
        async with recorder(broker.port) as seen:
            await pub.publish("home/cmd/car/mode", b'{"mode":"eco"}', qos=1)
            await pub.publish("home/meter/grid", b"1200", qos=0)
            await wait_until(lambda: len(seen) >= 3, 5, "three messages")
        # amqtt 0.12 alone would also send this client the retained home/status, for the "#" of the
        # client above (see sim.hil.broker._only_own_retained).
        async with recorder(broker.port, "home/+/car/#") as wildcard:
            await pub.publish("home/cmd/car/mode", b'{"mode":"fast"}', qos=1)
            await pub.publish("home/other", b"x", qos=1)
            await wait_until(lambda: len(wildcard) >= 1, 5, "the wildcard match")
            await asyncio.sleep(0.1)
    by_topic = {m.topic.value: m for m in seen}
    assert by_topic["home/status"].retain and payload_of(by_topic["home/status"]) == b"online"
    assert by_topic["home/cmd/car/mode"].qos == 1 and not by_topic["home/cmd/car/mode"].retain
    assert payload_of(by_topic["home/meter/grid"]) == b"1200"
    assert [(m.topic.value, payload_of(m)) for m in wildcard] == [("home/cmd/car/mode", b'{"mode":"fast"}')]
    assert not broker.running


async def test_stop_ends_every_task_and_frees_the_port() -> None:
    before = asyncio.all_tasks()
    broker = EmbeddedBroker()
    await broker.start()
    port = broker.port
    # A client still connected when it stops: raw MQTT 3.1.1 CONNECT (clean session, keep-alive 60).
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client_id = b"left-connected"
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    writer.write(bytes([0x10, len(variable)]) + variable)
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"\x20\x02\x00\x00"  # CONNACK accepted
    loop = asyncio.get_running_loop()
    started = loop.time()
    await broker.stop()
    assert loop.time() - started < 5
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the broker closed the connection
    writer.close()
    await broker.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = broker.port
    await asyncio.sleep(0.05)
    assert asyncio.all_tasks() - before == {asyncio.current_task()} - before
    async with EmbeddedBroker(port=port) as second:
        assert second.port == port
        async with aiomqtt.Client("127.0.0.1", port, identifier="second") as again:
            await again.publish("x", b"1", qos=1)


def test_payload_shapes() -> None:
    grid = ShellyPro3EM("shellypro3em-grid/status/em:0")
    assert json.loads(grid.payload(700.0, (951.2, -951.1, 699.9))) == {
        "id": 0,
        "a_act_power": 951.2,
        "b_act_power": -951.1,
        "c_act_power": 699.9,
        "total_act_power": 700.0,
    }
    assert json.loads(grid.payload(-300)) == {"id": 0, "total_act_power": -300.0}
    at = datetime(2024, 6, 1, 12, 0, 5, tzinfo=UTC)
    assert json.loads(TasmotaPower().payload(2450, at)) == {
        "Time": "2024-06-01T12:00:05",
        "ENERGY": {"Power": 2450.0},
    }
    assert SocMeter("car/soc", "car").payload(67) == b"67.0"
    assert json.loads(SocMeter("car/soc", "car", json_path="data.1.soc").payload(55.5)) == {
        "data": [None, {"soc": 55.5}]
    }


@pytest.mark.parametrize("soc_json_path", [None, "battery.soc_percent", "cars.0.soc"])
async def test_virtual_meters_publish_what_the_daemon_parses(soc_json_path: str | None) -> None:
    meters = HomeMeters.under("hil/home", vehicles=["car"], soc_json_path=soc_json_path)
    cfg = site_config(meters.config_entries())
    parsers = {meter.topic: MeterParser(meter, cfg) for meter in cfg.meters}
    assert set(parsers) == {
        "hil/home/shellypro3em-grid/status/em:0",
        "hil/home/tele/pv/SENSOR",
        "hil/home/cars/car/soc",
    }
    values = MeterValues(grid_w=-1234.5, grid_phases_w=(-2000.0, 400.25, 365.25), pv_w=3210.0,
                         soc_percent={"car": 57.5})  # fmt: skip
    clock = ScaledClock(datetime(2025, 1, 15, 12, tzinfo=UTC), speed=20)
    # Subscribed at QoS 0 as the daemon does: amqtt delivers at the subscription's QoS, not the
    # publish's (a QoS 0 message reaches a QoS 1 subscriber as QoS 1).
    async with EmbeddedBroker() as broker, recorder(broker.port, "hil/#", qos=0) as seen:
        async with VirtualMeters(meters, lambda: values, port=broker.port, clock=clock, period_s=1.0) as feed:
            # period 1 s at 20x: a round every 50 ms
            await wait_until(lambda: feed.rounds >= 3 and len(seen) >= 9, 5, "three rounds")
        assert feed.published == 3 * feed.rounds
    parsed: dict[str, Any] = {}
    for message in seen:
        assert not message.retain and message.qos == 0
        result = parsers[message.topic.value].parse(message.topic.value, payload_of(message))
        assert result is not None
        parsed[message.topic.value] = result
    grid = parsed["hil/home/shellypro3em-grid/status/em:0"]
    assert grid.value == -1234.5 and grid.phases_w == (-2000.0, 400.25, 365.25)
    assert parsed["hil/home/tele/pv/SENSOR"].value == 3210.0
    assert parsed["hil/home/cars/car/soc"].value == 57.5


async def test_silent_meters_and_a_failing_callback() -> None:
    calls = 0

    def values() -> MeterValues:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ValueError("a broken model")
        return MeterValues(grid_w=100.0)  # PV and SoC silent

    meters = HomeMeters.under("quiet", vehicles=["car"])
    async with EmbeddedBroker() as broker, recorder(broker.port) as seen:
        async with VirtualMeters(meters, values, port=broker.port, period_s=0.02) as feed:
            await wait_until(lambda: feed.rounds >= 3, 5, "rounds after the failure")
            assert await feed.publish_now() == 1
        await wait_until(lambda: len(seen) >= feed.published, 5, "every message")
    assert {m.topic.value for m in seen} == {"quiet/shellypro3em-grid/status/em:0"}
    assert not feed.connected


async def test_virtual_meters_start_fails_without_a_broker() -> None:
    async with EmbeddedBroker() as broker:
        port = broker.port
    feed = VirtualMeters(HomeMeters.under("x"), MeterValues, port=port, connect_timeout_s=0.5)
    with pytest.raises(TimeoutError):
        await feed.start()
    await feed.stop()


async def test_daemon_runs_against_the_embedded_broker(tmp_path: Path) -> None:
    """The real daemon (a subprocess) on the embedded broker: its birth message is retained there,
    and a Shelly reading from the virtual meters reaches its state."""
    async with EmbeddedBroker() as broker:
        site, api = chaos_site(tmp_path, "hil-broker", broker.port)
        meters = HomeMeters(grid=ShellyPro3EM(site.topic("shellypro3em-grid/status/em:0"), stale_after_s=3))
        site.tree["meters"] = meters.config_entries()
        async with running_daemon(site):
            async with broker_client(f"{site.base}/status", port=broker.port) as mqtt:
                status = await mqtt.wait_message(f"{site.base}/status", lambda m: m.retain, timeout_s=10)
                assert status.payload == b"online"
            values = MeterValues(grid_w=1234.5, grid_phases_w=(1000.0, 200.0, 34.5))
            async with VirtualMeters(meters, lambda: values, port=broker.port, period_s=0.5):
                state = await poll_api(
                    api, "/state", lambda s: s["grid_power_w"] == 1234.5, 15, "the Shelly reading"
                )
    assert state["grid_power_w"] == 1234.5
