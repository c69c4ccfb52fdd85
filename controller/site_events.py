"""What happens at the site, applied to the one site state, and what the daemon should do about it.

One path from the world to the plan: the daemon and the simulator both hand the events a real site
produces (OCPP events from the chargers, meter readings, driver commands) to :class:`SiteEvents`,
which updates the :class:`~controller.site.Site` and answers with a :class:`Reaction` (re-plan and
why, dispatch at once, what to store). The daemon acts on it (logs, store, triggers); the simulator
re-plans on its own interval. No I/O here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from controller.commands import Command, SetDeparture, SetMode, SetWeeklyDeparture, V2LCommand
from controller.domain import MeterReading, MeterRole
from controller.ocpp.events import (
    ChargerConnected,
    ChargerDisconnected,
    ChargingNeedsReported,
    MeterValuesReceived,
    OcppEvent,
    StatusChanged,
    TransactionEnded,
    TransactionStarted,
)
from controller.site import EvReportedLimits, Site, VehicleRuntime

__all__ = ["COMMAND_TRIGGERS", "EV_DISCONNECTED", "PlugChange", "Reaction", "SiteEvents"]

log = structlog.get_logger("controller.site_events")

# The stop reason (1.6 StopTransaction.reason, 2.x stoppedReason) that means the cable was pulled.
EV_DISCONNECTED = "EVDisconnected"
# What a driver command is called where the daemon logs why it re-planned.
COMMAND_TRIGGERS: dict[type[Command], str] = {
    SetDeparture: "departure",
    SetWeeklyDeparture: "weekly_departure",
    SetMode: "mode",
    V2LCommand: "v2l",
}


@dataclass(frozen=True, slots=True)
class PlugChange:
    vehicle: VehicleRuntime
    charger_id: str

    @property
    def kind(self) -> str:
        return "plug_in" if self.vehicle.plugged_in else "unplug"


@dataclass(slots=True)
class Reaction:
    """What an event asks of the daemon; empty when it changed nothing that matters."""

    replan: list[str] = field(default_factory=list)
    """Why a new plan is needed now (empty: none)."""
    dispatch_now: bool = False
    forget_chargers: list[str] = field(default_factory=list)
    """Chargers whose next command must be sent regardless of what was sent before."""
    plug_changes: list[PlugChange] = field(default_factory=list)
    soc_read: list[VehicleRuntime] = field(default_factory=list)
    """Vehicles with a new SoC reading (the daemon stores it when it moved enough)."""
    persist: list[VehicleRuntime] = field(default_factory=list)
    """Vehicles whose state changed and is to be stored now."""
    overrides_changed: VehicleRuntime | None = None
    session_started: TransactionStarted | None = None
    session_ended: TransactionEnded | None = None

    def merge(self, other: Reaction) -> Reaction:
        for reason in other.replan:
            if reason not in self.replan:
                self.replan.append(reason)
        self.dispatch_now = self.dispatch_now or other.dispatch_now
        self.forget_chargers += other.forget_chargers
        self.plug_changes += other.plug_changes
        self.soc_read += other.soc_read
        self.persist += other.persist
        self.overrides_changed = other.overrides_changed or self.overrides_changed
        self.session_started = other.session_started or self.session_started
        self.session_ended = other.session_ended or self.session_ended
        return self


def _plugged(vehicle: VehicleRuntime | None, charger_id: str) -> Reaction:
    """A plug-in or unplug: stored, re-planned, dispatched at once."""
    if vehicle is None:
        return Reaction()
    change = PlugChange(vehicle, charger_id)
    return Reaction(replan=[change.kind], dispatch_now=True, plug_changes=[change], persist=[vehicle])


class SiteEvents:
    """Applies events to ``site``. ``open_session(charger_id, transaction_id)`` says whether the
    store holds that transaction open (a transaction the charger reports again after a restart)."""

    def __init__(self, site: Site, open_session: Callable[[str, str], bool] | None = None) -> None:
        self.site = site
        self._open_session = open_session or (lambda _charger, _transaction: False)

    # ------------------------------------------------------------------- OCPP

    def ocpp(self, event: OcppEvent, now: dt.datetime) -> Reaction:
        """An event from the OCPP server (``now``: when it reached us)."""
        site = self.site
        if isinstance(event, StatusChanged):
            vehicle = site.on_connector_status(
                event.charger_id, event.status, event.at, evse_id=event.evse_id
            )
            return _plugged(vehicle, event.charger_id)
        if isinstance(event, TransactionStarted):
            return self._transaction_started(event)
        if isinstance(event, TransactionEnded):
            return self._transaction_ended(event)
        if isinstance(event, MeterValuesReceived):
            sample = event.sample
            vehicle = site.on_charger_sample(
                event.charger_id,
                sample.at,
                sample.power_w,
                sample.soc_percent,
                sample.energy_import_wh,
                sample.energy_export_wh,
                evse_id=event.evse_id,
                received_at=now,
            )
            return Reaction(
                soc_read=[vehicle] if vehicle is not None and sample.soc_percent is not None else []
            )
        if isinstance(event, ChargingNeedsReported):
            return self._charging_needs(event, now)
        if isinstance(event, ChargerConnected):
            return self._charger_connected(event)
        if isinstance(event, ChargerDisconnected):
            return Reaction(forget_chargers=[event.charger_id])
        return Reaction()

    def _charger_connected(self, event: ChargerConnected) -> Reaction:
        reaction = Reaction(dispatch_now=True, forget_chargers=[event.charger_id])
        if self.site.on_charger_connected(event.charger_id, event.ocpp_version):
            # Its OCPP version decides whether a discharge can reach it: plan with what it can do.
            log.info(
                "charger_discharge_capability",
                charger=event.charger_id,
                ocpp_version=event.ocpp_version.value,
                can_discharge=self.site.charger_can_discharge(event.charger_id),
            )
            reaction.replan.append("charger version")
        return reaction

    def _transaction_started(self, event: TransactionStarted) -> Reaction:
        """A transaction on the car's EVSE plugs the car in and opens the charger's session; one on
        another EVSE (another car, not managed here) changes nothing."""
        site = self.site
        if not site.is_vehicle_evse(event.charger_id, event.evse_id):
            log.info(
                "transaction_on_other_evse",
                charger=event.charger_id,
                evse_id=event.evse_id,
                transaction_id=event.transaction_id,
                car_evse_id=site.charger_evse.get(event.charger_id),
                hint="left alone; set chargers[].evse_id if the car uses this EVSE",
            )
            return Reaction()
        vehicle = site.set_plugged(event.charger_id, True, event.at, evse_id=event.evse_id)
        site.on_transaction_started(event.charger_id, evse_id=event.evse_id)
        reaction = _plugged(vehicle, event.charger_id)
        reaction.session_started = event
        reaction.dispatch_now = True
        reaction.forget_chargers.append(event.charger_id)
        return reaction

    def _transaction_ended(self, event: TransactionEnded) -> Reaction:
        """The end of the car's transaction: on its EVSE, or (EVSE unknown to the adapter, e.g. a 1.6
        StopTransaction after a restart) the one the charger's open session runs. Any other
        transaction's end leaves the car's session and plug state alone."""
        site = self.site
        ours = site.is_vehicle_evse(event.charger_id, event.evse_id) or self._open_session(
            event.charger_id, event.transaction_id
        )
        if not ours:
            log.info(
                "transaction_end_not_the_cars",
                charger=event.charger_id,
                evse_id=event.evse_id,
                transaction_id=event.transaction_id,
            )
            return Reaction()
        site.on_transaction_ended(event.charger_id, event.at)  # no power drawn any more, cable in or out
        reaction = Reaction(session_ended=event)
        if event.reason == EV_DISCONNECTED:
            # The cable is out even if the charger sends no StatusNotification for it.
            reaction.merge(_plugged(site.set_plugged(event.charger_id, False, event.at), event.charger_id))
        return reaction

    def _charging_needs(self, event: ChargingNeedsReported, now: dt.datetime) -> Reaction:
        """Departure, target and the EV's own limits for this session; they apply at once."""
        site = self.site
        needs = event.needs
        reaction = Reaction()
        if needs.soc_percent is not None:
            # First, so the V2X energy window is placed on the SoC of this very message.
            sampled = site.on_charger_sample(
                event.charger_id, needs.at, None, needs.soc_percent, evse_id=needs.evse_id
            )
            if sampled is not None:
                reaction.soc_read.append(sampled)
        reported = EvReportedLimits(
            max_charge_power_w=needs.max_charge_power_w,
            max_discharge_power_w=needs.max_discharge_power_w,
            min_v2x_energy_wh=needs.min_v2x_energy_request_wh,
            max_v2x_energy_wh=needs.max_v2x_energy_request_wh,
        )
        vehicle = site.on_charging_needs(
            event.charger_id,
            needs.departure_time,
            needs.target_soc_percent,
            reported,
            evse_id=needs.evse_id,
            now=now,
        )
        if vehicle is None:
            return reaction
        limits = vehicle.session_limits
        log.info(
            "ev_charging_needs",
            vehicle=vehicle.config.id,
            charger=event.charger_id,
            session_limits=limits.model_dump(exclude_none=True) if limits else None,
        )
        # New caps bound the setpoints now, and the profile's limits change even at the same setpoint.
        return reaction.merge(
            Reaction(
                replan=["charging needs"],
                dispatch_now=True,
                forget_chargers=[event.charger_id],
                persist=[vehicle],
            )
        )

    # ----------------------------------------------------------------- meters

    def reading(self, reading: MeterReading, *, was_safe: bool | None = None) -> Reaction:
        """A meter reading the inputs already hold (a car's SoC or V2L power, a grid power).
        ``was_safe``: whether the site was in safe mode at the last dispatch."""
        site = self.site
        if reading.role in (MeterRole.VEHICLE_SOC, MeterRole.V2L):
            meter = next((m for m in site.cfg.meters if m.id == reading.meter_id), None)
            if meter is None or meter.vehicle is None:
                return Reaction()
            if reading.role is MeterRole.V2L:
                site.on_v2l_reading(meter.vehicle, reading.at)
                return Reaction()
            # A retained SoC (age unknown) is a starting estimate: no discharge or V2L on it.
            vehicle = site.on_vehicle_soc(
                meter.vehicle, reading.value, reading.at, measured=not reading.retained
            )
            return Reaction(soc_read=[vehicle] if vehicle is not None else [])
        if reading.role is MeterRole.GRID:
            reaction = Reaction()
            limits = site.inputs.limits_at(reading.at)
            if (
                reading.value > limits.import_limit_w
                or reading.value < -limits.export_limit_w
                or self._phase_over_fuse(reading.at)
            ):
                reaction.dispatch_now = True  # fuse protection does not wait for the next tick
            if was_safe and not site.inputs.safe_mode(reading.at):
                reaction.replan.append("fresh data")
            return reaction
        return Reaction()

    def _phase_over_fuse(self, at: dt.datetime) -> bool:
        """A phase of the grid connection is over its fuse (either way) in the latest reading."""
        grid = self.site.cfg.site.grid
        phases_w = self.site.inputs.grid_phases_w(at)
        if grid.phase_fuse_a is None or phases_w is None:
            return False
        fuse_w = grid.phase_fuse_a * grid.phase_voltage_v
        return any(abs(p) > fuse_w for p in phases_w)

    # --------------------------------------------------------------- commands

    def command(self, command: Command, now: dt.datetime) -> Reaction:
        """A driver command, validated: applied now, its overrides to be stored (and, for a one-off
        departure, the vehicle's state: when it was announced ends an overdue departure's hold)."""
        vehicle = self.site.apply_command(command, now)
        return Reaction(
            replan=[COMMAND_TRIGGERS[type(command)]],
            dispatch_now=True,
            overrides_changed=vehicle,
            persist=[vehicle] if isinstance(command, SetDeparture) else [],
        )
