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
