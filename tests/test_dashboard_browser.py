"""The dashboard in a real headless Chromium against a real daemon (``v2x run``), a simulated OCPP 2.1
charger and meters and prices on the real broker.

The browser logs in with the password, sees the car and the plan chart, and drives the two controls a
driver uses most: the mode (``no_discharge`` must reach the daemon, the plan and the charger's next
profile) and a one-off departure typed in the site's local time (the browser runs in another
timezone on purpose). Full-page screenshots, phone and desktop, land in ``tmp_path`` (paths printed).

Only the page's DOM contract is relied on: ``body[data-ready="1"]``, ``form#login-form``,
``.car[data-vehicle]``, ``#plan-chart[data-plan-created]`` with ``path.plan-soc``, ``rect.plan-power``
and ``path.price-line``, ``select.mode-select``, ``form.departure-form`` and ``.control-message``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import BrowserContext, Dialog, Locator, Page, expect

from controller.passwords import hash_password
from tests.browser_support import (
    DESKTOP,
    PHONE,
    WAIT_MS,
    PageErrors,
    chromium,
    require_chromium,
    screenshot,
)
from tests.daemon_support import (
    PEAK_EXPORT,
    PEAK_IMPORT,
    VEHICLE,
    MeterFeed,
    broker,
    charge_only,
    charger,
    discharges,
    evening_timezone,
    first_setpoint,
    free_port,
    make_site,
    publish_prices,
    running_daemon,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

PASSWORD = "dashboard test password"
BROWSER_TIMEZONE = "Pacific/Kiritimati"
"""UTC+14: never the site's zone (``evening_timezone`` is within UTC-12…+11), so a page that reads
the departure input in the browser's zone instead of the site's sends the wrong instant."""

Json = dict[str, Any]


async def api_until(
    context: BrowserContext, path: str, check: Callable[[Any], bool], what: str, timeout_s: float = 15.0
) -> Any:
    """The first 200 answer of ``path`` (with the browser's session cookie) that passes ``check``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        response = await context.request.get(path, timeout=5_000)
        if response.status == 200:
            last = await response.json()
            if check(last):
                return last
        else:
            last = f"HTTP {response.status}: {await response.text()}"
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s; last {path}: {last}")
        await asyncio.sleep(0.2)


def the_car(vehicles: list[Json]) -> Json:
    for vehicle in vehicles:
        if vehicle["id"] == VEHICLE:
            return vehicle
    raise AssertionError(f"no {VEHICLE!r} in /api/vehicles: {vehicles}")


async def set_value(field: Locator, value: str) -> None:
    """Type into an input; a range slider (which cannot be filled) is set and told so."""
    if await field.get_attribute("type") == "range":
        await field.evaluate(
            "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true}));"
            " el.dispatchEvent(new Event('change', {bubbles: true})); }",
            value,
        )
    else:
        await field.fill(value)


async def new_plan_rendered(page: Page, before: str, since: datetime) -> str:
    """Wait until ``#plan-chart`` shows another plan than ``before``; it must be made after ``since``."""
    chart = page.locator("#plan-chart")
    await expect(chart).not_to_have_attribute("data-plan-created", before, timeout=WAIT_MS)
    created = await chart.get_attribute("data-plan-created")
    assert created, "#plan-chart lost its data-plan-created"
    made = datetime.fromisoformat(created.replace("Z", "+00:00"))
    assert made >= since.replace(microsecond=0), f"rendered plan {created} is older than the change {since}"
    return created


async def control_message(page: Page) -> str:
    message = page.locator(f'.control-message[data-vehicle="{VEHICLE}"]')
    return (await message.inner_text()).strip() if await message.count() else "<no .control-message>"


async def phone_layout(page: Page) -> Json:
    """What overflows the phone's width: the page itself and the widest elements past its edge."""
    result: Json = await page.evaluate(
        """() => {
            const width = document.documentElement.clientWidth;
            const wide = [...document.querySelectorAll('body *')]
                .filter(el => el.getBoundingClientRect().right > width + 1)
                .slice(0, 8)
                .map(el => `${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}` +
                           `${el.classList.length ? '.' + [...el.classList].join('.') : ''}` +
                           ` right=${Math.round(el.getBoundingClientRect().right)}`);
            return {viewport: width, scroll_width: document.documentElement.scrollWidth, past_edge: wide};
        }"""
    )
    return result


async def test_dashboard_login_plan_mode_and_departure_in_chromium(tmp_path: Path) -> None:
    require_chromium()
    site = make_site(tmp_path, "browser", timezone=evening_timezone())
    api_port = free_port()
    site.tree["api"] = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": api_port,
        "password_hash": hash_password(PASSWORD, iterations=1000),
    }
    zone = ZoneInfo(site.tree["site"]["timezone"])
    base_url = f"http://127.0.0.1:{api_port}"
    errors = PageErrors()

    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with running_daemon(site) as daemon, MeterFeed(mqtt) as meters:
                meters.set(site.topic("meter/grid"), 400.0)
                await meters.publish_now()
                await daemon.wait_log("http_started", timeout_s=10)
                await publish_prices(mqtt, site, PEAK_IMPORT, PEAK_EXPORT)
                async with charger(site.ocpp_port) as cp:
                    await cp.plug_in("tx-web", soc_percent=80)
                    # The evening peak pays: the car (80 %, V2G allowed) discharges in auto mode.
                    await cp.wait_profile(lambda p: first_setpoint(p) < 0, timeout_s=15)

                    async with chromium() as browser:
                        context = await browser.new_context(
                            viewport=DESKTOP, timezone_id=BROWSER_TIMEZONE, base_url=base_url
                        )
                        context.set_default_timeout(WAIT_MS)
                        page = await context.new_page()
                        errors.watch(page)
                        page.on("dialog", lambda dialog: _accept(dialog))
                        try:
                            # ---------------------------------------------------- log in, first render
                            await page.goto("/", wait_until="domcontentloaded")
                            login = page.locator("form#login-form")
                            await login.locator("input[name=password]").fill(PASSWORD)
                            await login.locator("button[type=submit]").click()
                            await page.wait_for_selector('body[data-ready="1"]', state="attached")

                            car = page.locator(f'.car[data-vehicle="{VEHICLE}"]')
                            await expect(car).to_be_visible()
                            for part in (".soc-bar", ".car-reason", ".car-departure"):
                                await expect(car.locator(part)).to_have_count(1)
                            chart = page.locator("#plan-chart svg")
                            await expect(
                                chart.locator(f'path.plan-soc[data-vehicle="{VEHICLE}"]')
                            ).to_have_count(1)
                            await expect(chart.locator("rect.plan-power").first).to_be_attached()
                            await expect(chart.locator("path.price-line").first).to_be_attached()
                            first_plan = await page.locator("#plan-chart").get_attribute("data-plan-created")
                            assert first_plan, "#plan-chart has no data-plan-created after the first render"

                            # ---------------------------------------------------- mode: no discharge
                            mark = cp.mark()
                            changed_at = datetime.now(UTC)
                            await page.select_option(
                                f'select.mode-select[data-vehicle="{VEHICLE}"]', "no_discharge"
                            )
                            await api_until(
                                context,
                                "/api/vehicles",
                                lambda vs: the_car(vs)["mode"] == "no_discharge",
                                "mode no_discharge at the daemon",
                            )
                            second_plan = await new_plan_rendered(page, first_plan, changed_at)
                            plan = await api_until(
                                context,
                                "/api/plan",
                                lambda p: (
                                    datetime.fromisoformat(p["created_at"])
                                    >= changed_at.replace(microsecond=0)
                                ),
                                "a plan made after the mode change",
                            )
                            assert all(w >= 0 for w in plan["vehicles"][VEHICLE]["power_w"]), plan
                            safe = await cp.wait_profile(charge_only, since=mark, timeout_s=15)
                            first_safe = cp.received.index(safe)
                            print(f"after mode change: {await control_message(page)!r}")

                            # ---------------------------------------------------- one-off departure
                            leave = (datetime.now(zone) + timedelta(hours=3)).replace(second=0, microsecond=0)
                            form = page.locator(f'form.departure-form[data-vehicle="{VEHICLE}"]')
                            await form.locator("input[name=at]").fill(leave.strftime("%Y-%m-%dT%H:%M"))
                            await set_value(form.locator("input[name=target]"), "90")
                            departure_sent_at = datetime.now(UTC)
                            await form.locator("button[type=submit]").click()

                            def departure_set(vehicles: list[Json]) -> bool:
                                car_view = the_car(vehicles)
                                at = car_view["departure_at"]
                                return (
                                    at is not None
                                    and datetime.fromisoformat(at) == leave
                                    and car_view["target_soc_percent"] == 90
                                )

                            vehicles = await api_until(
                                context,
                                "/api/vehicles",
                                departure_set,
                                f"departure {leave.isoformat()} target 90",
                            )
                            assert the_car(vehicles)["departure_source"] == "override"
                            assert the_car(vehicles)["mode"] == "no_discharge"
                            await new_plan_rendered(page, second_plan, departure_sent_at)
                            print(f"after departure: {await control_message(page)!r}")
                            print(f"departure shown: {await car.locator('.car-departure').inner_text()!r}")
                            print(f"stream state: {await page.locator('#stream-state').inner_text()!r}")

                            # No discharging profile reached the charger since the first safe one.
                            late = [r.payload for r in cp.profiles(since=first_safe) if discharges(r.payload)]
                            assert not late, late

                            # ---------------------------------------------------- phone
                            phone = await browser.new_context(
                                viewport=PHONE,
                                device_scale_factor=2,
                                is_mobile=True,
                                has_touch=True,
                                timezone_id=BROWSER_TIMEZONE,
                                base_url=base_url,
                                storage_state=await context.storage_state(),
                            )
                            phone.set_default_timeout(WAIT_MS)
                            try:
                                small = await phone.new_page()
                                errors.watch(small)
                                await small.goto("/", wait_until="domcontentloaded")
                                await small.wait_for_selector('body[data-ready="1"]', state="attached")
                                await expect(
                                    small.locator("#plan-chart svg path.price-line").first
                                ).to_be_attached()
                                print(f"phone layout: {await phone_layout(small)}")
                                await screenshot(small, tmp_path / "dashboard-phone.png")
                            finally:
                                await phone.close()
                        finally:
                            with contextlib.suppress(Exception):
                                await screenshot(page, tmp_path / "dashboard-desktop.png")
                            print(f"page errors: {errors.summary()}")
                            await context.close()
                    assert not errors.uncaught, errors.summary()
                    assert "Traceback" not in daemon.log_text()
        finally:
            await mqtt.clear_retained(site.prefix)


def _accept(dialog: Dialog) -> None:
    """A confirm() before a control acts is answered yes (the task keeps itself alive in the loop)."""
    task = asyncio.ensure_future(dialog.accept())
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)


_PENDING: set[asyncio.Future[None]] = set()
