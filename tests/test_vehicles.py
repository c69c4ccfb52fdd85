"""SoC tracking by energy counting and the next departure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.config import VehicleConfig, load_config
from controller.domain import Departure
from controller.vehicles import SocTracker, next_departure

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)  # a Tuesday, 18:00 in Amsterdam


def vehicle() -> VehicleConfig:
    return load_config(ROOT / "configs" / "home.example.yaml", env={}).vehicles[0]


def test_energy_counting_between_readings() -> None:
    tracker = SocTracker(vehicle())
    tracker.on_soc(50.0, T0, "ocpp")
    tracker.on_power(7700.0, T0)
    tracker.on_power(7700.0, T0 + timedelta(minutes=10))
    estimate = tracker.estimate()
    assert estimate is not None and estimate.measured
    charged_kwh = 7.7 * (10 / 60) * 0.92
    assert estimate.soc_percent == pytest.approx(50.0 + 100 * charged_kwh / 77)
    tracker.on_power(-7700.0, T0 + timedelta(minutes=20))  # the interval before was still charging
    tracker.on_power(0.0, T0 + timedelta(minutes=30))
    drawn_kwh = 7.7 * (10 / 60) / 0.92
    final = tracker.estimate()
    assert final is not None
    assert final.soc_percent == pytest.approx(50.0 + 100 * (2 * charged_kwh - drawn_kwh) / 77)
    tracker.on_soc(55.0, T0 + timedelta(minutes=31), "ocpp")  # a reading corrects the count
    corrected = tracker.estimate()
    assert corrected is not None and corrected.soc_percent == 55.0


def test_old_readings_do_not_overwrite_newer_ones() -> None:
    tracker = SocTracker(vehicle())
    tracker.on_soc(60.0, T0, "ocpp")
    tracker.on_soc(40.0, T0 - timedelta(minutes=5), "mqtt")
    tracker.on_soc(140.0, T0 + timedelta(minutes=5), "mqtt")
    estimate = tracker.estimate()
    assert estimate is not None and estimate.soc_percent == 60.0


def test_a_long_gap_makes_the_soc_an_estimate() -> None:
    tracker = SocTracker(vehicle())
    tracker.on_soc(60.0, T0, "ocpp")
    tracker.on_power(3000.0, T0)
    tracker.on_power(3000.0, T0 + timedelta(hours=1))
    estimate = tracker.estimate()
    assert estimate is not None and not estimate.measured and estimate.soc_percent == 60.0


def test_arrival_without_soc_is_estimated_from_the_trip() -> None:
    tracker = SocTracker(vehicle())
    assert tracker.estimate() is None
    tracker.on_soc(80.0, T0, "ocpp")
    tracker.on_departure()
    tracker.on_arrival(T0 + timedelta(hours=9))
    estimate = tracker.estimate()
    assert estimate is not None and not estimate.measured
    assert estimate.soc_percent == pytest.approx(80.0 - 100 * 40 * 0.17 / 77)


def test_next_departure_from_weekly_schedule_in_local_time() -> None:
    departure = next_departure(vehicle(), T0, "Europe/Amsterdam")
    assert departure is not None
    assert departure.at == datetime(2026, 11, 25, 6, 30, tzinfo=UTC)  # Wednesday 07:30 CET
    assert departure.target_soc_percent == 80
    # Saturday 12:00 local: Sunday has no rule, Monday 07:30 is next.
    saturday_noon = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)
    monday = next_departure(vehicle(), saturday_noon, "Europe/Amsterdam")
    assert monday is not None and monday.at == datetime(2026, 11, 30, 6, 30, tzinfo=UTC)


def test_one_off_and_charger_departures_win_when_earlier() -> None:
    early = Departure(T0 + timedelta(hours=2), 90.0)
    assert next_departure(vehicle(), T0, "Europe/Amsterdam", one_off=early) == early
    past = Departure(T0 - timedelta(hours=2), 90.0)
    chosen = next_departure(vehicle(), T0, "Europe/Amsterdam", one_off=past)
    assert chosen is not None and chosen.at > T0
    late = Departure(T0 + timedelta(days=3), 90.0)
    ev_needs = Departure(T0 + timedelta(hours=5), 70.0)
    assert next_departure(vehicle(), T0, "Europe/Amsterdam", one_off=late, from_charger=ev_needs) == ev_needs


# ------------------------------------------------------------------ energy registers, V2L, estimates

CAPACITY_WH = 77_000.0  # the example car: 77 kWh, 92 % each way, 11 kW charge, 10 kW discharge


def into_battery(energy_wh: float) -> float:
    """SoC percent points that ``energy_wh`` at the charger (+ charging) moves the example car."""
    battery_wh = energy_wh * 0.92 if energy_wh >= 0 else energy_wh / 0.92
    return 100.0 * battery_wh / CAPACITY_WH


def soc(tracker: SocTracker) -> float:
    estimate = tracker.estimate()
    assert estimate is not None
    return estimate.soc_percent


def test_energy_registers_count_import_and_export_and_give_the_power() -> None:
    tracker = SocTracker(vehicle())
    tracker.on_soc(50.0, T0, "ocpp")
    tracker.on_meter(T0, energy_import_wh=10_000.0, energy_export_wh=2_000.0)
    assert soc(tracker) == 50.0 and tracker.power_w is None  # one sample: nothing to count yet
    tracker.on_meter(T0 + timedelta(minutes=10), energy_import_wh=11_000.0, energy_export_wh=2_000.0)
    assert soc(tracker) == pytest.approx(50.0 + into_battery(1000.0))
    assert tracker.power_w == pytest.approx(6000.0)  # 1 kWh in 10 min
    tracker.on_meter(T0 + timedelta(minutes=20), energy_import_wh=11_000.0, energy_export_wh=2_500.0)
    assert soc(tracker) == pytest.approx(50.0 + into_battery(1000.0) + into_battery(-500.0))
    assert tracker.power_w == pytest.approx(-3000.0)
    estimate = tracker.estimate()
    assert estimate is not None and estimate.measured
    assert estimate.at == T0 + timedelta(minutes=20) and estimate.read_at == T0  # counted, not read


def test_registers_win_over_power_and_count_only_after_a_reading() -> None:
    tracker = SocTracker(vehicle())
    tracker.on_meter(T0, power_w=7000.0, energy_import_wh=5_000.0)
    tracker.on_soc(40.0, T0 + timedelta(minutes=5), "mqtt")  # a reading halfway through the interval
    tracker.on_meter(T0 + timedelta(minutes=10), power_w=9000.0, energy_import_wh=6_000.0)
    # The registers say 1 kWh over 10 min (the power said 7 kW); half of it came after the reading.
    assert soc(tracker) == pytest.approx(40.0 + into_battery(500.0))
    assert tracker.power_w == 9000.0  # a power sample is the power now


def test_a_register_reset_or_jump_creates_no_energy() -> None:
    tracker = SocTracker(vehicle())
    tracker.on_soc(50.0, T0, "ocpp")
    tracker.on_meter(T0, energy_import_wh=20_000.0)
    tracker.on_meter(T0 + timedelta(minutes=1), energy_import_wh=50.0)  # reset: backwards
    assert soc(tracker) == 50.0
    estimate = tracker.estimate()
    assert estimate is not None and not estimate.measured  # that minute went uncounted
    tracker.on_soc(50.0, T0 + timedelta(minutes=1), "ocpp")  # read again at the reset
    tracker.on_meter(T0 + timedelta(minutes=3), energy_import_wh=100.0)  # counts on from the reset
    assert soc(tracker) == pytest.approx(50.0 + into_battery(50.0))
    # 20 kWh within a minute is far more than the car's 11 kW: a jump, not energy.
    tracker.on_meter(T0 + timedelta(minutes=4), energy_import_wh=20_100.0)
    assert soc(tracker) == pytest.approx(50.0 + into_battery(50.0))
    assert tracker.power_w is None


def test_an_unusable_register_interval_falls_back_to_power() -> None:
    tracker = SocTracker(vehicle())
    tracker.on_soc(50.0, T0, "ocpp")
    tracker.on_meter(T0, power_w=6000.0, energy_import_wh=9_000.0)
    tracker.on_meter(T0 + timedelta(minutes=10), power_w=6000.0, energy_import_wh=0.0)  # a reset
    assert soc(tracker) == pytest.approx(50.0 + into_battery(1000.0))  # 6 kW for 10 min
    estimate = tracker.estimate()
    assert estimate is not None and estimate.measured


def test_an_import_register_alone_does_not_hide_a_discharge() -> None:
    tracker = SocTracker(vehicle())
    tracker.on_soc(50.0, T0, "ocpp")
    tracker.on_meter(T0, power_w=-6000.0, energy_import_wh=9_000.0)
    tracker.on_meter(T0 + timedelta(minutes=10), power_w=-6000.0, energy_import_wh=9_000.0)
    assert soc(tracker) == pytest.approx(50.0 + into_battery(-1000.0))  # counted from the power


def test_a_gap_between_register_samples_is_counted_without_a_power_spike() -> None:
    tracker = SocTracker(vehicle())
    tracker.on_soc(30.0, T0, "ocpp")
    tracker.on_meter(T0, energy_import_wh=1_000.0)
    tracker.on_meter(T0 + timedelta(minutes=1), energy_import_wh=1_100.0)
    assert tracker.power_w == pytest.approx(6000.0)
    # The charger was silent for an hour: the registers still say what went in (7 kWh), so the SoC
    # stays measured, but a mean over an hour is not the power now.
    tracker.on_meter(T0 + timedelta(hours=1, minutes=1), energy_import_wh=8_100.0)
    assert soc(tracker) == pytest.approx(30.0 + into_battery(7100.0))
    estimate = tracker.estimate()
    assert estimate is not None and estimate.measured and tracker.power_w is None
    # Samples a second apart with a 1 Wh register step: no 3.6 kW reading from one step.
    for second in range(1, 5):
        tracker.on_meter(
            T0 + timedelta(hours=1, minutes=1, seconds=second), energy_import_wh=8_100.0 + second
        )
    assert tracker.power_w is None
    tracker.on_meter(T0 + timedelta(hours=1, minutes=1, seconds=12), energy_import_wh=8_112.0)
    assert tracker.power_w == pytest.approx(3600.0)  # 12 Wh over 12 s
    # A power-only gap is not bridged (the old power over an hour would be a spike).
    tracker.on_power(11_000.0, T0 + timedelta(hours=2))
    tracker.on_power(11_000.0, T0 + timedelta(hours=3))
    late = tracker.estimate()
    assert late is not None and not late.measured


def test_a_v2l_draw_drains_the_soc_between_readings() -> None:
    tracker = SocTracker(vehicle())
    tracker.on_v2l(2000.0, T0 - timedelta(minutes=5))  # before the reading: in the reading already
    tracker.on_soc(60.0, T0, "mqtt")
    tracker.on_v2l(3000.0, T0 + timedelta(minutes=1))  # the 2 kW of before counts from the reading on
    tracker.on_v2l(3000.0, T0 + timedelta(minutes=11))
    drawn_wh = 2000.0 / 60 + 3000.0 * 10 / 60
    assert soc(tracker) == pytest.approx(60.0 + into_battery(-drawn_wh))
    estimate = tracker.estimate()
    assert estimate is not None and estimate.measured and estimate.read_at == T0
    tracker.on_v2l(0.0, T0 + timedelta(minutes=30))  # silent for 19 min while drawing: unknown
    after_gap = tracker.estimate()
    assert after_gap is not None and not after_gap.measured


def test_a_soc_of_unknown_age_is_only_a_starting_estimate() -> None:
    tracker = SocTracker(vehicle())
    tracker.on_soc(40.0, T0, "mqtt (retained)", measured=False)
    estimate = tracker.estimate()
    assert estimate is not None and estimate.soc_percent == 40.0 and not estimate.measured
    tracker.on_soc(45.0, T0 + timedelta(minutes=1), "mqtt")
    tracker.on_soc(30.0, T0 + timedelta(minutes=2), "mqtt (retained)", measured=False)
    live = tracker.estimate()
    assert live is not None and live.soc_percent == 45.0 and live.measured  # a real reading wins
