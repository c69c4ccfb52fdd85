"""The plant: energy is conserved at every step, and physics clamps whatever is asked of it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.plant import DepartureOutcome, Plant
from sim.scenario import Scenario, Trip
from tests.test_sim_support import START, tiny_config, tiny_scenario, tiny_series

requests = st.lists(st.floats(-20_000, 20_000, allow_nan=False), min_size=96, max_size=96)


@settings(max_examples=60, deadline=None)
@given(
    requested=requests,
    soc=st.floats(0, 100),
    trip_kwh=st.floats(0, 40),
    depart_h=st.integers(0, 20),
    away_h=st.integers(1, 6),
)
def test_energy_is_conserved_at_every_step(
    requested: list[float], soc: float, trip_kwh: float, depart_h: int, away_h: int
) -> None:
    depart = START + timedelta(hours=depart_h)
    scenario = Scenario(
        tiny_config(),
        tiny_series(1.0),
        (Trip("car", depart, depart + timedelta(hours=away_h), trip_kwh),),
        {"car": soc},
    )
    plant = Plant(scenario)
    series = scenario.series
    hours = series.step_hours
    spec = plant.specs[0]
    for k in range(series.steps):
        before = plant.energy_kwh[0]
        out = plant.step(k, [requested[k]], float(series.load_w[k]), float(series.pv_w[k]))
        after = out.energy_kwh[0]
        power = out.power_w[0]
        # Site balance: what the grid meter sees is the home plus the car.
        assert out.grid_w == pytest.approx(series.load_w[k] - series.pv_w[k] + power)
        # Energy: grid + PV in = load + stored change + losses + driving.
        grid_in_kwh = out.grid_w * hours / 1000.0
        pv_kwh = series.pv_w[k] * hours / 1000.0
        load_kwh = series.load_w[k] * hours / 1000.0
        assert grid_in_kwh + pv_kwh == pytest.approx(
            load_kwh + (after - before) + out.losses_kwh + out.drive_kwh, abs=1e-9
        )
        # Demanded trip energy is either driven or reported as unmet; the battery stays physical.
        assert out.drive_kwh + out.unmet_drive_kwh == pytest.approx(plant.drain_kwh[0, k], abs=1e-12)
        assert 0.0 <= after <= spec.capacity_kwh
        assert -spec.max_discharge_w - 1e-9 <= power <= spec.max_charge_w + 1e-9
        if not out.plugged_in[0]:
            assert power == 0.0


def test_losses_follow_the_efficiencies() -> None:
    scenario = tiny_scenario(soc=50.0)
    plant = Plant(scenario)
    out = plant.step(0, [4000.0], 0.0, 0.0)  # 1 kWh at the charger over 15 min
    assert out.energy_kwh[0] == pytest.approx(20.0 + 0.9)
    assert out.losses_kwh == pytest.approx(0.1)
    out = plant.step(1, [-4000.0], 0.0, 0.0)  # 1 kWh delivered takes 1/0.9 from the battery
    assert out.energy_kwh[0] == pytest.approx(20.9 - 1 / 0.9)
    assert out.losses_kwh == pytest.approx(1 / 0.9 - 1)


def test_clamps_power_rating_full_and_empty_battery_and_nan() -> None:
    plant = Plant(tiny_scenario(soc=99.5))
    out = plant.step(0, [50_000.0], 0.0, 0.0)
    assert out.energy_kwh[0] == pytest.approx(40.0)  # only the room left, never above capacity
    assert 0 < out.power_w[0] < 7000.0
    plant = Plant(tiny_scenario(soc=0.5))
    out = plant.step(0, [-50_000.0], 0.0, 0.0)
    assert out.energy_kwh[0] == pytest.approx(0.0, abs=1e-12)
    assert out.power_w[0] == pytest.approx(-0.2 * 0.9 / 0.25 * 1000.0)
    plant = Plant(tiny_scenario(soc=50))
    assert plant.step(0, [float("nan")], 0.0, 0.0).power_w[0] == 0.0
    assert plant.step(1, [20_000.0], 0.0, 0.0).power_w[0] == 7000.0
    assert plant.step(2, [-20_000.0], 0.0, 0.0).power_w[0] == -5000.0


def test_a_car_on_a_trip_takes_no_power_and_loses_the_trip_energy() -> None:
    scenario = tiny_scenario(soc=50.0)
    plant = Plant(scenario)
    trip = scenario.scheduled_trips[0]
    for k in range(trip.arrive_index):
        out = plant.step(k, [7000.0 if k >= trip.depart_index else 0.0], 0.0, 0.0)
        if k >= trip.depart_index:
            assert out.power_w[0] == 0.0 and not out.plugged_in[0]
    assert plant.energy_kwh[0] == pytest.approx(20.0 - trip.energy_kwh)


def test_an_empty_car_strands_the_rest_of_its_trip() -> None:
    scenario = Scenario(
        tiny_config(),
        tiny_series(1.0),
        (Trip("car", START, START + timedelta(hours=1), 10.0),),
        {"car": 10.0},
    )
    plant = Plant(scenario)
    unmet = sum(plant.step(k, [0.0], 0.0, 0.0).unmet_drive_kwh for k in range(4))
    assert plant.energy_kwh[0] == 0.0
    assert unmet == pytest.approx(6.0)


def test_departures_record_target_and_what_full_power_could_have_reached() -> None:
    scenario = tiny_scenario(soc=25.0)  # 10 kWh; target 28 kWh at 07:00 on Monday
    plant = Plant(scenario)
    trip = scenario.scheduled_trips[0]
    departures: list[DepartureOutcome] = []
    for k in range(trip.depart_index + 1):
        departures += plant.step(k, [0.0], 0.0, 0.0).departures  # the car is never charged
    (departure,) = departures
    assert departure.step == trip.depart_index
    assert departure.target_kwh == pytest.approx(28.0)
    assert departure.energy_kwh == pytest.approx(10.0)
    assert departure.reachable_kwh == pytest.approx(40.0)  # 7 h at 7 kW would have filled it
    assert departure.avoidable_shortfall_kwh == pytest.approx(18.0)


def test_unreachable_target_is_no_avoidable_shortfall() -> None:
    scenario = tiny_scenario(soc=21.0)
    trip = scenario.trips[0]
    late = Trip("car", START + timedelta(hours=1), trip.arrive, trip.energy_kwh)  # leaves at 01:00
    plant = Plant(Scenario(scenario.config, scenario.series, (late,), {"car": 21.0}))
    departures: list[DepartureOutcome] = []
    for k in range(5):
        departures += plant.step(k, [7000.0], 0.0, 0.0).departures
    (departure,) = departures
    assert departure.shortfall_kwh > 0
    assert departure.avoidable_shortfall_kwh == pytest.approx(0.0, abs=1e-9)
    assert np.isclose(departure.reachable_kwh, departure.energy_kwh)


# ------------------------------------------------------------------ inside a step

AC_CONFIG: dict[str, Any] = {
    "chargers__0__min_current_a": 6.0
}  # the tiny box at 6 A: 4.14 kW minimum on 3 phases


def ac_plant(soc: float = 50.0) -> Plant:
    return Plant(tiny_scenario(soc=soc, **AC_CONFIG))


def test_a_quarter_step_pulse_against_a_small_load_imports_and_exports_inside_the_step() -> None:
    plant = ac_plant()
    # A V2G car discharging at the 4.14 kW minimum for the first 225 s of the 15-minute step.
    out = plant.step(0, [-1035.0], 1000.0, 0.0, pieces=[((0.0, -4140.0, 3), (225.0, 0.0, 3))])
    minutes = out.minute_power_w[0]
    assert minutes.shape == (15,)
    assert minutes[:3].tolist() == [-4140.0] * 3 and minutes[3] == pytest.approx(-4140.0 * 0.75)
    assert minutes[4:].tolist() == [0.0] * 11
    assert out.power_w[0] == pytest.approx(-1035.0)
    assert out.grid_w == pytest.approx(-35.0)  # the step's average: a small net export
    # Inside the step: 11 minutes of the 1 kW load from the grid, and the pulse's surplus out.
    assert out.import_kwh == pytest.approx(11 * 1.0 / 60)
    assert out.export_kwh == pytest.approx((3 * 3.14 + (3.105 - 1.0)) / 60)
    netted_import = max(out.grid_w, 0.0) * 0.25 / 1000.0
    netted_export = max(-out.grid_w, 0.0) * 0.25 / 1000.0
    assert netted_import == 0.0 and netted_export == pytest.approx(0.00875)
    assert out.import_kwh - out.export_kwh == pytest.approx(out.grid_w * 0.25 / 1000.0)
    assert out.energy_kwh[0] == pytest.approx(20.0 - 4.14 * 225 / 3600 / 0.9)


def test_a_request_between_zero_and_the_charger_minimum_pauses() -> None:
    plant = ac_plant()
    out = plant.step(0, [1000.0], 500.0, 0.0)
    assert out.power_w[0] == 0.0 and out.energy_kwh[0] == pytest.approx(20.0)
    assert out.grid_w == 500.0 and out.import_kwh == pytest.approx(0.125)
    out = plant.step(1, [-3000.0], 500.0, 0.0)  # discharge below its minimum too
    assert out.power_w[0] == 0.0
    assert plant.step(2, [4140.0], 0.0, 0.0).power_w[0] == 4140.0


def test_a_car_filling_up_mid_step_imports_then_exports_pv() -> None:
    plant = Plant(tiny_scenario(soc=99.0))  # 0.4 kWh of room
    out = plant.step(0, [7000.0], 0.0, 3000.0)
    minutes = out.minute_power_w[0]
    # 7 kW fills 0.4 kWh (0.444 kWh AC) in 3.8 minutes; after that the PV goes out.
    assert minutes[:3].tolist() == [7000.0] * 3 and 0.0 < minutes[3] < 7000.0
    assert minutes[4:].tolist() == [0.0] * 11
    assert out.energy_kwh[0] == pytest.approx(40.0)
    assert out.import_kwh == pytest.approx((3 * 4.0 + (minutes[3] / 1000.0 - 3.0)) / 60)
    assert out.export_kwh == pytest.approx(11 * 3.0 / 60)
    assert out.grid_w < 0.0  # netted: an export only


def test_per_minute_load_and_pv_replace_the_steps_values() -> None:
    plant = Plant(tiny_scenario(soc=50.0))
    load = [3000.0] * 5 + [0.0] * 10
    out = plant.step(0, [-1000.0], 1000.0, 0.0, load_minutes_w=load)
    assert out.grid_minute_w.tolist() == [2000.0] * 5 + [-1000.0] * 10
    assert out.grid_w == pytest.approx(0.0)
    assert out.import_kwh == pytest.approx(10.0 / 60) and out.export_kwh == pytest.approx(10.0 / 60)


pieces = st.lists(
    st.tuples(st.integers(0, 899), st.floats(-9_000, 9_000, allow_nan=False)), min_size=1, max_size=4
)


@settings(max_examples=40, deadline=None)
@given(told=st.lists(pieces, min_size=6, max_size=6), soc=st.floats(0, 100), load=st.floats(0, 3000))
def test_energy_is_conserved_minute_by_minute(
    told: list[list[tuple[int, float]]], soc: float, load: float
) -> None:
    plant = Plant(tiny_scenario(soc=soc, **AC_CONFIG))
    spec = plant.specs[0]
    for k, raw in enumerate(told):
        step_pieces = tuple((float(o), p, 3) for o, p in sorted(dict(raw).items()))
        before = plant.energy_kwh[0]
        out = plant.step(k, [0.0], load, 500.0, pieces=[step_pieces])
        minutes = out.minute_power_w[0]
        assert out.power_w[0] == pytest.approx(float(minutes.mean()))
        assert out.grid_minute_w == pytest.approx(load - 500.0 + minutes)
        battery = np.where(minutes > 0, minutes * spec.charge_efficiency, minutes / spec.discharge_efficiency)
        assert out.energy_kwh[0] - before == pytest.approx(float(battery.sum()) / 60 / 1000, abs=1e-9)
        assert out.import_kwh - out.export_kwh == pytest.approx(out.grid_w * 0.25 / 1000.0, abs=1e-12)
        assert out.import_kwh >= max(out.grid_w, 0.0) * 0.25 / 1000.0 - 1e-12  # never below the netted
        assert 0.0 <= out.energy_kwh[0] <= spec.capacity_kwh
        assert -spec.max_discharge_w - 1e-9 <= minutes.min() and minutes.max() <= spec.max_charge_w + 1e-9
