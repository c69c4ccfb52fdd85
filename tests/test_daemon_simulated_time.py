"""The daemon on a simulated clock: an hour of the real daemon (OCPP server, MQTT, planner,
dispatcher, store) in seconds, with every interval, timeout and staleness on the clock's time."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.app import Daemon
from controller.clock import ScaledClock
from controller.config import parse_config
from tests.daemon_support import (
    MeterFeed,
    broker,
    charger,
    first_setpoint,
    hourly_prices,
    make_site,
)

pytestmark = pytest.mark.timeout(120)

SPEED = 600.0  # an hour in six seconds
START = datetime(2026, 5, 4, 6, 0, tzinfo=UTC)


async def test_an_hour_of_the_daemon_runs_in_seconds_on_a_simulated_clock(tmp_path: Path) -> None:
    site = make_site(tmp_path, "simtime", dispatch_interval_s=5, replan_interval_minutes=5)
    site.tree["meters"][0]["stale_after_s"] = 60
    site.tree["ocpp"]["call_timeout_s"] = 60  # 0.1 s of real time at this speed
    clock = ScaledClock(START, SPEED)
    daemon = Daemon(parse_config(site.tree, env={}), clock)
    async with broker(f"{site.base}/#") as mqtt:
        run = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.wait_ready(), 20)
            await daemon.mqtt.wait_connected(10)
            # Cheap now, dear later: the car charges at full power for the whole hour.
            imports = [0.05] * 2 + [0.40] * 22
            await mqtt.publish(site.topic("prices/import"), hourly_prices(imports, start=clock.now()))
            await mqtt.publish(site.topic("prices/export"), hourly_prices([0.01] * 24, start=clock.now()))
            async with (
                MeterFeed(mqtt, period_s=0.02) as meters,  # every 12 s of the clock's time
                charger(site.ocpp_port) as cp,
            ):
                meters.set(site.topic("meter/grid"), 500.0)
                cp.follow_setpoint = True
                cp.soc_percent = 40
                await cp.status("Occupied")
                await cp.transaction("Started", "tx-sim", trigger="CablePluggedIn", at=clock.now())
                cp.soc_percent = None  # from now on only energy counting knows the SoC
                plugged_at, real_start = clock.now(), time.monotonic()
                while clock.now() < plugged_at + timedelta(hours=1):
                    await cp.meter_values(at=clock.now())  # about every 30 s of the clock's time
                    await asyncio.sleep(0.05)
                real_s = time.monotonic() - real_start
                soc = daemon.site.measured_soc(daemon.site.vehicles["car"])
                profiles = cp.profiles()
        finally:
            daemon.stop()
            await asyncio.wait_for(run, 30)
            await mqtt.clear_retained(site.prefix)

    assert real_s < 30  # an hour of the clock's time in seconds
    # Planned on the clock: at start, on plug-in and prices, then every 5 minutes of the clock's time.
    assert daemon.replans >= 12, daemon.replans
    # It charged at 11 kW through the hour, counted on the clock's time: 11 kWh x 95 % of 60 kWh.
    assert [p for p in profiles if first_setpoint(p.payload) == 11_000]
    assert soc is not None and 54 <= soc <= 60, soc
    # Every profile is dated on the clock, and the last one within the hour's last minutes.
    starts = [datetime.fromisoformat(p.payload["chargingProfile"]["validFrom"]) for p in profiles]
    assert all(plugged_at - timedelta(minutes=1) <= s <= clock.now() for s in starts)
