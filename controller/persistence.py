"""The site's state in the store: restored on start, saved when it changes, so a crash loses little.

Vehicles (plug state, SoC, the car's own departure and limits), driver overrides and the latest plan
are restored on start; a row that does not parse (a damaged file, an older format) is logged and
skipped, and the daemon starts without it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import sqlite3
from typing import Any

import structlog

from controller.clock import Clock
from controller.dispatch.peak_window import month_start
from controller.domain import Plan
from controller.site import Site, VehicleRuntime
from controller.store import Store
from controller.store_writer import StoreWriter

__all__ = ["SOC_PERSIST_DELTA_PERCENT", "SOC_PERSIST_INTERVAL_S", "SitePersistence"]

log = structlog.get_logger("controller.app")

# What a stored row that does not parse raises (json, dict access, fromisoformat, enum, float()).
_RESTORE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)
# A measured SoC is written to the store when it moved this much, or this long after the last write,
# so a crash (kill -9) loses little of it without a write per meter sample.
SOC_PERSIST_DELTA_PERCENT = 1.0
SOC_PERSIST_INTERVAL_S = 60.0


class SitePersistence:
    def __init__(self, store: Store, site: Site, clock: Clock) -> None:
        self.store = store
        self.site = site
        self.clock = clock
        self.writer = StoreWriter()
        """Every write goes through it: off the event loop, in order."""
        self._soc_saved: dict[str, tuple[float, float]] = {}
        self._vehicle_saved: dict[str, dict[str, Any]] = {}
        # Sessions open in the store, by charger (its transaction id): known without a read, also
        # while their writes are still queued. Loaded by ``restore``.
        self._open_sessions: dict[str, str | None] = {}

    def restore(self) -> Plan | None:
        """Vehicles and overrides into the site; returns the stored plan if it still covers now."""
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
        if plan is not None and plan.step_index(now) is None:
            plan = None
        self._open_sessions = {s.charger_id: s.transaction_id for s in self.store.open_sessions()}
        self._restore_import_peak(now)
        log.info(
            "state_restored",
            vehicles=restored,
            open_sessions=len(self._open_sessions),
            plan=plan is not None,
        )
        return plan

    def _restore_import_peak(self, now: dt.datetime) -> None:
        """With a capacity tariff: the month's peak so far and the open window's import, from the grid
        meter's stored history, so a restart does not forget them."""
        inputs = self.site.inputs
        capacity = self.site.cfg.tariff.capacity
        meter_id = inputs.peak_meter_id
        if inputs.import_peak is None or capacity is None or meter_id is None:
            return
        window = dt.timedelta(minutes=capacity.window_minutes)
        since = month_start(now, self.site.cfg.site.timezone)
        try:
            peak_w, window_wh = self.store.import_peak(meter_id, since, now, window)
        except sqlite3.Error as exc:
            log.warning("import_peak_not_restored", error=str(exc))
            return
        inputs.import_peak.restore(peak_w, window_wh, now)
        log.info("import_peak_restored", month_peak_w=round(peak_w, 1), window_wh=round(window_wh, 1))

    def save_vehicles(self, vehicle: VehicleRuntime | None = None) -> None:
        """``vehicle``'s state, or every vehicle's, queued for the store where it changed."""
        changed: dict[str, dict[str, Any]] = {}
        for v in [vehicle] if vehicle is not None else list(self.site.vehicles.values()):
            record = self.site.vehicle_record(v)
            if self._vehicle_saved.get(v.config.id) != record:
                changed[v.config.id] = self._vehicle_saved[v.config.id] = record
        if changed:
            self.writer.submit(self.store.save_vehicle_states, changed, self.clock.now())

    def soc_read(self, vehicle: VehicleRuntime) -> None:
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
            self.save_vehicles(vehicle)

    def save_overrides(self, vehicle: VehicleRuntime) -> concurrent.futures.Future[None]:
        """The vehicle's overrides, synced in one commit; done once they are on disk (await it with
        :func:`asyncio.wrap_future` before acknowledging the command that changed them)."""
        cleared = [
            kind
            for kind, gone in (("departure", vehicle.one_off is None), ("v2l", vehicle.v2l is None))
            if gone
        ]
        return self.writer.submit(
            self.store.save_overrides,
            vehicle.config.id,
            self.site.overrides(vehicle),
            cleared,
            self.clock.now(),
        )

    def log_event(self, kind: str, at: dt.datetime, **body: Any) -> None:
        self.writer.submit(self.store.log_event, kind, at, **body)

    def save_plan(self, plan: Plan) -> None:
        self.writer.submit(self.store.save_plan, plan)

    def start_session(
        self, charger_id: str, started_at: dt.datetime, transaction_id: str, **fields: Any
    ) -> None:
        """Open a session (closing one still open on the charger, as the store does)."""
        self._open_sessions[charger_id] = transaction_id
        self.writer.submit(
            self.store.start_session, charger_id, started_at, transaction_id=transaction_id, **fields
        )

    def stop_session(self, charger_id: str, stopped_at: dt.datetime, stop_energy_wh: float | None) -> None:
        self._open_sessions.pop(charger_id, None)
        self.writer.submit(self.store.stop_session, charger_id, stopped_at, stop_energy_wh)

    def close(self) -> None:
        """Every vehicle's state, everything queued written, the store closed (history flushed)."""
        self.save_vehicles()
        self.writer.close()
        self.store.close()

    def is_open_session(self, charger_id: str, transaction_id: str) -> bool:
        return self._open_sessions.get(charger_id) == transaction_id

    async def housekeeping(
        self, flush_interval_s: float, housekeeping_interval_s: float, retention_days: float
    ) -> None:
        """Meter history written every ``flush_interval_s`` (the open minute in part, merged later),
        vehicle state saved, old data purged and older plans and history thinned every
        ``housekeeping_interval_s``; like every write, on the store's own thread. Forever (until
        cancelled)."""
        clock = self.clock
        last_housekeeping = clock.monotonic()
        while True:
            await clock.sleep(flush_interval_s)
            now = clock.now()
            try:
                await asyncio.wrap_future(self.writer.submit(self.store.flush_history, now, partial=True))
                if clock.monotonic() - last_housekeeping >= housekeeping_interval_s - 1.0:
                    last_housekeeping = clock.monotonic()
                    self.save_vehicles()
                    await asyncio.wrap_future(self.writer.submit(self._prune, now, retention_days))
            except Exception:
                log.exception("housekeeping_failed")

    def _prune(self, now: dt.datetime, retention_days: float) -> None:
        """Drop what is older than the retention, thin the rest with age (``Store.thin``)."""
        self.store.purge(now - dt.timedelta(days=retention_days))
        self.store.thin(now)
