"""Properties of every plan over random snapshots (hypothesis): the safety invariants hold.

Planners are built once per site shape and reused across examples, so these tests also exercise
the warm re-solve path with arbitrary histories.

What is reachable is decided without the planner: :func:`read_world` reads the snapshot and the
config into per-step physics (step lengths, availability, trip and V2L energy, caps) by the
documented rules, and :func:`best_duties` solves small LPs of its own over that physics (SciPy),
one duty after the other in the planner's order of priority: the least time below the reserve,
then the most V2L served, then the least target shortfall, then (by test) the least discharge or
the most energy stored. The chargers have the IEC 61851 minimum (6 A on three phases, 4.14 kW):
a power below it is a pulse at it, which the physics includes (what a pulse puts through the meter).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from controller.config import SiteConfig
from controller.domain import Plan, VehicleMode
from controller.optimizer import Planner
from controller.snapshot import Snapshot
from tests.test_optimizer_helpers import T0, site, snapshot, vehicle

# Modest by default so the suite stays fast; V2X_OPTIMIZER_EXAMPLES=500 for a deeper search.
SETTINGS = settings(
    max_examples=int(os.environ.get("V2X_OPTIMIZER_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TOL_W = 1.0
TOL_PCT = 1e-4
TOL_KWH = 1e-3
# "charge now" makes every step a target of its own, which the planner weighs against a V2L session
# rather than putting one strictly first; the reachability tests leave it out (it has its own tests).
DUTY_MODES = ("auto", "auto", "no_discharge")

SHAPES: dict[str, Any] = {
    # one V2G car, 8 h of 15-minute steps
    "one": lambda: site([vehicle("a", capacity_kwh=60)], horizon_hours=8, import_kw=50, export_kw=10),
    # a V2G car and a V2H-only car
    "mixed": lambda: site(
        [vehicle("a", capacity_kwh=77), vehicle("b", v2g=False, capacity_kwh=40, reserve_percent=30)],
        horizon_hours=8,
        import_kw=25,
    ),
    # no V2G at all: a V2H-only car and a charge-only car, hourly steps over a day
    "no_v2g": lambda: site(
        [vehicle("a", v2g=False, capacity_kwh=64), vehicle("b", v2g=False, v2h=False, capacity_kwh=50)],
        step_minutes=60,
        horizon_hours=24,
        import_kw=25,
    ),
}


@functools.cache
def planner(shape: str) -> Planner:
    return Planner(config(shape))


@functools.cache
def config(shape: str) -> SiteConfig:
    cfg: SiteConfig = SHAPES[shape]()
    return cfg


def spec(shape: str, vid: str) -> Any:
    return next(v for v in planner(shape).shape.vehicles if v.vehicle_id == vid)


# ------------------------------------------------------------------ strategies


often = st.integers(0, 3).map(bool)  # True 3 times in 4


@st.composite
def vehicle_state(
    draw: st.DrawFn,
    /,
    vid: str,
    horizon: timedelta,
    *,
    trips: bool = True,
    v2l: bool = True,
    modes: bool | Sequence[str] = True,
    plugged: bool | None = None,
) -> dict[str, Any]:
    # Mostly a known SoC and plugged in: the cases where the planner has choices to make.
    soc_known = not modes or draw(often)
    state: dict[str, Any] = {
        "id": vid,
        "soc_percent": draw(st.floats(0, 100)) if soc_known else None,
        "plugged_in": draw(often) if plugged is None else plugged,
    }
    minutes = int(horizon.total_seconds() // 60)
    if draw(st.booleans()):
        at = T0 + timedelta(minutes=draw(st.integers(1, minutes + 240)))
        state["departure"] = {"at": at, "target_soc_percent": draw(st.floats(0, 100))}
    if trips and draw(st.booleans()):
        depart = T0 + timedelta(minutes=draw(st.integers(-120, minutes)))
        arrive = depart + timedelta(minutes=draw(st.integers(15, 600)))
        state["away"] = [{"depart": depart, "arrive": arrive, "energy_kwh": draw(st.floats(0, 40))}]
    if v2l and draw(st.booleans()):
        start = T0 + timedelta(minutes=draw(st.integers(-60, minutes)))
        end = draw(st.one_of(st.none(), st.integers(15, 900).map(lambda m: start + timedelta(minutes=m))))
        state["v2l"] = {"start": start, "end": end, "power_w": draw(st.floats(0, 3000))}
    if modes:
        choices = ["auto", "auto", "auto", "charge_now", "no_discharge"] if modes is True else list(modes)
        state["mode"] = draw(st.sampled_from(choices))
    return state


def series(n: int, lo: float, hi: float) -> st.SearchStrategy[list[float]]:
    return st.lists(st.floats(lo, hi), min_size=n, max_size=n)


@st.composite
def world(
    draw: st.DrawFn,
    /,
    shape: str,
    *,
    prices: st.SearchStrategy[tuple[list[float], list[float]]] | None = None,
    limits: bool = True,
    home_within_limits: bool = False,
    **vehicle_options: Any,
) -> Snapshot:
    """A random snapshot for ``shape``; with import > export prices and PV above the load, storing
    PV for later is a real gain, so ``prices`` that set export < import also get no PV surplus.

    ``home_within_limits``: drawn caps leave room for the home itself (the cars may still get
    none); a home beyond a cap makes relieving it a duty above the targets."""
    p = planner(shape)
    n = p.steps
    horizon = p.shape.step * n
    ids = [v.vehicle_id for v in p.shape.vehicles]
    vehicles = [draw(vehicle_state(vid, horizon, **vehicle_options)) for vid in ids]
    if prices is None:
        imp = draw(series(n, -0.5, 1.0))
        spread = draw(series(n, 0.0, 0.3))
        exp = [i - s for i, s in zip(imp, spread, strict=True)]
    else:
        imp, exp = draw(prices)
    load = draw(series(n, 0.0, 8000.0))
    pv = draw(series(n, 0.0, 10_000.0))
    if prices is not None and any(e < i for i, e in zip(imp, exp, strict=True)):
        pv = [min(a, b) for a, b in zip(pv, load, strict=True)]
    extra: dict[str, Any] = {}
    if limits and draw(st.booleans()):
        extra["import_limit_w"] = draw(series(n, 0.0, 30_000.0))
        extra["export_limit_w"] = draw(series(n, 0.0, 15_000.0))
        if home_within_limits:
            net = [a - b for a, b in zip(load, pv, strict=True)]
            extra["import_limit_w"] = [
                max(x, 0.0) + c for x, c in zip(net, extra["import_limit_w"], strict=True)
            ]
            extra["export_limit_w"] = [
                max(-x, 0.0) + c for x, c in zip(net, extra["export_limit_w"], strict=True)
            ]
    return snapshot(
        n,
        vehicles,
        time=T0 + timedelta(minutes=draw(st.integers(0, int(p.shape.step.total_seconds() // 60) - 1))),
        load_w=load,
        pv_w=pv,
        import_price=imp,
        export_price=exp,
        **extra,
    )


def flat_prices(n: int) -> st.SearchStrategy[tuple[list[float], list[float]]]:
    spread = st.one_of(st.just(0.0), st.floats(0.0, 0.5))
    # Whole cents as well as any float: the floats alone lean to the range's ends. Not below 0: a
    # paid import is worth making room for, so a full car moving energy into another one (or into
    # losses) to take more of it is a gain, not a needless discharge.
    level = st.one_of(st.floats(0.0, 1.0), st.integers(0, 100).map(lambda cents: cents / 100))
    return st.tuples(level, spread).map(lambda t: ([t[0]] * n, [t[0] - t[1]] * n))


def negative_prices(n: int) -> st.SearchStrategy[tuple[list[float], list[float]]]:
    return series(n, -0.5, -0.15).map(lambda imp: (imp, [i - 0.05 for i in imp]))


def run(shape: str, snap: Snapshot) -> Plan:
    plan = planner(shape).plan(snap)
    assert plan.solver_status == "optimal", plan.solver_status
    return plan


def import_limit_w(shape: str, snap: Snapshot) -> np.ndarray:
    if snap.import_limit_w is not None:
        return np.asarray(snap.import_limit_w)
    return np.full(snap.steps, config(shape).site.grid.import_limit_kw * 1000)


def export_limit_w(shape: str, snap: Snapshot) -> np.ndarray:
    if snap.export_limit_w is not None:
        return np.asarray(snap.export_limit_w)
    return np.full(snap.steps, config(shape).site.grid.export_limit_kw * 1000)


# ------------------------------------------------------------------ the world, read independently


def pulse_shares(min_kw: np.ndarray, flow_kw: np.ndarray) -> np.ndarray:
    """(cars, steps): the share of a pulse at ``min_kw`` that passes the meter against a flow the
    home takes (``0 < flow < min``: ``1 - flow / min``), else 0."""
    p = min_kw[:, None]
    inside = (flow_kw[None, :] > 0) & (flow_kw[None, :] < p)
    return np.where(inside, 1.0 - flow_kw[None, :] / np.where(inside, p, 1.0), 0.0)


def grid_flows_w(w: World, plan: Plan, shape: str) -> tuple[np.ndarray, np.ndarray]:
    """Step-average import and export of the plan's setpoints, pulses included (W)."""
    specs = planner(shape).shape.vehicles
    power = np.array([plan.vehicles[s.vehicle_id].power_w for s in specs]) / 1000
    charge, discharge = np.maximum(power, 0.0), np.maximum(-power, 0.0)
    grid = w.net_kw + power.sum(axis=0)
    pulsed_out = (pulse_shares(w.min_discharge_kw, w.net_kw) * discharge).sum(axis=0)
    pulsed_in = (pulse_shares(w.min_charge_kw, -w.net_kw) * charge).sum(axis=0)
    imported, exported = np.maximum(grid, 0.0), np.maximum(-grid, 0.0)
    extra = np.maximum(np.maximum(pulsed_out - exported, pulsed_in - imported), 0.0)
    return 1000 * (imported + extra), 1000 * (exported + extra)


BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class World:
    """A snapshot as physics per car and step, in real units (kW, kWh, hours)."""

    hours: FloatArray
    """(steps,) length of each step from the snapshot time on (step 0 is partly over)."""
    net_kw: FloatArray
    import_cap_kw: FloatArray
    export_cap_kw: FloatArray
    plugged: BoolArray
    """(cars, steps) the car can take or give power at its charger."""
    trip_kwh: FloatArray
    v2l_kwh: FloatArray
    """(cars, steps) V2L energy asked for (at the load)."""
    e0: FloatArray
    reserve: FloatArray
    e_max: FloatArray
    charge_kw: FloatArray
    discharge_kw: FloatArray
    """0 where the car may not discharge in this plan (SoC unknown, a mode, below the reserve)."""
    own_use: BoolArray
    min_charge_kw: FloatArray
    """The smallest power each car's charger runs at: a lower average is a pulse at it."""
    min_discharge_kw: FloatArray
    eta_c: FloatArray
    eta_d: FloatArray
    floor: FloatArray
    """(cars, steps) energy wanted at the end of each step: the reserve, a target at its step."""
    targets: tuple[tuple[int, int, float], ...]
    """(car, step boundary 1..steps, kWh) for each departure target inside the plan."""


def read_world(shape: str, snap: Snapshot) -> World:
    """The rules of docs/optimizer.md applied to ``snap`` (no planner code involved)."""
    cfg = config(shape)
    specs = planner(shape).shape.vehicles
    n, t = len(specs), planner(shape).steps
    step_s = cfg.site.plan_step_minutes * 60.0
    step_min = cfg.site.plan_step_minutes
    start = snap.time.replace(minute=snap.time.minute // step_min * step_min, second=0, microsecond=0)
    now_s = (snap.time - start).total_seconds()
    lo = np.arange(t) * step_s
    lo[0] = now_s
    hi = (np.arange(t) + 1.0) * step_s
    end_s = float(hi[-1])

    def sec(moment: Any) -> float:
        return float((moment - start).total_seconds())

    def overlap_s(a: float, b: float) -> FloatArray:
        out: FloatArray = np.clip(np.minimum(hi, b) - np.maximum(lo, a), 0.0, None)
        return out

    plugged = np.ones((n, t), dtype=bool)
    trip = np.zeros((n, t))
    v2l = np.zeros((n, t))
    floor = np.zeros((n, t))
    e0, e_max, discharge = np.zeros(n), np.zeros(n), np.zeros(n)
    targets: list[tuple[int, int, float]] = []
    for v, spec in enumerate(specs):
        state = snap.vehicle(spec.vehicle_id)
        assert state is not None  # every car is in every drawn snapshot
        known = state.soc_percent is not None
        e0[v] = (
            spec.capacity_kwh * state.soc_percent / 100 if state.soc_percent is not None else spec.reserve_kwh
        )
        trips = [(sec(tr.depart), sec(tr.arrive), tr.energy_kwh) for tr in state.away]
        if not state.plugged_in:  # away until the trip under way (or the next one) ends, else all along
            back = next((a for _, a, _ in trips if a > now_s), end_s)
            plugged[v, overlap_s(now_s, back) > 0] = False
        gone = np.zeros(t, dtype=bool)  # driving or gone: no V2L there
        for depart, arrive, energy in trips:
            part = overlap_s(depart, arrive)
            plugged[v, part > 0] = False
            gone |= part > 0
            trip[v] += energy * part / (arrive - depart)
        wanted = [spec.reserve_kwh]
        if state.departure is not None and sec(state.departure.at) > now_s:
            dep_s = sec(state.departure.at)
            k = math.floor(dep_s / step_s)
            if k < t and k not in {math.floor(d / step_s) for d, _, _ in trips}:
                plugged[v, k:] = False  # gone without a known return
                gone[k:] = True
            want = spec.capacity_kwh * state.departure.target_soc_percent / 100
            beyond = k > t
            if beyond:  # after the horizon: what full power cannot add after its end, at the end
                want -= (dep_s - end_s) / 3600 * spec.max_charge_kw * spec.charge_efficiency
                k = t
            if k >= 1 and (not beyond or want > spec.reserve_kwh):
                targets.append((v, k, want))
                floor[v, k - 1] = max(floor[v, k - 1], want)
                wanted.append(want)
        if state.mode is VehicleMode.CHARGE_NOW:
            floor[v] = np.maximum(floor[v], spec.max_soc_kwh)
            wanted.append(spec.max_soc_kwh)
        floor[v] = np.maximum(floor[v], spec.reserve_kwh)
        e_max[v] = max(spec.max_soc_kwh, e0[v], *wanted)
        if known and state.mode is VehicleMode.AUTO and e0[v] >= spec.reserve_kwh:
            discharge[v] = spec.max_discharge_kw
        if state.v2l is not None and state.v2l.power_w > 0 and spec.v2l:
            until = end_s if state.v2l.end is None else sec(state.v2l.end)
            v2l[v] = state.v2l.power_w / 1000 * overlap_s(sec(state.v2l.start), until) / 3600
            v2l[v, gone] = 0.0
    net = (np.asarray(snap.load_w[:t]) - np.asarray(snap.pv_w[:t])) / 1000
    hours = (hi - lo) / 3600
    charge_kw = np.array([s.max_charge_kw for s in specs])
    mins = np.zeros((n, 2))  # the home charger's minimum, charging and discharging, kW
    for v, vehicle_cfg in enumerate(cfg.vehicles):
        charger = cfg.charger(vehicle_cfg.home_charger) if vehicle_cfg.home_charger else None
        if charger is not None:
            mins[v] = charger.lowest_min_power_w() / 1000, charger.lowest_min_power_w(discharge=True) / 1000
    import_cap_kw = import_limit_w(shape, snap)[:t] / 1000
    # A trip takes at most what can be in the car: charging at full power whenever plugged in,
    # within the import headroom and what the other cars could discharge, never above the max SoC.
    may_give = plugged * discharge[:, None]
    for v, spec in enumerate(specs):
        headroom = np.maximum(import_cap_kw - net, 0.0) + may_give.sum(axis=0) - may_give[v]
        gain = hours * spec.charge_efficiency * np.minimum(plugged[v] * spec.max_charge_kw, headroom)
        energy = e0[v]
        for k in range(t):
            energy = min(e_max[v], energy + gain[k]) - trip[v, k]
            if energy < 0:
                trip[v, k] += energy
                energy = 0.0
    return World(
        hours=hours,
        net_kw=net,
        import_cap_kw=import_cap_kw,
        export_cap_kw=export_limit_w(shape, snap)[:t] / 1000,
        plugged=plugged,
        trip_kwh=trip,
        v2l_kwh=v2l,
        e0=e0,
        reserve=np.array([s.reserve_kwh for s in specs]),
        e_max=e_max,
        charge_kw=charge_kw,
        discharge_kw=discharge,
        own_use=np.array([s.max_discharge_kw > 0 and not s.v2g for s in specs]),
        min_charge_kw=np.minimum(charge_kw, mins[:, 0]),
        min_discharge_kw=np.minimum([s.max_discharge_kw for s in specs], mins[:, 1]),
        eta_c=np.array([s.charge_efficiency for s in specs]),
        eta_d=np.array([s.discharge_efficiency for s in specs]),
        floor=floor,
        targets=tuple(targets),
    )


@dataclass(frozen=True)
class Duties:
    """Totals over the plan: kWh x steps below the reserve, kWh of V2L served, kWh short of the
    targets (above the reserve), kWh discharged, kWh in the cars at the end."""

    reserve_short: float
    v2l_served: float
    target_short: float
    discharged: float
    end_kwh: float


class WorldLp:
    """Every schedule the physics of a :class:`World` allows, as an LP (SciPy's HiGHS).

    Columns per car and step: charge kW, discharge kW, V2L served kW, energy at the step end, kWh
    below the reserve, kWh below a target (down to the reserve).
    """

    def __init__(self, w: World) -> None:
        self.w = w
        n, t = w.plugged.shape
        self.n, self.t = n, t
        size = n * t
        self.cols = 6 * size
        h = w.hours[None, :]
        rows: list[sp.csr_array] = []
        eye = sp.identity(size, format="csr")
        # Energy: e_k - e_{k-1} - h eta_c c + h (d + l) / eta_d = -trip (e_{-1} = e0).
        shift = sp.kron(sp.identity(n), sp.eye(t, k=-1), format="csr")
        charge_in = sp.diags_array((h * w.eta_c[:, None]).ravel())
        drawn = sp.diags_array((h / w.eta_d[:, None]).ravel())
        self.a_eq = sp.csr_array(sp.hstack([-charge_in, drawn, drawn, eye - shift, 0 * eye, 0 * eye]))
        b_eq = -w.trip_kwh.copy()
        b_eq[:, 0] += w.e0
        self.b_eq = b_eq.ravel()
        # e + below-reserve + below-target >= floor.
        rows.append(sp.csr_array(sp.hstack([0 * eye, 0 * eye, 0 * eye, -eye, -eye, -eye])))
        ub = [-w.floor.ravel()]
        # Grid caps on the step averages: g = net + sum(charge) - sum(discharge) within [-export,
        # import], and a pulse below a charger's minimum raises both import and export until the
        # export is sum(phi d) and the import sum(psi c) (phi, psi: pulse_shares).
        per_step = sp.kron(np.ones((1, n)), sp.identity(t), format="csr")
        phi = sp.diags_array(pulse_shares(w.min_discharge_kw, w.net_kw).ravel())
        psi = sp.diags_array(pulse_shares(w.min_charge_kw, -w.net_kw).ravel())
        zero = sp.csr_array((t, size))
        for c_part, d_part, bound in (
            (per_step, -per_step, w.import_cap_kw - w.net_kw),  # g <= import cap
            (-per_step, per_step, w.export_cap_kw + w.net_kw),  # -g <= export cap
            (zero, per_step @ phi, w.export_cap_kw),  # pulsed export <= export cap
            (per_step, per_step @ phi - per_step, w.import_cap_kw - w.net_kw),  # g + pulsed export
            (per_step @ psi, zero, w.import_cap_kw),  # pulsed import <= import cap
            (per_step @ psi - per_step, per_step, w.export_cap_kw + w.net_kw),  # pulsed import - g
        ):
            rows.append(sp.csr_array(sp.hstack([c_part, d_part, zero, zero, zero, zero])))
            ub.append(bound)
        # V2H-only cars discharge at most the home load PV leaves uncovered, and only where that
        # covers a pulse: never into export.
        own = sp.kron(w.own_use[None, :].astype(float), sp.identity(t), format="csr")
        rows.append(sp.csr_array(sp.hstack([zero, own, zero, zero, zero, zero])))
        smallest = w.min_discharge_kw[w.own_use].min() if w.own_use.any() else 0.0
        ub.append(np.where(w.net_kw >= smallest, np.maximum(w.net_kw, 0.0), 0.0))
        self.a_ub = sp.vstack(rows, format="csr")
        self.b_ub = np.concatenate(ub)
        plugged = w.plugged.astype(float)
        uncovered = w.own_use[:, None] & (w.net_kw[None, :] < w.min_discharge_kw[:, None])
        upper = np.concatenate(
            [
                (plugged * w.charge_kw[:, None]).ravel(),
                (plugged * w.discharge_kw[:, None] * ~uncovered).ravel(),
                (w.v2l_kwh / h).ravel(),
                np.repeat(w.e_max, t),
                np.full(size, np.inf),
                (w.floor - w.reserve[:, None]).ravel(),
            ]
        )
        lower = np.zeros(self.cols)
        lower[3 * size : 4 * size] = -np.inf  # trips are cut to what can be in the car; not relied on
        self.bounds = np.column_stack([lower, upper])
        self.extra_rows: list[FloatArray] = []
        self.extra_ub: list[float] = []

    def block(self, index: int, weights: FloatArray | float = 1.0) -> FloatArray:
        """A cost vector that sums block ``index`` (0 charge ... 5 below-target) with weights."""
        size = self.n * self.t
        cost = np.zeros(self.cols)
        cost[index * size : (index + 1) * size] = np.broadcast_to(weights, (self.n, self.t)).ravel()
        return cost

    def minimise(self, cost: FloatArray) -> float:
        a_ub = sp.vstack([self.a_ub, *(sp.csr_array(r[None, :]) for r in self.extra_rows)], format="csr")
        b_ub = np.concatenate([self.b_ub, self.extra_ub])
        # Without presolve: it can take the kept optimum of a tiny V2L load for an infeasibility.
        options = {"presolve": False}
        res = linprog(
            cost,
            A_ub=a_ub,
            b_ub=b_ub,
            A_eq=self.a_eq,
            b_eq=self.b_eq,
            bounds=self.bounds,
            method="highs",
            options=options,
        )
        assert res.status == 0, res.message
        return float(res.fun)

    def keep(self, cost: FloatArray, best: float) -> None:
        """From now on, ``cost @ x`` stays at its best value (to solver precision)."""
        self.extra_rows.append(cost)
        self.extra_ub.append(best + 1e-6 + 1e-8 * abs(best))


def best_duties(w: World, last: str | None = None) -> Duties:
    """Reserve first, then V2L, then targets (each kept at its best), then ``last``: the least
    discharge ("discharge") or the most energy in the cars at the end ("store")."""
    lp = WorldLp(w)
    below = lp.block(4)
    reserve_short = lp.minimise(below)
    lp.keep(below, reserve_short)
    served = lp.block(2, -w.hours[None, :])
    v2l_served = -lp.minimise(served)
    lp.keep(served, -v2l_served)
    short = lp.block(5)
    target_short = lp.minimise(short)
    lp.keep(short, target_short)
    discharged = end_kwh = math.nan
    if last == "discharge":
        discharged = lp.minimise(lp.block(1, w.hours[None, :]))
    elif last == "store":
        at_end = np.zeros((lp.n, lp.t))
        at_end[:, -1] = -1.0
        end_kwh = -lp.minimise(lp.block(3, at_end))
    return Duties(reserve_short, v2l_served, target_short, discharged, end_kwh)


def plan_duties(w: World, plan: Plan, shape: str) -> Duties:
    """The same totals for the planner's plan."""
    specs = planner(shape).shape.vehicles
    soc = np.array([plan.vehicles[s.vehicle_id].soc_percent for s in specs])
    ends = soc[:, 1:] * np.array([s.capacity_kwh for s in specs])[:, None] / 100
    power = np.array([plan.vehicles[s.vehicle_id].power_w for s in specs]) / 1000
    v2l = np.array([plan.vehicles[s.vehicle_id].v2l_power_w for s in specs]) / 1000
    reserve = w.reserve[:, None]
    return Duties(
        reserve_short=float(np.maximum(reserve - ends, 0.0).sum()),
        v2l_served=float((v2l * w.hours).sum()),
        target_short=float(np.maximum(w.floor - np.maximum(ends, reserve), 0.0).sum()),
        discharged=float((np.maximum(-power, 0.0) * w.hours).sum()),
        end_kwh=float(ends[:, -1].sum()),
    )


def assert_duties_kept(got: Duties, best: Duties) -> None:
    """The plan keeps each duty as well as physics allows, in their order."""
    assert got.reserve_short <= best.reserve_short + TOL_KWH, (got, best)
    assert got.v2l_served >= best.v2l_served - TOL_KWH, (got, best)
    assert got.target_short <= best.target_short + TOL_KWH, (got, best)


# ------------------------------------------------------------------ properties


@SETTINGS
@given(st.sampled_from(sorted(SHAPES)).flatmap(lambda s: st.tuples(st.just(s), world(s))))
def test_reserve_floor_never_crossed_by_the_controller(case: tuple[str, Snapshot]) -> None:
    shape, snap = case
    plan = run(shape, snap)
    for vid, vp in plan.vehicles.items():
        reserve = 100 * spec(shape, vid).reserve_kwh / spec(shape, vid).capacity_kwh
        soc = np.asarray(vp.soc_percent)
        for k, power in enumerate(vp.power_w):
            # Giving energy away (discharge, V2L) never ends a step below the reserve.
            if power < -TOL_W or vp.v2l_power_w[k] > TOL_W:
                assert soc[k + 1] >= reserve - TOL_PCT, (vid, k)
        state = snap.vehicle(vid)
        assert state is not None
        if not state.away and state.soc_percent is not None and state.soc_percent >= reserve:
            assert soc.min() >= reserve - TOL_PCT, vid


@SETTINGS
@given(world("one", limits=False, trips=False, v2l=False, modes=False, plugged=True))
def test_targets_met_whenever_reachable_else_full_power(snap: Snapshot) -> None:
    p = planner("one")
    state = snap.vehicles[0]
    assume(state.departure is not None and state.soc_percent is not None)
    assert state.departure is not None and state.soc_percent is not None
    plan = run("one", snap)
    k = int((state.departure.at - plan.start) // plan.step)
    assume(1 <= k <= plan.steps)
    s = spec("one", "a")
    dt = p.shape.step_h
    frac0 = (plan.start + plan.step - snap.time) / plan.step
    e0 = s.capacity_kwh * state.soc_percent / 100
    target = s.capacity_kwh * state.departure.target_soc_percent / 100
    reachable = e0 + s.charge_efficiency * s.max_charge_kw * dt * (frac0 + k - 1)  # full power at once
    reached = s.capacity_kwh * plan.vehicles["a"].soc_percent[k] / 100
    if target <= reachable:
        assert reached >= target - 1e-4
        assert plan.vehicles["a"].departure_shortfall_kwh <= 1e-4
    else:
        assert reached == pytest_approx(reachable)
        assert all(w >= s.max_charge_kw * 1000 - TOL_W for w in plan.vehicles["a"].power_w[:k])
        assert plan.vehicles["a"].departure_shortfall_kwh == pytest_approx(target - reachable)


@SETTINGS
@given(world("mixed", home_within_limits=True, modes=DUTY_MODES))
def test_targets_met_whenever_reachable_on_a_mixed_site(snap: Snapshot) -> None:
    # Two cars sharing (possibly per-step) import and export caps, trips, V2L sessions, unknown SoC,
    # no-discharge mode, any first-step fraction: reachability comes from the physics LP.
    w = read_world("mixed", snap)
    plan = run("mixed", snap)
    best = best_duties(w)
    got = plan_duties(w, plan, "mixed")
    assert_duties_kept(got, best)
    if best.reserve_short <= TOL_KWH and best.target_short <= TOL_KWH:  # everything reachable
        specs = planner("mixed").shape.vehicles
        for v, k, target_kwh in w.targets:
            vp = plan.vehicles[specs[v].vehicle_id]
            assert specs[v].capacity_kwh * vp.soc_percent[k] / 100 >= target_kwh - TOL_KWH, (v, k)
            assert vp.departure_shortfall_kwh <= TOL_KWH


def pytest_approx(value: float) -> Any:
    import pytest

    return pytest.approx(value, abs=1e-4)


@SETTINGS
@given(st.sampled_from(sorted(SHAPES)).flatmap(lambda s: st.tuples(st.just(s), world(s))))
def test_grid_and_power_limits_hold(case: tuple[str, Snapshot]) -> None:
    shape, snap = case
    plan = run(shape, snap)
    net_w = np.asarray(snap.load_w) - np.asarray(snap.pv_w)
    imp = np.asarray(plan.grid_import_w)
    exp = np.asarray(plan.grid_export_w)
    # Caps hold; only what the home does by itself can be beyond them, and the cars never add to it.
    assert np.all(imp <= np.maximum(import_limit_w(shape, snap), net_w) + TOL_W)
    assert np.all(exp <= np.maximum(export_limit_w(shape, snap), -net_w) + TOL_W)
    for vid, vp in plan.vehicles.items():
        s = spec(shape, vid)
        power = np.asarray(vp.power_w)
        assert np.all(power <= s.max_charge_kw * 1000 + TOL_W)
        assert np.all(power >= -s.max_discharge_kw * 1000 - TOL_W)
        state = snap.vehicle(vid)
        assert state is not None
        if not state.plugged_in and not state.away:
            assert np.all(np.abs(power) <= TOL_W), vid
        if state.soc_percent is None or state.mode != "auto":
            assert np.all(power >= -TOL_W), vid


@SETTINGS
@given(world("no_v2g"))
def test_without_v2g_no_car_energy_is_exported(snap: Snapshot) -> None:
    plan = run("no_v2g", snap)
    surplus_w = np.maximum(np.asarray(snap.pv_w) - np.asarray(snap.load_w), 0.0)
    assert np.all(np.asarray(plan.grid_export_w) <= surplus_w + TOL_W)


@SETTINGS
@given(world("mixed"))
def test_v2h_only_car_discharges_at_most_the_uncovered_home_load(snap: Snapshot) -> None:
    plan = run("mixed", snap)
    uncovered_w = np.maximum(np.asarray(snap.load_w) - np.asarray(snap.pv_w), 0.0)
    discharge_w = np.maximum(-np.asarray(plan.vehicles["b"].power_w), 0.0) if "b" in plan.vehicles else 0.0
    assert np.all(discharge_w <= uncovered_w + TOL_W)


@SETTINGS
@given(
    st.sampled_from(sorted(SHAPES)).flatmap(
        lambda s: st.tuples(
            st.just(s),
            world(s, prices=flat_prices(planner(s).steps), home_within_limits=True, modes=DUTY_MODES),
        )
    )
)
def test_flat_prices_never_cause_discharge(case: tuple[str, Snapshot]) -> None:
    # With caps, trips and V2L. Overloads the home causes by itself are relieved by discharging on
    # purpose, so caps leave the home room. A car may still discharge when a duty needs it (a V2H
    # car covering the home so that another car gets the capped import for its target), but never
    # more than the least any schedule needs: none at all where no duty needs it.
    shape, snap = case
    w = read_world(shape, snap)
    plan = run(shape, snap)
    best = best_duties(w, last="discharge")
    got = plan_duties(w, plan, shape)
    assert_duties_kept(got, best)
    assert got.discharged <= best.discharged + TOL_KWH, (got, best)
    if best.discharged <= TOL_KWH:
        for vid, vp in plan.vehicles.items():
            assert min(vp.power_w) >= -TOL_W, vid


@SETTINGS
@given(
    world("one", prices=negative_prices(32), limits=False, trips=False, v2l=False, modes=False, plugged=True)
)
def test_negative_prices_make_the_car_absorb(snap: Snapshot) -> None:
    p = planner("one")
    state = snap.vehicles[0]
    assert state.soc_percent is not None
    plan = run("one", snap)
    vp = plan.vehicles["a"]
    s = spec("one", "a")
    k = plan.steps
    if state.departure is not None:
        k = min(k, int((state.departure.at - plan.start) // plan.step))
    frac0 = (plan.start + plan.step - snap.time) / plan.step
    e0 = s.capacity_kwh * state.soc_percent / 100
    target = 0.0
    if state.departure is not None:
        target = s.capacity_kwh * state.departure.target_soc_percent / 100
        after_h = (state.departure.at - plan.end).total_seconds() / 3600
        if after_h > 0:  # documented: a later departure needs only what full power cannot add after the end
            target -= after_h * s.max_charge_kw * s.charge_efficiency
    e_max = max(s.max_soc_kwh, e0, target)
    hours = p.shape.step_h * (frac0 + k - 1) if k >= 1 else 0.0
    fill = min(e_max, e0 + s.charge_efficiency * s.max_charge_kw * hours)
    assert s.capacity_kwh * vp.soc_percent[-1] / 100 >= fill - 1e-4


@SETTINGS
@given(
    world("mixed", prices=negative_prices(32), home_within_limits=True, modes=DUTY_MODES),
)
def test_negative_prices_make_every_car_absorb_on_a_mixed_site(snap: Snapshot) -> None:
    # Two cars, shared caps, trips, V2L, modes: after the duties, the cars end as full as physics
    # allows (the LP's most energy stored at the end, with the same duties kept).
    w = read_world("mixed", snap)
    plan = run("mixed", snap)
    best = best_duties(w, last="store")
    got = plan_duties(w, plan, "mixed")
    assert_duties_kept(got, best)
    assert got.end_kwh >= best.end_kwh - TOL_KWH, (got, best)


@SETTINGS
@given(st.sampled_from(sorted(SHAPES)).flatmap(lambda s: st.tuples(st.just(s), world(s))))
def test_energy_balance_closes_at_every_step(case: tuple[str, Snapshot]) -> None:
    # Trips, V2L, caps, modes, a partly elapsed first step. Step lengths and trip energy per step
    # come from read_world, not from the planner.
    shape, snap = case
    w = read_world(shape, snap)
    plan = run(shape, snap)
    # The grid from the home and the cars' setpoints (real power, also in step 0).
    cars_w = sum((np.asarray(vp.power_w) for vp in plan.vehicles.values()), np.zeros(plan.steps))
    home_w = np.asarray(snap.load_w) - np.asarray(snap.pv_w)
    imp, exp = np.asarray(plan.grid_import_w), np.asarray(plan.grid_export_w)
    assert np.allclose(imp - exp, home_w + cars_w, atol=1e-6)
    # Import and export at once only where a car is pulsed below its charger's minimum.
    pulsed_imp, pulsed_exp = grid_flows_w(w, plan, shape)
    assert np.allclose(imp, pulsed_imp, atol=1e-6) and np.allclose(exp, pulsed_exp, atol=1e-6)
    # Each car's energy: charge x eta - discharge / eta - trip - V2L / eta, step by step.
    through = 0.0
    degradation = 0.0
    for v, s in enumerate(planner(shape).shape.vehicles):
        vp = plan.vehicles[s.vehicle_id]
        power_kw = np.asarray(vp.power_w) / 1000
        v2l_kw = np.asarray(vp.v2l_power_w) / 1000
        assert np.all(v2l_kw >= 0) and np.all(v2l_kw * w.hours <= w.v2l_kwh[v] + 1e-9)
        charge, discharge = np.maximum(power_kw, 0.0), np.maximum(-power_kw, 0.0)
        expected = (
            w.hours * (charge * s.charge_efficiency - (discharge + v2l_kw) / s.discharge_efficiency)
            - w.trip_kwh[v]
        )
        energy = np.asarray(vp.soc_percent) / 100 * s.capacity_kwh
        assert energy[0] == np.float64(w.e0[v]) or abs(energy[0] - w.e0[v]) <= 1e-9
        assert np.allclose(np.diff(energy), expected, atol=1e-5), s.vehicle_id
        car_through = float(
            (w.hours * (charge * s.charge_efficiency + (discharge + v2l_kw) / s.discharge_efficiency)).sum()
        )
        assert vp.throughput_kwh == pytest_approx(car_through)
        through += car_through
        degradation += s.degradation_cost_per_kwh * car_through
    # The money: per-step prices times the energy of each step.
    assert plan.import_cost == pytest_approx(float(np.dot(plan.import_price_per_kwh, imp / 1000 * w.hours)))
    assert plan.export_revenue == pytest_approx(
        float(np.dot(plan.export_price_per_kwh, exp / 1000 * w.hours))
    )
    assert plan.degradation_cost == pytest_approx(degradation)
    assert plan.total_cost == pytest_approx(plan.import_cost - plan.export_revenue + degradation)
