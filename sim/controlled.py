"""The project's own controller in the loop: ``mpc`` and the ``perfect`` foresight bound.

``mpc`` is the daemon's path from the world to the plan and on to the chargers, on simulated time.
Each step the simulated home's events (plug-in and unplug, the car's SoC and power at its charger,
the meters, prices as published, the announced next departure) go to the daemon's own site state
(:class:`sim.site_feed.SiteFeed`, through :class:`controller.site_events.SiteEvents`); every re-plan
interval, and whenever those events ask for it as they would in the daemon, the site builds the
planner's snapshot as the daemon does (``Site.planner_snapshot``: safe mode and a guessed SoC
forbid discharge, prices clipped, the EV's session limits, what the charger's OCPP version can
carry), with load and PV forecasts from the information model, and the real
:class:`controller.optimizer.Planner` solves it. The real :class:`controller.dispatch.Dispatcher`
then turns the plan into setpoints from the site's dispatcher inputs (V2H load following, grid
limits, the reserve and permissions, the deadband keeps the last setpoint). The plant applies them.

``perfect`` solves once over the whole scenario with the actual load, PV, prices and trips
(``controller.optimizer.plan_foresight``) and replays that plan: the economic bound.
"""

from __future__ import annotations

import time

from controller.config import SiteConfig
from controller.dispatch import Dispatcher
from controller.domain import Plan
from controller.optimizer import Planner, plan_foresight
from controller.site_events import Reaction
from controller.snapshot import DepartureGoal, Snapshot, VehicleSnapshot
from controller.snapshot import Trip as SnapshotTrip
from sim.engine import Decision
from sim.information import InformationModel, Observation, VehicleObservation
from sim.plant import VehicleSpec
from sim.scenario import Scenario
from sim.site_feed import SiteFeed

__all__ = ["ModelPredictiveControl", "PerfectForesight"]


def _soc_estimate(vehicle: VehicleObservation, spec: VehicleSpec, obs: Observation) -> float:
    """While away the car reports nothing: the SoC last measured (what the daemon has); with the
    calendar (diagnosis), that less the estimated use of the trip under way so far."""
    if vehicle.plugged_in or vehicle.trips is None:
        return vehicle.soc_percent
    under_way = next((t for t in vehicle.trips if t.depart <= obs.time < t.arrive), None)
    if under_way is None:
        return vehicle.soc_percent
    elapsed = (obs.time - under_way.depart) / (under_way.arrive - under_way.depart)
    used_percent = 100.0 * under_way.energy_kwh * elapsed / spec.capacity_kwh
    return min(100.0, max(0.0, vehicle.soc_percent - used_percent))


def _calendar_trips(vehicle: VehicleObservation) -> list[SnapshotTrip]:
    return [
        SnapshotTrip(
            depart=t.depart,
            arrive=t.arrive,
            energy_kwh=t.energy_kwh,
            target_soc_percent=t.target_soc_percent,
        )
        for t in vehicle.trips or ()
    ]


def _with_calendar(snapshot: Snapshot, obs: Observation, specs: tuple[VehicleSpec, ...]) -> Snapshot:
    """For diagnosis (``trip_info="calendar"``): the driver's calendar replaces the weekly schedule's
    trips and departure (the next departure is the calendar's, not an earlier rule of the schedule),
    and the SoC of a car away is that less the trip under way so far."""
    vehicles = []
    for planned, vehicle, spec in zip(snapshot.vehicles, obs.vehicles, specs, strict=True):
        if vehicle.trips is not None:
            known = vehicle.next_departure
            departure = (
                None
                if known is None
                else DepartureGoal(at=known.at, target_soc_percent=known.target_soc_percent)
            )
            planned = planned.model_copy(
                update={
                    "away": _calendar_trips(vehicle),
                    "soc_percent": _soc_estimate(vehicle, spec, obs),
                    "departure": departure,
                }
            )
        vehicles.append(planned)
    return snapshot.model_copy(update={"vehicles": vehicles})


class ModelPredictiveControl:
    """Re-plan every ``replan_interval_minutes`` (at least once a step) and on plug-in; dispatch each step."""

    name = "mpc"

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.planner = Planner(config)
        self.horizon_steps = self.planner.steps
        site = config.site
        self.replan_steps = max(1, round(site.replan_interval_minutes / site.plan_step_minutes))
        self.feed = SiteFeed(config, self.horizon_steps)
        self.dispatcher = Dispatcher(self.feed.config)
        self.specs = tuple(VehicleSpec.from_config(v, config) for v in config.vehicles)
        self.plan: Plan | None = None
        self._plan_step = -1
        # Setpoint each charger holds (what was last sent), by vehicle.
        self._held_w = {v.id: 0.0 for v in config.vehicles}
        # Where the time goes, for benchmarks (the planner's own split from Planner.last_timings).
        self.observe_s = 0.0
        self.snapshot_s = 0.0
        self.plan_s = 0.0
        self.dispatch_s = 0.0
        self.translate_s = 0.0
        self.resolve_s = 0.0
        self.solver_s = 0.0
        self.build_s = 0.0

    def _due(self, k: int, reaction: Reaction) -> bool:
        return (
            self.plan is None
            or bool(reaction.replan)
            or k - self._plan_step >= self.replan_steps
            or k - self._plan_step >= self.plan.steps
        )

    def decide(self, info: InformationModel) -> Decision:
        k = info.k
        t0 = time.perf_counter()
        vehicles = info.vehicles(self.horizon_steps)
        reaction = self.feed.feed(info, vehicles, self._held_w)
        for charger_id in reaction.forget_chargers:
            self.dispatcher.forget(charger_id)
        solve_ms = solver_ms = None
        fallback = False
        notes: tuple[str, ...] = ()
        if self._due(k, reaction):
            obs = info.observe(self.horizon_steps, vehicles)
            t1 = time.perf_counter()
            snapshot = self.feed.site.planner_snapshot(info.now, obs.load_w, obs.pv_w)
            snapshot = _with_calendar(snapshot, obs, self.specs)
            t2 = time.perf_counter()
            plan = self.planner.plan(snapshot)
            t3 = time.perf_counter()
            self.observe_s += t1 - t0
            self.snapshot_s += t2 - t1
            self.plan_s += t3 - t2
            timings = self.planner.last_timings
            if timings is not None:
                self.translate_s += timings.translate_ms / 1000.0
                self.resolve_s += timings.resolve_ms / 1000.0
                self.solver_s += timings.solver_ms / 1000.0
                self.build_s += timings.build_ms / 1000.0
            self.plan = plan
            self._plan_step = k
            solve_ms = 1000.0 * (t3 - t2)
            solver_ms = plan.solve_time_ms
            fallback = plan.fallback
            if plan.fallback:
                notes = (f"step {k}: {plan.solver_status}",)
        t4 = time.perf_counter()
        powers = self._dispatch(info, vehicles)
        self.dispatch_s += time.perf_counter() - t4
        return Decision(powers, solve_ms=solve_ms, solver_ms=solver_ms, fallback=fallback, notes=notes)

    def _dispatch(
        self, info: InformationModel, vehicles: tuple[VehicleObservation, ...]
    ) -> tuple[float, ...]:
        commands = self.dispatcher.dispatch(self.feed.site.dispatch_inputs(info.now, self.plan))
        by_vehicle = {c.vehicle_id: c for c in commands if c.vehicle_id is not None}
        for vehicle in vehicles:
            command = by_vehicle.get(vehicle.vehicle_id)
            if not vehicle.plugged_in:
                self._held_w[vehicle.vehicle_id] = 0.0
            elif command is not None and command.send:
                self._held_w[vehicle.vehicle_id] = command.setpoint_w
        return tuple(self._held_w[v.vehicle_id] for v in vehicles)


class PerfectForesight:
    """One solve over the whole scenario with the actuals; the plan is then replayed step by step."""

    name = "perfect"

    def __init__(self, scenario: Scenario, time_limit_s: float = 3600.0) -> None:
        self.scenario = scenario
        self.time_limit_s = time_limit_s
        self.plan: Plan | None = None
        self.vehicle_ids = tuple(v.id for v in scenario.config.vehicles)

    def snapshot(self) -> Snapshot:
        scenario = self.scenario
        series = scenario.series
        vehicles = []
        for vehicle in scenario.config.vehicles:
            trips = scenario.trips_of(vehicle.id)
            away = [
                SnapshotTrip(
                    depart=series.time_at(t.depart_index),
                    arrive=series.time_at(t.arrive_index),
                    energy_kwh=t.energy_kwh,
                    target_soc_percent=t.target_soc_percent,
                )
                for t in trips
            ]
            plugged = not any(t.depart_index <= 0 < t.arrive_index for t in trips)
            vehicles.append(
                VehicleSnapshot(
                    id=vehicle.id, soc_percent=scenario.initial_soc(vehicle), plugged_in=plugged, away=away
                )
            )
        return Snapshot(
            time=series.start,
            step_minutes=scenario.config.site.plan_step_minutes,
            vehicles=vehicles,
            load_w=series.load_w.tolist(),
            pv_w=series.pv_w.tolist(),
            import_price_per_kwh=series.import_price_per_kwh.tolist(),
            export_price_per_kwh=series.export_price_per_kwh.tolist(),
        )

    def decide(self, info: InformationModel) -> Decision:
        k = info.k
        solve_ms = solver_ms = None
        if self.plan is None:
            t0 = time.perf_counter()
            self.plan = plan_foresight(self.scenario.config, self.snapshot(), self.time_limit_s)
            solve_ms = 1000.0 * (time.perf_counter() - t0)
            solver_ms = self.plan.solve_time_ms
        plan = self.plan
        powers = tuple(
            plan.vehicles[vid].power_w[k] if vid in plan.vehicles and k < plan.steps else 0.0
            for vid in self.vehicle_ids
        )
        return Decision(powers, solve_ms=solve_ms, solver_ms=solver_ms, fallback=plan.fallback and k == 0)
