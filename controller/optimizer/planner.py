"""The planner: one snapshot in, one :class:`~controller.domain.Plan` out.

Build a :class:`Planner` once per site shape (config and step count); call :meth:`Planner.plan`
every interval. The first call canonicalises the CVXPY model (tens of ms to seconds, by size);
later calls only update parameter values and re-solve warm. Pure: no I/O, no asyncio, no clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from controller.config import SiteConfig
from controller.domain import Plan, VehiclePlan
from controller.optimizer.battery_plan import (
    BatterySchedule,
    battery_plans,
    fix_battery_direction,
    read_batteries,
)
from controller.optimizer.compiled import CompiledLp, LpResult
from controller.optimizer.duty import grid_flows_kw
from controller.optimizer.explain import StepFacts, reason
from controller.optimizer.fallback import Schedule, fallback_schedule
from controller.optimizer.inputs import FloatArray, PlanInputs, SnapshotError, build_inputs, check_snapshot
from controller.optimizer.model import ScheduleModel, step_of_columns, vehicle_of_columns
from controller.optimizer.shape import SiteShape
from controller.optimizer.solve_path import SolvePath
from controller.snapshot import Snapshot

__all__ = ["PlanTimings", "Planner", "netted", "plan_foresight"]

_ZERO_KW = 1e-6
_DIRECTION_PASSES = 4  # enough: _fix_direction leaves pass 4 nothing to burn with


@dataclass(frozen=True, slots=True)
class PlanTimings:
    """Where the time of one :meth:`Planner.plan` call went, in ms."""

    translate_ms: float
    """Snapshot checked and turned into optimiser arrays."""
    resolve_ms: float
    """The re-solve: parameter update, solver, solution read back (all passes)."""
    solver_ms: float
    """The solver's own time (HiGHS ``run()``), part of ``resolve_ms``."""
    build_ms: float
    """Arrays to a Plan, reasons included (or the fallback schedule)."""
    total_ms: float
    solves: int
    """Solver runs: 1, or more when a charge-and-discharge step had to be removed."""


class Planner:
    """Plans for the site in ``config`` over ``steps`` steps (default: the configured horizon).

    ``time_limit_s`` overrides ``optimizer.solver_time_limit_s`` (useful for long horizons). It is
    the budget of one :meth:`plan` call from the snapshot to the solution: the model build of the
    first call and every solver pass share it (see :attr:`time_limit_s`).
    """

    def __init__(
        self,
        config: SiteConfig,
        steps: int | None = None,
        *,
        time_limit_s: float | None = None,
        explain: bool = True,
        decompose: bool | None = None,
    ):
        self.config = config
        self.explain = explain
        """False: the plan's per-vehicle ``reason`` is left empty (a caller that never shows it,
        such as the simulator, skips the work); every number of the plan is the same."""
        self.shape = SiteShape.from_config(config, steps, time_limit_s)
        self.path = SolvePath(decompose, len(self.shape.vehicles), self.shape.step, self.shape.steps)
        """How each plan is solved (``decompose``: True always by decomposition on the site rows,
        False never, None per plan by the cars that can act; module ``solve_path``)."""
        self.time_limit_s = self.shape.solver_time_limit_s
        """Seconds one :meth:`plan` may spend before its solution: snapshot translation, the model
        build (first call only: CVXPY's canonicalisation cannot be interrupted, so it is counted and
        a build that uses the budget up gives a fallback plan) and all solver passes together; each
        pass gets what is left as HiGHS's time limit. May be changed between calls."""
        self.model: ScheduleModel | None = ScheduleModel(self.shape) if self.shape.vehicles else None
        self._lp: CompiledLp | None = None
        self._param_values: Callable[[PlanInputs], Sequence[FloatArray]] | None = None
        self._columns: tuple[slice, slice, slice, slice] | None = None
        self._battery_columns: tuple[slice, slice, slice] | None = None
        self._battery: BatterySchedule | None = None
        self._config_ids = tuple(v.vehicle_id for v in self.shape.vehicles)
        self.last_inputs: PlanInputs | None = None
        self.last_result: LpResult | None = None
        self.last_timings: PlanTimings | None = None

    @property
    def steps(self) -> int:
        return self.shape.steps

    def inputs(self, snapshot: Snapshot) -> PlanInputs:
        """Check ``snapshot`` against the site and translate it; raises SnapshotError."""
        issues = check_snapshot(snapshot, self.shape, self._config_ids)
        if issues:
            raise SnapshotError(issues)
        return build_inputs(snapshot, self.shape)

    def plan(self, snapshot: Snapshot) -> Plan:
        """Optimise from ``snapshot``. Never raises for solver trouble: that yields a fallback plan.

        Everything up to the solution shares one budget, :attr:`time_limit_s`; when it is used up
        the plan is the fallback plan.
        """
        started = time.perf_counter()
        deadline = started + self.time_limit_s
        inputs = self.inputs(snapshot)
        self.last_inputs = inputs
        self._battery = None
        translated = time.perf_counter()
        if self.model is None:
            plan = self._build_plan(snapshot, inputs, None, "no vehicles", 0.0, None)
            self._time(started, translated, translated, 0.0, 0)
            return plan
        solver_s = 0.0
        status = "fallback: direction"  # unless a pass below ends it
        objective: float | None = None
        schedule: Schedule | None = None
        passes = 0
        built_now = self._lp is None
        if self._lp is None:
            try:
                self.model.set_inputs(inputs)  # canonicalisation needs values; later solves skip CVXPY
                self._compile(self.model)
            except Exception as exc:  # no plan at all would leave the site without a safe schedule
                status, passes = f"fallback: model error: {exc}", _DIRECTION_PASSES
        decomposed = self._lp is not None and self.path.choose(self._lp, inputs)
        battery_fix = False
        while passes < _DIRECTION_PASSES and self._lp is not None:
            left_s = deadline - time.perf_counter()
            if left_s <= 0:
                status = _out_of_time(self.time_limit_s, passes, built_now)
                if schedule is not None and not battery_fix and self.last_result is not None:
                    # No time to re-solve without the burn: the cars' net power is a plan too.
                    schedule = netted(schedule, inputs, self.shape)
                    status = f"{_solved(self.last_result)}; charge and discharge in one step netted"
                    objective = self.last_result.objective
                break
            passes += 1
            assert self._param_values is not None
            self._lp.set_time_limit(left_s)
            self._lp.load_parameter_list(self._param_values(inputs))
            result = self._lp.solve(decomposed)
            solver_s += result.solver_time_s
            self.last_result = result
            if not result.optimal or result.x is None:
                status = f"fallback: solver {result.status}"
                break
            schedule = self._schedule(result.x)
            cars_changed = _fix_direction(inputs, schedule, passes)
            battery_fix = self._read_batteries(inputs, result.x)
            if not battery_fix and not cars_changed:
                status, objective = _solved(result), result.objective
                break
        solved = time.perf_counter()
        if objective is not None and self.last_result is not None and self.last_result.x is not None:
            self._note_peak(inputs, self.last_result.x)
        if objective is None or schedule is None:
            schedule = fallback_schedule(inputs, self.shape)
            self._battery = None
        plan = self._build_plan(snapshot, inputs, schedule, status, solver_s, objective)
        self._time(started, translated, solved, solver_s, passes)
        return plan

    def _time(self, started: float, translated: float, solved: float, solver_s: float, passes: int) -> None:
        done = time.perf_counter()
        self.last_timings = PlanTimings(
            translate_ms=1000 * (translated - started),
            resolve_ms=1000 * (solved - translated),
            solver_ms=1000 * solver_s,
            build_ms=1000 * (done - solved),
            total_ms=1000 * (done - started),
            solves=passes,
        )

    def _compile(self, model: ScheduleModel) -> None:
        may_decompose = self.path.may_decompose
        blocks = (lambda lp: vehicle_of_columns(model, lp.n_cols, lp.columns_of)) if may_decompose else None
        lp = CompiledLp(model.problem, self.time_limit_s, blocks)  # each pass sets what is left of the budget
        self._param_values = model.value_getter(lp.parameters)
        lp.know_steps(*step_of_columns(model, lp.n_cols, lp.columns_of))
        self._columns = (
            lp.columns_of(model.charge_kw),
            lp.columns_of(model.discharge_kw),
            lp.columns_of(model.v2l_served_kw),
            lp.columns_of(model.energy_kwh),
        )
        if model.batteries is not None:
            b = model.batteries
            self._battery_columns = (
                lp.columns_of(b.charge_kw),
                lp.columns_of(b.discharge_kw),
                lp.columns_of(b.energy_kwh),
            )
        self._lp = lp

    def _read_batteries(self, inputs: PlanInputs, x: FloatArray) -> bool:
        """The batteries' schedule from a solution; True when a direction fix asks for a re-solve."""
        if self.model is None or self.model.batteries is None or self._battery_columns is None:
            return False
        self._battery = read_batteries(self.model.batteries, x, self._battery_columns)
        return fix_battery_direction(inputs, self._battery)

    def _note_peak(self, inputs: PlanInputs, x: FloatArray) -> None:
        """With a capacity tariff: the month's planned peak, next to the peak so far."""
        if self._lp is None or self.model is None or self.model.capacity is None:
            return
        peak_kw = x[self._lp.columns_of(self.model.capacity.peak_kw)]
        ends = np.flatnonzero(inputs.capacity_month_end)
        planned = ", then ".join(f"{peak_kw[i]:.2f}" for i in ends)
        inputs.notes.append(
            f"capacity tariff: month peak planned at {planned} kW (so far {inputs.capacity_peak_now_kw[0]:.2f} kW)"
        )

    def _schedule(self, x: FloatArray) -> Schedule:
        assert self._columns is not None
        shape = (len(self.shape.vehicles), self.shape.steps)
        charge, discharge, v2l, energy = self._columns
        return Schedule(
            charge_kw=x[charge].reshape(shape, order="F"),
            discharge_kw=x[discharge].reshape(shape, order="F"),
            v2l_kw=x[v2l].reshape(shape, order="F"),
            energy_kwh=x[energy].reshape(shape, order="F"),
        )

    # ------------------------------------------------------------------ the plan

    def _build_plan(
        self,
        snapshot: Snapshot,
        inputs: PlanInputs,
        schedule: Schedule | None,
        status: str,
        solver_time_s: float,
        objective: float | None,
    ) -> Plan:
        shape = self.shape
        n, t = len(shape.vehicles), shape.steps
        dt = shape.step_h
        c = shape.constants
        frac0 = inputs.first_step_fraction
        fallback = objective is None and schedule is not None
        if schedule is None:
            charge = discharge = v2l = np.zeros((n, t))
            energy_kwh = np.repeat(inputs.e0_kwh[:, None], t, axis=1)
        else:
            charge, discharge, v2l = (
                _clean(schedule.charge_kw),
                _clean(schedule.discharge_kw),
                _clean(schedule.v2l_kw),
            )
            # An empty car (a trip cut to what it can hold) is at 0 within solver noise, not below.
            energy_kwh = schedule.energy_kwh.copy()
            energy_kwh[(energy_kwh <= 0.0) & (energy_kwh > -_ZERO_KW)] = 0.0
        # Grid flows from the balance itself, so the plan closes exactly at every step; a pulse
        # below a charger's minimum adds as much import as export (module ``duty``).
        batteries, battery_wear = (
            battery_plans(shape, inputs, self._battery) if shape.batteries else ({}, 0.0)
        )
        net_kw = inputs.net_load_kw if self._battery is None else inputs.net_load_kw + self._battery.net_kw
        import_model_kw, export_model_kw = grid_flows_kw(
            net_kw, charge, discharge, inputs.duty_export_share, inputs.duty_import_share
        )
        import_kwh = import_model_kw * dt
        export_kwh = export_model_kw * dt
        through = dt * (
            charge.sum(axis=1) * c.charge_efficiency + (discharge + v2l).sum(axis=1) / c.discharge_efficiency
        )
        # Step 0 was modelled as an average over the whole step: report the real power.
        import_kw, export_kw = import_model_kw.copy(), export_model_kw.copy()
        import_kw[0] /= frac0
        export_kw[0] /= frac0
        power_kw = charge - discharge
        power_kw[:, 0] /= frac0
        v2l_kw = v2l.copy()
        v2l_kw[:, 0] /= frac0
        energy = np.concatenate([inputs.e0_kwh[:, None], energy_kwh], axis=1)
        power_w = (power_kw * 1000.0).tolist()
        v2l_w = (v2l_kw * 1000.0).tolist()
        soc = (energy * (100.0 / c.capacity_kwh)[:, None]).tolist()
        export_now_kw = float(export_kw[0])
        notes = list(inputs.notes)
        explained = (
            _Explained(self.shape, snapshot, inputs, charge, fallback, export_now_kw)
            if self.explain and schedule is not None
            else None
        )
        vehicles: dict[str, VehiclePlan] = {}
        for i, spec in enumerate(shape.vehicles):
            if not inputs.in_snapshot[i] or schedule is None:
                continue
            if energy[i].min() < 0.0:
                # Trips are cut to what each car could take in alone; cars sharing an import cap
                # may together take in less (and the fallback plan does not charge for trips).
                notes.append(
                    f"{spec.vehicle_id}: SoC below 0 % planned: its trips take more than the plan puts in"
                )
            targets = inputs.targets[i]
            shortfall = sum(max(0.0, d.target_kwh - float(energy[i, d.index])) for d in targets)
            vehicles[spec.vehicle_id] = VehiclePlan(
                vehicle_id=spec.vehicle_id,
                power_w=tuple(power_w[i]),
                soc_percent=tuple(soc[i]),
                reason=""
                if explained is None
                else explained.reason(i, energy[i], power_w[i][0], v2l_w[i][0]),
                departure_shortfall_kwh=shortfall,
                throughput_kwh=float(through[i]),
                v2l_power_w=tuple(v2l_w[i]),
            )
        in_plan = (
            np.array(inputs.in_snapshot, dtype=bool) if schedule is not None else np.zeros(n, dtype=bool)
        )
        return Plan(
            created_at=snapshot.time,
            start=inputs.start,
            step=shape.step,
            vehicles=vehicles,
            grid_import_w=tuple((import_kw * 1000.0).tolist()),
            grid_export_w=tuple((export_kw * 1000.0).tolist()),
            import_price_per_kwh=tuple(inputs.import_price.tolist()),
            export_price_per_kwh=tuple(inputs.export_price.tolist()),
            solver_status=status,
            solve_time_ms=1000.0 * solver_time_s,
            fallback=fallback,
            import_cost=float(inputs.import_price @ import_kwh),
            export_revenue=float(inputs.export_price @ export_kwh),
            degradation_cost=float(c.degradation_cost_per_kwh[in_plan] @ through[in_plan]) + battery_wear,
            notes=tuple(notes),
            objective=objective,
            batteries=batteries,
        )


class _Explained:
    """What the per-vehicle reasons read besides the vehicle's own row (module ``explain``)."""

    def __init__(
        self,
        shape: SiteShape,
        snapshot: Snapshot,
        inputs: PlanInputs,
        charge: FloatArray,
        fallback: bool,
        export_now_kw: float,
    ) -> None:
        self.shape, self.snapshot, self.inputs = shape, snapshot, inputs
        self.fallback, self.export_now_kw = fallback, export_now_kw
        later = charge[:, 1:] > _ZERO_KW
        self.charges_later: npt.NDArray[np.bool_] = np.any(later, axis=1)
        self.negative_later: npt.NDArray[np.bool_] = np.any(later & (inputs.import_price[1:] < 0), axis=1)
        self.holds = {v.id: v.hold for v in snapshot.vehicles if v.hold is not None}

    def reason(self, i: int, energy: FloatArray, power_w: float, v2l_w: float) -> str:
        inputs, spec, frac0 = self.inputs, self.shape.vehicles[i], self.inputs.first_step_fraction
        targets = inputs.targets[i]
        trips = inputs.trips[i] if inputs.trips else ()
        next_trip = next((tr for tr in trips if tr.depart > self.snapshot.time), None)
        reached = float(energy[targets[0].index]) if targets else 0.0
        short_of_first = bool(targets) and reached < targets[0].target_kwh - 0.05
        facts = StepFacts(
            now=self.snapshot.time,
            timezone=self.shape.timezone,
            currency=self.shape.currency,
            power_kw=power_w / 1000.0,
            v2l_kw=v2l_w / 1000.0,
            v2l_requested_kw=float(inputs.v2l_kw[i, 0]) / frac0,
            available=bool(inputs.available[i, 0]),
            in_snapshot=True,
            soc_known=inputs.soc_known[i],
            mode=inputs.modes[i],
            energy_kwh=float(inputs.e0_kwh[i]),
            energy_end_kwh=float(energy[1]),
            reserve_kwh=spec.reserve_kwh,
            floor_kwh=float(inputs.floor_kwh[i, 0] - inputs.target_gap_kwh[i, 0]),
            e_max_kwh=float(inputs.e_max_kwh[i, 0]),
            capacity_kwh=spec.capacity_kwh,
            import_price=float(inputs.import_price[0]),
            export_price=float(inputs.export_price[0]),
            grid_export_kw=self.export_now_kw,
            pv_surplus=bool(inputs.pv_kw[0] > inputs.load_kw[0]),
            v2g=spec.v2g,
            next_target=targets[0] if targets else None,
            next_trip=next_trip,
            target_reachable_kwh=reached if short_of_first else None,
            charges_later=bool(self.charges_later[i]),
            charges_at_negative_price_later=bool(self.negative_later[i]),
            fallback=self.fallback,
            min_charge_kw=spec.min_charge_kw,
            min_discharge_kw=spec.min_discharge_kw,
            hold=self.holds.get(spec.vehicle_id),
        )
        return reason(facts)


def _solved(result: LpResult) -> str:
    """The status of a plan from a solution: optimal, or the best a decomposed solve found in time."""
    if result.gap <= 0.0 or result.status == "kOptimal":
        return "optimal"
    return f"time limit: best plan found, within {100 * result.gap:.2g} % of the optimum"


def _out_of_time(limit_s: float, passes: int, built_now: bool) -> str:
    if passes:
        spent = f"{passes} solver pass(es)"
    elif built_now:
        spent = "building the model"
    else:
        spent = "reading the snapshot"
    return f"fallback: time limit of {limit_s:g} s used up by {spent}"


def _fix_direction(inputs: PlanInputs, schedule: Schedule, pass_no: int) -> bool:
    """Forbid the weaker direction where a car both charges and discharges in one step.

    An LP may do that to burn energy when energy is worth less than nothing (deep negative prices
    with a full battery, or PV the grid cannot take); a charger cannot. The burn is often free to
    move: forbidden in one step, the next solve burns in another. So the fix escalates: pass 1
    forbids the weaker direction in the steps that burned; from pass 2 a car that burns again keeps
    only its net direction in every step; from pass 3 every car does. Pass 4 then cannot burn.
    Returns True when the inputs changed (solve again).
    """
    discharging = schedule.discharge_kw > _ZERO_KW
    if not discharging.any():
        return False  # the usual case, and cheap to see
    both = discharging & (schedule.charge_kw > _ZERO_KW)
    if not both.any():
        return False
    if pass_no <= 1:
        scope = both
    else:
        burning_cars = both.any(axis=1) if pass_no == 2 else np.ones(both.shape[0], dtype=bool)
        scope = np.zeros_like(both)
        scope[burning_cars, :] = True
    charging = scope & (schedule.charge_kw >= schedule.discharge_kw)
    inputs.discharge_ub_kw[charging] = 0.0
    inputs.charge_ub_kw[scope & ~charging] = 0.0
    note = "charge and discharge in the same step removed (energy was worth less than nothing)"
    if note not in inputs.notes:
        inputs.notes.append(note)
    return True


def netted(schedule: Schedule, inputs: PlanInputs, shape: SiteShape) -> Schedule:
    """Each car's charge and discharge in one step replaced by their net, and its energy run
    through the battery's chain again (less is lost, so it ends a little higher)."""
    c = shape.constants
    net_kw = schedule.charge_kw - schedule.discharge_kw
    charge_kw, discharge_kw = np.maximum(net_kw, 0.0), np.maximum(-net_kw, 0.0)
    stored_kwh = shape.step_h * (
        c.charge_efficiency[:, None] * charge_kw
        - (discharge_kw + schedule.v2l_kw) / c.discharge_efficiency[:, None]
    )
    energy_kwh = inputs.e0_kwh[:, None] + np.cumsum(stored_kwh - inputs.trip_kwh, axis=1)
    return Schedule(charge_kw, discharge_kw, schedule.v2l_kw, energy_kwh)


def _clean(values: FloatArray) -> FloatArray:
    """Solver noise (1e-12 kW) is not a setpoint."""
    out: FloatArray = values.copy()
    out[np.abs(out) < _ZERO_KW] = 0.0
    return out


def plan_foresight(config: SiteConfig, snapshot: Snapshot, time_limit_s: float = 3600.0) -> Plan:
    """Perfect foresight: one solve over the whole snapshot (days to a year), all trips known.

    The horizon is the snapshot's length (``len(snapshot.load_w)`` steps of the site's step). The
    snapshot's ``time`` should sit on the step grid; put every known trip (with its departure
    target) in ``vehicles[].away``.
    """
    return Planner(config, snapshot.steps, time_limit_s=time_limit_s).plan(snapshot)
