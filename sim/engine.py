"""The closed loop: at every step the strategy observes, decides, and the plant applies.

for k in steps:
    info.advance_to(k)                 # the controller's view moves to now
    decision = strategy.decide(info)   # per vehicle: what its charger is told over the step
    outcome = plant.step(k, ...)       # physics per minute: charger limits, clamps, efficiencies,
                                       # trips, grid meter

A decision is each car's step average (``power_w``) and, where the charger is told more than one
value over the step (a pulse, a schedule's next period), the pieces it is told (``pieces``,
``sim.charger_model``). The result keeps the step averages and, per minute, what each car drew and
the grid meter, with each step's import and export inside it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from sim.charger_model import Pieces
from sim.home_battery import BatterySpec
from sim.information import InformationModel
from sim.plant import DepartureOutcome, Plant, VehicleSpec
from sim.scenario import FloatArray, Scenario

__all__ = ["Decision", "ProgressCallback", "SimResult", "Strategy", "simulate"]

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Decision:
    """Requested power per vehicle (config order, + charge / - discharge) for the current step."""

    power_w: tuple[float, ...]
    """The step average of what each charger is asked."""
    solve_ms: float | None = None
    """Wall time of the planning call made for this step (inputs, solve, plan), if one was made."""
    solver_ms: float | None = None
    """The solver's own share of it."""
    fallback: bool = False
    notes: tuple[str, ...] = ()
    pieces: tuple[Pieces | None, ...] | None = None
    """Per vehicle, what its charger is told over the step: ``((offset_s, power_w, phases), ...)``
    (``sim.charger_model``); None (for all or for one) = ``power_w`` all step on the charger's phases."""
    battery_w: tuple[float | None, ...] | None = None
    """Per home battery (config order) the setpoint it runs over the step (+ charging); None (for
    all or for one): its own self-consumption mode (``sim.home_battery``)."""


class Strategy(Protocol):
    name: str

    def decide(self, info: InformationModel) -> Decision: ...


@dataclass(eq=False)
class SimResult:
    """Everything recorded in one run; arrays are per step (and per vehicle on the first axis),
    the ``*_1min_w`` ones per minute (``minutes_per_step`` a step)."""

    scenario: Scenario
    strategy: str
    specs: tuple[VehicleSpec, ...]
    grid_w: FloatArray
    """The grid meter's average per step (+ import)."""
    power_w: FloatArray
    """Each car's average power per step."""
    requested_w: FloatArray
    """The step average of what each car's charger was asked."""
    import_kwh: FloatArray
    """Imported per step, the sum over its minutes (not the netted average)."""
    export_kwh: FloatArray
    """Exported per step, the sum over its minutes."""
    power_1min_w: FloatArray
    """Each car's power per minute, (vehicles, steps x minutes per step)."""
    grid_1min_w: FloatArray
    """The grid meter per minute."""
    minutes_per_step: int
    energy_kwh: FloatArray
    """Energy at the end of each step."""
    plugged_in: npt.NDArray[np.bool_]
    solve_ms: FloatArray
    """Planning time per step, NaN where no plan was made."""
    solver_ms: FloatArray
    """The solver's own time per step, NaN where no plan was made."""
    fallback: npt.NDArray[np.bool_]
    departures: list[DepartureOutcome]
    initial_energy_kwh: tuple[float, ...]
    losses_kwh: float
    drive_kwh: float
    unmet_drive_kwh: float
    wall_time_s: float
    """The closed loop from its first step to its last (set-up and imports before it not counted);
    the progress bar's clock covers the same span."""
    strategy_time_s: float
    plant_time_s: float
    notes: list[str] = field(default_factory=list)
    battery_specs: tuple[BatterySpec, ...] = ()
    battery_power_w: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    """Each home battery's average power per step (+ charging), (batteries, steps)."""
    battery_1min_w: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    """Each home battery's power per minute."""
    battery_energy_kwh: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    """Each home battery's energy at the end of each step."""
    battery_initial_kwh: tuple[float, ...] = ()
    battery_losses_kwh: float = 0.0
    load_w: FloatArray | None = None
    """The home's load per step as the plant ran it (for the storage-to-storage metric)."""
    pv_w: FloatArray | None = None

    @property
    def vehicle_ids(self) -> tuple[str, ...]:
        return tuple(s.vehicle_id for s in self.specs)

    @property
    def soc_percent(self) -> FloatArray:
        capacity = np.array([s.capacity_kwh for s in self.specs])[:, None]
        out: FloatArray = 100.0 * self.energy_kwh / capacity
        return out


def simulate(
    scenario: Scenario,
    strategy: Strategy,
    info: InformationModel | None = None,
    plant: Plant | None = None,
    progress: ProgressCallback | None = None,
) -> SimResult:
    """Run ``strategy`` in closed loop over the whole scenario.

    ``progress(done, total)`` is called with ``done = 0`` as the loop starts and after every
    ``total // 200`` steps and the last one.
    """
    plant = plant or Plant(scenario)
    info = info or InformationModel(scenario, plant)
    series = scenario.series
    n = series.steps
    count = len(plant.specs)
    initial = tuple(plant.energy_kwh)
    load = series.load_w.tolist()
    pv = series.pv_w.tolist()
    grid = np.empty(n)
    imported = np.empty(n)
    exported = np.empty(n)
    per_step = plant.minutes_per_step
    power_1min = np.empty((count, n * per_step))
    grid_1min = np.empty(n * per_step)
    power = np.empty((count, n))
    requested = np.empty((count, n))
    energy = np.empty((count, n))
    plugged = np.empty((count, n), dtype=np.bool_)
    solve_ms = np.full(n, math.nan)
    solver_ms = np.full(n, math.nan)
    fallback = np.zeros(n, dtype=np.bool_)
    departures: list[DepartureOutcome] = []
    notes: list[str] = []
    losses = drive = unmet = 0.0
    strategy_s = plant_s = 0.0
    bats = len(plant.batteries.specs) if plant.batteries is not None else 0
    battery_initial = tuple(plant.batteries.energy_kwh) if plant.batteries is not None else ()
    battery_power = np.zeros((bats, n))
    battery_energy = np.zeros((bats, n))
    battery_1min = np.zeros((bats, n * per_step))
    battery_losses = 0.0
    every = max(1, n // 200)
    if progress is not None:
        progress(0, n)
    started = time.perf_counter()
    for k in range(n):
        t0 = time.perf_counter()
        info.advance_to(k)
        decision = strategy.decide(info)
        t1 = time.perf_counter()
        outcome = plant.step(
            k, decision.power_w, load[k], pv[k], decision.pieces, battery_w=decision.battery_w
        )
        t2 = time.perf_counter()
        strategy_s += t1 - t0
        plant_s += t2 - t1
        grid[k] = outcome.grid_w
        imported[k] = outcome.import_kwh
        exported[k] = outcome.export_kwh
        power_1min[:, k * per_step : (k + 1) * per_step] = outcome.minute_power_w
        grid_1min[k * per_step : (k + 1) * per_step] = outcome.grid_minute_w
        power[:, k] = outcome.power_w
        requested[:, k] = decision.power_w
        energy[:, k] = outcome.energy_kwh
        plugged[:, k] = outcome.plugged_in
        if decision.solve_ms is not None:
            solve_ms[k] = decision.solve_ms
        if decision.solver_ms is not None:
            solver_ms[k] = decision.solver_ms
        fallback[k] = decision.fallback
        if decision.notes:
            notes.extend(decision.notes)
        departures.extend(outcome.departures)
        if bats and outcome.battery_minute_w is not None:
            battery_power[:, k] = outcome.battery_power_w
            battery_energy[:, k] = outcome.battery_energy_kwh
            battery_1min[:, k * per_step : (k + 1) * per_step] = outcome.battery_minute_w
            battery_losses += outcome.battery_losses_kwh
        losses += outcome.losses_kwh
        drive += outcome.drive_kwh
        unmet += outcome.unmet_drive_kwh
        if progress is not None and (k % every == 0 or k == n - 1):
            progress(k + 1, n)
    wall = time.perf_counter() - started
    return SimResult(
        scenario=scenario,
        strategy=strategy.name,
        specs=plant.specs,
        grid_w=grid,
        power_w=power,
        requested_w=requested,
        import_kwh=imported,
        export_kwh=exported,
        power_1min_w=power_1min,
        grid_1min_w=grid_1min,
        minutes_per_step=per_step,
        energy_kwh=energy,
        plugged_in=plugged,
        solve_ms=solve_ms,
        solver_ms=solver_ms,
        fallback=fallback,
        departures=departures,
        initial_energy_kwh=initial,
        losses_kwh=losses,
        drive_kwh=drive,
        unmet_drive_kwh=unmet,
        wall_time_s=wall,
        strategy_time_s=strategy_s,
        plant_time_s=plant_s,
        notes=notes,
        battery_specs=plant.batteries.specs if plant.batteries is not None else (),
        battery_power_w=battery_power,
        battery_1min_w=battery_1min,
        battery_energy_kwh=battery_energy,
        battery_initial_kwh=battery_initial,
        battery_losses_kwh=battery_losses,
        load_w=series.load_w,
        pv_w=series.pv_w,
    )
