"""The ChargerSchedule sent with a setpoint: the live value now, then what the plan does if we go silent."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from controller.config import ChargerConfig, SiteConfig
from controller.dispatch.car_setpoint import CarSetpoint
from controller.dispatch.duty_cycle import pulse_train
from controller.dispatch.inputs import DispatchInputs
from controller.domain import ChargerSchedule, Plan, SchedulePeriod, VehicleMode, align_to_step

__all__ = ["CarSchedule", "ScheduleBuilder", "discharge_ends_at", "renew_margin"]


def renew_margin(config: SiteConfig) -> timedelta:
    """How long before a schedule ends its discharge it is renewed: two dispatch ticks and a call."""
    site, ocpp = config.site, config.ocpp
    return timedelta(seconds=2 * site.dispatch_interval_s + ocpp.call_timeout_s)


class CarSchedule(NamedTuple):
    """A car's schedule, and when its live discharge ends unless renewed (attended discharges only:
    a pulse ends by design and needs no renewal)."""

    schedule: ChargerSchedule
    discharge_ends_at: datetime | None


@dataclass(frozen=True, slots=True)
class ScheduleBuilder:
    """Builds every schedule bounded by ``validity`` from its start (safety invariant 6)."""

    config: SiteConfig
    validity: timedelta

    def for_car(
        self, inputs: DispatchInputs, now: datetime, car: CarSetpoint, setpoint_w: float
    ) -> CarSchedule:
        """The live setpoint now, then the plan's next steps until the validity ends.

        Later periods run only if this controller goes silent. They never discharge unless the car
        may export (V2H needs live load following) and never outlive the validity window; a live
        discharge that needs following ends at a step boundary at the latest. Every step's average
        below the charger's minimum is delivered as a pulse at the minimum from the step's start
        (``duty_cycle``), the rounding carried from step to step.
        """
        # A car that may not discharge now gets no discharge bound either: what is sent says "charge only".
        max_discharge_w = car.max_discharge_w if car.may_discharge else 0.0
        auto = car.live.mode is VehicleMode.AUTO and not inputs.grid_lost
        unattended_discharge = car.vehicle.permissions.v2g and car.may_discharge and auto
        # A live discharge that needs following holds until a boundary the renewal can reach first;
        # ending it at the next plan step would drop it there before any renewal could land.
        attended = setpoint_w < 0 and not unattended_discharge
        attended_end = self._attended_discharge_end(now) - now if attended else timedelta(0)
        steps = [(align_to_step(now, self._step), setpoint_w)]
        if auto:
            for offset, power_w in self._plan_steps(inputs.plan, car.live.vehicle_id, now):
                if power_w < 0 and not unattended_discharge:
                    power_w = setpoint_w if offset < attended_end else 0.0
                steps.append((now + offset, max(-max_discharge_w, min(car.max_charge_w, power_w))))
        else:
            steps += [(start, setpoint_w) for start in self._step_starts(now)]
        periods = self._delivered(now, car, steps, max_discharge_w)
        if attended and periods[-1].setpoint_w < 0 and attended_end < self.validity:
            # A discharge that needs live load following (an outage's V2H, a plan without later
            # steps) ends by itself at a step boundary if this controller goes silent; while it runs,
            # the schedule is renewed before then (``SendPolicy``).
            periods = [p for p in periods if p.start_offset < attended_end]
            periods.append(SchedulePeriod(attended_end, 0.0, car.max_charge_w, 0.0))
        schedule = self._bounded(now, car.charger, tuple(periods), car.phases)
        return CarSchedule(schedule, discharge_ends_at(schedule) if attended else None)

    def _delivered(
        self,
        now: datetime,
        car: CarSetpoint,
        steps: list[tuple[datetime, float]],
        max_discharge_w: float,
    ) -> list[SchedulePeriod]:
        """Step averages -> schedule periods as the charger can run them (pulses below its minimum)."""
        charger = car.charger
        step_s = int(self._step.total_seconds())
        pulses = pulse_train(
            [power_w for _, power_w in steps],
            charger.min_power_w(car.phases),
            step_s,
            discharge_min_w=charger.min_power_w(car.phases, discharge=True),
        )
        periods: list[SchedulePeriod] = []

        def add(at: datetime, power_w: float) -> None:
            offset = max(timedelta(0), at - now)
            if periods and periods[-1].setpoint_w == power_w:
                return
            if periods and periods[-1].start_offset == offset:
                periods.pop()
                if periods and periods[-1].setpoint_w == power_w:
                    return
            periods.append(SchedulePeriod(offset, power_w, car.max_charge_w, max_discharge_w))

        for (start, _), pulse in zip(steps, pulses, strict=True):
            add(start, pulse.power_w)
            if not pulse.continuous:
                add(start + timedelta(seconds=pulse.on_s), 0.0)
        return periods

    def _step_starts(self, now: datetime) -> Iterator[datetime]:
        """The starts of the plan steps after the current one, inside the validity window."""
        start = align_to_step(now, self._step) + self._step
        while start - now < self.validity:
            yield start
            start += self._step

    @property
    def _step(self) -> timedelta:
        return timedelta(minutes=self.config.site.plan_step_minutes)

    def idle(self, now: datetime, charger: ChargerConfig) -> ChargerSchedule:
        """Nothing to do: setpoint 0, no discharge, bounded like every schedule."""
        period = SchedulePeriod(timedelta(0), 0.0, 1000.0 * charger.max_charge_kw, 0.0)
        return self._bounded(now, charger, (period,))

    def _bounded(
        self,
        now: datetime,
        charger: ChargerConfig,
        periods: tuple[SchedulePeriod, ...],
        phases: int | None = None,
    ) -> ChargerSchedule:
        return ChargerSchedule(
            charger_id=charger.id,
            start=now,
            valid_until=now + self.validity,
            periods=periods,
            phases=charger.phases if phases is None else phases,
            evse_id=charger.evse_id,
        )

    def _plan_steps(
        self, plan: Plan | None, vehicle_id: str, now: datetime
    ) -> Iterator[tuple[timedelta, float]]:
        """The plan's steps after the current one for this car: (offset from now, power in W),
        while they start inside the validity window."""
        vehicle_plan = plan.vehicles.get(vehicle_id) if plan is not None else None
        index = plan.step_index(now) if plan is not None else None
        if plan is None or vehicle_plan is None or index is None:
            return
        for later in range(index + 1, plan.steps):
            offset = plan.start + later * plan.step - now
            if offset >= self.validity:
                break
            yield offset, vehicle_plan.power_w[later]

    def _attended_discharge_end(self, now: datetime) -> datetime:
        """The first plan-step boundary at least the renew margin ahead: late enough that the
        renewal can land before it, so a running controller never lets the discharge drop."""
        earliest = now + renew_margin(self.config)
        end = align_to_step(earliest, self._step)
        return end if end >= earliest else end + self._step


def discharge_ends_at(schedule: ChargerSchedule) -> datetime | None:
    """When the schedule's first (live) discharge ends or lowers by itself; None when it does not
    discharge now or holds the discharge to the end."""
    live_w = schedule.periods[0].setpoint_w
    if live_w >= 0:
        return None
    later = next((p for p in schedule.periods[1:] if p.setpoint_w > live_w), None)
    return None if later is None else schedule.start + later.start_offset
