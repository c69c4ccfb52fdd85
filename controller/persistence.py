"""The site's state in the store: restored on start, saved when it changes, so a crash loses little.

Vehicles (plug state, SoC, the car's own departure and limits), driver overrides and the latest plan
are restored on start; a row that does not parse (a damaged file, an older format) is logged and
skipped, and the daemon starts without it.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import structlog

from controller.clock import Clock
from controller.domain import Plan
from controller.site import Site, VehicleRuntime
from controller.store import Store

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
        self._soc_saved: dict[str, tuple[float, float]] = {}

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
        log.info(
            "state_restored",
            vehicles=restored,
            open_sessions=len(self.store.open_sessions()),
            plan=plan is not None,
        )
        return plan

    def save_vehicles(self, vehicle: VehicleRuntime | None = None) -> None:
        """``vehicle``'s state, or every vehicle's."""
        now = self.clock.now()
        for v in [vehicle] if vehicle is not None else list(self.site.vehicles.values()):
            self.store.save_vehicle_state(v.config.id, self.site.vehicle_record(v), now)

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

    def save_overrides(self, vehicle: VehicleRuntime) -> None:
        now = self.clock.now()
        for kind, body in self.site.overrides(vehicle).items():
            self.store.set_override(vehicle.config.id, kind, body, now)
        if vehicle.one_off is None:
            self.store.clear_override(vehicle.config.id, "departure")
        if vehicle.v2l is None:
            self.store.clear_override(vehicle.config.id, "v2l")

    def is_open_session(self, charger_id: str, transaction_id: str) -> bool:
        return any(
            s.charger_id == charger_id and s.transaction_id == transaction_id
            for s in self.store.open_sessions()
        )

    async def housekeeping(
        self, flush_interval_s: float, housekeeping_interval_s: float, retention_days: float
    ) -> None:
        """Meter history written every ``flush_interval_s`` (the open minute in part, merged later),
        vehicle state saved, old data purged and older plans and history thinned every
        ``housekeeping_interval_s``; the database writes of history, purge and thinning run in a worker
        thread, off the event loop. Forever (until cancelled)."""
        clock = self.clock
        last_housekeeping = clock.monotonic()
        while True:
            await clock.sleep(flush_interval_s)
            now = clock.now()
            try:
                await asyncio.to_thread(self.store.flush_history, now, partial=True)
                if clock.monotonic() - last_housekeeping >= housekeeping_interval_s - 1.0:
                    last_housekeeping = clock.monotonic()
                    self.save_vehicles()
                    await asyncio.to_thread(self._prune, now, retention_days)
            except Exception:
                log.exception("housekeeping_failed")

    def _prune(self, now: dt.datetime, retention_days: float) -> None:
        """Drop what is older than the retention, thin the rest with age (``Store.thin``)."""
        self.store.purge(now - dt.timedelta(days=retention_days))
        self.store.thin(now)
