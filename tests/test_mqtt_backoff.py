"""Reconnect backoff: capped and jittered waits, and a reconnect within seconds once the broker is
reachable again (through a proxy in front of the shared Mosquitto this test can close and reopen)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
import uuid

import pytest
import structlog

from controller.backoff import Backoff
from controller.clock import SystemClock
from controller.config import SiteConfig, parse_config
from controller.mqtt import SiteMqttClient
from controller.mqtt.connection import RECONNECT_CAP_S, ReconnectPolicy
from tests.ocpp_support import wait_until

BROKER_HOST = "127.0.0.1"
BROKER_PORT = 1883


def test_waits_are_capped_floored_and_jittered() -> None:
    policy = ReconnectPolicy()
    rng = random.Random(7)
    waits = [policy.delay_s(a, rng) for a in range(200)]
    assert all(1.0 <= w <= min(RECONNECT_CAP_S, 2.0 ** (a + 1)) for a, w in enumerate(waits))
    assert waits[0] <= 2.0 and waits[1] <= 4.0
    assert len(set(waits)) > 100  # jittered: no two attempts in step


def test_attempts_per_minute_while_the_broker_stays_down() -> None:
    policy = ReconnectPolicy()
    rng = random.Random(3)
    waits = [policy.delay_s(a, rng) for a in range(1000)]
    mean_s = sum(waits[3:]) / len(waits[3:])
    assert 2.7 <= mean_s <= 3.3  # about 20 attempts a minute once capped
    assert 60 / min(waits) <= 60  # never more than one a second


def test_a_fleet_does_not_reconnect_in_step() -> None:
    """Gateways that lost the same broker spread their next attempt over the whole 1-5 s window."""
    policy = ReconnectPolicy()
    fleet = [policy.delay_s(10, random.Random(seed)) for seed in range(500)]
    assert min(fleet) < 1.5 and max(fleet) > 4.5
    buckets = [sum(1 for w in fleet if lo <= w < lo + 1) for lo in range(1, 5)]
    assert all(80 <= b <= 170 for b in buckets), buckets


def test_the_cap_holds_whatever_maximum_is_asked_for() -> None:
    policy = ReconnectPolicy(min_s=1.0, max_s=60.0)
    assert policy.max_s == RECONNECT_CAP_S
    assert max(policy.delay_s(a, random.Random(a)) for a in range(100)) <= RECONNECT_CAP_S
    small = ReconnectPolicy(min_s=0.01, max_s=0.04)
    assert all(0.01 <= small.delay_s(a, random.Random(a)) <= 0.04 for a in range(50))
    assert ReconnectPolicy(min_s=10, max_s=20).min_s == RECONNECT_CAP_S
    with pytest.raises(ValueError, match="reconnect"):
        ReconnectPolicy(min_s=5, max_s=1)


def test_backoff_spread_is_deterministic_for_a_seed() -> None:
    backoff = Backoff(initial_s=1.0, max_s=5.0)
    first = [backoff.spread_s(a, random.Random(11)) for a in range(1, 10)]
    assert first == [backoff.spread_s(a, random.Random(11)) for a in range(1, 10)]
    assert all(1.0 <= w <= 5.0 for w in first)


# ------------------------------------------------------------------ against the broker


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of the broker; ``close`` drops every connection and stops
    listening, ``open`` listens again on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(BROKER_HOST, BROKER_PORT)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(port: int) -> SiteConfig:
    prefix = f"v2xtest/backoff-{uuid.uuid4().hex[:8]}"
    return parse_config(
        {
            "site": {"name": "backoff", "grid": {"import_limit_kw": 17, "export_limit_kw": 10}},
            "meters": [{"id": "grid", "role": "grid", "topic": f"{prefix}/meter/grid"}],
            "tariff": {
                "import": {"dynamic_topic": f"{prefix}/prices/import"},
                "export": {"dynamic_topic": f"{prefix}/prices/export"},
            },
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "client_id": f"backoff-{uuid.uuid4().hex[:10]}",
                "base_topic": f"{prefix}/v2x",
                "homeassistant_discovery": False,
            },
        },
        env={},
    )


async def test_reconnects_within_seconds_after_the_broker_comes_back() -> None:
    """An outage long enough to reach the cap (several attempts refused): once the proxy listens again
    the client is back within the cap plus the connect."""
    proxy = Proxy(_free_port())
    await proxy.open()
    client = SiteMqttClient(_config(proxy.port), SystemClock(), rng=random.Random(5))
    task = asyncio.create_task(client.run())
    try:
        await client.wait_connected(5)
        with structlog.testing.capture_logs() as logs:
            await proxy.close()
            await wait_until(lambda: not client.connected, 5, "the disconnect")
            await asyncio.sleep(4.0)  # down: attempts refused, the waits grow to the cap
            refused = [e for e in logs if e["event"] == "mqtt_disconnected"]
            assert 2 <= len(refused) <= 5, refused  # gentle: at most one attempt a second
            await proxy.open()
            back = time.monotonic()
            await client.wait_connected(RECONNECT_CAP_S + 2)
        assert time.monotonic() - back <= RECONNECT_CAP_S + 1
        assert client.connections == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await proxy.close()
