"""The capacity tariff: the site's month-to-date peak, the LP's peak term, the dispatcher's cap, the
simulator's bill. Figures by hand where they are small; the property test in the style of
``test_optimizer_properties`` checks every plan against its own window averages."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from benchmarks.bench_capacity_tariff import billed, example_scenario, without_tariff
from controller.clock import ManualClock
from controller.config import SiteConfig, parse_config
from controller.dispatch import Dispatcher
from controller.dispatch.peak_window import (
    ImportPeak,
    capacity_import_cap_w,
    month_key,
    month_start,
    planned_peak_w,
    window_start,
)
from controller.domain import MeterReading, MeterRole, Plan
from controller.optimizer import Planner
from controller.persistence import SitePersistence
from controller.site import Site
from controller.snapshot import Snapshot
from controller.store import Store
from sim.metrics import compute_metrics
from sim.report import format_summary
from sim.runner import run_strategy
from tests.test_dispatch import T0 as DISPATCH_T0
from tests.test_dispatch import inputs as dispatch_inputs
from tests.test_dispatch import one
from tests.test_dispatch import plan as dispatch_plan
from tests.test_dispatch import site as dispatch_site
from tests.test_optimizer_helpers import T0, site, snapshot, vehicle

WINDOW = timedelta(minutes=15)
ZONE = "Europe/Brussels"
TARIFF = {"price_per_kw_month": 4.2, "minimum_peak_kw": 2.5, "window_minutes": 15}


def with_tariff(config: SiteConfig, **tariff: Any) -> SiteConfig:
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["tariff"]["capacity"] = {**TARIFF, **tariff}
    data["meters"] = [{"id": "grid", "role": "grid", "topic": "meter/grid", "stale_after_s": 120}]
    return parse_config(data, env={})


# ------------------------------------------------------------ the site's peak


def test_window_averages_make_the_month_peak_and_the_month_turns_at_local_midnight() -> None:
    peak = ImportPeak(WINDOW, ZONE)
    t = datetime(2026, 5, 31, 21, 30, tzinfo=UTC)  # 23:30 in Brussels (CEST)
    for minute in range(15):  # 4 kW for a whole window
        peak.add(t + timedelta(minutes=minute), 4000.0, 120)
    for minute in range(15, 20):  # then 8 kW for 5 minutes, exporting counts as 0
        peak.add(t + timedelta(minutes=minute), 8000.0 if minute < 19 else -3000.0, 120)
    now = t + timedelta(minutes=20)
    assert peak.month_peak_w(now) == pytest.approx(4000.0)
    assert peak.window_wh(now) == pytest.approx(8000.0 * 4 / 60)
    # The window 21:45-22:00 UTC closes May (Brussels); June starts from nothing.
    june = datetime(2026, 5, 31, 22, 1, tzinfo=UTC)
    peak.add(june, 1000.0, 120)
    assert peak.month_peak_w(june) == 0.0
    assert peak.month == (2026, 5) and peak.peak_w == pytest.approx(4000.0)
    peak.add(june + timedelta(minutes=15), 1000.0, 120)
    # The 22:01 reading holds for its 2 minutes of freshness only: 1 kW x 2 / 15 minutes.
    assert peak.month_peak_w(june + timedelta(minutes=15)) == pytest.approx(1000.0 * 2 / 15)
    assert month_start(june, ZONE) == datetime(2026, 5, 31, 22, 0, tzinfo=UTC)


def test_a_silent_meter_holds_its_last_reading_only_until_it_is_stale() -> None:
    peak = ImportPeak(WINDOW, ZONE)
    t = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    peak.add(t, 6000.0, 120)
    assert peak.window_wh(t + timedelta(minutes=10)) == pytest.approx(6000.0 * 2 / 60)
    peak.add(t + timedelta(minutes=20), 0.0, 120)
    assert peak.month_peak_w(t + timedelta(minutes=20)) == pytest.approx(6000.0 * 2 / 15)


def test_the_store_gives_back_the_month_peak_and_the_open_window_after_a_restart(tmp_path: Path) -> None:
    config = with_tariff(site([vehicle("a")]))
    now = datetime(2026, 3, 10, 12, 7, tzinfo=UTC)
    store = Store(tmp_path / "v2x.db")
    # Last month's 9 kW does not count; this month 5 kW for a window on the 3rd, 2 kW now.
    for minute in range(15):
        store.record_reading("grid", datetime(2026, 2, 20, 8, minute, tzinfo=UTC), 9000.0)
        store.record_reading("grid", datetime(2026, 3, 3, 8, minute, tzinfo=UTC), 5000.0)
    for minute in range(7):
        store.record_reading("grid", datetime(2026, 3, 10, 12, minute, tzinfo=UTC), 2000.0)
    store.flush_history(None)
    peak_w, window_wh = store.import_peak("grid", month_start(now, ZONE), now, WINDOW)
    assert peak_w == 5000.0 and window_wh == pytest.approx(2000.0 * 7 / 60)
    site_state = Site(config)
    SitePersistence(store, site_state, ManualClock(now)).restore()
    assert site_state.inputs.month_peak_import_w(now) == pytest.approx(5000.0)
    assert site_state.inputs.window_import_wh(now) == pytest.approx(2000.0 * 7 / 60)
    store.close()


def test_snapshot_and_dispatcher_inputs_carry_the_peak_and_the_cap() -> None:
    config = with_tariff(site([vehicle("a")], horizon_hours=2))
    state = Site(config)
    t = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    for minute in range(16):
        state.inputs.update_meter(MeterReading("grid", MeterRole.GRID, 3000.0, t + timedelta(minutes=minute)))
    now = t + timedelta(minutes=16)
    snap = state.snapshot(now, np.full(8, 500.0), np.zeros(8))
    assert snap.month_peak_import_w == pytest.approx(3000.0)
    assert snap.window_import_wh == pytest.approx(3000.0 / 60)
    plan = Planner(config).plan(snap)
    cap_w = state.dispatch_inputs(now, plan).capacity_cap_w
    peak_w = planned_peak_w(plan, now, 3000.0, 50.0, WINDOW, "Europe/Amsterdam")
    assert cap_w == pytest.approx(capacity_import_cap_w(peak_w, 50.0, now, WINDOW))
    assert cap_w is not None and cap_w >= 3000.0 - 1e-6  # the month's 3 kW is already paid for
    plain = Site(site([vehicle("a")], horizon_hours=2))
    assert plain.snapshot(now, np.full(8, 500.0), np.zeros(8)).month_peak_import_w is None


# ------------------------------------------------------------ the dispatcher


def test_the_cap_for_the_rest_of_the_window_is_what_keeps_its_average_at_the_peak() -> None:
    now = datetime(2026, 3, 10, 12, 5, tzinfo=UTC)  # 10 minutes left
    # 3 kW peak: 750 Wh a window; 250 Wh so far leaves 500 Wh for 10 minutes = 3 kW.
    assert capacity_import_cap_w(3000.0, 250.0, now, WINDOW) == pytest.approx(3000.0)
    assert capacity_import_cap_w(3000.0, 700.0, now, WINDOW) == pytest.approx(300.0)
    assert capacity_import_cap_w(3000.0, 900.0, now, WINDOW) == pytest.approx(-900.0)


def test_the_dispatcher_cuts_charging_to_the_cap_but_never_below_the_home() -> None:
    d = Dispatcher(dispatch_site())
    p = dispatch_plan([11000.0] * 8)
    cmd = one(d, dispatch_inputs(p, grid_w=1000.0, capacity_cap_w=5000.0))
    assert cmd.setpoint_w == pytest.approx(4000.0)
    assert any("capacity tariff" in r for r in cmd.reasons)
    # The home alone is above the cap: no charging, and no discharge ordered to make up for it.
    cmd = one(
        d, dispatch_inputs(p, grid_w=2000.0, capacity_cap_w=-500.0, now=DISPATCH_T0 + timedelta(minutes=2))
    )
    assert cmd.setpoint_w == 0.0
    assert any("capacity tariff" in r for r in cmd.reasons)
    assert (
        one(d, dispatch_inputs(p, grid_w=1000.0, now=DISPATCH_T0 + timedelta(minutes=3))).setpoint_w
        == 11000.0
    )


def test_a_car_leaving_within_the_hour_keeps_its_planned_charge_over_the_cap() -> None:
    # Its target is a safety invariant; a higher monthly peak only costs money.
    d = Dispatcher(dispatch_site())
    p = dispatch_plan([11000.0] * 8)
    leaving = DISPATCH_T0 + timedelta(minutes=40)
    cmd = one(d, dispatch_inputs(p, grid_w=1000.0, capacity_cap_w=5000.0, departure_at=leaving))
    assert cmd.setpoint_w == 11000.0
    assert not any("capacity tariff" in r for r in cmd.reasons)
    # The fuse still binds.
    cmd = one(
        d,
        dispatch_inputs(
            p,
            grid_w=1000.0,
            capacity_cap_w=5000.0,
            departure_at=leaving,
            import_w=8000.0,
            now=DISPATCH_T0 + timedelta(minutes=2),
        ),
    )
    assert cmd.setpoint_w == pytest.approx(7000.0)


# ------------------------------------------------------------ the plan

CAP_SHAPES = {
    "15": lambda: with_tariff(site([vehicle("a", capacity_kwh=60)], horizon_hours=4, import_kw=25)),
    "5": lambda: with_tariff(site([vehicle("a", capacity_kwh=60)], horizon_hours=2, step_minutes=5)),
}


@functools.cache
def planners(shape: str) -> tuple[Planner, Planner]:
    """(with the term, the same site without it)."""
    config = CAP_SHAPES[shape]()
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    del data["tariff"]["capacity"]
    return Planner(config), Planner(parse_config(data, env={}))


def window_peaks_kw(plan: Plan, snap: Snapshot) -> dict[tuple[int, int], float]:
    """Per month, the plan's highest window average (the first window with its energy so far)."""
    edges = [plan.created_at] + [plan.start + plan.step * i for i in range(1, plan.steps + 1)]
    out: dict[tuple[int, int], float] = {}
    first = window_start(snap.time, WINDOW)
    begin = first
    while begin < plan.end:
        wh = snap.window_import_wh if begin == first else 0.0
        for i, power_w in enumerate(plan.grid_import_w):
            lo, hi = max(edges[i], begin), min(edges[i + 1], begin + WINDOW)
            wh += power_w * max(0.0, (hi - lo).total_seconds()) / 3600.0
        month = month_key(begin, "Europe/Amsterdam")
        out[month] = max(out.get(month, 0.0), wh * 3600.0 / WINDOW.total_seconds() / 1000.0)
        begin += WINDOW
    return out


def planned_note_kw(plan: Plan) -> float:
    note = next(n for n in plan.notes if n.startswith("capacity tariff"))
    match = re.search(r"planned at ([0-9.]+)", note)
    assert match is not None
    return float(match.group(1))


@st.composite
def cap_world(draw: st.DrawFn, /, shape: str) -> Snapshot:
    planner, _ = planners(shape)
    n = planner.steps
    step_min = int(planner.shape.step.total_seconds() // 60)
    time = T0 + timedelta(minutes=draw(st.integers(0, 14)))
    state = {
        "id": "a",
        "soc_percent": draw(st.floats(0, 100)),
        "plugged_in": True,
        "departure": {
            "at": T0 + timedelta(minutes=draw(st.integers(30, n * step_min + 120))),
            "target_soc_percent": draw(st.floats(20, 90)),
        },
    }
    ints = st.integers
    return snapshot(
        n,
        [state],
        time=time,
        load_w=draw(st.lists(st.floats(0, 6000), min_size=n, max_size=n)),
        pv_w=draw(st.lists(st.floats(0, 6000), min_size=n, max_size=n)),
        import_price=draw(st.lists(st.floats(-0.2, 0.6), min_size=n, max_size=n)),
        export_price=0.05,
        month_peak_import_w=float(draw(ints(0, 8000))),
        window_import_wh=float(draw(ints(0, 1500))) * (time - window_start(time, WINDOW)) / WINDOW,
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(CAP_SHAPES)).flatmap(lambda s: st.tuples(st.just(s), cap_world(s))))
def test_the_term_never_raises_the_month_peak_and_prices_the_plans_own_window_averages(
    case: tuple[str, Snapshot],
) -> None:
    shape, snap = case
    with_term, without = planners(shape)
    plan, plain = with_term.plan(snap), without.plan(snap)
    assert plan.solver_status == "optimal" and plain.solver_status == "optimal"
    floor_kw = max(2.5, (snap.month_peak_import_w or 0.0) / 1000.0)
    peak_kw = max(floor_kw, *window_peaks_kw(plan, snap).values())
    plain_kw = max(floor_kw, *window_peaks_kw(plain, snap).values())
    # The LP's peak is exactly the highest window average of its own plan (or the month so far).
    assert planned_note_kw(plan) == pytest.approx(peak_kw, abs=0.006)
    # Pricing the peak can only lower it (the rest of the objective is the same).
    assert peak_kw <= plain_kw + 1e-4
    # The term is priced as the tariff says: the plan with it is the best under it, and the rest of
    # its objective is no better than the plan without it.
    burn = "charge and discharge in the same step removed"
    assume(not any(burn in n for n in plan.notes + plain.notes))  # then the two LPs differ
    assert plan.objective is not None and plain.objective is not None
    tol = 1e-4 + 1e-7 * abs(plain.objective)
    assert plan.objective <= plain.objective + 4.2 * (plain_kw - floor_kw) + tol
    assert plan.objective - 4.2 * (peak_kw - floor_kw) >= plain.objective - tol


def test_the_energy_already_in_the_window_leaves_less_for_its_rest() -> None:
    planner, _ = planners("5")
    now = T0 + timedelta(minutes=5)
    car = {
        "id": "a",
        "soc_percent": 30.0,
        "plugged_in": True,
        "departure": {"at": T0 + timedelta(hours=6), "target_soc_percent": 80.0},
    }
    # Cheap now, dear later: the car takes what it can now without raising the month's 4 kW.
    prices = [0.05] * 2 + [0.6] * (planner.steps - 2)
    world: dict[str, Any] = {"load_w": 300.0, "import_price": prices, "month_peak_import_w": 4000.0}
    calm = planner.plan(snapshot(planner.steps, [car], time=now, **world))
    busy = planner.plan(snapshot(planner.steps, [car], time=now, **world, window_import_wh=600.0))
    # 4 kW over 15 minutes is 1000 Wh; 600 Wh are used: 400 Wh for the 10 minutes left = 2.4 kW.
    rest_wh = sum(busy.grid_import_w[:2]) * 5 / 60
    assert rest_wh == pytest.approx(400.0, abs=0.5)
    assert sum(calm.grid_import_w[:2]) * 5 / 60 == pytest.approx(1000.0, abs=0.5)


def test_a_month_that_starts_in_the_horizon_has_its_own_peak_charged_from_the_minimum() -> None:
    planner, _ = planners("15")
    month_end = datetime(2026, 1, 31, 23, 0, tzinfo=UTC)  # midnight in Amsterdam
    snap = snapshot(
        planner.steps,
        [{"id": "a", "soc_percent": 50.0, "plugged_in": True}],
        time=month_end - timedelta(hours=2),
        load_w=[3000.0] * 8 + [500.0] * 8,
        month_peak_import_w=6000.0,
    )
    plan = planner.plan(snap)
    note = next(n for n in plan.notes if n.startswith("capacity tariff"))
    assert "6.00, then 2.50 kW" in note
    assert planner.model is not None and "capacity" in planner.model.terms
    assert plan.objective is not None


def test_with_ten_minute_steps_each_step_average_stands_for_a_window() -> None:
    config = with_tariff(site([vehicle("a", capacity_kwh=60)], horizon_hours=2, step_minutes=10))
    planner = Planner(config)
    assert planner.shape.capacity is not None and not planner.shape.capacity.exact
    car = {"id": "a", "soc_percent": 30.0, "plugged_in": True}
    prices = [0.05] * 3 + [0.6] * (planner.steps - 3)
    now = T0 + timedelta(minutes=25)  # 5 minutes into step 16:20 and 10 into window 16:15
    plan = planner.plan(
        snapshot(planner.steps, [car], time=now, load_w=300.0, import_price=prices, window_import_wh=500.0)
    )
    # 500 Wh over the window's 10 minutes so far is 3 kW; the 5 minutes of step 0 already past count
    # as 250 Wh of it, so the step's average stays at the planned peak.
    peak_kw = planned_note_kw(plan)
    step0_kw = (250.0 + plan.grid_import_w[0] * 5 / 60) / 1000.0 * 6
    assert step0_kw == pytest.approx(peak_kw, abs=0.006)
    assert max(plan.grid_import_w[1:3]) / 1000.0 == pytest.approx(peak_kw, abs=0.006)
    # Cheap now: the step is filled up to the 2.5 kW minimum (the real window 16:15-16:30 then
    # averages 2.67 kW: the approximation the dispatcher's cap corrects).
    assert peak_kw == pytest.approx(2.5)


def test_no_tariff_no_peak_variable() -> None:
    _, without = planners("15")
    assert without.model is not None
    assert without.model.capacity is None and "capacity" not in without.model.terms


# ------------------------------------------------------------ the simulator


def test_the_closed_loop_with_the_term_has_a_lower_monthly_peak_than_without() -> None:
    scenario = example_scenario(days=2)
    with_term = run_strategy(scenario, "mpc")
    plain = run_strategy(without_tariff(scenario), "mpc")
    peaks, cost, _ = billed(scenario, with_term)
    plain_peaks, plain_cost, _ = billed(scenario, plain)
    assert list(peaks) == ["2023-05"]
    assert peaks["2023-05"] < plain_peaks["2023-05"] - 1.0
    assert cost < plain_cost
    metrics = compute_metrics(with_term)
    assert metrics.monthly_peak_import_kw == peaks and metrics.capacity_cost == pytest.approx(cost)
    assert "capacity tariff" in format_summary(metrics)
