"""Powers below a charger's minimum: a pulse at the minimum, priced by what it puts through the meter.

A 3-phase wallbox runs at 4.14 kW at least (6 A at 230 V). A step's average ``a`` below that is a
pulse at 4.14 kW for ``a / 4.14`` of the step: against a home load ``L`` a discharge pulse exports
``4.14 - L`` while it runs and the home imports ``L`` in the pause, so import and export are both
above 0 in the step even when the average is below the load.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.domain import Plan
from controller.optimizer import Planner, plan_foresight
from controller.optimizer.compiled import CompiledLp
from controller.optimizer.inputs import build_inputs
from controller.snapshot import Snapshot
from tests.test_optimizer_helpers import T0, site, snapshot, vehicle

P_KW = 4.14  # 6 A x 3 phases x 230 V
IDEAL = {"min_current_a": 0}
cvx: Any = cp  # CVXPY's atom functions are untyped


def pulse_flows_w(load_w: float, pv_w: float, power_w: float) -> tuple[float, float]:
    """Step-average import and export of one car pulsed at P against the home, netted in the two
    phases of the pulse (on for ``|power| / P`` of the step, off for the rest)."""
    net_kw, p_kw = (load_w - pv_w) / 1000, power_w / 1000
    on = min(abs(p_kw) / P_KW, 1.0)
    pulse_kw = np.sign(p_kw) * max(abs(p_kw), P_KW) if p_kw else 0.0
    grid_on, grid_off = net_kw + pulse_kw, net_kw
    imported = on * max(grid_on, 0.0) + (1 - on) * max(grid_off, 0.0)
    exported = on * max(-grid_on, 0.0) + (1 - on) * max(-grid_off, 0.0)
    return 1000 * imported, 1000 * exported


def one_step_sale(charger: dict[str, Any] | None = None, v2g: bool = True, load_w: float = 1000.0) -> Plan:
    """A car 0.5 kWh above its reserve and one dear step now: it sells that 0.5 kWh (1.84 kW)."""
    cfg = site([vehicle(v2g=v2g)], horizon_hours=4, charger=charger)
    export = [1.0] + [0.05] * 15
    snap = snapshot(
        16,
        [{"id": "ev", "soc_percent": 20 + 0.5 / 60 * 100, "plugged_in": True}],
        load_w=load_w,
        import_price=[1.2] + [0.3] * 15,
        export_price=export,
    )
    return Planner(cfg).plan(snap)


def test_a_pulsed_discharge_exports_all_but_the_share_the_home_takes() -> None:
    plan = one_step_sale()
    assert plan.solver_status == "optimal"
    power_w = plan.vehicles["ev"].power_w[0]
    assert power_w == pytest.approx(-0.5 * 0.92 / 0.25 * 1000, rel=1e-6)  # 1.84 kW: below 4.14 kW
    phi = 1 - 1.0 / P_KW
    assert plan.grid_export_w[0] == pytest.approx(phi * -power_w, rel=1e-6)
    assert plan.grid_import_w[0] == pytest.approx(1000 - -power_w / P_KW, rel=1e-6)
    assert (plan.grid_import_w[0], plan.grid_export_w[0]) == pytest.approx(pulse_flows_w(1000, 0, power_w))
    assert plan.export_revenue == pytest.approx(1.0 * phi * 1.84 * 0.25, rel=1e-6)
    reason = plan.vehicles["ev"].reason
    assert reason.startswith("exporting 1.8 kW at 1.00 EUR/kWh")
    assert reason.endswith("; pulsed at the 4.1 kW minimum for 44 % of the step"), reason


def test_without_a_minimum_the_home_takes_the_discharge_first() -> None:
    plan = one_step_sale(IDEAL)
    power_w = plan.vehicles["ev"].power_w[0]
    assert power_w == pytest.approx(-1840.0, rel=1e-6)
    assert plan.grid_export_w[0] == pytest.approx(840.0, rel=1e-6) and plan.grid_import_w[0] == 0.0
    assert "pulsed" not in plan.vehicles["ev"].reason


def evening(charger: dict[str, Any] | None, **limits: Any) -> Plan:
    """A V2G car, 1 kW of home load, import at 0.50 and export at 0.05, energy left worth 0.30."""
    cfg = site([vehicle()], horizon_hours=4, terminal_value_per_kwh=0.3, charger=charger)
    car = {"id": "ev", "soc_percent": 80, "plugged_in": True}
    prices = {"import_price": 0.5, "export_price": 0.05, **limits}
    return Planner(cfg).plan(snapshot(16, [car], load_w=1000.0, **prices))


def test_the_lp_prices_the_pulse() -> None:
    # Covering the home saves 0.50 a kWh, more than the kWh is worth (0.30 / 0.92 + wear): a box
    # without a minimum does it. At 4.14 kW, 76 % of every pulse is sold at 0.05: it does not pay.
    ideal = evening(IDEAL)
    assert np.allclose(ideal.vehicles["ev"].power_w, -1000.0) and max(ideal.grid_export_w) == 0.0
    real = evening(None)
    assert min(real.vehicles["ev"].power_w) == 0.0 and max(real.grid_export_w) == 0.0
    # Where nothing may be exported, no pulse runs, whatever the export would be worth.
    zero = {"export_limit_w": [0.0] * 16, "export_price": 0.5}
    assert np.allclose(evening(IDEAL, **zero).vehicles["ev"].power_w, -1000.0)  # the home takes it all
    assert min(evening(None, **zero).vehicles["ev"].power_w) == 0.0


def test_no_import_means_no_charging_pulse_from_a_small_surplus() -> None:
    # 1 kW of PV the grid cannot take and no import allowed: a box without a minimum stores the
    # surplus; at 4.14 kW the pulse would import, so the car takes nothing.
    def plan(charger: dict[str, Any] | None) -> Plan:
        cfg = site([vehicle()], horizon_hours=4, charger=charger)
        car = {"id": "ev", "soc_percent": 50, "plugged_in": True}
        zero = [0.0] * 16
        snap = snapshot(16, [car], load_w=0.0, pv_w=1000.0, import_limit_w=zero, export_limit_w=zero)
        return Planner(cfg).plan(snap)

    assert np.allclose(plan(IDEAL).vehicles["ev"].power_w, 1000.0)
    pulsed = plan(None)
    assert max(pulsed.vehicles["ev"].power_w) == 0.0 and max(pulsed.grid_import_w) == 0.0


def test_a_car_without_v2g_is_never_pulsed_into_export() -> None:
    # The same dear step with V2H only: a 1.84 kW pulse at 4.14 kW against 1 kW of load would export.
    assert min(one_step_sale(v2g=False).vehicles["ev"].power_w) == 0.0
    # A home that takes the whole pulse (5 kW) gets the 0.5 kWh.
    power_w = one_step_sale(v2g=False, load_w=5000.0).vehicles["ev"].power_w[0]
    assert power_w == pytest.approx(-1840.0, rel=1e-6)
    # A box without a minimum covers 1 kW of load, as before.
    power_w = one_step_sale(IDEAL, v2g=False).vehicles["ev"].power_w[0]
    assert power_w == pytest.approx(-1000.0, rel=1e-6)


def test_a_v2h_car_covers_the_home_only_where_the_load_covers_its_pulse() -> None:
    # A dear evening, the home between 1 and 6 kW: the V2H car discharges only in steps of 4.14 kW
    # or more, never more than the load.
    cfg = site([vehicle(v2g=False)], horizon_hours=4, terminal_value_per_kwh=0.2)
    load_w = np.tile([1000.0, 3000.0, 4100.0, 4200.0, 6000.0, 2500.0, 5000.0, 4140.0], 2)
    snap = snapshot(
        16,
        [{"id": "ev", "soc_percent": 80, "plugged_in": True}],
        load_w=load_w,
        import_price=0.9,
        export_price=0.05,
    )
    plan = Planner(cfg).plan(snap)
    discharge_w = -np.asarray(plan.vehicles["ev"].power_w)
    covered = load_w >= P_KW * 1000
    assert np.all(discharge_w[~covered] == 0.0)
    assert np.allclose(discharge_w[covered], load_w[covered], rtol=1e-6)
    assert max(plan.grid_export_w) == 0.0


def test_charging_below_the_minimum_against_a_small_pv_surplus_imports_the_rest_of_the_pulse() -> None:
    # 1 kW of PV surplus; the car must take 0.46 kWh before it leaves 20 minutes from now: 2 kW
    # for one step, a pulse at 4.14 kW that takes 3.14 kW from the grid while it runs.
    cfg = site([vehicle()], horizon_hours=4, terminal_value_per_kwh=0.0)
    e0 = 30.0
    snap = snapshot(
        16,
        [
            {
                "id": "ev",
                "soc_percent": 100 * e0 / 60,
                "plugged_in": True,
                "departure": {
                    "at": T0 + timedelta(minutes=20),
                    "target_soc_percent": 100 * (e0 + 2.0 * 0.25 * 0.92) / 60,
                },
            }
        ],
        load_w=500.0,
        pv_w=1500.0,
    )
    plan = Planner(cfg).plan(snap)
    power_w = plan.vehicles["ev"].power_w[0]
    assert power_w == pytest.approx(2000.0, rel=1e-6)
    psi = 1 - 1.0 / P_KW
    assert plan.grid_import_w[0] == pytest.approx(psi * power_w, rel=1e-6)
    assert plan.grid_export_w[0] == pytest.approx(psi * power_w - 1000.0, rel=1e-6)
    assert (plan.grid_import_w[0], plan.grid_export_w[0]) == pytest.approx(pulse_flows_w(500, 1500, power_w))
    assert plan.vehicles["ev"].reason.endswith("; pulsed at the 4.1 kW minimum for 48 % of the step")
    ideal = Planner(site([vehicle()], horizon_hours=4, terminal_value_per_kwh=0.0, charger=IDEAL)).plan(snap)
    assert ideal.grid_import_w[0] == pytest.approx(1000.0, rel=1e-6) and ideal.grid_export_w[0] == 0.0


def test_the_shares_follow_the_charger_and_the_home() -> None:
    cfg = site([vehicle("a"), vehicle("b", v2g=False), vehicle("c")], charger={"phase_switching": True})
    planner = Planner(cfg)
    spec = planner.shape.vehicles[0]
    assert (spec.min_charge_kw, spec.min_discharge_kw) == pytest.approx((1.38, 1.38))  # one phase
    load_w = [500.0, 1000.0, 1380.0, 3000.0, 0.0, 0.0] + [400.0] * 90
    pv_w = [0.0, 0.0, 0.0, 0.0, 1000.0, 2000.0] + [0.0] * 90
    vehicles = [{"id": v, "soc_percent": 50, "plugged_in": True} for v in "abc"]
    inputs = build_inputs(snapshot(96, vehicles, load_w=load_w, pv_w=pv_w), planner.shape)
    phi = [1 - 0.5 / 1.38, 1 - 1.0 / 1.38, 0.0, 0.0, 0.0, 0.0]
    psi = [0.0, 0.0, 0.0, 0.0, 1 - 1.0 / 1.38, 0.0]
    assert inputs.duty_export_share[:, :6] == pytest.approx(np.array([phi] * 3))
    assert inputs.duty_import_share[:, :6] == pytest.approx(np.array([psi] * 3))
    # The V2H car may discharge only where the home takes a 1.38 kW pulse.
    assert inputs.own_use_cap_kw[:6] == pytest.approx([0.0, 0.0, 1.38, 3.0, 0.0, 0.0])
    assert np.all(inputs.discharge_ub_kw[1, :2] == 0) and np.all(inputs.discharge_ub_kw[1, 2:4] > 0)
    assert np.all(inputs.discharge_ub_kw[0, :4] > 0)  # the V2G cars are priced, not blocked


def test_an_ideal_charger_keeps_the_model_of_before() -> None:
    # No minimum: no duty rows, no parameter in the matrix, import and export never both above 0.
    rng = np.random.default_rng(3)
    planner = Planner(site([vehicle("a"), vehicle("b", v2g=False)], charger=IDEAL))
    assert planner.model is not None and planner.model.constraints["duty_cycle"] == []
    for _ in range(3):
        plan = planner.plan(random_snapshot(rng, ("a", "b")))
        imp, exp = np.asarray(plan.grid_import_w), np.asarray(plan.grid_export_w)
        assert np.all(np.minimum(imp, exp) == 0)
    assert planner._lp is not None and len(planner._lp._layout.coef_rows) == 0
    real = Planner(site([vehicle("a"), vehicle("b", v2g=False)]))
    assert real.model is not None and len(real.model.constraints["duty_cycle"]) == 2


def random_snapshot(rng: np.random.Generator, ids: tuple[str, ...], steps: int = 96) -> Snapshot:
    hours = np.arange(steps) / 4
    price = 0.25 + 0.2 * np.sin(2 * np.pi * (hours - 12) / 24) + 0.05 * rng.standard_normal(steps)
    return snapshot(
        steps,
        [{"id": v, "soc_percent": float(rng.uniform(25, 90)), "plugged_in": True} for v in ids],
        time=T0 + timedelta(minutes=int(rng.integers(0, 15))),
        load_w=rng.uniform(0, 6000, steps),
        pv_w=np.maximum(0, 7000 * np.sin(2 * np.pi * (hours - 8) / 24)) * rng.uniform(0.5, 1.0),
        import_price=price,
        export_price=price - rng.uniform(0, 0.15),
    )


@pytest.mark.parametrize("cars", [1, 3])
@pytest.mark.parametrize("reload", [False, True])
def test_the_fast_resolve_matches_a_plain_solve_with_pulse_shares(
    cars: int, reload: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shares that change, turn 0 and come back, from snapshot to snapshot; HiGHS gets the entries
    # that moved one by one, or (reload) the whole LP again with its basis. One car: only the map
    # entries that moved are computed; three: all of them.
    monkeypatch.setattr("controller.optimizer.lp_values._RELOAD_NS", 0.0 if reload else float("inf"))
    rng = np.random.default_rng(17)
    ids = ("a", "b", "c")[:cars]
    fleet = [vehicle("a"), vehicle("b", v2g=False), vehicle("c", max_charge_kw=7.4)][:cars]
    planner = Planner(site(fleet, import_kw=25))
    for _ in range(6):
        plan = planner.plan(random_snapshot(rng, ids))
        assert plan.solver_status == "optimal" and plan.objective is not None
        inputs = planner.last_inputs
        assert inputs is not None and planner.model is not None and planner._lp is not None
        assert inputs.duty_export_share.any() and inputs.duty_import_share.any()
        planner.model.set_inputs(inputs)  # the values of the plan's last pass
        problem: Any = planner.model.problem
        value = problem.solve(solver=cp.HIGHS)
        assert problem.status == cp.OPTIMAL
        assert value == pytest.approx(plan.objective, rel=1e-7, abs=1e-6)
    assert planner._lp is not None and len(planner._lp._layout.coef_rows) == 2 * cars * 96
    assert planner._lp._incremental is (cars == 1)
    assert planner._lp._values is not None and (planner._lp._values.reloads > 0) is reload


def test_long_horizons_and_cars_without_a_minimum_get_their_shares_in_parts() -> None:
    # Car b's box has no minimum: only car a has shares. Each car has its own parameters, and
    # over 1000 steps two per direction (CVXPY's canonicalisation grows with the square of one).
    cfg = site([vehicle("a"), vehicle("b")], chargers_by_vehicle={"b": IDEAL})
    planner = Planner(cfg, 1000)
    assert planner.model is not None
    shares = {s.param.name(): s.param.shape for s in planner.model.shares}
    assert shares == {
        "duty_export_share[0, 0:960]": (1, 960),
        "duty_export_share[0, 960:1000]": (1, 40),
        "duty_import_share[0, 0:960]": (1, 960),
        "duty_import_share[0, 960:1000]": (1, 40),
    }
    rng = np.random.default_rng(5)
    plan = planner.plan(random_snapshot(rng, ("a", "b"), steps=1000))
    assert plan.solver_status == "optimal" and plan.objective is not None
    assert planner.last_inputs is not None
    planner.model.set_inputs(planner.last_inputs)
    problem: Any = planner.model.problem
    assert problem.solve(solver=cp.HIGHS) == pytest.approx(plan.objective, rel=1e-7, abs=1e-6)


class _FailingCoefficients:
    """Delegates to a real HiGHS instance, but its matrix entries cannot be changed."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def changeCoeff(self, row: int, col: int, value: float) -> None:
        raise RuntimeError("changeCoeff failed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.parametrize("ids", [("a",), ("a", "b")])
def test_matrix_entries_that_did_not_reach_highs_are_sent_again(
    ids: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One car: only the entries that moved are computed; two (a column with two bound rows):
    # everything is, and compared with what HiGHS holds.
    monkeypatch.setattr("controller.optimizer.lp_values._RELOAD_NS", float("inf"))
    rng = np.random.default_rng(23)
    cfg = site([vehicle("a"), vehicle("b", v2g=False)][: len(ids)])
    first, second = random_snapshot(rng, ids), random_snapshot(rng, ids)
    planner = Planner(cfg)
    assert planner.plan(first).solver_status == "optimal"
    assert planner._lp is not None and planner._lp._incremental is (len(ids) == 1)
    highs = planner._lp._highs
    planner._lp._highs = _FailingCoefficients(highs)
    failed = planner.plan(second)
    assert failed.fallback and "changeCoeff failed" in failed.solver_status
    planner._lp._highs = highs
    again = planner.plan(second)
    assert again.objective == pytest.approx(Planner(cfg).plan(second).objective, rel=1e-9, abs=1e-9)


def test_compiled_matrix_entries_follow_their_parameters() -> None:
    # Entries that parameters multiply into, also 0 and back, with a constant part on top, in rows
    # that would otherwise be bounds (one variable) and in rows with several.
    x = cp.Variable(4, nonneg=True)
    share = cp.Parameter(4, nonneg=True, value=np.full(4, 0.5))
    cost = cp.Parameter(4, value=np.ones(4))
    demand = cp.Parameter(nonneg=True, value=2.0)
    constraints = [cvx.multiply(share, x) + x >= 0.5, share @ x >= demand, x <= 4]
    problem: Any = cp.Problem(cp.Minimize(cost @ x), constraints)
    lp = CompiledLp(problem, time_limit_s=5.0)
    assert len(lp._layout.coef_rows) == 8  # 4 bound-like rows, 4 entries in the shared row
    rng = np.random.default_rng(9)
    for _ in range(30):
        share.value = rng.choice([0.0, 0.0, 0.3, 1.0, 2.0], 4)
        cost.value = rng.uniform(0.1, 2.0, 4)
        demand.value = float(rng.uniform(0.0, 4.0 * float(share.value.sum())))
        lp.load_parameter_list([np.asarray(p.value, dtype=float) for p in lp.parameters])
        fast = lp.solve()
        value = problem.solve(solver=cp.HIGHS)
        assert fast.optimal and fast.x is not None
        assert fast.objective == pytest.approx(float(value), abs=1e-7)
        got = lp.value_of(fast.x, x)
        assert float(share.value @ got) >= float(demand.value) - 1e-7


def test_perfect_foresight_prices_pulses_too() -> None:
    # Two days of a small evening load and a dear export peak: the foresight plan is the same model.
    cfg = site([vehicle(capacity_kwh=40)])
    steps = 2 * 96
    hours = np.arange(steps) / 4
    price = 0.25 + 0.25 * np.sin(2 * np.pi * (hours + 16 - 19) / 24)
    snap = snapshot(
        steps,
        [{"id": "ev", "soc_percent": 60, "plugged_in": True}],
        load_w=800.0,
        import_price=price,
        export_price=price - 0.05,
    )
    plan = plan_foresight(cfg, snap)
    assert plan.solver_status == "optimal"
    power = np.asarray(plan.vehicles["ev"].power_w)
    for k in np.flatnonzero((power < 0) & (power > -P_KW * 1000 + 1)):
        assert (plan.grid_import_w[k], plan.grid_export_w[k]) == pytest.approx(
            pulse_flows_w(800.0, 0.0, power[k]), abs=1e-3
        )
    assert np.all(
        np.minimum(plan.grid_import_w, plan.grid_export_w)[(power == 0) | (power <= -P_KW * 1000)] == 0
    )


SHAPE = site([vehicle("a"), vehicle("b", v2g=False, capacity_kwh=40)], horizon_hours=6, import_kw=25)
PLANNER = Planner(SHAPE)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(0, 7000), min_size=24, max_size=24),
    st.lists(st.floats(0, 6000), min_size=24, max_size=24),
    st.lists(st.floats(-0.2, 1.0), min_size=24, max_size=24),
    st.floats(25, 95),
    st.floats(25, 95),
)
def test_every_step_is_priced_as_its_pulse_nets(
    load_w: list[float], pv_w: list[float], price: list[float], soc_a: float, soc_b: float
) -> None:
    # One V2G and one V2H car on 4.14 kW boxes: the plan's import and export are what the pulses
    # put through the meter, the V2H car never discharges where the home does not take its whole
    # pulse, and never more than the home takes.
    snap = snapshot(
        24,
        [
            {"id": "a", "soc_percent": soc_a, "plugged_in": True},
            {"id": "b", "soc_percent": soc_b, "plugged_in": True},
        ],
        load_w=load_w,
        pv_w=pv_w,
        import_price=price,
        export_price=[p - 0.1 for p in price],
    )
    plan = PLANNER.plan(snap)
    assert plan.solver_status == "optimal"
    a = np.asarray(plan.vehicles["a"].power_w)
    b = np.asarray(plan.vehicles["b"].power_w)
    net_w = np.asarray(load_w) - np.asarray(pv_w)
    assert np.all(-b[net_w < P_KW * 1000] <= 1e-6)
    assert np.all(-b <= np.maximum(net_w, 0) + 1e-6)
    for k in range(24):  # where one car runs: the two phases of its pulse, netted
        if a[k] == 0:
            flows = pulse_flows_w(load_w[k], pv_w[k], b[k])
        elif b[k] == 0:
            flows = pulse_flows_w(load_w[k], pv_w[k], a[k])
        else:
            continue
        assert (plan.grid_import_w[k], plan.grid_export_w[k]) == pytest.approx(flows, abs=1e-6), k
