"""One HIL session: a broker, the real daemon on free local ports and a scaled clock, and the
virtual home's config, shared by ``v2x demo`` and ``v2x sim hil``.

The daemon runs in this process on a :class:`~controller.clock.ScaledClock` that the virtual home
shares, so both see the same simulated time; everything between them goes over real sockets (OCPP
websockets, MQTT through the broker, HTTP). The broker is an embedded amqtt one on a free port unless
``broker`` names another (e.g. a local Mosquitto).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controller.clock import ScaledClock
from controller.config import OcppVersion, SiteConfig, parse_config
from sim.hil.meters import HomeMeters
from sim.scenario import Scenario

__all__ = ["BASE_TOPIC", "Session", "hil_config", "hil_session"]

BASE_TOPIC = "v2x-hil"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def hil_config(
    config_path: Path,
    broker: tuple[str, int],
    meters: HomeMeters,
    storage: Path,
    *,
    version: OcppVersion | None = None,
    log_level: str = "error",
) -> SiteConfig:
    """The home's config on free local ports, with the virtual home's meters, the series' prices as
    they are (no tariff on top: they are what the home pays and earns), and the chargers open to
    the virtual ones on 127.0.0.1 (on ``version`` when given; 1.6/2.0.1 discharge by the
    negative-limit opt-in)."""
    tree: dict[str, Any] = yaml.safe_load(config_path.read_text())
    tree["mqtt"] = {"host": broker[0], "port": broker[1], "base_topic": BASE_TOPIC, "client_id": "v2x-hil"}
    tree["ocpp"] = {"host": "127.0.0.1", "port": free_port()}
    tree["api"] = {"enabled": True, "host": "127.0.0.1", "port": free_port()}
    tree["storage"] = {"path": str(storage)}
    tree["meters"] = meters.config_entries()
    tree["tariff"] = {
        "import": {"dynamic_topic": f"{BASE_TOPIC}-home/prices/import"},
        "export": {"dynamic_topic": f"{BASE_TOPIC}-home/prices/export"},
    }
    tree["logging"] = {"level": log_level}
    for charger in tree.get("chargers", []):
        charger["allow_unauthenticated"] = True
        if version is not None:
            charger["ocpp_versions"] = [version.value]
            if version is not OcppVersion.V21 and charger.get("bidirectional"):
                charger["negative_limit_means_discharge"] = True
    return parse_config(tree)


@dataclass
class Session:
    cfg: SiteConfig
    scenario: Scenario
    """The scenario on the session's config."""
    clock: ScaledClock
    daemon: Any
    broker_port: int
    meters: HomeMeters

    @property
    def call_timeout_s(self) -> float:
        """The virtual chargers' wait for an answer, in simulated seconds: at least half a real second,
        so a scaled clock never times out a round trip that real latency alone makes slow."""
        return max(120.0, 0.5 * self.clock.speed)

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.api.port}/"

    @property
    def ocpp_url(self) -> str:
        return f"ws://127.0.0.1:{self.cfg.ocpp.port}/ocpp"


@contextlib.asynccontextmanager
async def hil_session(
    scenario: Scenario,
    config_path: Path,
    speed: float,
    *,
    broker: tuple[str, int] | None = None,
    version: OcppVersion | None = None,
    log_level: str = "error",
) -> AsyncIterator[Session]:
    from controller.app import Daemon
    from controller.logs import configure_logging
    from sim.hil.broker import EmbeddedBroker

    # The daemon runs in this process: its warnings (a stale meter at the start, a rejected profile)
    # would drown the summary; the dashboard and the report show what matters.
    configure_logging(log_level)

    meters = HomeMeters.under(f"{BASE_TOPIC}-home", pv=True)
    async with contextlib.AsyncExitStack() as stack:
        if broker is None:
            embedded = await stack.enter_async_context(EmbeddedBroker())
            broker = ("127.0.0.1", embedded.port)
        storage = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="v2x-hil-"))) / "v2x.sqlite"
        cfg = hil_config(config_path, broker, meters, storage, version=version, log_level=log_level)
        clock = ScaledClock(scenario.series.start, speed)
        daemon = Daemon(cfg, clock)
        running = asyncio.create_task(daemon.run(), name="daemon")
        stack.push_async_callback(_stop, daemon, running)
        async with asyncio.timeout(READY_TIMEOUT_S):
            await daemon.wait_ready()
        _freeze_heap(stack)
        yield Session(cfg, scenario.with_config(cfg), clock, daemon, broker[1], meters)


def _freeze_heap(stack: contextlib.AsyncExitStack) -> None:
    """Everything built so far (modules, the daemon, the planner's model) is left out of the
    garbage collector's scans until the session ends: a full collection over it holds the shared
    loop for 100 ms and more, which at 1000x is minutes of simulated time in which nothing reacts
    (module ``stalls``)."""
    gc.collect()
    gc.freeze()
    stack.callback(gc.unfreeze)


async def _stop(daemon: Any, running: asyncio.Task[None]) -> None:
    daemon.stop()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await running
