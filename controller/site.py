"""The one site state the daemon keeps: vehicles at their chargers, overrides, and the inputs.

Events (OCPP, MQTT readings, commands) update it; the planner reads a :class:`Snapshot` from it
and the dispatcher reads :class:`DispatchInputs`. Pure: no I/O, no asyncio. Which car is on which
charger comes from ``vehicles[].home_charger`` (the first car naming a charger is the one there), and
the car uses the charger's ``chargers[].evse_id``: events of another EVSE, or of EVSE 0 (the whole
station: 1.6 connector 0, the main meter), leave the car alone.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from controller import site_records, site_snapshot, v2l_guard
from controller.commands import Command, SetDeparture, SetMode, SetWeeklyDeparture, V2LCommand
from controller.config import DepartureRule, OcppVersion, SiteConfig, VehicleConfig
from controller.dispatch import DispatchInputs
from controller.domain import (
    Departure,
    Plan,
    V2LSession,
    VehicleMode,
    ensure_utc,
)
from controller.ev_limits import EvReportedLimits, session_limits
from controller.site_batteries import BatteryRuntime
from controller.site_inputs import SiteInputs
from controller.snapshot import SessionLimits, Snapshot
from controller.vehicles import (
    DepartureSeen,
    OverdueDeparture,
    SocTracker,
    departure_seen,
    early_leads,
    next_departure,
    overdue_departure,
    remember_departure,
)

__all__ = [
    "MEASURED_POWER_MAX_SAMPLE_INTERVALS",
    "PLUGGED_STATUSES",
    "UNPLUGGED_STATUSES",
    "EvReportedLimits",
    "Site",
    "VehicleRuntime",
]

FloatArray = npt.NDArray[np.float64]

# Connector states that mean "a car is connected" (1.6 names, 2.x ``Occupied``).
PLUGGED_STATUSES = frozenset(
    {"Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing", "Occupied", "Reserved-Occupied"}
)
UNPLUGGED_STATUSES = frozenset({"Available", "Unavailable", "Faulted"})


# ``chargers[].evse_id`` when the charger is not configured (accepted as unknown: no car is there).
_DEFAULT_EVSE_ID = 1


# A car's measured power counts for this many of the chargers' sample intervals
# (``ocpp.meter_sample_interval_s``) after it was received: a lost sample keeps it, a charger gone
# quiet does not leave its last power in the load calculation.
MEASURED_POWER_MAX_SAMPLE_INTERVALS = 3


@dataclass(slots=True)
class VehicleRuntime:
    config: VehicleConfig
    tracker: SocTracker
    plugged_in: bool = False
    charger_id: str | None = None
    mode: VehicleMode = VehicleMode.AUTO
    charge_to_percent: float | None = None
    """With ``charge_now``: the SoC the driver asked to fill to (None: ``max_soc_percent``)."""
    one_off: Departure | None = None
    weekly: dict[str, DepartureRule | None] = field(default_factory=dict)
    charger_departure: Departure | None = None
    v2l: V2LSession | None = None
    v2l_cut_off: bool = False
    measured_power_w: float | None = None
    """The car's power as last measured at its charger (``Site.measured_power_w`` ages it)."""
    measured_power_at: dt.datetime | None = None
    """When that measurement was received; None with a power of 0 W: no transaction runs since one
    ended (a known 0 W that does not age out until the next sample or transaction)."""
    setpoint_w: float = 0.0
    session_limits: SessionLimits | None = None
    """The EV's own limits for this session (until unplug or its next NotifyEVChargingNeeds)."""
    plugged_at: dt.datetime | None = None
    """When the car was plugged in (None while unplugged, or plugged in since an unknown time)."""
    announced_at: dt.datetime | None = None
    """When a departure was last announced (the one-off command, or a new one from the charger)."""
    departures_seen: tuple[DepartureSeen, ...] = ()
    """The weekly-schedule departures seen at unplug, oldest first (the early-departure history)."""
    leads_cache: tuple[tuple[DepartureSeen, ...], tuple[Any, ...], dict[str, dt.timedelta]] | None = field(
        default=None, repr=False, compare=False
    )
    """The early leads last learnt, with the history and the day and rules they were learnt for."""

    def effective_config(self) -> VehicleConfig:
        """The config with weekly-departure overrides applied (None removes a day)."""
        if not self.weekly:
            return self.config
        departures = {**self.config.departures}
        for day, rule in self.weekly.items():
            if rule is None:
                departures.pop(day, None)
            else:
                departures[day] = rule
        return self.config.model_copy(update={"departures": departures})

    # ------------------------------------------------------------ departures

    def next_departure(self, now: dt.datetime, timezone: str) -> Departure | None:
        """The next departure (:func:`controller.vehicles.next_departure`), weekly ones early by
        the learnt lead."""
        return next_departure(
            self.effective_config(),
            now,
            timezone,
            one_off=self.one_off,
            from_charger=self.charger_departure,
            leads=self.leads(now, timezone),
        )

    def overdue(self, now: dt.datetime, timezone: str) -> OverdueDeparture | None:
        """The departure the car is overdue for, whose target it holds as a floor
        (:func:`controller.vehicles.overdue_departure`); None when unplugged or not overdue."""
        if not self.plugged_in:
            return None
        return overdue_departure(
            self.effective_config(),
            now,
            timezone,
            one_off=self.one_off,
            from_charger=self.charger_departure,
            leads=self.leads(now, timezone),
            plugged_at=self.plugged_at,
            announced_at=self.announced_at,
        )

    def leads(self, now: dt.datetime, timezone: str) -> dict[str, dt.timedelta]:
        """Per weekday, how early its scheduled departure is due (:func:`controller.vehicles.early_leads`);
        learnt again only when the history, the local date or the weekly rules change."""
        if not self.departures_seen:
            return {}
        config = self.effective_config()
        today = ensure_utc(now).astimezone(zoneinfo.ZoneInfo(timezone)).date()
        key = (today, tuple(sorted((day, rule.time) for day, rule in config.departures.items())))
        cached = self.leads_cache
        if cached is not None and cached[0] is self.departures_seen and cached[1] == key:
            return cached[2]
        leads = early_leads(config, self.departures_seen, now, timezone)
        self.leads_cache = (self.departures_seen, key, leads)
        return leads

    def remember_unplug(self, at: dt.datetime, timezone: str) -> None:
        """An unplug near a weekly-schedule departure joins the early-departure history
        (:func:`controller.vehicles.departure_seen`); a date an announced departure replaced does not."""
        config = self.effective_config()
        announced = (self.one_off, self.charger_departure)
        seen = departure_seen(config, at, timezone, announced=announced)
        if seen is not None:
            self.departures_seen = remember_departure(self.departures_seen, seen, config)


class Site:
    def __init__(self, cfg: SiteConfig, inputs: SiteInputs | None = None) -> None:
        self.cfg = cfg
        self.inputs = inputs if inputs is not None else SiteInputs(cfg)
        self.vehicles: dict[str, VehicleRuntime] = {
            v.id: VehicleRuntime(v, SocTracker(v), charger_id=v.home_charger) for v in cfg.vehicles
        }
        self.charger_vehicle: dict[str, str] = {}
        self.charger_evse: dict[str, int] = {c.id: c.evse_id for c in cfg.chargers}
        for v in cfg.vehicles:
            if v.home_charger is not None:
                self.charger_vehicle.setdefault(v.home_charger, v.id)
        self.step = dt.timedelta(minutes=cfg.site.plan_step_minutes)
        self.charger_versions: dict[str, OcppVersion] = {}
        """The OCPP version each charger last connected with."""
        self.batteries = {b.id: BatteryRuntime(b) for b in cfg.home_batteries}  # controller.site_batteries

    # ------------------------------------------------------------ chargers

    def on_charger_connected(self, charger_id: str, version: OcppVersion) -> bool:
        """A charger connected with ``version``; True when that changes whether it can discharge."""
        could = self.charger_can_discharge(charger_id)
        self.charger_versions[charger_id] = version
        return self.charger_can_discharge(charger_id) != could

    def charger_can_discharge(self, charger_id: str | None) -> bool:
        """Whether a discharge can reach this charger: OCPP 2.1, or a 1.6/2.0.1 charger whose config
        opts in to negative limits (``negative_limit_means_discharge``). Before it first connects,
        whether 2.1 is among its ``ocpp_versions``. (A charge-only charger has no discharge power
        anyway; this only says what its protocol can carry.)"""
        charger = self.cfg.charger(charger_id) if charger_id is not None else None
        if charger is None or charger.negative_limit_means_discharge:
            return True
        version = self.charger_versions.get(charger.id)
        if version is None:
            return OcppVersion.V21 in charger.ocpp_versions
        return version is OcppVersion.V21

    def vehicle_at(self, charger_id: str) -> VehicleRuntime | None:
        vid = self.charger_vehicle.get(charger_id)
        return self.vehicles.get(vid) if vid else None

    def is_vehicle_evse(self, charger_id: str, evse_id: int | None) -> bool:
        """True when ``evse_id`` is the EVSE the car at this charger uses (``chargers[].evse_id``, the
        one its profiles go to); None (an event that names no EVSE) counts as that EVSE. EVSE 0 is the
        whole station (1.6 connector 0, the main meter), never the car's."""
        return evse_id is None or evse_id == self.charger_evse.get(charger_id, _DEFAULT_EVSE_ID)

    def _vehicle_on(self, charger_id: str, evse_id: int | None) -> VehicleRuntime | None:
        return self.vehicle_at(charger_id) if self.is_vehicle_evse(charger_id, evse_id) else None

    def set_plugged(
        self, charger_id: str, plugged: bool, at: dt.datetime, *, evse_id: int | None = None
    ) -> VehicleRuntime | None:
        """Plug-in or unplug at a charger (on ``evse_id``: only the car's EVSE counts); returns the
        vehicle when its state changed."""
        vehicle = self._vehicle_on(charger_id, evse_id)
        if vehicle is None or vehicle.plugged_in == plugged:
            return None
        vehicle.plugged_in = plugged
        vehicle.charger_id = charger_id
        vehicle.measured_power_w = vehicle.measured_power_at = None
        if plugged:
            vehicle.plugged_at = ensure_utc(at)
            vehicle.tracker.on_arrival(at)
        else:
            vehicle.remember_unplug(at, self.cfg.site.timezone)
            vehicle.plugged_at = None
            vehicle.tracker.on_departure()
            vehicle.charger_departure = None
            vehicle.session_limits = None
        return vehicle

    def on_connector_status(
        self, charger_id: str, status: str, at: dt.datetime, *, evse_id: int | None = None
    ) -> VehicleRuntime | None:
        """A connector status; only one of the car's EVSE plugs it in or out (a station-wide
        "Available" on 1.6 connector 0, or another EVSE's status, does not)."""
        if status in PLUGGED_STATUSES:
            return self.set_plugged(charger_id, True, at, evse_id=evse_id)
        if status in UNPLUGGED_STATUSES:
            return self.set_plugged(charger_id, False, at, evse_id=evse_id)
        return None

    def on_charger_sample(
        self,
        charger_id: str,
        at: dt.datetime,
        power_w: float | None,
        soc_percent: float | None,
        energy_import_wh: float | None = None,
        energy_export_wh: float | None = None,
        *,
        evse_id: int | None = None,
        received_at: dt.datetime | None = None,
    ) -> VehicleRuntime | None:
        """A charger's meter sample: SoC first (the anchor), then power and energy registers, from
        which the SoC is counted forward and the car's power is known (from the registers alone for
        a charger that reports no power). Samples of another EVSE, or of the station's main meter
        (EVSE 0), are not the car's and change nothing. ``received_at`` (default ``at``) ages the
        power: the daemon's clock, not the charger's."""
        vehicle = self._vehicle_on(charger_id, evse_id)
        if vehicle is None:
            return None
        if soc_percent is not None:
            vehicle.tracker.on_soc(soc_percent, at, "ocpp")
        sampled = power_w is not None or energy_import_wh is not None or energy_export_wh is not None
        # A sample older than the last one (a charger clock stepped back) is not taken: it must not
        # make the last power look fresh.
        if sampled and vehicle.tracker.on_meter(at, power_w, energy_import_wh, energy_export_wh):
            vehicle.measured_power_w = vehicle.tracker.power_w
            vehicle.measured_power_at = ensure_utc(received_at if received_at is not None else at)
        return vehicle

    def on_transaction_ended(self, charger_id: str, at: dt.datetime | None = None) -> VehicleRuntime | None:
        """The car's transaction at this charger ended (the caller checked it was the car's): it
        draws nothing any more, whatever it drew at its last sample, even with the cable still in.
        ``at`` (the charger's time of the end) also stops the SoC counting that power from then on."""
        vehicle = self.vehicle_at(charger_id)
        if vehicle is not None:
            # A known 0 W that does not age out: no transaction, no power, however long it sits.
            vehicle.measured_power_w, vehicle.measured_power_at = 0.0, None
            if at is not None:
                vehicle.tracker.on_power(0.0, at)
        return vehicle

    def on_transaction_started(self, charger_id: str, *, evse_id: int | None = None) -> VehicleRuntime | None:
        """A transaction on the car's EVSE: the 0 W kept since the last one ended no longer holds;
        its power is unknown until the next sample (a sample already received this session stays)."""
        vehicle = self._vehicle_on(charger_id, evse_id)
        if vehicle is not None and vehicle.measured_power_at is None:
            vehicle.measured_power_w = None
        return vehicle

    def measured_power_w(self, vehicle: VehicleRuntime, now: dt.datetime) -> float | None:
        """The car's measured power if received within ``MEASURED_POWER_MAX_SAMPLE_INTERVALS`` sample
        intervals of ``now``, else None (unknown). After a transaction ended: 0 W until the next sample
        or transaction."""
        at = vehicle.measured_power_at
        max_age = dt.timedelta(
            seconds=MEASURED_POWER_MAX_SAMPLE_INTERVALS * self.cfg.ocpp.meter_sample_interval_s
        )
        if at is None:
            return vehicle.measured_power_w  # 0 W after a transaction ended, else None (no sample yet)
        if ensure_utc(now) - at > max_age:
            return None
        return vehicle.measured_power_w

    def on_charging_needs(
        self,
        charger_id: str,
        departure_at: dt.datetime | None,
        target_soc_percent: float | None,
        reported: EvReportedLimits | None = None,
        *,
        evse_id: int | None = None,
        now: dt.datetime | None = None,
    ) -> VehicleRuntime | None:
        """The EV's needs: a departure (kept when a later message has none) and its limits, which
        replace the previous ones. Returns the vehicle when the plan must change; the needs of an EV
        on another EVSE are not the car's (None). A departure other than the one held and after
        ``now`` (when the message arrived) is a new announcement: it ends an overdue departure's hold."""
        vehicle = self._vehicle_on(charger_id, evse_id)
        if vehicle is None:
            return None
        changed = False
        if departure_at is not None:
            target = (
                target_soc_percent
                if target_soc_percent is not None
                else vehicle.config.default_target_soc_percent
            )
            target = min(max(target, vehicle.config.reserve_percent), vehicle.config.max_soc_percent)
            departure = Departure(departure_at, target)
            previous = vehicle.charger_departure
            if now is not None and departure.at > now and (previous is None or previous.at != departure.at):
                vehicle.announced_at = ensure_utc(now)
            vehicle.charger_departure = departure
            changed = True
        limits = session_limits(vehicle.config, vehicle.tracker.estimate(), reported)
        if limits != vehicle.session_limits:
            vehicle.session_limits = limits
            changed = True
        return vehicle if changed else None

    def on_vehicle_soc(
        self, vehicle_id: str, soc_percent: float, at: dt.datetime, *, measured: bool = True
    ) -> VehicleRuntime | None:
        """A SoC over MQTT; ``measured=False`` for one of unknown age (a retained message): a
        starting estimate that never replaces a real reading and allows no discharge or V2L."""
        vehicle = self.vehicles.get(vehicle_id)
        if vehicle is not None:
            source = "mqtt" if measured else "mqtt (retained)"
            vehicle.tracker.on_soc(soc_percent, at, source, measured=measured)
        return vehicle

    def on_v2l_reading(self, vehicle_id: str, at: dt.datetime) -> VehicleRuntime | None:
        """A V2L meter of the vehicle was read: what the car supplies to its loads (all its V2L
        meters, when all are fresh) comes off its SoC between SoC readings."""
        vehicle = self.vehicles.get(vehicle_id)
        power_w = self.inputs.v2l_power_w(vehicle_id, at)
        if vehicle is None or power_w is None:
            return None
        vehicle.tracker.on_v2l(power_w, at)
        return vehicle

    # ------------------------------------------------------------ commands

    def apply_command(self, command: Command, now: dt.datetime) -> VehicleRuntime:
        vehicle = self.vehicles[command.vehicle_id]
        if isinstance(command, SetDeparture):
            vehicle.one_off = command.departure
            vehicle.announced_at = ensure_utc(now)  # set or cleared: a driver's word ends a hold
        elif isinstance(command, SetWeeklyDeparture):
            if command.time is None or command.target_soc_percent is None:
                vehicle.weekly[command.weekday] = None
            else:
                # A command without a return keeps the day's current one (override, else config) while
                # it is still after the new time: the command cannot tell "absent" from null, and
                # ``clear`` removes the whole day, return included.
                current = vehicle.effective_config().departures.get(command.weekday)
                return_time = command.return_time
                if return_time is None and current is not None and current.return_time is not None:
                    return_time = current.return_time if current.return_time > command.time else None
                vehicle.weekly[command.weekday] = DepartureRule(
                    time=command.time,
                    target_soc_percent=command.target_soc_percent,
                    return_time=return_time,
                )
        elif isinstance(command, SetMode):
            vehicle.mode, vehicle.charge_to_percent = command.mode, command.charge_to_percent
        elif isinstance(command, V2LCommand):
            if command.action == "start":
                vehicle.v2l = V2LSession(vehicle.config.id, now, command.until, command.power_w)
                vehicle.v2l_cut_off = False
            else:
                vehicle.v2l = None
        return vehicle

    def departure(self, vehicle: VehicleRuntime, now: dt.datetime) -> Departure | None:
        """The next departure (:meth:`VehicleRuntime.next_departure`)."""
        return vehicle.next_departure(now, self.cfg.site.timezone)

    def overdue(self, vehicle: VehicleRuntime, now: dt.datetime) -> OverdueDeparture | None:
        """The departure the car is overdue for (:meth:`VehicleRuntime.overdue`)."""
        return vehicle.overdue(now, self.cfg.site.timezone)

    def measured_soc(self, vehicle: VehicleRuntime) -> float | None:
        """SoC anchored on a real reading; an estimate counts as unknown (no discharge on a guess)."""
        estimate = vehicle.tracker.estimate()
        return estimate.soc_percent if estimate is not None and estimate.measured else None

    def v2l_soc(self, vehicle: VehicleRuntime, now: dt.datetime) -> float | None:
        """The measured SoC if recent enough to guard a V2L session (:func:`controller.v2l_guard.v2l_soc`)."""
        return v2l_guard.v2l_soc(self.cfg, vehicle, now)

    def v2l_cutoffs(self, now: dt.datetime) -> list[VehicleRuntime]:
        """Vehicles whose running V2L session must stop now (:func:`controller.v2l_guard.v2l_cutoffs`)."""
        return v2l_guard.v2l_cutoffs(self.cfg, self.vehicles.values(), now)

    # --------------------------------------------- planner and dispatcher inputs

    def snapshot(self, now: dt.datetime, load_w: FloatArray, pv_w: FloatArray) -> Snapshot:
        """What the planner sees at ``now``: forecasts given, prices and limits from the inputs."""
        return site_snapshot.snapshot(self, now, load_w, pv_w)

    def planner_snapshot(self, now: dt.datetime, load_w: FloatArray, pv_w: FloatArray) -> Snapshot:
        """``snapshot`` as the daemon plans on it (what each charger can carry; see
        :func:`controller.site_snapshot.planner_snapshot`)."""
        return site_snapshot.planner_snapshot(self, now, load_w, pv_w)

    def dispatch_inputs(self, now: dt.datetime, plan: Plan | None) -> DispatchInputs:
        return site_snapshot.dispatch_inputs(self, now, plan)

    # ------------------------------------------------------- persistence

    def vehicle_record(self, vehicle: VehicleRuntime) -> dict[str, Any]:
        """The vehicle's state as stored (JSON-ready; :class:`~controller.site_records.VehicleRecord`)."""
        return site_records.vehicle_record(vehicle).model_dump(mode="json")

    def restore_vehicle(
        self, vehicle_id: str, record: dict[str, Any], *, now: dt.datetime | None = None
    ) -> bool:
        """True when restored, False for a car no longer configured. A record that does not validate
        raises ``ValueError`` and changes nothing."""
        vehicle = self.vehicles.get(vehicle_id)
        if vehicle is None:
            return False
        site_records.restore_vehicle(vehicle, self.cfg, record, now)
        return True

    def overrides(self, vehicle: VehicleRuntime) -> dict[str, dict[str, Any]]:
        """The vehicle's overrides as stored: kind -> JSON body."""
        return site_records.overrides(vehicle)

    def restore_overrides(self, vehicle_id: str, kind: str, body: dict[str, Any], now: dt.datetime) -> None:
        vehicle = self.vehicles.get(vehicle_id)
        if vehicle is not None:
            site_records.restore_override(vehicle, kind, body, now)
