"""Below a charger's minimum: pulses anchored to the step, exact energy, never a current in between."""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.config import OcppVersion, SiteConfig, parse_config
from controller.dispatch import Dispatcher, VehicleMode
from controller.dispatch.duty_cycle import pulse_train, step_pulse
from controller.domain import ChargerSchedule
from controller.ocpp.profiles import ChargerLimits, tx_profile_payload
from tests.conftest import EXAMPLE_ENV
from tests.test_dispatch import ROOT, STEP, T0, inputs, one, plan

MIN_3P_W = 6 * 3 * 230.0  # 4140 W
MIN_1P_W = 6 * 230.0  # 1380 W


def real_site(**charger: Any) -> SiteConfig:
    """The example site with its realistic 6 A minimum."""
    data = copy.deepcopy(yaml.safe_load((ROOT / "configs" / "home.example.yaml").read_text()))
    data["chargers"][0].update(charger)
    return parse_config(data, env=EXAMPLE_ENV)


def energy_wh(schedule: ChargerSchedule, start: datetime, end: datetime) -> float:
    """What the charger delivers over [start, end) following ``schedule``."""
    bounds = [schedule.start + p.start_offset for p in schedule.periods] + [schedule.valid_until]
    total = 0.0
    for period, (a, b) in zip(schedule.periods, itertools.pairwise(bounds), strict=False):
        lo, hi = max(a, start), min(b, end)
        if hi > lo:
            total += period.setpoint_w * (hi - lo).total_seconds() / 3600.0
    return total


def test_a_step_below_the_minimum_is_one_pulse_at_the_minimum_from_the_step_start() -> None:
    d = Dispatcher(real_site())
    cmd = one(d, inputs(plan([2070.0] * 8), grid_w=0.0, now=T0))
    first = cmd.schedule.periods[:2]
    assert (first[0].start_offset, first[0].setpoint_w) == (timedelta(0), MIN_3P_W)
    assert (first[1].start_offset, first[1].setpoint_w) == (timedelta(seconds=450), 0.0)
    assert cmd.setpoint_w == 2070.0 and any("pulsed at 4140 W" in r for r in cmd.reasons)
    assert energy_wh(cmd.schedule, T0, T0 + STEP) == pytest.approx(2070.0 / 4, abs=10.0)


def test_a_resend_inside_the_step_continues_the_same_pulse() -> None:
    d = Dispatcher(real_site())
    one(d, inputs(plan([2070.0] * 8), grid_w=0.0, now=T0))
    later = T0 + timedelta(minutes=3)
    again = one(d, inputs(plan([2070.0] * 8), grid_w=0.0, now=later))
    assert not again.send  # nothing changed: the schedule already sent holds the pulse
    assert again.schedule.start + again.schedule.periods[1].start_offset == T0 + timedelta(seconds=450)
    past = one(
        d,
        inputs(
            plan([2070.0] * 8, created=T0 + timedelta(minutes=9)), grid_w=0.0, now=T0 + timedelta(minutes=9)
        ),
    )
    assert past.schedule.periods[0].setpoint_w == 0.0  # the step's pulse is over: no second one
    assert energy_wh(past.schedule, past.schedule.start, T0 + STEP) == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-9000.0, 11000.0, allow_nan=False), min_size=8, max_size=8))
def test_delivered_energy_equals_planned_energy_per_step_within_10_wh(power_w: list[float]) -> None:
    d = Dispatcher(real_site())
    p = plan(power_w, export_w=[20000.0] * 8)  # the plan exports: discharge is unattended V2G
    cmd = one(d, inputs(p, grid_w=0.0, now=T0, soc=50.0))
    schedule = cmd.schedule
    planned_total = delivered_total = 0.0
    for k, planned in enumerate(power_w):
        start = T0 + k * STEP
        if start + STEP > schedule.valid_until:
            break
        want = max(-10000.0, min(11000.0, planned))
        want = 0.0 if abs(want) < 1.0 else want
        got = energy_wh(schedule, start, start + STEP)
        assert got == pytest.approx(want / 4, abs=10.0)
        planned_total += want / 4
        delivered_total += got
    assert delivered_total == pytest.approx(planned_total, abs=10.0)  # the rounding is carried


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-9000.0, 11000.0, allow_nan=False), min_size=8, max_size=8))
def test_profiles_never_ask_for_a_current_between_zero_and_the_minimum(power_w: list[float]) -> None:
    config = real_site(negative_limit_means_discharge=True)
    d = Dispatcher(config)
    cmd = one(d, inputs(plan(power_w, export_w=[20000.0] * 8), grid_w=0.0, now=T0))
    limits = ChargerLimits.from_config(config.chargers[0], 11000.0)
    for version in OcppVersion:
        payload = tx_profile_payload(
            version, cmd.schedule, limits, transaction_id="7", max_validity=timedelta(hours=2)
        )
        profile = payload.get("csChargingProfiles") or payload["chargingProfile"]
        schedule = profile["chargingSchedule"]
        rows = (schedule[0] if isinstance(schedule, list) else schedule)["chargingSchedulePeriod"]
        for row in rows:
            if version is OcppVersion.V21:
                assert row["setpoint"] == 0 or abs(row["setpoint"]) >= MIN_3P_W - 1
            else:
                assert row["limit"] == 0 or abs(row["limit"]) >= 6.0


def test_a_car_without_v2g_is_never_pulsed_into_export() -> None:
    d = Dispatcher(real_site())
    config = d.config
    vehicle = config.vehicles[0].model_copy(
        update={"permissions": config.vehicles[0].permissions.model_copy(update={"v2g": False})}
    )
    d = Dispatcher(config.model_copy(update={"vehicles": [vehicle]}))
    # The home needs 1 kW: covering it would take a 4.14 kW pulse, 3.14 kW of it exported.
    cmd = one(d, inputs(plan([-1000.0] * 8), grid_w=1000.0, car_w=0.0, now=T0))
    assert cmd.setpoint_w == 0.0
    assert all(p.setpoint_w >= 0 for p in cmd.schedule.periods)
    assert any("discharge minimum: idle" in r for r in cmd.reasons)
    # A load above the minimum is covered continuously.
    cmd = one(d, inputs(plan([-5000.0] * 8), grid_w=5000.0, car_w=0.0, now=T0 + timedelta(minutes=1)))
    assert cmd.setpoint_w == pytest.approx(-5000.0)
    assert cmd.schedule.periods[0].setpoint_w == pytest.approx(-5000.0)


def test_a_pulse_that_would_break_the_import_limit_is_not_sent() -> None:
    d = Dispatcher(real_site())
    # 3 kW of headroom under the import cap: the average fits, a 4.14 kW pulse would not.
    cmd = one(d, inputs(plan([5000.0] * 8), grid_w=14300.0, now=T0, import_w=17300.0))
    assert cmd.setpoint_w == 0.0
    assert any("would break a limit" in r for r in cmd.reasons)


def test_a_switching_charger_runs_low_powers_on_one_phase_and_holds_between_switches() -> None:
    d = Dispatcher(real_site(phase_switching=True, phase_switch_hold_s=600))
    cmd = one(d, inputs(plan([2000.0] * 8), grid_w=0.0, now=T0))
    assert cmd.schedule.phases == 1 and cmd.schedule.periods[0].setpoint_w == 2000.0  # continuous
    # 8 kW wanted 5 minutes later: the hold keeps one phase (capped at a third of 11 kW).
    p = plan([8000.0] * 8, created=T0 + timedelta(minutes=5))
    cmd = one(d, inputs(p, grid_w=0.0, now=T0 + timedelta(minutes=5)))
    assert cmd.schedule.phases == 1 and cmd.setpoint_w == pytest.approx(11000.0 / 3, abs=0.1)
    assert any("held" in r for r in cmd.reasons)
    cmd = one(d, inputs(p, grid_w=0.0, now=T0 + timedelta(minutes=10)))
    assert cmd.schedule.phases == 3 and cmd.setpoint_w == 8000.0
    # A small setpoint below 1.38 kW on one phase is pulsed at the 1-phase minimum.
    assert step_pulse(690.0, MIN_1P_W, 900).on_s == 450


def test_pulse_train_carries_rounding_and_restarts_it_on_a_change_of_direction() -> None:
    pulses = pulse_train([100.0] * 10, MIN_3P_W, 900)
    exact_s = 100.0 / MIN_3P_W * 900 * 10
    assert abs(sum(p.on_s for p in pulses) - exact_s) <= 1.0
    mixed = pulse_train([100.0, -100.0], MIN_3P_W, 900, discharge_min_w=2000.0)
    assert mixed[1].power_w == -2000.0 and mixed[1].on_s == 45


def test_charging_is_capped_by_the_energy_left_to_the_ceiling_within_the_step() -> None:
    d = Dispatcher(real_site(min_current_a=0))
    vehicle = d.config.vehicles[0]  # 77 kWh, max 90 %, charge efficiency 0.92
    cmd = one(d, inputs(plan([11000.0] * 8), grid_w=0.0, soc=89.0, now=T0))
    room_kwh = 77 * (90 - 0.5 - 89.0) / 100
    assert cmd.setpoint_w == pytest.approx(room_kwh * 1000 / 0.92 / 0.25, abs=1.0)
    assert vehicle.max_soc_percent == 90
    # Half the step gone: the same room over half the time.
    cmd = one(d, inputs(plan([11000.0] * 8), grid_w=0.0, soc=89.0, now=T0 + timedelta(seconds=450)))
    assert cmd.setpoint_w == pytest.approx(2 * room_kwh * 1000 / 0.92 / 0.25, abs=1.0)
    # PV surplus following cannot carry it over either.
    surplus = plan([11000.0] * 8, import_w=[0.0] * 8)
    cmd = one(d, inputs(surplus, grid_w=-9000.0, soc=89.0, now=T0 + timedelta(minutes=1)))
    assert cmd.setpoint_w <= room_kwh * 1000 / 0.92 / (14 / 60) + 1.0


def test_charge_now_stops_at_the_ceiling_unless_the_driver_asked_for_more() -> None:
    d = Dispatcher(real_site(min_current_a=0))
    at_ceiling = inputs(plan([0.0] * 8), grid_w=0.0, soc=90.0, now=T0, mode=VehicleMode.CHARGE_NOW)
    assert one(d, at_ceiling).setpoint_w == 0.0
    live = at_ceiling.vehicles[0]
    asked = replace(at_ceiling, vehicles=(replace(live, ceiling_soc_percent=100.0),))
    assert one(d, asked).setpoint_w == 11000.0


def test_a_surplus_below_the_minimum_is_not_chased_with_pulses() -> None:
    d = Dispatcher(real_site())
    # The plan exports a 1 kW PV surplus and charges nothing; 2.5 kW appear (1.5 kW more than
    # forecast). A 4.14 kW pulse would draw 1.64 kW from the grid while it runs: not taken.
    exporting = plan([0.0] * 8, export_w=[1000.0] * 8, import_w=[0.0] * 8)
    cmd = one(d, inputs(exporting, grid_w=-2500.0, car_w=0.0, now=T0))
    assert cmd.setpoint_w == 0.0
    assert any("not pulsed" in r for r in cmd.reasons)
    # A surplus that covers the minimum is taken continuously.
    cmd = one(d, inputs(exporting, grid_w=-6200.0, car_w=0.0, now=T0 + timedelta(minutes=1)))
    assert cmd.setpoint_w == pytest.approx(5200.0)
