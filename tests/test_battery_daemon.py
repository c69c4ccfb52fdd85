"""Home batteries in the running daemon (in this process, real sockets): each dispatch tick hands the
dispatcher's battery commands to the battery's control, over the real broker (``control: mqtt``) or a
SunSpec device on 127.0.0.1 (``control: modbus``, a pymodbus server); the stop hands every battery back
to its own mode within the stop's budget; a device that refuses or disappears is shown in health,
retried, and never ends the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from controller.app import Daemon
from controller.battery.sunspec_models import Storage
from controller.config import parse_config
from controller.dispatch import Dispatcher, DispatchInputs
from controller.dispatch.battery_command import BatteryCommand
from controller.site_batteries import home_load_w
from tests.daemon_support import Broker, DaemonSite, broker, make_site
from tests.sunspec_server import SunSpecDeviceModel, SunSpecServer

BATTERY = "house"

pytestmark = pytest.mark.timeout(60)


def with_battery(site: DaemonSite, control: dict[str, Any], *, meters: bool = True) -> DaemonSite:
    tree = copy.deepcopy(site.tree)
    tree["home_batteries"] = [
        {
            "id": BATTERY,
            "usable_capacity_kwh": 10,
            "max_charge_kw": 5,
            "max_discharge_kw": 5,
            "control": control,
        }
    ]
    if meters:
        tree["meters"] += [
            {"id": "bat-w", "role": "battery", "battery": BATTERY, "topic": site.topic("bat/power")},
            {"id": "bat-soc", "role": "battery_soc", "battery": BATTERY, "topic": site.topic("bat/soc")},
        ]
    return DaemonSite(site.directory, site.prefix, site.ocpp_port, tree)


def stand_in(monkeypatch: pytest.MonkeyPatch, commands: Commands) -> None:
    def dispatch_batteries(_dispatcher: Dispatcher, inputs: DispatchInputs) -> list[BatteryCommand]:
        return commands(inputs)

    monkeypatch.setattr(Dispatcher, "dispatch_batteries", dispatch_batteries)


class Commands:
    """Stands in for the dispatcher's battery rule: what it was given, what it answers."""

    def __init__(self, mode: str = "charge", power_w: float = 2000.0) -> None:
        self.mode = mode
        self.power_w = power_w
        self.inputs: list[DispatchInputs] = []

    def __call__(self, inputs: DispatchInputs) -> list[BatteryCommand]:
        self.inputs.append(inputs)
        first = len(self.inputs) == 1
        until = inputs.now + dt.timedelta(seconds=30)
        return [BatteryCommand(BATTERY, self.power_w, self.mode, until, send=first)]  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def in_process(site: DaemonSite) -> AsyncIterator[tuple[Daemon, asyncio.Task[None]]]:
    daemon = Daemon(parse_config(site.tree, env={}))
    run = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.wait_ready(), 20)
        await daemon.mqtt.wait_connected(10)
        yield daemon, run
    finally:
        daemon.stop()
        await asyncio.wait_for(run, 20)


async def until(check: Callable[[], Any], what: str, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.05)
    return result


async def feed_meters(mqtt: Broker, site: DaemonSite, *, grid_w: float, battery_w: float, soc: float) -> None:
    await mqtt.publish(site.topic("meter/grid"), str(grid_w))
    await mqtt.publish(site.topic("bat/power"), str(battery_w))
    await mqtt.publish(site.topic("bat/soc"), str(soc))


# ------------------------------------------------------------------ control: mqtt


async def test_mqtt_setpoints_each_tick_and_the_stop_releases_the_battery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path, "bat-mqtt")
    setpoint_topic = site.topic("bat/setpoint")
    site = with_battery(site, {"mode": "mqtt", "setpoint_topic": setpoint_topic, "resend_s": 5})
    commands = Commands("charge", 2000.0)
    stand_in(monkeypatch, commands)
    async with broker(setpoint_topic, f"{site.base}/state/battery/#") as mqtt:
        try:
            async with in_process(site) as (daemon, run):
                await feed_meters(mqtt, site, grid_w=2300.0, battery_w=1500.0, soc=62.0)
                await until(
                    lambda: any(b.soc_percent == 62.0 for i in commands.inputs[-1:] for b in i.batteries),
                    "the battery's SoC in the dispatch inputs",
                )
                live = commands.inputs[-1].batteries[0]
                assert (live.battery_id, live.power_w) == (BATTERY, 1500.0)
                sent = await mqtt.wait_message(setpoint_topic, lambda m: m.json()["mode"] == "charge")
                assert sent.json()["power_w"] == 2000 and not sent.retain
                assert daemon.site.batteries[BATTERY].control_status == "ok"
                # The home load the forecasts learn leaves the battery's charging out.
                assert home_load_w(daemon.site, daemon.clock.now()) == pytest.approx(2300.0 - 1500.0)
                state = await mqtt.wait_message(
                    f"{site.base}/state/battery/{BATTERY}", lambda m: m.json()["control_status"] == "ok"
                )
                assert state.json()["soc_percent"] == 62.0 and state.json()["mode"] == "charge"
                alive, health = daemon.health()
                assert alive and not [d for d in health["degraded"] if d["what"] == "batteries"]
                stop_asked = time.monotonic()
                daemon.stop()
                await asyncio.wait_for(run, 20)
                stopped_in = time.monotonic() - stop_asked
            released = await mqtt.wait_message(
                setpoint_topic, lambda m: m.json()["mode"] == "auto", since=stop_asked
            )
            assert released.json()["power_w"] == 0
            assert released.at - stop_asked < 3.5 and stopped_in < 6.0
            # Once stopping, nothing but the release went out.
            after = [m.json()["mode"] for m in mqtt.on(setpoint_topic, since=stop_asked)]
            assert after == ["auto"]
            assert daemon.site.batteries[BATTERY].control_status == "released"
        finally:
            await mqtt.clear_retained(site.prefix)


def test_the_home_load_in_the_daemon_leaves_the_battery_out(tmp_path: Path) -> None:
    site = with_battery(make_site(tmp_path, "bat-load"), {"mode": "mqtt", "setpoint_topic": "x/bat/setpoint"})
    daemon = Daemon(parse_config(site.tree, env={}))
    try:
        from controller.domain import MeterReading, MeterRole

        now = daemon.clock.now()
        daemon.inputs.update_meter(MeterReading("grid", MeterRole.GRID, 3000.0, now))
        daemon.inputs.update_meter(MeterReading("bat-w", MeterRole.BATTERY, 2500.0, now))
        assert home_load_w(daemon.site, now) == pytest.approx(500.0)  # not the battery's 2.5 kW
    finally:
        daemon.persistence.close()


# ------------------------------------------------------------------ control: modbus


def modbus_site(tmp_path: Path, tag: str, port: int) -> DaemonSite:
    control = {"mode": "modbus", "host": "127.0.0.1", "port": port, "poll_s": 1, "revert_timeout_s": 60}
    return with_battery(make_site(tmp_path, tag), control, meters=False)


async def test_modbus_readings_setpoints_and_the_release_on_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = Commands("charge", 2500.0)
    stand_in(monkeypatch, commands)
    async with SunSpecServer() as device:
        site = modbus_site(tmp_path, "bat-modbus", device.port)
        async with in_process(site) as (daemon, run):
            await until(
                lambda: daemon.inputs.battery_soc_percent(BATTERY, daemon.clock.now()) is not None,
                "the SoC read from the device",
            )
            assert daemon.inputs.battery_soc_percent(BATTERY, daemon.clock.now()) == pytest.approx(57.25)
            await until(lambda: device.storage(Storage.STOR_CTL_MOD) == 3, "the setpoint written")
            assert device.storage(Storage.IN_OUT_W_RTE_RVRT_TMS) == 60  # the inverter's own revert timeout
            await until(lambda: daemon.site.batteries[BATTERY].control_status == "ok", "the write verified")
            await until(
                lambda: daemon.inputs.battery_power_w(BATTERY, daemon.clock.now()) == pytest.approx(2500.0),
                "the battery following the setpoint",
            )
            stop_asked = time.monotonic()
            daemon.stop()
            await asyncio.wait_for(run, 20)
            assert time.monotonic() - stop_asked < 6.0
        assert device.storage(Storage.STOR_CTL_MOD) == 0  # back in its own mode
        assert daemon.site.batteries[BATTERY].control_status == "released"


async def test_a_refusing_device_is_degraded_in_health_logged_once_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = Commands("discharge", -1500.0)
    stand_in(monkeypatch, commands)
    async with SunSpecServer(SunSpecDeviceModel(refuse_storage_writes=True)) as device:
        site = modbus_site(tmp_path, "bat-refuse", device.port)
        with structlog.testing.capture_logs() as logs:
            async with in_process(site) as (daemon, run):
                await until(lambda: daemon.site.batteries[BATTERY].control_status == "refused", "refused")
                refused_at = len(device.refused)
                await until(lambda: len(device.refused) > refused_at, "a retry", timeout_s=8.0)
                alive, health = daemon.health()
                assert alive and health["status"] == "degraded"
                why = next(d["why"] for d in health["degraded"] if d["what"] == "batteries")
                assert f"battery {BATTERY}: refused" in why
                # readings still come in: only the control is refused
                assert daemon.inputs.battery_soc_percent(BATTERY, daemon.clock.now()) is not None
                assert not run.done()
    warnings = [e for e in logs if e["event"] == "battery_refused"]
    assert len(warnings) == 1 and warnings[0]["battery"] == BATTERY


async def test_a_device_that_disappears_is_unreachable_and_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = Commands("charge", 1000.0)
    stand_in(monkeypatch, commands)
    device = await SunSpecServer().start()
    site = modbus_site(tmp_path, "bat-gone", device.port)
    with structlog.testing.capture_logs() as logs:
        async with in_process(site) as (daemon, run):
            battery = daemon.site.batteries[BATTERY]
            await until(lambda: battery.control_status == "ok", "the first write")
            await device.stop()
            await until(lambda: battery.control_status == "unreachable", "the device lost", timeout_s=15.0)
            await until(
                lambda: daemon.inputs.battery_soc_percent(BATTERY, daemon.clock.now()) is None,
                "its readings aged out",
                timeout_s=10.0,
            )
            alive, health = daemon.health()
            assert alive and any(d["what"] == "batteries" for d in health["degraded"])
            async with SunSpecServer(port=device.port) as back:
                await until(
                    lambda: daemon.inputs.battery_soc_percent(BATTERY, daemon.clock.now()) is not None,
                    "readings again",
                    timeout_s=15.0,
                )
                await until(
                    lambda: back.storage(Storage.STOR_CTL_MOD) == 3, "the setpoint again", timeout_s=10.0
                )
                assert not run.done()
                daemon.stop()
                await asyncio.wait_for(run, 20)
                assert back.storage(Storage.STOR_CTL_MOD) == 0
    lost = [e for e in logs if e["event"] == "battery_unreachable"]
    assert len(lost) == 1, [e["event"] for e in logs if e["event"].startswith("battery")]


async def test_a_device_that_stops_answering_does_not_hold_up_the_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in(monkeypatch, Commands("charge", 1000.0))
    async with SunSpecServer() as device:
        site = modbus_site(tmp_path, "bat-frozen", device.port)
        with structlog.testing.capture_logs() as logs:
            async with in_process(site) as (daemon, run):
                await until(lambda: daemon.site.batteries[BATTERY].control_status == "ok", "the first write")
                device.freeze()
                stop_asked = time.monotonic()
                daemon.stop()
                await asyncio.wait_for(run, 20)
                assert time.monotonic() - stop_asked < 6.0  # the 3 s budget, then on with the stop
        outcome = [e for e in logs if e["event"] == "battery_stop"]
        assert outcome and outcome[0]["battery"] == BATTERY and outcome[0]["outcome"] != "released"
