"""The dispatcher: plan step + live readings -> one command per charger, in named steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controller.config import ChargerConfig, SiteConfig
from controller.dispatch.battery_command import BatteryCommand
from controller.dispatch.battery_dispatch import (
    BatterySent,
    battery_command,
    cars_power_w,
    limit_observe_feed,
    site_now,
)
from controller.dispatch.car_setpoint import CarSetpoint, car_setpoint
from controller.dispatch.grid_limits import clamp_to_grid_limits
from controller.dispatch.inputs import DispatchInputs
from controller.dispatch.load_following import follow_home_load
from controller.dispatch.phase_choice import PhaseState, choose_phases
from controller.dispatch.phase_limits import clamp_to_phase_limits
from controller.dispatch.schedule import ScheduleBuilder, renew_margin
from controller.dispatch.send_policy import SendPolicy, SentCommand
from controller.dispatch.snapping import deliverable_w
from controller.dispatch.surplus_following import follow_pv_surplus
from controller.domain import ChargerSchedule, ensure_utc

__all__ = ["ChargerCommand", "Dispatcher"]


@dataclass(frozen=True, slots=True)
class ChargerCommand:
    """What to send to one charger now. ``send`` is False when the deadband says nothing changed."""

    charger_id: str
    vehicle_id: str | None
    setpoint_w: float
    schedule: ChargerSchedule
    send: bool
    reasons: tuple[str, ...] = ()
    discharge_ends_at: datetime | None = None
    """Where the schedule ends its live discharge unless renewed (an attended discharge)."""


@dataclass(slots=True)
class Dispatcher:
    """Turns plan + readings into charger commands; remembers what was sent per charger."""

    config: SiteConfig
    deadband_w: float = 300.0
    min_resend_interval: timedelta = timedelta(seconds=15)
    schedule_validity: timedelta | None = None
    _sent: dict[str, SentCommand] = field(default_factory=dict)
    _phases: dict[str, PhaseState] = field(default_factory=dict)
    _battery_sent: dict[str, BatterySent] = field(default_factory=dict)
    _cars_w: tuple[dict[str, float], dict[str, float]] = field(default_factory=lambda: ({}, {}))
    """The cars' setpoints of the last :meth:`dispatch` and their power then (for the batteries)."""

    def __post_init__(self) -> None:
        if self.schedule_validity is None:
            self.schedule_validity = timedelta(hours=self.config.ocpp.profile_validity_hours)

    def dispatch(self, inputs: DispatchInputs) -> list[ChargerCommand]:
        now = ensure_utc(inputs.now)
        by_charger: dict[str, CarSetpoint] = {}
        for live in inputs.vehicles:
            car = car_setpoint(self.config, inputs, now, live)
            if car is not None:
                by_charger[car.charger.id] = car
        cars = by_charger.values()
        # Order matters: following sets the setpoints, the grid clamps have the last word.
        follow_home_load(inputs, cars, self._sent)
        follow_pv_surplus(inputs, cars, self._sent)
        limit_observe_feed(self.config, inputs, cars, self._sent)
        choose_phases(cars, now, self._phases)
        clamp_to_grid_limits(inputs, cars, self._sent)
        clamp_to_phase_limits(self.config, inputs, cars, self._sent)
        self._cars_w = cars_power_w(cars, self._sent)
        commands = self._commands(inputs, now, by_charger)
        created = inputs.plan.created_at if inputs.plan is not None else None
        for command in commands:
            if command.send:
                self._sent[command.charger_id] = SentCommand(
                    command.setpoint_w, now, created, command.discharge_ends_at
                )
        return commands

    def dispatch_batteries(self, inputs: DispatchInputs) -> list[BatteryCommand]:
        """One command per controllable home battery (none for ``observe`` ones); call it after
        :meth:`dispatch` with the same inputs: the cars' new setpoints count in the grid caps."""
        inputs_now = ensure_utc(inputs.now)
        site = site_now(inputs, *self._cars_w)
        commands: list[BatteryCommand] = []
        for battery in self.config.home_batteries:
            if battery.control.mode == "observe":
                continue
            command = battery_command(
                self.config, battery, inputs, site, self._battery_sent.get(battery.id), self.deadband_w
            )
            if command.send:
                self._battery_sent[battery.id] = BatterySent(
                    command.setpoint_w, command.mode, inputs_now, command.valid_until
                )
            commands.append(command)
        return commands

    def forget(self, charger_id: str) -> None:
        """A charger reconnected or lost its profile: the next command is sent regardless."""
        self._sent.pop(charger_id, None)

    def idle_schedule(self, now: datetime, charger: ChargerConfig) -> ChargerSchedule:
        """Nothing to do: setpoint 0, no discharge, bounded like every schedule."""
        return self._schedules().idle(now, charger)

    def _commands(
        self, inputs: DispatchInputs, now: datetime, by_charger: dict[str, CarSetpoint]
    ) -> list[ChargerCommand]:
        """One command per configured charger with a car, and a stop where a car has gone."""
        schedules = self._schedules()
        policy = SendPolicy(self.deadband_w, self.min_resend_interval, renew_margin(self.config))
        commands: list[ChargerCommand] = []
        for charger in self.config.chargers:
            car = by_charger.get(charger.id)
            if car is not None:
                setpoint_w = deliverable_w(inputs, car)
                built = schedules.for_car(inputs, now, car, setpoint_w)
                send = policy.should_send(
                    self._sent.get(charger.id),
                    setpoint_w,
                    now,
                    inputs.plan,
                    car.urgent,
                    built.discharge_ends_at,
                )
                commands.append(
                    ChargerCommand(
                        charger.id,
                        car.live.vehicle_id,
                        setpoint_w,
                        built.schedule,
                        send,
                        tuple(car.reasons),
                        built.discharge_ends_at,
                    )
                )
            elif charger.id in self._sent and self._sent[charger.id].setpoint_w != 0.0:
                # Nothing plugged (or an unknown car) where a setpoint was active: stop it.
                idle = schedules.idle(now, charger)
                commands.append(ChargerCommand(charger.id, None, 0.0, idle, True, ("no vehicle",)))
        return commands

    def _schedules(self) -> ScheduleBuilder:
        assert self.schedule_validity is not None
        return ScheduleBuilder(self.config, self.schedule_validity)
