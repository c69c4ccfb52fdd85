"""The schedule as a CVXPY linear program, built once per site shape with ``cp.Parameter``s.

Variables per vehicle ``v`` and step ``t`` (kW, average over the step; kWh at step ends)::

    charge_kw, discharge_kw >= 0       AC power at the charger
    v2l_served_kw >= 0                 V2L load actually served (cut at the reserve)
    energy_kwh                         battery energy at the end of each step
    reserve_short_kwh >= 0             below the reserve floor (only where unavoidable)
    target_short_kwh in [0, gap]       below a departure target, down to the reserve
    ramp_up_kw, ramp_down_kw >= 0      change of net power between steps (first hours only)

and per step ``import_kw, export_kw`` within the caps, plus ``overload_*`` for what the home alone
puts over a cap. The model is an LP (no integers; the churn regulariser is L1) so the solver can
warm-start from the last basis. See docs/optimizer.md for the objective terms and their weights.
Parameters enter the right-hand sides and the costs, and, as the shares of a pulse below a
charger's minimum that pass the grid meter (module ``duty``), a few matrix entries:
``compiled.CompiledLp`` re-solves by sending HiGHS only the numbers that moved.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
import numpy.typing as npt

from controller.optimizer.capacity import CapacityModel
from controller.optimizer.home_battery import BatteryModel
from controller.optimizer.inputs import PlanInputs
from controller.optimizer.shape import SiteShape

__all__ = ["ScheduleModel", "step_of_columns", "vehicle_of_columns"]

# CVXPY's atom functions are untyped; build expressions through an explicitly dynamic alias.
cvx: Any = cp

# Parameters whose PlanInputs field has another name (every other parameter: the same name).
_INPUT_FIELD = {"export_price": "export_price_model"}
_SHARE_CHUNK_STEPS = 960
"""Steps per parameter of pulse shares. CVXPY's canonicalisation of a parameter that multiplies a
variable takes time and memory in the square of its size (a year of steps in one: 10 GB; 50 cars of
a day in one: 170 MB more), so each car gets its own, per chunk of steps (a day's horizon: one)."""

ValueGetter = Callable[[PlanInputs], Sequence[npt.NDArray[np.float64]]]


@dataclass(frozen=True, slots=True)
class _Shares:
    """A parameter of pulse shares: car ``row`` over ``steps`` of PlanInputs ``field`` (row None:
    the whole field, one car's horizon)."""

    field: str
    param: cp.Parameter
    row: int | None
    steps: slice

    def value(self, inputs: PlanInputs) -> npt.NDArray[np.float64]:
        shares: npt.NDArray[np.float64] = getattr(inputs, self.field)
        if self.row is None:
            return shares
        part: npt.NDArray[np.float64] = shares[self.row : self.row + 1, self.steps]
        return part


@dataclass(frozen=True, slots=True)
class _Params:
    e0_kwh: cp.Parameter
    charge_ub_kw: cp.Parameter
    discharge_ub_kw: cp.Parameter
    v2l_kw: cp.Parameter
    trip_kwh: cp.Parameter
    floor_kwh: cp.Parameter
    target_gap_kwh: cp.Parameter
    e_max_kwh: cp.Parameter
    net_load_kw: cp.Parameter
    import_ub_kw: cp.Parameter
    export_ub_kw: cp.Parameter
    overload_import_kw: cp.Parameter
    overload_export_kw: cp.Parameter
    own_use_cap_kw: cp.Parameter
    import_price: cp.Parameter
    export_price: cp.Parameter
    terminal_value: cp.Parameter


class ScheduleModel:
    """The LP for ``shape``; :meth:`set_inputs` loads one snapshot's numbers into its parameters."""

    def __init__(self, shape: SiteShape) -> None:
        if not shape.vehicles:
            raise ValueError("the schedule model needs at least one vehicle")
        self.shape = shape
        n, t = len(shape.vehicles), shape.steps
        vt = (n, t)
        self.params = _Params(
            e0_kwh=cp.Parameter(n, name="e0_kwh"),
            charge_ub_kw=cp.Parameter(vt, nonneg=True, name="charge_ub_kw"),
            discharge_ub_kw=cp.Parameter(vt, nonneg=True, name="discharge_ub_kw"),
            v2l_kw=cp.Parameter(vt, nonneg=True, name="v2l_kw"),
            trip_kwh=cp.Parameter(vt, nonneg=True, name="trip_kwh"),
            floor_kwh=cp.Parameter(vt, name="floor_kwh"),
            target_gap_kwh=cp.Parameter(vt, nonneg=True, name="target_gap_kwh"),
            e_max_kwh=cp.Parameter(vt, name="e_max_kwh"),
            net_load_kw=cp.Parameter(t, name="net_load_kw"),
            import_ub_kw=cp.Parameter(t, nonneg=True, name="import_ub_kw"),
            export_ub_kw=cp.Parameter(t, nonneg=True, name="export_ub_kw"),
            overload_import_kw=cp.Parameter(t, nonneg=True, name="overload_import_kw"),
            overload_export_kw=cp.Parameter(t, nonneg=True, name="overload_export_kw"),
            own_use_cap_kw=cp.Parameter(t, nonneg=True, name="own_use_cap_kw"),
            import_price=cp.Parameter(t, name="import_price"),
            export_price=cp.Parameter(t, name="export_price"),
            terminal_value=cp.Parameter(n, name="terminal_value"),
        )
        self.charge_kw = cp.Variable(vt, nonneg=True, name="charge_kw")
        self.discharge_kw = cp.Variable(vt, nonneg=True, name="discharge_kw")
        self.v2l_served_kw = cp.Variable(vt, nonneg=True, name="v2l_served_kw")
        self.energy_kwh = cp.Variable(vt, name="energy_kwh")
        self.reserve_short_kwh = cp.Variable(vt, nonneg=True, name="reserve_short_kwh")
        self.target_short_kwh = cp.Variable(vt, nonneg=True, name="target_short_kwh")
        self.import_kw = cp.Variable(t, nonneg=True, name="import_kw")
        self.export_kw = cp.Variable(t, nonneg=True, name="export_kw")
        self.overload_import_kw = cp.Variable(t, nonneg=True, name="overload_import_kw")
        self.overload_export_kw = cp.Variable(t, nonneg=True, name="overload_export_kw")
        k = shape.churn_steps
        self.ramp_up_kw: cp.Variable | None = (
            cp.Variable((n, k - 1), nonneg=True, name="ramp_up_kw") if k > 1 else None
        )
        self.ramp_down_kw: cp.Variable | None = (
            cp.Variable((n, k - 1), nonneg=True, name="ramp_down_kw") if k > 1 else None
        )

        self.capacity: CapacityModel | None = (
            CapacityModel(shape.capacity, t, shape.step_h, self.import_kw + self.overload_import_kw)
            if shape.capacity is not None
            else None
        )
        """The capacity tariff's peak (module ``capacity``); None without one."""
        self.batteries: BatteryModel | None = (
            BatteryModel(
                shape.controlled_batteries,
                t,
                shape.step_h,
                self.charge_kw,
                shape.penalties.reserve_per_kwh_step,
            )
            if shape.controlled_batteries
            else None
        )
        """The controllable home batteries (module ``home_battery``); None without one."""
        self.observe_import_penalty: cp.Parameter | None = (
            cp.Parameter(t, nonneg=True, name="observe_import_penalty") if shape.observe_batteries else None
        )
        """Per kWh imported while an observe battery could discharge into it; None without one."""
        self.charge_rank_per_kwh: cp.Parameter | None = (
            cp.Parameter(n, nonneg=True, name="charge_rank_per_kwh") if n > 1 else None
        )
        """Who charges first under a binding cap (module ``sharing``); None for one car."""
        self.shares: list[_Shares] = []
        """The parameters of pulse shares (filled with the ``duty_cycle`` constraints)."""
        self.constraints: dict[str, list[cp.Constraint]] = {
            "battery": self._battery(),
            "power_limits": self._power_limits(),
            "reserve_and_targets": self._reserve_and_targets(),
            "site_balance": self._site_balance(),
            "grid_limits": self._grid_limits(),
            "own_use_only": self._own_use_only(),
            "duty_cycle": self._duty_cycle(),
            "churn": self._churn(),
            "capacity": self.capacity.constraints if self.capacity is not None else [],
            "home_batteries": self.batteries.constraints if self.batteries is not None else [],
        }
        self.terms: dict[str, cp.Expression] = self._objective_terms()
        self.problem = cp.Problem(
            cp.Minimize(cvx.sum(list(self.terms.values()))),
            [c for group in self.constraints.values() for c in group],
        )

    # ----------------------------------------------------------------- constraints

    def _column(self, values: list[float]) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)[:, None]

    def _battery(self) -> list[cp.Constraint]:
        """Energy balance per step with separate charge/discharge efficiency, trips and V2L."""
        p, s = self.params, self.shape
        n = len(s.vehicles)
        eta_c = self._column([v.charge_efficiency for v in s.vehicles])
        inv_eta_d = self._column([1.0 / v.discharge_efficiency for v in s.vehicles])
        before = cvx.hstack([cvx.reshape(p.e0_kwh, (n, 1), order="F"), self.energy_kwh[:, :-1]])
        stored = s.step_h * (
            cvx.multiply(eta_c, self.charge_kw)
            - cvx.multiply(inv_eta_d, self.discharge_kw + self.v2l_served_kw)
        )
        return [self.energy_kwh == before + stored - p.trip_kwh]

    def _power_limits(self) -> list[cp.Constraint]:
        """Availability and power ratings bound charge, discharge and served V2L."""
        p = self.params
        return [
            self.charge_kw <= p.charge_ub_kw,
            self.discharge_kw <= p.discharge_ub_kw,
            self.v2l_served_kw <= p.v2l_kw,
            self.energy_kwh <= p.e_max_kwh,
        ]

    def _reserve_and_targets(self) -> list[cp.Constraint]:
        """Energy >= floor (reserve, or a target at its departure); shortfalls are priced slacks."""
        p = self.params
        return [
            self.energy_kwh + self.reserve_short_kwh + self.target_short_kwh >= p.floor_kwh,
            self.target_short_kwh <= p.target_gap_kwh,
        ]

    def _site_balance(self) -> list[cp.Constraint]:
        """import - export = load - pv + charging - discharging, every step."""
        grid = self.import_kw + self.overload_import_kw - self.export_kw - self.overload_export_kw
        cars = cvx.sum(self.charge_kw, axis=0) - cvx.sum(self.discharge_kw, axis=0)
        if self.batteries is not None:
            cars = cars + self.batteries.net_kw
        return [grid == self.params.net_load_kw + cars]

    def _grid_limits(self) -> list[cp.Constraint]:
        p = self.params
        return [
            self.import_kw <= p.import_ub_kw,
            self.export_kw <= p.export_ub_kw,
            self.overload_import_kw <= p.overload_import_kw,
            self.overload_export_kw <= p.overload_export_kw,
        ]

    def _own_use_only(self) -> list[cp.Constraint]:
        """Cars without V2G discharge at most the home load not covered by PV: never into export."""
        mask = np.array(self.shape.own_use_mask)
        if not mask.any():
            return []
        rows = np.flatnonzero(mask)
        return [cvx.sum(self.discharge_kw[rows, :], axis=0) <= self.params.own_use_cap_kw]

    def _duty_cycle(self) -> list[cp.Constraint]:
        """A step's average below a charger's minimum is a pulse at that minimum: a discharge pulse
        above the home's net load exports ``phi d`` of itself, a charging pulse above a PV surplus
        imports ``psi c`` (module ``duty``). Only cars on chargers with a minimum get the terms."""
        c, n, t = self.shape.constants, len(self.shape.vehicles), self.shape.steps
        whole = n == 1 and t <= _SHARE_CHUNK_STEPS
        exported = self.export_kw + self.overload_export_kw
        imported = self.import_kw + self.overload_import_kw
        out: list[cp.Constraint] = []
        for field, power, grid, mins in (
            ("duty_export_share", self.discharge_kw, exported, c.min_discharge_kw),
            ("duty_import_share", self.charge_kw, imported, c.min_charge_kw),
        ):
            rows = np.flatnonzero(mins > 0).tolist()
            for start in range(0, t if rows else 0, _SHARE_CHUNK_STEPS):
                steps = slice(start, min(t, start + _SHARE_CHUNK_STEPS))
                pulsed: Any = 0
                for v in rows:  # one parameter per car: see _SHARE_CHUNK_STEPS
                    name = field if whole else f"{field}[{v}, {start}:{steps.stop}]"
                    param = cp.Parameter((1, steps.stop - start), nonneg=True, name=name)
                    self.shares.append(_Shares(field, param, None if whole else v, steps))
                    pulsed = pulsed + cvx.sum(cvx.multiply(param, power[v : v + 1, steps]), axis=0)
                out.append(grid[steps] >= pulsed)
        return out

    def _churn(self) -> list[cp.Constraint]:
        """Change of net power between steps = ramp up - ramp down; both are priced (L1, an LP).

        Only over the first ``churn_steps``: what the chargers receive before later re-plans. Over
        the whole horizon the regulariser would triple the solve time for nothing that is dispatched.
        """
        if self.ramp_up_kw is None or self.ramp_down_kw is None:
            return []
        k = self.shape.churn_steps
        net = self.charge_kw[:, :k] - self.discharge_kw[:, :k]
        return [net[:, 1:] - net[:, :-1] == self.ramp_up_kw - self.ramp_down_kw]

    # ------------------------------------------------------------------- objective

    def _objective_terms(self) -> dict[str, cp.Expression]:
        """The objective as named terms (currency); their sum is minimised."""
        p, s = self.params, self.shape
        w = s.penalties
        dt = s.step_h
        deg_in = self._column([v.degradation_cost_per_kwh * v.charge_efficiency for v in s.vehicles])
        deg_out = self._column([v.degradation_cost_per_kwh / v.discharge_efficiency for v in s.vehicles])
        # A V2L session runs now: when energy is short, cut it at the end, not now (1 % dearer early).
        steps_left = np.arange(s.steps, 0, -1, dtype=np.float64) / s.steps
        v2l_weight = (w.v2l_unserved_per_kwh * dt * (1.0 + 0.01 * steps_left))[None, :]
        terms: dict[str, cp.Expression] = {
            "import_cost": dt * (p.import_price @ (self.import_kw + self.overload_import_kw)),
            "export_revenue": -dt * (p.export_price @ (self.export_kw + self.overload_export_kw)),
            "degradation": dt
            * cvx.sum(
                cvx.multiply(deg_in, self.charge_kw)
                + cvx.multiply(deg_out, self.discharge_kw + self.v2l_served_kw)
            ),
            "reserve_penalty": w.reserve_per_kwh_step * cvx.sum(self.reserve_short_kwh),
            "target_penalty": w.target_per_kwh * cvx.sum(self.target_short_kwh),
            "v2l_unserved": cvx.sum(cvx.multiply(v2l_weight, p.v2l_kw - self.v2l_served_kw)),
            "grid_overload": w.grid_overload_per_kwh
            * dt
            * cvx.sum(self.overload_import_kw + self.overload_export_kw),
            "terminal_value": -(p.terminal_value @ self.energy_kwh[:, -1]),
        }
        if self.ramp_up_kw is not None and self.ramp_down_kw is not None:
            terms["churn"] = s.churn_cost_per_kw * (cvx.sum(self.ramp_up_kw) + cvx.sum(self.ramp_down_kw))
        if self.capacity is not None:
            terms["capacity"] = self.capacity.term
        if self.batteries is not None:
            terms.update(self.batteries.terms)
        if self.observe_import_penalty is not None:
            terms["observe_battery"] = dt * (self.observe_import_penalty @ self.import_kw)
        if self.charge_rank_per_kwh is not None:
            terms["cap_sharing"] = dt * (self.charge_rank_per_kwh @ cvx.sum(self.charge_kw, axis=1))
        return terms

    # ------------------------------------------------------------------ parameters

    def parameter_values(self, inputs: PlanInputs) -> dict[str, npt.NDArray[np.float64]]:
        """Parameter name -> value for one snapshot."""
        values = {name: getattr(inputs, self.input_field(name)) for name in self.params.__dataclass_fields__}
        values.update((shares.param.name(), shares.value(inputs)) for shares in self.shares)
        for name in self._extra_params():
            values[name] = getattr(inputs, name)
        return values

    @staticmethod
    def input_field(name: str) -> str:
        """The ``PlanInputs`` field that holds parameter ``name``'s value (pulse shares: see
        :attr:`shares`)."""
        return _INPUT_FIELD.get(name, name)

    def parameters(self) -> dict[str, cp.Parameter]:
        params = {name: getattr(self.params, name) for name in self.params.__dataclass_fields__}
        params.update((shares.param.name(), shares.param) for shares in self.shares)
        params.update(self._extra_params())
        return params

    def _extra_params(self) -> dict[str, cp.Parameter]:
        """The parameters of optional parts (capacity tariff, home batteries), named as their fields."""
        params: dict[str, cp.Parameter] = {}
        if self.capacity is not None:
            params.update(self.capacity.params)
        if self.batteries is not None:
            params.update(self.batteries.params)
        if self.observe_import_penalty is not None:
            params["observe_import_penalty"] = self.observe_import_penalty
        if self.charge_rank_per_kwh is not None:
            params["charge_rank_per_kwh"] = self.charge_rank_per_kwh
        return params

    def value_getter(self, order: Sequence[cp.Parameter]) -> ValueGetter:
        """A function from one snapshot's inputs to the values of the parameters in ``order``."""
        names = {param.id: name for name, param in self.parameters().items()}
        parts = {shares.param.id: shares for shares in self.shares if shares.row is not None}
        if not parts:  # every value is a whole field: one C call collects them (a tuple, also for one)
            getter: Any = operator.attrgetter(*(self.input_field(names[p.id]) for p in order))
            return getter if len(order) > 1 else (lambda inputs: (getter(inputs),))
        one: list[Callable[[PlanInputs], npt.NDArray[np.float64]]] = [
            parts[p.id].value if p.id in parts else operator.attrgetter(self.input_field(names[p.id]))
            for p in order
        ]
        return lambda inputs: [get(inputs) for get in one]

    def set_inputs(self, inputs: PlanInputs) -> None:
        """Load one snapshot into the CVXPY parameters (what a plain ``problem.solve()`` reads)."""
        params = self.parameters()
        for name, value in self.parameter_values(inputs).items():
            params[name].value = value


def vehicle_of_columns(
    model: ScheduleModel, n_cols: int, columns_of: Callable[[cp.Variable], slice]
) -> npt.NDArray[np.int64]:
    """Per LP column, the vehicle it belongs to, or -1 for the site's (the split of module
    ``decompose``). ``columns_of`` gives a variable's columns (``CompiledLp.columns_of``)."""
    owner = np.full(n_cols, -1, dtype=np.int64)
    n = len(model.shape.vehicles)
    for var in (
        model.charge_kw,
        model.discharge_kw,
        model.v2l_served_kw,
        model.energy_kwh,
        model.reserve_short_kwh,
        model.target_short_kwh,
        model.ramp_up_kw,
        model.ramp_down_kw,
    ):
        if var is not None:  # vehicles first, column-major: entry k is vehicle k % n
            owner[columns_of(var)] = np.arange(var.size) % n
    return owner


def step_of_columns(
    model: ScheduleModel, n_cols: int, columns_of: Callable[[cp.Variable], slice]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per LP column: its step (-1: none), its variable's number of steps, and how many columns on
    the same entry of the next step is (module ``step_shift``). Every variable of the model has the
    step as its last axis, column-major."""
    step = np.full(n_cols, -1, dtype=np.int64)
    steps = np.zeros(n_cols, dtype=np.int64)
    stride = np.zeros(n_cols, dtype=np.int64)
    for var in model.problem.variables():
        if var.ndim == 0:
            continue
        cols = columns_of(var)
        per_step = 1 if var.ndim == 1 else int(np.prod(var.shape[:-1]))
        step[cols] = np.arange(var.size) // per_step
        steps[cols] = var.shape[-1]
        stride[cols] = per_step
    return step, steps, stride
