"""From a snapshot of the world to the numbers the optimiser needs, on the plan's step grid.

All arrays are in kW / kWh, ``(vehicles, steps)`` or ``(steps,)``. The first step is usually partly
over (a snapshot at 07:22 on a 15-minute grid has 8 minutes left of the 07:15 step), so every
power of step 0 is scaled by the fraction left, ``first_step_fraction``: the model then reads
"average power over the whole step", energy stays exact, and the plan divides it back out.

Each vehicle's rows (home or away, trips, targets, V2L) come from ``vehicle_rows``; this module
adds the site's series and what depends on all cars together (reserve, headroom, trip clipping).
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from controller.config import ConfigIssue
from controller.domain import VehicleMode, align_to_step
from controller.optimizer.capacity import capacity_inputs
from controller.optimizer.duty import own_use_limits, pulse_shares
from controller.optimizer.home_battery import BatteryInputs, battery_inputs
from controller.optimizer.shape import SiteShape
from controller.optimizer.sharing import charge_rank_per_kwh
from controller.optimizer.step_grid import StepGrid
from controller.optimizer.vehicle_rows import DepartureInfo, VehicleRow, fill_vehicle
from controller.snapshot import Snapshot

__all__ = ["DepartureInfo", "FloatArray", "PlanInputs", "SnapshotError", "TripInfo", "build_inputs"]

FloatArray = npt.NDArray[np.float64]
_NO_CUT_MARGIN_KWH = 1e-6
"""Far above the rounding of the step loop in ``_clip_trips``, far below a cut it would note."""


class SnapshotError(ValueError):
    """A snapshot that does not fit the site (unknown vehicle, too few steps …)."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("; ".join(str(i) for i in issues))


@dataclass(frozen=True, slots=True)
class TripInfo:
    """A trip in the horizon as planned: it takes ``energy_kwh`` out of the car from ``depart`` on."""

    depart: datetime
    energy_kwh: float
    """What the plan takes out over the horizon (less than asked when the car cannot hold it)."""
    clipped_kwh: float = 0.0
    """Asked for but more than the car can hold or take in before: not planned (noted)."""


@dataclass(eq=False, slots=True)
class PlanInputs:
    """One optimisation's data; see the module docstring for the step-0 scaling."""

    start: datetime
    first_step_fraction: float
    e0_kwh: FloatArray
    charge_ub_kw: FloatArray
    discharge_ub_kw: FloatArray
    v2l_kw: FloatArray
    trip_kwh: FloatArray
    floor_kwh: FloatArray
    target_gap_kwh: FloatArray
    e_max_kwh: FloatArray
    available: npt.NDArray[np.bool_]
    net_load_kw: FloatArray
    import_ub_kw: FloatArray
    export_ub_kw: FloatArray
    overload_import_kw: FloatArray
    overload_export_kw: FloatArray
    own_use_cap_kw: FloatArray
    """What cars without V2G may discharge together: the home's net load where it covers their
    smallest pulse, else 0."""
    duty_export_share: FloatArray
    """(phi) Per car and step, the share of a discharge below the charger's minimum that is exported
    (``1 - L / P`` where the net load ``0 < L < P``, else 0); see ``duty``. Not scaled in step 0."""
    duty_import_share: FloatArray
    """(psi) The same for charging against a PV surplus ``S``: ``1 - S / P`` where ``0 < S < P``."""
    import_price: FloatArray
    export_price: FloatArray
    """As given; the model uses ``min(export, import)`` so a meter never gains by importing and
    exporting at once (a convex net-metering cost)."""
    terminal_value: FloatArray
    load_kw: FloatArray
    pv_kw: FloatArray
    soc_known: tuple[bool, ...]
    modes: tuple[VehicleMode, ...]
    targets: tuple[tuple[DepartureInfo, ...], ...]
    """Per vehicle, the targets inside the horizon in time order (departures, trip targets)."""
    in_snapshot: tuple[bool, ...]
    notes: list[str] = field(default_factory=list)
    trips: tuple[tuple[TripInfo, ...], ...] = ()
    """Per vehicle, the trips that take energy in the horizon, in time order."""
    capacity_window_rhs: FloatArray = field(default_factory=lambda: np.zeros(0))
    """Capacity tariff (module ``capacity``): per step, the energy already in its window row, kWh
    (or a number no import reaches where no window ends)."""
    capacity_chain_rhs: FloatArray = field(default_factory=lambda: np.zeros(0))
    """Per step after the first: 0, or a large negative number where a month starts."""
    capacity_floor_kw: FloatArray = field(default_factory=lambda: np.zeros(0))
    """Per step, the least peak: the month so far, or the minimum in a month that starts later."""
    capacity_month_end: FloatArray = field(default_factory=lambda: np.zeros(0))
    """1 at each month's last step in the horizon (where its peak is charged), else 0."""
    capacity_peak_now_kw: FloatArray = field(default_factory=lambda: np.zeros(0))
    """The month-to-date peak (at least the tariff's minimum), one value."""
    battery_e0_kwh: FloatArray = field(default_factory=lambda: np.zeros(0))
    """Controllable home batteries (module ``home_battery``, fields ``BATTERY_FIELDS``): energy now."""
    battery_charge_ub_kw: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    battery_discharge_ub_kw: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    battery_floor_kwh: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    battery_short_ub_kwh: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    battery_e_max_kwh: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    battery_terminal_value: FloatArray = field(default_factory=lambda: np.zeros(0))
    battery_surplus_kw: FloatArray = field(default_factory=lambda: np.zeros(0))
    """PV beyond the home load per step: what batteries without grid charging may take."""
    battery_home_kw: FloatArray = field(default_factory=lambda: np.zeros(0))
    """Home load beyond PV per step: what batteries without grid export may cover (plus the cars)."""
    battery_soc_known: tuple[bool, ...] = ()
    """Per configured battery (config order)."""
    observe_power_kw: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    """(observe batteries, steps): the self-consumption forecast, + charging (step 0 as a power)."""
    observe_energy_kwh: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    observe_import_penalty: FloatArray = field(default_factory=lambda: np.zeros(0))
    """Per step: per kWh imported where an observe battery could discharge into it, what that
    transfer costs (``home_battery.transfer_cost_per_kwh``), else 0."""
    charge_rank_per_kwh: FloatArray = field(default_factory=lambda: np.zeros(0))
    """Per vehicle, a tiny cost per kWh charged by its slack before its next target: who charges
    first under a binding cap (module ``sharing``)."""

    @property
    def export_price_model(self) -> FloatArray:
        result: FloatArray = np.minimum(self.export_price, self.import_price)
        return result


def check_snapshot(snapshot: Snapshot, shape: SiteShape, config_ids: tuple[str, ...]) -> list[ConfigIssue]:
    """Problems that make a valid snapshot unusable for this site."""
    issues: list[ConfigIssue] = []
    step_minutes = int(shape.step.total_seconds() // 60)
    if snapshot.step_minutes is not None and snapshot.step_minutes != step_minutes:
        issues.append(
            ConfigIssue(
                "step_minutes",
                f"{snapshot.step_minutes} does not match the site's plan_step_minutes {step_minutes}",
                "resample the series or fix the config",
            )
        )
    if snapshot.steps < shape.steps:
        hours = shape.steps * shape.step_h
        issues.append(
            ConfigIssue(
                "load_w",
                f"has {snapshot.steps} values but the plan needs {shape.steps} ({hours:g} h of "
                f"{step_minutes}-minute steps)",
                "give one value per step over the whole horizon",
            )
        )
    for i, vehicle in enumerate(snapshot.vehicles):
        if vehicle.id not in config_ids:
            issues.append(
                ConfigIssue(
                    f"vehicles[{i}].id",
                    f"unknown vehicle {vehicle.id!r}",
                    f"use one of {sorted(config_ids)} or add it to the site config",
                )
            )
    return issues


def build_inputs(snapshot: Snapshot, shape: SiteShape) -> PlanInputs:
    """Translate a (checked) snapshot into optimiser arrays for the site ``shape``."""
    n, t = len(shape.vehicles), shape.steps
    start = align_to_step(snapshot.time, shape.step)
    grid = StepGrid(start, snapshot.time, shape.step, t)
    frac0 = (grid.hi[0] - grid.t0_s) / grid.step_s
    notes: list[str] = []

    load_kw = np.array(snapshot.load_w[:t], dtype=np.float64) / 1000.0
    pv_kw = np.array(snapshot.pv_w[:t], dtype=np.float64) / 1000.0
    imp_price = np.array(snapshot.import_price_per_kwh[:t], dtype=np.float64)
    exp_price = np.array(snapshot.export_price_per_kwh[:t], dtype=np.float64)
    if snapshot.import_limit_w is not None:
        imp_lim = np.array(snapshot.import_limit_w[:t], dtype=np.float64) / 1000.0
    else:
        imp_lim = np.full(t, shape.import_limit_kw)
    if snapshot.export_limit_w is not None:
        exp_lim = np.array(snapshot.export_limit_w[:t], dtype=np.float64) / 1000.0
    else:
        exp_lim = np.full(t, shape.export_limit_kw)
    if (exp_price > imp_price + 1e-12).any():
        notes.append("export price above import price in some steps: planned with export = import price")

    net = load_kw - pv_kw
    terminal = terminal_value_per_kwh(shape, imp_price, exp_price)
    batteries = None
    if shape.batteries:
        batteries = battery_inputs(
            shape.batteries,
            snapshot,
            net_kw=net,
            pv_kw=pv_kw,
            frac0=frac0,
            step_h=shape.step_h,
            terminal_value=terminal,
            import_price=imp_price,
        )
        # What the grid meter reads: the observe batteries' forecast discharge covers the home.
        net = net + np.minimum(batteries.observe_kw, 0.0).sum(axis=0)
    overload_imp = np.maximum(net - imp_lim, 0.0)
    overload_exp = np.maximum(-net - exp_lim, 0.0)
    if overload_imp.any():
        notes.append(f"home load alone exceeds the import limit in {int((overload_imp > 0).sum())} step(s)")
    if overload_exp.any():
        notes.append(f"PV alone exceeds the export limit in {int((overload_exp > 0).sum())} step(s)")
    # Pulses below a charger's minimum (module ``duty``): from the real net load, not step 0's share.
    c = shape.constants
    export_share = pulse_shares(c.min_discharge_kw, net)
    import_share = pulse_shares(c.min_charge_kw, -net)
    own_use, uncovered = own_use_limits(net, c.min_discharge_kw, np.array(shape.own_use_mask, dtype=bool))
    for series in (net, imp_lim, exp_lim, overload_imp, overload_exp, own_use):
        series[0] *= frac0  # step 0 holds only what is left of it (module docstring)

    e0 = np.zeros(n)
    may_discharge = np.zeros(n)
    # The EV's own limits for this session (SessionLimits); they only tighten the config's.
    charge_kw = shape.constants.max_charge_kw.copy()
    discharge_kw = shape.constants.max_discharge_kw.copy()
    ev_floor_kwh = np.zeros(n)
    ev_ceiling_kwh = np.full(n, np.inf)
    available = np.zeros((n, t))
    v2l = np.zeros((n, t))
    trip = np.zeros((n, t))
    target = np.zeros((n, t))
    soc_known: list[bool] = []
    modes: list[VehicleMode] = []
    all_targets: list[tuple[DepartureInfo, ...]] = []
    in_snapshot: list[bool] = []
    trip_spans: list[list[tuple[datetime, int, int]]] = []
    for i, spec in enumerate(shape.vehicles):
        state = snapshot.vehicle(spec.vehicle_id)
        in_snapshot.append(state is not None)
        row = VehicleRow(available[i], v2l[i], trip[i], target[i])
        fill_vehicle(spec, state, grid, row, notes)
        e0[i] = row.e0
        may_discharge[i] = row.may_discharge
        charge_kw[i] = min(charge_kw[i], row.charge_cap_kw)
        discharge_kw[i] = min(discharge_kw[i], row.discharge_cap_kw)
        ev_floor_kwh[i] = row.ev_floor_kwh
        ev_ceiling_kwh[i] = row.ev_ceiling_kwh
        soc_known.append(row.soc_known)
        modes.append(row.mode)
        all_targets.append(row.targets)
        trip_spans.append(row.trip_spans)

    c_ub = available * charge_kw[:, None]
    d_ub = available * (discharge_kw * may_discharge)[:, None]
    d_ub[uncovered] = 0.0
    c_ub[:, 0] *= frac0
    d_ub[:, 0] *= frac0
    # The EV's V2X floor raises the reserve for this session, but only up to the energy in the car
    # now: it stops discharge below it without forcing a charge at any price (the dispatcher also
    # refuses discharge below it).
    reserve = np.maximum(c.reserve_kwh, np.minimum(ev_floor_kwh, e0))
    floor = np.maximum(target, reserve[:, None])
    ceiling = np.maximum(np.minimum(c.max_soc_kwh, ev_ceiling_kwh), c.reserve_kwh)
    e_max = np.maximum(np.maximum(ceiling, e0), target.max(axis=1))
    # What charging can add to each car per step at most: its own bound, within the import headroom
    # plus what the other cars could discharge into it.
    site_kw = imp_lim + overload_imp - net + d_ub.sum(axis=0)
    charge_max_kw = np.minimum(c_ub, np.maximum(site_kw[None, :] - d_ub, 0.0))
    trips = tuple(
        _clip_trips(shape, i, trip[i], e0[i], e_max[i], charge_max_kw[i], trip_spans[i], notes)
        for i in range(n)
    )
    rank = charge_rank_per_kwh(
        all_targets, e0, charge_kw, c.charge_efficiency, (grid.hi - grid.t0_s) / 3600.0
    )
    capacity: dict[str, Any] = {}
    if shape.capacity is not None:
        capacity = capacity_inputs(
            shape.capacity,
            time=snapshot.time,
            start=start,
            step=shape.step,
            steps=t,
            timezone=shape.timezone,
            month_peak_import_w=snapshot.month_peak_import_w,
            window_import_wh=snapshot.window_import_wh,
            import_max_kw=float((imp_lim + overload_imp).max()),
        )
    return PlanInputs(
        start=start,
        first_step_fraction=frac0,
        e0_kwh=e0,
        charge_ub_kw=c_ub,
        discharge_ub_kw=d_ub,
        v2l_kw=v2l,
        trip_kwh=trip,
        floor_kwh=floor,
        target_gap_kwh=floor - reserve[:, None],
        e_max_kwh=np.repeat(e_max[:, None], t, axis=1),
        available=available > 0,
        net_load_kw=net,
        import_ub_kw=imp_lim,
        export_ub_kw=exp_lim,
        overload_import_kw=overload_imp,
        overload_export_kw=overload_exp,
        own_use_cap_kw=own_use,
        duty_export_share=export_share,
        duty_import_share=import_share,
        import_price=imp_price,
        export_price=exp_price,
        terminal_value=np.full(n, terminal),
        load_kw=load_kw,
        pv_kw=pv_kw,
        soc_known=tuple(soc_known),
        modes=tuple(modes),
        targets=tuple(all_targets),
        in_snapshot=tuple(in_snapshot),
        notes=notes,
        trips=trips,
        charge_rank_per_kwh=rank,
        **capacity,
        **_battery_fields(batteries),
    )


def _battery_fields(batteries: BatteryInputs | None) -> dict[str, Any]:
    if batteries is None:
        return {}
    out: dict[str, Any] = dict(batteries.params)
    out["battery_soc_known"] = batteries.soc_known
    out["observe_power_kw"] = batteries.observe_kw
    out["observe_energy_kwh"] = batteries.observe_energy_kwh
    out["observe_import_penalty"] = batteries.import_penalty
    return out


def _clip_trips(
    shape: SiteShape,
    i: int,
    trip_kwh: FloatArray,
    e0_kwh: float,
    e_max_kwh: float,
    charge_max_kw: FloatArray,
    spans: list[tuple[datetime, int, int]],
    notes: list[str],
) -> tuple[TripInfo, ...]:
    """Cut trip energy (in place) to what can be in the car when it is taken, and note the cut.

    The most the car can hold at each step: from the energy now, charging at full power whenever
    it is plugged in (within the import headroom), never above its max SoC. A trip that needs more
    would drive the planned energy below zero; the plan takes what can be there (an empty car)
    and the note says how much is missing. A reserve shortfall stays priced as before.
    """
    if not spans:
        return ()
    spec = shape.vehicles[i]
    last = max(stop for _, _, stop in spans)  # after the last trip nothing is cut
    # Without charging the car holds at least e0 less the trips so far (e0 <= e_max): when all the
    # trips fit in e0 nothing is cut (the usual case) and the step loop below is skipped.
    if e0_kwh - float(trip_kwh[:last].sum()) > _NO_CUT_MARGIN_KWH:
        return tuple(TripInfo(depart, float(trip_kwh[first:stop].sum())) for depart, first, stop in spans)
    # Plain floats: a year of steps in a Python loop stays in the tens of milliseconds.
    gains_kwh = (shape.step_h * spec.charge_efficiency * charge_max_kw[:last]).tolist()
    taken_kwh = trip_kwh[:last].tolist()
    clipped = np.zeros_like(trip_kwh)
    e_kwh = e0_kwh
    for k, (gain, taken) in enumerate(zip(gains_kwh, taken_kwh, strict=True)):
        e_kwh = min(e_max_kwh, e_kwh + gain) - taken
        if e_kwh < 0.0:
            clipped[k] = -e_kwh
            trip_kwh[k] += e_kwh
            e_kwh = 0.0
    zone = zoneinfo.ZoneInfo(shape.timezone)
    infos: list[TripInfo] = []
    for depart, first, stop in spans:
        cut_kwh = float(clipped[first:stop].sum())
        clipped[first:stop] = 0.0  # overlapping trips: each cut counted once
        infos.append(TripInfo(depart, float(trip_kwh[first:stop].sum()), cut_kwh))
        if cut_kwh > 1e-6:
            when = depart.astimezone(zone).strftime("%Y-%m-%d %H:%M")
            notes.append(
                f"{spec.vehicle_id}: the trip at {when} needs {cut_kwh:.1f} kWh more than the car can "
                "hold or take in before it; planned with an empty car on arrival"
            )
    return tuple(infos)


def terminal_value_per_kwh(shape: SiteShape, import_price: FloatArray, export_price: FloatArray) -> float:
    """What a kWh left in a car at the horizon end is worth: the configured value, else the larger
    of the horizon's mean import price (what the kWh saves when it covers the home later) and its
    upper-quartile export price (what it earns when it is sold at a good hour later), at least 0.

    Valued lower, a receding-horizon plan sells at ordinary prices what it would sell dearer a day
    later (net metering); the year study in docs/simulator.md measured both.
    """
    if shape.terminal_value_per_kwh is not None:
        return shape.terminal_value_per_kwh
    upper = (3 * (len(export_price) - 1) + 3) // 4  # index of the upper quartile, rounded up
    upper_quartile_export = float(np.partition(export_price, upper)[upper])
    return max(0.0, float(import_price.mean()), upper_quartile_export)
