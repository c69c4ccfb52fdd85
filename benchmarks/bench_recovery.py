"""Recovery after a broker outage: the daemon (``v2x run``, a real process) against a Mosquitto of its
own that is SIGKILLed, kept down for each outage, and restarted on the same port.

Per outage, from the broker's restart (its port accepting connections again):

* reconnected: ``/health`` says ``mqtt_connected`` (polled every 20 ms);
* safe mode left: a fresh grid reading was accepted and ``/health`` no longer reports safe mode. The
  grid meter publishes every ``--meter-period`` s from the restart on (a real meter reconnects too),
  so this includes up to one meter period.

    .venv/bin/python benchmarks/bench_recovery.py [--outages 30,90] [--meter-period 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.chaos_support import Json, Mosquitto, PayloadFeed, chaos_site, peer, poll_api
from tests.daemon_support import running_daemon

POLL_S = 0.02


def connected_and_safe(health: Json) -> bool:
    return health["mqtt_connected"] is True and health["safe_mode"] is False


async def one_outage(outage_s: float, meter_period_s: float) -> tuple[float, float]:
    """Seconds from the broker's restart to reconnected, and to safe mode left."""
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        directory = Path(tmp)
        broker = Mosquitto(directory)
        broker.start()
        try:
            site, api = chaos_site(directory, "bench-recovery", broker.port)
            grid = site.topic("meter/grid")
            async with running_daemon(site):
                async with peer(broker.port) as mqtt, PayloadFeed(mqtt, {grid: b"400"}, meter_period_s):
                    await poll_api(api, "/health", connected_and_safe, 20, "running before the outage")
                broker.kill()
                await poll_api(api, "/health", lambda h: h["mqtt_connected"] is False, 10, "the disconnect")
                await poll_api(api, "/health", lambda h: h["safe_mode"] is True, 15, "safe mode")
                await asyncio.sleep(outage_s)
                await asyncio.to_thread(broker.start)
                back = time.monotonic()
                async with peer(broker.port) as mqtt, PayloadFeed(mqtt, {grid: b"500"}, meter_period_s):
                    await poll_api(
                        api, "/health", lambda h: h["mqtt_connected"] is True, 30, "reconnect", POLL_S
                    )
                    reconnected_s = time.monotonic() - back
                    await poll_api(api, "/health", connected_and_safe, 30, "safe mode left", POLL_S)
                    safe_s = time.monotonic() - back
        finally:
            broker.kill()
    return reconnected_s, safe_s


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--outages", default="30,90", help="outage lengths in seconds, comma-separated")
    parser.add_argument("--meter-period", type=float, default=1.0, help="grid meter publish period (s)")
    args = parser.parse_args()
    outages = [float(x) for x in args.outages.split(",") if x.strip()]
    print(f"{'outage_s':>9} {'reconnected_s':>14} {'safe_mode_left_s':>17}")
    for outage_s in outages:
        reconnected_s, safe_s = await one_outage(outage_s, args.meter_period)
        print(f"{outage_s:>9.0f} {reconnected_s:>14.2f} {safe_s:>17.2f}", flush=True)
    print("seconds from the broker's restart; reconnect waits are drawn from 1-5 s (RECONNECT_CAP_S)")


if __name__ == "__main__":
    asyncio.run(main())
