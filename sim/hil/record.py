"""What a HIL run records, minute by minute, as the simulator's :class:`~sim.engine.SimResult`, so
``v2x sim hil`` reports the same metrics, plots and table as ``v2x sim run``.

Per minute: the grid meter and each car's power (time means of what the virtual home measured);
per step: whether each car was plugged in and the energy in its battery at the step's end; per
departure: the energy it left with, its target and what full power since plug-in would have
given. Planner timings are not seen from outside the daemon: NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from sim.engine import SimResult
from sim.plant import DepartureOutcome, VehicleSpec
from sim.scenario import Scenario

__all__ = ["HilRecorder"]


@dataclass(slots=True)
class _Plugged:
    at: datetime
    energy_kwh: float


@dataclass
class HilRecorder:
    scenario: Scenario
    """The scenario cut to the run (its first step is the run's start)."""
    minute_grid_ws: list[float] = field(default_factory=list)
    minute_car_ws: dict[str, list[float]] = field(default_factory=dict)
    step_energy_kwh: dict[str, list[float]] = field(default_factory=dict)
    step_plugged: dict[str, list[bool]] = field(default_factory=dict)
    departures: list[DepartureOutcome] = field(default_factory=list)
    initial_energy_kwh: dict[str, float] = field(default_factory=dict)
    plugged_since: dict[str, _Plugged] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.specs = tuple(
            VehicleSpec.from_config(v, self.scenario.config) for v in self.scenario.config.vehicles
        )
        self.start = self.scenario.series.start
        self.step = self.scenario.series.step

    def sample(self, at: datetime, seconds: float, grid_w: float, cars_w: dict[str, float]) -> None:
        """``seconds`` from ``at`` at the mean powers measured (W): energy into each minute it spans."""
        offset_s = (at - self.start).total_seconds()
        end_s = offset_s + seconds
        while offset_s < end_s:
            minute = int(offset_s // 60)
            part_s = min(end_s, (minute + 1) * 60.0) - offset_s
            if minute >= 0:
                self._add(minute, part_s, grid_w, cars_w)
            offset_s += part_s

    def _add(self, minute: int, seconds: float, grid_w: float, cars_w: dict[str, float]) -> None:
        while len(self.minute_grid_ws) <= minute:
            self.minute_grid_ws.append(0.0)
        self.minute_grid_ws[minute] += grid_w * seconds
        for vid, power_w in cars_w.items():
            row = self.minute_car_ws.setdefault(vid, [])
            while len(row) <= minute:
                row.append(0.0)
            row[minute] += power_w * seconds

    def step_end(self, index: int, energy_kwh: dict[str, float], plugged: dict[str, bool]) -> None:
        for vid, energy in energy_kwh.items():
            self.initial_energy_kwh.setdefault(vid, energy)
            rows, flags = self.step_energy_kwh.setdefault(vid, []), self.step_plugged.setdefault(vid, [])
            while len(rows) <= index:
                rows.append(energy)
                flags.append(plugged[vid])

    def plug_in(self, vehicle_id: str, at: datetime, energy_kwh: float) -> None:
        self.plugged_since[vehicle_id] = _Plugged(at, energy_kwh)

    def depart(self, vehicle_id: str, at: datetime, energy_kwh: float, target_kwh: float) -> None:
        spec = next((s for s in self.specs if s.vehicle_id == vehicle_id), None)
        plugged = self.plugged_since.pop(vehicle_id, None)
        if spec is None:
            return
        reachable = energy_kwh
        if plugged is not None:  # full power since plug-in, capped at the target
            hours = (at - plugged.at).total_seconds() / 3600.0
            full = plugged.energy_kwh + spec.max_charge_w / 1000.0 * spec.charge_efficiency * hours
            reachable = min(target_kwh, full)
        step = int((at - self.start) / self.step)
        self.departures.append(
            DepartureOutcome(vehicle_id, step, energy_kwh, target_kwh, max(reachable, energy_kwh))
        )

    def result(self, until: datetime, wall_time_s: float, drive_kwh: float) -> SimResult:
        steps = int((until - self.start) / self.step)
        per_step = int(self.step / timedelta(minutes=1))
        minutes = steps * per_step
        grid_1min = _padded(self.minute_grid_ws, minutes) / 60.0
        ids = [s.vehicle_id for s in self.specs]
        power_1min = np.array([_padded(self.minute_car_ws.get(v, []), minutes) / 60.0 for v in ids]).reshape(
            len(ids), minutes
        )
        hours = 1.0 / 60.0
        by_step = grid_1min.reshape(steps, per_step)
        energy = np.array([_steps(self.step_energy_kwh.get(v, []), steps) for v in ids]).reshape(
            len(ids), steps
        )
        plugged = np.array([_flags(self.step_plugged.get(v, []), steps) for v in ids]).reshape(
            len(ids), steps
        )
        return SimResult(
            scenario=self.scenario.window(0, steps),
            strategy="hil",
            specs=self.specs,
            grid_w=by_step.mean(axis=1),
            power_w=power_1min.reshape(len(ids), steps, per_step).mean(axis=2),
            requested_w=np.full((len(ids), steps), math.nan),
            import_kwh=np.clip(by_step, 0.0, None).sum(axis=1) / 1000.0 * hours,
            export_kwh=np.clip(-by_step, 0.0, None).sum(axis=1) / 1000.0 * hours,
            power_1min_w=power_1min,
            grid_1min_w=grid_1min,
            minutes_per_step=per_step,
            energy_kwh=energy,
            plugged_in=plugged,
            solve_ms=np.full(steps, math.nan),
            solver_ms=np.full(steps, math.nan),
            fallback=np.zeros(steps, dtype=bool),
            departures=[d for d in self.departures if d.step < steps],
            initial_energy_kwh=tuple(self.initial_energy_kwh.get(v, 0.0) for v in ids),
            losses_kwh=0.0,
            drive_kwh=drive_kwh,
            unmet_drive_kwh=0.0,
            wall_time_s=wall_time_s,
            strategy_time_s=0.0,
            plant_time_s=0.0,
            notes=["hil: the real daemon over real sockets; planner timings are not seen from outside"],
        )


def _padded(values: list[float], n: int) -> np.ndarray:
    out = np.zeros(n)
    out[: min(n, len(values))] = values[:n]
    return out


def _steps(values: list[float], n: int) -> np.ndarray:
    out = np.full(n, values[-1] if values else 0.0)
    out[: min(n, len(values))] = values[:n]
    return out


def _flags(values: list[bool], n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[: min(n, len(values))] = values[:n]
    return out
