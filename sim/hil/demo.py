"""``v2x demo``: the real daemon, its dashboard and a virtual home on a sample week, in one command.

Nothing needs to be installed beyond the package: an MQTT broker runs in-process (amqtt) on a free
port (never the user's broker unless ``--broker`` names one), the daemon runs in this process on
free ports with the example home's config, on a :class:`~controller.clock.ScaledClock` shared with
the virtual home (:mod:`sim.hil.home`), ``--speed`` times faster than real time. The dashboard's
address is printed as soon as the daemon is up; a one-line summary follows the simulated time; at the
end the money against uncontrolled charging is printed, and everything stops. Ctrl-C stops
everything cleanly at any time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import tempfile
import time
import webbrowser
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import yaml

from controller.clock import ScaledClock
from controller.config import SiteConfig, parse_config
from sim.hil.meters import HomeMeters
from sim.scenario import Scenario, load_scenario

__all__ = ["DEFAULT_SPEED", "demo_config", "register", "run_demo"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEFAULT_SPEED = 200.0
"""Simulated seconds per real second: faithful on a 2-core gateway (docs/simulator.md, HIL)."""
MAX_SPEED = 1000.0
BASE_TOPIC = "v2x-demo"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def demo_config(config_path: Path, broker: tuple[str, int], meters: HomeMeters, storage: Path) -> SiteConfig:
    """The example home's config on free local ports, with the virtual home's meters and the
    series' prices as they are (no tariff on top: they are what the home pays and earns)."""
    tree: dict[str, Any] = yaml.safe_load(config_path.read_text())
    tree["mqtt"] = {"host": broker[0], "port": broker[1], "base_topic": BASE_TOPIC, "client_id": "v2x-demo"}
    tree["ocpp"] = {"host": "127.0.0.1", "port": free_port()}
    tree["api"] = {"enabled": True, "host": "127.0.0.1", "port": free_port()}
    tree["storage"] = {"path": str(storage)}
    tree["meters"] = meters.config_entries()
    tree["tariff"] = {
        "import": {"dynamic_topic": f"{BASE_TOPIC}-home/prices/import"},
        "export": {"dynamic_topic": f"{BASE_TOPIC}-home/prices/export"},
    }
    # The summary line is the demo's output; the dashboard shows the rest.
    tree["logging"] = {"level": "error"}
    for charger in tree.get("chargers", []):
        charger["allow_unauthenticated"] = True  # on 127.0.0.1, for the virtual chargers
    return parse_config(tree)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "demo",
        help="the daemon and its dashboard against a virtual home, in simulated time",
        description="Start an MQTT broker in-process, the daemon on free ports with the example home, "
        "virtual OCPP chargers and meters driven by a sample week, and the dashboard; print the "
        "dashboard's address, a live summary and, at the end, the money against uncontrolled charging. "
        "Exit 0 when the run ends; Ctrl-C stops it cleanly.",
    )
    p.add_argument(
        "--speed", type=float, default=DEFAULT_SPEED, help=f"times real time (default {DEFAULT_SPEED:g})"
    )
    p.add_argument("--days", type=float, default=7.0, help="simulated days (default 7)")
    p.add_argument("--no-browser", action="store_true", help="do not open the dashboard in a browser")
    p.add_argument("--broker", help="HOST:PORT of an MQTT broker to use instead of the embedded one")
    p.add_argument("--config", type=Path, default=EXAMPLES / "home.yaml", help="the home's site config")
    p.add_argument(
        "--series", type=Path, default=EXAMPLES / "series.csv", help="prices, load and PV per step"
    )
    p.add_argument("--trips", type=Path, default=EXAMPLES / "trips.csv", help="the cars' trips")
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    if not 0 < args.speed <= MAX_SPEED:
        print(f"error: --speed must be above 0 and at most {MAX_SPEED:g}", file=sys.stderr)
        return 2
    if not args.days > 0:
        print("error: --days must be above 0", file=sys.stderr)
        return 2
    broker: tuple[str, int] | None = None
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        if not host or not port.isdigit():
            print("error: --broker takes HOST:PORT, e.g. 127.0.0.1:1883", file=sys.stderr)
            return 2
        broker = (host, int(port))
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_demo(args, out, broker))
    print("stopped", file=out)
    return 0


async def run_demo(args: argparse.Namespace, out: TextIO, broker: tuple[str, int] | None) -> int:
    from controller.app import Daemon
    from controller.daemon_api import DaemonApi
    from sim.hil.broker import EmbeddedBroker
    from sim.hil.home import VirtualHome

    scenario = load_scenario(args.config, args.series, args.trips)
    start = scenario.series.start
    until = min(scenario.series.end, start + timedelta(days=args.days))
    meters = HomeMeters.under(f"{BASE_TOPIC}-home", pv=True)
    async with contextlib.AsyncExitStack() as stack:
        if broker is None:
            embedded = await stack.enter_async_context(EmbeddedBroker())
            broker = ("127.0.0.1", embedded.port)
        storage = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="v2x-demo-"))) / "v2x.sqlite"
        cfg = demo_config(args.config, broker, meters, storage)
        clock = ScaledClock(start, args.speed)
        daemon = Daemon(cfg, clock)
        running = asyncio.create_task(daemon.run(), name="daemon")
        stack.push_async_callback(_stop, daemon, running)
        async with asyncio.timeout(READY_TIMEOUT_S):
            await daemon.wait_ready()
        url = f"http://127.0.0.1:{cfg.api.port}/"
        print(
            f"dashboard: {url}  (simulated time from {start:%Y-%m-%d %H:%M} UTC, {args.speed:g}x)", file=out
        )
        out.flush()
        if not args.no_browser:
            webbrowser.open(url)
        home = VirtualHome(
            scenario.with_config(cfg),
            clock,
            ocpp_url=f"ws://127.0.0.1:{cfg.ocpp.port}/ocpp",
            broker_port=broker[1],
            meters=meters,
        )
        summary = Summary(out, scenario)
        totals = await home.run(until, summary.tick)
        summary.done()
        money = await DaemonApi(daemon).money()
        days = (until - start) / timedelta(days=1)
        print(
            f"{days:g} simulated days: the grid connection cost {totals.cost:.2f} {cfg.site.currency} "
            f"(import {totals.import_kwh:.1f} kWh, export {totals.export_kwh:.1f} kWh)",
            file=out,
        )
        month = money.month
        print(
            f"the daemon's account: cost {month.cost:.2f}, without control {month.uncontrolled_cost:.2f}, "
            f"saving {month.saving:.2f} {money.currency} (charging at full power from plug-in, no discharge)",
            file=out,
        )
    return 0


async def _stop(daemon: Any, running: asyncio.Task[None]) -> None:
    daemon.stop()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await running


class Summary:
    """One line, refreshed at most once a real second: simulated time, the cars, the grid."""

    def __init__(self, out: TextIO, scenario: Scenario) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last = 0.0
        self.last_day: datetime | None = None
        self.scenario = scenario

    def tick(self, now: Any) -> None:
        real = time.monotonic()
        day = now.at.replace(hour=0, minute=0, second=0, microsecond=0)
        if real - self.last < 1.0 and (self.tty or day == self.last_day):
            return
        if not self.tty and day == self.last_day:
            return
        self.last, self.last_day = real, day
        cars = ", ".join(
            f"{vid} {soc:.0f}% {now.cars_w[vid] / 1000:+.1f} kW" + ("" if now.plugged[vid] else " (away)")
            for vid, soc in now.soc_percent.items()
        )
        line = f"{now.at:%a %d %b %H:%M} UTC  grid {now.grid_w / 1000:+.1f} kW  pv {now.pv_w / 1000:.1f} kW  {cars}"
        print(("\r" + line.ljust(100)) if self.tty else line, end="" if self.tty else "\n", file=self.out)
        self.out.flush()

    def done(self) -> None:
        if self.tty:
            print(file=self.out)
