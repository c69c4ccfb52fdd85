"""The plant: energy is conserved at every step, and physics clamps whatever is asked of it."""

from __future__ import annotations

from datetime import timedelta

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
