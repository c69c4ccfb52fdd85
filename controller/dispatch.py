"""Dispatch: the current plan step plus live readings -> a setpoint and a schedule per charger.

The plan is made every few minutes on forecasts; the dispatcher runs every few seconds on
measurements. It keeps the plan's intent while enforcing, at once, what must never wait for the
next plan: grid limits (fuse), the reserve floor, V2G permissions and safe mode.

Pure: no I/O, no asyncio. State kept here is only what was last sent (deadband, rate limit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controller.config import ChargerConfig, SiteConfig, VehicleConfig, power_limits_kw
from controller.domain import ChargerSchedule, Plan, SchedulePeriod, VehicleMode, align_to_step, ensure_utc

__all__ = [
    "ChargerCommand",
    "DispatchInputs",
    "Dispatcher",
    "VehicleLive",
    "VehicleMode",
]

# A plan step importing less than this is "no import": its charging comes from PV.
_SURPLUS_IMPORT_TOLERANCE_W = 50.0
# Discharge stops this close above the reserve, so SoC noise cannot push the car below it.
_RESERVE_MARGIN_PERCENT = 0.5
# This close to a departure, measured PV surplus or home load that differ from the forecast no longer
# move the car's power away from the target: less charging or more discharging than planned would
# leave no later plan the time to make it up.
DEPARTURE_GUARD = timedelta(hours=1)
# A planned power this small is solver noise, not an intent to charge or discharge.
_PLANNED_NOISE_W = 50.0


@dataclass(frozen=True, slots=True)
class VehicleLive:
    """Live facts about one vehicle at dispatch time (None = unknown)."""

    vehicle_id: str
    plugged_in: bool
    charger_id: str | None
    soc_percent: float | None
    measured_power_w: float | None = None
    mode: VehicleMode = VehicleMode.AUTO
    departure_at: datetime | None = None
    """The next departure the driver expects (for the last-hour guard on PV-surplus following)."""
    ev_max_charge_w: float | None = None
    """The EV's own charge power cap for this session (NotifyEVChargingNeeds), None = none reported."""
    ev_max_discharge_w: float | None = None
    """The EV's own discharge power cap (a magnitude), None = none reported."""
    ev_min_soc_percent: float | None = None
    """The EV's own V2X floor: no discharge at or below it (nor below the configured reserve)."""
    charger_can_discharge: bool = True
    """False when the charger's OCPP connection cannot carry a discharge (1.6/2.0.1 without
    ``negative_limit_means_discharge``): the car is charge-only there, whatever the config says."""


@dataclass(frozen=True, slots=True)
class DispatchInputs:
    now: datetime
    plan: Plan | None
    vehicles: tuple[VehicleLive, ...]
    grid_power_w: float | None
    """Measured grid power (+ import), None when the grid meter is missing or stale."""
    import_limit_w: float
    export_limit_w: float
    safe_mode: bool = False
    grid_lost: bool = False
    """The grid meter reports an outage: the car may cover the home (V2H) down to the reserve."""
    home_power_w: float | None = None
    """Measured home load without the cars (a ``home`` meter), None when there is none or it is stale."""
    pv_power_w: float | None = None
    """Measured PV production, None when there is none or it is stale."""


@dataclass(frozen=True, slots=True)
class ChargerCommand:
    """What to send to one charger now. ``send`` is False when the deadband says nothing changed."""

    charger_id: str
    vehicle_id: str | None
    setpoint_w: float
    schedule: ChargerSchedule
    send: bool
    reasons: tuple[str, ...] = ()


@dataclass(slots=True)
class _Sent:
    setpoint_w: float
    at: datetime
    plan_created_at: datetime | None
    discharge_ends_at: datetime | None = None
    """Where the sent schedule itself ends (or lowers) its live discharge: renewed before then."""


@dataclass(slots=True)
class _Want:
    """One plugged-in car's setpoint while the dispatcher works on it."""

    live: VehicleLive
    vehicle: VehicleConfig
    charger: ChargerConfig
    setpoint_w: float
    max_charge_w: float
    max_discharge_w: float
    may_discharge: bool = False
    follow_load: bool = False
    follow_surplus: bool = False
    departure_soon: bool = False
    urgent: bool = False
    ev_capped: bool = False
    """The EV's own power limit is below the config's."""
    reasons: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Dispatcher:
    """Turns plan + readings into charger commands; remembers what was sent per charger."""

    config: SiteConfig
    deadband_w: float = 300.0
    min_resend_interval: timedelta = timedelta(seconds=15)
    schedule_validity: timedelta | None = None
    _sent: dict[str, _Sent] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.schedule_validity is None:
            self.schedule_validity = timedelta(hours=self.config.ocpp.profile_validity_hours)

    # ------------------------------------------------------------------ public

    def dispatch(self, inputs: DispatchInputs) -> list[ChargerCommand]:
        now = ensure_utc(inputs.now)
        wants: dict[str, _Want] = {}
        for live in inputs.vehicles:
            want = self._want(inputs, now, live)
            if want is not None:
                wants[want.charger.id] = want
        self._follow_home_load(inputs, wants)
        self._follow_pv_surplus(inputs, wants)
        self._clamp_to_grid_limits(inputs, wants)

        commands: list[ChargerCommand] = []
        for charger in self.config.chargers:
            want = wants.get(charger.id)
            if want is not None:
                setpoint = self._snap_to_charger(want.setpoint_w, charger, want.reasons)
                schedule = self._schedule(inputs, now, want, setpoint)
                send = self._should_send(
                    charger.id, setpoint, now, inputs.plan, want.urgent, _discharge_ends_at(schedule)
                )
                commands.append(
                    ChargerCommand(
                        charger.id, want.live.vehicle_id, setpoint, schedule, send, tuple(want.reasons)
                    )
                )
            elif charger.id in self._sent and self._sent[charger.id].setpoint_w != 0.0:
                # Nothing plugged (or an unknown car) where a setpoint was active: stop it.
                commands.append(
                    ChargerCommand(
                        charger.id, None, 0.0, self.idle_schedule(now, charger), True, ("no vehicle",)
                    )
                )
        for command in commands:
            if command.send:
                created = inputs.plan.created_at if inputs.plan else None
                self._sent[command.charger_id] = _Sent(
                    command.setpoint_w, now, created, _discharge_ends_at(command.schedule)
                )
        return commands

    def forget(self, charger_id: str) -> None:
        """A charger reconnected or lost its profile: the next command is sent regardless."""
        self._sent.pop(charger_id, None)

    # ---------------------------------------------------------------- per car

    def _want(self, inputs: DispatchInputs, now: datetime, live: VehicleLive) -> _Want | None:
        vehicle = self.config.vehicle(live.vehicle_id)
        charger_id = live.charger_id or (vehicle.home_charger if vehicle else None)
        charger = self.config.charger(charger_id) if charger_id else None
        if vehicle is None or charger is None or not live.plugged_in:
            return None
        max_charge_kw, max_discharge_kw = power_limits_kw(vehicle, charger)
        want = _Want(live, vehicle, charger, 0.0, 1000.0 * max_charge_kw, 1000.0 * max_discharge_kw)
        if not live.charger_can_discharge and want.max_discharge_w > 0:
            # The profile sent there says limit 0: a discharge counted here would be a phantom.
            want.max_discharge_w = 0.0
            want.reasons.append("charger's OCPP version cannot discharge: charge only")
        self._apply_ev_caps(live, want)
        if live.mode is VehicleMode.CHARGE_NOW:
            planned = want.max_charge_w
            want.reasons.append("charge now")
        else:
            planned = self._planned_power(inputs.plan, now, live.vehicle_id, want.reasons)
        at_max = live.soc_percent is not None and live.soc_percent >= vehicle.max_soc_percent
        if planned > 0 and at_max and (live.mode is not VehicleMode.CHARGE_NOW or live.soc_percent == 100):
            planned = 0.0
            want.reasons.append("at max SoC")
        may_discharge = want.may_discharge = self._discharge_allowed(inputs, live, vehicle, want)
        if inputs.grid_lost:
            # Outage: nothing to charge from; a V2H car keeps the home up down to its reserve.
            planned = 0.0
            want.follow_load = may_discharge and vehicle.permissions.v2h
            want.reasons.append("grid outage: covering the home" if want.follow_load else "grid outage: idle")
        elif planned < 0:
            if not may_discharge:
                planned = 0.0
            else:
                index = inputs.plan.step_index(now) if inputs.plan else None
                exporting = (
                    inputs.plan is not None and index is not None and inputs.plan.grid_export_w[index] > 0
                )
                # Discharge without intended export follows the measured load: never export by accident.
                want.follow_load = not (vehicle.permissions.v2g and exporting)
        want.setpoint_w = max(-want.max_discharge_w, min(want.max_charge_w, planned))
        if want.ev_capped and want.setpoint_w != planned:
            want.urgent = True  # the EV's own limit: a lower setpoint goes out at once
        want.follow_surplus = (
            planned >= 0
            and not inputs.grid_lost
            and live.mode is VehicleMode.AUTO
            and not at_max
            and self._plan_charges_from_surplus(inputs.plan, now, planned)
        )
        want.departure_soon = (
            live.departure_at is not None and now <= live.departure_at <= now + DEPARTURE_GUARD
        )
        return want

    @staticmethod
    def _apply_ev_caps(live: VehicleLive, want: _Want) -> None:
        """The EV's own power caps lower the config's (never raise them); every later clamp uses them."""
        if live.ev_max_charge_w is not None and live.ev_max_charge_w < want.max_charge_w:
            want.max_charge_w = max(0.0, live.ev_max_charge_w)
            want.ev_capped = True
            want.reasons.append(f"EV charge limit {want.max_charge_w:.0f} W")
        if live.ev_max_discharge_w is not None and live.ev_max_discharge_w < want.max_discharge_w:
            want.max_discharge_w = max(0.0, live.ev_max_discharge_w)
            want.ev_capped = True
            want.reasons.append(f"EV discharge limit {want.max_discharge_w:.0f} W")

    @staticmethod
    def _plan_charges_from_surplus(plan: Plan | None, now: datetime, planned_w: float) -> bool:
        """The plan imports nothing now and charges (or exports) from PV: the surplus is what counts."""
        index = plan.step_index(now) if plan is not None else None
        if plan is None or index is None or plan.grid_import_w[index] > _SURPLUS_IMPORT_TOLERANCE_W:
            return False
        return planned_w > 0 or plan.grid_export_w[index] > 0

    @staticmethod
    def _discharge_allowed(
        inputs: DispatchInputs, live: VehicleLive, vehicle: VehicleConfig, want: _Want
    ) -> bool:
        if want.max_discharge_w <= 0:
            return False  # no V2H permission or a charge-only charger
        blocked = None
        if live.mode is not VehicleMode.AUTO:
            blocked = f"mode {live.mode.value}: no discharge"
        elif inputs.safe_mode and not inputs.grid_lost:
            blocked = "safe mode: no discharge"
        elif live.soc_percent is None:
            blocked = "SoC unknown: no discharge"
        elif live.soc_percent <= vehicle.reserve_percent + _RESERVE_MARGIN_PERCENT:
            blocked = "at reserve: no discharge"
        elif live.ev_min_soc_percent is not None and live.soc_percent <= live.ev_min_soc_percent:
            blocked = "at the EV's V2X floor: no discharge"
        if blocked is not None:
            want.reasons.append(blocked)
            want.urgent = True
            return False
        return True

    @staticmethod
    def _planned_power(plan: Plan | None, now: datetime, vehicle_id: str, reasons: list[str]) -> float:
        if plan is None:
            reasons.append("no plan yet: idle")
            return 0.0
        index = plan.step_index(now)
        vehicle_plan = plan.vehicles.get(vehicle_id)
        if index is None or vehicle_plan is None:
            reasons.append("plan does not cover now: idle")
            return 0.0
        if vehicle_plan.reason:
            reasons.append(vehicle_plan.reason)
        planned_w = vehicle_plan.power_w[index]
        return 0.0 if abs(planned_w) < _PLANNED_NOISE_W else planned_w

    # -------------------------------------------------- site-level following

    def _base_w(
        self, inputs: DispatchInputs, wants: dict[str, _Want], *, unknown_as_sent: bool = False
    ) -> float | None:
        """The site without the cars: measured grid power minus what the cars draw now.

        A car whose power is unknown counts as 0 W, or with ``unknown_as_sent`` as the setpoint last
        sent to it (what it was told to draw: a charging car does not vanish from the fuse check
        because its charger samples slowly).

        In an outage the grid meter reads nothing useful (0 W, or silent): the home meter minus PV
        is the load the cars must carry, when there is one.
        """
        if inputs.grid_lost and inputs.home_power_w is not None:
            return inputs.home_power_w - (inputs.pv_power_w or 0.0)
        if inputs.grid_power_w is None:
            return None
        return inputs.grid_power_w - sum(self._car_power_w(w, unknown_as_sent) for w in wants.values())

    def _car_power_w(self, want: _Want, unknown_as_sent: bool) -> float:
        if want.live.measured_power_w is not None:
            return want.live.measured_power_w
        last = self._sent.get(want.charger.id)
        return last.setpoint_w if unknown_as_sent and last is not None else 0.0

    def _follow_home_load(self, inputs: DispatchInputs, wants: dict[str, _Want]) -> None:
        """Load-following cars share the home's net load, pro rata to their discharge power."""
        followers = [w for w in wants.values() if w.follow_load]
        if not followers:
            return
        base_w = self._base_w(inputs, wants)
        # Another car's unknown power makes the home load unknown: counted as 0 W, a charging car
        # would be covered as home load and exported. A lone follower's own unknown power is not
        # (just plugged in, or discharging: counting 0 W discharges less, never more).
        unknown = [
            w.live.vehicle_id
            for w in wants.values()
            if w.live.measured_power_w is None and (not w.follow_load or len(followers) > 1)
        ]
        if base_w is None or unknown:
            reason = (
                "grid meter silent: no discharge"
                if base_w is None
                else f"power of {', '.join(unknown)} unknown: no discharge"
            )
            for want in followers:
                want.setpoint_w = 0.0
                want.urgent = True
                want.reasons.append(reason)
            return
        fixed_w = sum(w.setpoint_w for w in wants.values() if not w.follow_load)
        net_home_w = max(0.0, base_w + fixed_w)
        capacity_w = sum(w.max_discharge_w for w in followers)
        for want in followers:
            share = want.max_discharge_w / capacity_w if capacity_w > 0 else 0.0
            planned_w = want.setpoint_w
            want.setpoint_w = -min(want.max_discharge_w, net_home_w * share)
            want.reasons.append(f"following home load {net_home_w:.0f} W")
            if want.departure_soon and want.setpoint_w < planned_w and not inputs.grid_lost:
                want.setpoint_w = planned_w
                want.reasons.append("departure within the hour: no more discharge than planned")

    def _follow_pv_surplus(self, inputs: DispatchInputs, wants: dict[str, _Want]) -> None:
        """Cars the plan charges from PV take the measured surplus, not the forecast one.

        The plan's export at this step stays as planned; a smaller surplus than forecast lowers the
        charging instead of importing for it, a larger one goes into the cars instead of the grid.
        """
        followers = [w for w in wants.values() if w.follow_surplus]
        base_w = self._base_w(inputs, wants)
        plan = inputs.plan
        index = plan.step_index(inputs.now) if plan is not None else None
        if not followers or base_w is None or plan is None or index is None:
            return
        fixed_w = sum(w.setpoint_w for w in wants.values() if not w.follow_surplus)
        surplus_w = -(base_w + fixed_w) - plan.grid_export_w[index]
        # More than the planned charging only where storing a kWh beats exporting it.
        caps = [
            w.max_charge_w
            if self._storing_beats_export(
                w.vehicle, plan.import_price_per_kwh[index], plan.export_price_per_kwh[index]
            )
            else w.setpoint_w
            for w in followers
        ]
        capacity_w = sum(caps)
        total_w = min(max(0.0, surplus_w), capacity_w)
        for want, cap in zip(followers, caps, strict=True):
            planned_w = want.setpoint_w
            want.setpoint_w = total_w * cap / capacity_w if capacity_w > 0 else 0.0
            want.reasons.append(f"following PV surplus {max(0.0, surplus_w):.0f} W")
            if want.departure_soon and want.setpoint_w < planned_w:
                want.setpoint_w = planned_w
                want.reasons.append("departure within the hour: keeping the planned charge")

    @staticmethod
    def _storing_beats_export(vehicle: VehicleConfig, import_price: float, export_price: float) -> bool:
        """A kWh stored now saves roughly a kWh imported later, less round-trip losses and wear."""
        stored_value = import_price * vehicle.charge_efficiency * vehicle.discharge_efficiency
        return stored_value - vehicle.degradation_cost_per_kwh > export_price

    def _clamp_to_grid_limits(self, inputs: DispatchInputs, wants: dict[str, _Want]) -> None:
        """Fuse and caps: applied at once, not at the next plan.

        Over the import cap: reduce charging. Over the export cap: reduce discharge, then absorb.
        """
        base_w = self._base_w(inputs, wants, unknown_as_sent=True)
        if base_w is None or inputs.grid_lost:
            return
        predicted_w = base_w + sum(w.setpoint_w for w in wants.values())
        if predicted_w > inputs.import_limit_w:
            excess = predicted_w - inputs.import_limit_w
            for want in sorted(wants.values(), key=lambda w: -w.setpoint_w):
                if excess <= 0 or want.setpoint_w <= 0:
                    continue
                cut = min(want.setpoint_w, excess)
                excess -= cut
                want.setpoint_w -= cut
                want.urgent = True
                want.reasons.append("import limit: charging reduced")
        elif predicted_w < -inputs.export_limit_w:
            excess = -inputs.export_limit_w - predicted_w
            for want in sorted(wants.values(), key=lambda w: w.setpoint_w):
                if excess <= 0:
                    break
                full = (
                    want.live.soc_percent is not None
                    and want.live.soc_percent >= want.vehicle.max_soc_percent
                )
                ceiling = 0.0 if full else want.max_charge_w
                raise_by = min(max(0.0, ceiling - want.setpoint_w), excess)
                if raise_by > 0:
                    excess -= raise_by
                    want.setpoint_w += raise_by
                    want.urgent = True
                    want.reasons.append("export limit: discharge reduced")

    # ------------------------------------------------------------ to charger

    @staticmethod
    def _snap_to_charger(setpoint_w: float, charger: ChargerConfig, reasons: list[str]) -> float:
        """Chargers cannot go below their minimum current: smaller setpoints round to zero.

        Rounding towards zero never breaks a limit, a permission or the reserve.
        """
        min_power_w = charger.min_current_a * charger.phases * charger.voltage_v
        if 0 < abs(setpoint_w) < min_power_w:
            reasons.append(f"below charger minimum {min_power_w:.0f} W: idle")
            return 0.0
        return round(setpoint_w, 1)

    def _schedule(
        self, inputs: DispatchInputs, now: datetime, want: _Want, setpoint_w: float
    ) -> ChargerSchedule:
        """The live setpoint now, then the plan's next steps until the validity ends.

        Later periods run only if this controller goes silent. They never discharge unless the car
        may export (V2H needs live load following) and never outlive the validity window; a live
        discharge that needs following ends at a step boundary at the latest.
        """
        assert self.schedule_validity is not None
        charger = want.charger
        # A car that may not discharge now gets no discharge bound either: what is sent says "charge only".
        max_discharge_w = want.max_discharge_w if want.may_discharge else 0.0
        periods = [SchedulePeriod(timedelta(0), setpoint_w, want.max_charge_w, max_discharge_w)]
        plan = inputs.plan
        vehicle_plan = plan.vehicles.get(want.live.vehicle_id) if plan else None
        index = plan.step_index(now) if plan else None
        auto = want.live.mode is VehicleMode.AUTO and not inputs.grid_lost
        unattended_discharge = want.vehicle.permissions.v2g and want.may_discharge and auto
        # A live discharge that needs following holds until a boundary the renewal can reach first;
        # ending it at the next plan step would drop it there before any renewal could land.
        attended_end = (
            self._attended_discharge_end(now) - now
            if setpoint_w < 0 and not unattended_discharge
            else timedelta(0)
        )
        if plan is not None and vehicle_plan is not None and index is not None and auto:
            for later in range(index + 1, plan.steps):
                offset = plan.start + later * plan.step - now
                if offset >= self.schedule_validity:
                    break
                power = vehicle_plan.power_w[later]
                if power < 0 and not unattended_discharge:
                    power = setpoint_w if offset < attended_end else 0.0
                power = max(-max_discharge_w, min(want.max_charge_w, power))
                power = self._snap_to_charger(power, charger, [])
                if power != periods[-1].setpoint_w:
                    periods.append(SchedulePeriod(offset, power, want.max_charge_w, max_discharge_w))
        if (
            setpoint_w < 0
            and not unattended_discharge
            and len(periods) == 1
            and attended_end < self.schedule_validity
        ):
            # A discharge that needs live load following (an outage's V2H, a plan without later
            # steps) ends by itself at a step boundary if this controller goes silent; while it runs,
            # the schedule is renewed before then (``_should_send``).
            periods.append(SchedulePeriod(attended_end, 0.0, want.max_charge_w, 0.0))
        return ChargerSchedule(
            charger_id=charger.id,
            start=now,
            valid_until=now + self.schedule_validity,
            periods=tuple(periods),
            phases=charger.phases,
            evse_id=charger.evse_id,
        )

    def _renew_margin(self) -> timedelta:
        """How long before a schedule ends its discharge it is renewed: two dispatch ticks and a call."""
        site, ocpp = self.config.site, self.config.ocpp
        return timedelta(seconds=2 * site.dispatch_interval_s + ocpp.call_timeout_s)

    def _attended_discharge_end(self, now: datetime) -> datetime:
        """The first plan-step boundary at least the renew margin ahead: late enough that the
        renewal can land before it, so a running controller never lets the discharge drop."""
        step = timedelta(minutes=self.config.site.plan_step_minutes)
        earliest = now + self._renew_margin()
        end = align_to_step(earliest, step)
        return end if end >= earliest else end + step

    def idle_schedule(self, now: datetime, charger: ChargerConfig) -> ChargerSchedule:
        """Nothing to do: setpoint 0, no discharge, bounded like every schedule."""
        assert self.schedule_validity is not None
        return ChargerSchedule(
            charger_id=charger.id,
            start=now,
            valid_until=now + self.schedule_validity,
            periods=(SchedulePeriod(timedelta(0), 0.0, 1000.0 * charger.max_charge_kw, 0.0),),
            phases=charger.phases,
            evse_id=charger.evse_id,
        )

    def _should_send(
        self,
        charger_id: str,
        setpoint_w: float,
        now: datetime,
        plan: Plan | None,
        urgent: bool,
        discharge_ends_at: datetime | None = None,
    ) -> bool:
        """Deadband and rate limit, except that safety clamps and start/stop go out at once, and a
        discharge the last schedule ends soon is renewed once the new one holds it longer."""
        last = self._sent.get(charger_id)
        if last is None:
            return True
        if (
            last.discharge_ends_at is not None
            and now >= last.discharge_ends_at - self._renew_margin()
            and (discharge_ends_at is None or discharge_ends_at > last.discharge_ends_at)
        ):
            return True
        change = abs(setpoint_w - last.setpoint_w)
        if change == 0 and (plan is None or plan.created_at == last.plan_created_at):
            return False
        if (setpoint_w == 0.0) != (last.setpoint_w == 0.0):
            return True
        if urgent and abs(setpoint_w) < abs(last.setpoint_w):
            return True
        if plan is not None and plan.created_at != last.plan_created_at:
            return True  # a new plan changes the later periods of the schedule
        return change > self.deadband_w and now - last.at >= self.min_resend_interval


def _discharge_ends_at(schedule: ChargerSchedule) -> datetime | None:
    """When the schedule's first (live) discharge ends or lowers by itself; None when it does not
    discharge now or holds the discharge to the end."""
    live_w = schedule.periods[0].setpoint_w
    if live_w >= 0:
        return None
    later = next((p for p in schedule.periods[1:] if p.setpoint_w > live_w), None)
    return None if later is None else schedule.start + later.start_offset
