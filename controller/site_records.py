"""The site's state as stored: a vehicle's record and a driver's overrides, as pydantic models.

What the daemon writes carries its timestamps in one form, ISO 8601 in UTC with ``Z``
(``2026-05-04T06:00:00Z``); rows written before (``+00:00``, or another offset) are still read. A row
that does not validate raises ``ValueError`` (pydantic's ``ValidationError`` is one) and changes
nothing.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, StrictBool, StrictStr

from controller.config import DepartureRule, SiteConfig
from controller.domain import Departure, V2LSession, VehicleMode, ensure_utc, utc_text
from controller.snapshot import SessionLimits
from controller.vehicles import MAX_DEPARTURES_SEEN, DepartureSeen

if TYPE_CHECKING:
    from controller.site import VehicleRuntime

__all__ = [
    "DepartureOverride",
    "DepartureSeenRecord",
    "ModeOverride",
    "StoredDeparture",
    "StoredRecord",
    "UtcTime",
    "V2LOverride",
    "VehicleRecord",
    "WeeklyOverride",
    "WeeklyRuleRecord",
]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a number")
    return value


UtcTime = Annotated[dt.datetime, AfterValidator(ensure_utc), PlainSerializer(utc_text, return_type=str)]
"""A timezone-aware moment, written as ISO 8601 UTC with ``Z``."""
Finite = Annotated[float, AfterValidator(_finite)]


class StoredRecord(BaseModel):
    """What the store keeps: unknown fields ignored (rows of newer versions), values frozen."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class StoredDeparture(StoredRecord):
    at: UtcTime
    target_soc_percent: Finite


class DepartureSeenRecord(StoredRecord):
    """One weekly-schedule departure seen at unplug (:class:`controller.vehicles.DepartureSeen`)."""

    weekday: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    scheduled: dt.time
    scheduled_at: UtcTime
    unplugged_at: UtcTime

    @classmethod
    def of(cls, seen: DepartureSeen) -> DepartureSeenRecord:
        return cls(
            weekday=seen.weekday,  # one of WEEKDAYS; validated here
            scheduled=seen.scheduled,
            scheduled_at=seen.scheduled_at,
            unplugged_at=seen.unplugged_at,
        )

    def seen(self) -> DepartureSeen:
        return DepartureSeen(self.weekday, self.scheduled, self.scheduled_at, self.unplugged_at)


class VehicleRecord(StoredRecord):
    """A vehicle's state, saved when it changes and restored on start. Fields added later have
    defaults, so a record written before them still loads."""

    plugged_in: StrictBool = False
    charger_id: StrictStr | None = None
    soc_percent: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    soc_at: UtcTime | None = None
    soc_measured: bool = False
    session_limits: SessionLimits | None = None
    charger_departure: StoredDeparture | None = None
    plugged_at: UtcTime | None = None
    announced_at: UtcTime | None = None
    departures_seen: tuple[DepartureSeenRecord, ...] = ()
    """The early-departure history, oldest first."""


class ModeOverride(StoredRecord):
    mode: VehicleMode
    charge_to_percent: Finite | None = None


class DepartureOverride(StoredRecord):
    at: UtcTime
    target: Finite

    def departure(self) -> Departure:
        return Departure(self.at, self.target)


class WeeklyRuleRecord(StoredRecord):
    time: dt.time
    target: Finite
    return_time: dt.time | None = None

    def rule(self) -> DepartureRule:
        return DepartureRule(time=self.time, target_soc_percent=self.target, return_time=self.return_time)


class WeeklyOverride(StoredRecord):
    """Weekday -> its rule, or None where the day's departure was removed."""

    days: dict[str, WeeklyRuleRecord | None]

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> WeeklyOverride:
        return cls.model_validate({"days": body})

    def body(self) -> dict[str, Any]:
        dumped: dict[str, Any] = self.model_dump(mode="json")["days"]
        return dumped


class V2LOverride(StoredRecord):
    start: UtcTime
    end: UtcTime | None = None
    power_w: Finite
    cut_off: bool = False

    def session(self, vehicle_id: str) -> V2LSession:
        return V2LSession(vehicle_id, self.start, self.end, self.power_w)


def vehicle_record(vehicle: VehicleRuntime) -> VehicleRecord:
    """``vehicle``'s state as stored."""
    estimate = vehicle.tracker.estimate()
    departure = vehicle.charger_departure
    return VehicleRecord(
        plugged_in=vehicle.plugged_in,
        charger_id=vehicle.charger_id,
        soc_percent=estimate.soc_percent if estimate else None,
        soc_at=estimate.at if estimate else None,
        soc_measured=estimate.measured if estimate else False,
        session_limits=vehicle.session_limits,
        charger_departure=None
        if departure is None
        else StoredDeparture(at=departure.at, target_soc_percent=departure.target_soc_percent),
        plugged_at=vehicle.plugged_at,
        announced_at=vehicle.announced_at,
        departures_seen=tuple(DepartureSeenRecord.of(seen) for seen in vehicle.departures_seen),
    )


def restore_vehicle(
    vehicle: VehicleRuntime, cfg: SiteConfig, record: dict[str, Any], now: dt.datetime | None
) -> None:
    """Put a stored record back on ``vehicle``; raises ``ValueError`` (changing nothing) if it does
    not validate. The car's own limits and departure come back only while it is still plugged in,
    and so does when it was plugged in (unknown in a record written before it was kept: plugged in
    since before any overdue departure). The departure comes back if still ahead of ``now``, or if
    the car has been plugged in since before it: it may be overdue, its target held."""
    stored = VehicleRecord.model_validate(record)
    config = vehicle.config
    departure = None
    if stored.charger_departure is not None and stored.plugged_in:
        target = stored.charger_departure.target_soc_percent
        departure = Departure(
            stored.charger_departure.at, min(max(target, config.reserve_percent), config.max_soc_percent)
        )
        plugged_at = stored.plugged_at
        still_here = plugged_at is None or plugged_at < departure.at
        if now is not None and departure.at <= ensure_utc(now) and not still_here:
            departure = None  # passed while the daemon was down, after the car was plugged in again
    vehicle.plugged_in = stored.plugged_in
    vehicle.plugged_at = stored.plugged_at if stored.plugged_in else None
    vehicle.announced_at = stored.announced_at
    seen = tuple(record.seen() for record in stored.departures_seen)
    vehicle.departures_seen = tuple(sorted(seen, key=lambda s: s.scheduled_at))[-MAX_DEPARTURES_SEEN:]
    # The EV's limits belong to the session still plugged in.
    vehicle.session_limits = stored.session_limits if stored.plugged_in else None
    vehicle.charger_departure = departure
    if stored.charger_id is not None and cfg.charger(stored.charger_id) is not None:
        vehicle.charger_id = stored.charger_id  # a charger no longer configured keeps the home one
    if stored.soc_percent is not None and stored.soc_at is not None:
        # A restored SoC is an anchor for counting, but only a fresh reading allows discharge again.
        vehicle.tracker.restore(stored.soc_percent, stored.soc_at, False)


def overrides(vehicle: VehicleRuntime) -> dict[str, dict[str, Any]]:
    """The vehicle's overrides as stored: kind -> JSON body."""
    mode = ModeOverride(mode=vehicle.mode, charge_to_percent=vehicle.charge_to_percent)
    out: dict[str, dict[str, Any]] = {"mode": mode.model_dump(mode="json", exclude_none=True)}
    if vehicle.one_off is not None:
        one_off = vehicle.one_off
        out["departure"] = DepartureOverride(at=one_off.at, target=one_off.target_soc_percent).model_dump(
            mode="json"
        )
    days = {
        day: None
        if rule is None
        else WeeklyRuleRecord(time=rule.time, target=rule.target_soc_percent, return_time=rule.return_time)
        for day, rule in vehicle.weekly.items()
    }
    out["weekly"] = WeeklyOverride(days=days).body()
    if vehicle.v2l is not None:
        session = vehicle.v2l
        out["v2l"] = V2LOverride(
            start=session.start, end=session.end, power_w=session.power_w, cut_off=vehicle.v2l_cut_off
        ).model_dump(mode="json")
    return out


def _may_be_overdue(vehicle: VehicleRuntime, departure: Departure) -> bool:
    """Whether the (restored) car has been plugged in since before ``departure``."""
    since = vehicle.plugged_at
    return vehicle.plugged_in and (since is None or since < departure.at)


def restore_override(vehicle: VehicleRuntime, kind: str, body: dict[str, Any], now: dt.datetime) -> None:
    """Put one stored override back on ``vehicle`` (one that has run out is dropped; a one-off
    departure that has passed stays while the car, restored first, may be overdue for it)."""
    if kind == "mode":
        stored = ModeOverride.model_validate(body)
        vehicle.mode = stored.mode
        vehicle.charge_to_percent = (
            stored.charge_to_percent if stored.mode is VehicleMode.CHARGE_NOW else None
        )
    elif kind == "departure":
        one_off = DepartureOverride.model_validate(body).departure()
        if one_off.at > now or _may_be_overdue(vehicle, one_off):
            vehicle.one_off = one_off
    elif kind == "weekly":
        weekly = WeeklyOverride.from_body(body)
        vehicle.weekly = {day: None if rule is None else rule.rule() for day, rule in weekly.days.items()}
    elif kind == "v2l":
        v2l = V2LOverride.model_validate(body)
        if v2l.end is None or v2l.end > now:
            vehicle.v2l = v2l.session(vehicle.config.id)
            vehicle.v2l_cut_off = v2l.cut_off
