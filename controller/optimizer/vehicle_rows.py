"""One vehicle's rows of the optimiser inputs: when it is home, what its trips take, what it must
reach by when, what an overdue departure holds, and what V2L draws from it (see ``inputs`` for the
whole picture)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import numpy.typing as npt

from controller.domain import VehicleMode, utc_text
from controller.optimizer.shape import VehicleSpec
from controller.optimizer.step_grid import StepGrid
from controller.snapshot import Trip, VehicleSnapshot

__all__ = ["DepartureInfo", "VehicleRow", "fill_vehicle"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
_Trip = tuple[float, float, Trip]
"""A trip with its departure and arrival in seconds of the step grid."""


@dataclass(frozen=True, slots=True)
class DepartureInfo:
    """A target the plan works towards: ``target_kwh`` at the end of step ``index - 1``."""

    at: datetime
    index: int
    """Step boundary of the target (1..steps); the car leaves during step ``index``."""
    target_kwh: float
    beyond_horizon: bool = False
    """The departure is after the horizon: the target is what must be in the car at its end."""
    trip: bool = False
    """A trip's target (``away[].target_soc_percent``) rather than the next departure's."""


@dataclass(slots=True)
class VehicleRow:
    """Views into one vehicle's rows, filled in place, and its scalar facts."""

    available: FloatArray
    v2l_kw: FloatArray
    trip_kwh: FloatArray
    target_kwh: FloatArray
    e0: float = 0.0
    may_discharge: bool = False
    soc_known: bool = False
    mode: VehicleMode = VehicleMode.AUTO
    targets: tuple[DepartureInfo, ...] = ()
    charge_cap_kw: float = math.inf
    discharge_cap_kw: float = math.inf
    ev_floor_kwh: float = 0.0
    ev_ceiling_kwh: float = math.inf
    trip_spans: list[tuple[datetime, int, int]] = field(default_factory=list)
    """Per trip that takes energy in the horizon: its departure and its steps ``[first, stop)``."""


def fill_vehicle(
    spec: VehicleSpec, state: VehicleSnapshot | None, grid: StepGrid, row: VehicleRow, notes: list[str]
) -> None:
    """Fill ``row`` from the vehicle's snapshot (None: not in it); notes say what was assumed."""
    if state is None:
        # Not in the snapshot: not at home as far as we know; it only keeps its reserve.
        row.e0 = spec.reserve_kwh
        return
    _session_limits(spec, state, row)
    _initial_energy(spec, state, row, notes)
    trips = [(grid.seconds(tr.depart), grid.seconds(tr.arrive), tr) for tr in state.away]
    row.available[:] = 1.0
    if not state.plugged_in:
        _unavailable_until_back(grid, row, trips)
    # Steps the car is driving or gone: a V2L load stays behind, so no session is budgeted there.
    gone = np.zeros(grid.steps, dtype=bool)
    targets = _fill_trips(spec, grid, row, trips, gone)
    departure = _departure_target(spec, state, grid, row, trips, gone, notes)
    if departure is not None:
        targets.append(departure)
    row.mode = state.mode
    _set_targets(spec, state, row, _one_target_per_step(targets))
    hold_kwh = _hold(spec, state, grid, row, notes)
    # A car below its reserve (or an overdue departure's hold) is not discharged in this plan, not
    # even to move energy into another car that is shorter still; once charged above it, the next
    # plan may discharge it.
    floor_kwh = max(spec.reserve_kwh, hold_kwh)
    row.may_discharge = row.soc_known and state.mode is VehicleMode.AUTO and row.e0 >= floor_kwh
    _budget_v2l(spec, state, grid, row, gone, notes)


def _session_limits(spec: VehicleSpec, state: VehicleSnapshot, row: VehicleRow) -> None:
    """The EV's own power caps and V2X window, in kW and kWh of this vehicle."""
    limits = state.session_limits
    if limits is None:
        return
    if limits.max_charge_power_w is not None:
        row.charge_cap_kw = limits.max_charge_power_w / 1000.0
    if limits.max_discharge_power_w is not None:
        row.discharge_cap_kw = limits.max_discharge_power_w / 1000.0
    if limits.min_soc_percent is not None:
        row.ev_floor_kwh = spec.capacity_kwh * limits.min_soc_percent / 100.0
    if limits.max_soc_percent is not None:
        row.ev_ceiling_kwh = spec.capacity_kwh * limits.max_soc_percent / 100.0


def _initial_energy(spec: VehicleSpec, state: VehicleSnapshot, row: VehicleRow, notes: list[str]) -> None:
    row.soc_known = state.soc_percent is not None
    if state.soc_percent is None:
        notes.append(f"{spec.vehicle_id}: SoC unknown, planned at its reserve and never discharged")
        row.e0 = spec.reserve_kwh
    else:
        row.e0 = spec.capacity_kwh * state.soc_percent / 100.0


def _unavailable_until_back(grid: StepGrid, row: VehicleRow, trips: list[_Trip]) -> None:
    """Unplugged: unavailable until the end of the trip under way or next known one, else all horizon."""
    now_s = grid.t0_s
    back = next((a for d, a, _ in trips if a > now_s), None)
    until = grid.end_s if back is None else back
    row.available[grid.overlap_s(now_s, until) > 0] = 0.0


def _fill_trips(
    spec: VehicleSpec, grid: StepGrid, row: VehicleRow, trips: list[_Trip], gone: BoolArray
) -> list[DepartureInfo]:
    """Each trip: away over its steps, its energy taken pro rata to time; returns the trips' targets."""
    targets: list[DepartureInfo] = []
    for depart_s, arrive_s, tr in trips:
        overlap = grid.overlap_s(depart_s, arrive_s)
        inside = np.flatnonzero(overlap)
        row.available[inside] = 0.0
        gone[inside] = True
        row.trip_kwh += tr.energy_kwh * overlap / (arrive_s - depart_s)
        if inside.size and tr.energy_kwh > 0:
            row.trip_spans.append((tr.depart, int(inside[0]), int(inside[-1]) + 1))
        if tr.target_soc_percent is not None and depart_s > grid.t0_s:
            info = _target(spec, tr.depart, depart_s, tr.target_soc_percent, grid, row.charge_cap_kw)
            if info is not None:
                targets.append(replace(info, trip=True))
    return targets


def _departure_target(
    spec: VehicleSpec,
    state: VehicleSnapshot,
    grid: StepGrid,
    row: VehicleRow,
    trips: list[_Trip],
    gone: BoolArray,
    notes: list[str],
) -> DepartureInfo | None:
    """The next departure's target; a departure that is no known trip's leaves for the horizon."""
    dep = state.departure
    if dep is None:
        return None
    vid = spec.vehicle_id
    dep_s = grid.seconds(dep.at)
    if dep_s <= grid.t0_s:
        notes.append(f"{vid}: departure {dep.at.isoformat()} has passed; ignored")
        return None
    k = grid.step_index(dep_s)
    trip_steps = {grid.step_index(depart_s) for depart_s, _, _ in trips}
    if k < grid.steps and k not in trip_steps:
        # Leaves without a known return: gone from that step to the end of the horizon.
        row.available[k:] = 0.0
        gone[k:] = True
    info = _target(spec, dep.at, dep_s, dep.target_soc_percent, grid, row.charge_cap_kw)
    if info is None and k == 0:
        notes.append(f"{vid}: departing within the current step; no time left to charge")
    return info


def _one_target_per_step(targets: list[DepartureInfo]) -> list[DepartureInfo]:
    """The next departure is often also a trip of the weekly schedule, in the same step: one target
    per step (the larger; named as the departure on a tie), so a shortfall is not counted twice."""
    by_index: dict[int, DepartureInfo] = {}
    for info in targets:
        held = by_index.get(info.index)
        if held is None or (info.target_kwh, not info.trip) > (held.target_kwh, not held.trip):
            by_index[info.index] = info
    return list(by_index.values())


def _set_targets(
    spec: VehicleSpec, state: VehicleSnapshot, row: VehicleRow, targets: list[DepartureInfo]
) -> None:
    if state.mode is VehicleMode.CHARGE_NOW:
        # "Charge now": the max SoC (or the SoC the driver asked for) becomes a target at every
        # step, which fills the car at once.
        asked = state.charge_to_percent
        row.target_kwh[:] = spec.max_soc_kwh if asked is None else spec.capacity_kwh * asked / 100.0
    for info in targets:
        row.target_kwh[info.index - 1] = max(row.target_kwh[info.index - 1], info.target_kwh)
    targets.sort(key=lambda d: d.index)
    row.targets = tuple(targets)


def _hold(
    spec: VehicleSpec, state: VehicleSnapshot, grid: StepGrid, row: VehicleRow, notes: list[str]
) -> float:
    """An overdue departure's target as a floor at every step end before the hold ends (``until``,
    else the horizon's end): soft like a departure target, so the plan does not discharge below it
    and charges a car below it towards it. Returns the held energy (0: no hold)."""
    hold = state.hold
    if hold is None or not state.plugged_in:
        return 0.0
    hold_kwh = spec.capacity_kwh * hold.soc_percent / 100.0
    stop = grid.steps
    if hold.until is not None:
        stop = min(stop, max(0, grid.step_index(grid.seconds(hold.until))))
    row.target_kwh[:stop] = np.maximum(row.target_kwh[:stop], hold_kwh)
    until = f"until {utc_text(hold.until)}" if hold.until is not None else "until it leaves"
    notes.append(
        f"{spec.vehicle_id}: departure {utc_text(hold.departure_at)} overdue: holding "
        f"{hold.soc_percent:.0f} % {until}"
    )
    return hold_kwh


def _budget_v2l(
    spec: VehicleSpec,
    state: VehicleSnapshot,
    grid: StepGrid,
    row: VehicleRow,
    gone: BoolArray,
    notes: list[str],
) -> None:
    """A V2L session's power per step while the car is home, where the config permits V2L."""
    v2l = state.v2l
    if v2l is not None and v2l.power_w > 0:
        if not spec.v2l:
            notes.append(
                f"{spec.vehicle_id}: V2L is not permitted by the config; the session is not budgeted"
            )
            return
        end_s = grid.end_s if v2l.end is None else grid.seconds(v2l.end)
        overlap = grid.overlap_s(grid.seconds(v2l.start), end_s)
        row.v2l_kw[:] = v2l.power_w / 1000.0 * overlap / grid.step_s
        row.v2l_kw[gone] = 0.0


def _target(
    spec: VehicleSpec,
    at: datetime,
    at_s: float,
    soc_percent: float,
    grid: StepGrid,
    charge_cap_kw: float = math.inf,
) -> DepartureInfo | None:
    """The energy needed at the boundary before the departure step (or at the horizon end)."""
    want = spec.capacity_kwh * soc_percent / 100.0
    k = grid.step_index(at_s)
    if k < 1:
        return None  # leaving during the current step: nothing left to plan
    if k <= grid.steps:
        return DepartureInfo(at=at, index=k, target_kwh=want)
    # After the horizon: what must be in the car at its end so full power can still reach the target.
    hours_after = (at_s - grid.end_s) / 3600.0
    need = want - hours_after * min(spec.max_charge_kw, charge_cap_kw) * spec.charge_efficiency
    if need <= spec.reserve_kwh:
        return None
    return DepartureInfo(at=at, index=grid.steps, target_kwh=need, beyond_horizon=True)
