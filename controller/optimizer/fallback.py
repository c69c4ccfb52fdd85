"""The safe plan used when the solver fails or runs out of time.

No discharge at all; each car charges as early as availability and the import limit allow, up to
the highest target still ahead of it (its reserve at least). V2L sessions are served down to the
reserve and cut there. Simple, greedy and always defined.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controller.optimizer.inputs import FloatArray, PlanInputs
from controller.optimizer.shape import SiteShape

__all__ = ["Schedule", "fallback_schedule"]


@dataclass(frozen=True, slots=True)
class Schedule:
    """Decisions in model units: kW averaged over each step (step 0 scaled), kWh at step ends."""

    charge_kw: FloatArray
    discharge_kw: FloatArray
    v2l_kw: FloatArray
    energy_kwh: FloatArray


def fallback_schedule(inputs: PlanInputs, shape: SiteShape) -> Schedule:
    n, t = inputs.charge_ub_kw.shape
    dt = shape.step_h
    eta_c = np.array([v.charge_efficiency for v in shape.vehicles])
    eta_d = np.array([v.discharge_efficiency for v in shape.vehicles])
    reserve = np.array([v.reserve_kwh for v in shape.vehicles])
    # Highest floor still ahead at each step: the next targets (and the reserve).
    goal = np.maximum.accumulate(inputs.floor_kwh[:, ::-1], axis=1)[:, ::-1]
    charge = np.zeros((n, t))
    v2l = np.zeros((n, t))
    energy = np.zeros((n, t))
    e = inputs.e0_kwh.copy()
    for k in range(t):
        headroom = max(0.0, inputs.import_ub_kw[k] + inputs.overload_import_kw[k] - inputs.net_load_kw[k])
        for v in range(n):
            above_reserve = e[v] - inputs.trip_kwh[v, k] - reserve[v]
            served = min(inputs.v2l_kw[v, k], max(0.0, above_reserve) * eta_d[v] / dt)
            need = goal[v, k] - (e[v] - inputs.trip_kwh[v, k] - served * dt / eta_d[v])
            power = min(inputs.charge_ub_kw[v, k], headroom, max(0.0, need) / (eta_c[v] * dt))
            power = min(power, max(0.0, inputs.e_max_kwh[v, k] - e[v]) / (eta_c[v] * dt))
            headroom -= power
            charge[v, k] = power
            v2l[v, k] = served
            e[v] += dt * (eta_c[v] * power - served / eta_d[v]) - inputs.trip_kwh[v, k]
            energy[v, k] = e[v]
    return Schedule(charge_kw=charge, discharge_kw=np.zeros((n, t)), v2l_kw=v2l, energy_kwh=energy)
