"""`v2x run` end to end: the daemon as a real subprocess, an OCPP 2.1 charger, the real broker.

Every test starts the daemon on its own config (free OCPP port, unique MQTT topics, SQLite in
``tmp_path``), talks to it only through OCPP and MQTT (and its store once it has stopped), and kills
it in the end whatever happens. Site meters are published non-retained and kept fresh by a
:class:`MeterFeed`, as the daemon ignores retained grid/PV/home readings. One test runs the daemon
in this process instead, to slow its solver down on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller import app as app_module
from controller.app import Daemon
from controller.config import parse_config
from controller.domain import Plan
from controller.snapshot import Snapshot
from controller.store import Store
from tests.chaos_support import http_get
from tests.conftest import stored
from tests.daemon_support import (
    BROKER_HOST,
    BROKER_PORT,
    PEAK_EXPORT,
    PEAK_IMPORT,
    V2L_OFF,
    VEHICLE,
    Broker,
    Charger,
    DaemonSite,
    Message,
    MeterFeed,
    broker,
    charge_only,
    charger,
    discharges,
    evening_timezone,
    first_setpoint,
    free_port,
    hour_start,
    hourly_prices,
    iso,
    make_site,
    periods,
    publish_prices,
    running_daemon,
    utc_now,
)
from tests.ocpp_support import wait_until

pytestmark = pytest.mark.timeout(60)

FLAT_IMPORT = [0.30] * 24
FLAT_EXPORT = [0.05] * 24


def setpoints_w(payload: dict[str, Any]) -> list[float]:
    return [row["setpoint"] for row in periods(payload)]


async def command(mqtt: Broker, site: DaemonSite, name: str, payload: dict[str, Any]) -> Message:
    """Send a driver command and return the daemon's reply (which must say ok)."""
    request_id = f"{name}-{asyncio.get_running_loop().time():.3f}"
    await mqtt.publish(site.command_topic(name), {**payload, "request_id": request_id})
    reply = await mqtt.wait_message(
        f"{site.base}/reply/car/{name}", lambda m: m.json().get("request_id") == request_id, timeout_s=10
    )
    assert reply.json()["ok"] is True, reply.json()
    return reply


async def latest_state(mqtt: Broker, site: DaemonSite, since: datetime, timeout_s: float = 15) -> Any:
    """The vehicle state the daemon published after ``since`` (its own ``at``), as JSON."""

    def fresh(m: Message) -> bool:
        return datetime.fromisoformat(m.json()["at"]) > since

    message = await mqtt.wait_message(f"{site.base}/state/vehicle/car", fresh, timeout_s=timeout_s)
    return message.json()


def history_samples(db_path: Path, meter_id: str) -> int:
    """Meter readings in the store's history, read while the daemon runs (WAL: never blocks it)."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1)) as db:
        row = db.execute(
            "SELECT COALESCE(SUM(samples), 0) FROM meter_history WHERE meter_id = ?", (meter_id,)
        ).fetchone()
    return int(row[0])


async def no_profile(cp: Charger, since: int, bad: Any, seconds: float) -> None:
    """For ``seconds``, no TxProfile after ``since`` satisfies ``bad``."""
    await asyncio.sleep(seconds)
    offenders = [r.payload for r in cp.profiles(since=since) if bad(r.payload)]
    assert not offenders, offenders


# ------------------------------------------------------------------------------ price peak, SIGTERM


async def test_evening_peak_discharges_and_sigterm_leaves_the_charger_safe(tmp_path: Path) -> None:
    site = make_site(tmp_path, "peak", timezone=evening_timezone())
    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with running_daemon(site) as daemon, MeterFeed(mqtt) as meters:
                meters.set(site.topic("meter/grid"), 400.0)
                await meters.publish_now()
                await publish_prices(mqtt, site, PEAK_IMPORT, PEAK_EXPORT)
                async with charger(site.ocpp_port) as cp:
                    await cp.plug_in("tx-peak", soc_percent=80)
                    # The peak pays: the car (80 %, reserve 20 %, V2G allowed) exports now.
                    got = await cp.wait_profile(lambda p: first_setpoint(p) < 0, timeout_s=15)
                    now_row = periods(got.payload)[0]
                    assert now_row["operationMode"] == "CentralSetpoint"
                    assert -10_000 <= now_row["setpoint"] < 0
                    assert now_row["dischargeLimit"] == -10_000 and now_row["limit"] == 11_000
                    profile = got.payload["chargingProfile"]
                    assert profile["transactionId"] == "tx-peak"
                    valid_s = (
                        datetime.fromisoformat(profile["validTo"])
                        - datetime.fromisoformat(profile["validFrom"])
                    ).total_seconds()
                    assert 0 < valid_s <= 2 * 3600  # bounded in time (ocpp.profile_validity_hours)

                    mark = cp.mark()
                    stopped_at = asyncio.get_running_loop().time()
                    daemon.send_signal(signal.SIGTERM)
                    assert await daemon.wait_exit(20) == 0
                    # Safe profiles reached the charger before the daemon went: the running transaction
                    # gets a charge-only TxProfile (it outranks the default), then the default profile.
                    tx = cp.profiles("TxProfile", since=mark)
                    assert tx and all(charge_only(r.payload) for r in tx)
                    assert periods(tx[-1].payload)[0]["dischargeLimit"] == 0
                    default = cp.profiles("TxDefaultProfile", since=mark)
                    assert default and periods(default[-1].payload) == [
                        {"startPeriod": 0, "operationMode": "ChargingOnly", "limit": 11_000}
                    ]
                    assert daemon.events("daemon_stopped")
                    assert "Traceback" not in daemon.log_text()
            offline = await mqtt.wait_message(f"{site.base}/status", since=stopped_at, timeout_s=5)
            assert offline.payload == b"offline"
            stopping = await mqtt.wait_message(
                f"{site.base}/state/controller", lambda m: m.json()["at"] is not None, since=stopped_at
            )
            assert stopping.json()["version"]
        finally:
            await mqtt.clear_retained(site.prefix)

    # The store is intact after the clean stop: plans, the open session, events, the car's state.
    store = Store(site.db_path)
    try:
        plan = store.latest_plan()
        assert plan is not None and plan.vehicles["car"].power_w[plan.step_index(plan.created_at) or 0] < 0
        (session,) = store.sessions()
        assert (session.charger_id, session.vehicle_id, session.transaction_id) == ("wb1", "car", "tx-peak")
        assert session.stopped_at is None  # the car is still plugged in: the session stays open
        kinds = [kind for _, kind, _ in store.events(limit=1000)]
        for kind in ("plug_in", "signal", "shutdown"):
            assert kind in kinds
        state = store.vehicle_states()["car"]
        assert state["plugged_in"] is True and state["soc_percent"] == pytest.approx(80, abs=1)
        # Meter history, the open minute included (flushed on the way out), and the home-load series
        # the forecasts learn from.
        since = utc_now() - timedelta(minutes=10)
        grid = store.history("grid", since, utc_now() + timedelta(minutes=1))
        assert grid and grid[-1].mean == pytest.approx(400.0)
        assert store.history("_home_load", since, utc_now() + timedelta(minutes=1))
    finally:
        store.close()


# ------------------------------------------------------------------------------ the EV's own limits


async def test_the_evs_reported_v2x_limits_bound_the_discharging_profile_and_the_plan(tmp_path: Path) -> None:
    """NotifyEVChargingNeeds with a low discharge power and a V2X energy window: the profile the
    charger gets and the plan stay inside them; unplug ends them."""
    site = make_site(tmp_path, "evlimits", timezone=evening_timezone())
    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with running_daemon(site) as daemon, MeterFeed(mqtt) as meters:
                meters.set(site.topic("meter/grid"), 400.0)
                await meters.publish_now()
                await publish_prices(mqtt, site, PEAK_IMPORT, PEAK_EXPORT)
                async with charger(site.ocpp_port) as cp:
                    await cp.plug_in("tx-ev", soc_percent=80)
                    # Without the EV's limits the peak discharges at the config's 10 kW.
                    free = await cp.wait_profile(lambda p: first_setpoint(p) < -5000, timeout_s=15)
                    assert periods(free.payload)[0]["dischargeLimit"] == -10_000
                    mark, seen, sent_at = cp.mark(), len(daemon.events("plan_ready")), utc_now()
                    # The EV: 5 kW discharge, 7 kW charge, 6 kWh above its own V2X floor (80 % - 10 %).
                    answer = await cp.charging_needs(
                        None,
                        maxDischargePower=5000,
                        maxChargePower=7000,
                        evMinV2XEnergyRequest=-6000,
                        evMaxV2XEnergyRequest=6000,
                    )
                    assert answer == {"status": "Accepted"}
                    capped = await cp.wait_profile(
                        lambda p: periods(p)[0]["dischargeLimit"] == -5000, since=mark, timeout_s=10
                    )
                    rows = periods(capped.payload)
                    assert rows[0]["setpoint"] == -5000 and rows[0]["limit"] == 7000
                    assert all(-5000 <= r["setpoint"] <= 7000 and r["limit"] == 7000 for r in rows), rows
                    assert all(r["dischargeLimit"] in (-5000, 0) for r in rows), rows
                    limits = await daemon.wait_log("ev_charging_needs")
                    assert limits["session_limits"] == {
                        "max_charge_power_w": 7000.0,
                        "max_discharge_power_w": 5000.0,
                        "min_soc_percent": 70.0,
                        "max_soc_percent": 90.0,
                    }
                    await daemon.wait_plan("charging needs", after=seen)
                    plan = await mqtt.wait_message(
                        f"{site.base}/state/plan",
                        lambda m: datetime.fromisoformat(m.json()["created_at"]) > sent_at,
                    )
                    car_plan = plan.json()["vehicles"]["car"]
                    assert min(car_plan["power_w"]) >= -5000 and max(car_plan["power_w"]) <= 7000
                    assert (
                        min(car_plan["soc_percent"]) >= 70.0 - 0.1
                    )  # the EV's floor, above the 20 % reserve
                    state = await latest_state(mqtt, site, utc_now())
                    assert state["ev_limits"]["max_discharge_power_w"] == 5000.0
                    await no_profile(
                        cp, mark, lambda p: any(r.get("dischargeLimit", 0) < -5000 for r in periods(p)), 2.0
                    )

                    mark = cp.mark()
                    await cp.transaction("Ended", "tx-ev", stopped_reason="EVDisconnected")
                    await cp.status("Available")
                    unplugged = await latest_state(mqtt, site, utc_now())
                    assert unplugged["plugged_in"] is False and unplugged["ev_limits"] is None
        finally:
            await mqtt.clear_retained(site.prefix)


# ------------------------------------------------------------------------------ departure, unplug


async def test_departure_near_charges_to_target_and_unplug_sets_the_charger_idle(tmp_path: Path) -> None:
    site = make_site(tmp_path, "depart")
    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with running_daemon(site) as daemon, MeterFeed(mqtt) as meters:
                meters.set(site.topic("meter/grid"), 400.0)
                await meters.publish_now()
                await publish_prices(mqtt, site, FLAT_IMPORT, FLAT_EXPORT)
                async with charger(site.ocpp_port) as cp:
                    await cp.plug_in("tx-dep", soc_percent=50)
                    first = await cp.wait_profile(timeout_s=15)
                    assert min(setpoints_w(first.payload)) >= 0  # no departure, flat prices: no gain

                    # The driver leaves in 90 min and wants 80 %: 18 kWh at 11 kW is more than 90 min.
                    departure = (utc_now() + timedelta(minutes=90)).replace(microsecond=0)
                    mark = cp.mark()
                    reply = await command(
                        mqtt, site, "departure", {"at": iso(departure), "target_soc_percent": 80}
                    )
                    got = await cp.wait_profile(lambda p: first_setpoint(p) > 0, since=mark, timeout_s=15)
                    rows = periods(got.payload)
                    assert rows[0]["setpoint"] == 11_000  # as fast as allowed
                    assert min(setpoints_w(got.payload)) >= 0
                    plan = await mqtt.wait_message(
                        f"{site.base}/state/plan",
                        lambda m: m.json()["vehicles"]["car"]["power_w"][0] > 0,
                        timeout_s=10,
                    )
                    car = plan.json()["vehicles"]["car"]
                    assert car["soc_percent"][0] == pytest.approx(50, abs=1)
                    assert car["soc_percent"][4] > car["soc_percent"][0] + 10  # rising towards the target
                    state = await latest_state(mqtt, site, datetime.fromisoformat(reply.json()["at"]))
                    assert state["departure_at"] == iso(departure)
                    assert state["target_soc_percent"] == 80

                    # Cable out while the transaction still runs: the charger is set idle at once.
                    cp.power_w = 0.0
                    mark = cp.mark()
                    unplugged_at = utc_now()
                    await cp.status("Available")
                    idle = await cp.wait_profile(lambda p: first_setpoint(p) == 0, since=mark, timeout_s=10)
                    assert periods(idle.payload) == [
                        {
                            "startPeriod": 0,
                            "operationMode": "CentralSetpoint",
                            "setpoint": 0,
                            "limit": 11_000,
                            "dischargeLimit": 0,
                        }
                    ]
                    await cp.transaction(
                        "Ended", "tx-dep", trigger="EVDeparted", stopped_reason="EVDisconnected"
                    )
                    state = await latest_state(mqtt, site, unplugged_at)
                    assert state["plugged_in"] is False and state["setpoint_w"] == 0
                    await no_profile(cp, mark, lambda p: first_setpoint(p) != 0, seconds=1.5)
                    await daemon.wait_log("unplug", vehicle="car", charger="wb1")
                    daemon.send_signal(signal.SIGTERM)
                    assert await daemon.wait_exit(20) == 0
        finally:
            await mqtt.clear_retained(site.prefix)

    store = Store(site.db_path)
    try:
        (session,) = store.sessions()
        assert session.transaction_id == "tx-dep" and session.stopped_at is not None
        assert ("car", "departure") in store.overrides(utc_now())
    finally:
        store.close()


# ------------------------------------------------------------------------------ meter silent


async def test_silent_grid_meter_means_safe_mode_without_discharge(tmp_path: Path) -> None:
    site = make_site(tmp_path, "silent")
    grid = site.topic("meter/grid")
    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with running_daemon(site) as daemon, MeterFeed(mqtt) as meters:
                meters.set(grid, 400.0)
                await meters.publish_now()
                await publish_prices(mqtt, site, PEAK_IMPORT, PEAK_EXPORT)
                async with charger(site.ocpp_port) as cp:
                    await cp.plug_in("tx-silent", soc_percent=80)
                    await cp.wait_profile(lambda p: first_setpoint(p) < 0, timeout_s=15)

                    # The grid meter goes quiet; past stale_after_s (3 s) the site is in safe mode.
                    mark = cp.mark()
                    meters.silence(grid)
                    safe = await cp.wait_profile(charge_only, since=mark, timeout_s=10)
                    assert first_setpoint(safe.payload) == 0
                    mark = cp.mark()
                    entered = await daemon.wait_log("safe_mode_entered", timeout_s=5)
                    assert "meter grid (grid) is stale" in entered["reasons"]
                    status = await mqtt.wait_message(
                        f"{site.base}/state/controller", lambda m: m.json()["safe_mode"] is True
                    )
                    assert status.json()["stale_meters"] == ["grid"]
                    # While it stays silent (a re-plan included), nothing sent may discharge.
                    await no_profile(cp, mark, discharges, seconds=2.5)

                    # Fresh readings again: safe mode ends and the peak is used again.
                    mark = cp.mark()
                    meters.set(grid, 400.0)
                    await meters.publish_now()
                    await cp.wait_profile(lambda p: first_setpoint(p) < 0, since=mark, timeout_s=10)
                    await daemon.wait_log("safe_mode_left", timeout_s=5)
        finally:
            await mqtt.clear_retained(site.prefix)


# ------------------------------------------------------------------------------ kill -9, restart


async def test_kill_9_then_restart_restores_overrides_session_soc_and_plan(tmp_path: Path) -> None:
    site = make_site(tmp_path, "restart")
    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with MeterFeed(mqtt) as meters:
                meters.set(site.topic("meter/grid"), 400.0)
                departure = (utc_now() + timedelta(hours=2)).replace(microsecond=0)
                car_leaves = departure + timedelta(hours=1)  # the car's own, from NotifyEVChargingNeeds
                async with running_daemon(site) as first:
                    await meters.publish_now()
                    await publish_prices(mqtt, site, FLAT_IMPORT, FLAT_EXPORT)
                    async with charger(site.ocpp_port) as cp:
                        await cp.plug_in("tx-r", soc_percent=40)
                        await cp.wait_profile(timeout_s=15)
                        await cp.charging_needs(car_leaves, 85)
                        mark = cp.mark()
                        await command(mqtt, site, "mode", {"mode": "no_discharge"})
                        await command(
                            mqtt, site, "departure", {"at": iso(departure), "target_soc_percent": 90}
                        )
                        await cp.wait_profile(lambda p: first_setpoint(p) > 0, since=mark, timeout_s=15)
                        # Meter history reaches the disk while the daemon runs (every history_flush_s, off the loop).
                        on_disk = await wait_until(
                            lambda: history_samples(site.db_path, "grid"), 15, "meter history on disk"
                        )
                        killed_at = utc_now()
                        first.send_signal(signal.SIGKILL)
                        assert await first.wait_exit(10) == -signal.SIGKILL
                        assert not first.events("daemon_stopping")  # no clean shutdown ran

                restarted_at = utc_now()
                async with running_daemon(site) as second:
                    restored = await second.wait_log("state_restored")
                    assert (restored["vehicles"], restored["open_sessions"], restored["plan"]) == (1, 1, True)
                    # Overrides and the plugged-in car are back before any charger reconnects.
                    state = await latest_state(mqtt, site, restarted_at)
                    assert state["mode"] == "no_discharge" and state["departure_at"] == iso(departure)
                    assert state["plugged_in"] is True and state["charger_id"] == "wb1"
                    # The SoC stored before the kill anchors the new plan (not the reserve floor).
                    plan = await mqtt.wait_message(
                        f"{site.base}/state/plan",
                        lambda m: datetime.fromisoformat(m.json()["created_at"]) > restarted_at,
                    )
                    car = plan.json()["vehicles"]["car"]
                    assert car["soc_percent"][0] == pytest.approx(40, abs=1.5)
                    assert all(p >= 0 for p in car["power_w"])  # mode no_discharge

                    # The charger reconnects without rebooting and reports its running transaction.
                    async with charger(site.ocpp_port, boot=False) as cp:
                        cp.soc_percent = 41
                        await cp.transaction("Updated", "tx-r", charging_state="Charging")
                        got = await cp.wait_profile(lambda p: first_setpoint(p) > 0, timeout_s=15)
                        assert charge_only(got.payload)
                        assert got.payload["chargingProfile"]["transactionId"] == "tx-r"
                        mark = cp.mark()
                        second.send_signal(signal.SIGINT)  # Ctrl-C stops it as cleanly as SIGTERM
                        assert await second.wait_exit(20) == 0
                        assert cp.profiles("TxDefaultProfile", since=mark)
                        assert second.events("daemon_stopped") and "Traceback" not in second.log_text()
        finally:
            await mqtt.clear_retained(site.prefix)

    store = Store(site.db_path)
    try:
        (session,) = store.sessions()  # one session across the restart, still open
        assert (session.transaction_id, session.stopped_at) == ("tx-r", None)
        overrides = store.overrides(utc_now())
        assert overrides[("car", "mode")] == {"mode": "no_discharge"}
        assert overrides[("car", "departure")]["at"] == departure.isoformat().replace("+00:00", "Z")
        state = store.vehicle_states()["car"]
        assert state["soc_percent"] == pytest.approx(41, abs=1)
        # The car's own departure came back with the restart (the second run saved it again).
        assert datetime.fromisoformat(state["charger_departure"]["at"]) == car_leaves
        assert state["charger_departure"]["target_soc_percent"] == 85
        # The meter history written before the kill is intact (the second run adds to it).
        before_kill = store.history(
            "grid", killed_at - timedelta(minutes=10), killed_at + timedelta(seconds=1)
        )
        assert sum(p.samples for p in before_kill) >= on_disk and all(p.mean == 400.0 for p in before_kill)
    finally:
        store.close()


# ------------------------------------------------------------------------------ energy register only


async def test_a_charger_reporting_only_its_import_register_counts_the_soc(tmp_path: Path) -> None:
    """A basic AC charger sends neither power nor SoC, only Energy.Active.Import.Register: the SoC
    from the car's integration is counted forward from the register, and a register reset adds
    nothing (the SoC becomes an estimate: that interval went uncounted)."""
    site = make_site(tmp_path, "register")
    api_port = free_port()
    site.tree["api"] = {"enabled": True, "host": "127.0.0.1", "port": api_port, "token": "dash-token"}
    site.tree["vehicles"][0]["usable_capacity_kwh"] = 1  # small, so seconds of charging show in the SoC
    soc_topic = site.topic("car/soc")
    site.tree["meters"].append(
        {"id": "car-soc", "role": "vehicle_soc", "topic": soc_topic, "vehicle": "car", "stale_after_s": 600}
    )

    async def car_state() -> Any:
        return (await http_get(api_port, "/state", token="dash-token"))[1]["vehicles"]["car"]

    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with running_daemon(site), MeterFeed(mqtt) as meters:
                meters.set(site.topic("meter/grid"), 400.0)
                await meters.publish_now()
                async with charger(site.ocpp_port) as cp:
                    cp.report_power, cp.energy_import_wh = False, 10_000.0
                    await cp.status("Occupied")
                    await mqtt.publish(soc_topic, "50")
                    deadline = time.monotonic() + 10
                    while (await car_state())["soc_percent"] != 50:
                        assert time.monotonic() < deadline, "the SoC reading never arrived"
                        await asyncio.sleep(0.1)
                    # Samples after the reading, on whole seconds 2 s apart; the register runs at 11 kW.
                    start = (utc_now() + timedelta(seconds=2)).replace(microsecond=0)
                    for k in range(5):
                        at = start + timedelta(seconds=2 * k)
                        await asyncio.sleep(max(0.0, (at - utc_now()).total_seconds()))
                        cp.energy_import_wh = 10_000.0 + 11_000.0 * 2 * k / 3600
                        if k == 0:
                            await cp.transaction("Started", "tx-reg", trigger="CablePluggedIn", at=at)
                        else:
                            await cp.meter_values(at=at)
                    counted = await car_state()
                    charged_wh = 11_000.0 * 8 / 3600  # into a 1 kWh battery through 92 %
                    assert counted["soc_measured"] is True
                    assert counted["soc_percent"] == pytest.approx(50.0 + 0.092 * charged_wh, abs=0.01)

                    cp.energy_import_wh = 3.0  # the charger restarted its register
                    await cp.meter_values(at=start + timedelta(seconds=9))
                    reset = await car_state()
                    assert reset["soc_percent"] == pytest.approx(counted["soc_percent"])
                    assert reset["soc_measured"] is False
        finally:
            await mqtt.clear_retained(site.prefix)


# ------------------------------------------------------------------------------ outage, V2L


async def test_grid_outage_v2h_covers_the_home_down_to_the_reserve(tmp_path: Path) -> None:
    site = make_site(tmp_path, "outage")
    site.tree["meters"].append(
        {"id": "home", "role": "home", "topic": site.topic("meter/home"), "stale_after_s": 3}
    )
    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with running_daemon(site) as daemon, MeterFeed(mqtt) as meters:
                meters.set(site.topic("meter/grid"), 5000.0)
                meters.set(site.topic("meter/home"), 5000.0)
                await meters.publish_now()
                await publish_prices(mqtt, site, FLAT_IMPORT, FLAT_EXPORT)
                async with charger(site.ocpp_port) as cp:
                    await cp.plug_in("tx-out", soc_percent=60)
                    assert first_setpoint((await cp.wait_profile(timeout_s=15)).payload) == 0

                    # The grid goes down (the meter on the connection reads 0): the car carries the home
                    # (5 kW: above the charger's smallest setpoint, 6 A on three phases).
                    mark = cp.mark()
                    meters.set(site.topic("meter/grid"), 0.0)
                    await meters.publish_now()
                    await mqtt.publish(site.topic("grid/outage"), "lost")
                    covering = await cp.wait_profile(lambda p: first_setpoint(p) < 0, since=mark)
                    rows = periods(covering.payload)
                    assert rows[0]["setpoint"] == -5000  # exactly the measured home load
                    # If the daemon dies, the discharge stops at the next step boundary (at least the
                    # renewal margin, 2 x 1 s + 3 s, ahead); while it runs it renews the profile.
                    assert len(rows) == 2 and (rows[1]["setpoint"], rows[1]["dischargeLimit"]) == (0, 0)
                    assert 5 <= rows[1]["startPeriod"] <= 15 * 60 + 5
                    cp.power_w = -5000.0
                    await cp.meter_values()

                    # The car reaches its reserve (20 %): discharge stops at once.
                    mark = cp.mark()
                    cp.soc_percent = 20.3
                    await cp.transaction("Updated", "tx-out", charging_state="Charging")
                    stop = await cp.wait_profile(lambda p: first_setpoint(p) == 0, since=mark, timeout_s=10)
                    assert charge_only(stop.payload)
                    cp.power_w = 0.0
                    await cp.meter_values()
                    mark = cp.mark()
                    await no_profile(cp, mark, discharges, seconds=2.0)
                    assert daemon.events("grid_state_changed", grid_lost=True)
        finally:
            await mqtt.clear_retained(site.prefix)


async def test_v2l_session_is_cut_off_at_the_reserve(tmp_path: Path) -> None:
    site = make_site(tmp_path, "v2l")
    soc_topic = site.topic("car/soc")
    site.tree["meters"].append(
        {"id": "car-soc", "role": "vehicle_soc", "topic": soc_topic, "vehicle": "car", "stale_after_s": 600}
    )
    cutoff_topic = site.topic("car/v2l/set")
    async with broker(f"{site.base}/#", cutoff_topic) as mqtt:
        try:
            async with running_daemon(site) as daemon:
                await mqtt.publish(soc_topic, "35")
                await command(mqtt, site, "v2l", {"action": "start", "power_w": 1500})
                state = await latest_state(mqtt, site, utc_now() - timedelta(seconds=1))
                assert state["v2l_active"] is True
                await mqtt.publish(soc_topic, "27")
                await asyncio.sleep(1.5)
                assert not mqtt.on(cutoff_topic)  # well above the reserve: the session runs on

                await mqtt.publish(soc_topic, "20.9")  # reserve 20 % (+1 % margin)
                cut = await mqtt.wait_message(cutoff_topic, timeout_s=5)
                assert cut.payload.decode() == V2L_OFF and not cut.retain
                logged = await daemon.wait_log("v2l_cut_off", vehicle="car")
                assert logged["soc_percent"] == pytest.approx(20.9) and logged["topic"] == cutoff_topic
                await mqtt.publish(soc_topic, "20.5")
                await asyncio.sleep(1.5)
                assert len(mqtt.on(cutoff_topic)) == 1  # sent once, not on every tick
                daemon.send_signal(signal.SIGTERM)
                assert await daemon.wait_exit(20) == 0
        finally:
            await mqtt.clear_retained(site.prefix)

    store = Store(site.db_path)
    try:
        ((_, _, body),) = store.events("v2l_cut_off")
        assert body == {"vehicle": "car", "soc_percent": 20.9, "reason": "SoC at the reserve"}
        assert store.overrides(utc_now())[("car", "v2l")]["cut_off"] is True
    finally:
        store.close()


# ------------------------------------------------------------------------------ re-plan on events, fuse


async def test_each_event_replans_at_once_and_a_burst_makes_one_plan(tmp_path: Path) -> None:
    """Plug-in, prices, limits, departure/target/mode, the car's needs and unplug each re-plan within
    seconds (the interval is 5 min); import and export prices sent together make one plan."""
    site = make_site(tmp_path, "events")
    site.tree["grid_signals"]["limit_topic"] = site.topic("grid/limits")
    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with running_daemon(site) as daemon, MeterFeed(mqtt) as meters:
                meters.set(site.topic("meter/grid"), 400.0)
                await meters.publish_now()
                await daemon.wait_plan("start", after=0)

                seen = len(daemon.events("plan_ready"))
                await mqtt.publish(site.topic("prices/import"), hourly_prices(FLAT_IMPORT))
                await asyncio.sleep(0.05)  # well inside the 0.2 s debounce
                await mqtt.publish(site.topic("prices/export"), hourly_prices(FLAT_EXPORT))
                plan = await daemon.wait_plan("import_prices", after=seen)
                assert "export_prices" in plan["triggers"]  # debounced: one plan for both
                await asyncio.sleep(0.5)
                priced = [p for p in daemon.events("plan_ready")[seen:] if "export_prices" in p["triggers"]]
                assert len(priced) == 1

                async with charger(site.ocpp_port) as cp:
                    seen = len(daemon.events("plan_ready"))
                    await cp.plug_in("tx-ev", soc_percent=50)
                    await daemon.wait_plan("plug_in", after=seen)

                    leave = (utc_now() + timedelta(hours=3)).replace(microsecond=0)
                    limits = [{"duration_s": 900, "import_kw": 8}]
                    weekly = {"weekday": "monday", "time": "07:00", "target_soc_percent": 70}
                    departure = {"at": iso(leave), "target_soc_percent": 75}
                    events: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                        ("limits", lambda: mqtt.publish(site.topic("grid/limits"), limits)),
                        ("mode", lambda: command(mqtt, site, "mode", {"mode": "no_discharge"})),
                        ("departure", lambda: command(mqtt, site, "departure", departure)),
                        ("weekly_departure", lambda: command(mqtt, site, "weekly_departure", weekly)),
                        ("charging needs", lambda: cp.charging_needs(leave + timedelta(hours=1), 85)),
                        ("unplug", lambda: cp.status("Available")),
                    ]
                    for trigger, send in events:
                        seen = len(daemon.events("plan_ready"))
                        await send()
                        await daemon.wait_plan(trigger, after=seen)
        finally:
            await mqtt.clear_retained(site.prefix)


async def test_a_grid_reading_over_the_import_cap_cuts_charging_at_once(tmp_path: Path) -> None:
    """Fuse protection does not wait for the next dispatch tick (here a minute) or a new plan."""
    site = make_site(tmp_path, "fuse", dispatch_interval_s=60)
    grid = site.topic("meter/grid")
    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with running_daemon(site), MeterFeed(mqtt) as meters:
                meters.set(grid, 400.0)
                await meters.publish_now()
                await publish_prices(mqtt, site, FLAT_IMPORT, FLAT_EXPORT)
                async with charger(site.ocpp_port) as cp:
                    await cp.plug_in("tx-fuse", soc_percent=40)
                    await command(mqtt, site, "mode", {"mode": "charge_now"})
                    await cp.wait_profile(lambda p: first_setpoint(p) == 11_000, timeout_s=15)
                    cp.power_w = 11_000.0
                    await cp.meter_values()
                    meters.set(grid, 11_400.0)
                    await meters.publish_now()
                    await asyncio.sleep(1.0)  # the readings settle; nothing is over the cap yet

                    # The house adds 7.1 kW: 18.5 kW at the grid connection, 1.5 kW over the 17 kW cap.
                    mark = cp.mark()
                    meters.set(grid, 18_500.0)
                    sent_at = time.monotonic()
                    await meters.publish_now()
                    cut = await cp.wait_profile(lambda p: first_setpoint(p) < 11_000, since=mark, timeout_s=5)
                    assert first_setpoint(cut.payload) == 9_500  # exactly back under the cap
                    assert cut.at - sent_at < 2.0
        finally:
            await mqtt.clear_retained(site.prefix)


# ------------------------------------------------------------------------------ solve off the loop


async def test_a_slow_solve_does_not_hold_up_ocpp_or_mqtt(tmp_path: Path) -> None:
    """While a plan is being solved (held for up to 10 s here), a charger boots and is answered and
    a driver command gets its reply: the solve runs in a worker thread, not on the event loop."""
    site = make_site(tmp_path, "slow")
    daemon = Daemon(parse_config(site.tree, env={}))
    solving, release = threading.Event(), threading.Event()
    planner = daemon.planner
    plan_now = planner.plan

    def slow_plan(snapshot: Snapshot) -> Plan:
        solving.set()
        release.wait(10.0)
        return plan_now(snapshot)

    planner.plan = slow_plan  # type: ignore[method-assign]
    async with broker(f"{site.base}/#") as mqtt:
        run = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.wait_ready(), 20)
            await daemon.mqtt.wait_connected(10)
            await wait_until(solving.is_set, 10, "the start-up solve")
            async with charger(site.ocpp_port) as cp:  # boot, default profile installed
                asked_at = time.monotonic()
                assert "currentTime" in await cp.call("Heartbeat", {})
                assert time.monotonic() - asked_at < 1.0
            await command(mqtt, site, "mode", {"mode": "no_discharge"})
            assert not release.is_set() and daemon.replans == 0  # all while the solve was running
            release.set()
            await wait_until(lambda: daemon.replans >= 1, 10, "the plan")
        finally:
            release.set()
            daemon.stop()
            await asyncio.wait_for(run, 20)
            await mqtt.clear_retained(site.prefix)


# ------------------------------------------------------------------------------ the car's EVSE


@contextlib.asynccontextmanager
async def in_process_daemon(site: DaemonSite) -> AsyncIterator[Daemon]:
    """The daemon run in this process on real sockets, so that a test can look at its site state."""
    daemon = Daemon(parse_config(site.tree, env={}))
    run = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.wait_ready(), 20)
        await daemon.mqtt.wait_connected(10)
        yield daemon
    finally:
        daemon.stop()
        await asyncio.wait_for(run, 20)


def power_16(connector_id: int, watts: float, at: datetime, transaction_id: int | None = None) -> Any:
    payload: dict[str, Any] = {
        "connectorId": connector_id,
        "meterValue": [
            {
                "timestamp": iso(at),
                "sampledValue": [{"value": str(watts), "measurand": "Power.Active.Import", "unit": "W"}],
            }
        ],
    }
    if transaction_id is not None:
        payload["transactionId"] = transaction_id
    return payload


async def test_a_16_connector_0_status_station_meter_or_unknown_stop_leaves_the_car_plugged(
    tmp_path: Path,
) -> None:
    """OCPP 1.6 chargers report connector 0 (the whole charge point) "Available" routinely; neither
    that, nor connector 0's meter, nor a StopTransaction of a transaction the daemon never gave out
    unplugs the car on connector 1 or counts as its power; connector 1's own "Available" does."""
    site = make_site(tmp_path, "conn0")
    site.tree["chargers"][0]["ocpp_versions"] = ["1.6"]
    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with (
                in_process_daemon(site) as daemon,
                charger(site.ocpp_port, boot=False, subprotocol="ocpp1.6") as cp,
            ):
                boot = await cp.call(
                    "BootNotification", {"chargePointVendor": "Test", "chargePointModel": "U16"}
                )
                assert boot["status"] == "Accepted"
                car = daemon.site.vehicles[VEHICLE]

                def status(connector_id: int, value: str) -> Any:
                    return {"connectorId": connector_id, "errorCode": "NoError", "status": value}

                await cp.call("StatusNotification", status(1, "Preparing"))
                start = await cp.call(
                    "StartTransaction",
                    {"connectorId": 1, "idTag": "TAG", "meterStart": 1000, "timestamp": iso(utc_now())},
                )
                transaction_id = start["transactionId"]
                await cp.call("MeterValues", power_16(1, 3000, utc_now(), transaction_id))
                assert car.plugged_in and car.measured_power_w == 3000

                later = utc_now() + timedelta(seconds=2)
                await cp.call("StatusNotification", status(0, "Available"))
                await cp.call("MeterValues", power_16(0, 9000, later))
                stop = await cp.call(
                    "StopTransaction",
                    {
                        "transactionId": transaction_id + 1_000_000,
                        "meterStop": 800,
                        "timestamp": iso(later),
                        "reason": "EVDisconnected",
                    },
                )
                assert stop == {}  # answered as usual
                assert car.plugged_in and car.measured_power_w == 3000
                assert [s.transaction_id for s in stored(daemon).open_sessions()] == [str(transaction_id)]
                assert not stored(daemon).events("unplug")

                await cp.call("StatusNotification", status(1, "Available"))
                assert not car.plugged_in
                assert [body for _, _, body in stored(daemon).events("unplug")] == [
                    {"vehicle": VEHICLE, "charger": "wb1"}
                ]
        finally:
            await mqtt.clear_retained(site.prefix)


async def test_a_second_evse_or_the_station_meter_of_a_21_charger_is_not_the_car(tmp_path: Path) -> None:
    """A 2.1 charger with two EVSEs, the car on EVSE 1: EVSE 2 going Available (or running and ending
    another car's transaction) leaves the car plugged with its session, and the main meter (EVSE 0)
    is not its power."""
    site = make_site(tmp_path, "dual")
    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with in_process_daemon(site) as daemon, charger(site.ocpp_port) as cp:
                car = daemon.site.vehicles[VEHICLE]
                cp.power_w = 3000.0
                await cp.plug_in("tx-car", soc_percent=50)
                assert car.plugged_in and car.measured_power_w == 3000

                await cp.status("Available", evse_id=2)
                await cp.status("Occupied", evse_id=2)
                await cp.transaction("Started", "tx-guest", trigger="CablePluggedIn", evse_id=2)
                await cp.transaction(
                    "Ended", "tx-guest", trigger="EVDeparted", stopped_reason="EVDisconnected"
                )
                await cp.status("Available", evse_id=2)
                cp.power_w, cp.soc_percent = 9000.0, None
                await cp.meter_values(utc_now() + timedelta(seconds=2), evse_id=0)
                assert car.plugged_in and car.measured_power_w == 3000
                assert [s.transaction_id for s in stored(daemon).open_sessions()] == ["tx-car"]
                assert not stored(daemon).events("unplug")

                await cp.status("Available")  # EVSE 1: the car's cable is out
                assert not car.plugged_in
        finally:
            await mqtt.clear_retained(site.prefix)


async def test_a_retained_outage_state_is_not_refreshed_by_a_reconnect(tmp_path: Path) -> None:
    """The broker hands a retained "lost" out again on every reconnect; it sets the outage when none is
    known, but a reconnect does not refresh it: it ends after ``outage_max_age_s`` as usual."""
    site = make_site(tmp_path, "retained-outage")
    site.tree["grid_signals"]["outage_max_age_s"] = 4
    outage = site.topic("grid/outage")
    async with broker(f"{site.base}/#") as mqtt:
        await mqtt.publish(outage, "lost", retain=True)
        try:
            async with in_process_daemon(site) as daemon:
                inputs = daemon.inputs
                deliveries: list[bool] = []
                update = inputs.update_grid_state

                def spy(*args: Any, **kwargs: Any) -> bool:
                    deliveries.append(True)
                    return update(*args, **kwargs)

                inputs.update_grid_state = spy  # type: ignore[method-assign]
                await wait_until(lambda: inputs.grid_state_at is not None, 5, "the retained outage state")
                first = inputs.grid_state_at
                assert first is not None and inputs.is_grid_lost(utc_now())
                delivered = len(deliveries)
                # The same client id on the broker takes the session over: the daemon reconnects.
                async with aiomqtt.Client(
                    BROKER_HOST, BROKER_PORT, identifier=site.tree["mqtt"]["client_id"]
                ):
                    await wait_until(lambda: not daemon.mqtt.connected, 5, "the daemon's disconnect")
                await wait_until(lambda: daemon.mqtt.connections >= 2, 10, "the reconnect")
                await wait_until(lambda: len(deliveries) > delivered, 5, "the retained state again")
                assert inputs.grid_state_at == first  # not refreshed
                await wait_until(lambda: not inputs.grid_lost, 8, "the outage state to expire")
                assert utc_now() - first >= timedelta(seconds=4)
        finally:
            await mqtt.publish(outage, b"", retain=True)
            await mqtt.clear_retained(site.prefix)


# ------------------------------------------------------------------------------ start-up errors


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("site", "grid", "import_limit_kw"), -5, "site.grid.import_limit_kw"),
        (("vehicles", 0, "home_charger"), "nowhere", "vehicles[0].home_charger"),
    ],
)
async def test_bad_config_exits_2_naming_the_field(
    tmp_path: Path, path: tuple[Any, ...], value: Any, named: str
) -> None:
    site = make_site(tmp_path, "badcfg")
    node: Any = site.tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    async with running_daemon(site, ready=False) as daemon:
        assert await daemon.wait_exit(20) == 2
        message = daemon.log_text()
        assert named in message and "Traceback" not in message
    assert not site.db_path.exists()  # nothing was started


async def test_ocpp_port_in_use_is_a_clean_error(tmp_path: Path) -> None:
    site = make_site(tmp_path, "port")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", site.ocpp_port))
        taken.listen()
        async with running_daemon(site, ready=False) as daemon:
            assert await daemon.wait_exit(20) == 2
            message = daemon.log_text()
            assert "error: ocpp.port" in message and str(site.ocpp_port) in message
            assert "Traceback" not in message


async def test_unusable_store_is_a_clean_error(tmp_path: Path) -> None:
    site = make_site(tmp_path, "store")
    site.tree["storage"]["path"] = str(tmp_path)  # a directory, not a database file
    async with running_daemon(site, ready=False) as daemon:
        assert await daemon.wait_exit(20) == 1
        message = daemon.log_text()
        assert f"error: storage.path {tmp_path}" in message and "Traceback" not in message


# ------------------------------------------------------------------------------ HTTP API, PV forecast


async def test_health_is_unhealthy_when_the_ocpp_server_stops_listening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The servers run under the daemon's TaskGroup: one that stops listening shows in /health."""
    monkeypatch.setattr(app_module, "SERVER_CHECK_INTERVAL_S", 0.05)
    site = make_site(tmp_path, "health")
    api_port = free_port()
    site.tree["api"] = {"enabled": True, "host": "127.0.0.1", "port": api_port}
    daemon = Daemon(parse_config(site.tree, env={}))
    async with broker(f"{site.base}/#") as mqtt:
        run = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.wait_ready(), 20)
            status, health = await http_get(api_port, "/health")
            assert status == 200 and health["stopped_tasks"] == []
            await daemon.ocpp.stop()  # the OCPP listener is gone, as if its server had died
            deadline = time.monotonic() + 5
            while (answer := await http_get(api_port, "/health"))[0] == 200:
                assert time.monotonic() < deadline, "/health stayed healthy"
                await asyncio.sleep(0.05)
            assert answer == (503, {**answer[1], "status": "unhealthy", "stopped_tasks": ["ocpp"]})
            assert daemon.health()[0] is False
        finally:
            daemon.stop()
            await asyncio.wait_for(run, 20)
            await mqtt.clear_retained(site.prefix)


async def test_http_health_and_state_and_pv_forecast_topic(tmp_path: Path) -> None:
    site = make_site(tmp_path, "http")
    api_port = free_port()
    site.tree["api"] = {"enabled": True, "host": "127.0.0.1", "port": api_port, "token": "dash-token"}
    site.tree["forecast"] = {"pv_forecast_topic": site.topic("forecast/pv")}
    start = hour_start(utc_now())
    forecast = {
        "unit": "kW",
        "forecast": [
            {
                "start": iso(start + timedelta(hours=h)),
                "end": iso(start + timedelta(hours=h + 1)),
                "value": 3.5,
            }
            for h in range(24)
        ],
    }
    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with running_daemon(site) as daemon, MeterFeed(mqtt) as meters:
                meters.set(site.topic("meter/grid"), 400.0)
                await meters.publish_now()
                status, health = await http_get(api_port, "/health")
                assert status == 200 and health["status"] == "ok"
                assert (await http_get(api_port, "/state"))[0] == 401
                status, state = await http_get(api_port, "/state", token="dash-token")
                assert status == 200 and set(state["vehicles"]) == {VEHICLE}
                plans = len(daemon.events("plan_ready"))
                await mqtt.publish(site.topic("forecast/pv"), forecast)
                await daemon.wait_log("signal_accepted", kind="pv_forecast")
                await daemon.wait_log("plan_ready", count=plans + 1)  # a new forecast re-plans at once
                await mqtt.publish(site.topic("forecast/pv"), b"[{broken")
                await daemon.wait_log("signal_rejected", kind="pv_forecast")
                assert (await http_get(api_port, "/health"))[0] == 200

                # A charger that rejects its TxProfile: /state and the charger's topic say so.
                async with charger(site.ocpp_port) as cp:
                    cp.tx_profile_status = "Rejected"
                    await cp.plug_in("tx-http", soc_percent=50)

                    async def rejected_in_state() -> Any:
                        chargers = (await http_get(api_port, "/state", token="dash-token"))[1]["chargers"]
                        last = chargers["wb1"]["last_profile"]
                        return chargers["wb1"] if last and last["status"] == "rejected" else None

                    deadline = time.monotonic() + 10
                    while (shown := await rejected_in_state()) is None:
                        assert time.monotonic() < deadline, "/state never showed the rejected profile"
                        await asyncio.sleep(0.2)
                    assert shown["connected"] is True and shown["transaction_id"] == "tx-http"
                    assert shown["last_profile"]["purpose"] == "TxProfile"
                    assert shown["last_profile"]["reason"] == "Rejected (TxNotFound)"
                    assert shown["default_profile"]["status"] == "accepted"
                    published = await mqtt.wait_message(
                        f"{site.base}/state/charger/wb1",
                        lambda m: (m.json()["last_profile"] or {}).get("status") == "rejected",
                        timeout_s=5,
                    )
                    assert published.json()["last_profile"]["accepted"] is False
                    await daemon.wait_log("profile_not_accepted", status="rejected")

                    # Prometheus: the charger's frames, its rejected profile, the plan's solve time.
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as client:
                        assert (await client.get("/metrics")).status_code == 401
                        text = (
                            await client.get("/metrics", headers={"Authorization": "Bearer dash-token"})
                        ).text
                    families = {f.name: f for f in text_string_to_metric_families(text)}
                    frames = {
                        s.labels["direction"]: s.value
                        for s in families["v2x_ocpp_messages"].samples
                        if s.name.endswith("_total") and s.labels["charger"] == "wb1"
                    }
                    assert frames["received"] >= 3 and frames["sent"] >= 3  # boot, status, tx, profiles
                    rejected = [
                        s.value
                        for s in families["v2x_charger_profiles"].samples
                        if s.name.endswith("_total") and s.labels == {"charger": "wb1", "status": "rejected"}
                    ]
                    assert rejected and rejected[0] >= 1
                    assert any(
                        s.value >= 1
                        for s in families["v2x_plan_solve_seconds"].samples
                        if s.name.endswith("_count")
                    )
        finally:
            await mqtt.clear_retained(site.prefix)
