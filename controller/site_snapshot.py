"""The one builder from the site state to the planner's snapshot and the dispatcher's inputs.

The daemon (``Site.planner_snapshot``, ``Site.dispatch_inputs``) and the simulator's ``mpc`` strategy
both build them here, from the same state, so what the simulator proves holds for the daemon: safe
mode and a guessed SoC forbid discharge, prices are clipped to what the optimiser accepts, the EV's
own limits for its session apply, and a charger whose OCPP version cannot carry a discharge is
planned charge-only, and each home battery is there with its SoC (None when unknown or stale).
Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np

from controller.dispatch import DispatchInputs, VehicleLive
from controller.dispatch.peak_window import capacity_import_cap_w, planned_peak_w
from controller.domain import Departure, Plan, VehicleMode, align_to_step, ensure_utc
from controller.site_batteries import battery_lives, battery_snapshots
from controller.snapshot import (
    DepartureGoal,
    DepartureHold,
    SessionLimits,
    Snapshot,
    V2LRequest,
    VehicleSnapshot,
)
from controller.vehicles import scheduled_trips

if TYPE_CHECKING:
    from controller.site import FloatArray, Site, VehicleRuntime

__all__ = ["dispatch_inputs", "planner_snapshot", "snapshot"]


def snapshot(site: Site, now: dt.datetime, load_w: FloatArray, pv_w: FloatArray) -> Snapshot:
    """What the planner sees at ``now``: forecasts given, prices and limits from the inputs."""
    now = ensure_utc(now)
    steps = len(load_w)
    start = align_to_step(now, site.step)
    prices = site.inputs.prices_on_grid(start, site.step, steps)
    limits = site.inputs.limits_on_grid(start, site.step, steps)
    vehicles = []
    safe_mode = site.inputs.safe_mode(now) and not site.inputs.is_grid_lost(now)
    end = start + site.step * steps
    for vehicle in site.vehicles.values():
        departure = site.departure(vehicle, now)
        overdue = site.overdue(vehicle, now)
        # The weekly schedule's usual returns: the plan may count on the car after them.
        away = scheduled_trips(
            vehicle.effective_config(),
            now,
            end,
            site.cfg.site.timezone,
            plugged_in=vehicle.plugged_in,
            next_departure=departure,
            leads=vehicle.leads(now, site.cfg.site.timezone),
        )
        session = vehicle.v2l if vehicle.v2l is not None and not vehicle.v2l_cut_off else None
        estimate = vehicle.tracker.estimate()
        mode = vehicle.mode
        # Stale data or a guessed SoC (restored, or estimated on arrival): plan charging on the
        # best estimate, but the plan must not count on discharge either.
        guessed = estimate is not None and not estimate.measured
        if (safe_mode or guessed) and mode is VehicleMode.AUTO:
            mode = VehicleMode.NO_DISCHARGE
        vehicles.append(
            VehicleSnapshot(
                id=vehicle.config.id,
                soc_percent=estimate.soc_percent if estimate is not None else None,
                plugged_in=vehicle.plugged_in,
                departure=DepartureGoal(at=departure.at, target_soc_percent=departure.target_soc_percent)
                if departure is not None
                else None,
                away=away,
                v2l=V2LRequest(start=session.start, end=session.end, power_w=session.power_w)
                if session is not None
                else None,
                mode=mode,
                charge_to_percent=vehicle.charge_to_percent if mode is VehicleMode.CHARGE_NOW else None,
                session_limits=vehicle.session_limits,
                hold=DepartureHold(
                    departure_at=overdue.departure.at,
                    soc_percent=overdue.departure.target_soc_percent,
                    until=overdue.until,
                )
                if overdue is not None
                else None,
            )
        )
    return Snapshot(
        time=now,
        step_minutes=site.cfg.site.plan_step_minutes,
        vehicles=vehicles,
        home_batteries=battery_snapshots(site, now),
        load_w=_floats(load_w),
        pv_w=_floats(pv_w),
        import_price_per_kwh=_floats(np.clip(prices.import_per_kwh, -10, 10)),
        export_price_per_kwh=_floats(np.clip(prices.export_per_kwh, -10, 10)),
        import_limit_w=_floats(limits.import_limit_w),
        export_limit_w=_floats(limits.export_limit_w),
        **_capacity_fields(site, now),
    )


def _floats(values: FloatArray) -> list[float]:
    """Python floats, as the Snapshot holds them (``tolist`` is the one pass that makes them)."""
    floats: list[float] = np.asarray(values, dtype=np.float64).tolist()
    return floats


def _capacity_fields(site: Site, now: dt.datetime) -> dict[str, float]:
    """The month's peak so far (at least the tariff's minimum) and the open window's import."""
    capacity = site.cfg.tariff.capacity
    peak_w = site.inputs.month_peak_import_w(now)
    if capacity is None or peak_w is None:
        return {}
    return {
        "month_peak_import_w": max(peak_w, 1000.0 * capacity.minimum_peak_kw),
        "window_import_wh": site.inputs.window_import_wh(now),
    }


def _capacity_cap_w(site: Site, now: dt.datetime, plan: Plan | None) -> float | None:
    """The capacity tariff's import cap for the rest of the window (``peak_window``): None without a
    tariff, a plan or a fresh grid reading (then nothing measures the window)."""
    capacity = site.cfg.tariff.capacity
    peak_w = site.inputs.month_peak_import_w(now)
    if capacity is None or plan is None or peak_w is None or site.inputs.grid_power_w(now) is None:
        return None
    window = dt.timedelta(minutes=capacity.window_minutes)
    window_wh = site.inputs.window_import_wh(now)
    floor_w = max(peak_w, 1000.0 * capacity.minimum_peak_kw)
    planned_w = planned_peak_w(plan, now, floor_w, window_wh, window, site.cfg.site.timezone)
    return capacity_import_cap_w(planned_w, window_wh, now, window)


def planner_snapshot(site: Site, now: dt.datetime, load_w: FloatArray, pv_w: FloatArray) -> Snapshot:
    """``snapshot`` as the daemon plans on it: a car at a charger whose OCPP connection cannot
    carry a discharge (``charger_can_discharge``) gets a session discharge cap of 0 W, so the
    plan never counts on a discharge the charger would be sent as a limit of 0."""
    snapshot = site.snapshot(now, load_w, pv_w)
    vehicles = []
    for planned in snapshot.vehicles:
        runtime = site.vehicles.get(planned.id)
        if runtime is not None and not site.charger_can_discharge(runtime.charger_id):
            limits = planned.session_limits or SessionLimits()
            capped = limits.model_copy(update={"max_discharge_power_w": 0.0})
            planned = planned.model_copy(update={"session_limits": capped})
        vehicles.append(planned)
    return snapshot.model_copy(update={"vehicles": vehicles})


def dispatch_inputs(site: Site, now: dt.datetime, plan: Plan | None) -> DispatchInputs:
    limits = site.inputs.limits_at(now)
    lives = tuple(_live(site, v, now) for v in site.vehicles.values())
    return DispatchInputs(
        now=now,
        plan=plan,
        vehicles=lives,
        grid_power_w=site.inputs.grid_power_w(now),
        import_limit_w=limits.import_limit_w,
        export_limit_w=limits.export_limit_w,
        safe_mode=site.inputs.safe_mode(now),
        grid_lost=site.inputs.is_grid_lost(now),
        home_power_w=site.inputs.home_power_w(now),
        pv_power_w=site.inputs.pv_power_w(now),
        grid_phases_w=site.inputs.grid_phases_w(now),
        batteries=battery_lives(site, now),
        capacity_cap_w=_capacity_cap_w(site, now, plan),
    )


def _live(site: Site, vehicle: VehicleRuntime, now: dt.datetime) -> VehicleLive:
    departure = site.departure(vehicle, now)
    overdue = site.overdue(vehicle, now)
    ev = vehicle.session_limits
    return VehicleLive(
        vehicle_id=vehicle.config.id,
        plugged_in=vehicle.plugged_in,
        charger_id=vehicle.charger_id,
        soc_percent=site.measured_soc(vehicle),
        measured_power_w=site.measured_power_w(vehicle, now),
        mode=vehicle.mode,
        departure_at=departure.at if departure is not None else None,
        ev_max_charge_w=ev.max_charge_power_w if ev else None,
        ev_max_discharge_w=ev.max_discharge_power_w if ev else None,
        ev_min_soc_percent=ev.min_soc_percent if ev else None,
        charger_can_discharge=site.charger_can_discharge(vehicle.charger_id),
        hold_soc_percent=overdue.departure.target_soc_percent if overdue is not None else None,
        ceiling_soc_percent=soc_ceiling_percent(vehicle, departure),
    )


def soc_ceiling_percent(vehicle: VehicleRuntime, departure: Departure | None) -> float:
    """Where charging stops: ``max_soc_percent``, or higher where the driver asked for more
    (``charge_now`` to a SoC, a departure target above it)."""
    ceiling = vehicle.config.max_soc_percent
    if vehicle.mode is VehicleMode.CHARGE_NOW and vehicle.charge_to_percent is not None:
        ceiling = max(ceiling, vehicle.charge_to_percent)
    if departure is not None:
        ceiling = max(ceiling, departure.target_soc_percent)
    return min(100.0, ceiling)
