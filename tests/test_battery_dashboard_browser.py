"""The dashboard with a home battery, in a real headless Chromium against the HTTP API of a real
daemon (configs/home_battery.example.yaml, not started): the battery's card (SoC, power, the plan's
power now, its control), its flow tile, and its planned power and SoC in the plan chart, on a phone
and on a desktop, without page errors. Screenshots land in ``tmp_path`` (paths printed)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from playwright.async_api import expect

from controller.api import ApiAuth, ApiServer, create_app
from controller.app import Daemon
from controller.config import parse_config
from controller.daemon_api import DaemonApi
from controller.domain import BatteryPlan, MeterReading, MeterRole
from tests.browser_support import DESKTOP, PHONE, WAIT_MS, PageErrors, chromium, require_chromium, screenshot
from tests.conftest import EXAMPLE_ENV

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parent.parent
BATTERY = "house-battery"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Daemon, str]]:
    require_chromium()
    data = yaml.safe_load((ROOT / "configs" / "home_battery.example.yaml").read_text())
    data["storage"] = {"path": str(tmp_path / "v2x.sqlite")}
    data["api"] = {"enabled": False}
    daemon = Daemon(parse_config(data, env=EXAMPLE_ENV))
    now = datetime.now(UTC)
    for meter_id, role, value in (
        ("grid", MeterRole.GRID, 600.0),
        ("pv", MeterRole.PV, 0.0),
        ("battery-power", MeterRole.BATTERY, -1800.0),
        ("battery-soc", MeterRole.BATTERY_SOC, 73.0),
    ):
        daemon.inputs.update_meter(MeterReading(meter_id, role, value, now))
    load, pv = daemon.forecasts.forecasts(now)
    plan = daemon.planner.plan(daemon.site.planner_snapshot(now, load, pv))
    steps = plan.steps
    powers = tuple(-1800.0 if i < steps // 3 else 2500.0 if i < 2 * steps // 3 else 0.0 for i in range(steps))
    socs = tuple(max(20.0, 73.0 - 0.5 * i) for i in range(steps + 1))
    daemon.plan = dataclasses.replace(plan, batteries={BATTERY: BatteryPlan(BATTERY, True, powers, socs)})
    server = ApiServer(create_app(DaemonApi(daemon), ApiAuth(None, None, 60.0)), "127.0.0.1", 0)
    await server.start()
    try:
        yield daemon, f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()
        daemon.persistence.close()


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
async def test_the_dashboard_shows_the_battery(
    served: tuple[Daemon, str], viewport: dict[str, int], tmp_path: Path
) -> None:
    _daemon, url = served
    errors = PageErrors()
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": viewport["width"], "height": viewport["height"]})
        errors.watch(page)
        await page.goto(url, timeout=WAIT_MS)
        await expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=WAIT_MS)
        card = page.locator(f'.battery[data-battery="{BATTERY}"]')
        await expect(card).to_be_visible(timeout=WAIT_MS)
        await expect(card.locator(".soc-value")).to_have_text("73 %")
        await expect(card.locator(".car-power")).to_contain_text("discharging")
        await expect(card.locator(".battery-plan")).to_contain_text("Plan now: discharging")
        await expect(card.locator(".battery-control")).to_contain_text("Control mqtt")
        tile = page.locator('[data-flow="battery"]')
        await expect(tile).to_be_visible()
        await expect(tile.locator(".flow-dir")).to_have_text("discharging")
        chart = page.locator("#plan-chart")
        await expect(chart.locator(f'path.plan-battery[data-battery="{BATTERY}"]')).to_have_count(1)
        await expect(chart.locator(f'path.plan-battery-soc[data-battery="{BATTERY}"]')).to_have_count(1)
        await expect(page.locator("#plan-legend")).to_contain_text("House battery (10 kWh) power")
        overflow = await page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"the page is wider than the {viewport['width']} px viewport"
        await screenshot(page, tmp_path / f"battery-{viewport['width']}.png")
    assert not (errors.uncaught or errors.console or errors.requests), errors.summary()
