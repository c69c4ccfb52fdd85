"""The one site state the daemon keeps: vehicles at their chargers, overrides, and the inputs.

Events (OCPP, MQTT readings, commands) update it; the planner reads a :class:`Snapshot` from it
and the dispatcher reads :class:`DispatchInputs`. Pure: no I/O, no asyncio. Which car is on which
charger comes from ``vehicles[].home_charger`` (the first car naming a charger is the one there), and
the car uses the charger's ``chargers[].evse_id``: events of another EVSE, or of EVSE 0 (the whole
station: 1.6 connector 0, the main meter), leave the car alone.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from controller.commands import Command, SetDeparture, SetMode, SetWeeklyDeparture, V2LCommand
from controller.config import DepartureRule, OcppVersion, SiteConfig, VehicleConfig
from controller.dispatch import DispatchInputs, VehicleLive
from controller.domain import (
    Departure,
    MeterRole,
    Plan,
    V2LSession,
    VehicleMode,
    align_to_step,
    ensure_utc,
)
from controller.site_inputs import SiteInputs
from controller.snapshot import DepartureGoal, SessionLimits, Snapshot, V2LRequest, VehicleSnapshot
from controller.vehicles import SocTracker, next_departure, scheduled_trips

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
# V2L sessions stop this far above the reserve, so the cut-off lands before the floor.
V2L_CUTOFF_MARGIN_PERCENT = 1.0
# Without a vehicle_soc meter (SoC from the charger only), a SoC reading older than this is too old to
# protect the reserve during a V2L session (the car may be drawing kilowatts meanwhile).
V2L_SOC_MAX_AGE = dt.timedelta(minutes=15)


# ``chargers[].evse_id`` when the charger is not configured (accepted as unknown: no car is there).
_DEFAULT_EVSE_ID = 1

# Power an EV may report that is still a number, not a data error (as the snapshot bounds it).
_MAX_REPORTED_POWER_W = 10_000_000.0

# A car's measured power counts for this many of the chargers' sample intervals
# (``ocpp.meter_sample_interval_s``) after it was received: a lost sample keeps it, a charger gone
# quiet does not leave its last power in the load calculation.
MEASURED_POWER_MAX_SAMPLE_INTERVALS = 3


@dataclass(frozen=True, slots=True)
class EvReportedLimits:
    """The EV's limits as NotifyEVChargingNeeds brings them: W, and the V2X energy window in Wh
    from now (ISO 15118-20: a negative minimum means that much may be discharged before the EV's
    own floor; the maximum is the energy up to its own ceiling). None where the EV said nothing."""

    max_charge_power_w: float | None = None
    max_discharge_power_w: float | None = None
    min_v2x_energy_wh: float | None = None
    max_v2x_energy_wh: float | None = None


@dataclass(slots=True)
class VehicleRuntime:
    config: VehicleConfig
    tracker: SocTracker
    plugged_in: bool = False
    charger_id: str | None = None
    mode: VehicleMode = VehicleMode.AUTO
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
            vehicle.tracker.on_arrival(at)
        else:
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
    ) -> VehicleRuntime | None:
        """The EV's needs: a departure (kept when a later message has none) and its limits, which
        replace the previous ones. Returns the vehicle when the plan must change; the needs of an EV
        on another EVSE are not the car's (None)."""
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
            vehicle.charger_departure = Departure(departure_at, target)
            changed = True
        limits = self._session_limits(vehicle, reported)
        if limits != vehicle.session_limits:
            vehicle.session_limits = limits
            changed = True
        return vehicle if changed else None

    @staticmethod
    def _session_limits(vehicle: VehicleRuntime, reported: EvReportedLimits | None) -> SessionLimits | None:
        """The reported limits in this vehicle's terms: W caps, and the V2X energy window turned into
        SoC bounds on the SoC known now (without a SoC the window cannot be placed and is left out).
        Numbers that make no sense (negative power, not finite) count as not reported."""
        if reported is None:
            return None

        def power(value: float | None) -> float | None:
            if value is None or not math.isfinite(value) or value < 0:
                return None
            return min(value, _MAX_REPORTED_POWER_W)

        estimate = vehicle.tracker.estimate()
        capacity_wh = 1000.0 * vehicle.config.usable_capacity_kwh

        def soc(energy_wh: float | None) -> float | None:
            if energy_wh is None or estimate is None or not math.isfinite(energy_wh) or capacity_wh <= 0:
                return None
            return min(100.0, max(0.0, estimate.soc_percent + 100.0 * energy_wh / capacity_wh))

        floor, ceiling = soc(reported.min_v2x_energy_wh), soc(reported.max_v2x_energy_wh)
        if floor is not None and ceiling is not None and ceiling < floor:
            ceiling = None  # contradictory window: keep the floor (the safe half)
        limits = SessionLimits(
            max_charge_power_w=power(reported.max_charge_power_w),
            max_discharge_power_w=power(reported.max_discharge_power_w),
            min_soc_percent=None if floor is None else round(floor, 3),
            max_soc_percent=None if ceiling is None else round(ceiling, 3),
        )
        return None if limits == SessionLimits() else limits

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
            vehicle.mode = command.mode
        elif isinstance(command, V2LCommand):
            if command.action == "start":
                vehicle.v2l = V2LSession(vehicle.config.id, now, command.until, command.power_w)
                vehicle.v2l_cut_off = False
            else:
                vehicle.v2l = None
        return vehicle

    def departure(self, vehicle: VehicleRuntime, now: dt.datetime) -> Departure | None:
        return next_departure(
            vehicle.effective_config(),
            now,
            self.cfg.site.timezone,
            one_off=vehicle.one_off,
            from_charger=vehicle.charger_departure,
        )

    def measured_soc(self, vehicle: VehicleRuntime) -> float | None:
        """SoC anchored on a real reading; an estimate counts as unknown (no discharge on a guess)."""
        estimate = vehicle.tracker.estimate()
        return estimate.soc_percent if estimate is not None and estimate.measured else None

    def v2l_soc(self, vehicle: VehicleRuntime, now: dt.datetime) -> float | None:
        """The measured SoC (drained by the V2L meter since) if it is recent enough to guard a V2L
        session, else None.

        Recent: read within the ``stale_after_s`` of the vehicle's ``vehicle_soc`` meter, or
        ``V2L_SOC_MAX_AGE`` when its SoC comes from the charger only. Counting since the reading does
        not make it more recent.
        """
        estimate = vehicle.tracker.estimate()
        if estimate is None or not estimate.measured:
            return None
        meters = [
            m.stale_after_s
            for m in self.cfg.meters
            if m.role is MeterRole.VEHICLE_SOC and m.vehicle == vehicle.config.id
        ]
        max_age = dt.timedelta(seconds=max(meters)) if meters else V2L_SOC_MAX_AGE
        return estimate.soc_percent if ensure_utc(now) - estimate.read_at <= max_age else None

    def v2l_cutoffs(self, now: dt.datetime) -> list[VehicleRuntime]:
        """Vehicles whose running V2L session must stop now: SoC at the reserve, or unknown/stale
        (the reserve cannot be guarded without it). Each session is cut off once."""
        due = []
        for vehicle in self.vehicles.values():
            session = vehicle.v2l
            if session is None or vehicle.v2l_cut_off:
                continue
            if session.end is not None and now >= session.end:
                vehicle.v2l = None
                continue
            soc = self.v2l_soc(vehicle, now)
            floor = vehicle.config.reserve_percent + V2L_CUTOFF_MARGIN_PERCENT
            if soc is None or soc <= floor:
                vehicle.v2l_cut_off = True
                due.append(vehicle)
        return due

    # ----------------------------------------------------- planner inputs

    def snapshot(self, now: dt.datetime, load_w: FloatArray, pv_w: FloatArray) -> Snapshot:
        """What the planner sees at ``now``: forecasts given, prices and limits from the inputs."""
        now = ensure_utc(now)
        steps = len(load_w)
        start = align_to_step(now, self.step)
        prices = self.inputs.prices_on_grid(start, self.step, steps)
        limits = self.inputs.limits_on_grid(start, self.step, steps)
        vehicles = []
        safe_mode = self.inputs.safe_mode(now) and not self.inputs.is_grid_lost(now)
        end = start + self.step * steps
        for vehicle in self.vehicles.values():
            departure = self.departure(vehicle, now)
            # The weekly schedule's usual returns: the plan may count on the car after them.
            away = scheduled_trips(
                vehicle.effective_config(),
                now,
                end,
                self.cfg.site.timezone,
                plugged_in=vehicle.plugged_in,
                next_departure=departure,
            )
            session = vehicle.v2l if vehicle.v2l is not None and not vehicle.v2l_cut_off else None
            estimate = vehicle.tracker.estimate()
            mode = vehicle.mode
            # Stale data or a guessed SoC (restored, or estimated on arrival): plan charging on the
            # best estimate, but the plan must not count on discharge either.
            guessed = estimate is not None and not estimate.measured
            if (safe_mode or guessed) and mode is VehicleMode.AUTO:
                mode = VehicleMode.NO_DISCHARGE
            vehicles.append(
                VehicleSnapshot(
                    id=vehicle.config.id,
                    soc_percent=estimate.soc_percent if estimate is not None else None,
                    plugged_in=vehicle.plugged_in,
                    departure=DepartureGoal(at=departure.at, target_soc_percent=departure.target_soc_percent)
                    if departure is not None
                    else None,
                    away=away,
                    v2l=V2LRequest(start=session.start, end=session.end, power_w=session.power_w)
                    if session is not None
                    else None,
                    mode=mode,
                    session_limits=vehicle.session_limits,
                )
            )
        return Snapshot(
            time=now,
            step_minutes=self.cfg.site.plan_step_minutes,
            vehicles=vehicles,
            load_w=[float(x) for x in load_w],
            pv_w=[float(x) for x in pv_w],
            import_price_per_kwh=[float(x) for x in np.clip(prices.import_per_kwh, -10, 10)],
            export_price_per_kwh=[float(x) for x in np.clip(prices.export_per_kwh, -10, 10)],
            import_limit_w=[float(x) for x in limits.import_limit_w],
            export_limit_w=[float(x) for x in limits.export_limit_w],
        )

    def planner_snapshot(self, now: dt.datetime, load_w: FloatArray, pv_w: FloatArray) -> Snapshot:
        """``snapshot`` as the daemon plans on it: a car at a charger whose OCPP connection cannot
        carry a discharge (``charger_can_discharge``) gets a session discharge cap of 0 W, so the
        plan never counts on a discharge the charger would be sent as a limit of 0."""
        snapshot = self.snapshot(now, load_w, pv_w)
        vehicles = []
        for planned in snapshot.vehicles:
            runtime = self.vehicles.get(planned.id)
            if runtime is not None and not self.charger_can_discharge(runtime.charger_id):
                limits = planned.session_limits or SessionLimits()
                capped = limits.model_copy(update={"max_discharge_power_w": 0.0})
                planned = planned.model_copy(update={"session_limits": capped})
            vehicles.append(planned)
        return snapshot.model_copy(update={"vehicles": vehicles})

    # --------------------------------------------------- dispatcher inputs

    def dispatch_inputs(self, now: dt.datetime, plan: Plan | None) -> DispatchInputs:
        limits = self.inputs.limits_at(now)
        lives = tuple(self._live(v, now) for v in self.vehicles.values())
        return DispatchInputs(
            now=now,
            plan=plan,
            vehicles=lives,
            grid_power_w=self.inputs.grid_power_w(now),
            import_limit_w=limits.import_limit_w,
            export_limit_w=limits.export_limit_w,
            safe_mode=self.inputs.safe_mode(now),
            grid_lost=self.inputs.is_grid_lost(now),
            home_power_w=self.inputs.home_power_w(now),
            pv_power_w=self.inputs.pv_power_w(now),
        )

    def _live(self, vehicle: VehicleRuntime, now: dt.datetime) -> VehicleLive:
        departure = self.departure(vehicle, now)
        ev = vehicle.session_limits
        return VehicleLive(
            vehicle_id=vehicle.config.id,
            plugged_in=vehicle.plugged_in,
            charger_id=vehicle.charger_id,
            soc_percent=self.measured_soc(vehicle),
            measured_power_w=self.measured_power_w(vehicle, now),
            mode=vehicle.mode,
            departure_at=departure.at if departure is not None else None,
            ev_max_charge_w=ev.max_charge_power_w if ev else None,
            ev_max_discharge_w=ev.max_discharge_power_w if ev else None,
            ev_min_soc_percent=ev.min_soc_percent if ev else None,
            charger_can_discharge=self.charger_can_discharge(vehicle.charger_id),
        )

    # ------------------------------------------------------- persistence

    def vehicle_record(self, vehicle: VehicleRuntime) -> dict[str, Any]:
        estimate = vehicle.tracker.estimate()
        departure = vehicle.charger_departure
        return {
            "plugged_in": vehicle.plugged_in,
            "charger_id": vehicle.charger_id,
            "soc_percent": estimate.soc_percent if estimate else None,
            "soc_at": estimate.at.isoformat() if estimate else None,
            "soc_measured": estimate.measured if estimate else False,
            "session_limits": vehicle.session_limits.model_dump() if vehicle.session_limits else None,
            "charger_departure": None
            if departure is None
            else {"at": departure.at.isoformat(), "target_soc_percent": departure.target_soc_percent},
        }

    def restore_vehicle(
        self, vehicle_id: str, record: dict[str, Any], *, now: dt.datetime | None = None
    ) -> bool:
        """True when restored, False for a car no longer configured. A record that does not parse
        raises (TypeError, ValueError) and changes nothing. The car's own limits and departure come
        back only while it is still plugged in, the departure only if still ahead of ``now``."""
        vehicle = self.vehicles.get(vehicle_id)
        if vehicle is None:
            return False
        plugged_in = record.get("plugged_in", False)
        charger_id = record.get("charger_id")
        if not isinstance(plugged_in, bool) or not (charger_id is None or isinstance(charger_id, str)):
            raise TypeError(f"plugged_in {plugged_in!r} / charger_id {charger_id!r} malformed")
        soc: tuple[float, dt.datetime] | None = None
        if record.get("soc_percent") is not None and record.get("soc_at"):
            soc = (float(record["soc_percent"]), ensure_utc(dt.datetime.fromisoformat(record["soc_at"])))
            if not 0.0 <= soc[0] <= 100.0:
                raise ValueError(f"soc_percent {soc[0]} is not 0..100")
        stored_limits = record.get("session_limits")
        # The EV's limits belong to the session still plugged in; a ValidationError is a ValueError.
        limits = SessionLimits.model_validate(stored_limits) if stored_limits and plugged_in else None
        stored_departure = record.get("charger_departure")
        departure = None
        if stored_departure and plugged_in:
            target = float(stored_departure["target_soc_percent"])
            if not math.isfinite(target):
                raise ValueError(f"charger_departure target {target} is not a number")
            config = vehicle.config
            departure = Departure(
                ensure_utc(dt.datetime.fromisoformat(stored_departure["at"])),
                min(max(target, config.reserve_percent), config.max_soc_percent),
            )
            if now is not None and departure.at <= ensure_utc(now):
                departure = None  # passed while the daemon was down
        vehicle.plugged_in = plugged_in
        vehicle.session_limits = limits
        vehicle.charger_departure = departure
        if charger_id is not None and self.cfg.charger(charger_id) is not None:
            vehicle.charger_id = charger_id  # a charger no longer configured keeps the home one
        if soc is not None:
            # A restored SoC is an anchor for counting, but only a fresh reading allows discharge again.
            vehicle.tracker.restore(soc[0], soc[1], False)
        return True

    def overrides(self, vehicle: VehicleRuntime) -> dict[str, dict[str, Any]]:
        """The vehicle's overrides as stored: kind -> JSON body."""
        out: dict[str, dict[str, Any]] = {"mode": {"mode": vehicle.mode.value}}
        if vehicle.one_off is not None:
            out["departure"] = {
                "at": vehicle.one_off.at.isoformat(),
                "target": vehicle.one_off.target_soc_percent,
            }
        out["weekly"] = {
            day: None
            if rule is None
            else {
                "time": rule.time.isoformat(),
                "target": rule.target_soc_percent,
                "return_time": None if rule.return_time is None else rule.return_time.isoformat(),
            }
            for day, rule in vehicle.weekly.items()
        }
        if vehicle.v2l is not None:
            out["v2l"] = {
                "start": vehicle.v2l.start.isoformat(),
                "end": vehicle.v2l.end.isoformat() if vehicle.v2l.end else None,
                "power_w": vehicle.v2l.power_w,
                "cut_off": vehicle.v2l_cut_off,
            }
        return out

    def restore_overrides(self, vehicle_id: str, kind: str, body: dict[str, Any], now: dt.datetime) -> None:
        vehicle = self.vehicles.get(vehicle_id)
        if vehicle is None:
            return
        if kind == "mode":
            vehicle.mode = VehicleMode(body["mode"])
        elif kind == "departure":
            at = ensure_utc(dt.datetime.fromisoformat(body["at"]))
            if at > now:
                vehicle.one_off = Departure(at, float(body["target"]))
        elif kind == "weekly":
            vehicle.weekly = {
                day: None
                if rule is None
                else DepartureRule(
                    time=dt.time.fromisoformat(rule["time"]),
                    target_soc_percent=rule["target"],
                    return_time=dt.time.fromisoformat(rule["return_time"])
                    if rule.get("return_time")
                    else None,
                )
                for day, rule in body.items()
            }
        elif kind == "v2l":
            end = ensure_utc(dt.datetime.fromisoformat(body["end"])) if body.get("end") else None
            if end is None or end > now:
                start = ensure_utc(dt.datetime.fromisoformat(body["start"]))
                vehicle.v2l = V2LSession(vehicle_id, start, end, float(body["power_w"]))
                vehicle.v2l_cut_off = bool(body.get("cut_off", False))
