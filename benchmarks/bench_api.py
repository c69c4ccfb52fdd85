"""The HTTP API under load while the daemon re-plans, and from a POSTed override to the charger.

``v2x run`` runs as a child process with one OCPP 2.1 bidirectional charger (played here, a car
plugged in), a grid meter and dynamic prices. This process then measures, over real sockets:

* **reads while re-planning**: ``--clients`` concurrent keep-alive clients GET ``/api/vehicles``
  (the state) and ``/api/plan`` for ``--seconds`` while a price forecast is published every second
  (each one triggers a re-plan): requests per second and p50/p99 latency per endpoint;
* **override -> profile**: POST a mode (alternately ``no_discharge`` and ``auto``, with a price peak
  now so ``auto`` discharges) and time until the charger receives the TxProfile that follows it
  (charge-only, or discharging again): ``--trials`` times.

Percentiles are nearest-rank. Bounded in time and count.

    .venv/bin/python benchmarks/bench_api.py [--clients 8] [--seconds 10] [--trials 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from benchmarks.bench_daemon import describe, percentile, wait_port
from tests.daemon_support import (
    Broker,
    DaemonProcess,
    MeterFeed,
    broker,
    charger,
    first_setpoint,
    free_port,
    hourly_prices,
    make_site,
)

TOKEN = "bench-token"
PEAK = ([0.45] * 3 + [0.20] * 21, [0.80] * 3 + [0.05] * 21)


async def reader(client: httpx.AsyncClient, path: str, until: float, samples: dict[str, list[float]]) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        answer = await client.get(path)
        if answer.status_code in (200, 204):
            samples[path].append(time.perf_counter() - started)
        else:
            samples.setdefault("errors", []).append(float(answer.status_code))


async def replan_driver(mqtt: Broker, topic: str, until: float) -> int:
    published = 0
    while time.monotonic() < until:
        shift = 0.01 * (published % 5)
        await mqtt.publish(topic, hourly_prices([p + shift for p in PEAK[0]]))
        published += 1
        await asyncio.sleep(1.0)
    return published


async def reads_while_replanning(
    base: str, mqtt: Broker, topic: str, clients: int, seconds: float
) -> tuple[dict[str, list[float]], int]:
    samples: dict[str, list[float]] = {"/api/vehicles": [], "/api/plan": []}
    until = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
        tasks = [
            asyncio.create_task(reader(client, path, until, samples))
            for i in range(clients)
            for path in (["/api/vehicles", "/api/plan"][i % 2],)
        ]
        replans = await replan_driver(mqtt, topic, until)
        await asyncio.gather(*tasks)
    return samples, replans


async def override_trials(base: str, cp: Any, trials: int) -> tuple[list[float], int]:
    samples: list[float] = []
    failed = 0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
        for trial in range(trials):
            mode = "no_discharge" if trial % 2 == 0 else "auto"
            mark = cp.mark()
            started = time.perf_counter()
            answer = await client.post("/api/vehicles/car/mode", json=mode)
            assert answer.status_code == 200, answer.text

            def follows(payload: dict[str, Any], mode: str = mode) -> bool:
                return first_setpoint(payload) >= 0 if mode == "no_discharge" else first_setpoint(payload) < 0

            try:
                await cp.wait_profile(follows, since=mark, timeout_s=10)
                samples.append(time.perf_counter() - started)
            except (AssertionError, TimeoutError):
                failed += 1
            await asyncio.sleep(0.5)
    return samples, failed


async def run(args: argparse.Namespace, directory: Path) -> list[str]:
    site = make_site(directory, "bench-api")
    api_port = free_port()
    site.tree["api"] = {"enabled": True, "host": "127.0.0.1", "port": api_port, "token": TOKEN}
    site.tree["logging"]["level"] = "warning"
    site.write()
    daemon = DaemonProcess(site)
    daemon.start()
    base = f"http://127.0.0.1:{api_port}"
    try:
        async with broker(f"{site.base}/#") as mqtt, MeterFeed(mqtt) as meters:
            await wait_port(site.ocpp_port, daemon, 30)
            await asyncio.sleep(1.0)
            meters.set(site.topic("meter/grid"), 400.0)
            await meters.publish_now()
            await mqtt.publish(site.topic("prices/import"), hourly_prices(PEAK[0]))
            await mqtt.publish(site.topic("prices/export"), hourly_prices(PEAK[1]))
            async with charger(site.ocpp_port, "wb1") as cp:
                await cp.plug_in("tx-1", soc_percent=70)
                # The export peak now: the car discharges before the first trial (no_discharge) stops it.
                await cp.wait_profile(lambda p: first_setpoint(p) < 0, timeout_s=20)
                samples, replans = await reads_while_replanning(
                    base, mqtt, site.topic("prices/import"), args.clients, args.seconds
                )
                override, failed = await override_trials(base, cp, args.trials)
            await mqtt.clear_retained(site.prefix)
    finally:
        daemon.kill()
    lines = [f"reads for {args.seconds:g} s with {args.clients} clients, {replans} re-plans asked meanwhile:"]
    for path in ("/api/vehicles", "/api/plan"):
        ms = [1000 * s for s in samples[path]]
        if ms:
            lines.append(
                f"  GET {path}: {len(ms) / args.seconds:.0f} req/s, p50 {percentile(ms, 50):.1f} ms, "
                f"p99 {percentile(ms, 99):.1f} ms"
            )
    if samples.get("errors"):
        lines.append(f"  {len(samples['errors'])} answers not 200/204")
    lines.append(describe("POST mode -> the new profile at the charger", override, failed))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        lines = asyncio.run(asyncio.wait_for(run(args, Path(tmp)), 180))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
