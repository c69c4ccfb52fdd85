"""Driver commands: validation of ``(vehicle, command, payload)`` into typed commands (pure, no I/O).

Commands (payload JSON; ``request_id`` is optional and echoed in the reply):

* ``departure``: one-off departure: ``{"at": "2025-01-16T07:30:00+01:00", "target_soc_percent": 80}``;
  ``at`` may be a local time (``"2025-01-16T07:30"`` or ``"07:30"``, the next one) in the site
  timezone; ``{"clear": true}`` drops the one-off departure.
* ``weekly_departure``: ``{"weekday": "monday", "time": "07:30", "target_soc_percent": 80}`` with an
  optional ``"return_time": "17:30"`` (the car is usually back then); ``{"weekday": "monday",
  "clear": true}`` removes that day.
* ``mode``: ``"auto"`` | ``"charge_now"`` | ``"no_discharge"`` (bare or ``{"mode": ...}``);
  ``{"mode": "charge_now", "target_soc_percent": 100}`` fills beyond ``max_soc_percent``.
* ``v2l``: ``{"action": "start", "power_w": 1500}`` (optional ``"until"``, in the same forms as
  ``departure``'s ``at``) or ``"stop"``.

Times of day are read as the config reads them: ``"07:30"``, ``"7:30"`` or ``"07:30:15"``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import zoneinfo
from dataclasses import dataclass
from typing import Any, Literal

from controller.config import WEEKDAYS, SiteConfig, VehicleConfig

# The config's own time-of-day parser, so that a command takes every time the config takes ("7:30").
from controller.config import _clock_time as _config_clock_time
from controller.domain import Departure, VehicleMode, ensure_utc

__all__ = [
    "COMMAND_NAMES",
    "MAX_COMMAND_PAYLOAD_BYTES",
    "Command",
    "CommandError",
    "SetDeparture",
    "SetMode",
    "SetWeeklyDeparture",
    "V2LCommand",
    "parse_command",
    "request_id_of",
]

MAX_COMMAND_PAYLOAD_BYTES = 4096
MAX_DEPARTURE_AHEAD = dt.timedelta(days=14)
MAX_V2L_POWER_W = 25_000.0
COMMAND_NAMES = ("departure", "weekly_departure", "mode", "v2l")


class CommandError(ValueError):
    """A command refused; the message is sent back to the sender in the reply."""


@dataclass(frozen=True, slots=True)
class SetDeparture:
    """One-off departure; ``departure`` None clears it."""

    vehicle_id: str
    departure: Departure | None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class SetWeeklyDeparture:
    """Weekly rule for ``weekday`` (local time); ``time``/``target_soc_percent`` None removes the day."""

    vehicle_id: str
    weekday: str
    time: dt.time | None
    target_soc_percent: float | None
    request_id: str | None = None
    return_time: dt.time | None = None
    """When the car is usually back that day (after ``time``); None: no return known."""


@dataclass(frozen=True, slots=True)
class SetMode:
    vehicle_id: str
    mode: VehicleMode
    request_id: str | None = None
    charge_to_percent: float | None = None
    """``charge_now`` only: fill to this SoC instead of ``max_soc_percent`` (up to 100 %)."""


@dataclass(frozen=True, slots=True)
class V2LCommand:
    """Start (with the expected draw in W, >= 0) or stop a V2L session."""

    vehicle_id: str
    action: Literal["start", "stop"]
    power_w: float = 0.0
    until: dt.datetime | None = None
    request_id: str | None = None


Command = SetDeparture | SetWeeklyDeparture | SetMode | V2LCommand


def _payload(raw: bytes) -> Any:
    """JSON when it parses, else the bare text (``charge_now``, ``stop``)."""
    if len(raw) > MAX_COMMAND_PAYLOAD_BYTES:
        raise CommandError(f"payload of {len(raw)} bytes exceeds {MAX_COMMAND_PAYLOAD_BYTES}")
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CommandError("payload is not UTF-8 text") from None
    if not text:
        raise CommandError("empty payload")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        if text[0] in "{[":
            raise CommandError("invalid JSON") from None
        return text


def _request_id(data: Any) -> str | None:
    if not isinstance(data, dict) or data.get("request_id") is None:
        return None
    rid = data["request_id"]
    if not isinstance(rid, str | int) or isinstance(rid, bool) or len(str(rid)) > 64:
        raise CommandError("request_id must be a string of at most 64 characters")
    return str(rid)


def request_id_of(raw: bytes) -> str | None:
    """Best effort: the request id of a payload, even one that is otherwise invalid."""
    try:
        return _request_id(_payload(raw))
    except CommandError:
        return None


def _object(data: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise CommandError("payload must be a JSON object")
    unknown = sorted(set(data) - allowed - {"request_id"})
    if unknown:
        raise CommandError(f"unknown field(s) {', '.join(unknown)[:80]}")
    return data


def _number(value: Any, what: str) -> float:
    """A JSON number as a float; an integer too large for a float is infinite (refused by the range checks)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandError(f"{what} must be a number")
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _soc(value: Any, vehicle: VehicleConfig) -> float:
    soc = _number(value, "target_soc_percent")
    if not math.isfinite(soc) or not 0 <= soc <= 100:
        raise CommandError("target_soc_percent must be within 0-100")
    if soc <= vehicle.reserve_percent:
        raise CommandError(f"target {soc:g} % is not above the reserve {vehicle.reserve_percent:.0f} %")
    if soc > vehicle.max_soc_percent:
        raise CommandError(f"target {soc:g} % is above max_soc_percent {vehicle.max_soc_percent:g}")
    return soc


def _local_time(value: Any, what: str) -> dt.time:
    """A time of day as the config takes it: ``"07:30"``, ``"7:30"``, ``"07:30:15"``; no offset."""
    if not isinstance(value, str):
        raise CommandError(f"{what} must be a string HH:MM")
    try:
        return _config_clock_time(value)
    except ValueError:
        pass
    try:
        has_offset = dt.time.fromisoformat(value.strip()).tzinfo is not None
    except ValueError:
        has_offset = False
    if has_offset:
        raise CommandError(f"{what} is a local time; leave out the offset")
    raise CommandError(f"{what} {value[:20]!r} is not HH:MM")


def _local_or_absolute(value: Any, what: str, tz: zoneinfo.ZoneInfo, now: dt.datetime) -> dt.datetime:
    """An absolute time; a date-time without an offset or a bare HH:MM (the next one) is site-local."""
    if not isinstance(value, str):
        raise CommandError(f"{what} must be a time string")
    if len(value) <= 8 and ":" in value:
        local_now = now.astimezone(tz)
        t = _local_time(value, what)
        moment = dt.datetime.combine(local_now.date(), t, tz)
        if moment <= local_now:
            moment = dt.datetime.combine(local_now.date() + dt.timedelta(days=1), t, tz)
        return ensure_utc(moment)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{what} {value[:40]!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    try:
        return ensure_utc(moment)
    except OverflowError:  # in UTC before year 1 or after year 9999
        raise CommandError(f"{what} {value[:40]!r} is out of range") from None


def _departure(vehicle: VehicleConfig, data: Any, tz: zoneinfo.ZoneInfo, now: dt.datetime) -> SetDeparture:
    body = _object(data, {"at", "target_soc_percent", "clear"})
    rid = _request_id(body)
    if body.get("clear") is True:
        if set(body) - {"clear", "request_id"}:
            raise CommandError("clear takes no other fields")
        return SetDeparture(vehicle.id, None, rid)
    for key in ("at", "target_soc_percent"):
        if key not in body:
            raise CommandError(f"missing {key}")
    at = _local_or_absolute(body["at"], "at", tz, now)
    if at <= now:
        raise CommandError("departure is in the past")
    if at - now > MAX_DEPARTURE_AHEAD:
        raise CommandError("departure is more than 14 days ahead")
    return SetDeparture(vehicle.id, Departure(at, _soc(body["target_soc_percent"], vehicle)), rid)


def _weekly(vehicle: VehicleConfig, data: Any) -> SetWeeklyDeparture:
    body = _object(data, {"weekday", "time", "target_soc_percent", "return_time", "clear"})
    rid = _request_id(body)
    day = body.get("weekday")
    if not isinstance(day, str) or day.lower() not in WEEKDAYS:
        raise CommandError(f"weekday must be one of {', '.join(WEEKDAYS)}")
    if body.get("clear") is True:
        if set(body) - {"weekday", "clear", "request_id"}:
            raise CommandError("clear takes no other fields than weekday")
        return SetWeeklyDeparture(vehicle.id, day.lower(), None, None, rid)
    for key in ("time", "target_soc_percent"):
        if key not in body:
            raise CommandError(f"missing {key}")
    time = _local_time(body["time"], "time")
    back = None
    if body.get("return_time") is not None:
        back = _local_time(body["return_time"], "return_time")
        if back <= time:
            raise CommandError(f"return_time {back:%H:%M} is not after time {time:%H:%M}")
    target = _soc(body["target_soc_percent"], vehicle)
    return SetWeeklyDeparture(vehicle.id, day.lower(), time, target, rid, return_time=back)


def _mode(vehicle: VehicleConfig, data: Any) -> SetMode:
    rid = None
    target: Any = None
    if isinstance(data, dict):
        body = _object(data, {"mode", "target_soc_percent"})
        rid = _request_id(body)
        data = body.get("mode")
        target = body.get("target_soc_percent")
    if not isinstance(data, str):
        raise CommandError("mode must be a string")
    try:
        mode = VehicleMode(data.strip().lower())
    except ValueError:
        raise CommandError(f"mode must be one of {', '.join(m.value for m in VehicleMode)}") from None
    if target is None:
        return SetMode(vehicle.id, mode, rid)
    if mode is not VehicleMode.CHARGE_NOW:
        raise CommandError("target_soc_percent goes with mode charge_now only")
    soc = _number(target, "target_soc_percent")
    if not math.isfinite(soc) or not vehicle.reserve_percent < soc <= 100:
        raise CommandError(
            f"target_soc_percent must be above the reserve {vehicle.reserve_percent:.0f} % and at most 100"
        )
    return SetMode(vehicle.id, mode, rid, charge_to_percent=soc)


def _v2l(vehicle: VehicleConfig, data: Any, tz: zoneinfo.ZoneInfo, now: dt.datetime) -> V2LCommand:
    body = _object(data, {"action", "power_w", "until"}) if isinstance(data, dict) else {"action": data}
    rid = _request_id(body)
    action = body.get("action")
    if action == "stop":
        return V2LCommand(vehicle.id, "stop", request_id=rid)
    if action != "start":
        raise CommandError("action must be start or stop")
    if not vehicle.permissions.v2l:
        raise CommandError(f"vehicle {vehicle.id} does not allow V2L (permissions.v2l)")
    power = _number(body.get("power_w", 0.0), "power_w")
    if not (math.isfinite(power) and 0 <= power <= MAX_V2L_POWER_W):
        raise CommandError(f"power_w must be within 0-{MAX_V2L_POWER_W:g} W")
    until = None
    if body.get("until") is not None:
        until = _local_or_absolute(body["until"], "until", tz, now)
        if until <= now:
            raise CommandError("until is in the past")
    return V2LCommand(vehicle.id, "start", power, until, rid)


def parse_command(cfg: SiteConfig, vehicle_id: str, name: str, payload: bytes, now: dt.datetime) -> Command:
    """Validate one command; raises CommandError with a message fit for the reply."""
    now = ensure_utc(now)
    vehicle = cfg.vehicle(vehicle_id)
    if vehicle is None:
        raise CommandError(f"unknown vehicle {vehicle_id[:64]!r}")
    if name not in COMMAND_NAMES:
        raise CommandError(f"unknown command {name[:64]!r}; use one of {', '.join(COMMAND_NAMES)}")
    data = _payload(payload)
    tz = zoneinfo.ZoneInfo(cfg.site.timezone)
    if name == "departure":
        return _departure(vehicle, data, tz, now)
    if name == "weekly_departure":
        return _weekly(vehicle, data)
    if name == "mode":
        return _mode(vehicle, data)
    return _v2l(vehicle, data, tz, now)
