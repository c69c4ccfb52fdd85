"""The daemon fetching its import prices from aWATTar's API, served by a real HTTP server on 127.0.0.1
(``base_url``), with the real MQTT broker: the plan's prices come from the server; when the server
fails, the plan keeps the last prices and ``/health`` says degraded, naming the source."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from controller.app import Daemon
from controller.clock import ScaledClock
from controller.config import parse_config
from tests.conftest import stored
from tests.daemon_support import broker, make_site, running_daemon
from tests.http_stub import Answer, Seen, http_stub
from tests.ocpp_support import wait_until as eventually

pytestmark = pytest.mark.timeout(120)

PRICE_EUR_PER_MWH = 123.4
CACHE_FILE = Path("sources") / "tariff-import-provider-awattar.json"


class Awattar:
    """aWATTar's ``/v1/marketdata``, hourly over the asked range (format: https://www.awattar.de/services/api,
    as parsed by ``controller/sources/prices/awattar.py``); ``failing`` answers 503."""

    def __init__(self) -> None:
        self.failing = False
        self.asked = 0

    def __call__(self, seen: Seen) -> Answer:
        self.asked += 1
        if self.failing:
            return Answer(503, b'{"error": "maintenance"}')
        start_ms, end_ms = int(seen.query["start"]), int(seen.query["end"])
        data = [
            {
                "start_timestamp": t,
                "end_timestamp": t + 3_600_000,
                "marketprice": PRICE_EUR_PER_MWH,
                "unit": "Eur/MWh",
            }
            for t in range(start_ms, end_ms, 3_600_000)
        ]
        return Answer(200, json.dumps({"object": "list", "data": data, "url": "/de/v1/marketdata"}).encode())


def open_meteo(seen: Seen) -> Answer:
    """Open-Meteo's ``/v1/forecast`` with 500 W/m² on the plane at every quarter hour asked for (format:
    https://open-meteo.com/en/docs, as parsed by ``controller/sources/pv/open_meteo.py``)."""
    first = dt.datetime.fromisoformat(seen.query["start_minutely_15"])
    last = dt.datetime.fromisoformat(seen.query["end_minutely_15"])
    times = [
        first + dt.timedelta(minutes=15 * i)
        for i in range(int((last - first) / dt.timedelta(minutes=15)) + 1)
    ]
    body = {
        "utc_offset_seconds": 0,
        "minutely_15_units": {"time": "iso8601", "global_tilted_irradiance": "W/m²"},
        "minutely_15": {
            "time": [t.strftime("%Y-%m-%dT%H:%M") for t in times],
            "global_tilted_irradiance": [500.0] * len(times),
        },
    }
    return Answer(200, json.dumps(body).encode())


def fetching_site(tmp_path: Path, tag: str, url: str, **settings: Any) -> Any:
    site = make_site(tmp_path, tag, **settings)
    site.tree["tariff"]["import"] = {"provider": {"type": "awattar", "base_url": url}}
    return site


async def test_the_daemon_plans_on_prices_it_fetched(tmp_path: Path) -> None:
    with http_stub() as stub:
        market = Awattar()
        stub.routes["/v1/marketdata"] = market
        site = fetching_site(tmp_path, "fetch", stub.url)
        async with broker(f"{site.base}/state/plan") as mqtt:
            try:
                async with running_daemon(site) as daemon:
                    fetched = await daemon.wait_log("prices_fetched", 20)
                    assert fetched["source"] == "tariff.import.provider (awattar)"
                    await daemon.wait_plan("import_prices", after=0, timeout_s=20)
                    plan = await mqtt.wait_message(
                        f"{site.base}/state/plan",
                        lambda m: m.json()["import_price"][0] == round(PRICE_EUR_PER_MWH / 1000, 4),
                        timeout_s=20,
                    )
                    assert set(plan.json()["import_price"][:12]) == {0.1234}
                    assert (site.directory / CACHE_FILE).exists()  # beside the SQLite file
                    assert stub.seen[0].headers["user-agent"].startswith("v2x-controller/")
            finally:
                await mqtt.clear_retained(site.prefix)
        # A restart takes the prices from the cache and does not ask again.
        asked = market.asked
        async with running_daemon(site) as daemon:
            await daemon.wait_log("prices_from_cache", 20)
            await daemon.wait_plan("import_prices", after=0, timeout_s=20)
            assert market.asked == asked


SPEED = 600.0
# 11:50 in Berlin: today's prices at once, tomorrow's asked for from 12:00.
START = dt.datetime(2026, 5, 4, 9, 50, tzinfo=dt.UTC)


async def test_a_failing_server_keeps_the_last_prices_and_marks_health_degraded(tmp_path: Path) -> None:
    with http_stub() as stub:
        market = Awattar()
        stub.routes["/v1/marketdata"] = market
        stub.routes["/v1/forecast"] = open_meteo
        site = fetching_site(tmp_path, "fetchfail", stub.url, timezone="Europe/Berlin", dispatch_interval_s=5)
        array = {"tilt_deg": 30, "azimuth_deg": 180, "kwp": 4, "losses_percent": 14}
        site.tree["forecast"] = {
            "pv_sources": [
                {
                    "type": "open_meteo",
                    "latitude": 52.0,
                    "longitude": 13.0,
                    "arrays": [array],
                    "base_url": stub.url,
                }
            ]
        }
        clock = ScaledClock(START, SPEED)
        daemon = Daemon(parse_config(site.tree, env={}), clock)
        async with broker(f"{site.base}/#") as mqtt:
            run = asyncio.create_task(daemon.run())
            try:
                await asyncio.wait_for(daemon.wait_ready(), 20)

                def planned_on_fetched() -> bool:
                    plan = daemon.plan
                    return plan is not None and plan.import_price_per_kwh[0] == pytest.approx(0.1234)

                await eventually(planned_on_fetched, 20, "a plan on the fetched prices")
                # The PV forecast reached the forecasts: 500 W/m² x 4 kWp x 86 % = 1720 W.
                now = clock.now()
                _, pv_w = daemon.forecasts.forecasts(now, daemon.forecasts.pv_external(now))
                assert 1000 < pv_w[0] < 2500, pv_w[:4]
                # ... and was re-planned on, as an MQTT forecast is.
                signals = [body["signal"] for _, _, body in stored(daemon).events("signal")]
                assert "pv_forecast" in signals, signals
                market.failing = True  # from now on: 503 (tomorrow's prices never come)

                def degraded() -> list[dict[str, str]]:
                    return [d for d in daemon.health()[1]["degraded"] if d["what"] == "sources"]

                (entry,) = await eventually(degraded, 30, "health degraded by the source")
                assert "tariff.import.provider (awattar) failing since" in entry["why"]
                assert "HTTP 503: maintenance" in entry["why"]
                alive, body = daemon.health()
                assert alive and body["status"] == "degraded"
                assert body["sources"][0]["ok"] is False
                replans = daemon.replans
                daemon.request_replan("test")
                await eventually(lambda: daemon.replans > replans, 20, "a new plan")
                assert daemon.plan is not None
                assert daemon.plan.import_price_per_kwh[0] == pytest.approx(0.1234)  # the last prices
            finally:
                daemon.stop()
                await asyncio.wait_for(run, 30)
                await mqtt.clear_retained(site.prefix)
    assert market.asked >= 2
