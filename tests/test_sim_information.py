"""The controller never sees the future: only published prices, causal forecasts, past trips."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pytest

from controller.commands import SetDeparture
from controller.domain import Plan
from controller.snapshot import Snapshot
from sim.controlled import ModelPredictiveControl
from sim.engine import simulate
from sim.information import (
    InformationModel,
    NoisyForecast,
    OracleForecast,
    PriceKnowledge,
    make_forecast,
)
from sim.plant import Plant
from sim.runner import RunOptions
from sim.scenario import FloatArray, Scenario, Series, Trip
from sim.site_feed import SiteFeed
from tests.test_sim_support import tiny_config, tiny_scenario, tiny_series, tiny_trips

AMSTERDAM = "Europe/Amsterdam"
SPRING_FORWARD = datetime(2024, 3, 29, tzinfo=UTC)  # Friday; clocks go 02:00 -> 03:00 on Sunday 31 March
FALL_BACK = datetime(2024, 10, 25, tzinfo=UTC)  # Friday; clocks go 03:00 -> 02:00 on Sunday 27 October


def known_until(scenario: Scenario) -> npt.NDArray[np.int64]:
    return PriceKnowledge().known_until(scenario.series, scenario.config.site.timezone)


def dst_scenario(start: datetime, days: int = 4) -> Scenario:
    """A site in Amsterdam over a daylight-saving change."""
    return Scenario(
        tiny_config(site__timezone=AMSTERDAM),
        tiny_series(days, start),
        tiny_trips(days, start),
        {"car": 50.0},
        name="dst",
    )


def changed_after(
    scenario: Scenario,
    k: int,
    price_from: int,
    trip_energy: float | None = None,
    trip_times_from: int | None = None,
) -> Scenario:
    """The same world up to step ``k`` (prices up to ``price_from``), a different one after; trips
    departing from step ``trip_times_from`` on leave 2 h later and come back 1 h earlier."""
    s = scenario.series
    rng = np.random.default_rng(99)
    load, pv = s.load_w.copy(), s.pv_w.copy()
    load[k:] = rng.uniform(0, 5000, len(load) - k)
    pv[k:] = rng.uniform(0, 4000, len(pv) - k)
    imp, exp = s.import_price_per_kwh.copy(), s.export_price_per_kwh.copy()
    imp[price_from:] = rng.uniform(-0.2, 0.9, len(imp) - price_from)
    exp[price_from:] = imp[price_from:] * 0.5
    trips = scenario.trips
    if trip_energy is not None:
        trips = tuple(
            Trip(t.vehicle_id, t.depart, t.arrive, trip_energy) if t.depart >= s.time_at(k) else t
            for t in trips
        )
    if trip_times_from is not None:
        moved = s.time_at(trip_times_from)
        trips = tuple(
            Trip(t.vehicle_id, t.depart + timedelta(hours=2), t.arrive - timedelta(hours=1), t.energy_kwh)
            if t.depart >= moved
            else t
            for t in trips
        )
    series = Series(s.start, s.step, imp, exp, load, pv)
    return Scenario(scenario.config, series, trips, dict(scenario.initial_soc_percent), scenario.name)


def observe_at(scenario: Scenario, k: int, horizon: int = 200) -> tuple[object, ...]:
    plant = Plant(scenario)
    info = RunOptions().information(scenario, plant)
    info.advance_to(k)
    obs = info.observe(horizon)
    return (
        obs.import_price_per_kwh.tolist(),
        obs.export_price_per_kwh.tolist(),
        obs.load_w.tolist(),
        obs.pv_w.tolist(),
        obs.price_known_steps,
        obs.vehicles,
    )


@pytest.mark.parametrize("k", [0, 1, 30, 44, 45, 95, 130])
def test_an_observation_is_blind_to_what_is_not_yet_measured_or_published(k: int) -> None:
    scenario = tiny_scenario(days=3)
    assert_blind_after(scenario, k)


def assert_blind_after(scenario: Scenario, k: int) -> None:
    """Nothing from ``known_until`` on is visible at ``k``; the price just before it is."""
    known = int(known_until(scenario)[k])
    other = changed_after(scenario, k, known, trip_energy=25.0)
    assert observe_at(scenario, k) == observe_at(other, k)
    # ...and it does change when something it may know changes, up to the last published step.
    published = changed_after(scenario, k, k)
    assert observe_at(scenario, k)[0] != observe_at(published, k)[0]
    last = changed_after(scenario, k, known - 1)
    assert observe_at(scenario, k)[0] != observe_at(last, k)[0]


@pytest.mark.parametrize("start", [SPRING_FORWARD, FALL_BACK], ids=["march", "october"])
def test_published_prices_end_exactly_at_the_end_of_the_next_local_day_across_dst(start: datetime) -> None:
    """Checked step by step against the local calendar: before 12:00 local, prices are known until
    the end of today (local), from 12:00 until the end of tomorrow, on 23- and 25-hour days too."""
    scenario = dst_scenario(start)
    series = scenario.series
    zone = ZoneInfo(AMSTERDAM)
    local = [series.time_at(k).astimezone(zone) for k in range(series.steps)]
    known = known_until(scenario)
    for k, now in enumerate(local):
        last_day = now.date() + timedelta(days=1 if now.hour >= 12 else 0)
        expected = next((j for j in range(k, series.steps) if local[j].date() > last_day), None)
        if expected is None:  # beyond the scenario: the whole series is known
            assert known[k] >= series.steps, k
        else:
            assert known[k] == expected, (k, now)
    sunday = [now for now in local if now.date() == (start + timedelta(days=2)).date()]
    assert len(sunday) == (92 if start == SPRING_FORWARD else 100)  # the change is in the scenario


def test_summer_publication_is_at_ten_utc_and_covers_until_twenty_two_utc() -> None:
    scenario = dst_scenario(SPRING_FORWARD)
    known = known_until(scenario)
    sunday_noon_cest = (2 * 24 + 10) * 4  # Sunday 31 March 10:00 UTC = 12:00 CEST
    end_of_sunday = (2 * 24 + 22) * 4  # Monday 00:00 CEST = Sunday 22:00 UTC
    end_of_monday = end_of_sunday + 96
    assert known[sunday_noon_cest - 1] == end_of_sunday
    assert known[sunday_noon_cest] == end_of_monday  # not an hour later (as at a fixed UTC+1)
    saturday_noon_cet = (24 + 11) * 4
    assert known[saturday_noon_cet - 1] == (24 + 23) * 4  # Saturday ends at 23:00 UTC (CET)
    assert known[saturday_noon_cet] == end_of_sunday  # Sunday has 23 hours


@pytest.mark.parametrize("start", [SPRING_FORWARD, FALL_BACK], ids=["march", "october"])
@pytest.mark.parametrize("hour", [0, 9, 10, 11, 12, 23, 26])
def test_an_observation_is_blind_to_the_future_across_dst(start: datetime, hour: int) -> None:
    """Around the Sunday of the change (hours counted from Saturday 00:00 UTC)."""
    assert_blind_after(dst_scenario(start), (24 + hour) * 4)


def test_day_ahead_prices_are_published_at_noon_local_for_the_next_day() -> None:
    series = tiny_series(3.0)  # starts Monday 00:00 UTC = 01:00 local (CET, UTC+1)
    known = PriceKnowledge().known_until(series, AMSTERDAM)
    before_noon = 10 * 4 + 3  # 10:45 UTC = 11:45 local
    at_noon = 11 * 4  # 11:00 UTC = 12:00 local
    end_of_today = 23 * 4  # local midnight = 23:00 UTC
    assert known[0] == end_of_today
    assert known[before_noon] == end_of_today
    assert known[at_noon] == end_of_today + 96
    assert known[end_of_today] == end_of_today + 96  # the new day is known since yesterday noon
    assert PriceKnowledge(all_known=True).known_until(series, AMSTERDAM)[0] == series.steps
    utc = PriceKnowledge().known_until(series, "UTC")
    assert (utc[0], utc[47], utc[48]) == (96, 96, 192)  # a site in UTC: noon UTC, UTC days


def test_unpublished_prices_are_taken_from_a_day_earlier() -> None:
    scenario = tiny_scenario(days=3, site__timezone=AMSTERDAM)  # CET: days end at 23:00 UTC
    plant = Plant(scenario)
    info = InformationModel(scenario, plant)
    info.advance_to(4)
    obs = info.observe(96)
    prices = scenario.series.import_price_per_kwh
    assert obs.price_known_steps == 92 - 4
    assert obs.import_price_per_kwh[:88].tolist() == prices[4:92].tolist()
    # A day earlier where there is one; before the first day, the last published price is held.
    assert obs.import_price_per_kwh[88:].tolist() == [prices[91]] * 4 + prices[0:4].tolist()
    info.advance_to(50)  # 12:30 UTC: tomorrow is published, the day after is not
    obs = info.observe(150)
    assert obs.price_known_steps == 188 - 50
    for lead in range(138, 150):
        assert obs.import_price_per_kwh[lead] == prices[50 + lead - 96]


@dataclass
class SpyForecast:
    """Records what a causal model is handed."""

    name: str = "spy"
    uses_actuals: bool = False
    calls: int = 0

    def forecast(
        self, history: FloatArray, actual_ahead: FloatArray | None, k: int, steps: int, steps_per_day: int
    ) -> FloatArray:
        assert actual_ahead is None
        assert len(history) == k
        self.calls += 1
        return np.zeros(steps)


def test_causal_models_get_only_the_measured_past() -> None:
    scenario = tiny_scenario()
    spy = SpyForecast()
    plant = Plant(scenario)
    info = InformationModel(scenario, plant, spy, spy)
    for k in (0, 5, 100):
        info.advance_to(k)
        info.observe(24)
    assert spy.calls == 6
    with pytest.raises(ValueError, match="backwards"):
        info.advance_to(50)


def test_error_models_declare_that_they_perturb_actuals() -> None:
    assert not make_forecast("daemon", "load").uses_actuals
    assert NoisyForecast().uses_actuals and OracleForecast().uses_actuals
    actual = np.full(96, 1000.0)
    noisy = NoisyForecast(seed=3).forecast(np.zeros(10), actual, 10, 96, 96)
    again = NoisyForecast(seed=3).forecast(np.zeros(10), actual, 10, 96, 96)
    assert noisy.tolist() == again.tolist()
    assert abs(noisy[0] - 1000.0) < abs(noisy - 1000.0).max()  # errors grow with lead time
    assert (noisy >= 0).all()


def test_the_default_forecasts_are_the_daemons_on_the_measured_history() -> None:
    history = np.tile(np.arange(96, dtype=float), 3)  # three identical days
    load = make_forecast("daemon", "load")
    pv = make_forecast("daemon", "pv")
    # Identical days and a last hour on profile: the forecast is the same time of day.
    assert load.forecast(history, None, len(history), 96, 96).tolist() == pytest.approx(list(range(96)))
    assert pv.forecast(history, None, len(history), 96, 96).tolist() == pytest.approx(list(range(96)))
    assert pv.forecast(np.zeros(0), None, 0, 4, 96).tolist() == [0.0] * 4
    info = InformationModel(tiny_scenario(days=1), Plant(tiny_scenario(days=1)))
    assert info.load_forecast.name == info.pv_forecast.name == "daemon"
    with pytest.raises(ValueError, match="unknown forecast model"):
        make_forecast("crystal-ball", "load")


def test_vehicles_are_seen_as_measured_and_trips_with_estimated_energy() -> None:
    scenario = tiny_scenario(days=2, soc=50.0)
    plant = Plant(scenario)
    info = InformationModel(scenario, plant, trip_info="calendar")
    first, second = scenario.scheduled_trips
    info.advance_to(0)
    car = info.vehicles(96)[0]
    assert car.plugged_in and car.soc_percent == 50.0
    assert car.next_departure is not None and car.next_departure.index == first.depart_index
    assert car.trips is not None
    assert [t.energy_kwh for t in car.trips] == [pytest.approx(0.2 * 40.0)]  # nothing driven yet: a guess
    for k in range(first.depart_index + 4):
        info.advance_to(k)
        plant.step(k, [0.0], 0.0, 0.0)
    info.advance_to(first.depart_index + 4)
    away = info.vehicles(96)[0]
    assert not away.plugged_in
    assert away.soc_percent == 50.0  # last measured at home; the car is driving
    for k in range(first.depart_index + 4, first.arrive_index):
        plant.step(k, [0.0], 0.0, 0.0)
    info.advance_to(first.arrive_index)
    back = info.vehicles(200)[0]
    assert back.plugged_in and back.soc_percent == pytest.approx(50.0 - 100 * first.energy_kwh / 40.0)
    assert back.trips is not None
    assert [t.energy_kwh for t in back.trips] == [
        pytest.approx(first.energy_kwh)
    ]  # learned from the past trip
    assert back.next_departure is not None and back.next_departure.index == second.depart_index
    # Without the calendar (the default, what the daemon has) only the announced departure is known.
    schedule_only = InformationModel(scenario, Plant(scenario)).vehicles(96)[0]
    assert schedule_only.trips is None
    assert (
        schedule_only.next_departure is not None and schedule_only.next_departure.index == first.depart_index
    )


def test_mpc_snapshots_are_the_same_until_the_worlds_differ() -> None:
    """Closed loop with the real planner: two worlds that differ only after step K give the planner
    identical snapshots before K (and different ones after). The later world also has other trip
    energies and other trip times after the next departure the driver announced by then."""
    commute = {"time": "07:00", "target_soc_percent": 70, "return_time": "16:00"}
    scenario = tiny_scenario(
        days=3,
        site__horizon_hours=48,
        site__replan_interval_minutes=60,
        vehicles__0__departures={day: commute for day in ("monday", "tuesday", "wednesday")},
    )
    k_split = 80  # Monday 20:00, at home; Tuesday's departure (step 124) is announced
    wednesday = 2 * 96 + 28
    assert scenario.scheduled_trips[2].depart_index == wednesday
    known = int(known_until(scenario)[k_split - 1])
    other = changed_after(scenario, k_split, known, trip_energy=20.0, trip_times_from=wednesday)
    assert other.scheduled_trips[2].depart_index == wednesday + 8

    def snapshots(world: Scenario, options: RunOptions) -> list[Snapshot]:
        plant = Plant(world)
        info = options.information(world, plant)
        strategy = ModelPredictiveControl(world.config)
        seen: list[Snapshot] = []
        real_plan = strategy.planner.plan

        def recording(snapshot: Snapshot) -> Plan:
            seen.append(snapshot)
            return real_plan(snapshot)

        strategy.planner.plan = recording  # type: ignore[method-assign]
        simulate(world, strategy, info=info, plant=plant)
        return seen

    def before_split(seen: list[Snapshot]) -> list[Snapshot]:
        return [snapshot for snapshot in seen if snapshot.time < scenario.series.time_at(k_split)]

    ours, theirs = snapshots(scenario, RunOptions()), snapshots(other, RunOptions())
    assert len(before_split(ours)) >= k_split // 4
    assert before_split(ours) == before_split(theirs)
    assert ours[len(before_split(ours)) :] != theirs[len(before_split(theirs)) :]
    # The weekly schedule's trips are in the snapshots: Wednesday's is seen from Monday on.
    assert any(len(v.away) == 2 for snapshot in before_split(ours) for v in snapshot.vehicles)
    # While away the SoC is the one last measured at home, not a guess of the trip's progress.
    away_soc = {
        v.soc_percent for snapshot in before_split(ours) for v in snapshot.vehicles if not v.plugged_in
    }
    assert len(away_soc) == 1
    # The driver's calendar (a diagnosis option) would have shown Wednesday's other times.
    calendar = RunOptions(trip_info="calendar")
    assert before_split(snapshots(scenario, calendar)) != before_split(snapshots(other, calendar))


def test_publication_follows_a_configurable_hour_and_the_site_timezone() -> None:
    start = datetime(2024, 6, 3, tzinfo=UTC)
    series = Series(start, timedelta(hours=1), *(np.zeros(48) for _ in range(4)))
    known = PriceKnowledge(publication_hour_local=13.0).known_until(series, AMSTERDAM)
    assert known[10] == 22  # 12:00 CEST: until local midnight (22:00 UTC)
    assert known[11] == 46  # 13:00 CEST: the next day too
    config = tiny_config(
        site__timezone=AMSTERDAM, site__plan_step_minutes=60, site__replan_interval_minutes=60
    )
    scenario = Scenario(config, series, (), {"car": 50.0})
    info = RunOptions(publication_hour_local=13.0).information(scenario, Plant(scenario))
    info.advance_to(11)
    assert info.observe(48).price_known_steps == 46 - 11
    assert tiny_config().site.plan_step_minutes == 15


def test_nowcast_hands_over_the_current_step_only() -> None:
    scenario = tiny_scenario(days=2)
    k = 100
    plain = RunOptions().information(scenario, Plant(scenario))
    now = RunOptions(nowcast=True).information(scenario, Plant(scenario))
    plain.advance_to(k)
    now.advance_to(k)
    a, b = plain.observe(24), now.observe(24)
    assert b.load_w[0] == scenario.series.load_w[k] and b.pv_w[0] == scenario.series.pv_w[k]
    assert a.load_w[0] != b.load_w[0]
    assert a.load_w[1:].tolist() == b.load_w[1:].tolist() and a.pv_w[1:].tolist() == b.pv_w[1:].tolist()


def test_schedule_only_announces_no_departure_to_the_daemon() -> None:
    """``trip_info="schedule-only"``: the driver says nothing; the simulated daemon gets no one-off
    departure command and plans from its weekly schedule alone."""
    scenario = tiny_scenario(days=2)

    def announcements(trip_info: str) -> list[SetDeparture]:
        plant = Plant(scenario)
        info = RunOptions(trip_info=trip_info).information(scenario, plant)  # type: ignore[arg-type]
        feed = SiteFeed(scenario.config, 48)
        sent: list[SetDeparture] = []
        for k in range(scenario.steps - 1):
            info.advance_to(k)
            vehicles = info.vehicles(48)
            assert all(v.departure_announced is (trip_info != "schedule-only") for v in vehicles)
            events = feed.step_events(info, vehicles, {"car": 0.0})
            sent += [e for e in events if isinstance(e, SetDeparture)]
            feed.apply(events, info.now)
            plant.step(k, [0.0], float(scenario.series.load_w[k]), float(scenario.series.pv_w[k]))
        assert (feed.site.vehicles["car"].one_off is None) is (trip_info == "schedule-only")
        return sent

    assert announcements("schedule-only") == []
    assert len(announcements("schedule")) == len(scenario.trips)
    # The wallbox baselines still charge for the driver's real departure.
    info = InformationModel(scenario, Plant(scenario), trip_info="schedule-only")
    car = info.vehicles(48)[0]
    assert car.next_departure is not None and car.trips is None
    with pytest.raises(ValueError, match="unknown trip_info"):
        InformationModel(scenario, Plant(scenario), trip_info="psychic")  # type: ignore[arg-type]
