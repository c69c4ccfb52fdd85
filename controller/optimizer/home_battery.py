"""Home batteries in the LP: a controllable battery is a car that never leaves; an observe one is forecast.

A battery with ``control`` mqtt or modbus gets, per step ``t`` (kW averaged over the step, kWh at
step ends)::

    battery_charge_kw, battery_discharge_kw >= 0     AC power at the battery's inverter
    battery_energy_kwh                               stored energy at the end of each step
    battery_short_kwh >= 0                           below its floor (only when it starts below it)

with the rows

    energy:      e[t] = e[t-1] + step_h * (eta_c * charge[t] - discharge[t] / eta_d)
    bounds:      charge <= charge_ub, discharge <= discharge_ub, e <= e_max
    floor:       e + short >= floor (max of min SoC and backup reserve), short <= short_ub
                 (short_ub = floor - e0 when the battery starts below its floor, else 0: hard)
    no grid:     sum(charge of batteries with grid_charging false) <= max(0, pv - load)
    no export:   sum(discharge of batteries with grid_export false) <= max(0, load - pv) + sum(cars' charge)

and the terms ``degradation_cost_per_kwh * discharge / eta_d`` (per kWh out of the cells), the
reserve penalty on ``short`` and the terminal value of the energy left: the cars' value per kWh
(``inputs.terminal_value_per_kwh``) times ``eta_d`` less the wear, what a stored kWh saves later. Its net power enters the
site balance beside the cars'. "Charging only from PV" is exact only as a non-convex rule (charge
<= max(0, PV left after the home and the cars)); the LP keeps the convex part: the battery never
charges more than the PV surplus after the home load, and a car may still import in a step where
the battery takes PV, when that pays at the step's price (what it would cost anyway). Likewise a
battery that must not export covers at most the home's net load and the cars' charging.

DC coupling: the hybrid inverter's AC limit is shared, PV first: the battery may discharge at most
``inverter_ac_kw - pv`` (a parameter bound; PV is never curtailed for the battery).

An unknown SoC: no deliberate charge or discharge (both bounds 0, the floor not enforced).

A battery with ``control: observe`` is not in the LP. Its self-consumption rule is forecast from the
home's load and PV alone (:func:`observe_forecast`): it charges from any export and discharges into
any import, within its power and SoC limits. The forecast discharge is part of the site's net load
(what the grid meter will read). In a step where the forecast battery still has energy above its
floor and discharge power to spare, any import can only be the cars' (the battery covers the home),
and the battery would discharge into it: each such kWh is priced at what that transfer costs
(:func:`transfer_cost_per_kwh`). A car so charges from PV surplus or once the battery is at its
floor, unless charging it now pays even with the battery's share.

With no home battery configured none of this is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
import numpy.typing as npt

from controller.config import HomeBatteryConfig
from controller.snapshot import Snapshot

__all__ = [
    "BATTERY_FIELDS",
    "BatteryInputs",
    "BatteryModel",
    "BatterySpec",
    "battery_inputs",
    "observe_forecast",
    "transfer_cost_per_kwh",
]

cvx: Any = cp
FloatArray = npt.NDArray[np.float64]


def transfer_cost_per_kwh(spec: BatterySpec, terminal_value: float, import_price: FloatArray) -> FloatArray:
    """What a kWh an observed battery discharges into a charging car costs, per step, on top of the
    import price the plan sees for it.

    The kWh does not cover the home later: the home imports it then, at about the value the plan
    gives stored energy (``terminal_value``: the horizon's mean import price), instead of the car
    importing it now; and the battery wears one kWh more out of its cells. Both efficiencies are the
    same either way (the battery's discharge whether it feeds the home or the car, the car's charge
    whether its kWh comes from the grid or the battery), so the difference is the time value and
    the wear. Where the battery's energy would be spare anyway (refilled by PV before it is used)
    this overstates the cost: the plan errs on the side of no transfer.
    """
    wear = spec.degradation_cost_per_kwh / spec.discharge_efficiency
    cost: FloatArray = np.maximum(terminal_value - import_price, 0.0) + wear
    return cost


BATTERY_FIELDS = (
    "battery_e0_kwh",
    "battery_charge_ub_kw",
    "battery_discharge_ub_kw",
    "battery_floor_kwh",
    "battery_short_ub_kwh",
    "battery_e_max_kwh",
    "battery_terminal_value",
    "battery_surplus_kw",
    "battery_home_kw",
)
"""The PlanInputs fields (and parameter names) of the controllable batteries."""


@dataclass(frozen=True, slots=True)
class BatterySpec:
    """One home battery as the optimiser models it (kW, kWh)."""

    battery_id: str
    controlled: bool
    capacity_kwh: float
    charge_efficiency: float
    discharge_efficiency: float
    max_charge_kw: float
    max_discharge_kw: float
    floor_kwh: float
    max_soc_kwh: float
    degradation_cost_per_kwh: float
    grid_charging: bool
    grid_export: bool
    inverter_ac_kw: float | None

    @classmethod
    def from_config(cls, battery: HomeBatteryConfig) -> BatterySpec:
        capacity = battery.usable_capacity_kwh
        return cls(
            battery_id=battery.id,
            controlled=battery.control.mode != "observe",
            capacity_kwh=capacity,
            charge_efficiency=battery.charge_efficiency,
            discharge_efficiency=battery.discharge_efficiency,
            max_charge_kw=battery.max_charge_kw,
            max_discharge_kw=battery.max_discharge_kw,
            floor_kwh=capacity * battery.floor_percent / 100.0,
            max_soc_kwh=capacity * battery.max_soc_percent / 100.0,
            degradation_cost_per_kwh=battery.degradation_cost_per_kwh,
            grid_charging=battery.grid_charging,
            grid_export=battery.grid_export,
            inverter_ac_kw=battery.inverter_ac_kw if battery.coupling == "dc" else None,
        )


def _start_kwh(spec: BatterySpec, snapshot: Snapshot) -> float | None:
    state = next((b for b in snapshot.home_batteries if b.id == spec.battery_id), None)
    if state is None or state.soc_percent is None:
        return None
    return spec.capacity_kwh * state.soc_percent / 100.0


def observe_forecast(
    spec: BatterySpec, e0_kwh: float | None, net_kw: FloatArray, step_h: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """The self-consumption rule over the horizon from the home's net load alone (no cars).

    Returns (power kW per step, + charging; energy kWh at each step's end). ``step_h`` is each
    step's length in hours (step 0: what is left of it). Unknown SoC: no forecast (0 kW).
    """
    t = len(net_kw)
    power = np.zeros(t)
    energy = np.zeros(t)
    if e0_kwh is None:
        energy[:] = np.nan
        return power, energy
    e = e0_kwh
    eta_c, eta_d = spec.charge_efficiency, spec.discharge_efficiency
    for k, (net, hours) in enumerate(zip(net_kw.tolist(), step_h.tolist(), strict=True)):
        if hours <= 0:
            energy[k] = e
            continue
        if net < 0:  # export: charge
            room_kw = max(0.0, spec.max_soc_kwh - e) / (eta_c * hours)
            p = min(-net, spec.max_charge_kw, room_kw)
        else:  # import: discharge
            left_kw = max(0.0, e - spec.floor_kwh) * eta_d / hours
            p = -min(net, spec.max_discharge_kw, left_kw)
        e += hours * (eta_c * p if p > 0 else p / eta_d)
        power[k], energy[k] = p, e
    return power, energy


@dataclass(frozen=True, slots=True)
class BatteryInputs:
    """The batteries' share of one snapshot's inputs."""

    params: dict[str, FloatArray]
    """Values of the controllable batteries' parameters (``BATTERY_FIELDS``)."""
    soc_known: tuple[bool, ...]
    observe_kw: FloatArray
    """(observe batteries, steps): their forecast power, + charging, step 0 not scaled."""
    observe_energy_kwh: FloatArray
    import_penalty: FloatArray
    """Per step: per kWh imported, the transfer cost where an observed battery could feed it, else 0."""


def battery_inputs(
    batteries: tuple[BatterySpec, ...],
    snapshot: Snapshot,
    *,
    net_kw: FloatArray,
    pv_kw: FloatArray,
    frac0: float,
    step_h: float,
    terminal_value: float,
    import_price: FloatArray,
) -> BatteryInputs:
    """Parameter values for the controllable batteries and the observe batteries' forecast.

    ``net_kw``: load - PV per step (not yet scaled in step 0).
    """
    t = len(net_kw)
    hours = np.full(t, step_h)
    hours[0] *= frac0
    observed = [b for b in batteries if not b.controlled]
    observe_kw = np.zeros((len(observed), t))
    observe_energy = np.zeros((len(observed), t))
    for i, spec in enumerate(observed):
        observe_kw[i], observe_energy[i] = observe_forecast(spec, _start_kwh(spec, snapshot), net_kw, hours)
    penalty = np.zeros(t)
    for i, spec in enumerate(observed):
        before = np.concatenate([[_start_kwh(spec, snapshot) or 0.0], observe_energy[i, :-1]])
        spare = (before > spec.floor_kwh + 0.05) & (observe_kw[i] > -spec.max_discharge_kw + 1e-3)
        cost = transfer_cost_per_kwh(spec, terminal_value, import_price)
        penalty[spare] = np.maximum(penalty[spare], cost[spare])
    controlled = [b for b in batteries if b.controlled]
    params = _controlled_params(controlled, snapshot, net_kw, pv_kw, frac0, terminal_value)
    known = tuple(_start_kwh(b, snapshot) is not None for b in batteries)
    return BatteryInputs(params, known, observe_kw, observe_energy, penalty)


def _controlled_params(
    controlled: list[BatterySpec],
    snapshot: Snapshot,
    net_kw: FloatArray,
    pv_kw: FloatArray,
    frac0: float,
    terminal: float,
) -> dict[str, FloatArray]:
    if not controlled:
        return {}
    b, t = len(controlled), len(net_kw)
    e0 = np.zeros(b)
    charge_ub = np.zeros((b, t))
    discharge_ub = np.zeros((b, t))
    floor = np.zeros((b, t))
    short_ub = np.zeros((b, t))
    e_max = np.zeros((b, t))
    # The site's net load without the cars (step 0 scaled below, like every power).
    surplus = np.maximum(-net_kw, 0.0)
    home = np.maximum(net_kw, 0.0)
    for i, spec in enumerate(controlled):
        start = _start_kwh(spec, snapshot)
        e_max[i] = spec.max_soc_kwh if start is None else max(spec.max_soc_kwh, start)
        if start is None:  # hold: nothing on purpose, no floor to meet
            e0[i] = min(spec.floor_kwh, spec.max_soc_kwh)
            continue
        e0[i] = start
        charge_ub[i] = spec.max_charge_kw
        discharge_ub[i] = spec.max_discharge_kw
        if spec.inverter_ac_kw is not None:
            discharge_ub[i] = np.minimum(discharge_ub[i], np.maximum(spec.inverter_ac_kw - pv_kw, 0.0))
        floor[i] = spec.floor_kwh
        short_ub[i] = max(0.0, spec.floor_kwh - start)
    for series in (charge_ub, discharge_ub):
        series[:, 0] *= frac0
    surplus[0] *= frac0
    home[0] *= frac0
    return {
        "battery_e0_kwh": e0,
        "battery_charge_ub_kw": charge_ub,
        "battery_discharge_ub_kw": discharge_ub,
        "battery_floor_kwh": floor,
        "battery_short_ub_kwh": short_ub,
        "battery_e_max_kwh": e_max,
        # A stored kWh is worth what it saves later: out through the inverter, less the wear.
        "battery_terminal_value": np.array(
            [max(0.0, terminal * s.discharge_efficiency - s.degradation_cost_per_kwh) for s in controlled]
        ),
        "battery_surplus_kw": surplus,
        "battery_home_kw": home,
    }


class BatteryModel:
    """The controllable batteries' variables, parameters, rows and terms (module docstring)."""

    def __init__(
        self,
        specs: tuple[BatterySpec, ...],
        steps: int,
        step_h: float,
        cars_charge_kw: cp.Variable,
        reserve_per_kwh_step: float,
    ) -> None:
        b, t = len(specs), steps
        bt = (b, t)
        self.specs = specs
        self.params: dict[str, cp.Parameter] = {
            "battery_e0_kwh": cp.Parameter(b, name="battery_e0_kwh"),
            "battery_charge_ub_kw": cp.Parameter(bt, nonneg=True, name="battery_charge_ub_kw"),
            "battery_discharge_ub_kw": cp.Parameter(bt, nonneg=True, name="battery_discharge_ub_kw"),
            "battery_floor_kwh": cp.Parameter(bt, name="battery_floor_kwh"),
            "battery_short_ub_kwh": cp.Parameter(bt, nonneg=True, name="battery_short_ub_kwh"),
            "battery_e_max_kwh": cp.Parameter(bt, name="battery_e_max_kwh"),
            "battery_terminal_value": cp.Parameter(b, name="battery_terminal_value"),
            "battery_surplus_kw": cp.Parameter(t, nonneg=True, name="battery_surplus_kw"),
            "battery_home_kw": cp.Parameter(t, nonneg=True, name="battery_home_kw"),
        }
        p = self.params
        self.charge_kw = cp.Variable(bt, nonneg=True, name="battery_charge_kw")
        self.discharge_kw = cp.Variable(bt, nonneg=True, name="battery_discharge_kw")
        self.energy_kwh = cp.Variable(bt, name="battery_energy_kwh")
        self.short_kwh = cp.Variable(bt, nonneg=True, name="battery_short_kwh")
        eta_c = np.array([s.charge_efficiency for s in specs])[:, None]
        inv_eta_d = np.array([1.0 / s.discharge_efficiency for s in specs])[:, None]
        before = cvx.hstack([cvx.reshape(p["battery_e0_kwh"], (b, 1), order="F"), self.energy_kwh[:, :-1]])
        stored = step_h * (cvx.multiply(eta_c, self.charge_kw) - cvx.multiply(inv_eta_d, self.discharge_kw))
        self.constraints: list[cp.Constraint] = [
            self.energy_kwh == before + stored,
            self.charge_kw <= p["battery_charge_ub_kw"],
            self.discharge_kw <= p["battery_discharge_ub_kw"],
            self.energy_kwh <= p["battery_e_max_kwh"],
            self.energy_kwh + self.short_kwh >= p["battery_floor_kwh"],
            self.short_kwh <= p["battery_short_ub_kwh"],
        ]
        no_grid = [i for i, s in enumerate(specs) if not s.grid_charging]
        if no_grid:
            self.constraints.append(cvx.sum(self.charge_kw[no_grid, :], axis=0) <= p["battery_surplus_kw"])
        no_export = [i for i, s in enumerate(specs) if not s.grid_export]
        if no_export:
            cars = cvx.sum(cars_charge_kw, axis=0)
            self.constraints.append(
                cvx.sum(self.discharge_kw[no_export, :], axis=0) <= p["battery_home_kw"] + cars
            )
        self.net_kw: cp.Expression = cvx.sum(self.charge_kw, axis=0) - cvx.sum(self.discharge_kw, axis=0)
        """The batteries' net power per step, + charging (enters the site balance)."""
        deg_out = np.array([s.degradation_cost_per_kwh / s.discharge_efficiency for s in specs])[:, None]
        self.terms: dict[str, cp.Expression] = {
            "battery_degradation": step_h * cvx.sum(cvx.multiply(deg_out, self.discharge_kw)),
            "battery_reserve_penalty": reserve_per_kwh_step * cvx.sum(self.short_kwh),
            "battery_terminal_value": -(p["battery_terminal_value"] @ self.energy_kwh[:, -1]),
        }
