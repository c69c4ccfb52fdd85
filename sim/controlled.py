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
then turns the plan into charger schedules from the site's dispatcher inputs (V2H load following,
grid limits, the reserve and permissions, pulses below the charger's minimum). Each charger holds
the last schedule sent to it (the deadband sends nothing new) and follows its later periods when
nothing new arrives, and nothing after its ``valid_until``; the plant runs the part of it that falls
in the current step.

``perfect`` solves once over the whole scenario with the actual load, PV, prices and trips
(``controller.optimizer.plan_foresight``) and replays that plan's step averages as the home charger
can run them (:class:`sim.baselines.StepDelivery`): the economic bound.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta

from controller.config import SiteConfig
from controller.dispatch import Dispatcher
from controller.dispatch.battery_command import BatteryCommand
from controller.dispatch.inputs import BatteryLive, DispatchInputs
from controller.domain import ChargerSchedule, Plan
from controller.optimizer import Planner, plan_foresight
from controller.site_events import Reaction
from controller.snapshot import DepartureGoal, HomeBatterySnapshot, Snapshot, VehicleSnapshot
from controller.snapshot import Trip as SnapshotTrip
from sim.baselines import StepDelivery
from sim.charger_model import Pieces
from sim.engine import Decision
from sim.home_battery import initial_battery_soc
from sim.information import InformationModel, Observation, VehicleObservation
from sim.plant import VehicleSpec
from sim.scenario import Scenario
from sim.site_feed import SiteFeed

__all__ = ["ModelPredictiveControl", "PerfectForesight", "average_w", "schedule_in_step"]


def schedule_in_step(schedule: ChargerSchedule | None, now: datetime, step: timedelta) -> Pieces | None:
    """The pieces of a held ``schedule`` that fall in the step from ``now``: the period in force at
    ``now``, the later ones starting inside the step, and 0 from ``valid_until``; None for none."""
    if schedule is None:
        return None
    end = now + step
    if schedule.valid_until <= now:
        return None
    phases = schedule.phases
    pieces: list[tuple[float, float, int]] = []
    for period in schedule.periods:
        at = schedule.start + period.start_offset
        if at >= end or at >= schedule.valid_until:
            break
        offset = max(0.0, (at - now).total_seconds())
        if pieces and pieces[-1][0] >= offset:
            pieces.pop()  # superseded before the step starts
        pieces.append((offset, period.setpoint_w, phases))
    if schedule.valid_until < end:
        pieces.append(((schedule.valid_until - now).total_seconds(), 0.0, phases))
    return tuple(pieces)


def average_w(pieces: Pieces | None, step_s: float) -> float:
    """The step average of what ``pieces`` ask (before the charger's limits)."""
    if not pieces:
        return 0.0
    ends = [p[0] for p in pieces[1:]] + [step_s]
    return sum(p[1] * (min(e, step_s) - p[0]) for p, e in zip(pieces, ends, strict=True)) / step_s


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


def battery_setpoints(
    config: SiteConfig, held: dict[str, BatteryCommand], now: datetime
) -> tuple[float | None, ...] | None:
    """Per home battery what it runs this step: the command it holds, None (its own mode) for an
    ``observe`` battery, ``auto``, no command, or one whose ``valid_until`` has passed."""
    if not config.home_batteries:
        return None
    out: list[float | None] = []
    for battery in config.home_batteries:
        command = held.get(battery.id)
        if command is None or command.mode == "auto" or command.valid_until <= now:
            out.append(None)
        else:
            out.append(0.0 if command.mode == "hold" else command.setpoint_w)
    return tuple(out)


def _until_limits(
    config: SiteConfig, setpoints: tuple[float | None, ...] | None, info: InformationModel
) -> tuple[float | None, ...] | None:
    """A setpoint held all step stops where the daemon's next tick (seconds later) would stop it:
    at the battery's floor or its max SoC. The simulator dispatches once a step; the daemon every
    ``dispatch_interval_s``, and stops a discharge at the floor within one tick."""
    if setpoints is None:
        return None
    hours = info.step.total_seconds() / 3600.0
    out: list[float | None] = []
    for battery, told, (_, _, soc) in zip(
        config.home_batteries, setpoints, info.live_batteries(), strict=True
    ):
        if told is None:
            out.append(None)
            continue
        capacity = battery.usable_capacity_kwh
        if told < 0:
            left_kwh = max(0.0, soc - battery.floor_percent) / 100.0 * capacity
            told = max(told, -left_kwh * battery.discharge_efficiency / hours * 1000.0)
        elif told > 0:
            room_kwh = max(0.0, battery.max_soc_percent - soc) / 100.0 * capacity
            told = min(told, room_kwh / battery.charge_efficiency / hours * 1000.0)
        out.append(told)
    return tuple(out)


def _with_batteries(snapshot: Snapshot, info: InformationModel) -> Snapshot:
    """The batteries as the meters show them, where the site's snapshot does not carry them yet."""
    live = info.live_batteries()
    if not live or snapshot.home_batteries:
        return snapshot
    batteries = [HomeBatterySnapshot(id=b, soc_percent=soc, power_w=power) for b, power, soc in live]
    return snapshot.model_copy(update={"home_batteries": batteries})


def _dispatch_with_batteries(inputs: DispatchInputs, info: InformationModel) -> DispatchInputs:
    live = info.live_batteries()
    if not live or inputs.batteries:
        return inputs
    return dataclasses.replace(inputs, batteries=tuple(BatteryLive(b, soc, power) for b, power, soc in live))


class ModelPredictiveControl:
    """Re-plan every ``replan_interval_minutes`` (at least once a step) and on plug-in; dispatch each step."""

    name = "mpc"

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.planner = Planner(config, explain=False)  # nobody reads the reasons here
        self.horizon_steps = self.planner.steps
        site = config.site
        self.replan_steps = max(1, round(site.replan_interval_minutes / site.plan_step_minutes))
        self.feed = SiteFeed(config, self.horizon_steps)
        self.dispatcher = Dispatcher(self.feed.config)
        self.specs = tuple(VehicleSpec.from_config(v, config) for v in config.vehicles)
        self.plan: Plan | None = None
        self._plan_step = -1
        # The schedule each charger holds (what was last sent), by vehicle.
        self._held: dict[str, ChargerSchedule | None] = {v.id: None for v in config.vehicles}
        # The command each controllable home battery holds (what was last sent), by battery.
        self._battery_held: dict[str, BatteryCommand] = {}
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
        reaction = self.feed.feed(info, vehicles, self._drawing(info.now))
        for charger_id in reaction.forget_chargers:
            self.dispatcher.forget(charger_id)
        solve_ms = solver_ms = None
        fallback = False
        notes: tuple[str, ...] = ()
        if self._due(k, reaction):
            obs = info.observe(self.horizon_steps, vehicles)
            t1 = time.perf_counter()
            snapshot = self.feed.site.planner_snapshot(info.now, obs.load_w, obs.pv_w)
            snapshot = _with_batteries(_with_calendar(snapshot, obs, self.specs), info)
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
        pieces = self._dispatch(info, vehicles)
        self.dispatch_s += time.perf_counter() - t4
        step_s = info.step.total_seconds()
        powers = tuple(average_w(p, step_s) for p in pieces)
        return Decision(
            powers,
            solve_ms=solve_ms,
            solver_ms=solver_ms,
            fallback=fallback,
            notes=notes,
            pieces=pieces,
            battery_w=_until_limits(
                self.config, battery_setpoints(self.config, self._battery_held, info.now), info
            ),
        )

    def _drawing(self, now: datetime) -> dict[str, float]:
        """What each charger's held schedule asks at ``now``, as its meter would show it."""
        out: dict[str, float] = {}
        for vehicle_id, schedule in self._held.items():
            pieces = schedule_in_step(schedule, now, timedelta(seconds=1))
            out[vehicle_id] = pieces[0][1] if pieces else 0.0
        return out

    def _dispatch(
        self, info: InformationModel, vehicles: tuple[VehicleObservation, ...]
    ) -> tuple[Pieces | None, ...]:
        inputs = _dispatch_with_batteries(self.feed.site.dispatch_inputs(info.now, self.plan), info)
        commands = self.dispatcher.dispatch(inputs)
        if self.config.home_batteries:
            for battery_command in self.dispatcher.dispatch_batteries(inputs):
                if battery_command.send:
                    self._battery_held[battery_command.battery_id] = battery_command
        by_vehicle = {c.vehicle_id: c for c in commands if c.vehicle_id is not None}
        for vehicle in vehicles:
            command = by_vehicle.get(vehicle.vehicle_id)
            if not vehicle.plugged_in:
                self._held[vehicle.vehicle_id] = None
            elif command is not None and command.send:
                self._held[vehicle.vehicle_id] = command.schedule
        return tuple(schedule_in_step(self._held[v.vehicle_id], info.now, info.step) for v in vehicles)


class PerfectForesight:
    """One solve over the whole scenario with the actuals; the plan is then replayed step by step."""

    name = "perfect"

    def __init__(self, scenario: Scenario, time_limit_s: float = 3600.0) -> None:
        self.scenario = scenario
        self.time_limit_s = time_limit_s
        self.plan: Plan | None = None
        self.vehicle_ids = tuple(v.id for v in scenario.config.vehicles)
        self.delivery = StepDelivery(scenario.config, int(scenario.series.step.total_seconds()))
        self._power: list[list[float]] = []
        self._pieces: list[list[Pieces | None]] = []

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
        batteries = [
            HomeBatterySnapshot(id=b.id, soc_percent=initial_battery_soc(b))
            for b in scenario.config.home_batteries
        ]
        return Snapshot(
            time=series.start,
            step_minutes=scenario.config.site.plan_step_minutes,
            vehicles=vehicles,
            home_batteries=batteries,
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
            self._power = [self._averages(self.plan, vid) for vid in self.vehicle_ids]
            self._pieces = [self.delivery.train(i, power) for i, power in enumerate(self._power)]
        plan = self.plan
        inside = k < self.scenario.steps
        powers = tuple(power[k] if inside else 0.0 for power in self._power)
        pieces = tuple(train[k] if inside else None for train in self._pieces)
        return Decision(
            powers,
            solve_ms=solve_ms,
            solver_ms=solver_ms,
            fallback=plan.fallback and k == 0,
            pieces=pieces,
            battery_w=self._battery_w(plan, k),
        )

    def _battery_w(self, plan: Plan, k: int) -> tuple[float | None, ...] | None:
        """The plan's setpoint of each controllable battery; None (its own rule) for an observe one."""
        if not self.scenario.config.home_batteries:
            return None
        out: list[float | None] = []
        for battery in self.scenario.config.home_batteries:
            planned = plan.batteries.get(battery.id)
            if planned is None or not planned.controlled or plan.fallback:
                out.append(None)
            else:
                out.append(planned.power_w[k] if k < len(planned.power_w) else 0.0)
        return tuple(out)

    def _averages(self, plan: Plan, vehicle_id: str) -> list[float]:
        """The plan's step averages for one car over the scenario (0 where the plan has none)."""
        steps = self.scenario.steps
        if vehicle_id not in plan.vehicles:
            return [0.0] * steps
        power = list(plan.vehicles[vehicle_id].power_w[:steps])
        return power + [0.0] * (steps - len(power))
