"""``v2x sim hil``: the virtual home against the real daemon, reported like ``v2x sim run``.

The same scenario files as ``v2x sim run``; the daemon re-plans at its own cadence and talks to the
virtual chargers and meters over real sockets through a real broker (embedded, or ``--broker``), in
simulated time ``--speed`` times faster than real time. Prints the simulator's summary of the run's
metrics plus protocol figures (messages, rejections, timeouts, reconnects, profile latency), and with
``--out`` writes the same metrics.json, timeseries.csv, power_1min.csv and plots as ``sim run``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TextIO

from controller.config import OcppVersion
from sim.engine import SimResult
from sim.hil.faults import Faults
from sim.hil.link import ProtocolStats
from sim.scenario import load_scenario

__all__ = ["HilRun", "protocol_lines", "register_hil", "run_hil", "stall_line"]

STALL_WARN_S = 60.0
"""A stall of a simulated minute: a meter period, a profile's ramp and a good part of a plan
interval pass unanswered."""


@dataclass(frozen=True)
class HilRun:
    result: SimResult
    stats: dict[str, ProtocolStats]
    home_cost: float
    worst_stall_s: float
    """The event loop's longest stall in the run, in real seconds (module ``stalls``)."""
    speed: float


def register_hil(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from sim.hil.demo import DEFAULT_SPEED, EXAMPLES

    p = sub.add_parser(
        "hil",
        help="run the virtual home against the real daemon (real sockets, simulated time)",
        description="Hardware-in-the-loop: the daemon in simulated time against virtual OCPP chargers and "
        "MQTT meters driven by the scenario; prints the metrics of `sim run` and protocol figures.",
    )
    p.add_argument("--config", type=Path, default=EXAMPLES / "home.yaml", help="site config YAML")
    p.add_argument("--series", type=Path, default=EXAMPLES / "series.csv", help="series CSV")
    p.add_argument("--trips", type=Path, default=EXAMPLES / "trips.csv", help="trips CSV")
    p.add_argument(
        "--speed", type=float, default=DEFAULT_SPEED, help=f"times real time (default {DEFAULT_SPEED:g})"
    )
    p.add_argument(
        "--days", type=float, default=1.0, help="simulated days from the series' start (default 1)"
    )
    p.add_argument(
        "--ocpp-version", choices=[v.value for v in OcppVersion], help="the virtual chargers' version"
    )
    p.add_argument("--reject", type=float, default=0.0, help="share of TxProfiles the chargers reject")
    p.add_argument("--timeouts", type=float, default=0.0, help="share of TxProfiles never answered")
    p.add_argument("--reboot-every-h", type=float, help="each charger reboots this often (simulated hours)")
    p.add_argument("--broker", help="HOST:PORT of an MQTT broker instead of the embedded one")
    p.add_argument(
        "--out", type=Path, help="write metrics.json, timeseries.csv, power_1min.csv and plots here"
    )
    p.set_defaults(handler=cmd_hil)


def cmd_hil(args: argparse.Namespace, out: TextIO) -> int:
    from sim.metrics import compute_metrics
    from sim.report import format_summary, write_metrics_json, write_power_1min_csv, write_timeseries_csv

    broker = None
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        if not host or not port.isdigit():
            print("error: --broker takes HOST:PORT", file=sys.stderr)
            return 2
        broker = (host, int(port))
    faults = Faults(
        reject_probability=args.reject,
        timeout_probability=args.timeouts,
        reboot_every_s=args.reboot_every_h * 3600.0 if args.reboot_every_h else None,
    )
    version = OcppVersion(args.ocpp_version) if args.ocpp_version else None
    run = asyncio.run(
        run_hil(args.config, args.series, args.trips, args.speed, args.days, broker, version, faults)
    )
    metrics = compute_metrics(run.result)
    print(format_summary(metrics), file=out)
    print("\n".join(protocol_lines(run.stats)), file=out)
    print(stall_line(run), file=out)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_metrics_json(args.out / "metrics.json", metrics.to_dict())
        write_timeseries_csv(args.out / "timeseries.csv", run.result)
        write_power_1min_csv(args.out / "power_1min.csv", run.result)
        print(f"wrote metrics.json, timeseries.csv, power_1min.csv to {args.out}", file=out)
    return 0


async def run_hil(
    config: Path,
    series: Path,
    trips: Path | None,
    speed: float,
    days: float,
    broker: tuple[str, int] | None = None,
    version: OcppVersion | None = None,
    faults: Faults | None = None,
) -> HilRun:
    from sim.hil.home import VirtualHome
    from sim.hil.record import HilRecorder
    from sim.hil.session import hil_session
    from sim.hil.stalls import LoopStalls

    loaded = load_scenario(config, series, trips)
    steps = min(loaded.series.steps, int(timedelta(days=days) / loaded.series.step))
    # The run's window, as `v2x sim run` on the same window sees it: no prices or trips beyond it.
    scenario = loaded.window(0, steps)
    start = scenario.series.start
    until = start + steps * scenario.series.step
    async with hil_session(scenario, config, speed, broker=broker, version=version) as session:
        recorder = HilRecorder(session.scenario)
        home = VirtualHome(
            session.scenario,
            session.clock,
            ocpp_url=session.ocpp_url,
            broker_port=session.broker_port,
            meters=session.meters,
            call_timeout_s=session.call_timeout_s,
            versions={c.id: version for c in session.cfg.chargers} if version else None,
            faults=faults,
            recorder=recorder,
        )
        began = time.monotonic()
        async with LoopStalls() as stalls:
            totals = await home.run(until)
        drive = sum(t.energy_kwh for t in scenario.trips if start <= t.depart < until)
        result = recorder.result(until, time.monotonic() - began, drive)
        stats = {vid: charger.stats for vid, charger in home.chargers.items()}
    return HilRun(result, stats, totals.cost, stalls.worst_s, speed)


def stall_line(run: HilRun) -> str:
    simulated_s = run.worst_stall_s * run.speed
    line = f"event loop: longest stall {run.worst_stall_s * 1000:.0f} ms ({simulated_s:.0f} s simulated)"
    if simulated_s > STALL_WARN_S:
        line += "; nothing reacted for that long, so the run may drift from `sim run`: lower --speed"
    return line


def protocol_lines(stats: dict[str, ProtocolStats]) -> list[str]:
    lines = []
    for vid, s in stats.items():
        latency = (
            f"profile to power median {statistics.median(s.latencies_s):.1f} s (simulated)"
            if s.latencies_s
            else "no profile latencies"
        )
        lines.append(
            f"protocol {vid}: {s.sent} frames sent, {s.received} received, "
            f"{s.profiles_received} profiles ({s.rejections} rejected, {s.timeouts} unanswered), "
            f"{s.boots} boots, {s.reconnects} reconnects; {latency}"
        )
    return lines
