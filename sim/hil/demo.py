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
import importlib.util
import sys
import time
import webbrowser
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from sim.scenario import load_scenario

__all__ = ["DEFAULT_SPEED", "MAX_SPEED", "Summary", "register", "run_demo"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEFAULT_SPEED = 300.0
"""Simulated seconds per real second: faithful on a 2-core gateway (docs/simulator.md, HIL)."""
MAX_SPEED = 1000.0


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
    from sim.report import SIM_EXTRA_HINT

    if not args.broker and importlib.util.find_spec("amqtt") is None:
        print(
            f"error: the embedded MQTT broker (amqtt) is not installed: {SIM_EXTRA_HINT}, or pass --broker",
            file=sys.stderr,
        )
        return 2
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
    from controller.daemon_api import DaemonApi
    from sim.hil.home import VirtualHome
    from sim.hil.session import hil_session

    scenario = load_scenario(args.config, args.series, args.trips)
    start = scenario.series.start
    until = min(scenario.series.end, start + timedelta(days=args.days))
    async with hil_session(scenario, args.config, args.speed, broker=broker) as session:
        print(
            f"dashboard: {session.dashboard_url}  (simulated time from {start:%Y-%m-%d %H:%M} UTC, "
            f"{args.speed:g}x)",
            file=out,
        )
        out.flush()
        if not args.no_browser:
            webbrowser.open(session.dashboard_url)
        home = VirtualHome(
            session.scenario,
            session.clock,
            ocpp_url=session.ocpp_url,
            broker_port=session.broker_port,
            meters=session.meters,
            call_timeout_s=session.call_timeout_s,
        )
        summary = Summary(out)
        totals = await home.run(until, summary.tick)
        summary.done()
        money = await DaemonApi(session.daemon).money()
        days = (until - start) / timedelta(days=1)
        currency = session.cfg.site.currency
        print(
            f"{days:g} simulated days: the grid connection cost {totals.cost:.2f} {currency} "
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


class Summary:
    """One line, refreshed at most once a real second: simulated time, the cars, the grid."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last = 0.0
        self.last_day: datetime | None = None

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
