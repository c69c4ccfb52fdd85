"""The charger model: what a charger delivers of the pieces it is told over a step, per minute."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.config import ChargerConfig
from controller.dispatch.duty_cycle import step_pulse
from sim.charger_model import ChargerModel, delivery_phases, pulse_pieces

STEP_S = 900


def ac_box(**changes: object) -> ChargerConfig:
    """A 3-phase 11 kW bidirectional AC box at 6 A minimum: 4.14 kW on three phases, 1.38 kW on one."""
    data: dict[str, object] = {
        "id": "wb",
        "max_charge_kw": 11.0,
        "max_discharge_kw": 10.0,
        "bidirectional": True,
        "min_current_a": 6.0,
    }
    data.update(changes)
    return ChargerConfig.model_validate(data)


def model(
    charger: ChargerConfig | None = None, car_charge_w: float = 11_000.0, car_discharge_w: float = 10_000.0
) -> ChargerModel:
    return ChargerModel(ac_box() if charger is None else charger, car_charge_w, car_discharge_w)


@pytest.mark.parametrize("request_w", [1.0, 1000.0, 4139.0, -1.0, -2000.0, -4139.0])
def test_a_request_between_zero_and_the_minimum_pauses(request_w: float) -> None:
    charger = model()
    assert charger.delivered_w(request_w, 3) == 0.0
    assert charger.follow(((0.0, request_w, 3),), STEP_S).tolist() == [0.0] * 15


@pytest.mark.parametrize("request_w", [4140.0, -4140.0, 7000.0, -9000.0])
def test_a_request_at_or_above_the_minimum_runs(request_w: float) -> None:
    assert model().delivered_w(request_w, 3) == request_w


def test_a_request_above_the_maximum_is_capped_by_charger_phases_and_car() -> None:
    switching = model(ac_box(phase_switching=True))
    assert switching.delivered_w(20_000.0, 3) == 11_000.0
    assert switching.delivered_w(-20_000.0, 3) == -10_000.0
    assert switching.delivered_w(5000.0, 1) == pytest.approx(11_000.0 / 3)  # one phase: a third
    assert switching.delivered_w(1380.0, 1) == 1380.0  # 6 A on one phase runs
    assert switching.delivered_w(1379.0, 1) == 0.0
    assert model(car_charge_w=7400.0).delivered_w(11_000.0, 3) == 7400.0  # the car's own limit
    assert model(car_discharge_w=0.0).delivered_w(-5000.0, 3) == 0.0
    one_way = model(ac_box(max_discharge_kw=0.0, bidirectional=False))
    assert one_way.delivered_w(-5000.0, 3) == 0.0
    assert model().delivered_w(float("nan"), 3) == 0.0


def test_a_charger_that_cannot_switch_runs_on_all_its_phases() -> None:
    fixed = model()
    assert fixed.run_phases(1) == 3
    assert fixed.delivered_w(2000.0, 1) == 0.0  # below the 3-phase minimum it actually runs at
    assert model(ac_box(phase_switching=True)).run_phases(1) == 1


def test_configured_minimum_in_watts_for_dc_boxes() -> None:
    dc = model(ac_box(min_charge_w=500.0, min_discharge_w=800.0))
    assert dc.delivered_w(600.0, 3) == 600.0
    assert dc.delivered_w(-600.0, 3) == 0.0
    assert dc.delivered_w(-800.0, 3) == -800.0


def test_a_pulse_ending_mid_minute_is_energy_exact() -> None:
    # 4.14 kW until 7 min 15 s: seven full minutes, a quarter of the eighth, then nothing.
    minutes = model().follow(((0.0, 4140.0, 3), (435.0, 0.0, 3)), STEP_S)
    assert minutes[:7].tolist() == [4140.0] * 7
    assert minutes[7] == pytest.approx(4140.0 / 4)
    assert minutes[8:].tolist() == [0.0] * 7
    assert float(minutes.sum()) * 60.0 == pytest.approx(4140.0 * 435.0)


def test_pieces_change_inside_a_minute_and_idle_before_the_first() -> None:
    pieces = ((30.0, 6000.0, 3), (90.0, -5000.0, 3), (150.0, 2000.0, 3), (200.0, 0.0, 3))
    minutes = model().follow(pieces, 300)
    # minute 0: idle 30 s then 6 kW 30 s; minute 1: 6 kW 30 s, -5 kW 30 s; minute 2: -5 kW 30 s,
    # then 2 kW (below the minimum: paused); then nothing.
    assert minutes.tolist() == pytest.approx([3000.0, 500.0, -2500.0, 0.0, 0.0])
    assert model().follow(pieces, 300, resolution_s=30).tolist() == pytest.approx(
        [0.0, 6000.0, 6000.0, -5000.0, -5000.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    )


def test_pieces_at_or_before_the_start_replace_each_other() -> None:
    charger = model()
    assert charger.constant_w(((-60.0, 5000.0, 3), (0.0, 6000.0, 3)), STEP_S) == 6000.0
    assert charger.constant_w(((0.0, 5000.0, 3), (900.0, 0.0, 3)), STEP_S) == 5000.0  # at the end: not in it
    assert charger.constant_w(((0.0, 5000.0, 3), (60.0, 5000.0, 3)), STEP_S) == 5000.0
    assert charger.constant_w(((0.0, 5000.0, 3), (60.0, 6000.0, 3)), STEP_S) is None
    assert charger.constant_w((), STEP_S) == 0.0
    assert charger.constant_w(((60.0, 1000.0, 3),), STEP_S) == 0.0  # paused anyway


def test_bad_pieces_and_durations_are_refused() -> None:
    with pytest.raises(ValueError, match="order"):
        model().follow(((0.0, 5000.0, 3), (300.0, 0.0, 3), (120.0, 6000.0, 3)), STEP_S)
    with pytest.raises(ValueError, match="whole number"):
        model().follow(((0.0, 5000.0, 3),), 90)


def test_a_car_without_a_charger_has_only_its_own_limits() -> None:
    bare = ChargerModel(None, 7000.0, 5000.0)
    assert bare.delivered_w(500.0) == 500.0
    assert bare.delivered_w(9000.0) == 7000.0
    assert bare.delivered_w(-9000.0) == -5000.0


@settings(max_examples=80, deadline=None)
@given(
    cuts=st.lists(st.integers(1, STEP_S - 1), max_size=5, unique=True),
    powers=st.lists(st.floats(-12_000, 12_000, allow_nan=False), min_size=6, max_size=6),
)
def test_every_minute_is_the_exact_energy_average(cuts: list[int], powers: list[float]) -> None:
    offsets = [0, *sorted(cuts)]
    pieces = tuple((float(o), p, 3) for o, p in zip(offsets, powers, strict=False))
    charger = model()
    minutes = charger.follow(pieces, STEP_S)
    per_second = np.zeros(STEP_S)
    for (offset, power, phases), end in zip(pieces, [*offsets[1:], STEP_S], strict=True):
        per_second[int(offset) : end] = charger.delivered_w(power, phases)
    np.testing.assert_allclose(minutes, per_second.reshape(15, 60).mean(axis=1), atol=1e-6)


def test_pulse_pieces_and_the_phases_of_a_step_average() -> None:
    pulse = step_pulse(1000.0, 4140.0, STEP_S)
    assert pulse_pieces(pulse, 3) == ((0.0, 4140.0, 3), (float(pulse.on_s), 0.0, 3))
    assert pulse_pieces(step_pulse(5000.0, 4140.0, STEP_S), 3) == ((0.0, 5000.0, 3),)
    switching = ac_box(phase_switching=True)
    assert delivery_phases(switching, 2000.0) == 1
    assert delivery_phases(switching, -1000.0) == 1
    assert delivery_phases(switching, 3900.0) == 3  # one phase carries at most 3.67 kW
    assert delivery_phases(switching, 6000.0) == 3
    assert delivery_phases(ac_box(), 2000.0) == 3
