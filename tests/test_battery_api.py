"""The HTTP API with a home battery (configs/home_battery.example.yaml; a real daemon, not started,
behind uvicorn on a real socket): the battery in /api/batteries, /api/flows, /state, the stream's
``now`` and the plan, and the dashboard page that shows it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from controller.api import ApiAuth, ApiServer, create_app
from controller.app import Daemon
from controller.config import parse_config
from controller.daemon_api import DaemonApi
from controller.domain import BatteryPlan, MeterReading, MeterRole
from tests.conftest import EXAMPLE_ENV

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "battery-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
BATTERY = "house-battery"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    data = yaml.safe_load((ROOT / "configs" / "home_battery.example.yaml").read_text())
    data["storage"] = {"path": str(tmp_path / "v2x.sqlite")}
    data["api"] = {"enabled": False}
    daemon = Daemon(parse_config(data, env=EXAMPLE_ENV))
    server = ApiServer(create_app(DaemonApi(daemon), ApiAuth(TOKEN, None, 3600.0)), "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
            yield daemon, client
    finally:
        await server.stop()
        daemon.persistence.close()


def read(daemon: Daemon, meter_id: str, role: MeterRole, value: float) -> None:
    daemon.inputs.update_meter(MeterReading(meter_id, role, value, datetime.now(UTC)))


async def test_the_battery_is_in_the_reads(served: tuple[Daemon, httpx.AsyncClient]) -> None:
    daemon, client = served
    (battery,) = (await client.get("/api/batteries", headers=BEARER)).json()
    assert battery["id"] == BATTERY and battery["soc_percent"] is None and battery["power_w"] is None
    assert battery["control"] == "mqtt" and battery["control_status"] == "idle" and battery["mode"] == "auto"
    assert battery["floor_percent"] == 20.0 and battery["capacity_kwh"] == 10.0
    assert (await client.get("/api/batteries")).status_code == 401  # reads need the token

    read(daemon, "grid", MeterRole.GRID, 400.0)
    read(daemon, "battery-power", MeterRole.BATTERY, -1800.0)
    read(daemon, "battery-soc", MeterRole.BATTERY_SOC, 73.0)
    (battery,) = (await client.get("/api/batteries", headers=BEARER)).json()
    assert (battery["soc_percent"], battery["power_w"]) == (73.0, -1800.0)
    flows = (await client.get("/api/flows", headers=BEARER)).json()
    assert flows["batteries_w"] == -1800.0
    state = (await client.get("/state", headers=BEARER)).json()
    assert state["batteries"][BATTERY]["soc_percent"] == 73.0
    assert state["batteries"][BATTERY]["power_w"] == -1800.0


async def test_the_plan_carries_the_batterys_power_and_soc(served: tuple[Daemon, httpx.AsyncClient]) -> None:
    daemon, client = served
    now = datetime.now(UTC)
    load, pv = daemon.forecasts.forecasts(now)
    plan = daemon.planner.plan(daemon.site.planner_snapshot(now, load, pv))
    powers = tuple([-2000.0] * plan.steps)
    socs = tuple(70.0 - 5.0 * i / plan.steps for i in range(plan.steps + 1))
    daemon.plan = dataclasses.replace(
        plan, batteries={BATTERY: BatteryPlan(BATTERY, True, powers, socs, "covers the evening")}
    )
    answer = (await client.get("/api/plan", headers=BEARER)).json()
    planned = answer["batteries"][BATTERY]
    assert len(planned["power_w"]) == answer["steps"] and len(planned["soc_percent"]) == answer["steps"] + 1
    assert planned["power_w"][0] == -2000.0 and planned["controlled"] is True
    (battery,) = (await client.get("/api/batteries", headers=BEARER)).json()
    assert battery["planned_power_w"] == -2000.0
    daemon.plan = dataclasses.replace(plan, batteries={})
    assert (await client.get("/api/plan", headers=BEARER)).json()["batteries"] == {}
    assert (await client.get("/api/batteries", headers=BEARER)).json()[0]["planned_power_w"] is None


async def test_the_stream_and_the_page_show_the_battery(served: tuple[Daemon, httpx.AsyncClient]) -> None:
    daemon, client = served
    read(daemon, "battery-soc", MeterRole.BATTERY_SOC, 51.0)
    async with client.stream("GET", "/api/stream", headers=BEARER) as stream:
        event, data = None, None
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "now":
                data = json.loads(line.removeprefix("data: "))
                break
    assert data is not None and data["batteries"][0]["soc_percent"] == 51.0
    page = (await client.get("/")).text
    assert 'id="batteries"' in page and 'data-flow="battery"' in page
    script = (await client.get("/static/app.js")).text
    for needle in ("/api/batteries", "renderBatteries", "plan-battery", "plan.batteries"):
        assert needle in script


async def test_health_names_a_battery_whose_control_fails(served: tuple[Daemon, httpx.AsyncClient]) -> None:
    daemon, client = served
    runtime = daemon.site.batteries[BATTERY]
    runtime.control_status, runtime.control_detail = "refused", "ILLEGAL_VALUE on StorCtl_Mod"
    daemon._tasks = []  # not running: not alive, but the degradation is listed all the same
    body = (await client.get("/health")).json()
    assert {"what": "batteries", "why": f"battery {BATTERY}: refused (ILLEGAL_VALUE on StorCtl_Mod)"} in body[
        "degraded"
    ]
    status = (await client.get("/api/status", headers=BEARER)).json()
    assert any(d["what"] == "batteries" for d in status["degraded"])
    assert (await client.get("/api/batteries", headers=BEARER)).json()[0]["control_detail"] == (
        "ILLEGAL_VALUE on StorCtl_Mod"
    )
