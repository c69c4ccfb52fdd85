"""The home batteries' part of a plan: read back from the LP, direction fix, BatteryPlan per battery."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controller.domain import BatteryPlan
from controller.optimizer.home_battery import BatteryModel
from controller.optimizer.inputs import FloatArray, PlanInputs
from controller.optimizer.shape import SiteShape

__all__ = ["BatterySchedule", "battery_plans", "fix_battery_direction", "read_batteries"]

_ZERO_KW = 1e-6


@dataclass(frozen=True, slots=True)
class BatterySchedule:
    """The controllable batteries in model units (kW per step, step 0 scaled; kWh at step ends)."""

    charge_kw: FloatArray
    discharge_kw: FloatArray
    energy_kwh: FloatArray

    @property
    def net_kw(self) -> FloatArray:
        net: FloatArray = (self.charge_kw - self.discharge_kw).sum(axis=0)
        return net


def read_batteries(
    model: BatteryModel, x: FloatArray, columns: tuple[slice, slice, slice]
) -> BatterySchedule:
    shape = model.charge_kw.shape
    charge, discharge, energy = (x[c].reshape(shape, order="F") for c in columns)
    return BatterySchedule(_clean(charge), _clean(discharge), energy)


def fix_battery_direction(inputs: PlanInputs, schedule: BatterySchedule) -> bool:
    """Forbid the weaker direction where a battery both charges and discharges in a step (burning
    energy that is worth less than nothing, as ``planner._fix_direction`` does for the cars)."""
    both = (schedule.charge_kw > _ZERO_KW) & (schedule.discharge_kw > _ZERO_KW)
    if not both.any():
        return False
    charging = both & (schedule.charge_kw >= schedule.discharge_kw)
    inputs.battery_discharge_ub_kw[charging] = 0.0
    inputs.battery_charge_ub_kw[both & ~charging] = 0.0
    return True


def battery_plans(
    shape: SiteShape, inputs: PlanInputs, schedule: BatterySchedule | None
) -> tuple[dict[str, BatteryPlan], float]:
    """Per battery its plan (controllable: the LP's setpoints, or hold without a solution; observe:
    the forecast), and the controllable batteries' planned wear (currency)."""
    frac0 = inputs.first_step_fraction
    dt = shape.step_h
    plans: dict[str, BatteryPlan] = {}
    wear = 0.0
    controlled = observed = 0
    for spec, known in zip(shape.batteries, inputs.battery_soc_known, strict=True):
        if spec.controlled:
            i, controlled = controlled, controlled + 1
            e0 = float(inputs.battery_e0_kwh[i])
            if schedule is None or not known:
                power = np.zeros(shape.steps)
                energy = np.full(shape.steps, e0)
                reason = "SoC unknown: left in its own mode" if not known else "no plan: holding"
            else:
                power = schedule.charge_kw[i] - schedule.discharge_kw[i]
                energy = schedule.energy_kwh[i]
                discharged_kwh = float(schedule.discharge_kw[i].sum()) * dt
                wear += spec.degradation_cost_per_kwh * discharged_kwh / spec.discharge_efficiency
                reason = _reason(float(power[0]))
        else:
            i, observed = observed, observed + 1
            power = inputs.observe_power_kw[i] * np.where(np.arange(shape.steps) == 0, frac0, 1.0)
            energy = inputs.observe_energy_kwh[i]
            e0 = float(energy[0] - _stored(spec.charge_efficiency, spec.discharge_efficiency, power[0], dt))
            reason = "own self-consumption mode (forecast)" if known else "own mode, SoC unknown"
            if not known:
                plans[spec.battery_id] = BatteryPlan(spec.battery_id, False, (), (), reason)
                continue
        watts = np.asarray(power, dtype=np.float64) * 1000.0
        watts[0] /= frac0
        soc = np.concatenate([[e0], energy]) * (100.0 / spec.capacity_kwh)
        plans[spec.battery_id] = BatteryPlan(
            spec.battery_id, spec.controlled, tuple(watts.tolist()), tuple(soc.tolist()), reason
        )
    return plans, wear


def _stored(eta_c: float, eta_d: float, power_kw: float, hours: float) -> float:
    return hours * (eta_c * power_kw if power_kw > 0 else power_kw / eta_d)


def _reason(power_kw: float) -> str:
    if power_kw > _ZERO_KW:
        return f"charging {power_kw:.1f} kW"
    if power_kw < -_ZERO_KW:
        return f"discharging {-power_kw:.1f} kW"
    return "holding"


def _clean(values: FloatArray) -> FloatArray:
    out: FloatArray = values.copy()
    out[np.abs(out) < _ZERO_KW] = 0.0
    return out
