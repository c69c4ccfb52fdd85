"""Virtual chargers (sim.hil) against the real daemon over real websockets: OCPP 2.1, 2.0.1 and 1.6.

Each end-to-end test starts ``v2x run`` on a site from ``make_site``, feeds its grid meter, publishes
prices and plugs a virtual car in; the charger must follow the profiles through the simulator's
charger model, move its car's SoC and report it the way its version does. The first tests need no
daemon: the physics rules alone.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.clock import SystemClock
from controller.config import ChargerConfig, OcppVersion, SiteConfig, parse_config
from sim.charger_model import ChargerModel
from sim.hil.car import VirtualCar
from sim.hil.faults import Faults
from sim.hil.profiles import parse_profile
from sim.hil.virtual_charger import VirtualCharger
from tests.chaos_support import http_get
from tests.daemon_support import (
    CHARGER,
    PEAK_EXPORT,
    PEAK_IMPORT,
    VEHICLE,
    DaemonSite,
    MeterFeed,
    broker,
    evening_timezone,
    free_port,
    make_site,
    publish_prices,
    running_daemon,
)
from tests.ocpp_support import wait_until

TOKEN = "hil-token"
# Cheap now, dear later: a car below its target charges at once.
CHEAP_NOW_IMPORT = [0.05] * 2 + [0.50] * 22
CHEAP_NOW_EXPORT = [0.01] * 24

Json = dict[str, Any]

# ------------------------------------------------------------------------------ physics, no daemon


def charger(**fields: Any) -> ChargerConfig:
    base: Json = {"id": "wb", "max_charge_kw": 11, "max_discharge_kw": 10, "bidirectional": True, "phases": 3}
    return ChargerConfig.model_validate({**base, **fields})


def offline(config: ChargerConfig, version: OcppVersion, car: VirtualCar) -> VirtualCharger:
    """A charger that is never started: a running transaction, its car, profiles set by hand."""
    vc = VirtualCharger("wb", version, "ws://127.0.0.1:1/none", config, car=car, ramp_s=0.0)
    vc.transaction_id = "1"
    vc.transaction_start = datetime.now(UTC)
    return vc


def tx_profile(version: OcppVersion, rows: list[Json], unit: str) -> Json:
    start = (datetime.now(UTC) - timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    schedule = {
        "startSchedule": start,
        "duration": 3600,
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": rows,
    }
    profile = {
        "stackLevel": 1,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Absolute",
        "transactionId": 1 if version is OcppVersion.V16 else "1",
    }
    if version is OcppVersion.V16:
        return {
            "connectorId": 1,
            "csChargingProfiles": {"chargingProfileId": 2, **profile, "chargingSchedule": schedule},
        }
    return {"evseId": 1, "chargingProfile": {"id": 2, **profile, "chargingSchedule": [{"id": 2, **schedule}]}}


def follows(vc: VirtualCharger, payload: Json) -> float:
    vc.profiles["TxProfile"] = parse_profile(vc.version, payload, vc.config)
    vc.reading()  # advances: the charger heads for what the profile asks now
    return vc.target_w


@pytest.mark.parametrize(
    ("fields", "version", "rows", "unit", "expected"),
    [
        # 2.1 setpoint below the 3-phase AC minimum (6 A x 3 x 230 V = 4140 W): paused.
        (
            {},
            OcppVersion.V21,
            [{"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": 3000, "limit": 11000}],
            "W",
            0.0,
        ),
        (
            {},
            OcppVersion.V21,
            [
                {
                    "startPeriod": 0,
                    "operationMode": "CentralSetpoint",
                    "setpoint": -6000,
                    "limit": 11000,
                    "dischargeLimit": -10000,
                }
            ],
            "W",
            -6000.0,
        ),
        # Above the maximum: capped; a later period is not in force yet.
        (
            {},
            OcppVersion.V21,
            [
                {"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": 20000, "limit": 22000},
                {"startPeriod": 600, "operationMode": "CentralSetpoint", "setpoint": 0},
            ],
            "W",
            11000.0,
        ),
        # A charger that is not bidirectional never discharges.
        (
            {"bidirectional": False, "max_discharge_kw": 0},
            OcppVersion.V21,
            [{"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -6000}],
            "W",
            0.0,
        ),
        # A switching charger told one phase runs at 1 x 6 A x 230 V and above.
        (
            {"phase_switching": True},
            OcppVersion.V21,
            [{"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": 2000, "numberPhases": 1}],
            "W",
            2000.0,
        ),
        # Amperes per phase on 2.0.1 and 1.6; 5 A is below the 6 A minimum.
        ({}, OcppVersion.V201, [{"startPeriod": 0, "limit": 10.0, "numberPhases": 3}], "A", 6900.0),
        ({}, OcppVersion.V16, [{"startPeriod": 0, "limit": 5.0, "numberPhases": 3}], "A", 0.0),
        # A negative limit discharges only with the opt-in.
        ({}, OcppVersion.V16, [{"startPeriod": 0, "limit": -10.0}], "A", 0.0),
        (
            {"negative_limit_means_discharge": True},
            OcppVersion.V16,
            [{"startPeriod": 0, "limit": -10.0}],
            "A",
            -6900.0,
        ),
    ],
)
def test_the_power_follows_the_profile_through_the_charger_model(
    fields: Json, version: OcppVersion, rows: list[Json], unit: str, expected: float
) -> None:
    vc = offline(charger(**fields), version, VirtualCar(soc_percent=50.0))
    assert follows(vc, tx_profile(version, rows, unit)) == pytest.approx(expected)


def test_the_car_tapers_near_full_moves_its_soc_with_efficiency_and_may_not_report_it() -> None:
    car = VirtualCar(capacity_kwh=10.0, soc_percent=90.0, charge_efficiency=0.9, taper_floor=0.1)
    assert car.accept_charge_w() == pytest.approx(11000 * (1 - 0.9 * 0.5))
    car.move(1000.0)  # 1 kWh at the charger, 0.9 kWh into the battery
    assert car.soc_percent == pytest.approx(99.0)
    car.move(-500.0)  # 0.5 kWh out of the charger takes 0.5 / 0.92 kWh from the battery
    assert car.soc_percent == pytest.approx(99.0 - 100 * 0.5 / 0.92 / 10)
    car.move(100_000.0)
    assert car.soc_percent == 100.0 and car.accept_charge_w() == 0.0 and car.limit_w(5000) == 0.0

    vc = offline(charger(), OcppVersion.V21, VirtualCar(soc_percent=90.0))
    rows = [{"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": 11000, "limit": 11000}]
    assert follows(vc, tx_profile(OcppVersion.V21, rows, "W")) == pytest.approx(6050.0, abs=1)
    assert vc.reading().soc_percent == 90.0
    assert vc.car is not None
    vc.car.reports_soc = False
    assert vc.reading().soc_percent is None


# ------------------------------------------------------------------------------ against the daemon


def site_for(tmp_path: Path, tag: str, version: OcppVersion, **settings: Any) -> tuple[DaemonSite, int]:
    site = make_site(tmp_path, tag, **settings)
    site.tree["chargers"][0]["ocpp_versions"] = [version.value]
    site.tree["ocpp"]["meter_sample_interval_s"] = 2
    site.tree["ocpp"]["call_timeout_s"] = 2
    api_port = free_port()
    site.tree["api"] = {"enabled": True, "host": "127.0.0.1", "port": api_port, "token": TOKEN}
    return site, api_port


def virtual(site: DaemonSite, version: OcppVersion, **kw: Any) -> VirtualCharger:
    config: SiteConfig = parse_config(site.tree, env={})
    url = f"ws://127.0.0.1:{site.ocpp_port}/ocpp/{CHARGER}"
    return VirtualCharger.from_site(
        config, CHARGER, version, url, clock=SystemClock(), rng=random.Random(7), **kw
    )


async def car_state(api_port: int) -> Json:
    status, state = await http_get(api_port, "/state", token=TOKEN)
    assert status == 200
    vehicle: Json = state["vehicles"][VEHICLE]
    return vehicle


def expected_w(vc: VirtualCharger, payload: Json) -> float:
    """What the charger must deliver now for this profile: its period in force, read from the wire,
    through the simulator's charger model and the car's own limits."""
    profile = payload.get("chargingProfile") or payload["csChargingProfiles"]
    schedule = profile["chargingSchedule"]
    schedule = schedule[0] if isinstance(schedule, list) else schedule
    start = datetime.fromisoformat(schedule["startSchedule"].replace("Z", "+00:00"))
    offset = (datetime.now(UTC) - start).total_seconds()
    row = [r for r in schedule["chargingSchedulePeriod"] if r["startPeriod"] <= offset][-1]
    phases = int(row.get("numberPhases", vc.config.phases))
    if schedule["chargingRateUnit"] == "A":
        asked = float(row["limit"]) * phases * vc.config.voltage_v
    else:
        asked = float(row["setpoint"])
    assert vc.car is not None
    model = ChargerModel(vc.config, vc.car.max_charge_w, vc.car.max_discharge_w)
    return vc.car.limit_w(model.delivered_w(asked, phases))


def tx_profiles(vc: VirtualCharger, since: int = 0) -> list[Json]:
    found = []
    for _, action, payload in vc.received[since:]:
        profile = payload.get("chargingProfile") or payload.get("csChargingProfiles") or {}
        if action == "SetChargingProfile" and profile.get("chargingProfilePurpose") == "TxProfile":
            found.append(payload)
    return found


async def following(
    vc: VirtualCharger,
    since: int = 0,
    timeout_s: float = 15.0,
    want: Callable[[float], bool] = lambda _: True,
) -> Json:
    """The newest TxProfile after ``since`` for the running transaction whose power satisfies
    ``want``, once the charger's power follows it."""

    def reached() -> Json | None:
        mine = [p for p in tx_profiles(vc, since) if transaction_of(p) == vc.transaction_id]
        if not mine or not want(expected := expected_w(vc, mine[-1])):
            return None
        return mine[-1] if abs(vc.power_w - expected) < 5.0 else None

    found: Json = await wait_until(reached, timeout_s, "the power following a TxProfile", interval_s=0.1)
    return found


def transaction_of(payload: Json) -> str:
    profile = payload.get("chargingProfile") or payload["csChargingProfiles"]
    return str(profile["transactionId"])


async def test_21_discharges_at_the_peak_reports_soc_and_needs_then_reboots_and_rejects(
    tmp_path: Path,
) -> None:
    site, api_port = site_for(tmp_path, "hil21", OcppVersion.V21, timezone=evening_timezone())
    async with broker() as mqtt, running_daemon(site) as daemon, MeterFeed(mqtt) as meters:
        meters.set(site.topic("meter/grid"), 400.0)
        await meters.publish_now()
        await publish_prices(mqtt, site, PEAK_IMPORT, PEAK_EXPORT)
        car = VirtualCar(capacity_kwh=20.0, soc_percent=80.0, max_charge_w=11000, max_discharge_w=10000)
        async with virtual(site, OcppVersion.V21, car=car) as vc:
            departure = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=10)
            await vc.plug_in(departure=departure)
            await daemon.wait_log(
                "ocpp_charging_needs", departure=departure.strftime("%Y-%m-%dT%H:%M:%S.000Z")
            )
            await following(vc, want=lambda w: w < 0)  # the peak pays: V2G
            soc_before = car.soc_percent
            await asyncio.sleep(2.5)
            assert car.soc_percent < soc_before and vc.energy_export_wh > 0
            state = await wait_until_state(
                api_port, lambda s: s["soc_measured"] and abs(s["soc_percent"] - car.soc_percent) < 1
            )
            assert state["plugged_in"] is True
            assert vc.stats.latencies_s and all(0 <= x < 10 for x in vc.stats.latencies_s)

            # Reboot: a new boot, the old transaction ends, a new one gets its profile again.
            old = vc.transaction_id
            mark = len(vc.received)
            await vc.reboot(offline_s=0.5)
            assert vc.stats.boots == 2 and vc.stats.reconnects == 1 and vc.transaction_id != old
            await following(vc, since=mark)

            # A refused profile: the connection drops and comes back (no boot); the daemon re-sends
            # the profile, the charger rejects it and the daemon reports it.
            vc.faults.reject_probability = 1.0
            mark = len(vc.received)
            await vc.reconnect(offline_s=0.2)
            await daemon.wait_log("profile_not_accepted", reason="Rejected (InjectedFault)", timeout_s=15)
            assert tx_profiles(vc, mark) and vc.stats.rejections >= 1
            assert vc.stats.call_errors == 0
        assert not vc.tasks and not vc.session_tasks
        assert "Traceback" not in daemon.log_text()


async def wait_until_state(api_port: int, check: Any, timeout_s: float = 15.0) -> Json:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        state = await car_state(api_port)
        if check(state):
            return state
        assert asyncio.get_running_loop().time() < deadline, f"/state never matched: {state}"
        await asyncio.sleep(0.3)


@pytest.mark.parametrize("version", [OcppVersion.V201, OcppVersion.V16])
async def test_legacy_versions_charge_in_amperes_raise_the_soc_and_unplug(
    tmp_path: Path, version: OcppVersion
) -> None:
    site, api_port = site_for(tmp_path, f"hil{version.value}", version)
    async with broker() as mqtt, running_daemon(site) as daemon, MeterFeed(mqtt) as meters:
        meters.set(site.topic("meter/grid"), 400.0)
        await meters.publish_now()
        await publish_prices(mqtt, site, CHEAP_NOW_IMPORT, CHEAP_NOW_EXPORT)
        car = VirtualCar(capacity_kwh=10.0, soc_percent=30.0)
        faults = Faults(response_delay_s=0.1)
        async with virtual(site, version, car=car, faults=faults) as vc:
            await vc.plug_in()
            got = await following(vc, want=lambda w: w > 0)  # cheap now: it charges
            rows = (got.get("chargingProfile") or got["csChargingProfiles"])["chargingSchedule"]
            assert (rows[0] if isinstance(rows, list) else rows)["chargingRateUnit"] == "A"
            soc_before = car.soc_percent
            await asyncio.sleep(2.0)
            assert car.soc_percent > soc_before and vc.energy_import_wh > 0
            await wait_until_state(
                api_port, lambda s: s["soc_measured"] and abs(s["soc_percent"] - car.soc_percent) < 1
            )
            assert vc.stats.calls_received["SetChargingProfile"] >= 2  # default + TxProfile
            assert vc.stats.sent > 0 and vc.stats.received > 0

            # An unanswered profile: the daemon times out and retries until the charger answers.
            vc.faults.timeout_probability = 1.0
            mark = len(vc.received)
            await vc.reconnect(offline_s=0.2)
            await daemon.wait_log("ocpp_profile_retry", status="timeout", timeout_s=10)
            vc.faults.timeout_probability = 0.0
            await wait_until(lambda: len(tx_profiles(vc, mark)) >= 2, 10, "the retried profile")
            await following(vc, since=mark)
            assert vc.stats.timeouts >= 1 and len(tx_profiles(vc, mark)) >= 2
            assert vc.stats.call_errors == 0

            await vc.unplug()
            assert vc.power_w == 0.0 and vc.transaction_id is None
            await wait_until_state(api_port, lambda s: s["plugged_in"] is False)
        assert "Traceback" not in daemon.log_text()
