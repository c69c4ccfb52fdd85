"""Chaos helpers: a private Mosquitto a test can SIGKILL and restart on the same port, a client of
it, and the daemon's HTTP API (``/health``, ``/state``) polled with bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.daemon_support import BROKER_HOST, Broker, DaemonSite, MeterFeed, broker, free_port, make_site

Json = dict[str, Any]


class Mosquitto:
    """A Mosquitto of its own on 127.0.0.1 (never the shared one on 1883): no persistence, so what is
    retained after a restart is what clients published since."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(
            f"persistence false\nlistener {self.port} 127.0.0.1\nallow_anonymous true\n", encoding="utf-8"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start and wait until the port accepts connections (retried while the old socket lingers)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                self.proc = subprocess.Popen(
                    ["mosquitto", "-c", str(self.conf)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    stdin=subprocess.DEVNULL,
                )
            with contextlib.suppress(OSError), socket.create_connection((BROKER_HOST, self.port), 0.2):
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: no clean disconnect for anyone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def peer(port: int, *watch: str) -> contextlib.AbstractAsyncContextManager[Broker]:
    """A client of the broker on ``port`` with a reader task; ``watch`` filters subscribed first."""
    return broker(*watch, port=port)


def chaos_site(directory: Path, tag: str, broker_port: int) -> tuple[DaemonSite, int]:
    """``make_site`` pointed at ``broker_port`` with the HTTP API on; returns the site and API port."""
    site = make_site(directory, tag)
    site.tree["mqtt"]["port"] = broker_port
    api_port = free_port()
    site.tree["api"] = {"enabled": True, "host": "127.0.0.1", "port": api_port}
    return site, api_port


async def http_get(
    port: int, path: str, timeout_s: float = 5.0, token: str | None = None
) -> tuple[int, Json]:
    """One GET over a fresh connection (closed after the answer), as a probe does it."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: gateway\r\n{auth}Connection: close\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    answer: Json = json.loads(body)
    return int(head.split(b" ")[1]), answer


async def poll_api(
    port: int, path: str, check: Callable[[Json], bool], timeout_s: float, what: str, period_s: float = 0.05
) -> Json:
    """The first 200 answer of ``path`` that passes ``check``; AssertionError with the last answer."""
    deadline = time.monotonic() + timeout_s
    last: Json = {}
    while True:
        with contextlib.suppress(OSError, TimeoutError, ValueError):
            status, last = await http_get(port, path)
            if status == 200 and check(last):
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s; last {path}: {last}")
        await asyncio.sleep(period_s)


class PayloadFeed(MeterFeed):
    """Publishes raw payloads (not retained, QoS 0) on their topics every ``period_s`` until exited:
    meters that keep reporting whatever format they speak."""

    def __init__(self, mqtt: Broker, payloads: dict[str, bytes], period_s: float = 0.5) -> None:
        super().__init__(mqtt, period_s)
        self.payloads = payloads

    async def publish_now(self) -> None:
        for topic, payload in list(self.payloads.items()):
            await self.mqtt.publish(topic, payload, qos=0)
