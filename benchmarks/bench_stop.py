"""The daemon's stop with chargers that never answer: SIGTERM to exit, for 1 and for 20 chargers.

``v2x run`` runs as a child process on a site with N OCPP 2.1 bidirectional chargers (one car each,
plugged in at an evening price peak, so each has a discharging profile on the wire). Once every
charger has received its discharge, each stops answering SetChargingProfile; then SIGTERM. Measured:
the time from the signal to the process's exit (target: under 5 s; Docker's default grace period is
10 s), and whether any charger received anything that discharges after the signal (it must not).

    .venv/bin/python benchmarks/bench_stop.py [--chargers 1 20] [--trials 3]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.daemon_support import (
    PEAK_EXPORT,
    PEAK_IMPORT,
    Charger,
    MeterFeed,
    broker,
    charger,
    discharges,
    evening_timezone,
    first_setpoint,
    make_site,
    publish_prices,
    running_daemon,
)

TARGET_S = 5.0


async def one_stop(directory: Path, chargers: int) -> tuple[float, int]:
    """Seconds from SIGTERM to exit, and how many discharging profiles arrived after the signal."""
    site = make_site(directory, "bench-stop", chargers=chargers, timezone=evening_timezone())
    site.tree["ocpp"]["call_timeout_s"] = 10  # the default
    # A connection large enough for every car to export at the peak: each has a discharge on the wire.
    site.tree["site"]["grid"] = {"import_limit_kw": 12.0 * chargers, "export_limit_kw": 11.0 * chargers}
    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with running_daemon(site) as daemon, MeterFeed(mqtt) as meters, AsyncExitStack() as stack:
                meters.set(site.topic("meter/grid"), 400.0)
                await meters.publish_now()
                await publish_prices(mqtt, site, PEAK_IMPORT, PEAK_EXPORT)
                ids = [c["id"] for c in site.tree["chargers"]]
                connected: list[Charger] = []
                for charger_id in ids:
                    cp = await stack.enter_async_context(charger(site.ocpp_port, charger_id))
                    await cp.plug_in(f"tx-{charger_id}", soc_percent=80)
                    connected.append(cp)
                for cp in connected:
                    try:
                        await cp.wait_profile(lambda p: first_setpoint(p) < 0, timeout_s=60)
                    except AssertionError as exc:
                        raise RuntimeError(f"{exc}\n{daemon.tail()}") from None
                    cp.profile_answer_delay_s = math.inf
                marks = [cp.mark() for cp in connected]
                signalled = time.monotonic()
                daemon.send_signal(signal.SIGTERM)
                code = await daemon.wait_exit(60)
                stop_s = time.monotonic() - signalled
                if code != 0:
                    raise RuntimeError(f"the daemon exited {code}:\n{daemon.tail()}")
                late = sum(
                    1
                    for cp, mark in zip(connected, marks, strict=True)
                    for r in cp.received[mark:]
                    if r.action == "SetChargingProfile" and discharges(r.payload)
                )
                return stop_s, late
        finally:
            await mqtt.clear_retained(site.prefix)


async def run(counts: list[int], trials: int) -> list[str]:
    lines = []
    for count in counts:
        samples, late = [], 0
        for _ in range(trials):
            with tempfile.TemporaryDirectory() as tmp:
                stop_s, discharging = await one_stop(Path(tmp), count)
            samples.append(stop_s)
            late += discharging
        lines.append(
            f"stop with {count} unresponsive charger(s): n={trials}, median {statistics.median(samples):.2f} s, "
            f"max {max(samples):.2f} s (target < {TARGET_S:g} s); discharging profiles after SIGTERM: {late}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chargers", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole run")
    args = parser.parse_args(argv)
    lines = asyncio.run(asyncio.wait_for(run(args.chargers, args.trials), args.timeout))
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
