"""controller.site: the one site state the daemon keeps (pure; no I/O, explicit times)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from controller.commands import SetDeparture, SetMode, SetWeeklyDeparture, V2LCommand
from controller.config import OcppVersion, SiteConfig, parse_config
from controller.domain import Departure, MeterReading, MeterRole, Plan, VehicleMode, utc_text
from controller.site import (
    MEASURED_POWER_MAX_SAMPLE_INTERVALS,
    PLUGGED_STATUSES,
    UNPLUGGED_STATUSES,
    EvReportedLimits,
    Site,
)
from controller.site_inputs import NO_GRID_METER_REASON, SiteInputs
from controller.site_snapshot import soc_ceiling_percent
from controller.snapshot import SessionLimits
from controller.v2l_guard import V2L_SOC_MAX_AGE
from tests.conftest import EXAMPLE_ENV, stored

ROOT = Path(__file__).resolve().parent.parent

T0 = datetime(2026, 11, 24, 17, 5, tzinfo=UTC)  # a Tuesday
STEPS = 8


def config(**vehicle: Any) -> SiteConfig:
    return parse_config(
        {
            "site": {"timezone": "Europe/Amsterdam", "grid": {"import_limit_kw": 17, "export_limit_kw": 10}},
            "chargers": [
                {"id": "wb1", "bidirectional": True, "max_discharge_kw": 10},
                {"id": "wb2"},
                {"id": "spare"},
            ],
            "vehicles": [
                {
                    "id": "car",
                    "usable_capacity_kwh": 60,
                    "max_discharge_kw": 10,
                    "reserve": {"percent": 20},
                    "max_soc_percent": 90,
                    "default_target_soc_percent": 80,
                    "typical_trip_km": 50,
                    "consumption_kwh_per_100km": 18,
                    "permissions": {"v2g": True, "v2h": True, "v2l": True},
                    "home_charger": "wb1",
                    "departures": {"wednesday": {"time": "07:30", "target_soc_percent": 70}},
                    **vehicle,
                },
                {"id": "van", "usable_capacity_kwh": 75, "home_charger": "wb2"},
                {"id": "guest", "usable_capacity_kwh": 40, "home_charger": "wb2"},
            ],
            "meters": [
                {"id": "grid", "role": "grid", "topic": "m/grid", "stale_after_s": 30},
                {"id": "home", "role": "home", "topic": "m/home", "stale_after_s": 30},
                {"id": "pv", "role": "pv", "topic": "m/pv", "stale_after_s": 30},
                {
                    "id": "car-soc",
                    "role": "vehicle_soc",
                    "topic": "m/soc",
                    "vehicle": "car",
                    "stale_after_s": 600,
                },
            ],
            "tariff": {"import": {"static_price_per_kwh": 0.3}, "export": {"static_price_per_kwh": 0.05}},
        },
        env={},
    )


def fresh(inputs: SiteInputs, at: datetime, grid_w: float = 500.0, home_w: float = 400.0) -> None:
    inputs.update_meter(MeterReading("grid", MeterRole.GRID, grid_w, at))
    inputs.update_meter(MeterReading("home", MeterRole.HOME, home_w, at))
    inputs.update_meter(MeterReading("pv", MeterRole.PV, 0.0, at))


def make(**vehicle: Any) -> Site:
    cfg = config(**vehicle)
    return Site(cfg, SiteInputs(cfg))


def zeros() -> Any:
    return np.zeros(STEPS)


def by_id(snapshot: Any, vehicle_id: str) -> Any:
    found = snapshot.vehicle(vehicle_id)
    assert found is not None
    return found


# ---------------------------------------------------------------- chargers and plugs


def test_each_charger_has_the_first_car_that_names_it() -> None:
    site = make()
    assert site.charger_vehicle == {"wb1": "car", "wb2": "van"}
    assert site.vehicle_at("wb1") is site.vehicles["car"]
    assert site.vehicle_at("spare") is None and site.vehicle_at("nope") is None
    assert site.vehicles["guest"].charger_id == "wb2"  # named, but the van is the one there


def test_plug_in_and_unplug_report_only_changes() -> None:
    site = make()
    car = site.vehicles["car"]
    assert site.set_plugged("wb1", True, T0) is car and car.plugged_in
    assert site.set_plugged("wb1", True, T0) is None  # already plugged
    car.measured_power_w = 3000.0
    car.charger_departure = Departure(T0 + timedelta(hours=3), 80)
    assert site.set_plugged("wb1", False, T0) is car
    assert not car.plugged_in and car.measured_power_w is None and car.charger_departure is None
    assert site.set_plugged("spare", True, T0) is None  # no car there


@pytest.mark.parametrize("status", sorted(PLUGGED_STATUSES))
def test_connector_statuses_that_mean_plugged(status: str) -> None:
    site = make()
    assert site.on_connector_status("wb1", status, T0) is site.vehicles["car"]
    assert site.vehicles["car"].plugged_in


@pytest.mark.parametrize("status", sorted(UNPLUGGED_STATUSES))
def test_connector_statuses_that_mean_unplugged(status: str) -> None:
    site = make()
    site.set_plugged("wb1", True, T0)
    assert site.on_connector_status("wb1", status, T0) is site.vehicles["car"]
    assert not site.vehicles["car"].plugged_in


def test_unknown_connector_status_changes_nothing() -> None:
    site = make()
    site.set_plugged("wb1", True, T0)
    assert site.on_connector_status("wb1", "Reserved", T0) is None
    assert site.vehicles["car"].plugged_in


def test_arrival_without_a_reading_estimates_from_the_trip_and_never_counts_as_measured() -> None:
    site = make()
    car = site.vehicles["car"]
    site.on_vehicle_soc("car", 60.0, T0)
    assert site.measured_soc(car) == 60.0
    site.set_plugged("wb1", True, T0 + timedelta(hours=2))
    # 50 km x 18 kWh/100 km = 9 kWh of 60 kWh: 15 % used.
    estimate = car.tracker.estimate()
    assert estimate is not None and estimate.soc_percent == pytest.approx(45.0)
    assert site.measured_soc(car) is None


# ---------------------------------------------------------------- samples and needs


def test_charger_samples_set_soc_and_power_and_count_energy() -> None:
    site = make()
    car = site.vehicles["car"]
    site.set_plugged("wb1", True, T0)
    assert site.on_charger_sample("wb1", T0, 6000.0, 40.0) is car
    assert car.measured_power_w == 6000.0 and site.measured_soc(car) == 40.0
    site.on_charger_sample("wb1", T0 + timedelta(minutes=10), 6000.0, None)
    # 1 kWh in 10 min at 6 kW, x 0.92 into a 60 kWh battery: +1.53 %.
    assert site.measured_soc(car) == pytest.approx(40.0 + 100 * 0.92 / 60, abs=0.01)
    assert site.on_charger_sample("spare", T0, 1000.0, 50.0) is None


def test_a_charger_with_only_an_import_register_counts_soc_and_gives_the_power() -> None:
    site = make()
    car = site.vehicles["car"]
    site.set_plugged("wb1", True, T0)
    site.on_vehicle_soc("car", 40.0, T0)
    site.on_charger_sample("wb1", T0, None, None, energy_import_wh=12_000.0)
    assert car.measured_power_w is None
    site.on_charger_sample("wb1", T0 + timedelta(minutes=10), None, None, energy_import_wh=13_000.0)
    assert site.measured_soc(car) == pytest.approx(40.0 + 100 * 0.92 / 60)  # 1 kWh x 0.92 of 60 kWh
    assert car.measured_power_w == pytest.approx(6000.0)
    # A sample with only a SoC (NotifyEVChargingNeeds) leaves the power alone; unplug forgets it.
    site.on_charger_sample("wb1", T0 + timedelta(minutes=11), None, 42.0)
    assert car.measured_power_w == pytest.approx(6000.0)
    site.set_plugged("wb1", False, T0 + timedelta(minutes=12))
    assert car.measured_power_w is None


def test_charging_needs_give_a_departure_with_a_bounded_target() -> None:
    site = make()
    car = site.vehicles["car"]
    leave = T0 + timedelta(hours=5)
    assert site.on_charging_needs("wb1", None, 80.0) is None  # no departure time: nothing to plan
    assert site.on_charging_needs("spare", leave, 80.0) is None
    assert site.on_charging_needs("wb1", leave, None) is car
    assert car.charger_departure == Departure(leave, 80.0)  # the car's default target
    site.on_charging_needs("wb1", leave, 100.0)
    assert car.charger_departure == Departure(leave, 90.0)  # max_soc_percent
    site.on_charging_needs("wb1", leave, 5.0)
    assert car.charger_departure == Departure(leave, 20.0)  # never below the reserve


def test_ev_limits_count_for_the_session_in_the_snapshot_and_the_dispatch_inputs() -> None:
    site = make()
    fresh(site.inputs, T0)
    car = site.vehicles["car"]
    site.set_plugged("wb1", True, T0)
    site.on_charger_sample("wb1", T0, 0.0, 60.0)
    reported = EvReportedLimits(
        max_charge_power_w=7000.0,
        max_discharge_power_w=3000.0,
        min_v2x_energy_wh=-12_000.0,  # 12 kWh may be discharged: floor 60 % - 20 % of 60 kWh
        max_v2x_energy_wh=9_000.0,  # 9 kWh up to its ceiling: 75 %
    )
    assert site.on_charging_needs("wb1", None, None, reported) is car  # limits alone re-plan
    expected = SessionLimits(
        max_charge_power_w=7000.0, max_discharge_power_w=3000.0, min_soc_percent=40.0, max_soc_percent=75.0
    )
    assert car.session_limits == expected
    assert car.charger_departure is None
    assert by_id(site.snapshot(T0, zeros(), zeros()), "car").session_limits == expected
    live = next(v for v in site.dispatch_inputs(T0, None).vehicles if v.vehicle_id == "car")
    assert (live.ev_max_charge_w, live.ev_max_discharge_w, live.ev_min_soc_percent) == (7000.0, 3000.0, 40.0)
    # The window stays where it was placed as the SoC moves; the same message again changes nothing.
    site.on_charger_sample("wb1", T0 + timedelta(minutes=5), None, 58.0)
    assert site.on_charging_needs("wb1", None, None, reported) is not None  # re-placed on 58 %
    assert car.session_limits is not None and car.session_limits.min_soc_percent == 38.0
    assert site.on_charging_needs("wb1", None, None, reported) is None
    # A new NotifyEVChargingNeeds replaces the limits; one without any clears them.
    assert site.on_charging_needs("wb1", None, None, EvReportedLimits()) is car
    assert car.session_limits is None
    assert by_id(site.snapshot(T0, zeros(), zeros()), "car").session_limits is None
    site.on_charging_needs("wb1", None, None, reported)
    site.set_plugged("wb1", False, T0 + timedelta(hours=1))  # unplug ends the session's limits
    assert car.session_limits is None
    live = next(v for v in site.dispatch_inputs(T0, None).vehicles if v.vehicle_id == "car")
    assert (live.ev_max_charge_w, live.ev_max_discharge_w, live.ev_min_soc_percent) == (None, None, None)


def test_ev_limits_without_a_soc_or_with_nonsense_keep_only_what_makes_sense() -> None:
    site = make()
    car = site.vehicles["car"]
    car.plugged_in = True  # plugged in before any SoC is known
    window = EvReportedLimits(
        max_discharge_power_w=2500.0, min_v2x_energy_wh=-5000.0, max_v2x_energy_wh=5000.0
    )
    site.on_charging_needs("wb1", None, None, window)
    # No SoC: the window cannot be placed; the power cap still counts.
    assert car.session_limits == SessionLimits(max_discharge_power_w=2500.0)
    site.on_charger_sample("wb1", T0, None, 50.0)
    nonsense = EvReportedLimits(
        max_charge_power_w=float("nan"),
        max_discharge_power_w=-10.0,
        min_v2x_energy_wh=-6000.0,  # floor 40 %
        max_v2x_energy_wh=-9000.0,  # ceiling 35 %, below the floor: dropped, the floor stays
    )
    site.on_charging_needs("wb1", None, None, nonsense)
    assert car.session_limits == SessionLimits(min_soc_percent=40.0)
    huge = EvReportedLimits(
        max_charge_power_w=1e300, min_v2x_energy_wh=-1e300, max_v2x_energy_wh=float("inf")
    )
    site.on_charging_needs("wb1", None, None, huge)
    assert car.session_limits == SessionLimits(max_charge_power_w=10_000_000.0, min_soc_percent=0.0)
    assert site.on_charging_needs("spare", None, None, window) is None  # no car at that charger


def test_vehicle_soc_from_mqtt() -> None:
    site = make()
    assert site.on_vehicle_soc("car", 55.0, T0) is site.vehicles["car"]
    assert site.measured_soc(site.vehicles["car"]) == 55.0
    assert site.on_vehicle_soc("unknown", 55.0, T0) is None


def test_a_retained_soc_is_a_starting_estimate_without_discharge_or_v2l() -> None:
    """A retained MQTT SoC has an unknown age: the plan starts from it, but nothing discharges on it."""
    site = make()
    fresh(site.inputs, T0)
    car = site.vehicles["car"]
    site.set_plugged("wb1", True, T0)
    site.on_vehicle_soc("car", 70.0, T0, measured=False)
    planned = by_id(site.snapshot(T0, zeros(), zeros()), "car")
    assert planned.soc_percent == 70.0 and planned.mode is VehicleMode.NO_DISCHARGE
    assert site.measured_soc(car) is None
    assert (
        next(v for v in site.dispatch_inputs(T0, None).vehicles if v.vehicle_id == "car").soc_percent is None
    )
    site.apply_command(V2LCommand("car", "start", 1500.0), T0)
    assert site.v2l_soc(car, T0) is None and site.v2l_cutoffs(T0) == [car]  # no V2L guard on it
    site.on_vehicle_soc("car", 68.0, T0 + timedelta(seconds=30))  # a live reading
    assert site.measured_soc(car) == 68.0
    site.on_vehicle_soc("car", 90.0, T0 + timedelta(seconds=40), measured=False)  # never replaces it
    assert site.measured_soc(car) == 68.0
    fresh(site.inputs, T0 + timedelta(seconds=40))
    assert by_id(site.snapshot(T0 + timedelta(seconds=40), zeros(), zeros()), "car").mode is VehicleMode.AUTO


# ---------------------------------------------------------------- commands and departures


def test_commands_set_overrides_and_the_next_departure_follows_them() -> None:
    site = make()
    car = site.vehicles["car"]
    weekly = site.departure(car, T0)
    assert weekly is not None  # Wednesday 07:30 Amsterdam = 06:30 UTC
    assert weekly == Departure(datetime(2026, 11, 25, 6, 30, tzinfo=UTC), 70.0)

    one_off = Departure(T0 + timedelta(hours=2), 85.0)
    assert site.apply_command(SetDeparture("car", one_off), T0) is car
    assert site.departure(car, T0) == one_off
    site.apply_command(SetDeparture("car", None), T0)
    assert site.departure(car, T0) == weekly

    from_charger = Departure(T0 + timedelta(hours=1), 60.0)
    car.charger_departure = from_charger
    assert site.departure(car, T0) == from_charger  # the earliest wins
    car.charger_departure = None

    site.apply_command(SetWeeklyDeparture("car", "tuesday", time(19, 0), 75.0), T0)
    assert site.departure(car, T0) == Departure(datetime(2026, 11, 24, 18, 0, tzinfo=UTC), 75.0)
    site.apply_command(SetWeeklyDeparture("car", "wednesday", None, None), T0)
    site.apply_command(SetWeeklyDeparture("car", "tuesday", None, None), T0)
    assert site.departure(car, T0) is None  # every day removed
    assert car.effective_config().departures == {}

    site.apply_command(SetMode("car", VehicleMode.CHARGE_NOW), T0)
    assert car.mode is VehicleMode.CHARGE_NOW


def test_a_weekly_departure_without_a_return_keeps_the_days_return() -> None:
    weekly = {"wednesday": {"time": "07:30", "target_soc_percent": 70, "return_time": "17:30"}}
    site = make(departures=weekly)
    car = site.vehicles["car"]
    # The configured return stays when the command changes only time and target...
    site.apply_command(SetWeeklyDeparture("car", "wednesday", time(8, 0), 80.0), T0)
    assert car.effective_config().departures["wednesday"].return_time == time(17, 30)
    # ...so does an override's, and an explicit one replaces it.
    site.apply_command(SetWeeklyDeparture("car", "wednesday", time(8, 0), 80.0, return_time=time(16, 0)), T0)
    site.apply_command(SetWeeklyDeparture("car", "wednesday", time(7, 0), 80.0), T0)
    assert car.effective_config().departures["wednesday"].return_time == time(16, 0)
    # A new time at or after the return drops it.
    site.apply_command(SetWeeklyDeparture("car", "wednesday", time(16, 0), 80.0), T0)
    assert car.effective_config().departures["wednesday"].return_time is None
    # Clearing the day removes it with its return: set again, there is none.
    site.apply_command(SetWeeklyDeparture("car", "wednesday", time(8, 0), 80.0, return_time=time(17, 0)), T0)
    site.apply_command(SetWeeklyDeparture("car", "wednesday", None, None), T0)
    site.apply_command(SetWeeklyDeparture("car", "wednesday", time(8, 0), 80.0), T0)
    assert car.effective_config().departures["wednesday"].return_time is None


def test_v2l_start_and_stop() -> None:
    site = make()
    car = site.vehicles["car"]
    car.v2l_cut_off = True
    site.apply_command(V2LCommand("car", "start", 1500.0, T0 + timedelta(hours=1)), T0)
    assert car.v2l is not None and car.v2l.power_w == 1500.0 and car.v2l.end == T0 + timedelta(hours=1)
    assert not car.v2l_cut_off  # a new session starts fresh
    site.apply_command(V2LCommand("car", "stop"), T0)
    assert car.v2l is None


# ---------------------------------------------------------------- V2L cut-off


def test_v2l_is_cut_off_once_at_the_reserve() -> None:
    site = make()
    car = site.vehicles["car"]
    site.on_vehicle_soc("car", 35.0, T0)
    site.apply_command(V2LCommand("car", "start", 2000.0), T0)
    assert site.v2l_cutoffs(T0) == []
    site.on_vehicle_soc("car", 21.5, T0 + timedelta(minutes=1))
    assert site.v2l_cutoffs(T0 + timedelta(minutes=1)) == []  # above reserve + 1 % margin
    site.on_vehicle_soc("car", 21.0, T0 + timedelta(minutes=2))
    assert site.v2l_cutoffs(T0 + timedelta(minutes=2)) == [car]
    assert car.v2l_cut_off and car.v2l is not None
    assert site.v2l_cutoffs(T0 + timedelta(minutes=3)) == []  # once


def test_v2l_without_a_recent_soc_is_cut_off() -> None:
    site = make()
    car = site.vehicles["car"]
    site.apply_command(V2LCommand("car", "start", 2000.0), T0)
    assert site.v2l_soc(car, T0) is None
    assert site.v2l_cutoffs(T0) == [car]  # never any SoC: the reserve cannot be guarded

    site.on_vehicle_soc("car", 60.0, T0)
    site.apply_command(V2LCommand("car", "start", 2000.0), T0)
    late = T0 + timedelta(seconds=601)  # the car-soc meter's stale_after_s is 600
    assert site.v2l_soc(car, T0 + timedelta(seconds=600)) == 60.0
    assert site.v2l_soc(car, late) is None
    assert site.v2l_cutoffs(late) == [car]


def test_v2l_soc_age_without_a_soc_meter_defaults() -> None:
    cfg = config()
    cfg = cfg.model_copy(update={"meters": [m for m in cfg.meters if m.vehicle is None]})
    site = Site(cfg, SiteInputs(cfg))
    car = site.vehicles["car"]
    site.on_charger_sample("wb1", T0, None, 50.0)
    assert site.v2l_soc(car, T0 + V2L_SOC_MAX_AGE) == 50.0
    assert site.v2l_soc(car, T0 + V2L_SOC_MAX_AGE + timedelta(seconds=1)) is None


def test_the_v2l_meter_drains_the_soc_so_the_cut_off_fires_between_soc_readings() -> None:
    from controller.config import MeterConfig

    cfg = config()
    v2l_meter = MeterConfig.model_validate(
        {"id": "car-v2l", "role": "v2l", "topic": "m/v2l", "vehicle": "car", "stale_after_s": 60}
    )
    cfg = cfg.model_copy(update={"meters": [*cfg.meters, v2l_meter]})
    site = Site(cfg, SiteInputs(cfg))
    car = site.vehicles["car"]

    def v2l(watts: float, at: datetime) -> None:
        site.inputs.update_meter(MeterReading("car-v2l", MeterRole.V2L, watts, at))
        assert site.on_v2l_reading("car", at) is car

    site.on_vehicle_soc("car", 21.5, T0)  # the next reading would come 10 min later (600 s meter)
    site.apply_command(V2LCommand("car", "start", 3000.0), T0)
    v2l(3000.0, T0)
    due: list[Any] = []
    minute = 0
    while not due:
        minute += 1
        assert minute < 10, "no cut-off before the next SoC reading"
        v2l(3000.0, T0 + timedelta(minutes=minute))
        due = site.v2l_cutoffs(T0 + timedelta(minutes=minute))
    # 3 kW for a minute is 50 Wh, / 0.92 out of 60 kWh: 0.0906 % a minute; 21.5 % reaches the
    # cut-off at reserve 20 % + 1 % after 5.5 minutes, so at the reading of minute 6.
    assert due == [car] and minute == 6
    drained = 100 * 6 * 50 / 0.92 / 60_000
    assert site.v2l_soc(car, T0 + timedelta(minutes=6)) == pytest.approx(21.5 - drained)


def test_v2l_session_ends_at_its_time_without_a_cut_off() -> None:
    site = make()
    car = site.vehicles["car"]
    site.on_vehicle_soc("car", 60.0, T0)
    site.apply_command(V2LCommand("car", "start", 2000.0, T0 + timedelta(minutes=30)), T0)
    assert site.v2l_cutoffs(T0 + timedelta(minutes=30)) == []
    assert car.v2l is None and not car.v2l_cut_off


# ---------------------------------------------------------------- planner snapshot


def test_snapshot_carries_prices_limits_vehicles_and_forecasts() -> None:
    site = make()
    fresh(site.inputs, T0)
    site.set_plugged("wb1", True, T0)
    site.on_charger_sample("wb1", T0, 0.0, 55.0)
    site.apply_command(V2LCommand("car", "start", 1200.0), T0)
    load = np.full(STEPS, 400.0)
    snap = site.snapshot(T0, load, zeros())
    assert snap.time == T0 and snap.step_minutes == 15 and snap.steps == STEPS
    assert snap.load_w == [400.0] * STEPS and snap.pv_w == [0.0] * STEPS
    assert snap.import_price_per_kwh == [0.3] * STEPS and snap.export_price_per_kwh == [0.05] * STEPS
    assert snap.import_limit_w == [17_000.0] * STEPS and snap.export_limit_w == [10_000.0] * STEPS
    car = by_id(snap, "car")
    assert car.plugged_in and car.soc_percent == 55.0 and car.mode is VehicleMode.AUTO
    assert car.departure is not None and car.departure.target_soc_percent == 70.0
    assert car.v2l is not None and car.v2l.power_w == 1200.0
    van = by_id(snap, "van")
    assert not van.plugged_in and van.soc_percent is None and van.departure is None


def test_snapshot_in_safe_mode_plans_no_discharge() -> None:
    site = make()
    site.set_plugged("wb1", True, T0)
    site.on_charger_sample("wb1", T0, 0.0, 55.0)
    assert by_id(site.snapshot(T0, zeros(), zeros()), "car").mode is VehicleMode.NO_DISCHARGE  # no meters
    fresh(site.inputs, T0)
    assert by_id(site.snapshot(T0, zeros(), zeros()), "car").mode is VehicleMode.AUTO
    site.inputs.update_grid_state(True, T0)
    later = T0 + timedelta(minutes=5)  # meters stale, but the grid is down: V2H may keep the home up
    assert by_id(site.snapshot(later, zeros(), zeros()), "car").mode is VehicleMode.AUTO
    site.vehicles["car"].mode = VehicleMode.CHARGE_NOW
    assert by_id(site.snapshot(T0, zeros(), zeros()), "car").mode is VehicleMode.CHARGE_NOW


def test_an_outage_state_expires_unless_refreshed() -> None:
    """A lost "ok" must not keep charging off for good: after outage_max_age_s (900 s by default)
    without a message the grid counts as back."""
    site = make()
    inputs = site.inputs
    assert site.cfg.grid_signals.outage_max_age_s == 900
    site.set_plugged("wb1", True, T0)
    site.on_charger_sample("wb1", T0, 0.0, 55.0)
    assert inputs.update_grid_state(True, T0)
    assert not inputs.update_grid_state(True, T0 + timedelta(seconds=600))  # refreshed, no change
    late = T0 + timedelta(seconds=1500)  # 900 s after the refresh: still lost
    assert inputs.is_grid_lost(late) and site.dispatch_inputs(late, None).grid_lost
    assert by_id(site.snapshot(late, zeros(), zeros()), "car").mode is VehicleMode.AUTO  # V2H may run
    expired = late + timedelta(seconds=1)
    assert not inputs.is_grid_lost(expired) and not site.dispatch_inputs(expired, None).grid_lost
    # Over: stale meters mean safe mode again.
    assert by_id(site.snapshot(expired, zeros(), zeros()), "car").mode is VehicleMode.NO_DISCHARGE
    assert inputs.grid_lost  # as last received, until the daemon lets it expire (and logs it)
    assert inputs.expire_grid_state(expired) and not inputs.grid_lost
    assert not inputs.expire_grid_state(expired + timedelta(hours=1))  # once
    assert inputs.update_grid_state(True, expired)  # a new "lost" is a change again


def test_an_outage_state_without_a_max_age_never_expires() -> None:
    cfg = config()
    signals = cfg.grid_signals.model_copy(update={"outage_max_age_s": None})
    inputs = SiteInputs(cfg.model_copy(update={"grid_signals": signals}))
    inputs.update_grid_state(True, T0)
    month = T0 + timedelta(days=30)
    assert inputs.is_grid_lost(month) and not inputs.expire_grid_state(month) and inputs.grid_lost


def test_snapshot_plans_on_a_guessed_soc_but_never_discharges_on_it() -> None:
    site = make()
    fresh(site.inputs, T0)
    site.restore_vehicle(
        "car", {"plugged_in": True, "charger_id": "wb1", "soc_percent": 42.0, "soc_at": T0.isoformat()}
    )
    car = by_id(site.snapshot(T0, zeros(), zeros()), "car")
    assert car.soc_percent == 42.0 and car.mode is VehicleMode.NO_DISCHARGE
    site.on_charger_sample("wb1", T0 + timedelta(seconds=5), None, 43.0)  # a real reading
    car = by_id(site.snapshot(T0 + timedelta(seconds=5), zeros(), zeros()), "car")
    assert car.soc_percent == 43.0 and car.mode is VehicleMode.AUTO


def test_snapshot_leaves_out_a_v2l_session_that_was_cut_off() -> None:
    site = make()
    site.on_vehicle_soc("car", 20.5, T0)
    site.apply_command(V2LCommand("car", "start", 1500.0), T0)
    site.v2l_cutoffs(T0)
    assert by_id(site.snapshot(T0, zeros(), zeros()), "car").v2l is None


# ---------------------------------------------------------------- dispatcher inputs


def test_dispatch_inputs_are_the_live_state() -> None:
    site = make()
    fresh(site.inputs, T0, grid_w=1200.0, home_w=900.0)
    site.set_plugged("wb1", True, T0)
    site.on_charger_sample("wb1", T0, -2000.0, 64.0)
    site.vehicles["car"].mode = VehicleMode.NO_DISCHARGE
    plan = Plan(T0, T0, timedelta(minutes=15), {}, (0.0,), (0.0,), (0.3,), (0.05,), "optimal", 1.0)
    live = site.dispatch_inputs(T0, plan)
    assert live.now == T0 and live.plan is plan
    assert (live.grid_power_w, live.home_power_w, live.pv_power_w) == (1200.0, 900.0, 0.0)
    assert (live.import_limit_w, live.export_limit_w) == (17_000.0, 10_000.0)
    assert not live.safe_mode and not live.grid_lost
    car = next(v for v in live.vehicles if v.vehicle_id == "car")
    assert (car.plugged_in, car.charger_id, car.soc_percent, car.measured_power_w, car.mode) == (
        True,
        "wb1",
        64.0,
        -2000.0,
        VehicleMode.NO_DISCHARGE,
    )
    stale = site.dispatch_inputs(T0 + timedelta(seconds=31), None)
    assert stale.safe_mode and stale.grid_power_w is None and stale.home_power_w is None


# ---------------------------------------------------------------- persistence


def test_vehicle_record_round_trip() -> None:
    site = make()
    site.set_plugged("wb1", True, T0)
    site.on_charger_sample("wb1", T0, None, 47.0)
    record = site.vehicle_record(site.vehicles["car"])
    assert record == {
        "plugged_in": True,
        "charger_id": "wb1",
        "soc_percent": 47.0,
        "soc_at": "2026-11-24T17:05:00Z",  # ISO 8601 UTC with Z, the one form the daemon writes
        "soc_measured": True,
        "session_limits": None,
        "charger_departure": None,
        "plugged_at": "2026-11-24T17:05:00Z",
        "announced_at": None,
        "departures_seen": [],
    }
    again = make()
    again.restore_vehicle("car", record)
    car = again.vehicles["car"]
    assert car.plugged_in and car.charger_id == "wb1" and car.plugged_at == T0
    estimate = car.tracker.estimate()
    assert estimate is not None and estimate.soc_percent == 47.0 and not estimate.measured
    again.restore_vehicle("gone", record)  # a car no longer configured is skipped
    assert make().vehicle_record(make().vehicles["van"])["soc_percent"] is None


def test_records_and_overrides_written_before_in_the_older_time_forms_are_still_read() -> None:
    """Rows of earlier versions wrote ``isoformat()`` (``+00:00``); an offset other than UTC is
    read as the moment it names."""
    site = make()
    site.restore_vehicle(
        "car",
        {
            "plugged_in": True,
            "charger_id": "wb1",
            "soc_percent": 47.0,
            "soc_at": "2026-11-24T18:05:00+01:00",
            "soc_measured": True,
            "session_limits": None,
            "charger_departure": {"at": "2026-11-24T20:05:00+00:00", "target_soc_percent": 85.0},
        },
        now=T0,
    )
    car = site.vehicles["car"]
    estimate = car.tracker.estimate()
    assert estimate is not None and estimate.at == T0 and estimate.soc_percent == 47.0
    assert car.charger_departure == Departure(T0 + timedelta(hours=3), 85.0)
    older: dict[str, dict[str, Any]] = {
        "mode": {"mode": "no_discharge"},
        "departure": {"at": "2026-11-24T20:05:00+00:00", "target": 80},
        "weekly": {"friday": {"time": "08:15:00", "target": 65.0}, "monday": None},
        "v2l": {"start": "2026-11-24T17:00:00+00:00", "end": None, "power_w": 1500, "cut_off": False},
    }
    for kind, body in older.items():
        site.restore_overrides("car", kind, body, T0)
    assert car.mode is VehicleMode.NO_DISCHARGE and car.one_off == Departure(T0 + timedelta(hours=3), 80.0)
    assert car.weekly["monday"] is None and car.weekly["friday"] is not None
    assert car.weekly["friday"].time == time(8, 15) and car.weekly["friday"].return_time is None
    assert car.v2l is not None and car.v2l.power_w == 1500.0
    # Written back in the one form.
    assert site.overrides(car)["departure"] == {"at": "2026-11-24T20:05:00Z", "target": 80.0}


def test_ev_limits_survive_a_restart_while_plugged_in_only() -> None:
    site = make()
    site.set_plugged("wb1", True, T0)
    site.on_charger_sample("wb1", T0, None, 60.0)
    site.on_charging_needs(
        "wb1", None, None, EvReportedLimits(max_discharge_power_w=3000.0, min_v2x_energy_wh=-6000)
    )
    record = json.loads(json.dumps(site.vehicle_record(site.vehicles["car"])))  # as the store keeps it
    again = make()
    again.restore_vehicle("car", record)
    assert again.vehicles["car"].session_limits == SessionLimits(
        max_discharge_power_w=3000.0, min_soc_percent=50.0
    )
    unplugged = make()
    unplugged.restore_vehicle("car", {**record, "plugged_in": False})
    assert unplugged.vehicles["car"].session_limits is None
    damaged = make()
    with pytest.raises(ValueError):  # logged and skipped by the daemon
        damaged.restore_vehicle("car", {**record, "session_limits": {"max_discharge_power_w": -1}})
    assert not damaged.vehicles["car"].plugged_in  # nothing half-restored


def test_the_cars_own_departure_survives_a_restart_while_plugged_in_and_ahead() -> None:
    site = make()
    site.set_plugged("wb1", True, T0)
    leave = T0 + timedelta(hours=3)
    site.on_charging_needs("wb1", leave, 85.0)
    record = json.loads(json.dumps(site.vehicle_record(site.vehicles["car"])))  # as the store keeps it
    # Times as the daemon writes them from now on: ISO 8601 in UTC with Z.
    assert record["charger_departure"] == {
        "at": leave.isoformat().replace("+00:00", "Z"),
        "target_soc_percent": 85.0,
    }
    again = make()
    again.restore_vehicle("car", record, now=T0 + timedelta(minutes=5))
    car = again.vehicles["car"]
    assert car.charger_departure == Departure(leave, 85.0)
    departure = again.departure(car, T0 + timedelta(minutes=5))  # it wins over Wednesday 07:30
    assert departure is not None and departure.at == leave and departure.target_soc_percent == 85.0
    # Passed while the daemon was down with the car still plugged in since before it: kept, the car
    # may be overdue for it (its target held); the next departure is the one after it.
    passed = make()
    passed.restore_vehicle("car", record, now=leave)
    kept = passed.vehicles["car"]
    assert kept.charger_departure == Departure(leave, 85.0)
    overdue = passed.overdue(kept, leave + timedelta(minutes=5))
    assert overdue is not None and overdue.departure == Departure(leave, 85.0)
    assert passed.departure(kept, leave + timedelta(minutes=5)) != Departure(leave, 85.0)
    # Gone while the daemon was down: the car was plugged in again after it, or unplugged meanwhile.
    back = make()
    back.restore_vehicle("car", {**record, "plugged_at": utc_text(leave + timedelta(hours=1))}, now=leave)
    assert back.vehicles["car"].charger_departure is None
    unplugged = make()
    unplugged.restore_vehicle("car", {**record, "plugged_in": False}, now=T0)
    assert unplugged.vehicles["car"].charger_departure is None
    # Unplugging drops it from what is stored next.
    site.set_plugged("wb1", False, T0 + timedelta(minutes=1))
    assert site.vehicle_record(site.vehicles["car"])["charger_departure"] is None
    damaged = make()
    with pytest.raises((TypeError, ValueError)):  # logged and skipped by the daemon
        damaged.restore_vehicle(
            "car", {**record, "charger_departure": {"at": "soon", "target_soc_percent": 1}}
        )
    assert not damaged.vehicles["car"].plugged_in


def test_the_daemon_restores_the_cars_own_departure_after_a_crash(tmp_path: Path) -> None:
    from controller.ocpp import ChargingNeeds, ChargingNeedsReported, StatusChanged

    daemon = example_daemon(tmp_path)
    now = datetime.now(UTC)
    leave = (now + timedelta(hours=2)).replace(microsecond=0)
    daemon.router.handle_ocpp_event(StatusChanged("wallbox-garage", 1, 1, "Occupied", "Available", now))
    needs = ChargingNeeds(1, now, "AC_BPT", departure_time=leave, target_soc_percent=90.0)
    daemon.router.handle_ocpp_event(ChargingNeedsReported("wallbox-garage", needs))
    stored(daemon).close()  # no clean stop: what was written when the needs came in is all there is
    again = example_daemon(tmp_path)
    again.plan = again.persistence.restore()
    car = again.site.vehicles["family-ev"]
    assert car.plugged_in and car.charger_departure == Departure(leave, 90.0)
    stored(again).close()


def test_overrides_round_trip_and_expired_ones_are_dropped() -> None:
    site = make()
    car = site.vehicles["car"]
    site.apply_command(SetMode("car", VehicleMode.NO_DISCHARGE), T0)
    site.apply_command(SetDeparture("car", Departure(T0 + timedelta(hours=3), 85.0)), T0)
    site.apply_command(SetWeeklyDeparture("car", "friday", time(8, 15), 65.0), T0)
    site.apply_command(SetWeeklyDeparture("car", "wednesday", None, None), T0)
    site.apply_command(V2LCommand("car", "start", 1500.0, T0 + timedelta(hours=2)), T0)
    car.v2l_cut_off = True
    stored = site.overrides(car)
    assert set(stored) == {"mode", "departure", "weekly", "v2l"}

    again = make()
    for kind, body in stored.items():
        again.restore_overrides("car", kind, body, T0 + timedelta(minutes=1))
    restored = again.vehicles["car"]
    assert restored.mode is VehicleMode.NO_DISCHARGE
    assert restored.one_off == Departure(T0 + timedelta(hours=3), 85.0)
    assert restored.weekly == site.vehicles["car"].weekly
    assert restored.v2l is not None and restored.v2l.power_w == 1500.0 and restored.v2l_cut_off
    assert again.overrides(restored) == stored

    late = make()
    for kind, body in stored.items():
        late.restore_overrides("car", kind, body, T0 + timedelta(hours=4))
    assert late.vehicles["car"].one_off is None and late.vehicles["car"].v2l is None  # both over
    # A car plugged in since before the passed one-off may be overdue for it: it stays.
    waiting = make()
    waiting.set_plugged("wb1", True, T0)
    waiting.restore_overrides("car", "departure", stored["departure"], T0 + timedelta(hours=4))
    assert waiting.vehicles["car"].one_off == Departure(T0 + timedelta(hours=3), 85.0)
    late.restore_overrides("gone", "mode", {"mode": "auto"}, T0)  # unknown car: ignored


def test_charge_now_to_a_soc_is_kept_and_raises_the_ceiling_until_the_mode_changes() -> None:
    site = make()
    car = site.vehicles["car"]
    site.apply_command(SetMode("car", VehicleMode.CHARGE_NOW, charge_to_percent=100.0), T0)
    assert soc_ceiling_percent(car, None) == 100.0
    stored = site.overrides(car)
    again = make()
    again.restore_overrides("car", "mode", stored["mode"], T0)
    assert again.vehicles["car"].charge_to_percent == 100.0
    site.apply_command(SetMode("car", VehicleMode.AUTO), T0)
    assert car.charge_to_percent is None
    assert soc_ceiling_percent(car, None) == car.config.max_soc_percent
    assert soc_ceiling_percent(car, Departure(T0, 100.0)) == 100.0  # a departure target above it wins
    # Stores written before the field existed still load.
    again.restore_overrides("car", "mode", {"mode": "charge_now"}, T0)
    assert again.vehicles["car"].charge_to_percent is None


def test_restoring_a_malformed_override_raises_for_the_caller_to_log() -> None:
    site = make()
    with pytest.raises(ValueError):
        site.restore_overrides("car", "mode", {"mode": "turbo"}, T0)
    with pytest.raises(ValueError):
        site.restore_overrides("car", "departure", {"target": 80}, T0)


def test_snapshot_plans_a_departure_the_plan_can_use() -> None:
    site = make()
    fresh(site.inputs, T0)
    site.set_plugged("wb1", True, T0)
    site.on_charger_sample("wb1", T0, 0.0, 30.0)
    site.apply_command(SetDeparture("car", Departure(T0 + timedelta(hours=1), 60.0)), T0)
    car = by_id(site.snapshot(T0, zeros(), zeros()), "car")
    assert car.departure is not None
    assert car.departure.at == T0 + timedelta(hours=1) and car.departure.target_soc_percent == 60.0


def test_daemon_forecasts_take_the_mqtt_pv_forecast_where_it_covers(tmp_path: Path) -> None:
    from controller.app import Daemon
    from controller.signals import parse_pv_forecast

    data = yaml.safe_load((ROOT / "configs" / "home.example.yaml").read_text())
    data["storage"] = {"path": str(tmp_path / "v2x.sqlite")}
    data["api"] = {"enabled": False}
    daemon = Daemon(parse_config(data, env=EXAMPLE_ENV))
    now = datetime(2026, 6, 1, 10, 7, tzinfo=UTC)
    start = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    payload = json.dumps(
        {
            "unit": "kW",
            "forecast": [
                {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat(), "value": 3.5}
            ],
        }
    ).encode()
    daemon.inputs.update_pv_forecast(parse_pv_forecast(payload), now)
    load_w, pv_w = daemon.forecasts.forecasts(now)
    assert len(load_w) == len(pv_w) == 96
    assert list(pv_w[:4]) == [3500.0] * 4 and pv_w[4] == 0.0  # no PV history: 0 outside the forecast
    assert load_w[0] == 400.0  # default home load without history
    stored(daemon).close()


# ---------------------------------------------------------------- the daemon's own handling


def example_daemon(tmp_path: Path, meters: list[dict[str, Any]] | None = None) -> Any:
    """The daemon on the example config (store in ``tmp_path``), not started: no sockets opened."""
    from controller.app import Daemon

    data = yaml.safe_load((ROOT / "configs" / "home.example.yaml").read_text())
    data["storage"] = {"path": str(tmp_path / "v2x.sqlite")}
    data["api"] = {"enabled": False}
    data["meters"] += meters or []
    return Daemon(parse_config(data, env=EXAMPLE_ENV))


def test_the_daemon_takes_a_retained_soc_as_an_estimate_and_drains_the_soc_by_the_v2l_meter(
    tmp_path: Path,
) -> None:
    daemon = example_daemon(
        tmp_path,
        [
            {"id": "ev-soc", "role": "vehicle_soc", "topic": "ev/soc", "vehicle": "family-ev"},
            {"id": "ev-v2l", "role": "v2l", "topic": "ev/v2l", "vehicle": "family-ev"},
        ],
    )
    car = daemon.site.vehicles["family-ev"]
    now = datetime.now(UTC)

    def reading(meter: str, role: MeterRole, value: float, at: datetime, retained: bool = False) -> None:
        parsed = MeterReading(meter, role, value, at, retained=retained)
        daemon.inputs.update_meter(parsed)
        daemon.router.handle_reading(parsed)

    reading("ev-soc", MeterRole.VEHICLE_SOC, 40.0, now, retained=True)
    estimate = car.tracker.estimate()
    assert estimate is not None and estimate.soc_percent == 40.0 and not estimate.measured
    assert stored(daemon).vehicle_states()["family-ev"]["soc_measured"] is False
    reading("ev-soc", MeterRole.VEHICLE_SOC, 41.0, now + timedelta(seconds=1))
    reading("ev-v2l", MeterRole.V2L, 7700.0, now + timedelta(seconds=1))
    reading("ev-v2l", MeterRole.V2L, 7700.0, now + timedelta(minutes=10, seconds=1))
    # 7.7 kW for 10 min out of 77 kWh through 92 %: 1.81 % less.
    assert daemon.site.measured_soc(car) == pytest.approx(41.0 - 100 * 7.7 / 6 / 0.92 / 77)
    stored(daemon).flush_history()
    samples = [
        p.samples
        for p in stored(daemon).history("ev-soc", now - timedelta(hours=1), now + timedelta(hours=1))
    ]
    assert samples == [1]  # the retained value of unknown age is no history
    stored(daemon).close()


def test_the_daemon_logs_an_outage_state_that_expired_and_replans(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    daemon = example_daemon(tmp_path)
    now = datetime.now(UTC)
    daemon.inputs.update_grid_state(True, now)
    daemon.expire_grid_state(now + timedelta(seconds=900))
    assert daemon.inputs.grid_lost and not daemon.planner_trigger.reasons
    with capture_logs() as logs:
        daemon.expire_grid_state(now + timedelta(seconds=901))
    assert not daemon.inputs.grid_lost and daemon.planner_trigger.reasons == ["grid_state"]
    (logged,) = [e for e in logs if e["event"] == "grid_state_expired"]
    assert logged["log_level"] == "warning" and logged["max_age_s"] == 900
    ((_, _, body),) = stored(daemon).events("grid_state_expired")
    assert body["max_age_s"] == 900
    stored(daemon).close()


def test_damaged_store_rows_are_skipped_and_the_rest_is_restored(tmp_path: Path) -> None:
    import sqlite3

    from structlog.testing import capture_logs

    from controller.store import Store

    now = datetime.now(UTC)
    leave = (now + timedelta(hours=5)).replace(microsecond=0)
    store = Store(tmp_path / "v2x.sqlite")
    store.save_vehicle_state("family-ev", {"plugged_in": "yes", "soc_percent": "lots", "soc_at": "x"}, now)
    store.set_override("family-ev", "mode", {"mode": "warp"}, now)
    store.set_override("family-ev", "weekly", {"friday": "8:15"}, now)
    store.set_override("family-ev", "v2l", {"start": now.isoformat(), "power_w": "much"}, now)
    store.set_override("family-ev", "departure", {"at": leave.isoformat(), "target": 85}, now)
    store.start_session("wallbox-garage", now, transaction_id="tx-1")
    store.close()
    with sqlite3.connect(tmp_path / "v2x.sqlite") as db:  # a plan in a format this version cannot read
        db.execute(
            "INSERT INTO plans (created_at, start, fallback, solver_status, body) VALUES (0, 0, 0, 'x', '{}')"
        )

    daemon = example_daemon(tmp_path)
    with capture_logs() as logs:
        daemon.plan = (
            daemon.persistence.restore()
        )  # must not raise: the daemon starts without what it cannot read
    stored(daemon).close()
    car = daemon.site.vehicles["family-ev"]
    assert not car.plugged_in and car.tracker.estimate() is None and car.mode is VehicleMode.AUTO
    assert car.weekly == {} and car.v2l is None
    assert car.one_off == Departure(leave, 85.0)  # the good override next to the bad ones is back
    assert daemon.plan is None
    skipped = {(e["event"], e.get("kind")) for e in logs if e["log_level"] == "warning"}
    assert skipped == {
        ("vehicle_state_not_restored", None),
        ("override_not_restored", "mode"),
        ("override_not_restored", "weekly"),
        ("override_not_restored", "v2l"),
        ("plan_not_restored", None),
    }
    (restored,) = [e for e in logs if e["event"] == "state_restored"]
    assert (restored["vehicles"], restored["open_sessions"], restored["plan"]) == (0, 1, False)


@pytest.mark.parametrize(("reason", "unplugged"), [("EVDisconnected", True), ("Local", False), (None, False)])
def test_a_transaction_ended_by_the_cable_unplugs_the_car(
    tmp_path: Path, reason: str | None, unplugged: bool
) -> None:
    """Some chargers send no StatusNotification when the cable is pulled; the stop reason says it."""
    from controller.ocpp import StatusChanged, TransactionEnded

    daemon = example_daemon(tmp_path)
    now = datetime.now(UTC)
    daemon.router.handle_ocpp_event(StatusChanged("wallbox-garage", 1, 1, "Occupied", "Available", now))
    assert daemon.site.vehicles["family-ev"].plugged_in
    daemon.planner_trigger.clear()
    daemon.router.handle_ocpp_event(TransactionEnded("wallbox-garage", 1, "tx-1", now, reason, 1200.0))
    assert daemon.site.vehicles["family-ev"].plugged_in is not unplugged
    assert ("unplug" in daemon.planner_trigger.reasons) is unplugged
    assert bool(stored(daemon).events("unplug")) is unplugged
    assert stored(daemon).vehicle_states()["family-ev"]["plugged_in"] is not unplugged
    stored(daemon).close()


def test_a_cars_measured_power_ends_with_its_transaction_and_expires() -> None:
    site = make()
    car = site.vehicles["car"]
    site.set_plugged("wb1", True, T0)
    site.on_charger_sample("wb1", T0, 11_000.0, 50.0)
    max_age = timedelta(seconds=MEASURED_POWER_MAX_SAMPLE_INTERVALS * site.cfg.ocpp.meter_sample_interval_s)
    assert site.measured_power_w(car, T0 + max_age) == 11_000.0
    assert site.dispatch_inputs(T0 + max_age, None).vehicles[0].measured_power_w == 11_000.0
    # A charger gone quiet: its last power no longer counts.
    assert site.measured_power_w(car, T0 + max_age + timedelta(seconds=1)) is None
    assert (
        site.dispatch_inputs(T0 + max_age + timedelta(seconds=1), None).vehicles[0].measured_power_w is None
    )
    # The transaction ends with the cable still in: the car draws nothing any more.
    site.on_charger_sample("wb1", T0 + timedelta(minutes=5), 7000.0, None)
    assert site.measured_power_w(car, T0 + timedelta(minutes=5)) == 7000.0
    assert site.on_transaction_ended("wb1") is car
    assert car.plugged_in and site.measured_power_w(car, T0 + timedelta(minutes=5)) == 0.0
    # A known 0 W that does not age out while no transaction runs...
    assert site.measured_power_w(car, T0 + timedelta(hours=3)) == 0.0
    # ...until a new one starts: unknown until its first sample, which then ages as before.
    assert site.on_transaction_started("wb1") is car
    assert site.measured_power_w(car, T0 + timedelta(hours=3)) is None
    site.on_charger_sample("wb1", T0 + timedelta(hours=3), 3000.0, None)
    assert site.measured_power_w(car, T0 + timedelta(hours=3)) == 3000.0
    assert site.measured_power_w(car, T0 + timedelta(hours=3) + max_age + timedelta(seconds=1)) is None
    # Aged by when it arrived, not by the charger's clock (an hour behind here).
    skewed = make()
    skewed.set_plugged("wb1", True, T0)
    skewed.on_charger_sample("wb1", T0 - timedelta(hours=1), 7000.0, 50.0, received_at=T0)
    assert skewed.measured_power_w(skewed.vehicles["car"], T0 + timedelta(seconds=5)) == 7000.0


def test_a_sample_older_than_the_last_does_not_make_the_last_power_fresh() -> None:
    site = make()
    car = site.vehicles["car"]
    site.set_plugged("wb1", True, T0)
    site.on_charger_sample("wb1", T0, 11_000.0, 50.0, received_at=T0)
    max_age = timedelta(seconds=MEASURED_POWER_MAX_SAMPLE_INTERVALS * site.cfg.ocpp.meter_sample_interval_s)
    # The charger's clock stepped back an hour: its samples are older than the last one taken.
    for k in range(1, 4):
        received = T0 + k * max_age + timedelta(seconds=1)
        site.on_charger_sample("wb1", received - timedelta(hours=1), 0.0, None, received_at=received)
        assert site.measured_power_w(car, received) is None


def _charging_at_11_kw(daemon: Any, now: datetime) -> None:
    """The example car plugged in and charging at 11 kW, as the charger reports it."""
    from controller.ocpp import MeterSample, MeterValuesReceived, StatusChanged

    daemon.router.handle_ocpp_event(StatusChanged("wallbox-garage", 1, 1, "Occupied", "Available", now))
    daemon.router.handle_ocpp_event(
        MeterValuesReceived(
            "wallbox-garage", 1, "tx-1", MeterSample(at=now, power_w=11_000.0, soc_percent=50.0)
        )
    )


def test_the_soc_stops_counting_a_cars_power_when_its_transaction_ends() -> None:
    # 11 kW for 5 minutes, then the transaction ends with the cable in: the next sample, 4 minutes
    # later, must not count the old 11 kW over those 4 minutes too.
    site = make()
    car = site.vehicles["car"]
    site.set_plugged("wb1", True, T0)
    site.on_charger_sample("wb1", T0, 11_000.0, 50.0)
    site.on_transaction_ended("wb1", T0 + timedelta(minutes=5))
    site.on_charger_sample("wb1", T0 + timedelta(minutes=9), 0.0, None)
    estimate = car.tracker.estimate()
    assert estimate is not None and estimate.measured
    charged_kwh = 11.0 * (5 / 60) * car.config.charge_efficiency
    assert estimate.soc_percent == pytest.approx(50.0 + 100.0 * charged_kwh / 60.0)


def test_the_daemon_forgets_the_cars_power_when_its_transaction_ends(tmp_path: Path) -> None:
    from controller.ocpp import TransactionEnded

    daemon = example_daemon(tmp_path)
    now = datetime.now(UTC)
    _charging_at_11_kw(daemon, now)
    car = daemon.site.vehicles["family-ev"]
    assert daemon.site.measured_power_w(car, datetime.now(UTC)) == 11_000.0
    daemon.router.handle_ocpp_event(TransactionEnded("wallbox-garage", 1, "tx-1", now, "Local", 1200.0))
    assert car.plugged_in and daemon.site.measured_power_w(car, datetime.now(UTC)) == 0.0
    stored(daemon).close()


def test_the_daemon_records_home_load_while_a_car_without_a_transaction_stays_plugged(
    tmp_path: Path,
) -> None:
    from controller.ocpp import TransactionEnded, TransactionStarted

    daemon = example_daemon(tmp_path)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    _charging_at_11_kw(daemon, now)
    daemon.router.handle_ocpp_event(TransactionEnded("wallbox-garage", 1, "tx-1", now, "Local", 1200.0))
    for k in range(1, 4):  # the cable stays in, no samples; grid and PV fresh each minute
        t = now + timedelta(minutes=k)
        daemon.inputs.update_meter(MeterReading("grid", MeterRole.GRID, 500.0, t))
        daemon.inputs.update_meter(MeterReading("pv", MeterRole.PV, 0.0, t))
        daemon.forecasts.record_flows(t)
    # A new transaction: the car's power is unknown again until its first sample.
    started = now + timedelta(minutes=4)
    daemon.router.handle_ocpp_event(TransactionStarted("wallbox-garage", 1, "tx-2", started))
    daemon.inputs.update_meter(MeterReading("grid", MeterRole.GRID, 7500.0, started))
    daemon.inputs.update_meter(MeterReading("pv", MeterRole.PV, 0.0, started))
    daemon.forecasts.record_flows(started)
    stored(daemon).flush_history()
    home = stored(daemon).history("_home_load", now, now + timedelta(minutes=6))
    assert [(p.bucket_start, p.mean) for p in home] == [
        (now + timedelta(minutes=k), 500.0) for k in range(1, 4)
    ]
    stored(daemon).close()


def test_the_daemon_records_no_home_load_while_the_pv_meter_is_stale(tmp_path: Path) -> None:
    daemon = example_daemon(tmp_path)  # grid and PV meters, no home meter
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    daemon.inputs.update_meter(MeterReading("grid", MeterRole.GRID, 500.0, now))
    daemon.inputs.update_meter(MeterReading("pv", MeterRole.PV, 2000.0, now))
    daemon.forecasts.record_flows(now)  # all fresh: 500 + 2000 W
    silent = now + timedelta(minutes=2, seconds=10)  # PV silent past its 120 s, the grid still read
    daemon.inputs.update_meter(MeterReading("grid", MeterRole.GRID, 600.0, silent))
    daemon.forecasts.record_flows(silent)
    stored(daemon).flush_history()
    home = stored(daemon).history("_home_load", now - timedelta(minutes=1), now + timedelta(minutes=5))
    assert [(p.bucket_start, p.mean) for p in home] == [(now, 2500.0)]
    stored(daemon).close()


def test_the_daemon_records_no_home_load_from_a_cars_power_that_expired(tmp_path: Path) -> None:
    daemon = example_daemon(tmp_path)
    now = datetime.now(UTC)
    _charging_at_11_kw(daemon, now)
    later = now + timedelta(minutes=1)  # the charger stopped reporting; grid and PV are fresh
    daemon.inputs.update_meter(MeterReading("grid", MeterRole.GRID, 500.0, later))
    daemon.inputs.update_meter(MeterReading("pv", MeterRole.PV, 0.0, later))
    daemon.forecasts.record_flows(later)
    stored(daemon).flush_history()
    assert (
        stored(daemon).history("_home_load", now - timedelta(minutes=1), later + timedelta(minutes=1)) == []
    )
    stored(daemon).close()


def test_a_charger_whose_ocpp_version_cannot_discharge_is_planned_and_dispatched_charge_only() -> None:
    site = make()
    fresh(site.inputs, T0)
    site.set_plugged("wb1", True, T0)
    site.on_charger_sample("wb1", T0, 0.0, 60.0)
    site.on_charging_needs("wb1", None, None, EvReportedLimits(max_charge_power_w=7400.0))

    def planned() -> SessionLimits | None:
        limits: SessionLimits | None = by_id(
            site.planner_snapshot(T0, zeros(), zeros()), "car"
        ).session_limits
        return limits

    def live() -> Any:
        return next(v for v in site.dispatch_inputs(T0, None).vehicles if v.vehicle_id == "car")

    # Before it connects: 2.1 is among its versions (the default), so it may discharge.
    assert site.charger_can_discharge("wb1") and live().charger_can_discharge
    assert planned() == SessionLimits(max_charge_power_w=7400.0)
    assert site.on_charger_connected("wb1", OcppVersion.V201)
    assert not site.charger_can_discharge("wb1") and not live().charger_can_discharge
    assert planned() == SessionLimits(max_charge_power_w=7400.0, max_discharge_power_w=0.0)
    assert site.vehicles["car"].session_limits == SessionLimits(max_charge_power_w=7400.0)  # the EV's own
    assert not site.on_charger_connected("wb1", OcppVersion.V16)  # no change: still charge only
    assert site.on_charger_connected("wb1", OcppVersion.V21)
    assert planned() == SessionLimits(max_charge_power_w=7400.0)
    # A 1.6/2.0.1 charger that takes a negative limit as discharge can discharge.
    opted = config()
    opted.chargers[0] = opted.chargers[0].model_copy(update={"negative_limit_means_discharge": True})
    legacy = Site(opted, SiteInputs(opted))
    legacy.on_charger_connected("wb1", OcppVersion.V16)
    assert legacy.charger_can_discharge("wb1")
    # Configured for 1.6 only: charge only before it even connects.
    old = config()
    old.chargers[0] = old.chargers[0].model_copy(update={"ocpp_versions": [OcppVersion.V16]})
    assert not Site(old, SiteInputs(old)).charger_can_discharge("wb1")


def test_the_daemon_replans_when_a_charger_connects_with_a_version_that_cannot_discharge(
    tmp_path: Path,
) -> None:
    from controller.ocpp.events import ChargerConnected

    daemon = example_daemon(tmp_path)  # ocpp_versions ["2.1", "2.0.1"]
    now = datetime.now(UTC)
    daemon.router.handle_ocpp_event(ChargerConnected("wallbox-garage", OcppVersion.V21, now))
    assert daemon.planner_trigger.reasons == []
    daemon.router.handle_ocpp_event(ChargerConnected("wallbox-garage", OcppVersion.V201, now))
    assert daemon.planner_trigger.reasons == ["charger version"]
    assert not daemon.site.charger_can_discharge("wallbox-garage")
    stored(daemon).close()


def test_no_grid_meter_configured_is_safe_mode_with_its_reason() -> None:
    cfg = config()
    cfg = cfg.model_copy(update={"meters": [m for m in cfg.meters if m.role is not MeterRole.GRID]})
    site = Site(cfg, SiteInputs(cfg))
    site.inputs.update_meter(MeterReading("home", MeterRole.HOME, 400.0, T0))
    site.inputs.update_meter(MeterReading("pv", MeterRole.PV, 0.0, T0))
    site.set_plugged("wb1", True, T0)
    site.on_charger_sample("wb1", T0, 0.0, 60.0)
    assert site.inputs.safe_mode(T0) and site.inputs.safe_mode_reasons(T0) == [NO_GRID_METER_REASON]
    assert site.dispatch_inputs(T0, None).safe_mode
    assert by_id(site.snapshot(T0, zeros(), zeros()), "car").mode is VehicleMode.NO_DISCHARGE
    # With a grid meter the same fresh site is not in safe mode.
    fresh(make().inputs, T0)
    complete = make()
    fresh(complete.inputs, T0)
    assert not complete.inputs.safe_mode(T0) and complete.inputs.safe_mode_reasons(T0) == []


def test_only_the_cars_evse_plugs_it_in_or_out() -> None:
    """1.6 chargers report connector 0 (the whole station) "Available" routinely, and a charger with
    two EVSEs reports the other one: neither is the car's connector (``chargers[].evse_id``)."""
    site = make()
    car = site.vehicles["car"]
    assert site.is_vehicle_evse("wb1", 1) and site.is_vehicle_evse("wb1", None)
    assert not site.is_vehicle_evse("wb1", 0) and not site.is_vehicle_evse("wb1", 2)
    assert site.on_connector_status("wb1", "Occupied", T0, evse_id=2) is None  # another car
    assert not car.plugged_in
    assert site.on_connector_status("wb1", "Occupied", T0, evse_id=1) is car and car.plugged_in
    for evse_id in (0, 2):
        assert site.on_connector_status("wb1", "Available", T0, evse_id=evse_id) is None
        assert site.set_plugged("wb1", False, T0, evse_id=evse_id) is None
        assert car.plugged_in
    assert site.on_connector_status("wb1", "Available", T0, evse_id=1) is car and not car.plugged_in


def test_a_charger_configured_on_evse_2_takes_only_evse_2_as_the_cars() -> None:
    base = config()
    wb1 = base.chargers[0].model_copy(update={"evse_id": 2})
    cfg = base.model_copy(update={"chargers": [wb1, *base.chargers[1:]]})
    site = Site(cfg, SiteInputs(cfg))
    car = site.vehicles["car"]
    assert site.on_connector_status("wb1", "Occupied", T0, evse_id=1) is None and not car.plugged_in
    assert site.on_connector_status("wb1", "Occupied", T0, evse_id=2) is car and car.plugged_in
    assert site.on_connector_status("wb1", "Available", T0, evse_id=1) is None and car.plugged_in


def test_the_station_meter_and_other_evses_are_not_the_cars_power_soc_or_needs() -> None:
    site = make()
    car = site.vehicles["car"]
    site.set_plugged("wb1", True, T0, evse_id=1)
    assert site.on_charger_sample("wb1", T0, 3000.0, 40.0, evse_id=1) is car
    assert car.measured_power_w == 3000.0
    later = T0 + timedelta(minutes=1)
    # EVSE 0: the station's main meter (the house, or both EVSEs); EVSE 2: another car.
    assert site.on_charger_sample("wb1", later, 9000.0, None, 50_000.0, evse_id=0) is None
    assert site.on_charger_sample("wb1", later, 7000.0, 90.0, evse_id=2) is None
    assert car.measured_power_w == 3000.0
    estimate = car.tracker.estimate()
    assert estimate is not None and estimate.soc_percent == pytest.approx(40.0, abs=0.5)
    leave = T0 + timedelta(hours=5)
    assert site.on_charging_needs("wb1", leave, 95.0, evse_id=2) is None
    assert car.charger_departure is None
    assert site.on_charging_needs("wb1", leave, 85.0, evse_id=1) is car


def test_the_daemon_leaves_the_car_and_its_session_alone_on_events_of_other_evses(tmp_path: Path) -> None:
    """Station-wide (EVSE 0) and other-EVSE statuses, transactions and meter values neither unplug the
    car nor close its session; a 1.6 StopTransaction for an unknown transaction (EVSE 0) neither,
    unless the store has exactly that transaction open (a stop after a restart)."""
    from controller.ocpp import MeterSample, MeterValuesReceived, StatusChanged, TransactionEnded
    from controller.ocpp import TransactionStarted as Started

    daemon = example_daemon(tmp_path)
    car = daemon.site.vehicles["family-ev"]
    now = datetime.now(UTC)
    cid = "wallbox-garage"
    daemon.router.handle_ocpp_event(StatusChanged(cid, 1, 1, "Occupied", "Available", now))
    daemon.router.handle_ocpp_event(Started(cid, 1, "tx-1", now, None, 1000.0))
    daemon.router.handle_ocpp_event(
        MeterValuesReceived(cid, 1, "tx-1", MeterSample(now, power_w=3000.0, soc_percent=50))
    )
    assert car.plugged_in and car.measured_power_w == 3000.0
    later = now + timedelta(seconds=30)
    for event in [
        StatusChanged(cid, 0, 0, "Available", None, later),  # 1.6 connector 0
        StatusChanged(cid, 2, 1, "Occupied", None, later),
        Started(cid, 2, "tx-2", later, None, 0.0),  # another car on EVSE 2
        MeterValuesReceived(cid, 0, None, MeterSample(later, power_w=9000.0)),  # the station's meter
        MeterValuesReceived(cid, 2, "tx-2", MeterSample(later, power_w=6000.0, soc_percent=90)),
        TransactionEnded(cid, 2, "tx-2", later, "EVDisconnected", 500.0),
        StatusChanged(cid, 2, 1, "Available", "Occupied", later),
        TransactionEnded(cid, 0, "4711", later, "EVDisconnected", 800.0),  # 1.6: unknown transaction
    ]:
        daemon.router.handle_ocpp_event(event)
        assert car.plugged_in and car.measured_power_w == 3000.0, event
    assert [s.transaction_id for s in stored(daemon).open_sessions()] == ["tx-1"]
    assert [s.transaction_id for s in stored(daemon).sessions()] == ["tx-1"]
    assert not stored(daemon).events("unplug")
    # The car's transaction, stopped with its EVSE unknown (1.6 after a restart): it is the car's.
    daemon.router.handle_ocpp_event(TransactionEnded(cid, 0, "tx-1", later, "EVDisconnected", 1800.0))
    assert not car.plugged_in and not stored(daemon).open_sessions()
    assert stored(daemon).sessions()[0].stop_energy_wh == 1800.0
    stored(daemon).close()


def test_a_retained_outage_state_sets_it_only_while_none_is_known(tmp_path: Path) -> None:
    """The broker hands a retained "lost" out again on every reconnect: it must not refresh the outage
    (which then could never expire) nor raise it again after a live "ok" or its expiry."""
    daemon = example_daemon(tmp_path)
    inputs = daemon.inputs
    daemon.mqtt.ingest("grid/outage", b"lost", retained=True)  # nothing known yet: taken
    first = inputs.grid_state_at
    assert first is not None and inputs.is_grid_lost(first)
    daemon.mqtt.ingest("grid/outage", b"lost", retained=True)  # a reconnect: not a refresh
    assert inputs.grid_state_at == first
    assert not inputs.is_grid_lost(first + timedelta(seconds=901))  # expires as usual
    inputs.update_grid_state(False, first + timedelta(seconds=1))
    daemon.mqtt.ingest("grid/outage", b"lost", retained=True)
    assert not inputs.grid_lost
    assert not inputs.update_grid_state(True, first + timedelta(seconds=2), retained=True)
    assert inputs.update_grid_state(True, first + timedelta(seconds=3))  # a live "lost" counts
    stored(daemon).close()


async def test_the_daemon_loops_honour_a_cancel_that_lands_as_their_event_is_set() -> None:
    """The planner and dispatcher wait on an event; a stop landing just as it is set still stops them
    (``asyncio.wait_for`` on Python 3.11 swallowed it, and SIGTERM then hung the exit)."""
    import asyncio

    from controller.clock import SystemClock
    from controller.trigger import wait_for_event

    event = asyncio.Event()
    waiting = asyncio.create_task(wait_for_event(event, 60.0, SystemClock()))
    await asyncio.sleep(0)
    event.set()
    waiting.cancel()
    await asyncio.wait({waiting}, timeout=2.0)
    assert waiting.cancelled()


async def test_stopping_cancels_again_a_task_that_swallowed_the_first_cancel() -> None:
    import asyncio
    import contextlib

    from controller.tasks import cancel_and_wait

    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # as a library call may do
            await asyncio.sleep(30)
        await asyncio.sleep(30)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait([task]), 5.0)
    assert task.cancelled()


def test_the_daemon_gives_the_ev_limits_of_notify_ev_charging_needs_to_the_vehicle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Limits and the V2X window placed on the SoC of the same message; re-plan and re-send at once."""
    from controller.dispatch import Dispatcher
    from controller.ocpp import ChargingNeeds, ChargingNeedsReported, StatusChanged

    daemon = example_daemon(tmp_path)
    now = datetime.now(UTC)
    daemon.router.handle_ocpp_event(StatusChanged("wallbox-garage", 1, 1, "Occupied", "Available", now))
    forgotten: list[str] = []
    forget = Dispatcher.forget

    def recording_forget(self: Dispatcher, charger_id: str) -> None:
        forgotten.append(charger_id)
        forget(self, charger_id)

    monkeypatch.setattr(Dispatcher, "forget", recording_forget)
    daemon.planner_trigger.clear()
    daemon.dispatch_trigger.clear()
    needs = ChargingNeeds(
        evse_id=1,
        at=now,
        requested_energy_transfer="AC_BPT",
        soc_percent=50.0,
        min_v2x_energy_request_wh=-15_400.0,  # 20 % of the example car's 77 kWh
        max_v2x_energy_request_wh=23_100.0,  # 30 %
        max_charge_power_w=7400.0,
        max_discharge_power_w=3700.0,
    )
    daemon.router.handle_ocpp_event(ChargingNeedsReported("wallbox-garage", needs))
    car = daemon.site.vehicles["family-ev"]
    assert car.session_limits == SessionLimits(
        max_charge_power_w=7400.0, max_discharge_power_w=3700.0, min_soc_percent=30.0, max_soc_percent=80.0
    )
    assert "charging needs" in daemon.planner_trigger.reasons
    assert (
        daemon.dispatch_trigger.pending and "wallbox-garage" in forgotten
    )  # its next profile goes out anyway
    limits = stored(daemon).vehicle_states()["family-ev"]["session_limits"]
    assert limits["max_discharge_power_w"] == 3700.0
    stored(daemon).close()


def test_state_shows_each_chargers_last_profile_outcomes_and_a_rejection_publishes_soon(
    tmp_path: Path,
) -> None:
    from controller.config import OcppVersion
    from controller.ocpp import ProfileAnswered, ProfileRecord, ProfileStatus
    from controller.ocpp.model import ChargerModel
    from controller.views import charger_statuses, state_view

    daemon = example_daemon(tmp_path)
    now = datetime.now(UTC)
    never_seen = dict(daemon.state()["chargers"]["wallbox-garage"])
    assert never_seen.pop("at")
    assert never_seen == {
        "connected": False,
        "ocpp_version": None,
        "status": None,
        "transaction_id": None,
        "last_seen": None,
        "last_profile": None,
        "default_profile": None,
    }
    # The charger as the OCPP server would hold it once connected and answered.
    config = daemon.cfg.charger("wallbox-garage")
    assert config is not None
    model = ChargerModel(config, connected=True, ocpp_version=OcppVersion.V21)
    model.default_profile = ProfileRecord("TxDefaultProfile", ProfileStatus.ACCEPTED, {}, now)
    rejected = ProfileRecord("TxProfile", ProfileStatus.REJECTED, {}, now, reason="Rejected (TxNotFound)")
    model.last_profile = rejected
    daemon.router.handle_ocpp_event(ProfileAnswered("wallbox-garage", rejected))
    assert daemon.dispatch_trigger.pending and daemon.router.publish_soon  # the next tick publishes it
    state = state_view(
        daemon.site, daemon.plan, charger_statuses(daemon.cfg, {"wallbox-garage": model}, now), now
    )
    charger = json.loads(json.dumps(state, default=str))["chargers"]["wallbox-garage"]
    assert charger["connected"] is True and charger["ocpp_version"] == "2.1"
    assert charger["last_profile"]["status"] == "rejected" and charger["last_profile"]["accepted"] is False
    assert charger["last_profile"]["reason"] == "Rejected (TxNotFound)"
    assert charger["default_profile"]["status"] == "accepted" and charger["default_profile"]["reason"] is None
    ((_, _, body),) = stored(daemon).events("profile_not_accepted")
    assert body["status"] == "rejected" and body["purpose"] == "TxProfile"
    stored(daemon).close()


def test_the_snapshot_carries_the_weekly_schedules_usual_trips() -> None:
    rule = {"time": "07:30", "target_soc_percent": 70, "return_time": "17:30"}
    site = make(departures={"wednesday": rule})
    car = site.vehicles["car"]
    car.plugged_in = True
    steps = np.zeros(4 * 36)  # Tuesday 17:05 UTC to Wednesday evening
    [trip] = by_id(site.snapshot(T0, steps, steps), "car").away
    assert (trip.depart, trip.arrive) == (
        datetime(2026, 11, 25, 6, 30, tzinfo=UTC),
        datetime(2026, 11, 25, 16, 30, tzinfo=UTC),
    )
    assert trip.energy_kwh == pytest.approx(50 * 18 / 100) and trip.target_soc_percent == 70
    # A rule without a return says nothing about one: the departure alone plans the car as gone.
    assert by_id(make().snapshot(T0, steps, steps), "car").away == []

    # A weekly command may move the day and its return; it survives a restart with the return.
    command = SetWeeklyDeparture("car", "wednesday", time(8, 0), 75.0, return_time=time(18, 0))
    site.apply_command(command, T0)
    [trip] = by_id(site.snapshot(T0, steps, steps), "car").away
    assert (trip.depart, trip.arrive) == (
        datetime(2026, 11, 25, 7, 0, tzinfo=UTC),
        datetime(2026, 11, 25, 17, 0, tzinfo=UTC),
    )
    again = make(departures={"wednesday": rule})
    for kind, body in site.overrides(car).items():
        again.restore_overrides("car", kind, body, T0)
    assert again.vehicles["car"].weekly == car.weekly
    assert again.vehicles["car"].weekly["wednesday"] is not None
    assert again.vehicles["car"].weekly["wednesday"].return_time == time(18, 0)


def test_the_published_controller_state_counts_each_meters_dropped_readings(tmp_path: Path) -> None:
    from controller.mqtt.payloads import controller_payload
    from controller.views import controller_status

    daemon = example_daemon(tmp_path)
    meters = [m.id for m in daemon.cfg.meters]
    for _ in range(3):
        daemon.site.inputs.count_dropped(meters[0])
    published = json.loads(controller_payload(controller_status(daemon.site, None, datetime.now(UTC))))
    assert published["dropped_readings"] == {m: (3 if m == meters[0] else 0) for m in meters}
    stored(daemon).close()
