"""What every config model shares: the strict base model, the number and name types, and the
parsers of single values (times of day, weekdays, host names, MQTT topics) with their messages."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

Kw = Annotated[float, Field(ge=0, le=1000)]
Percent = Annotated[float, Field(ge=0, le=100)]
Fraction = Annotated[float, Field(gt=0, le=1)]
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_CLOCK_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
# Host names as resolvers take them; underscores too (Docker service names).
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?$"
)


class _Model(BaseModel):
    # NaN and infinity pass every bound check silently (nan > 500 is False): refuse them outright.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False)


class LocalWindow(_Model):
    """A window of local time on some weekdays (time-of-use prices, grid-fee windows)."""

    start: dt.time = Field(description="Local time the window opens, HH:MM.")
    end: dt.time = Field(
        description="Local time it closes, HH:MM (24:00 = midnight); before start: it runs past midnight; "
        "equal to start: the whole day."
    )
    days: list[str] = Field(
        default_factory=lambda: list(WEEKDAYS), min_length=1, description="Weekdays the window opens on."
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hhmm(cls, value: Any) -> dt.time:
        return _clock_time(value, allow_24=True)

    @field_validator("days")
    @classmethod
    def _weekday_names(cls, value: list[str]) -> list[str]:
        return [_weekday(day) for day in value]

    def opened_on(self, local: dt.datetime) -> dt.date | None:
        """The day the window opened on if it is open at ``local`` (local time), else None; past
        midnight, the part after midnight belongs to the day the window opened on."""
        t = local.time()
        if self.start < self.end:
            opened: dt.date | None = local.date() if self.start <= t < self.end else None
        elif self.start == self.end or t >= self.start:  # the whole day, or before midnight
            opened = local.date()
        elif t < self.end:
            opened = local.date() - dt.timedelta(days=1)
        else:
            opened = None
        return opened if opened is not None and WEEKDAYS[opened.weekday()] in self.days else None


def _clock_time(value: Any, *, allow_24: bool = False) -> dt.time:
    """A local time of day from YAML: ``"07:30"``, ``"7:30"``, ``"07:30:15"`` or an unquoted 07:30, which
    YAML 1.1 reads as the sexagesimal integer 450. Offsets are refused: user schedules are local time.
    With ``allow_24``, ``"24:00"`` (the end of a day) is read as 00:00."""
    if isinstance(value, dt.time):
        if value.tzinfo is not None:
            raise PydanticCustomError("clock_time", "a time of day without an offset")
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 24 * 60:
        hour, minute, second = value // 60, value % 60, 0
    elif isinstance(value, str) and (match := _CLOCK_TIME.match(value.strip())):
        hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    else:
        raise PydanticCustomError("clock_time", "a time of day")
    if allow_24 and (hour, minute, second) == (24, 0, 0):
        return dt.time(0, 0)
    if hour > 23 or minute > 59 or second > 59:
        raise PydanticCustomError("clock_time", "a time of day")
    return dt.time(hour, minute, second)


def _num(value: float) -> str:
    """A number as people write it: 100, not 100.0; 0.1 stays 0.1."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _host(value: str, fix: str) -> str:
    """A host name or IP address; ``fix`` says what to write instead."""
    if not value:
        raise PydanticCustomError("empty_host", "is empty; {fix}", {"fix": fix})
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOST_NAME.match(value):
            raise PydanticCustomError(
                "not_a_host",
                "{host} is not a host name or IP address; {fix}",
                {"host": repr(value), "fix": fix},
            ) from None
    return value


_LISTEN_FIX = "write an address of this machine: 0.0.0.0 for every interface, 127.0.0.1 for this machine only"


def _mqtt_topic(value: str | None, fix: str) -> str | None:
    """An MQTT topic name (or prefix) the controller subscribes or publishes to: one exact topic, so
    no ``+``/``#`` wildcard, not empty, no NUL (MQTT forbids it). Surrounding whitespace is already
    stripped. ``fix`` says what to write instead."""
    if value is None:
        return None
    if not value:
        raise PydanticCustomError("topic_empty", "is empty; {fix}, or remove the field", {"fix": fix})
    if "#" in value or "+" in value:
        raise PydanticCustomError("topic_wildcard", "has a + or # wildcard; {fix}", {"fix": fix})
    if "\0" in value:
        raise PydanticCustomError("topic_nul", "contains a NUL character; {fix}", {"fix": fix})
    return value


def _weekday(name: Any) -> str:
    """A weekday name, case-insensitive (``Monday``, ``monday``), as its lower-case form."""
    if isinstance(name, str) and name.strip().lower() in WEEKDAYS:
        return name.strip().lower()
    raise PydanticCustomError(
        "unknown_weekday",
        "'{day}' is not a weekday; use one of {days}",
        {"day": str(name), "days": ", ".join(WEEKDAYS)},
    )


def is_loopback(host: str) -> bool:
    """Whether a listener on ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
