"""The daemon: one asyncio TaskGroup running the OCPP server, the HTTP API, the MQTT client, the
planner, the dispatcher and the store, with a clean shutdown.

This module wires the parts and owns the lifecycle: events from OCPP and MQTT go to
:class:`~controller.site_events.SiteEvents` (the one path from the world to the site state) and the
daemon acts on its :class:`~controller.site_events.Reaction`; :class:`~controller.persistence.SitePersistence`
keeps the state in the store, :class:`~controller.forecasts.ForecastService` supplies the forecasts,
:mod:`controller.views` says what is published. The planner makes a Plan every
``replan_interval_minutes`` and at once (debounced) on plug-in, unplug, new prices, new limits and
changed departure/target/mode; the dispatcher turns the current plan step and the latest readings
into charger schedules every ``dispatch_interval_s`` and at once after a new plan or a grid reading
that breaks a limit (both :class:`~controller.trigger.IntervalTrigger`). The solve runs in a worker
thread so OCPP and MQTT stay responsive. Configured price providers and PV forecast services are
fetched by their own tasks (:mod:`controller.sources.fetcher`), their data taken the way MQTT's is.
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
from controller.api import ApiServer
from controller.api.metrics import DaemonMetrics
from controller.battery.control import BatteryControls
from controller.clock import Clock, SystemClock
from controller.config import ChargerConfig, SiteConfig
from controller.daemon_api import api_server, record_tick
from controller.dispatch import ChargerCommand, Dispatcher
from controller.domain import Plan
from controller.event_router import EventRouter
from controller.forecasts import ForecastService
from controller.health import gather_facts, health_details
from controller.mqtt import SiteMqttClient
from controller.ocpp import OcppServer
from controller.optimizer import Planner
from controller.persistence import SitePersistence
from controller.shutdown import StopSignals
from controller.site import Site, VehicleRuntime
from controller.site_events import SiteEvents
from controller.site_inputs import SiteInputs
from controller.sources.fetcher import SourceFetchers
from controller.store import Store
from controller.tasks import cancel_and_wait
from controller.trigger import IntervalTrigger
from controller.views import (
    battery_statuses,
    charger_statuses,
    controller_status,
    site_flows,
    state_view,
    vehicle_statuses,
)

__all__ = ["Daemon", "run_daemon"]

log = structlog.get_logger("controller.app")

REPLAN_DEBOUNCE_S = 0.2
PUBLISH_INTERVAL_S = 10.0
# Housekeeping beyond the history (vehicle state, purge) runs this often.
HOUSEKEEPING_INTERVAL_S = 60.0
# How often the TaskGroup checks that the OCPP server and the HTTP API still listen.
SERVER_CHECK_INTERVAL_S = 5.0
# The stop: the safe profiles go to all chargers in parallel within this budget (a call still
# unanswered is abandoned), the last status within the next; with closing the connections and the
# store the whole stop stays within 5 s, well inside Docker's default 10 s grace period.
SAFE_PROFILES_BUDGET_S = 3.0
STOP_PUBLISH_TIMEOUT_S = 0.5


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
        self.persistence = SitePersistence(self.store, self.site, self.clock)
        self.events = SiteEvents(self.site, self.persistence.is_open_session)
        self.forecasts = ForecastService(cfg, self.store, self.site)
        self.planner = Planner(cfg)
        self.dispatcher = Dispatcher(cfg)
        self.plan: Plan | None = None
        self.planner_trigger = IntervalTrigger(
            self.clock, "replan", cfg.site.replan_interval_minutes * 60.0, debounce_s=REPLAN_DEBOUNCE_S
        )
        self.dispatch_trigger = IntervalTrigger(self.clock, "dispatch", cfg.site.dispatch_interval_s)
        self.router = EventRouter(
            self.clock,
            self.store,
            self.events,
            self.persistence,
            self.dispatcher,
            self.planner_trigger,
            self.dispatch_trigger,
        )
        self.ocpp = OcppServer(cfg, clock=self.clock, on_event=self.router.handle_ocpp_event, port=ocpp_port)
        self.mqtt = SiteMqttClient(
            cfg,
            self.clock,
            self.inputs,
            on_command=self.router.handle_command,
            on_reading=self.router.handle_reading,
            on_signal=self.router.handle_signal,
        )
        self.sources = SourceFetchers.for_daemon(self)  # prices and PV forecasts from the internet
        self.batteries = BatteryControls(self.site, self.clock, self.mqtt.publish_raw)
        self._stopping = asyncio.Event()
        self._ready = asyncio.Event()
        self._pending: set[asyncio.Task[Any]] = set()
        self._last_publish = 0.0
        self._last_tick = self.clock.monotonic()
        self._started_at = self.clock.monotonic()
        self._tasks: list[asyncio.Task[Any]] = []
        self.replans = 0
        self.metrics = DaemonMetrics.for_daemon(self)
        self.http: ApiServer | None = None
        if cfg.api.enabled:
            self.http = api_server(self)

    # --------------------------------------------------------------- lifecycle

    def stop(self) -> None:
        self._stopping.set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def run(self) -> None:
        try:
            self.plan = self.persistence.restore()
            await self.ocpp.start()
            if self.http is not None:
                await self.http.start()
        except BaseException:
            await self.ocpp.stop()
            self.persistence.close()  # e.g. a port is taken: leave the store clean
            raise
        log.info("daemon_started", version=__version__, ocpp_port=self.ocpp.port, site=self.cfg.site.name)
        try:
            async with asyncio.TaskGroup() as group:
                mqtt = group.create_task(self.mqtt.run(), name="mqtt")
                control = [
                    group.create_task(self.planner_trigger.run(self.replan), name="planner"),
                    group.create_task(self.dispatch_trigger.run(self._dispatch), name="dispatcher"),
                    group.create_task(
                        self.persistence.housekeeping(
                            self.cfg.storage.history_flush_s,
                            HOUSEKEEPING_INTERVAL_S,
                            self.cfg.storage.history_retention_days,
                        ),
                        name="housekeeping",
                    ),
                ]
                more = [*self.sources.tasks(), *self.batteries.tasks()]  # fetchers, Modbus polls
                control += [group.create_task(c, name=n) for n, c in more]
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
                # Before anything else is awaited: a sender waking for a retry now sends no discharge.
                self.ocpp.begin_stop()
                self.batteries.begin_stop()
                # Planner and dispatcher stop first: nothing may overtake the safe profiles.
                await cancel_and_wait(control)
                await self._safe_shutdown()
                mqtt.cancel()  # publishes ``offline`` on its way out
                for watcher in servers:
                    watcher.cancel()
        finally:
            if self.http is not None:
                await self.http.stop()
            await self.sources.aclose()
            await self.ocpp.stop()
            self.persistence.close()
            log.info("daemon_stopped")

    async def _safe_shutdown(self) -> None:
        """Leave every charger safe without us: no discharge, charging only within limits.

        A running transaction gets a TxProfile without discharge (the plan's charging, as in safe
        mode; a charger the dispatcher has nothing for gets the idle schedule), since a TxProfile
        outranks the default profile and could otherwise keep discharging for the rest of its
        validity; then every connected charger gets its safe default profile. All chargers in
        parallel within ``SAFE_PROFILES_BUDGET_S``; nothing that discharges goes out once this began.
        """
        await cancel_and_wait(list(self._pending))
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
        # The home batteries go back to their own mode in parallel, within the same budget.
        records, _ = await asyncio.gather(
            self.ocpp.make_safe(schedules, SAFE_PROFILES_BUDGET_S),
            self.batteries.release_all(SAFE_PROFILES_BUDGET_S),
        )
        for charger_id, sent in records.items():
            for record in sent:
                log.info(
                    "safe_profile", charger=charger_id, purpose=record.purpose, status=record.status.value
                )
        self.persistence.log_event("shutdown", self.clock.now(), safe_profiles=len(connected))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_PUBLISH_TIMEOUT_S):
                await self.mqtt.publish_status(
                    controller_status(self.site, self.plan, self.clock.now(), stopping=True)
                )

    # ------------------------------------------------------------------ events

    def request_replan(self, why: str) -> None:
        log.debug("replan_requested", why=why)
        self.planner_trigger.fire(why)

    # ----------------------------------------------------------------- planner

    async def replan(self, triggers: list[str] | None = None) -> Plan:
        """Forecasts, snapshot and solve; ``triggers`` are the events that asked for it (logged)."""
        now = self.clock.now()
        # The MQTT PV forecast changes on the loop: read it here, the history in a worker thread.
        pv_external = self.forecasts.pv_external(now)
        load_w, pv_w = await asyncio.to_thread(self.forecasts.forecasts, now, pv_external)
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
        self.persistence.save_plan(plan)
        self.metrics.observe_plan(plan)
        self.dispatch_trigger.fire()
        self._spawn(self.mqtt.publish_plan(plan), "publish_plan")
        return plan

    # -------------------------------------------------------------- dispatcher

    async def _dispatch(self, _reasons: list[str]) -> None:
        await self.dispatch_once()

    async def dispatch_once(self) -> list[ChargerCommand]:
        now = self.clock.now()
        self._last_tick = self.clock.monotonic()
        self.expire_grid_state(now)
        self.router.track_safe_mode(now)
        self.forecasts.record_flows(now)
        record_tick(self, now)
        for due in self.site.v2l_cutoffs(now):
            await _cut_off_v2l(self, due, now)
        inputs = self.site.dispatch_inputs(now, self.plan)
        commands = self.dispatcher.dispatch(inputs)
        setpoints = {c.vehicle_id: c.setpoint_w for c in commands if c.vehicle_id is not None}
        for vehicle in self.site.vehicles.values():
            # A car without a command (unplugged, away) has no setpoint, whatever it had before.
            vehicle.setpoint_w = setpoints.get(vehicle.config.id, 0.0)
        for command in commands:
            if command.send and command.charger_id in self.ocpp.chargers:
                self._spawn(self._send(command), f"profile:{command.charger_id}")
        # After the chargers: the home batteries' setpoints (and keep-alives).
        self._spawn(self.batteries.apply(self.dispatcher.dispatch_batteries(inputs)), "batteries")
        if (
            self.clock.now().timestamp() - self._last_publish >= PUBLISH_INTERVAL_S
            or any(c.send for c in commands)
            or self.router.publish_soon
        ):
            self.router.publish_soon = False
            self._last_publish = self.clock.now().timestamp()
            self._spawn(self._publish_state(now), "publish_state")
        return commands

    async def _send(self, command: ChargerCommand) -> None:
        record = await self.ocpp.apply_schedule(command.schedule)
        self.metrics.observe_profile(command.charger_id, record.status.value)
        log.info(
            "profile_sent",
            charger=command.charger_id,
            setpoint_w=command.setpoint_w,
            status=record.status.value,
            reasons=list(command.reasons),
        )

    def expire_grid_state(self, now: dt.datetime) -> None:
        """An outage state not refreshed within ``grid_signals.outage_max_age_s`` ends here."""
        at = self.inputs.grid_state_at
        since = at.isoformat() if at is not None else None
        if self.inputs.expire_grid_state(now):
            max_age_s = self.cfg.grid_signals.outage_max_age_s
            log.warning("grid_state_expired", since=since, max_age_s=max_age_s)
            self.persistence.log_event("grid_state_expired", now, since=since, max_age_s=max_age_s)
            self.request_replan("grid_state")

    # -------------------------------------------------------------- publishing

    async def _publish_state(self, now: dt.datetime) -> None:
        await self.mqtt.publish_site_flows(site_flows(self.site, now))
        for charger in charger_statuses(self.cfg, self.ocpp.chargers, now):
            await self.mqtt.publish_charger(charger)
        for vehicle in vehicle_statuses(self.site, now):
            await self.mqtt.publish_vehicle(vehicle)
        for battery in battery_statuses(self.site, self.plan, now):
            await self.mqtt.publish_battery(battery)
        await self.mqtt.publish_status(controller_status(self.site, self.plan, now))

    # ---------------------------------------------------------------- HTTP API

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Alive while every task runs and the dispatcher ticked recently; what is degraded (MQTT down,
        safe mode, ...) is listed without making it unhealthy (see :mod:`controller.health`)."""
        stopped = [t.get_name() for t in self._tasks if t.done()]
        tick_age_s = self.clock.monotonic() - self._last_tick
        fresh = tick_age_s <= 3 * self.cfg.site.dispatch_interval_s + 10.0
        alive = bool(self._tasks) and not stopped and fresh
        up_s = self.clock.monotonic() - self._started_at
        parts = (self.cfg, self.inputs, self.ocpp.chargers, self.plan, self.sources.problems())
        facts = gather_facts(*parts, now=self.clock.now(), up_s=up_s, mqtt_connected=self.mqtt.connected)
        details = {"stopped_tasks": stopped, "last_dispatch_s_ago": round(tick_age_s, 1)}
        body = health_details(alive, facts, **details, **self.sources.details())
        return alive, self.batteries.add_to_health(body)

    def state(self) -> dict[str, Any]:
        """The site now: flows, vehicles, chargers, the plan's summary (for dashboards and scripts)."""
        now = self.clock.now()
        return state_view(self.site, self.plan, charger_statuses(self.cfg, self.ocpp.chargers, now), now)

    # ------------------------------------------------------------ housekeeping

    async def _watch_server(self, name: str, server: OcppServer | ApiServer) -> None:
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


async def _cut_off_v2l(daemon: Daemon, vehicle: VehicleRuntime, now: dt.datetime) -> None:
    """A V2L session whose SoC reached the reserve (or went unknown) ends: logged, stored, the
    configured cut-off command published, re-planned."""
    topic = vehicle.config.v2l_cutoff_topic
    soc = daemon.site.v2l_soc(vehicle, now)
    reason = "SoC unknown or stale" if soc is None else "SoC at the reserve"
    log.warning("v2l_cut_off", vehicle=vehicle.config.id, soc_percent=soc, reason=reason, topic=topic)
    daemon.persistence.log_event(
        "v2l_cut_off", now, vehicle=vehicle.config.id, soc_percent=soc, reason=reason
    )
    daemon.persistence.save_overrides(vehicle)
    if topic is not None:
        await daemon.mqtt.publish_raw(topic, vehicle.config.v2l_cutoff_payload.encode())
    daemon.request_replan("v2l cut-off")


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
