"""The daemon's event router: each event from OCPP, MQTT or a driver goes to the site state
(:class:`~controller.site_events.SiteEvents`), and the router does what the answer asks: store the
session and the state, log, re-plan, dispatch at once."""

from __future__ import annotations

import asyncio
import datetime as dt

import structlog

from controller.clock import Clock
from controller.commands import Command
from controller.dispatch import Dispatcher
from controller.domain import MeterReading
from controller.mqtt.client import SignalKind
from controller.ocpp import OcppEvent, ProfileAnswered
from controller.persistence import SitePersistence
from controller.site_events import Reaction, SiteEvents
from controller.store import Store
from controller.trigger import IntervalTrigger

__all__ = ["EventRouter"]

log = structlog.get_logger("controller.app")


class EventRouter:
    def __init__(
        self,
        clock: Clock,
        store: Store,
        events: SiteEvents,
        persistence: SitePersistence,
        dispatcher: Dispatcher,
        planner_trigger: IntervalTrigger,
        dispatch_trigger: IntervalTrigger,
    ) -> None:
        self.clock = clock
        self.store = store
        self.events = events
        self.persistence = persistence
        self.dispatcher = dispatcher
        self.planner_trigger = planner_trigger
        self.dispatch_trigger = dispatch_trigger
        self.was_safe: bool | None = None
        """Safe mode at the last dispatch (None before the first)."""
        self.publish_soon = False
        """Something to show changed outside the dispatcher: publish the state at the next tick."""

    def handle_ocpp_event(self, event: OcppEvent) -> None:
        """An event from the OCPP server: applied to the site, then acted on."""
        now = self.clock.now()
        if isinstance(event, ProfileAnswered):
            if not event.record.accepted:
                self._profile_not_accepted(event, now)
            return
        self._react(self.events.ocpp(event, now), now)

    def handle_reading(self, reading: MeterReading) -> None:
        """A meter reading the inputs hold now: kept as history, applied to the site."""
        if not reading.retained:  # a retained value of unknown age is no history
            self.store.record_reading(reading.meter_id, reading.at, reading.value)
        self._react(self.events.reading(reading, was_safe=self.was_safe), self.clock.now())

    def handle_signal(self, kind: SignalKind) -> None:
        self.persistence.log_event("signal", self.clock.now(), signal=kind)
        self.planner_trigger.fire(kind)
        if kind in ("grid_state", "limits"):
            self.dispatch_trigger.fire()  # a new cap or an outage applies now, not after the solve

    async def handle_command(self, command: Command) -> None:
        """A driver command, validated: applied now, stored, re-planned on."""
        now = self.clock.now()
        reaction = self.events.command(command, now)
        if reaction.overrides_changed is not None:
            vehicle = reaction.overrides_changed
            saved = self.persistence.save_overrides(vehicle)
            self.persistence.log_event(
                "command", now, vehicle=vehicle.config.id, command=type(command).__name__
            )
            self._react(reaction, now)
            await asyncio.wrap_future(saved)  # acknowledged (on return) only once it is on disk
            return
        self._react(reaction, now)

    def _react(self, reaction: Reaction, now: dt.datetime) -> None:
        """Do what an event asks: store the session and state, log, re-plan, dispatch."""
        started = reaction.session_started
        if started is not None and not self.persistence.is_open_session(
            started.charger_id, started.transaction_id
        ):  # after a restart the charger reports its running transaction again
            self.persistence.start_session(
                started.charger_id,
                started.at,
                started.transaction_id,
                vehicle_id=self.events.site.charger_vehicle.get(started.charger_id),
                start_energy_wh=started.meter_start_wh,
            )
        ended = reaction.session_ended
        if ended is not None:
            self.persistence.stop_session(ended.charger_id, ended.at, ended.meter_stop_wh)
        for change in reaction.plug_changes:
            log.info(change.kind, vehicle=change.vehicle.config.id, charger=change.charger_id)
            self.persistence.log_event(
                change.kind, now, vehicle=change.vehicle.config.id, charger=change.charger_id
            )
        for vehicle in reaction.persist:
            self.persistence.save_vehicles(vehicle)
        for vehicle in reaction.soc_read:
            self.persistence.soc_read(vehicle)
        for charger_id in reaction.forget_chargers:
            self.dispatcher.forget(charger_id)
        for why in reaction.replan:
            self.planner_trigger.fire(why)
        if reaction.dispatch_now:
            self.dispatch_trigger.fire()

    def _profile_not_accepted(self, event: ProfileAnswered, now: dt.datetime) -> None:
        record = event.record
        fields = {
            "charger": event.charger_id,
            "purpose": record.purpose,
            "status": record.status.value,
            "reason": record.reason,
        }
        log.warning("profile_not_accepted", **fields)
        self.persistence.log_event("profile_not_accepted", now, **fields)
        # Surfaced on the charger's state topic at the next dispatch, now (``/state`` reads it live).
        self.publish_soon = True
        self.dispatch_trigger.fire()

    def track_safe_mode(self, now: dt.datetime) -> None:
        """Log and store a change of safe mode; leaving or entering it asks for a new plan."""
        safe = self.events.site.inputs.safe_mode(now)
        if safe != self.was_safe:
            reasons = self.events.site.inputs.safe_mode_reasons(now)
            if safe:
                log.warning("safe_mode_entered", reasons=reasons)
            elif self.was_safe is not None:
                log.info("safe_mode_left")
            self.persistence.log_event("safe_mode", now, active=safe, reasons=reasons)
            if self.was_safe is not None:
                self.planner_trigger.fire("safe mode changed")
            self.was_safe = safe
