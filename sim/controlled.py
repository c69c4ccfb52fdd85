"""The project's own controller in the loop: ``mpc`` and the ``perfect`` foresight bound.

``mpc`` is the daemon's planning and dispatch path on simulated time: every re-plan interval it
builds a :class:`controller.snapshot.Snapshot` from what the information model says is known now
(the trips after the announced next departure from the weekly schedule, as the daemon does, unless
the information model hands over the driver's calendar for diagnosis), calls the real
:class:`controller.optimizer.Planner`, and hands the plan to the real
:class:`controller.dispatch.Dispatcher` with the step's live readings (the dispatcher follows the
measured home load for V2H, clamps to grid limits, the reserve and permissions, and keeps the last
setpoint when its deadband says nothing changed). The plant then applies the setpoint.

``perfect`` solves once over the whole scenario with the actual load, PV, prices and trips
(``controller.optimizer.plan_foresight``) and replays that plan: the economic bound.
"""

from __future__ import annotations

import time
from datetime import timedelta

from controller.config import SiteConfig, VehicleConfig
from controller.dispatch import Dispatcher, DispatchInputs, VehicleLive
from controller.domain import Departure, Plan
from controller.optimizer import Planner, plan_foresight
from controller.snapshot import DepartureGoal, Snapshot, VehicleSnapshot
from controller.snapshot import Trip as SnapshotTrip
from controller.vehicles import scheduled_trips
from sim.engine import Decision
from sim.information import InformationModel, Observation, VehicleObservation
from sim.plant import VehicleSpec
from sim.scenario import Scenario

__all__ = ["ModelPredictiveControl", "PerfectForesight", "snapshot_from_observation"]


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


def _away(
    vehicle: VehicleObservation, config: VehicleConfig, obs: Observation, timezone: str
) -> list[SnapshotTrip]:
    """The trips the planner expects: the calendar when it is known, else the weekly schedule."""
    if vehicle.trips is not None:
        return [
            SnapshotTrip(
                depart=t.depart,
                arrive=t.arrive,
                energy_kwh=t.energy_kwh,
                target_soc_percent=t.target_soc_percent,
            )
            for t in vehicle.trips
        ]
    announced = vehicle.next_departure
    return scheduled_trips(
        config,
        obs.time,
        obs.time + obs.steps * obs.step,
        timezone,
        plugged_in=vehicle.plugged_in,
        next_departure=None if announced is None else Departure(announced.at, announced.target_soc_percent),
    )


def snapshot_from_observation(
    obs: Observation, config: SiteConfig, specs: tuple[VehicleSpec, ...]
) -> Snapshot:
    """The planner's input from what is known at ``obs.time`` (``specs`` in ``config.vehicles`` order)."""
    vehicles = []
    for vehicle, vehicle_config, spec in zip(obs.vehicles, config.vehicles, specs, strict=True):
        departure = (
            DepartureGoal(
                at=vehicle.next_departure.at, target_soc_percent=vehicle.next_departure.target_soc_percent
            )
            if vehicle.next_departure is not None
            else None
        )
        away = _away(vehicle, vehicle_config, obs, config.site.timezone)
        vehicles.append(
            VehicleSnapshot(
                id=vehicle.vehicle_id,
                soc_percent=_soc_estimate(vehicle, spec, obs),
                plugged_in=vehicle.plugged_in,
                departure=departure,
                away=away,
            )
        )
    return Snapshot(
        time=obs.time,
        step_minutes=round(obs.step / timedelta(minutes=1)),
        vehicles=vehicles,
        load_w=obs.load_w.tolist(),
        pv_w=obs.pv_w.tolist(),
        import_price_per_kwh=obs.import_price_per_kwh.tolist(),
        export_price_per_kwh=obs.export_price_per_kwh.tolist(),
    )


class ModelPredictiveControl:
    """Re-plan every ``replan_interval_minutes`` (at least once a step) and on plug-in; dispatch each step."""

    name = "mpc"

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.planner = Planner(config)
        self.horizon_steps = self.planner.steps
        site = config.site
        self.replan_steps = max(1, round(site.replan_interval_minutes / site.plan_step_minutes))
        self.dispatcher = Dispatcher(config)
        self.specs = tuple(VehicleSpec.from_config(v, config) for v in config.vehicles)
        self.chargers = tuple(v.home_charger for v in config.vehicles)
        self.plan: Plan | None = None
        self._plan_step = -1
        self._plugged: tuple[bool, ...] = ()
        # Setpoint each charger holds (what was last sent), by vehicle.
        self._held_w = [0.0 for _ in config.vehicles]
        # Where the time goes, for benchmarks (the planner's own split from Planner.last_timings).
        self.observe_s = 0.0
        self.snapshot_s = 0.0
        self.plan_s = 0.0
        self.dispatch_s = 0.0
        self.translate_s = 0.0
        self.resolve_s = 0.0
        self.solver_s = 0.0
        self.build_s = 0.0

    def _due(self, k: int, vehicles: tuple[VehicleObservation, ...]) -> bool:
        plugged = tuple(v.plugged_in for v in vehicles)
        changed = plugged != self._plugged
        self._plugged = plugged
        return (
            self.plan is None
            or changed
            or k - self._plan_step >= self.replan_steps
            or k - self._plan_step >= self.plan.steps
        )

    def decide(self, info: InformationModel) -> Decision:
        k = info.k
        t0 = time.perf_counter()
        vehicles = info.vehicles(self.horizon_steps)
        solve_ms = solver_ms = None
        fallback = False
        notes: tuple[str, ...] = ()
        if self._due(k, vehicles):
            obs = info.observe(self.horizon_steps, vehicles)
            t1 = time.perf_counter()
            snapshot = snapshot_from_observation(obs, self.config, self.specs)
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
        live = tuple(
            VehicleLive(
                vehicle_id=v.vehicle_id,
                plugged_in=v.plugged_in,
                charger_id=charger,
                soc_percent=v.soc_percent if v.plugged_in else None,
                measured_power_w=held if v.plugged_in else 0.0,
                departure_at=v.next_departure.at if v.next_departure is not None else None,
            )
            for v, charger, held in zip(vehicles, self.chargers, self._held_w, strict=True)
        )
        # The grid meter during this step: the home's net load plus what the cars draw.
        grid_w = info.live_site_w() + sum(v.measured_power_w or 0.0 for v in live)
        commands = self.dispatcher.dispatch(
            DispatchInputs(
                now=info.now,
                plan=self.plan,
                vehicles=live,
                grid_power_w=grid_w,
                import_limit_w=info.import_limit_w,
                export_limit_w=info.export_limit_w,
            )
        )
        by_vehicle = {c.vehicle_id: c for c in commands if c.vehicle_id is not None}
        for i, vehicle in enumerate(vehicles):
            command = by_vehicle.get(vehicle.vehicle_id)
            if not vehicle.plugged_in:
                self._held_w[i] = 0.0
            elif command is not None and command.send:
                self._held_w[i] = command.setpoint_w
        return tuple(self._held_w)


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
