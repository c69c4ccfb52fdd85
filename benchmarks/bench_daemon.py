"""The daemon end to end: from an MQTT event to the new charging profile at the charger; idle CPU and RSS.

``v2x run`` runs as a child process (the measured one) on a config with two OCPP 2.1 bidirectional
chargers, a grid meter, dynamic prices, its SQLite store seeded with four weeks of one-minute home
load and PV history (so every re-plan pays for realistic forecasts), production intervals (dispatch
every 5 s, re-plan every 5 min). This process plays the chargers (raw OCPP-J on ``websockets``;
their power follows the setpoints they receive), publishes the grid meter every 0.5 s (house load
plus what the chargers draw) and measures:

* **price change -> profile**: alternately a price forecast with an export peak now (both cars
  discharge) and a flat one (they hold); the time from publishing it to the new TxProfile arriving
  at each charger. This is the event-triggered re-plan: debounce, forecasts, the solve, dispatch.
  Target: p99 <= 1 s.
* **meter over the import limit -> profile**: with both cars charging at 11 kW under a 25 kW import
  limit, the house load steps up so the grid reading exceeds the limit; the time until the reduced
  setpoint arrives (fuse protection, no re-plan).
* **idle**: CPU of the daemon (% of one core) over ``--idle`` seconds with both chargers in a
  transaction, meters flowing and nothing changing; its RSS (target <= 200 MB) and the peak seen.

Percentiles are nearest-rank: with fewer than 100 samples p99 is the largest one. Bounded:
``--trials`` per kind, a timeout per trial, ``--timeout`` seconds overall.

    .venv/bin/python benchmarks/bench_daemon.py [--trials 20] [--idle 10] [--history-days 28]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from controller.store import Store
from tests.daemon_support import (
    Broker,
    Charger,
    DaemonProcess,
    DaemonSite,
    broker,
    charger,
    first_setpoint,
    hourly_prices,
    iso,
    make_site,
    utc_now,
)

IMPORT_LIMIT_KW = 25.0
HOUSE_W = 1000.0
PEAK = ([0.45] * 3 + [0.20] * 21, [0.80] * 3 + [0.05] * 21)  # import, export per hour from now
FLAT = ([0.30] * 24, [0.05] * 24)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def describe(name: str, samples_s: list[float], failures: int, target: str = "") -> str:
    if not samples_s:
        return f"{name}: no samples ({failures} trials timed out)"
    ms = [1000 * s for s in samples_s]
    line = (
        f"{name}: n={len(ms)}, median {statistics.median(ms):.0f} ms, p99 {percentile(ms, 99):.0f} ms, "
        f"max {max(ms):.0f} ms"
    )
    if failures:
        line += f", {failures} trial(s) timed out"
    return line + (f" ({target})" if target else "")


def seed_history(db_path: Path, days: int) -> int:
    """``days`` of one-minute home load and PV buckets, as the daemon would have stored them."""
    Store(db_path).close()  # creates the schema
    now_s = int(time.time()) // 60 * 60
    rows = []
    for ts in range(now_s - days * 86400, now_s, 60):
        hour = (ts % 86400) / 3600
        load = 400 + 600 * math.exp(-(((hour - 19) / 2.5) ** 2)) + 250 * math.exp(-(((hour - 7) / 1.5) ** 2))
        pv = max(0.0, 4000 * math.sin(math.pi * (hour - 6) / 12)) if 6 <= hour <= 18 else 0.0
        rows.append(("_home_load", ts, load, load * 0.8, load * 1.2, 12))
        rows.append(("_pv", ts, pv, pv * 0.9, pv * 1.1, 12))
    with sqlite3.connect(db_path) as db:
        db.executemany("INSERT OR REPLACE INTO meter_history VALUES (?, ?, ?, ?, ?, ?)", rows)
    return len(rows)


class Site:
    """The benchmark's world: house load, chargers, the grid meter they add up to."""

    def __init__(self, daemon_site: DaemonSite, mqtt: Broker) -> None:
        self.site = daemon_site
        self.mqtt = mqtt
        self.house_w = HOUSE_W
        self.chargers: list[Charger] = []

    def grid_w(self) -> float:
        return self.house_w + sum(c.power_w for c in self.chargers)

    async def publish_grid(self) -> float:
        sent = time.monotonic()
        await self.mqtt.publish(self.site.topic("meter/grid"), f"{self.grid_w():.1f}", qos=0)
        return sent

    async def feed(self) -> None:
        while True:
            await self.publish_grid()
            await asyncio.sleep(0.5)

    async def report_power(self) -> None:
        """Chargers send MeterValues when their power changed (as a real one does on its next sample)."""
        reported = {c.charger_id: c.power_w for c in self.chargers}
        while True:
            for c in self.chargers:
                if c.power_w != reported[c.charger_id]:
                    reported[c.charger_id] = c.power_w
                    await c.meter_values()
            await asyncio.sleep(0.1)


async def price_trials(world: Site, trials: int) -> tuple[list[float], int]:
    samples: list[float] = []
    failures = 0
    for trial in range(trials):
        peak = trial % 2 == 0
        imports, exports = PEAK if peak else FLAT
        marks = [c.mark() for c in world.chargers]
        sent = time.monotonic()
        await world.mqtt.publish(world.site.topic("prices/export"), hourly_prices(exports))
        await world.mqtt.publish(world.site.topic("prices/import"), hourly_prices(imports))

        def wanted(payload: dict[str, Any], peak: bool = peak) -> bool:
            return (first_setpoint(payload) < 0) == peak

        for cp, mark in zip(world.chargers, marks, strict=True):
            try:
                got = await cp.wait_profile(wanted, since=mark, timeout_s=5)
                samples.append(got.at - sent)
            except AssertionError:
                failures += 1
        await asyncio.sleep(1.0)  # let meters and the dispatcher settle on the new state
    return samples, failures


async def meter_trials(world: Site, trials: int) -> tuple[list[float], int]:
    samples: list[float] = []
    failures = 0
    # Both cars charge flat out (near departures); the house load then climbs in steps, each pushing
    # the grid reading over the import limit: the dispatcher must cut charging at once.
    departure = iso(utc_now() + timedelta(minutes=45))
    marks = [c.mark() for c in world.chargers]
    for vehicle in ("car", "car2"):
        topic = world.site.command_topic("departure", vehicle)
        await world.mqtt.publish(topic, {"at": departure, "target_soc_percent": 90})
    for cp, mark in zip(world.chargers, marks, strict=True):
        await cp.wait_profile(lambda p: first_setpoint(p) == 11_000, since=mark, timeout_s=10)
    await asyncio.sleep(1.5)
    world.house_w = IMPORT_LIMIT_KW * 1000 - 22_000 + 200
    step_w = 6_000 / max(trials, 1)  # stay above the charger's 4.1 kW minimum on wb1
    for _ in range(trials):
        world.house_w += step_w
        cp = world.chargers[0]
        before = cp.power_w
        mark = cp.mark()
        assert world.grid_w() > IMPORT_LIMIT_KW * 1000
        sent = await world.publish_grid()

        def reduced(payload: dict[str, Any], before: float = before) -> bool:
            return first_setpoint(payload) < before

        try:
            got = await cp.wait_profile(reduced, since=mark, timeout_s=5)
            samples.append(got.at - sent)
        except AssertionError:
            failures += 1
        await asyncio.sleep(0.6)
    return samples, failures


async def idle(pid: int, seconds: float) -> tuple[float, float, float]:
    proc = psutil.Process(pid)
    proc.cpu_percent(None)
    peak_rss = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await asyncio.sleep(0.5)
        peak_rss = max(peak_rss, proc.memory_info().rss)
    cpu = proc.cpu_percent(None)
    rss = proc.memory_info().rss
    return cpu, rss / 2**20, peak_rss / 2**20


async def run(args: argparse.Namespace, directory: Path) -> list[str]:
    site = make_site(
        directory,
        "bench",
        chargers=2,
        dispatch_interval_s=5,
        grid={"import_limit_kw": IMPORT_LIMIT_KW, "export_limit_kw": 20},
    )
    site.tree["meters"][0]["stale_after_s"] = 5
    site.tree["logging"]["level"] = "warning"
    seeded = seed_history(site.db_path, args.history_days)
    site.write()
    daemon = DaemonProcess(site)
    started = time.monotonic()
    daemon.start()
    lines = []
    try:
        async with broker(f"{site.base}/#") as mqtt:
            world = Site(site, mqtt)
            feed = asyncio.create_task(world.feed())
            # Warnings and errors are all the daemon logs here: wait for its port instead.
            await wait_port(site.ocpp_port, daemon, 30)
            ready_s = time.monotonic() - started
            await asyncio.sleep(1.0)  # MQTT connected and subscribed
            await mqtt.publish(site.topic("prices/import"), hourly_prices(FLAT[0]))
            await mqtt.publish(site.topic("prices/export"), hourly_prices(FLAT[1]))
            async with charger(site.ocpp_port, "wb1") as wb1, charger(site.ocpp_port, "wb2") as wb2:
                world.chargers = [wb1, wb2]
                reporter = asyncio.create_task(world.report_power())
                for cp, tx in ((wb1, "tx-1"), (wb2, "tx-2")):
                    cp.follow_setpoint = True
                    await cp.plug_in(tx, soc_percent=60)
                for cp in world.chargers:
                    await cp.wait_profile(timeout_s=10)
                await asyncio.sleep(2.0)

                cpu, rss_mb, peak_mb = await idle(daemon.pid, args.idle)
                price, price_failed = await price_trials(world, args.trials)
                meter, meter_failed = await meter_trials(world, args.trials)
                reporter.cancel()
            feed.cancel()
            await mqtt.clear_retained(site.prefix)
        final_rss_mb = psutil.Process(daemon.pid).memory_info().rss / 2**20
        lines = [
            f"daemon: 2 OCPP 2.1 chargers, {args.history_days} days of history ({seeded} buckets), "
            f"dispatch every 5 s; up in {ready_s:.1f} s",
            describe("price change -> new profile at the charger", price, price_failed, "target p99 <= 1 s"),
            describe("meter over the import limit -> reduced profile", meter, meter_failed),
            f"idle with 2 chargers: CPU {cpu:.1f} % of one core over {args.idle:g} s, RSS {rss_mb:.0f} MB "
            f"(peak seen {max(peak_mb, final_rss_mb):.0f} MB; target <= 200 MB)",
        ]
    finally:
        daemon.kill()
    errors = [e for e in daemon.logs() if e.get("level") in ("error", "critical")]
    if errors:
        lines.append(f"daemon logged {len(errors)} error(s), first: {errors[0].get('event')}")
    return lines


async def wait_port(port: int, daemon: DaemonProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon.returncode() is not None:
            raise SystemExit(f"daemon exited early:\n{daemon.tail()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise SystemExit("daemon did not open its OCPP port in time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=20, help="trials per kind (default 20)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measurement (default 10)")
    parser.add_argument(
        "--history-days", type=int, default=28, help="history seeded in the store (default 28)"
    )
    parser.add_argument("--timeout", type=float, default=240.0, help="overall bound in seconds (default 240)")
    args = parser.parse_args(argv)
    if not 1 <= args.trials <= 200:
        parser.error("--trials must be 1..200")
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        try:
            lines = asyncio.run(asyncio.wait_for(run(args, Path(tmp)), args.timeout))
        except TimeoutError:
            print(f"bench_daemon: gave up after {args.timeout:g} s", file=sys.stderr)
            return 1
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
