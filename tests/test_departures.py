"""Drivers who leave late or early: an overdue departure holds its target (planner and dispatcher),
and the site learns from its own unplugs how early each weekday's departure really comes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from controller.commands import SetDeparture, SetWeeklyDeparture
from controller.config import SiteConfig, parse_config
from controller.dispatch import Dispatcher
from controller.domain import Departure, MeterReading, MeterRole, Plan, VehiclePlan, align_to_step
from controller.ocpp.events import ChargingNeedsReported
from controller.ocpp.model import ChargingNeeds
from controller.optimizer import Planner
from controller.site import Site
from controller.site_events import SiteEvents
from controller.snapshot import DepartureHold, Snapshot
from controller.vehicles import (
    DepartureSeen,
    departure_seen,
    early_leads,
    overdue_departure,
    remember_departure,
)
from sim.information import InformationModel
from sim.plant import Plant
from sim.scenario import Scenario, Trip
from sim.site_feed import SiteFeed
from tests.test_sim_support import tiny_config, tiny_series

MONDAY = datetime(2024, 3, 4, tzinfo=UTC)  # the site's timezone is UTC: wall clock = UTC here
STEPS = 48  # 12 h of 15-minute steps


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """``day`` days after Monday 2024-03-04, at hour:minute."""
    return MONDAY + timedelta(days=day, hours=hour, minutes=minute)


def config(**vehicle: Any) -> SiteConfig:
    car: dict[str, Any] = {
        "id": "car",
        "usable_capacity_kwh": 40.0,
        "max_charge_kw": 7.0,
        "max_discharge_kw": 5.0,
        "reserve": {"percent": 20},
        "max_soc_percent": 100,
        "permissions": {"v2g": True, "v2h": True},
        "home_charger": "wb",
        "departures": {
            "monday": {"time": "07:00", "target_soc_percent": 80, "return_time": "17:00"},
            "tuesday": {"time": "07:00", "target_soc_percent": 70},
            "wednesday": {"time": "07:00", "target_soc_percent": 60},
        },
        **vehicle,
    }
    return parse_config(
        {
            "site": {
                "timezone": "UTC",
                "horizon_hours": 12,
                "grid": {"import_limit_kw": 17, "export_limit_kw": 10},
            },
            "chargers": [
                {
                    "id": "wb",
                    "max_charge_kw": 7,
                    "max_discharge_kw": 5,
                    "bidirectional": True,
                    "min_current_a": 0,
                }
            ],
            "vehicles": [car],
            "meters": [{"id": "grid", "role": "grid", "topic": "m/grid", "stale_after_s": 600}],
            "tariff": {"import": {"static_price_per_kwh": 0.3}, "export": {"static_price_per_kwh": 0.1}},
        },
        env={},
    )


def plugged_site(soc: float, since: datetime | None = None, **vehicle: Any) -> Site:
    """The car plugged in at ``since`` (default Sunday 20:00) with ``soc``."""
    since = since or at(-1, 20)
    site = Site(config(**vehicle))
    site.set_plugged("wb", True, since)
    site.on_charger_sample("wb", since, 0.0, soc)
    return site


def read(site: Site, now: datetime, soc: float) -> None:
    site.inputs.update_meter(MeterReading("grid", MeterRole.GRID, 300.0, now))
    site.on_charger_sample("wb", now, 0.0, soc)


def snapshot(site: Site, now: datetime) -> Snapshot:
    return site.planner_snapshot(now, np.full(STEPS, 300.0), np.zeros(STEPS))


def hold(site: Site, now: datetime) -> DepartureHold | None:
    car = snapshot(site, now).vehicle("car")
    assert car is not None
    return car.hold


def discharging_plan(now: datetime) -> Plan:
    n = 8
    return Plan(
        created_at=now,
        start=align_to_step(now, timedelta(minutes=15)),
        step=timedelta(minutes=15),
        vehicles={"car": VehiclePlan("car", (-4000.0,) * n, (85.0,) * (n + 1), "planned")},
        grid_import_w=(0.0,) * n,
        grid_export_w=(3700.0,) * n,
        import_price_per_kwh=(0.3,) * n,
        export_price_per_kwh=(0.1,) * n,
        solver_status="optimal",
        solve_time_ms=1.0,
    )


# ---------------------------------------------------------------- overdue departures


def test_a_car_still_plugged_in_after_its_departure_holds_its_target_until_the_usual_return() -> None:
    site = plugged_site(85.0)
    before = at(0, 6, 50)
    read(site, before, 85.0)
    assert hold(site, before) is None
    now = at(0, 7, 20)  # Monday's 07:00 departure has passed; the car is still here
    read(site, now, 85.0)
    car = snapshot(site, now).vehicle("car")
    assert car is not None and car.departure is not None
    assert car.hold == DepartureHold(departure_at=at(0, 7), soc_percent=80.0, until=at(0, 17))
    assert car.hold_soc_percent == 80.0
    assert car.departure.at == at(1, 7)  # the next departure stays what the plan works towards
    assert site.dispatch_inputs(now, None).vehicles[0].hold_soc_percent == 80.0
    # Monday's usual return has passed: the trip did not happen, the car is planned as usual.
    evening = at(0, 17)
    read(site, evening, 85.0)
    assert hold(site, evening) is None
    assert site.dispatch_inputs(evening, None).vehicles[0].hold_soc_percent is None


def test_without_a_return_the_next_scheduled_departure_takes_the_holds_place() -> None:
    site = plugged_site(85.0, since=at(0, 18))  # back Monday evening
    tuesday = at(1, 7, 30)
    read(site, tuesday, 85.0)
    assert hold(site, tuesday) == DepartureHold(departure_at=at(1, 7), soc_percent=70.0, until=at(2, 7))
    wednesday = at(2, 7, 30)
    read(site, wednesday, 85.0)
    # Next Monday's departure will take Wednesday's place.
    assert hold(site, wednesday) == DepartureHold(departure_at=at(2, 7), soc_percent=60.0, until=at(7, 7))


def test_the_hold_ends_when_the_car_is_unplugged_and_a_later_plug_in_starts_none() -> None:
    site = plugged_site(85.0)
    now = at(0, 7, 20)
    read(site, now, 85.0)
    assert hold(site, now) is not None
    site.set_plugged("wb", False, at(0, 7, 25))
    assert hold(site, at(0, 7, 26)) is None
    site.set_plugged("wb", True, at(0, 7, 40))  # back already, or only moved: plugged in after it
    read(site, at(0, 7, 45), 84.0)
    assert hold(site, at(0, 7, 45)) is None


def test_a_new_announced_departure_ends_the_hold_and_is_held_in_turn_when_overdue() -> None:
    site = plugged_site(85.0)
    events = SiteEvents(site)
    now = at(0, 7, 20)
    read(site, now, 85.0)
    reaction = events.command(SetDeparture("car", Departure(at(0, 9), 90.0)), now)
    assert reaction.persist == [site.vehicles["car"]]  # when it was announced is stored
    assert hold(site, now) is None
    assert site.departure(site.vehicles["car"], now) == Departure(at(0, 9), 90.0)
    late = at(0, 9, 10)
    read(site, late, 86.0)
    assert hold(site, late) == DepartureHold(departure_at=at(0, 9), soc_percent=90.0, until=at(0, 17))
    # Clearing it is the driver's word too.
    events.command(SetDeparture("car", None), late)
    assert hold(site, late) is None


def test_a_new_departure_from_the_charger_ends_the_hold_but_the_same_one_again_does_not() -> None:
    site = plugged_site(85.0)
    events = SiteEvents(site)
    now = at(0, 7, 20)
    read(site, now, 85.0)

    def needs(departure: datetime) -> ChargingNeedsReported:
        return ChargingNeedsReported("wb", ChargingNeeds(1, now, "AC_BPT", departure_time=departure))

    events.ocpp(needs(at(0, 7)), now)  # the EV repeats the departure that has passed
    assert hold(site, now) is not None
    events.ocpp(needs(at(0, 10)), now)
    assert hold(site, now) is None


def test_the_planner_holds_the_target_and_charges_a_car_below_it() -> None:
    site = plugged_site(85.0)
    now = at(0, 7, 20)
    read(site, now, 85.0)
    # Exporting in the next two hours pays far more than anything later: without the hold the plan
    # sells what it can.
    snap = snapshot(site, now).model_copy(
        update={
            "import_price_per_kwh": [2.5] * 8 + [0.1] * (STEPS - 8),
            "export_price_per_kwh": [2.0] * 8 + [0.05] * (STEPS - 8),
        }
    )
    planner = Planner(site.cfg)
    held = planner.plan(snap)
    car = snap.vehicle("car")
    assert car is not None and car.hold is not None
    free = planner.plan(snap.model_copy(update={"vehicles": [car.model_copy(update={"hold": None})]}))
    assert min(free.vehicles["car"].soc_percent) < 70.0
    assert min(held.vehicles["car"].soc_percent) >= 80.0 - 0.01
    assert any("overdue: holding 80 %" in note for note in held.notes)
    assert held.vehicles["car"].reason.endswith("departure 07:00 overdue: holding 80 %")
    assert "overdue" not in free.vehicles["car"].reason
    # Below the hold, it charges towards it even at a dear price.
    low = plugged_site(60.0)
    read(low, now, 60.0)
    dear = snapshot(low, now).model_copy(update={"import_price_per_kwh": [2.5] * STEPS})
    charged = planner.plan(dear).vehicles["car"]
    assert charged.power_w[0] > 0 and charged.soc_percent[-1] >= 80.0 - 0.01


def test_the_dispatcher_refuses_discharge_at_or_below_the_hold() -> None:
    now = at(0, 7, 20)
    for soc, blocked in ((85.0, False), (80.0, True), (75.0, True)):
        site = plugged_site(soc)
        read(site, now, soc)
        inputs = site.dispatch_inputs(now, discharging_plan(now))
        (command,) = Dispatcher(site.cfg).dispatch(inputs)
        reasons = " ".join(command.reasons)
        assert ("departure overdue: holding 80 %" in reasons) is blocked, reasons
        assert (command.setpoint_w >= 0.0) is blocked


def test_overdue_rule_edges() -> None:
    car = config().vehicles[0]
    assert overdue_departure(car, at(0, 6, 59), "UTC", plugged_at=at(-1, 20)) is None
    # Plugged in since an unknown time (a store written before it was kept) counts as before it:
    # last Wednesday's departure, until Monday's takes its place.
    unknown = overdue_departure(car, at(0, 6, 59), "UTC", plugged_at=None)
    assert unknown is not None and (unknown.departure.at, unknown.until) == (at(-5, 7), at(0, 7))
    # An announced departure replaces its day's rule: a later one is not overdue at the rule's time.
    later = Departure(at(0, 9), 75.0)
    assert overdue_departure(car, at(0, 7, 30), "UTC", one_off=later, announced_at=at(-1, 20)) is None
    # A weekly departure made early by a lead is overdue from its due time.
    leads = {"monday": timedelta(minutes=30)}
    early = overdue_departure(car, at(0, 6, 40), "UTC", leads=leads)
    assert early is not None and early.departure.at == at(0, 6, 30)


# ---------------------------------------------------------------- early departures


def unplug_on_mondays(site: Site, leaving: list[timedelta]) -> None:
    """One Monday per entry: plugged in Sunday evening, unplugged ``entry`` before 07:00."""
    for week, early in enumerate(leaving):
        sunday = at(7 * week - 1, 20)
        site.set_plugged("wb", True, sunday)
        site.set_plugged("wb", False, at(7 * week, 7) - early)


def test_unplugs_near_a_scheduled_departure_are_remembered_once_each() -> None:
    site = Site(config())
    car = site.vehicles["car"]
    site.set_plugged("wb", True, at(-1, 20))
    site.set_plugged("wb", False, at(0, 6, 35))  # 25 min early
    site.set_plugged("wb", True, at(0, 6, 40))
    site.set_plugged("wb", False, at(0, 6, 50))  # the same departure again: the first counts
    assert [(s.weekday, s.scheduled_at, s.early) for s in car.departures_seen] == [
        ("monday", at(0, 7), timedelta(minutes=25))
    ]
    site.set_plugged("wb", True, at(0, 18))
    site.set_plugged("wb", False, at(1, 9, 30))  # Tuesday 2.5 h late: still that departure
    site.set_plugged("wb", True, at(1, 20))
    site.set_plugged("wb", False, at(2, 4, 30))  # Wednesday 2.5 h early: more than max_lead before
    site.set_plugged("wb", True, at(2, 20))
    site.set_plugged("wb", False, at(3, 7))  # Thursday has no rule
    assert [s.weekday for s in car.departures_seen] == ["monday", "tuesday"]
    assert car.departures_seen[1].early == -timedelta(hours=2, minutes=30)
    # A day whose rule the driver replaced by an announced departure says nothing about the schedule.
    events = SiteEvents(site)
    events.command(SetDeparture("car", Departure(at(7, 6, 30), 80.0)), at(6, 20))
    site.set_plugged("wb", True, at(6, 20))
    site.set_plugged("wb", False, at(7, 6, 30))
    assert len(car.departures_seen) == 2


def test_the_lead_needs_min_samples_and_covers_the_share_of_past_departures() -> None:
    minutes = [timedelta(minutes=m) for m in (10, 50, 20, 40, 30)]
    site = Site(config())
    car = site.vehicles["car"]
    unplug_on_mondays(site, minutes[:2])
    sunday = at(13, 20)  # before the third Monday: two samples, fewer than min_samples (3)
    assert site.departure(car, sunday) == Departure(at(14, 7), 80.0)
    unplug_on_mondays(site, minutes)
    assert len(car.departures_seen) == 5
    # Sorted 10, 20, 30, 40, 50; cover_share 0.8: ready for 4 of the 5 departures = 40 min early.
    sunday = at(34, 20)
    assert site.departure(car, sunday) == Departure(at(35, 6, 20), 80.0)
    assert car.leads(sunday, "UTC") == {"monday": timedelta(minutes=40)}
    # A late departure counts as no lead.
    late = Site(config())
    unplug_on_mondays(late, [-timedelta(minutes=20)] * 3)
    assert late.departure(late.vehicles["car"], at(20, 20)) == Departure(at(21, 7), 80.0)


def test_the_lead_is_capped_counts_only_recent_weeks_and_the_rules_current_time() -> None:
    car = config(early_departures={"max_lead_minutes": 30, "min_samples": 2, "learn_weeks": 4}).vehicles[0]
    seen = tuple(
        DepartureSeen("monday", datetime.min.time().replace(hour=7), at(7 * w, 7), at(7 * w, 7) - lead)
        for w, lead in enumerate([timedelta(minutes=45), timedelta(minutes=50), timedelta(minutes=5)])
    )
    now = at(14, 12)
    assert early_leads(car, seen, now, "UTC") == {"monday": timedelta(minutes=30)}
    # Five weeks on, only the last Monday is within learn_weeks (4): fewer than min_samples.
    assert early_leads(car, seen, at(14 + 28, 12), "UTC") == {}
    moved = config(
        departures={"monday": {"time": "07:15", "target_soc_percent": 80}},
        early_departures={"min_samples": 2},
    ).vehicles[0]
    assert early_leads(moved, seen, now, "UTC") == {}  # a changed time starts over


def test_the_history_is_bounded_to_learn_weeks() -> None:
    car = config(early_departures={"learn_weeks": 2}).vehicles[0]
    seen: tuple[DepartureSeen, ...] = ()
    for week in range(6):
        new = departure_seen(car, at(7 * week, 6, 50), "UTC")
        assert new is not None
        seen = remember_departure(seen, new, car)
    assert [s.scheduled_at for s in seen] == [at(28, 7), at(35, 7)]


def test_a_weekly_override_is_learnt_at_its_own_time() -> None:
    site = Site(config(early_departures={"min_samples": 1}))
    events = SiteEvents(site)
    events.command(SetWeeklyDeparture("car", "monday", datetime.min.time().replace(hour=8), 80.0), at(-1, 12))
    site.set_plugged("wb", True, at(-1, 20))
    site.set_plugged("wb", False, at(0, 7, 45))
    car = site.vehicles["car"]
    assert site.departure(car, at(6, 20)) == Departure(at(7, 7, 45), 80.0)


def test_the_simulator_learns_from_the_unplugs_it_feeds_the_daemon() -> None:
    """Schedule-only: nothing announced; the car leaves 30 min before its 07:00 rule every day, and
    after one week the simulated daemon plans each departure 30 min early."""
    every_day = {"time": "07:00", "target_soc_percent": 70}
    days = 8
    scenario = Scenario(
        tiny_config(
            vehicles__0__departures={
                day: every_day
                for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
            },
            vehicles__0__early_departures={"min_samples": 1},
        ),
        tiny_series(days),
        tuple(Trip("car", at(d, 6, 30), at(d, 16), 4.0) for d in range(days)),
        {"car": 60.0},
        name="early",
    )
    plant = Plant(scenario)
    info = InformationModel(scenario, plant, trip_info="schedule-only")
    feed = SiteFeed(scenario.config, 48)
    car = feed.site.vehicles["car"]
    end = 7 * 96 - 8  # Sunday 22:00
    for k in range(end):
        info.advance_to(k)
        vehicles = info.vehicles(48)
        events = feed.step_events(info, vehicles, {"car": 0.0})
        assert not any(isinstance(e, SetDeparture) for e in events)
        feed.apply(events, info.now)
        plant.step(k, [0.0], float(scenario.series.load_w[k]), float(scenario.series.pv_w[k]))
    assert len(car.departures_seen) == 7
    assert car.one_off is None
    now = scenario.series.time_at(end)
    assert feed.site.departure(car, now) == Departure(at(7, 6, 30), 70.0)


@pytest.mark.parametrize("trip_info", ["schedule", "calendar"])
def test_an_announcing_driver_teaches_no_lead(trip_info: str) -> None:
    """The driver announces each departure: those days' rules are replaced, nothing is learnt."""
    scenario = Scenario(
        tiny_config(vehicles__0__early_departures={"min_samples": 1}),
        tiny_series(2),
        (Trip("car", at(0, 6, 30), at(0, 16), 4.0),),
        {"car": 60.0},
        name="early",
    )
    plant = Plant(scenario)
    info = InformationModel(scenario, plant, trip_info=trip_info)  # type: ignore[arg-type]
    feed = SiteFeed(scenario.config, 48)
    for k in range(40):
        info.advance_to(k)
        feed.feed(info, info.vehicles(48), {"car": 0.0})
        plant.step(k, [0.0], float(scenario.series.load_w[k]), float(scenario.series.pv_w[k]))
    assert feed.site.vehicles["car"].departures_seen == ()
