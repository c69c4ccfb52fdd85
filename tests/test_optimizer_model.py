"""The CVXPY model: DPP, the fast re-solve agrees with a plain solve, fallbacks, long horizons."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta
from typing import Any, cast

import cvxpy as cp
import numpy as np
import pytest

from controller.domain import Plan
from controller.optimizer import Planner, plan_foresight
from controller.optimizer.compiled import CompiledLp, LpResult, NotCompilableError
from controller.snapshot import Snapshot
from tests.test_optimizer_helpers import T0, site, snapshot, soc_at, vehicle

cvx: Any = cp  # CVXPY's atom functions are untyped


def mixed_site(**optimizer: Any) -> Any:
    return site(
        [
            vehicle("v2g", capacity_kwh=77),
            vehicle("v2h", v2g=False, capacity_kwh=50, reserve_percent=30),
            vehicle("plain", v2g=False, v2h=False, capacity_kwh=40, max_charge_kw=7.4),
        ],
        import_kw=25,
        **optimizer,
    )


def random_snapshot(rng: np.random.Generator, steps: int = 96) -> Snapshot:
    hours = np.arange(steps) / 4
    price = 0.25 + 0.12 * np.sin(2 * np.pi * (hours - 12) / 24) + 0.05 * rng.standard_normal(steps)
    vehicles = []
    for vid in ("v2g", "v2h", "plain"):
        dep = T0 + timedelta(minutes=15 * int(rng.integers(4, steps + 20)))
        vehicles.append(
            {
                "id": vid,
                "soc_percent": float(rng.uniform(5, 95)),
                "plugged_in": bool(rng.random() < 0.85),
                "departure": {"at": dep, "target_soc_percent": float(rng.uniform(40, 90))},
            }
        )
    vehicles[0]["v2l"] = {"start": T0 + timedelta(hours=2), "end": T0 + timedelta(hours=4), "power_w": 1200}
    return snapshot(
        steps,
        vehicles,
        time=T0 + timedelta(minutes=int(rng.integers(0, 15))),
        load_w=rng.uniform(200, 4000, steps),
        pv_w=np.maximum(0, 6000 * np.sin(2 * np.pi * (hours - 8) / 24)),
        import_price=price,
        export_price=price - rng.uniform(0, 0.15),
        import_limit_w=np.where(rng.random(steps) < 0.2, 6000.0, 25000.0),
    )


def plain_solve(planner: Planner, solver: str = cp.HIGHS) -> float:
    assert planner.model is not None and planner.last_inputs is not None
    planner.model.set_inputs(planner.last_inputs)
    problem: Any = planner.model.problem
    value = problem.solve(solver=solver)
    assert problem.status == cp.OPTIMAL
    return float(value)


def test_model_is_dpp_and_an_lp() -> None:
    planner = Planner(mixed_site())
    assert planner.model is not None
    problem = planner.model.problem
    assert problem.is_dpp()
    assert problem.is_dcp() and not problem.is_mixed_integer()
    assert all(v.attributes["integer"] is False for v in problem.variables())
    assert {"import_cost", "export_revenue", "degradation", "terminal_value", "churn"} <= set(
        planner.model.terms
    )


def test_fast_resolve_matches_plain_problem_solve() -> None:
    rng = np.random.default_rng(7)
    planner = Planner(mixed_site())
    for _ in range(6):
        plan = planner.plan(random_snapshot(rng))
        assert plan.solver_status == "optimal" and plan.objective is not None
        assert planner._lp is not None and planner.last_result is not None and planner.model is not None
        x = planner.last_result.x
        assert x is not None
        # The fast solution is feasible for the CVXPY problem and has its objective value ...
        for var in planner.model.problem.variables():
            var.value = planner._lp.value_of(x, var)
        planner.model.set_inputs(planner.last_inputs)  # type: ignore[arg-type]
        constraints: list[Any] = planner.model.problem.constraints
        worst = max(float(np.max(c.violation())) for c in constraints)
        assert worst < 1e-6
        assert planner.model.problem.objective.value == pytest.approx(plan.objective, rel=1e-9, abs=1e-9)
        # ... which is the optimum a plain solve finds (HiGHS from scratch, and an interior-point solver).
        assert plain_solve(planner) == pytest.approx(plan.objective, rel=1e-7, abs=1e-6)
        assert plain_solve(planner, cp.CLARABEL) == pytest.approx(plan.objective, rel=1e-5, abs=1e-3)


def test_reusing_a_planner_equals_a_fresh_planner() -> None:
    rng = np.random.default_rng(11)
    snaps = [random_snapshot(rng) for _ in range(4)]
    warm = Planner(mixed_site())
    warm_objectives = [warm.plan(s).objective for s in snaps]
    fresh_objectives = [Planner(mixed_site()).plan(s).objective for s in snaps]
    assert warm_objectives == pytest.approx(fresh_objectives, rel=1e-8, abs=1e-7)


def test_plan_totals_and_units() -> None:
    cfg = site([vehicle()])
    snap = snapshot(96, [{"id": "ev", "soc_percent": 50, "plugged_in": True}], load_w=1000.0)
    plan = Planner(cfg).plan(snap)
    assert plan.steps == 96 and plan.step == timedelta(minutes=15) and plan.start == T0
    vp = plan.vehicles["ev"]
    assert len(vp.power_w) == 96 and len(vp.soc_percent) == 97 and len(vp.v2l_power_w) == 96
    imported_kwh = sum(plan.grid_import_w) / 1000 * 0.25
    assert plan.import_cost == pytest.approx(imported_kwh * 0.3)
    through = (
        sum(p / 1000 * 0.25 * (0.92 if p > 0 else 1 / 0.92) for p in vp.power_w if p != 0)
        if any(vp.power_w)
        else 0.0
    )
    assert vp.throughput_kwh == pytest.approx(abs(through))
    assert plan.degradation_cost == pytest.approx(0.05 * vp.throughput_kwh)


def test_time_limit_gives_a_safe_fallback_plan_and_recovers() -> None:
    cfg = mixed_site()
    rng = np.random.default_rng(3)
    snap = random_snapshot(rng)
    planner = Planner(cfg, time_limit_s=1e-9)
    plan = planner.plan(snap)
    assert plan.fallback and plan.objective is None
    assert plan.solver_status == "fallback: time limit of 1e-09 s used up by building the model"
    assert all(p >= 0 for vp in plan.vehicles.values() for p in vp.power_w)  # no discharge at all
    assert all(vp.reason.startswith("fallback plan: ") for vp in plan.vehicles.values())
    # The model build is counted (it cannot be interrupted) and no solver pass is started.
    assert planner.last_timings is not None and planner.last_timings.solves == 0
    assert plan.solve_time_ms == 0.0
    assert planner._lp is not None  # built all the same: the next plan only solves
    planner.time_limit_s = 10.0
    again = planner.plan(snap)
    assert not again.fallback and again.solver_status == "optimal"


def test_time_limit_cuts_a_long_solve_within_the_budget() -> None:
    # 20 cars: a cold solve takes about 0.12 s on the reference machine, 6x the budget below.
    cfg = site([vehicle(f"v{i}") for i in range(20)], import_kw=60, horizon_hours=24)
    rng = np.random.default_rng(11)

    def snap() -> Snapshot:
        return snapshot(
            96,
            [
                {"id": f"v{i}", "soc_percent": float(rng.uniform(20, 90)), "plugged_in": True}
                for i in range(20)
            ],
            import_price=rng.uniform(-0.2, 0.8, 96),
            export_price=0.05,
            load_w=rng.uniform(0, 5000, 96),
            pv_w=rng.uniform(0, 6000, 96),
        )

    planner = Planner(cfg, time_limit_s=60.0)
    assert planner.plan(snap()).solver_status == "optimal"  # builds the model
    assert planner._lp is not None
    planner._lp._highs.clearSolver()  # no warm start: the next solve is a long one
    budget_s = 0.02
    planner.time_limit_s = budget_s
    plan = planner.plan(snap())
    assert plan.fallback and plan.solver_status == "fallback: solver Time limit reached", plan.solver_status
    timings = planner.last_timings
    assert timings is not None and timings.solves == 1
    margin_ms = 50.0  # HiGHS checks its clock between iterations; a loaded machine adds a little
    assert plan.solve_time_ms <= 1000 * budget_s + margin_ms
    assert timings.translate_ms + timings.resolve_ms <= 1000 * budget_s + margin_ms


class _SlowPasses:
    """A compiled LP whose every solve takes ``pause_s`` longer, cut at the time limit it is given
    like HiGHS would (a slow machine, simulated)."""

    def __init__(self, inner: CompiledLp, pause_s: float) -> None:
        self._inner = inner
        self._pause_s = pause_s
        self._limit_s = float("inf")
        self.limits: list[float] = []

    def set_time_limit(self, seconds: float) -> None:
        self._limit_s = seconds
        self.limits.append(seconds)
        self._inner.set_time_limit(seconds)

    def solve(self, decomposed: bool = False) -> LpResult:
        result = self._inner.solve(decomposed)
        wait = min(self._pause_s, max(0.0, self._limit_s - result.solver_time_s))
        time.sleep(wait)
        if result.solver_time_s + wait >= self._limit_s:
            return LpResult("Time limit reached", False, None, float("nan"), result.solver_time_s + wait, 0)
        return dataclasses.replace(result, solver_time_s=result.solver_time_s + wait)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_time_limit_is_one_budget_for_all_solver_passes() -> None:
    # Deep negative prices without wear cost need a second pass (charge and discharge in one step).
    cfg = site([vehicle(degradation_cost_per_kwh=0.0)])
    snap = snapshot(
        96, [{"id": "ev", "soc_percent": 90, "plugged_in": True}], import_price=-3.0, export_price=-3.5
    )
    planner = Planner(cfg)
    assert planner.plan(snap).solver_status == "optimal"
    assert planner.last_timings is not None and planner.last_timings.solves == 2
    assert planner._lp is not None
    slow = _SlowPasses(planner._lp, pause_s=0.04)
    planner._lp = cast(CompiledLp, slow)
    budget_s = 0.06
    planner.time_limit_s = budget_s
    plan = planner.plan(snap)
    # The first pass used 0.04 s of 0.06: the second gets only what is left, and is cut there.
    assert len(slow.limits) == 2
    assert slow.limits[0] <= budget_s and slow.limits[1] <= budget_s - 0.04 + 1e-3
    assert plan.fallback and plan.solver_status == "fallback: solver Time limit reached"
    assert plan.solve_time_ms <= 1000 * budget_s + 10.0
    # With time to spare, the same passes end optimal.
    planner.time_limit_s = 5.0
    assert planner.plan(snap).solver_status == "optimal"


def test_fallback_charges_toward_the_target_as_early_as_allowed() -> None:
    cfg = site([vehicle()], import_kw=8.0)
    dep = T0 + timedelta(hours=10)
    snap = snapshot(
        96,
        [
            {
                "id": "ev",
                "soc_percent": 30,
                "plugged_in": True,
                "departure": {"at": dep, "target_soc_percent": 60},
            }
        ],
        load_w=2000.0,
    )
    plan = Planner(cfg, time_limit_s=1e-9).plan(snap)
    assert plan.fallback
    power = plan.vehicles["ev"].power_w
    assert power[0] == pytest.approx(6000.0)  # all the import headroom, at once
    assert max(plan.grid_import_w) <= 8000.0 + 1e-6
    assert soc_at(plan, "ev", dep) == pytest.approx(60.0)
    assert all(p == 0 for p in power[power.index(0.0) :])


class _BrokenHighs:
    """Delegates to a real HiGHS instance but fails in run()."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def run(self) -> None:
        raise RuntimeError("solver crashed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_solver_exception_gives_a_fallback_plan() -> None:
    planner = Planner(mixed_site())
    rng = np.random.default_rng(5)
    planner.plan(random_snapshot(rng))
    assert planner._lp is not None
    broken: Any = _BrokenHighs(planner._lp._highs)
    planner._lp._highs = broken
    plan = planner.plan(random_snapshot(rng))
    assert plan.fallback and "solver crashed" in plan.solver_status
    assert plan.vehicles and all(min(vp.power_w) >= 0 for vp in plan.vehicles.values())


def test_deep_negative_prices_never_plan_charge_and_discharge_at_once() -> None:
    # No wear cost and -3/kWh: an LP would burn energy by charging and discharging together.
    cfg = site([vehicle(degradation_cost_per_kwh=0.0)])
    snap = snapshot(
        96, [{"id": "ev", "soc_percent": 90, "plugged_in": True}], import_price=-3.0, export_price=-3.5
    )
    plan = Planner(cfg).plan(snap)
    assert plan.solver_status == "optimal"
    assert any("same step removed" in n for n in plan.notes)
    assert_soc_follows_power(plan, snap, "ev", capacity_kwh=60.0, efficiency=0.92)


def test_a_burn_that_moves_between_steps_still_settles() -> None:
    # Zero export limit, PV the full car can take all but 1 Wh of, nothing priced: the 1 Wh is
    # burnt by charging and discharging at once, and it is free to move to any other step. Fixing
    # only the steps that burned moved it from pass to pass until the passes ran out (a fallback).
    # Chargers without a minimum power: a pulse at 4.14 kW would need import to take 3.3 kW of PV.
    cfg = site(
        [vehicle(capacity_kwh=77), vehicle("b", capacity_kwh=40)],
        horizon_hours=8,
        import_kw=25,
        charger={"min_current_a": 0},
    )
    snap = snapshot(
        32,
        [
            {"id": "ev", "soc_percent": 89, "plugged_in": True},
            {"id": "b", "soc_percent": None, "plugged_in": False},
        ],
        load_w=0.0,
        pv_w=[0.0] * 31 + [3348.0],
        import_price=0.0,
        export_price=0.0,
        import_limit_w=[0.0] * 32,
        export_limit_w=[0.0] * 32,
    )
    plan = Planner(cfg).plan(snap)
    assert plan.solver_status == "optimal"
    assert any("same step removed" in n for n in plan.notes)
    assert min(plan.vehicles["ev"].power_w) >= 0.0
    assert plan.vehicles["ev"].power_w[-1] > 3000.0  # the PV still goes into the car
    assert_soc_follows_power(plan, snap, "ev", capacity_kwh=77.0, efficiency=0.92)


def assert_soc_follows_power(
    plan: Plan, snap: Snapshot, vid: str, capacity_kwh: float, efficiency: float
) -> None:
    vp = plan.vehicles[vid]
    frac0 = (plan.start + plan.step - snap.time) / plan.step
    dt = plan.step.total_seconds() / 3600
    for k, power_w in enumerate(vp.power_w):
        hours = dt * (frac0 if k == 0 else 1.0)
        kw = power_w / 1000
        stored = kw * efficiency if kw > 0 else kw / efficiency
        expected = stored * hours - vp.v2l_power_w[k] / 1000 / efficiency * hours
        got = (vp.soc_percent[k + 1] - vp.soc_percent[k]) / 100 * capacity_kwh
        assert got == pytest.approx(expected, abs=1e-5), k


def test_not_compilable_problems_are_refused() -> None:
    x = cp.Variable(3)
    p = cp.Parameter(3, value=np.ones(3))
    with pytest.raises(NotCompilableError, match="not a linear program"):
        CompiledLp(cp.Problem(cp.Minimize(cvx.sum_squares(x - p))), 1.0)
    q = cp.Parameter(nonneg=True, value=2.0)
    with pytest.raises(NotCompilableError, match="needs a value"):
        CompiledLp(cp.Problem(cp.Minimize(cvx.sum(x)), [x >= cp.Parameter(3)]), 1.0)
    with pytest.raises(NotCompilableError, match="not DPP"):
        CompiledLp(cp.Problem(cp.Minimize(cvx.sum(x)), [x >= q * q]), 1.0)


def test_perfect_foresight_over_three_days_meets_every_trip() -> None:
    cfg = site([vehicle(capacity_kwh=77)])
    days = 3
    steps = days * 96
    trips: list[dict[str, Any]] = []
    for d in range(days):
        depart = T0 + timedelta(days=d, hours=15, minutes=30)  # 07:30 local next morning
        trips.append(
            {
                "depart": depart,
                "arrive": depart + timedelta(hours=10),
                "energy_kwh": 18.0,
                "target_soc_percent": 75.0,
            }
        )
    hours = np.arange(steps) / 4
    price = 0.28 + 0.12 * np.sin(2 * np.pi * (hours + 16 - 19) / 24)
    snap = snapshot(
        steps,
        [{"id": "ev", "soc_percent": 40, "plugged_in": True, "away": trips}],
        load_w=600.0,
        import_price=price,
        export_price=price - 0.12,
    )
    plan = plan_foresight(cfg, snap)
    assert plan.solver_status == "optimal" and plan.steps == steps
    vp = plan.vehicles["ev"]
    for trip in trips:
        assert soc_at(plan, "ev", trip["depart"]) >= 75.0 - 1e-4
        k = int((trip["depart"] - plan.start) // plan.step)
        away = range(k, min(k + 40, steps))
        assert all(vp.power_w[i] == 0 for i in away)
    assert min(vp.soc_percent) >= 20.0 - 1e-6
    assert vp.departure_shortfall_kwh == pytest.approx(0.0, abs=1e-4)


def test_churn_is_priced_over_the_configured_first_hours_only() -> None:
    shape_default = Planner(site([vehicle()])).model
    assert shape_default is not None and shape_default.ramp_up_kw is not None
    assert shape_default.ramp_up_kw.shape == (1, 15)  # 4 h of 15-minute steps
    short = Planner(site([vehicle()], churn_horizon_hours=1)).model
    assert short is not None and short.ramp_up_kw is not None and short.ramp_up_kw.shape == (1, 3)
    off = Planner(site([vehicle()], churn_cost_per_kw=0)).model
    assert off is not None and off.ramp_up_kw is None and "churn" not in off.terms


def test_flat_prices_charge_for_a_target_in_one_block() -> None:
    cfg = site([vehicle()])
    dep = T0 + timedelta(hours=3)
    snap = snapshot(
        96,
        [
            {
                "id": "ev",
                "soc_percent": 40,
                "plugged_in": True,
                "departure": {"at": dep, "target_soc_percent": 70},
            }
        ],
        import_price=0.3,
        export_price=0.3,
    )
    plan = Planner(cfg).plan(snap)
    power = np.asarray(plan.vehicles["ev"].power_w[:12])
    changes = int(np.sum(np.abs(np.diff(power)) > 1.0))
    assert changes <= 3, power  # on, (one partial step), off: no needless switching
    assert soc_at(plan, "ev", dep) == pytest.approx(70.0, abs=1e-4)


def test_timings_are_reported_per_plan() -> None:
    planner = Planner(mixed_site())
    planner.plan(random_snapshot(np.random.default_rng(1)))
    t = planner.last_timings
    assert t is not None and t.solves >= 1
    assert 0 < t.solver_ms <= t.resolve_ms <= t.total_ms
    assert t.translate_ms + t.resolve_ms + t.build_ms <= t.total_ms + 1e-6


def test_a_model_that_cannot_be_compiled_gives_a_fallback_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise NotCompilableError("the constraint matrix depends on parameters")

    monkeypatch.setattr("controller.optimizer.planner.CompiledLp", refuse)
    planner = Planner(mixed_site())
    plan = planner.plan(random_snapshot(np.random.default_rng(2)))
    assert plan.fallback and plan.solver_status.startswith("fallback: model error: the constraint matrix")
    assert all(min(vp.power_w) >= 0 for vp in plan.vehicles.values())


@pytest.mark.parametrize("shared_bounds", [False, True])
def test_compiled_lp_follows_every_parameter_change(shared_bounds: bool) -> None:
    # Parametric costs, right-hand sides and bounds that move one side at a time, both sides, and
    # back; with shared_bounds two bound rows act on one column (the general, non-incremental path).
    x = cp.Variable(4, nonneg=True)
    cost = cp.Parameter(4, value=np.ones(4))
    upper = cp.Parameter(4, nonneg=True, value=np.full(4, 5.0))
    lower = cp.Parameter(4, value=np.zeros(4))
    demand = cp.Parameter(value=3.0)
    constraints = [x <= upper, x >= lower, cvx.sum(x) >= demand]
    if shared_bounds:
        constraints.append(x <= upper + 1.0)
    problem: Any = cp.Problem(cp.Minimize(cost @ x), constraints)
    lp = CompiledLp(problem, time_limit_s=5.0)
    assert lp._incremental is not shared_bounds
    rng = np.random.default_rng(4)
    for _ in range(25):
        cost.value = rng.uniform(-1.0, 2.0, 4)
        upper.value = rng.choice([0.0, 1.0, 2.5, 5.0], 4)
        lower.value = np.minimum(upper.value, rng.choice([0.0, 0.5, 1.0], 4))
        demand.value = float(rng.uniform(0.0, float(upper.value.sum())))
        lp.load_parameter_list([np.asarray(p.value, dtype=float) for p in lp.parameters])
        fast = lp.solve()
        value: Any = problem.solve(solver=cp.HIGHS)
        assert fast.optimal and fast.x is not None
        assert fast.objective == pytest.approx(float(value), abs=1e-7)
        got = lp.value_of(fast.x, x)
        assert np.all(got <= upper.value + 1e-9) and np.all(got >= lower.value - 1e-9)
    with pytest.raises(ValueError, match="values for"):
        lp.load_parameter_list([np.ones(4)])


def test_a_car_below_its_reserve_never_feeds_another_car_short_of_its_own() -> None:
    # Car a is empty at home; car b comes home empty and leaves again, and the grid gives nothing
    # until late: moving a's little energy into b would lower b's shortfall, but a is below its floor.
    cfg = site([vehicle("a"), vehicle("b")], import_kw=11, horizon_hours=8)
    steps = 32
    import_limit = np.zeros(steps)
    import_limit[0] = 10000.0
    import_limit[24:] = 11000.0
    pv = np.zeros(steps)
    pv[23], pv[25], pv[28], pv[29] = 2670.0, 7310.0, 7234.0, 10000.0
    snap = snapshot(
        steps,
        [
            {"id": "a", "soc_percent": 0.0, "plugged_in": True},
            {
                "id": "b",
                "soc_percent": 0.0,
                "plugged_in": False,
                "departure": {"at": T0 + timedelta(hours=3, minutes=30), "target_soc_percent": 0.0},
                "away": [{"depart": T0, "arrive": T0 + timedelta(minutes=15), "energy_kwh": 0.0}],
            },
        ],
        load_w=0.0,
        pv_w=pv,
        import_price=0.0,
        export_price=0.0,
        import_limit_w=import_limit,
        export_limit_w=np.zeros(steps),
    )
    plan = Planner(cfg).plan(snap)
    assert not plan.fallback
    assert min(plan.vehicles["a"].power_w) >= -1e-6
