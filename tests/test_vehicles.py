"""SoC tracking by energy counting and the next departure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from controller.config import VehicleConfig, load_config
from controller.domain import Departure
from controller.snapshot import Trip
from controller.vehicles import SocTracker, next_departure, scheduled_trips
from tests.conftest import EXAMPLE_ENV

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)  # a Tuesday, 18:00 in Amsterdam


def vehicle() -> VehicleConfig:
    return load_config(ROOT / "configs" / "home.example.yaml", env=EXAMPLE_ENV).vehicles[0]


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


# ------------------------------------------------------------------ scheduled trips

AMSTERDAM = "Europe/Amsterdam"


def commuter(**departures: dict[str, object]) -> VehicleConfig:
    """The example car, 40 km at 17 kWh/100 km a trip; by default out 07:30-17:00 on weekdays."""
    weekday = {"time": "07:30", "target_soc_percent": 80, "return_time": "17:00"}
    rules = departures or {day: weekday for day in ("monday", "tuesday", "wednesday", "thursday", "friday")}
    return VehicleConfig.model_validate(
        {**vehicle().model_dump(), "typical_trip_km": 40.0, "departures": rules}
    )


def local(day: int, hour: int, minute: int = 0, month: int = 11, year: int = 2026) -> datetime:
    """A wall-clock time in Amsterdam as an aware UTC datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(AMSTERDAM)).astimezone(UTC)


def spans(trips: list[Trip]) -> list[tuple[datetime, datetime]]:
    return [(t.depart, t.arrive) for t in trips]


def test_scheduled_trips_cover_the_horizon_from_the_rules_with_a_return() -> None:
    car = commuter()
    now = local(24, 18)  # Tuesday 18:00: today's trip is over
    trips = scheduled_trips(
        car, now, now + timedelta(hours=48), AMSTERDAM, plugged_in=True, next_departure=None
    )
    assert spans(trips) == [(local(25, 7, 30), local(25, 17)), (local(26, 7, 30), local(26, 17))]
    assert all(t.energy_kwh == pytest.approx(40 * 17 / 100) and t.target_soc_percent == 80 for t in trips)
    # The horizon end cuts: a trip counts when it departs before the end.
    assert (
        len(scheduled_trips(car, now, local(26, 7, 30), AMSTERDAM, plugged_in=True, next_departure=None)) == 1
    )
    assert (
        len(scheduled_trips(car, now, local(26, 7, 31), AMSTERDAM, plugged_in=True, next_departure=None)) == 2
    )
    # The weekend has no rules: Friday evening to Monday evening holds Monday's trip only.
    friday = local(27, 18)
    weekend = scheduled_trips(
        car, friday, friday + timedelta(days=3), AMSTERDAM, plugged_in=True, next_departure=None
    )
    assert spans(weekend) == [(local(30, 7, 30), local(30, 17))]


def test_rules_without_a_return_give_no_trip() -> None:
    car = commuter(
        monday={"time": "07:30", "target_soc_percent": 80},
        tuesday={"time": "08:00", "target_soc_percent": 60, "return_time": "12:15"},
    )
    now = local(22, 12)  # Sunday
    trips = scheduled_trips(
        car, now, now + timedelta(days=3), AMSTERDAM, plugged_in=True, next_departure=None
    )
    assert spans(trips) == [(local(24, 8), local(24, 12, 15))]
    assert trips[0].target_soc_percent == 60
    no_returns = commuter(monday={"time": "07:30", "target_soc_percent": 80})
    assert scheduled_trips(no_returns, now, now + timedelta(days=3), AMSTERDAM, plugged_in=True) == []


def test_a_trip_under_way_counts_only_while_the_car_is_unplugged() -> None:
    car = commuter()
    now = local(24, 12)  # Tuesday noon: the scheduled trip runs 07:30-17:00
    end = now + timedelta(hours=24)
    away = scheduled_trips(car, now, end, AMSTERDAM, plugged_in=False, next_departure=None)
    # Under way: from now on with the whole trip's energy (the SoC was read before it left), no target.
    assert spans(away) == [(now, local(24, 17)), (local(25, 7, 30), local(25, 17))]
    assert away[0].energy_kwh == pytest.approx(40 * 17 / 100) and away[0].target_soc_percent is None
    home = scheduled_trips(car, now, end, AMSTERDAM, plugged_in=True, next_departure=None)
    assert spans(home) == [(local(25, 7, 30), local(25, 17))]  # back early, or stayed home
    # Past the return time a late car is not on today's trip any more.
    late = scheduled_trips(car, local(24, 17), end, AMSTERDAM, plugged_in=False, next_departure=None)
    assert spans(late) == [(local(25, 7, 30), local(25, 17))]
    # A trip that starts right now is not under way yet: it counts while plugged in too.
    leaving = scheduled_trips(car, local(24, 7, 30), end, AMSTERDAM, plugged_in=True, next_departure=None)
    assert spans(leaving)[0] == (local(24, 7, 30), local(24, 17))


def test_an_announced_departure_moves_that_days_trip() -> None:
    car = commuter()
    now = local(24, 20)  # Tuesday evening
    end = now + timedelta(hours=48)
    early = Departure(local(25, 6, 10), 95.0)  # a one-off: Wednesday earlier, fuller
    trips = scheduled_trips(car, now, end, AMSTERDAM, plugged_in=True, next_departure=early)
    assert spans(trips) == [(local(25, 6, 10), local(25, 17)), (local(26, 7, 30), local(26, 17))]
    assert [t.target_soc_percent for t in trips] == [95.0, 80]
    later = Departure(local(25, 11), 70.0)  # the charger says 11:00 (before the 17:00 return)
    assert spans(scheduled_trips(car, now, end, AMSTERDAM, plugged_in=True, next_departure=later))[0] == (
        local(25, 11),
        local(25, 17),
    )
    # Leaving at or after the usual return: no return known that day, so no trip.
    evening = Departure(local(25, 17), 70.0)
    assert spans(scheduled_trips(car, now, end, AMSTERDAM, plugged_in=True, next_departure=evening)) == [
        (local(26, 7, 30), local(26, 17))
    ]
    # On a day without a rule it changes nothing; the schedule's own departure neither.
    sunday = Departure(local(29, 9), 70.0)
    friday = local(27, 20)
    assert spans(
        scheduled_trips(
            car, friday, friday + timedelta(days=3), AMSTERDAM, plugged_in=True, next_departure=sunday
        )
    ) == [(local(30, 7, 30), local(30, 17))]
    schedule = next_departure(car, now, AMSTERDAM)
    assert scheduled_trips(
        car, now, end, AMSTERDAM, plugged_in=True, next_departure=schedule
    ) == scheduled_trips(car, now, end, AMSTERDAM, plugged_in=True, next_departure=None)
    # It moves a trip already under way when the car is still at home (leaving later than usual).
    stayed = Departure(local(24, 9), 80.0)
    late_start = scheduled_trips(car, local(24, 8), end, AMSTERDAM, plugged_in=True, next_departure=stayed)
    assert spans(late_start)[0] == (local(24, 9), local(24, 17))


@pytest.mark.parametrize(
    ("day", "utc_offset_h"), [(28, 1), (29, 2)], ids=["before-spring-forward", "after-spring-forward"]
)
def test_scheduled_trips_keep_local_wall_clock_times_across_dst(day: int, utc_offset_h: int) -> None:
    """Clocks go 02:00 -> 03:00 on Sunday 29 March 2026 and back on Sunday 25 October 2026."""
    every_day = {"time": "07:30", "target_soc_percent": 80, "return_time": "17:00"}
    car = commuter(**{d: every_day for d in ("friday", "saturday", "sunday", "monday")})
    now = datetime(2026, 3, 27, 12, tzinfo=UTC)  # Friday
    trips = scheduled_trips(
        car, now, now + timedelta(days=4), AMSTERDAM, plugged_in=True, next_departure=None
    )
    assert len(trips) == 3  # Saturday, Sunday, Monday
    trip = next(t for t in trips if t.depart.astimezone(ZoneInfo(AMSTERDAM)).day == day)
    assert trip.depart == datetime(2026, 3, day, 7 - utc_offset_h, 30, tzinfo=UTC)
    assert trip.arrive == datetime(2026, 3, day, 17 - utc_offset_h, tzinfo=UTC)
    autumn = datetime(2026, 10, 24, 12, tzinfo=UTC)  # Saturday; Sunday has 25 hours
    october = scheduled_trips(
        car, autumn, autumn + timedelta(days=2), AMSTERDAM, plugged_in=True, next_departure=None
    )
    assert spans(october) == [
        (datetime(2026, 10, 25, 6, 30, tzinfo=UTC), datetime(2026, 10, 25, 16, tzinfo=UTC)),
        (datetime(2026, 10, 26, 6, 30, tzinfo=UTC), datetime(2026, 10, 26, 16, tzinfo=UTC)),
    ]


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


def test_the_planner_takes_the_whole_of_a_trip_under_way_off_the_soc_read_before_it() -> None:
    import json

    from controller.optimizer import Planner
    from controller.snapshot import Snapshot

    cfg = load_config(ROOT / "configs" / "home.example.yaml", env=EXAMPLE_ENV)
    base = json.loads((ROOT / "configs" / "snapshots" / "evening-peak.json").read_text())
    now = datetime.fromisoformat(base["time"])  # Friday 17:00 in Amsterdam
    car = commuter(friday={"time": "08:00", "target_soc_percent": 80, "return_time": "18:00"})
    away = scheduled_trips(car, now, now + timedelta(days=1), AMSTERDAM, plugged_in=False)
    vehicle = {"id": car.id, "soc_percent": 60, "plugged_in": False, "away": [t.model_dump() for t in away]}
    plan = Planner(cfg).plan(Snapshot.model_validate({**base, "vehicles": [vehicle]}))
    back = 4  # 18:00, four 15-minute steps on
    expected = 60 - 100 * (40 * 17 / 100) / car.usable_capacity_kwh
    assert plan.vehicles[car.id].soc_percent[back] == pytest.approx(expected, abs=0.1)


def test_an_announced_departure_replaces_its_days_rule_even_when_later() -> None:
    car = commuter()
    now = local(24, 20)  # Tuesday evening; Wednesday's rule is 07:30
    later = Departure(local(25, 9, 15), 90.0)
    # Wednesday leaves at 09:15 as announced, not at the rule's 07:30 (the earlier of the two).
    assert next_departure(car, now, AMSTERDAM, one_off=later) == later
    assert next_departure(car, now, AMSTERDAM, from_charger=later) == later
    trips = scheduled_trips(
        car, now, now + timedelta(hours=30), AMSTERDAM, plugged_in=True, next_departure=later
    )
    assert spans(trips) == [(local(25, 9, 15), local(25, 17))]
    # On another date it replaces nothing: Wednesday's rule comes first.
    thursday = Departure(local(26, 9, 15), 90.0)
    wednesday = next_departure(car, now, AMSTERDAM, one_off=thursday)
    assert wednesday is not None and wednesday.at == local(25, 7, 30)
    # Announced after the day's rule has passed: simply the next one.
    morning = local(25, 8)
    same_day = Departure(local(25, 11), 70.0)
    assert next_departure(car, morning, AMSTERDAM, one_off=same_day) == same_day
    # Once it has passed, the day's rule does not come back: Thursday's is next.
    after = next_departure(car, local(25, 9, 30), AMSTERDAM, one_off=later)
    assert after == Departure(local(26, 7, 30), 80)


def test_a_learnt_lead_moves_weekly_departures_and_their_trips_not_announced_ones() -> None:
    car = commuter()
    now = local(24, 20)
    leads = {"wednesday": timedelta(minutes=25)}
    early = next_departure(car, now, AMSTERDAM, leads=leads)
    assert early == Departure(local(25, 7, 5), 80)
    trips = scheduled_trips(
        car, now, now + timedelta(hours=48), AMSTERDAM, plugged_in=True, next_departure=early, leads=leads
    )
    assert spans(trips) == [(local(25, 7, 5), local(25, 17)), (local(26, 7, 30), local(26, 17))]
    announced = Departure(local(25, 8), 90.0)
    assert next_departure(car, now, AMSTERDAM, one_off=announced, leads=leads) == announced
