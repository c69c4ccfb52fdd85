"""The daemon: one asyncio TaskGroup running the OCPP server, the HTTP API, the MQTT client, the
planner, the dispatcher and the store, with a clean shutdown.

Events update the one :class:`~controller.site.Site`; the planner makes a Plan every
``replan_interval_minutes`` and at once (debounced) on plug-in, unplug, new prices, new limits and
changed departure/target/mode; the dispatcher turns the current plan step and the latest readings
into charger schedules every ``dispatch_interval_s`` and at once after a new plan or a grid reading
that breaks a limit. The solve runs in a worker thread so OCPP and MQTT stay responsive.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import Awaitable
from typing import Any

import structlog

from controller import __version__
from controller.api import HealthServer
from controller.clock import Clock, SystemClock
from controller.commands import Command, SetDeparture, SetMode, SetWeeklyDeparture, V2LCommand
from controller.config import ChargerConfig, SiteConfig
from controller.dispatch import ChargerCommand, Dispatcher
from controller.domain import MeterReading, MeterRole, Plan, align_to_step
from controller.forecast import forecast_load_w, forecast_pv_w
from controller.forecast.profile import DEFAULT_BLEND_HOURS, PV_RATIO_HOURS
from controller.mqtt import (
    ChargerStatus,
    ControllerStatus,
    ProfileOutcome,
    SiteFlows,
    SiteMqttClient,
    VehicleStatus,
    charger_state,
)
from controller.mqtt.client import SignalKind
from controller.ocpp import (
    ChargerDisconnected,
    ChargingNeedsReported,
    MeterValuesReceived,
    OcppEvent,
    OcppServer,
    ProfileAnswered,
    StatusChanged,
    TransactionEnded,
    TransactionStarted,
)
from controller.ocpp.events import ChargerConnected
from controller.ocpp.model import ChargerView, ProfileRecord
from controller.optimizer import Planner
from controller.shutdown import StopSignals
from controller.site import EvReportedLimits, Site, VehicleRuntime
from controller.site_inputs import SiteInputs
from controller.store import Store
from controller.trigger import IntervalTrigger

__all__ = ["Daemon", "run_daemon"]

log = structlog.get_logger("controller.app")

# What a stored row that does not parse raises (json, dict access, fromisoformat, enum, float()).
_RESTORE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)

# History series the forecasts learn from (stored like meters, downsampled to one minute).
HOME_LOAD_SERIES = "_home_load"
PV_SERIES = "_pv"
REPLAN_DEBOUNCE_S = 0.2
# The stop reason (1.6 StopTransaction.reason, 2.x stoppedReason) that means the cable was pulled.
EV_DISCONNECTED = "EVDisconnected"
PUBLISH_INTERVAL_S = 10.0
# Meter history is written (off the event loop) this often, so a crash loses at most this much of it.
HISTORY_FLUSH_INTERVAL_S = 10.0
# Housekeeping beyond the history (vehicle state, purge) runs this often.
HOUSEKEEPING_INTERVAL_S = 60.0
# How often the TaskGroup checks that the OCPP server and the HTTP API still listen.
SERVER_CHECK_INTERVAL_S = 5.0
# A measured SoC is written to the store when it moved this much, or this long after the last write,
# so a crash (kill -9) loses little of it without a write per meter sample.
SOC_PERSIST_DELTA_PERCENT = 1.0
SOC_PERSIST_INTERVAL_S = 60.0
# The stop: the safe profiles go to all chargers in parallel within this budget (a call still
# unanswered is abandoned), the last status within the next; with closing the connections and the
# store the whole stop stays within 5 s, well inside Docker's default 10 s grace period.
SAFE_PROFILES_BUDGET_S = 3.0
STOP_PUBLISH_TIMEOUT_S = 0.5
# What a driver command is called where the daemon logs why it re-planned.
COMMAND_TRIGGERS: dict[type[Command], str] = {
    SetDeparture: "departure",
    SetWeeklyDeparture: "weekly_departure",
    SetMode: "mode",
    V2LCommand: "v2l",
}


class Daemon:
    """Everything the daemon runs, wired. ``await run()`` until ``stop()`` (or a signal)."""

    def __init__(
        self,
        cfg: SiteConfig,
        clock: Clock | None = None,
        *,
        ocpp_port: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self.store = Store(cfg.storage.path)
        self.inputs = SiteInputs(cfg)
        self.site = Site(cfg, self.inputs)
        self.planner = Planner(cfg)
        self.dispatcher = Dispatcher(cfg)
        self.plan: Plan | None = None
        self.ocpp = OcppServer(cfg, clock=self.clock, on_event=self._on_ocpp_event, port=ocpp_port)
        self.mqtt = SiteMqttClient(
            cfg,
            self.clock,
            self.inputs,
            on_command=self._on_command,
            on_reading=self._on_reading,
            on_signal=self._on_signal,
        )
        self.planner_trigger = IntervalTrigger(
            self.clock, "replan", cfg.site.replan_interval_minutes * 60.0, debounce_s=REPLAN_DEBOUNCE_S
        )
        self.dispatch_trigger = IntervalTrigger(self.clock, "dispatch", cfg.site.dispatch_interval_s)
        self._stopping = asyncio.Event()
        self._ready = asyncio.Event()
        self._pending: set[asyncio.Task[Any]] = set()
        self._was_safe: bool | None = None
        self._last_publish = 0.0
        self._soc_saved: dict[str, tuple[float, float]] = {}
        self._last_tick = self.clock.monotonic()
        self._tasks: list[asyncio.Task[Any]] = []
        self.replans = 0
        self.http: HealthServer | None = None
        if cfg.api.enabled:
            token = cfg.api.token.get_secret_value() if cfg.api.token else None
            self.http = HealthServer(cfg.api.host, cfg.api.port, self.health, self.state, token)

    # --------------------------------------------------------------- lifecycle

    def stop(self) -> None:
        self._stopping.set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def run(self) -> None:
        try:
            self._restore()
            await self.ocpp.start()
            if self.http is not None:
                await self.http.start()
        except BaseException:
            await self.ocpp.stop()
            self.store.close()  # e.g. a port is taken: leave the store clean
            raise
        log.info("daemon_started", version=__version__, ocpp_port=self.ocpp.port, site=self.cfg.site.name)
        try:
            async with asyncio.TaskGroup() as group:
                mqtt = group.create_task(self.mqtt.run(), name="mqtt")
                control = [
                    group.create_task(self.planner_trigger.run(self.replan), name="planner"),
                    group.create_task(self.dispatch_trigger.run(self._dispatch), name="dispatcher"),
                    group.create_task(self._housekeeping_loop(), name="housekeeping"),
                ]
                # The servers were started above (a taken port is a clean start error); these tasks
                # watch them, so /health turns unhealthy when one stops listening.
                servers = [group.create_task(self._watch_server("ocpp", self.ocpp), name="ocpp")]
                if self.http is not None:
                    servers.append(group.create_task(self._watch_server("http", self.http), name="http"))
                self._tasks = [mqtt, *control, *servers]
                self.request_replan("start")
                self._ready.set()
                await self._stopping.wait()
                log.info("daemon_stopping")
                # Planner and dispatcher stop first: nothing may overtake the safe profiles.
                await _cancel_all(control)
                await self._safe_shutdown()
                mqtt.cancel()  # publishes ``offline`` on its way out
                for watcher in servers:
                    watcher.cancel()
        finally:
            if self.http is not None:
                await self.http.stop()
            await self.ocpp.stop()
            self._persist_vehicles()
            self.store.close()
            log.info("daemon_stopped")

    async def _safe_shutdown(self) -> None:
        """Leave every charger safe without us: no discharge, charging only within limits.

        A running transaction gets a TxProfile without discharge (the plan's charging, as in safe
        mode; a charger the dispatcher has nothing for gets the idle schedule), since a TxProfile
        outranks the default profile and could otherwise keep discharging for the rest of its
        validity; then every connected charger gets its safe default profile. All chargers in
        parallel within ``SAFE_PROFILES_BUDGET_S``; nothing that discharges goes out once this began.
        """
        await _cancel_all(list(self._pending))
        now = self.clock.now()
        connected = [cid for cid, view in self.ocpp.chargers.items() if view.connected]
        for charger_id in connected:
            self.dispatcher.forget(charger_id)
        live = self.site.dispatch_inputs(now, self.plan)
        safe = dataclasses.replace(live, safe_mode=True, grid_lost=False)
        schedules = {c.charger_id: c.schedule for c in self.dispatcher.dispatch(safe)}
        for charger_id in connected:
            if charger_id not in schedules:
                charger = self.cfg.charger(charger_id) or ChargerConfig(id=charger_id)
                schedules[charger_id] = self.dispatcher.idle_schedule(now, charger)
        records = await self.ocpp.make_safe(schedules, SAFE_PROFILES_BUDGET_S)
        for charger_id, sent in records.items():
            for record in sent:
                log.info(
                    "safe_profile", charger=charger_id, purpose=record.purpose, status=record.status.value
                )
        self.store.log_event("shutdown", self.clock.now(), safe_profiles=len(connected))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_PUBLISH_TIMEOUT_S):
                await self.mqtt.publish_status(self._status(self.clock.now(), stopping=True))

    # ----------------------------------------------------------------- restore

    def _restore(self) -> None:
        """Vehicles, overrides and the latest plan from the store. A row that does not parse (a
        damaged file, an older format) is logged and skipped: the daemon starts without it."""
        now = self.clock.now()
        restored = 0
        for vehicle_id, record in self.store.vehicle_states().items():
            try:
                restored += self.site.restore_vehicle(vehicle_id, record, now=now)
            except _RESTORE_ERRORS as exc:
                log.warning("vehicle_state_not_restored", vehicle=vehicle_id, error=str(exc))
        for (vehicle_id, kind), body in self.store.overrides(now).items():
            try:
                self.site.restore_overrides(vehicle_id, kind, body, now)
            except _RESTORE_ERRORS as exc:
                log.warning("override_not_restored", vehicle=vehicle_id, kind=kind, error=str(exc))
        try:
            plan = self.store.latest_plan()
        except _RESTORE_ERRORS as exc:
            log.warning("plan_not_restored", error=str(exc))
            plan = None
        if plan is not None and plan.step_index(now) is not None:
            self.plan = plan
        log.info(
            "state_restored",
            vehicles=restored,
            open_sessions=len(self.store.open_sessions()),
            plan=self.plan is not None,
        )

    def _persist_vehicles(self, vehicle: VehicleRuntime | None = None) -> None:
        now = self.clock.now()
        for v in [vehicle] if vehicle is not None else list(self.site.vehicles.values()):
            self.store.save_vehicle_state(v.config.id, self.site.vehicle_record(v), now)

    def _soc_read(self, vehicle: VehicleRuntime) -> None:
        """A SoC reading arrived: store it when it moved enough or a while passed (crash safety)."""
        estimate = vehicle.tracker.estimate()
        if estimate is None:
            return
        saved = self._soc_saved.get(vehicle.config.id)
        now_s = self.clock.now().timestamp()
        if (
            saved is None
            or abs(estimate.soc_percent - saved[0]) >= SOC_PERSIST_DELTA_PERCENT
            or now_s - saved[1] >= SOC_PERSIST_INTERVAL_S
        ):
            self._soc_saved[vehicle.config.id] = (estimate.soc_percent, now_s)
            self._persist_vehicles(vehicle)

    def _persist_overrides(self, vehicle: VehicleRuntime) -> None:
        now = self.clock.now()
        for kind, body in self.site.overrides(vehicle).items():
            self.store.set_override(vehicle.config.id, kind, body, now)
        if vehicle.one_off is None:
            self.store.clear_override(vehicle.config.id, "departure")
        if vehicle.v2l is None:
            self.store.clear_override(vehicle.config.id, "v2l")

    # ------------------------------------------------------------------ events

    def request_replan(self, why: str) -> None:
        log.debug("replan_requested", why=why)
        self.planner_trigger.fire(why)

    def _on_ocpp_event(self, event: OcppEvent) -> None:
        now = self.clock.now()
        if isinstance(event, StatusChanged):
            vehicle = self.site.on_connector_status(
                event.charger_id, event.status, event.at, evse_id=event.evse_id
            )
            if vehicle is not None:
                self._plug_changed(vehicle, event.charger_id, now)
        elif isinstance(event, TransactionStarted):
            self._transaction_started(event, now)
        elif isinstance(event, TransactionEnded):
            self._transaction_ended(event, now)
        elif isinstance(event, MeterValuesReceived):
            sample = event.sample
            vehicle = self.site.on_charger_sample(
                event.charger_id,
                sample.at,
                sample.power_w,
                sample.soc_percent,
                sample.energy_import_wh,
                sample.energy_export_wh,
                evse_id=event.evse_id,
                received_at=now,
            )
            if vehicle is not None and sample.soc_percent is not None:
                self._soc_read(vehicle)
        elif isinstance(event, ChargingNeedsReported):
            self._charging_needs(event)
        elif isinstance(event, ChargerConnected):
            if self.site.on_charger_connected(event.charger_id, event.ocpp_version):
                # Its OCPP version decides whether a discharge can reach it: plan with what it can do.
                log.info(
                    "charger_discharge_capability",
                    charger=event.charger_id,
                    ocpp_version=event.ocpp_version.value,
                    can_discharge=self.site.charger_can_discharge(event.charger_id),
                )
                self.request_replan("charger version")
            self.dispatcher.forget(event.charger_id)
            self.dispatch_trigger.fire()
        elif isinstance(event, ChargerDisconnected):
            self.dispatcher.forget(event.charger_id)
        elif isinstance(event, ProfileAnswered) and not event.record.accepted:
            log.warning(
                "profile_not_accepted",
                charger=event.charger_id,
                purpose=event.record.purpose,
                status=event.record.status.value,
                reason=event.record.reason,
            )
            self.store.log_event(
                "profile_not_accepted",
                now,
                charger=event.charger_id,
                purpose=event.record.purpose,
                status=event.record.status.value,
                reason=event.record.reason,
            )
            # Surfaced on the charger's state topic at the next dispatch, now (``/state`` reads it live).
            self._last_publish = 0.0
            self.dispatch_trigger.fire()

    def _transaction_started(self, event: TransactionStarted, now: dt.datetime) -> None:
        """A transaction on the car's EVSE plugs the car in and opens the charger's session; one on
        another EVSE (another car, not managed here) changes nothing."""
        if not self.site.is_vehicle_evse(event.charger_id, event.evse_id):
            log.info(
                "transaction_on_other_evse",
                charger=event.charger_id,
                evse_id=event.evse_id,
                transaction_id=event.transaction_id,
                car_evse_id=self.site.charger_evse.get(event.charger_id),
                hint="left alone; set chargers[].evse_id if the car uses this EVSE",
            )
            return
        vehicle = self.site.set_plugged(event.charger_id, True, event.at, evse_id=event.evse_id)
        self.site.on_transaction_started(event.charger_id, evse_id=event.evse_id)
        resumed = any(
            s.charger_id == event.charger_id and s.transaction_id == event.transaction_id
            for s in self.store.open_sessions()
        )
        if not resumed:  # after a restart the charger reports its running transaction again
            self.store.start_session(
                event.charger_id,
                event.at,
                vehicle_id=self.site.charger_vehicle.get(event.charger_id),
                transaction_id=event.transaction_id,
                start_energy_wh=event.meter_start_wh,
            )
        if vehicle is not None:
            self._plug_changed(vehicle, event.charger_id, now)
        self.dispatcher.forget(event.charger_id)
        self.dispatch_trigger.fire()

    def _transaction_ended(self, event: TransactionEnded, now: dt.datetime) -> None:
        """The end of the car's transaction: on its EVSE, or (EVSE unknown to the adapter, e.g. a 1.6
        StopTransaction after a restart) the one the charger's open session runs. Any other
        transaction's end leaves the car's session and plug state alone."""
        ours = self.site.is_vehicle_evse(event.charger_id, event.evse_id) or any(
            s.charger_id == event.charger_id and s.transaction_id == event.transaction_id
            for s in self.store.open_sessions()
        )
        if not ours:
            log.info(
                "transaction_end_not_the_cars",
                charger=event.charger_id,
                evse_id=event.evse_id,
                transaction_id=event.transaction_id,
            )
            return
        self.store.stop_session(event.charger_id, event.at, event.meter_stop_wh)
        self.site.on_transaction_ended(event.charger_id, event.at)  # no power drawn any more, cable in or out
        if event.reason == EV_DISCONNECTED:
            # The cable is out even if the charger sends no StatusNotification for it.
            vehicle = self.site.set_plugged(event.charger_id, False, event.at)
            if vehicle is not None:
                self._plug_changed(vehicle, event.charger_id, now)

    def _charging_needs(self, event: ChargingNeedsReported) -> None:
        """Departure, target and the EV's own limits for this session; they apply at once."""
        needs = event.needs
        if needs.soc_percent is not None:
            # First, so the V2X energy window is placed on the SoC of this very message.
            sampled = self.site.on_charger_sample(
                event.charger_id, needs.at, None, needs.soc_percent, evse_id=needs.evse_id
            )
            if sampled is not None:
                self._soc_read(sampled)
        reported = EvReportedLimits(
            max_charge_power_w=needs.max_charge_power_w,
            max_discharge_power_w=needs.max_discharge_power_w,
            min_v2x_energy_wh=needs.min_v2x_energy_request_wh,
            max_v2x_energy_wh=needs.max_v2x_energy_request_wh,
        )
        vehicle = self.site.on_charging_needs(
            event.charger_id, needs.departure_time, needs.target_soc_percent, reported, evse_id=needs.evse_id
        )
        if vehicle is None:
            return
        limits = vehicle.session_limits
        log.info(
            "ev_charging_needs",
            vehicle=vehicle.config.id,
            charger=event.charger_id,
            session_limits=limits.model_dump(exclude_none=True) if limits else None,
        )
        self._persist_vehicles(vehicle)
        self.request_replan("charging needs")
        # New caps bound the setpoints now, and the profile's limits change even at the same setpoint.
        self.dispatcher.forget(event.charger_id)
        self.dispatch_trigger.fire()

    def _plug_changed(self, vehicle: VehicleRuntime, charger_id: str, now: dt.datetime) -> None:
        kind = "plug_in" if vehicle.plugged_in else "unplug"
        log.info(kind, vehicle=vehicle.config.id, charger=charger_id)
        self.store.log_event(kind, now, vehicle=vehicle.config.id, charger=charger_id)
        self._persist_vehicles(vehicle)
        self.request_replan(kind)
        self.dispatch_trigger.fire()

    def _on_reading(self, reading: MeterReading) -> None:
        if not reading.retained:  # a retained value of unknown age is no history
            self.store.record_reading(reading.meter_id, reading.at, reading.value)
        if reading.role in (MeterRole.VEHICLE_SOC, MeterRole.V2L):
            meter = next((m for m in self.cfg.meters if m.id == reading.meter_id), None)
            if meter is None or meter.vehicle is None:
                return
            if reading.role is MeterRole.V2L:
                self.site.on_v2l_reading(meter.vehicle, reading.at)
                return
            # A retained SoC (age unknown) is a starting estimate: no discharge or V2L on it.
            vehicle = self.site.on_vehicle_soc(
                meter.vehicle, reading.value, reading.at, measured=not reading.retained
            )
            if vehicle is not None:
                self._soc_read(vehicle)
        elif reading.role is MeterRole.GRID:
            limits = self.inputs.limits_at(reading.at)
            if reading.value > limits.import_limit_w or reading.value < -limits.export_limit_w:
                self.dispatch_trigger.fire()  # fuse protection does not wait for the next tick
            if self._was_safe and not self.inputs.safe_mode(reading.at):
                self.request_replan("fresh data")

    def _on_signal(self, kind: SignalKind) -> None:
        self.store.log_event("signal", self.clock.now(), signal=kind)
        self.request_replan(kind)
        if kind in ("grid_state", "limits"):
            self.dispatch_trigger.fire()  # a new cap or an outage applies now, not after the solve

    async def _on_command(self, command: Command) -> None:
        vehicle = self.site.apply_command(command, self.clock.now())
        self._persist_overrides(vehicle)
        self.store.log_event(
            "command", self.clock.now(), vehicle=vehicle.config.id, command=type(command).__name__
        )
        self.request_replan(COMMAND_TRIGGERS[type(command)])
        self.dispatch_trigger.fire()

    # ----------------------------------------------------------------- planner

    def _pv_forecast_external(self, now: dt.datetime) -> dict[dt.datetime, float]:
        """The MQTT PV forecast on the plan grid, step start -> W, where it covers the step."""
        step = self.site.step
        start = align_to_step(now, step)
        steps = self.cfg.site.steps
        pv_w, covered = self.inputs.pv_forecast_on_grid(start, step, steps)
        return {start + i * step: float(pv_w[i]) for i in range(steps) if covered[i]}

    def forecasts(
        self, now: dt.datetime, pv_external: dict[dt.datetime, float] | None = None
    ) -> tuple[Any, Any]:
        """Home load and PV per plan step; a PV forecast from MQTT wins where it covers a step.

        Called in a worker thread by ``replan``, which passes ``pv_external`` read on the loop.
        """
        settings = self.cfg.forecast
        step = self.site.step
        start = align_to_step(now, step)
        steps = self.cfg.site.steps
        # The profiles of the last hours (the recent-bias window) reach that much further back.
        load_since = now - dt.timedelta(weeks=settings.load_history_weeks, hours=DEFAULT_BLEND_HOURS)
        pv_since = now - dt.timedelta(days=settings.pv_history_days, hours=PV_RATIO_HOURS)
        load = self.store.history_means(HOME_LOAD_SERIES, load_since, now, step)
        pv = self.store.history_means(PV_SERIES, pv_since, now, step)
        external = self._pv_forecast_external(now) if pv_external is None else pv_external
        return (
            forecast_load_w(
                load,
                start,
                step,
                steps,
                weeks=settings.load_history_weeks,
                default_w=settings.default_home_load_w,
            ),
            forecast_pv_w(pv, start, step, steps, days=settings.pv_history_days, external=external),
        )

    async def replan(self, triggers: list[str] | None = None) -> Plan:
        """Forecasts, snapshot and solve; ``triggers`` are the events that asked for it (logged)."""
        now = self.clock.now()
        # The MQTT PV forecast changes on the loop: read it here, the history in a worker thread.
        pv_external = self._pv_forecast_external(now)
        load_w, pv_w = await asyncio.to_thread(self.forecasts, now, pv_external)
        snapshot = self.site.planner_snapshot(now, load_w, pv_w)
        plan = await asyncio.to_thread(self.planner.plan, snapshot)
        self.plan = plan
        self.replans += 1
        log.info(
            "plan_ready",
            triggers=triggers or [],
            status=plan.solver_status,
            fallback=plan.fallback,
            solve_ms=round(plan.solve_time_ms, 1),
            reasons={vid: vp.reason for vid, vp in plan.vehicles.items()},
        )
        self.store.save_plan(plan)
        self.dispatch_trigger.fire()
        self._spawn(self.mqtt.publish_plan(plan), "publish_plan")
        return plan

    # -------------------------------------------------------------- dispatcher

    async def _dispatch(self, _reasons: list[str]) -> None:
        await self.dispatch_once()

    async def dispatch_once(self) -> list[ChargerCommand]:
        now = self.clock.now()
        self._last_tick = self.clock.monotonic()
        self._expire_grid_state(now)
        self._track_safe_mode(now)
        self._record_flows(now)
        for due in self.site.v2l_cutoffs(now):
            await self._cut_off_v2l(due, now)
        commands = self.dispatcher.dispatch(self.site.dispatch_inputs(now, self.plan))
        setpoints = {c.vehicle_id: c.setpoint_w for c in commands if c.vehicle_id is not None}
        for vehicle in self.site.vehicles.values():
            # A car without a command (unplugged, away) has no setpoint, whatever it had before.
            vehicle.setpoint_w = setpoints.get(vehicle.config.id, 0.0)
        for command in commands:
            if command.send and command.charger_id in self.ocpp.chargers:
                self._spawn(self._send(command), f"profile:{command.charger_id}")
        if self.clock.now().timestamp() - self._last_publish >= PUBLISH_INTERVAL_S or any(
            c.send for c in commands
        ):
            self._last_publish = self.clock.now().timestamp()
            self._spawn(self._publish_state(now), "publish_state")
        return commands

    async def _send(self, command: ChargerCommand) -> None:
        record = await self.ocpp.apply_schedule(command.schedule)
        log.info(
            "profile_sent",
            charger=command.charger_id,
            setpoint_w=command.setpoint_w,
            status=record.status.value,
            reasons=list(command.reasons),
        )

    def _track_safe_mode(self, now: dt.datetime) -> None:
        safe = self.inputs.safe_mode(now)
        if safe != self._was_safe:
            reasons = self.inputs.safe_mode_reasons(now)
            if safe:
                log.warning("safe_mode_entered", reasons=reasons)
            elif self._was_safe is not None:
                log.info("safe_mode_left")
            self.store.log_event("safe_mode", now, active=safe, reasons=reasons)
            if self._was_safe is not None:
                self.request_replan("safe mode changed")
            self._was_safe = safe

    def _expire_grid_state(self, now: dt.datetime) -> None:
        """An outage state not refreshed within ``grid_signals.outage_max_age_s`` ends here."""
        at = self.inputs.grid_state_at
        since = at.isoformat() if at is not None else None
        if self.inputs.expire_grid_state(now):
            max_age_s = self.cfg.grid_signals.outage_max_age_s
            log.warning("grid_state_expired", since=since, max_age_s=max_age_s)
            self.store.log_event("grid_state_expired", now, since=since, max_age_s=max_age_s)
            self.request_replan("grid_state")

    def _record_flows(self, now: dt.datetime) -> None:
        """Home load and PV for the forecasts: home = grid + PV - cars, when all are known (a PV
        meter that is configured but stale is not 0 W; without PV meters PV is 0 W)."""
        grid = self.inputs.grid_power_w(now)
        pv = self.inputs.pv_power_w(now)
        home = self.inputs.home_power_w(now)
        if pv is not None:
            self.store.record_reading(PV_SERIES, now, max(0.0, pv))
        has_pv = any(m.role is MeterRole.PV for m in self.cfg.meters)
        if home is None and grid is not None and (pv is not None or not has_pv):
            cars = [self.site.measured_power_w(v, now) for v in self.site.vehicles.values() if v.plugged_in]
            if all(c is not None for c in cars):
                home = grid + (pv or 0.0) - sum(c for c in cars if c is not None)
        if home is not None:
            self.store.record_reading(HOME_LOAD_SERIES, now, max(0.0, home))

    async def _cut_off_v2l(self, vehicle: VehicleRuntime, now: dt.datetime) -> None:
        topic = vehicle.config.v2l_cutoff_topic
        soc = self.site.v2l_soc(vehicle, now)
        reason = "SoC unknown or stale" if soc is None else "SoC at the reserve"
        log.warning("v2l_cut_off", vehicle=vehicle.config.id, soc_percent=soc, reason=reason, topic=topic)
        self.store.log_event("v2l_cut_off", now, vehicle=vehicle.config.id, soc_percent=soc, reason=reason)
        self._persist_overrides(vehicle)
        if topic is not None:
            await self.mqtt.publish_raw(topic, vehicle.config.v2l_cutoff_payload.encode())
        self.request_replan("v2l cut-off")

    # -------------------------------------------------------------- publishing

    def _status(self, now: dt.datetime, stopping: bool = False) -> ControllerStatus:
        return ControllerStatus(
            at=now,
            safe_mode=self.inputs.safe_mode(now),
            reasons=tuple(self.inputs.safe_mode_reasons(now)),
            stale_meters=tuple(self.inputs.stale_meters(now)),
            last_plan_at=self.plan.created_at if self.plan else None,
            plan_status=("fallback " if self.plan and self.plan.fallback else "") + self.plan.solver_status
            if self.plan
            else None,
            version=__version__,
            extra={
                "grid_lost": str(self.inputs.is_grid_lost(now)).lower(),
                "stopping": str(stopping).lower(),
            },
        )

    async def _publish_state(self, now: dt.datetime) -> None:
        measured = [self.site.measured_power_w(v, now) for v in self.site.vehicles.values()]
        vehicles_w = [w for w in measured if w is not None]
        await self.mqtt.publish_site_flows(
            SiteFlows(
                at=now,
                grid_power_w=self.inputs.grid_power_w(now),
                pv_power_w=self.inputs.pv_power_w(now),
                home_power_w=self.inputs.home_power_w(now),
                vehicles_power_w=sum(vehicles_w) if vehicles_w else None,
                safe_mode=self.inputs.safe_mode(now),
            )
        )
        await self._publish_chargers(now)
        for vehicle in self.site.vehicles.values():
            departure = self.site.departure(vehicle, now)
            await self.mqtt.publish_vehicle(
                VehicleStatus(
                    vehicle_id=vehicle.config.id,
                    at=now,
                    soc_percent=self.site.measured_soc(vehicle),
                    reserve_percent=vehicle.config.reserve_percent,
                    target_soc_percent=departure.target_soc_percent if departure else None,
                    mode=vehicle.mode,
                    setpoint_w=vehicle.setpoint_w,
                    plugged_in=vehicle.plugged_in,
                    charger_id=vehicle.charger_id,
                    departure_at=departure.at if departure else None,
                    v2l_active=vehicle.v2l is not None and not vehicle.v2l_cut_off,
                    ev_limits=_ev_limits(vehicle),
                )
            )
        await self.mqtt.publish_status(self._status(now))

    def charger_statuses(self, now: dt.datetime) -> list[ChargerStatus]:
        """Every configured charger as the CSMS sees it, with the outcome of its last profiles."""
        views = self.ocpp.chargers
        ids = [c.id for c in self.cfg.chargers]
        ids += [cid for cid in views if cid not in ids]  # accepted without config (accept_unknown)
        return [_charger_status(views.get(cid), cid, now) for cid in ids]

    async def _publish_chargers(self, now: dt.datetime) -> None:
        for status in self.charger_statuses(now):
            await self.mqtt.publish_charger(status)

    # ---------------------------------------------------------------- HTTP API

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while every task runs (the loops, MQTT, the OCPP server and the HTTP API) and the
        dispatcher ticked recently (safe mode is still healthy)."""
        now = self.clock.now()
        stopped = [t.get_name() for t in self._tasks if t.done()]
        loops_alive = bool(self._tasks) and not stopped
        tick_age_s = self.clock.monotonic() - self._last_tick
        fresh = tick_age_s <= 3 * self.cfg.site.dispatch_interval_s + 10.0
        return loops_alive and fresh, {
            "stopped_tasks": stopped,
            "safe_mode": self.inputs.safe_mode(now),
            "mqtt_connected": self.mqtt.connected,
            "chargers_connected": sum(1 for v in self.ocpp.chargers.values() if v.connected),
            "last_dispatch_s_ago": round(tick_age_s, 1),
            "last_plan_at": self.plan.created_at if self.plan else None,
            "plan_status": self.plan.solver_status if self.plan else None,
        }

    def state(self) -> dict[str, Any]:
        """The site now: flows, vehicles, the plan's first steps (for dashboards and scripts)."""
        now = self.clock.now()
        vehicles = {}
        for v in self.site.vehicles.values():
            departure = self.site.departure(v, now)
            estimate = v.tracker.estimate()
            vehicles[v.config.id] = {
                "plugged_in": v.plugged_in,
                "charger_id": v.charger_id,
                "soc_percent": estimate.soc_percent if estimate else None,
                "soc_measured": estimate.measured if estimate else False,
                "reserve_percent": round(v.config.reserve_percent, 2),
                "mode": v.mode.value,
                "setpoint_w": v.setpoint_w,
                "departure_at": departure.at if departure else None,
                "target_soc_percent": departure.target_soc_percent if departure else None,
                "reason": self.plan.vehicles[v.config.id].reason
                if self.plan and v.config.id in self.plan.vehicles
                else None,
                "ev_limits": _ev_limits(v),
            }
        return {
            "at": now,
            "grid_power_w": self.inputs.grid_power_w(now),
            "pv_power_w": self.inputs.pv_power_w(now),
            "safe_mode": self.inputs.safe_mode(now),
            "safe_mode_reasons": self.inputs.safe_mode_reasons(now),
            "grid_lost": self.inputs.is_grid_lost(now),
            "vehicles": vehicles,
            "chargers": {status.charger_id: charger_state(status) for status in self.charger_statuses(now)},
            "plan": None
            if self.plan is None
            else {
                "created_at": self.plan.created_at,
                "status": self.plan.solver_status,
                "fallback": self.plan.fallback,
                "import_cost": self.plan.import_cost,
                "export_revenue": self.plan.export_revenue,
            },
        }

    # ------------------------------------------------------------ housekeeping

    async def _housekeeping_loop(self) -> None:
        """Meter history written every ``HISTORY_FLUSH_INTERVAL_S`` (the open minute in part, merged
        later), vehicle state saved and old data purged every ``HOUSEKEEPING_INTERVAL_S``; the
        database writes of history and purge run in a worker thread, off the event loop."""
        last_housekeeping = self.clock.monotonic()
        while True:
            await self.clock.sleep(HISTORY_FLUSH_INTERVAL_S)
            now = self.clock.now()
            try:
                await asyncio.to_thread(self.store.flush_history, now, partial=True)
                if self.clock.monotonic() - last_housekeeping >= HOUSEKEEPING_INTERVAL_S - 1.0:
                    last_housekeeping = self.clock.monotonic()
                    self._persist_vehicles()
                    retention = dt.timedelta(days=self.cfg.storage.history_retention_days)
                    await asyncio.to_thread(self.store.purge, now - retention)
            except Exception:
                log.exception("housekeeping_failed")

    async def _watch_server(self, name: str, server: OcppServer | HealthServer) -> None:
        """Runs while ``server`` listens; ends (so ``health()`` says unhealthy) when it stopped."""
        while server.listening:  # polled: the servers offer nothing to await
            await self.clock.sleep(SERVER_CHECK_INTERVAL_S)
        log.error("server_stopped", server=name)

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task_failed", task=name)

        task = asyncio.get_running_loop().create_task(guarded(), name=name)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


def _ev_limits(vehicle: VehicleRuntime) -> dict[str, float] | None:
    """The EV's own limits for its session, only those it reported (None: none)."""
    limits = vehicle.session_limits
    return None if limits is None else limits.model_dump(exclude_none=True)


def _outcome(record: ProfileRecord | None) -> ProfileOutcome | None:
    if record is None:
        return None
    return ProfileOutcome(
        purpose=record.purpose,
        status=record.status.value,
        at=record.at,
        reason=record.reason,
        attempt=record.attempt,
        valid_to=record.valid_to,
    )


def _charger_status(view: ChargerView | None, charger_id: str, now: dt.datetime) -> ChargerStatus:
    if view is None:  # configured, never seen
        return ChargerStatus(charger_id=charger_id, at=now, connected=False)
    return ChargerStatus(
        charger_id=charger_id,
        at=now,
        connected=view.connected,
        ocpp_version=view.ocpp_version.value if view.ocpp_version else None,
        status=view.status,
        transaction_id=view.transaction_id,
        last_seen=view.last_seen,
        last_profile=_outcome(view.last_profile),
        default_profile=_outcome(view.default_profile),
    )


async def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until all have ended, cancelling again any that swallowed it."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)


async def run_daemon(cfg: SiteConfig, stop_signals: StopSignals | None = None) -> None:
    """Run until ``stop_signals`` (SIGTERM/SIGINT) ask to stop; then safe profiles to every charger,
    store flushed, ``offline`` published."""
    daemon = Daemon(cfg)
    if stop_signals is not None:
        stop_signals.connect(asyncio.get_running_loop(), daemon.stop)
    try:
        await daemon.run()
    finally:
        if stop_signals is not None:
            stop_signals.disconnect()
