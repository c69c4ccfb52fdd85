"""A plan below the charger's minimum, end to end: dispatcher -> OCPP server -> a charger that follows it.

The site is the example home (a 3-phase wallbox with the realistic 6 A minimum: 4.14 kW). The plan
asks for 2 kW, which no AC charger can run; the real ``Dispatcher`` turns it into a pulse at the
minimum, the real ``OcppServer`` sends it over a real websocket, and a charger built on the ``ocpp``
package (1.6, 2.0.1, 2.1) receives the TxProfile. ``metered_wh`` then plays the charger's hardware:
it runs each period as a real box would (pausing below its minimum) and integrates what it
delivers. Had a steady 2 kW been sent, the box would pause and meter nothing.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import ocpp.v16
import ocpp.v21
import ocpp.v201
import pytest
import yaml

from controller.clock import ManualClock
from controller.config import SiteConfig, parse_config
from controller.dispatch import Dispatcher, DispatchInputs, VehicleLive
from controller.dispatch.dispatcher import ChargerCommand
from controller.ocpp import OcppServer
from tests.conftest import EXAMPLE_ENV
from tests.ocpp_support import (
    PASSWORD,
    PASSWORD_HASH,
    LibraryCharger,
    iso,
    library_charger,
    running_server,
    wait_until,
)
from tests.test_dispatch import ROOT, STEP, T0, plan

CHARGER_ID = "wallbox-garage"
NOW = T0 + STEP  # the start of the plan's second step
PLAN_STEPS = 12  # beyond the profile's 2 h validity
STEP_WH = 2000.0 * STEP.total_seconds() / 3600.0  # 2 kW for 15 min: 500 Wh
MIN_3P_W = 6 * 3 * 230.0  # 4140 W


# ---------------------------------------------------------------- the charger's hardware


@dataclass(frozen=True, slots=True)
class Hardware:
    """What the box behind the OCPP client can run: nothing below ``min_current_a`` per phase."""

    min_current_a: float = 6.0
    phases: int = 3
    voltage_v: float = 230.0


def _tx_profile(payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(profile, its charging schedule) of a SetChargingProfile payload of any version."""
    profile = payload.get("csChargingProfiles") or payload["chargingProfile"]
    schedule = profile["chargingSchedule"]
    return profile, schedule if isinstance(schedule, dict) else schedule[0]


def _period_power_w(row: dict[str, Any], rate_unit: str, hw: Hardware) -> float:
    """The power the box draws (+) or gives (−) in one schedule period; 0 where it must pause."""
    phases = int(row.get("numberPhases", hw.phases))
    if rate_unit == "W":  # 2.1 CentralSetpoint, bounded by limit / dischargeLimit
        setpoint_w = float(row.get("setpoint", row.get("limit", 0.0)))
        setpoint_w = min(setpoint_w, float(row.get("limit", setpoint_w)))
        setpoint_w = max(setpoint_w, float(row.get("dischargeLimit", min(setpoint_w, 0.0))))
        return setpoint_w if abs(setpoint_w) >= hw.min_current_a * phases * hw.voltage_v else 0.0
    limit_a = float(row["limit"])  # A per phase; a charge-only box runs no negative limit
    return limit_a * phases * hw.voltage_v if limit_a >= hw.min_current_a else 0.0


def followed_power(payload: dict[str, Any], hw: Hardware) -> list[tuple[datetime, datetime, float]]:
    """The profile as the box runs it: (from, until, power W) per period, until ``validTo``."""
    profile, schedule = _tx_profile(payload)
    start = datetime.fromisoformat(schedule["startSchedule"])
    end = datetime.fromisoformat(profile["validTo"])
    if "duration" in schedule:
        end = min(end, start + timedelta(seconds=schedule["duration"]))
    rows = schedule["chargingSchedulePeriod"]
    starts = [start + timedelta(seconds=row["startPeriod"]) for row in rows] + [end]
    return [
        (a, min(b, end), _period_power_w(row, schedule["chargingRateUnit"], hw))
        for row, (a, b) in zip(rows, itertools.pairwise(starts), strict=True)
        if a < end
    ]


def metered_wh(payload: dict[str, Any], start: datetime, end: datetime, hw: Hardware) -> float:
    """The energy the box meters over [start, end) following the profile (+ charged, − discharged)."""
    total = 0.0
    for a, b, power_w in followed_power(payload, hw):
        lo, hi = max(a, start), min(b, end)
        if hi > lo:
            total += power_w * (hi - lo).total_seconds() / 3600.0
    return total


# ---------------------------------------------------------------- the server side


def home(version: str) -> SiteConfig:
    """The example home, its wallbox allowing only ``version`` (6 A minimum, 3 phases by default)."""
    data = copy.deepcopy(yaml.safe_load((ROOT / "configs" / "home.example.yaml").read_text()))
    data["chargers"][0].update(ocpp_versions=[version], auth={"password_hash": PASSWORD_HASH})
    data["ocpp"].update(host="127.0.0.1", call_timeout_s=2)  # running_server listens on a free port
    config = parse_config(data, env=EXAMPLE_ENV)
    charger = config.chargers[0]
    assert (charger.id, charger.min_current_a, charger.phases, charger.voltage_v) == (CHARGER_ID, 6, 3, 230)
    return config


def command_now(config: SiteConfig, power_w: float, *, exports: bool, can_discharge: bool) -> ChargerCommand:
    """The real dispatcher's command at ``NOW`` for a plan of ``power_w`` in every step."""
    p = plan([power_w] * PLAN_STEPS, export_w=[20000.0 if exports else 0.0] * PLAN_STEPS)
    live = VehicleLive("family-ev", True, CHARGER_ID, 60.0, 0.0, charger_can_discharge=can_discharge)
    commands = Dispatcher(config).dispatch(DispatchInputs(NOW, p, (live,), 0.0, 17300.0, 10000.0))
    assert len(commands) == 1 and commands[0].send
    return commands[0]


async def start_transaction(charger: LibraryCharger, server: OcppServer) -> str:
    """Boot, wait for the server's setup (default profile), start a transaction; its id."""
    assert (await charger.boot()).status == "Accepted"
    view = server.charger(CHARGER_ID)
    assert view is not None
    await wait_until(lambda: view.default_profile is not None, what="the default profile")
    if charger.version == "1.6":
        started = await charger.call(
            ocpp.v16.call.StartTransaction(connector_id=1, id_tag="TAG", meter_start=0, timestamp=iso(NOW))
        )
        transaction_id = str(started.transaction_id)
    else:
        library = ocpp.v21 if charger.version == "2.1" else ocpp.v201
        transaction_id = "tx-duty"
        await charger.call(
            library.call.TransactionEvent(
                event_type="Started",
                seq_no=0,
                timestamp=iso(NOW),
                trigger_reason="CablePluggedIn",
                transaction_info={"transaction_id": transaction_id, "charging_state": "Charging"},
                evse={"id": 1, "connector_id": 1},
                id_token={"id_token": "RFID-1", "type": "ISO14443"},
            )
        )
    await wait_until(lambda: view.transaction_id == transaction_id, what="the transaction")
    return transaction_id


async def received_tx_profile(version: str, power_w: float, *, exports: bool = False) -> dict[str, Any]:
    """The TxProfile a ``version`` charger receives for a plan of ``power_w`` in every step."""
    config = home(version)
    legacy = version != "2.1"
    command = command_now(config, power_w, exports=exports, can_discharge=not legacy)
    async with (
        running_server(config, clock=ManualClock(NOW)) as (server, _),
        library_charger(server, CHARGER_ID, version, password=PASSWORD) as charger,
    ):
        transaction_id = await start_transaction(charger, server)
        record = await server.apply_schedule(command.schedule)
        assert record.accepted, record
        sent = charger.tap.profiles("TxProfile")
        assert len(sent) == 1
        profile, _ = _tx_profile(sent[0])
        assert str(profile["transactionId"]) == transaction_id
        return sent[0]


# ---------------------------------------------------------------- the checks


def _step_values(payload: dict[str, Any], step_start: datetime) -> list[float]:
    """The values (2.1 setpoint W, else limit A) in force during the step from ``step_start``:
    the one at its start, then every change inside it."""
    _, schedule = _tx_profile(payload)
    key = "setpoint" if schedule["chargingRateUnit"] == "W" else "limit"
    origin = datetime.fromisoformat(schedule["startSchedule"])
    lo = (step_start - origin).total_seconds()
    hi = lo + STEP.total_seconds()
    rows = schedule["chargingSchedulePeriod"]
    at_start = [row for row in rows if row["startPeriod"] <= lo][-1]
    inside = [row for row in rows if lo < row["startPeriod"] < hi]
    return [float(row[key]) for row in [at_start, *inside]]


def _whole_steps(payload: dict[str, Any]) -> list[datetime]:
    """The starts of the plan steps the profile covers whole, from ``NOW``."""
    profile, _ = _tx_profile(payload)
    valid_to = datetime.fromisoformat(profile["validTo"])
    steps = itertools.takewhile(lambda s: s + STEP <= valid_to, (NOW + k * STEP for k in itertools.count()))
    return [s for s in steps if s < T0 + PLAN_STEPS * STEP]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("version", ["1.6", "2.0.1", "2.1"])
async def test_a_plan_below_the_minimum_arrives_as_a_pulse_and_meters_the_planned_energy(
    version: str,
) -> None:
    payload = await received_tx_profile(version, 2000.0)
    _, schedule = _tx_profile(payload)
    rows = schedule["chargingSchedulePeriod"]
    if version == "2.1":
        assert schedule["chargingRateUnit"] == "W"
        minimum, values = MIN_3P_W, [float(row["setpoint"]) for row in rows]
    else:
        assert schedule["chargingRateUnit"] == "A"
        assert {row.get("numberPhases", 3) for row in rows} == {3}
        minimum, values = 6.0, [float(row["limit"]) for row in rows]
    # Nothing the box would have to pause at: the minimum or nothing, never a value in between.
    assert all(v == 0 or abs(v) >= minimum for v in values), values
    # The step from now: the minimum from its start, then 0 before it ends.
    assert _step_values(payload, NOW) == [minimum, 0.0]
    # What the box delivers following it is the plan's energy, in this step and every later one.
    hw = Hardware()
    assert metered_wh(payload, NOW, NOW + STEP, hw) == pytest.approx(STEP_WH, abs=10.0)
    steps = _whole_steps(payload)
    assert len(steps) == 8  # 2 h of profile
    for step_start in steps:
        assert _step_values(payload, step_start) == [minimum, 0.0]
        assert metered_wh(payload, step_start, step_start + STEP, hw) == pytest.approx(STEP_WH, abs=10.0)


@pytest.mark.timeout(20)
async def test_a_v2g_discharge_below_the_minimum_arrives_as_a_pulse_and_meters_the_planned_export() -> None:
    payload = await received_tx_profile("2.1", -2000.0, exports=True)
    _, schedule = _tx_profile(payload)
    setpoints = [float(row["setpoint"]) for row in schedule["chargingSchedulePeriod"]]
    assert all(s == 0 or abs(s) >= MIN_3P_W for s in setpoints), setpoints
    assert _step_values(payload, NOW) == [-MIN_3P_W, 0.0]
    assert metered_wh(payload, NOW, NOW + STEP, Hardware()) == pytest.approx(-STEP_WH, abs=10.0)


def _profile_16(*rows: tuple[int, float]) -> dict[str, Any]:
    """A 1.6 TxProfile from ``NOW`` for 1 h: (startPeriod s, limit A) on 3 phases."""
    return {
        "csChargingProfiles": {
            "validTo": iso(NOW + timedelta(hours=1)),
            "chargingSchedule": {
                "startSchedule": iso(NOW),
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [
                    {"startPeriod": at, "limit": limit, "numberPhases": 3} for at, limit in rows
                ],
            },
        }
    }


def test_the_follower_pauses_below_the_minimum() -> None:
    """The hardware model itself: a steady 2 kW (what no AC box can run) meters nothing."""
    steady_21 = {
        "chargingProfile": {
            "validTo": iso(NOW + timedelta(hours=1)),
            "chargingSchedule": [
                {
                    "startSchedule": iso(NOW),
                    "chargingRateUnit": "W",
                    "chargingSchedulePeriod": [
                        {"startPeriod": 0, "setpoint": 2000, "limit": 11000, "dischargeLimit": 0}
                    ],
                }
            ],
        }
    }
    hw = Hardware()
    assert metered_wh(steady_21, NOW, NOW + STEP, hw) == 0.0
    assert metered_wh(_profile_16((0, 2.8)), NOW, NOW + STEP, hw) == 0.0
    pulse = _profile_16((0, 6.0), (450, 0.0))
    assert metered_wh(pulse, NOW, NOW + STEP, hw) == pytest.approx(MIN_3P_W / 8)
    # validTo bounds it: a pulse left running past the profile's end meters nothing after it.
    assert metered_wh(_profile_16((0, 6.0)), NOW, NOW + timedelta(hours=2), hw) == pytest.approx(MIN_3P_W)
