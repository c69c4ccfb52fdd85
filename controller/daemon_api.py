"""The daemon as the HTTP API sees it (:class:`~controller.api.routes.ApiBackend`): its state as
API views, store reads in a worker thread, and driver commands through the same path as MQTT's.

Also what the dashboard's history and money need that the meters alone do not give: every
dispatch tick records each car's power, SoC and plug state and the prices in force as history
series (``RECORDED_SERIES``), in the store's one-minute buckets like the meters.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import zoneinfo
from typing import TYPE_CHECKING, Any

import numpy as np

from controller import __version__
from controller.api import ApiAuth, ApiServer, create_app
from controller.api.models import (
    BatteryView,
    ChargerView,
    Degradation,
    EventView,
    FlowsView,
    HistoryView,
    MoneyPeriod,
    MoneyView,
    PlanBatteryView,
    PlanVehicleView,
    PlanView,
    ProfileView,
    StatusView,
    VehicleView,
)
from controller.commands import parse_command
from controller.domain import MeterRole, Plan
from controller.forecasts import HOME_LOAD_SERIES, PV_SERIES
from controller.logs import redact_secrets
from controller.money import MoneyResult, MoneySeries, VehicleSeries, money_for_period
from controller.mqtt.payloads import ProfileOutcome
from controller.views import battery_statuses, charger_statuses, ev_limits, site_flows

if TYPE_CHECKING:
    from controller.app import Daemon
    from controller.site import VehicleRuntime

__all__ = ["RECORDED_SERIES", "DaemonApi", "api_server", "record_tick"]

IMPORT_PRICE_SERIES = "_price_import"
EXPORT_PRICE_SERIES = "_price_export"
RECORDED_SERIES = (IMPORT_PRICE_SERIES, EXPORT_PRICE_SERIES)


def car_series(vehicle_id: str, what: str) -> str:
    """History series of a car: ``power_w``, ``soc_percent`` or ``plugged``."""
    return f"_car:{vehicle_id}:{what}"


def record_tick(daemon: Daemon, now: dt.datetime) -> None:
    """Each car's power, SoC and plug state, and the prices in force, into the history buckets."""
    store, site, plan = daemon.store, daemon.site, daemon.plan
    for vehicle in site.vehicles.values():
        vid = vehicle.config.id
        store.record_reading(car_series(vid, "plugged"), now, 1.0 if vehicle.plugged_in else 0.0)
        power = site.measured_power_w(vehicle, now) if vehicle.plugged_in else 0.0
        if power is not None:
            store.record_reading(car_series(vid, "power_w"), now, power)
        soc = site.measured_soc(vehicle)
        if soc is not None:
            store.record_reading(car_series(vid, "soc_percent"), now, soc)
    index = plan.step_index(now) if plan is not None else None
    if plan is not None and index is not None:
        store.record_reading(IMPORT_PRICE_SERIES, now, plan.import_price_per_kwh[index])
        store.record_reading(EXPORT_PRICE_SERIES, now, plan.export_price_per_kwh[index])


def api_server(daemon: Daemon) -> ApiServer:
    """The daemon's HTTP server (not started) as ``api:`` configures it."""
    api = daemon.cfg.api
    token = api.token.get_secret_value() if api.token else None
    auth = ApiAuth(token, api.password_hash, api.session_hours * 3600.0)
    tls = api.tls_cert_file is not None
    app = create_app(DaemonApi(daemon), auth, secure_cookie=tls, metrics_public=api.metrics_public)
    return ApiServer(app, api.host, api.port, tls_cert_file=api.tls_cert_file, tls_key_file=api.tls_key_file)


def _profile(outcome: ProfileOutcome | None) -> ProfileView | None:
    if outcome is None:
        return None
    return ProfileView(
        purpose=outcome.purpose,
        status=outcome.status,
        at=outcome.at,
        reason=outcome.reason,
        accepted=outcome.status == "accepted",
    )


def _finite(values: Any) -> list[float]:
    return [float(v) if math.isfinite(v) else 0.0 for v in values]


class DaemonApi:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.cfg = daemon.cfg

    # --------------------------------------------------------------- status

    def health(self) -> tuple[bool, dict[str, Any]]:
        return self.daemon.health()

    def state(self) -> dict[str, Any]:
        return self.daemon.state()

    def status(self) -> StatusView:
        daemon, now = self.daemon, self.daemon.clock.now()
        alive, details = daemon.health()
        inputs, plan = daemon.inputs, daemon.plan
        return StatusView(
            at=now,
            status=details.get("status", "ok") if alive else "unhealthy",
            degraded=[Degradation(**d) for d in details.get("degraded", [])],
            safe_mode=inputs.safe_mode(now),
            safe_mode_reasons=list(inputs.safe_mode_reasons(now)),
            grid_lost=inputs.is_grid_lost(now),
            mqtt_connected=daemon.mqtt.connected,
            stale_meters=list(inputs.stale_meters(now)),
            last_plan_at=plan.created_at if plan else None,
            plan_status=(("fallback " if plan.fallback else "") + plan.solver_status) if plan else None,
            version=__version__,
            currency=self.cfg.site.currency,
            timezone=self.cfg.site.timezone,
        )

    def flows(self) -> FlowsView:
        now = self.daemon.clock.now()
        flows = site_flows(self.daemon.site, now)
        return FlowsView(
            at=now,
            grid_w=flows.grid_power_w,
            pv_w=flows.pv_power_w,
            home_w=flows.home_power_w,
            vehicles_w=flows.vehicles_power_w,
            batteries_w=flows.batteries_power_w,
            safe_mode=flows.safe_mode,
            stale=list(self.daemon.inputs.stale_meters(now)),
        )

    def vehicle_ids(self) -> list[str]:
        return list(self.daemon.site.vehicles)

    def vehicles(self) -> list[VehicleView]:
        now = self.daemon.clock.now()
        return [self._vehicle(v, now) for v in self.daemon.site.vehicles.values()]

    def _vehicle(self, vehicle: VehicleRuntime, now: dt.datetime) -> VehicleView:
        site, cfg = self.daemon.site, vehicle.config
        departure = site.departure(vehicle, now)
        estimate = vehicle.tracker.estimate()
        planned = self.daemon.plan.vehicles.get(cfg.id) if self.daemon.plan else None
        weekly: dict[str, dict[str, Any]] = {
            day: rule.model_dump(mode="json") for day, rule in cfg.departures.items()
        }
        for day, override in vehicle.weekly.items():
            if override is None:
                weekly.pop(day, None)
            else:
                weekly[day] = override.model_dump(mode="json")
        source = None
        if departure is not None:
            source = (
                "override"
                if vehicle.one_off is not None
                else "car"
                if vehicle.charger_departure
                else "schedule"
            )
        return VehicleView(
            id=cfg.id,
            name=cfg.name or cfg.id,
            capacity_kwh=cfg.usable_capacity_kwh,
            plugged_in=vehicle.plugged_in,
            charger_id=vehicle.charger_id,
            soc_percent=estimate.soc_percent if estimate else None,
            soc_measured=estimate.measured if estimate else False,
            soc_at=estimate.at if estimate else None,
            reserve_percent=round(cfg.reserve_percent, 2),
            max_soc_percent=cfg.max_soc_percent,
            target_soc_percent=departure.target_soc_percent if departure else None,
            departure_at=departure.at if departure else None,
            departure_source=source,
            mode=vehicle.mode.value,
            setpoint_w=vehicle.setpoint_w,
            measured_power_w=site.measured_power_w(vehicle, now),
            v2l_active=vehicle.v2l is not None and not vehicle.v2l_cut_off,
            permissions=cfg.permissions.model_dump(),
            session_limits=ev_limits(vehicle),
            reason=planned.reason if planned else None,
            weekly=weekly,
        )

    def batteries(self) -> list[BatteryView]:
        daemon = self.daemon
        views = []
        for status in battery_statuses(daemon.site, daemon.plan, daemon.clock.now()):
            cfg = daemon.site.batteries[status.battery_id].config
            views.append(
                BatteryView.model_validate(
                    {
                        "id": cfg.id,
                        "name": cfg.name or cfg.id,
                        "capacity_kwh": cfg.usable_capacity_kwh,
                        "soc_percent": status.soc_percent,
                        "power_w": status.power_w,
                        "planned_power_w": status.planned_power_w,
                        "floor_percent": cfg.floor_percent,
                        "max_soc_percent": cfg.max_soc_percent,
                        "mode": status.mode,
                        "setpoint_w": status.setpoint_w,
                        "control": cfg.control.mode,
                        "control_status": status.control_status,
                        "control_detail": status.control_detail or None,
                    }
                )
            )
        return views

    def chargers(self) -> list[ChargerView]:
        now = self.daemon.clock.now()
        return [
            ChargerView(
                id=c.charger_id,
                connected=c.connected,
                ocpp_version=c.ocpp_version,
                status=c.status,
                transaction_id=c.transaction_id,
                last_seen=c.last_seen,
                last_profile=_profile(c.last_profile),
                default_profile=_profile(c.default_profile),
            )
            for c in charger_statuses(self.cfg, self.daemon.ocpp.chargers, now)
        ]

    def plan(self) -> PlanView | None:
        plan = self.daemon.plan
        return None if plan is None else self._plan(plan, self.daemon.clock.now())

    def _plan(self, plan: Plan, now: dt.datetime) -> PlanView:
        site = self.daemon.site
        cars: dict[str, PlanVehicleView] = {}
        for vid, vp in plan.vehicles.items():
            vehicle = site.vehicles.get(vid)
            departure = site.departure(vehicle, now) if vehicle is not None else None
            cars[vid] = PlanVehicleView(
                power_w=_finite(vp.power_w),
                soc_percent=_finite(vp.soc_percent),
                v2l_power_w=_finite(vp.v2l_power_w),
                reason=vp.reason,
                reserve_percent=vehicle.config.reserve_percent if vehicle else 0.0,
                target_soc_percent=departure.target_soc_percent if departure else None,
                departure_at=departure.at if departure else None,
            )
        return PlanView(
            created_at=plan.created_at,
            start=plan.start,
            step_s=int(plan.step.total_seconds()),
            steps=plan.steps,
            fallback=plan.fallback,
            solver_status=plan.solver_status,
            solve_time_ms=plan.solve_time_ms,
            import_cost=plan.import_cost,
            export_revenue=plan.export_revenue,
            total_cost=plan.total_cost,
            import_price_per_kwh=_finite(plan.import_price_per_kwh),
            export_price_per_kwh=_finite(plan.export_price_per_kwh),
            grid_import_w=_finite(plan.grid_import_w),
            grid_export_w=_finite(plan.grid_export_w),
            vehicles=cars,
            batteries={
                bid: PlanBatteryView(
                    power_w=_finite(bp.power_w),
                    soc_percent=_finite(bp.soc_percent),
                    controlled=bp.controlled,
                    reason=bp.reason,
                )
                for bid, bp in plan.batteries.items()
            },
        )

    def config(self) -> dict[str, Any]:
        """The running config; secrets (passwords, hashes, tokens) blanked at any depth."""
        return dict(redact_secrets(None, "", self.cfg.model_dump(mode="json")))

    def metrics(self) -> tuple[bytes, str]:
        self.daemon.metrics.sync_frames(self.daemon.ocpp.frame_counts)
        return self.daemon.metrics.render()

    # -------------------------------------------------------------- history

    def _site_series(self) -> dict[str, str]:
        """Name in the API -> stored series."""
        grid = next((m.id for m in self.cfg.meters if m.role == MeterRole.GRID), None)
        series = {"home_w": HOME_LOAD_SERIES, "pv_w": PV_SERIES}
        if grid is not None:
            series["grid_w"] = grid
        series["import_price"] = IMPORT_PRICE_SERIES
        series["export_price"] = EXPORT_PRICE_SERIES
        for vid in self.daemon.site.vehicles:
            series[f"{vid}.power_w"] = car_series(vid, "power_w")
            series[f"{vid}.soc_percent"] = car_series(vid, "soc_percent")
        return series

    async def history(self, since: dt.datetime, until: dt.datetime, step_s: int) -> HistoryView:
        step = dt.timedelta(seconds=step_s)
        first = dt.datetime.fromtimestamp(since.timestamp() // step_s * step_s, dt.UTC)
        times = [first + i * step for i in range(int((until - first) / step) + 1) if first + i * step < until]
        index = {t: i for i, t in enumerate(times)}
        store = self.daemon.store

        def read() -> dict[str, list[float | None]]:
            out: dict[str, list[float | None]] = {}
            for name, stored in self._site_series().items():
                values: list[float | None] = [None] * len(times)
                for at, mean in store.history_means(stored, first, until, step):
                    if at in index:
                        values[index[at]] = round(mean, 4)
                out[name] = values
            return out

        series = await asyncio.to_thread(read)
        return HistoryView(since=first, until=until, step_s=step_s, times=times, series=series)

    async def events(self, limit: int) -> list[EventView]:
        rows = await asyncio.to_thread(self.daemon.store.events, None, limit)
        return [EventView(at=at, kind=kind, body=body) for at, kind, body in rows]

    # ---------------------------------------------------------------- money

    async def money(self) -> MoneyView:
        now = self.daemon.clock.now()
        tz = self.cfg.site.timezone
        series = await asyncio.to_thread(self._money_series, now)
        today = money_for_period(series, now, tz, "today")
        month = money_for_period(series, now, tz, "month")
        return MoneyView(currency=self.cfg.site.currency, today=_period(today), month=_period(month))

    def _money_series(self, now: dt.datetime) -> MoneySeries:
        """Minute series from the start of the month (a day earlier: a session plugged in before)."""
        local = now.astimezone(zoneinfo.ZoneInfo(self.cfg.site.timezone))
        month_start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).astimezone(dt.UTC)
        start = month_start - dt.timedelta(days=1)
        minutes = int((now - start).total_seconds() // 60) + 1
        names = self._site_series()

        def minute_series(stored: str) -> np.ndarray:
            values = np.full(minutes, np.nan)
            for at, mean in self.daemon.store.history_means(stored, start, now, dt.timedelta(minutes=1)):
                i = int((at - start).total_seconds() // 60)
                if 0 <= i < minutes:
                    values[i] = mean
            return _fill_coarse(values)

        cars = tuple(
            VehicleSeries(
                vehicle_id=vid,
                charger_w=minute_series(car_series(vid, "power_w")),
                plugged=minute_series(car_series(vid, "plugged")) >= 0.5,
                max_charge_w=vehicle.config.max_charge_kw * 1000.0,
                charge_efficiency=vehicle.config.charge_efficiency,
            )
            for vid, vehicle in self.daemon.site.vehicles.items()
        )
        return MoneySeries(
            start_utc=start,
            grid_w=minute_series(names["grid_w"]) if "grid_w" in names else np.full(minutes, np.nan),
            import_price_per_kwh=minute_series(IMPORT_PRICE_SERIES),
            export_price_per_kwh=minute_series(EXPORT_PRICE_SERIES),
            vehicles=cars,
        )

    # ------------------------------------------------------------- commands

    async def command(self, vehicle_id: str, name: str, body: bytes) -> None:
        command = parse_command(self.cfg, vehicle_id, name, body, self.daemon.clock.now())
        await self.daemon.router.handle_command(command)


def _fill_coarse(values: np.ndarray) -> np.ndarray:
    """History older than 14 days is kept in five-minute buckets: a bucket's mean stands for each of
    its minutes (at most four missing minutes after a known one are filled)."""
    known = ~np.isnan(values)
    if known.all() or not known.any():
        return values
    filled = values.copy()
    for gap in range(1, 5):
        shifted = np.roll(values, gap)
        shifted[:gap] = np.nan
        fill = np.isnan(filled) & ~np.isnan(shifted)
        filled[fill] = shifted[fill]
    return filled


def _period(result: MoneyResult) -> MoneyPeriod:
    return MoneyPeriod(
        since=result.start_utc,
        until=result.end_utc,
        cost=round(result.actual_cost, 4),
        uncontrolled_cost=round(result.uncontrolled_cost, 4),
        saving=round(result.saving, 4),
        minutes_counted=result.minutes_counted,
        minutes_missing=result.minutes_missing,
    )
