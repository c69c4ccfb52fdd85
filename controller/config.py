"""Site configuration: pydantic models, YAML loading with ``${ENV}`` substitution, errors with fixes.

User-facing power is in kW (``*_kw``) as documented; everything inside uses W (see ``domain``).
"""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import math
import os
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_core.core_schema import ErrorType

from controller.domain import MeterRole
from controller.logs import is_secret_key
from controller.passwords import is_password_hash
from controller.values import parse_json_path

__all__ = [
    "ApiConfig",
    "ChargerConfig",
    "ConfigError",
    "ConfigIssue",
    "ForecastConfig",
    "GridConfig",
    "LoggingConfig",
    "MeterConfig",
    "MqttConfig",
    "OcppConfig",
    "OptimizerConfig",
    "SiteConfig",
    "SiteSettings",
    "TariffConfig",
    "VehicleConfig",
    "load_config",
    "parse_config",
    "physical_power_limits_kw",
    "power_limits_kw",
]

Kw = Annotated[float, Field(ge=0, le=1000)]
Percent = Annotated[float, Field(ge=0, le=100)]
Fraction = Annotated[float, Field(gt=0, le=1)]
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_PYDANTIC_ERROR_TYPES = frozenset(get_args(ErrorType))
_CLOCK_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
# Host names as resolvers take them; underscores too (Docker service names).
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?$"
)


class _Model(BaseModel):
    # NaN and infinity pass every bound check silently (nan > 500 is False): refuse them outright.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False)


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


# --------------------------------------------------------------------------- site


class GridConfig(_Model):
    """Grid connection limits (contract, fuse) and the fallback when a grid signal expires."""

    import_limit_kw: Kw = Field(description="Maximum import from the grid (fuse or contract), kW.")
    export_limit_kw: Kw = Field(0.0, description="Maximum export to the grid, kW. 0 forbids export.")
    fallback_import_limit_kw: Kw | None = Field(
        None,
        description="Import cap used when a grid-operator limit signal expires; defaults to import_limit_kw.",
    )
    fallback_export_limit_kw: Kw | None = Field(
        None,
        description="Export cap used when a grid-operator limit signal expires; defaults to export_limit_kw.",
    )

    @model_validator(mode="after")
    def _fallbacks_within_limits(self) -> Self:
        if self.fallback_import_limit_kw is not None and self.fallback_import_limit_kw > self.import_limit_kw:
            raise PydanticCustomError(
                "fallback_above_limit",
                "fallback_import_limit_kw {fallback} is above import_limit_kw {limit}; lower it",
                {"fallback": _num(self.fallback_import_limit_kw), "limit": _num(self.import_limit_kw)},
            )
        if self.fallback_export_limit_kw is not None and self.fallback_export_limit_kw > self.export_limit_kw:
            raise PydanticCustomError(
                "fallback_above_limit",
                "fallback_export_limit_kw {fallback} is above export_limit_kw {limit}; lower it",
                {"fallback": _num(self.fallback_export_limit_kw), "limit": _num(self.export_limit_kw)},
            )
        return self

    @property
    def effective_fallback_import_kw(self) -> float:
        return (
            self.import_limit_kw if self.fallback_import_limit_kw is None else self.fallback_import_limit_kw
        )

    @property
    def effective_fallback_export_kw(self) -> float:
        return (
            self.export_limit_kw if self.fallback_export_limit_kw is None else self.fallback_export_limit_kw
        )


class SiteSettings(_Model):
    name: str = Field("home", min_length=1, max_length=100)
    timezone: str = Field("UTC", description="IANA timezone for user schedules, e.g. Europe/Amsterdam.")
    plan_step_minutes: Literal[5, 10, 15, 20, 30, 60] = Field(
        15, description="Plan grid step; divides the hour."
    )
    horizon_hours: int = Field(24, ge=1, le=168, description="Planning horizon.")
    replan_interval_minutes: float = Field(5, gt=0, le=60)
    dispatch_interval_s: float = Field(
        5, ge=0.5, le=60, description="How often live readings adjust setpoints."
    )
    currency: str = Field("EUR", min_length=3, max_length=3)
    grid: GridConfig

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "unknown_timezone",
                "unknown timezone '{tz}'; use an IANA name such as Europe/Amsterdam",
                {"tz": value},
            ) from None
        return value

    @property
    def steps(self) -> int:
        return self.horizon_hours * 60 // self.plan_step_minutes


# ----------------------------------------------------------------------- chargers


class OcppVersion(StrEnum):
    V16 = "1.6"
    V201 = "2.0.1"
    V21 = "2.1"


class ChargerAuth(_Model):
    """OCPP HTTP Basic auth (security profiles 1 and 2). The password is stored as a hash only."""

    password_hash: str = Field(description="Output of `v2x hash-password`; never the plain password.")

    @field_validator("password_hash")
    @classmethod
    def _is_hash(cls, value: str) -> str:
        if not is_password_hash(value):
            raise PydanticCustomError(
                "not_a_password_hash",
                "is not a password hash; run `v2x hash-password` and paste its output here",
            )
        return value


class ChargerConfig(_Model):
    id: Ident = Field(description="Charge point identity, the last path segment of its OCPP URL.")
    ocpp_versions: list[OcppVersion] = Field(
        default_factory=lambda: [OcppVersion.V21, OcppVersion.V201, OcppVersion.V16], min_length=1
    )
    max_charge_kw: Kw = Field(11.0, gt=0)
    max_discharge_kw: Kw = 0.0
    min_current_a: float = Field(
        6.0, ge=0, le=80, description="Smallest current the charger can set per phase."
    )
    phases: Literal[1, 3] = 3
    voltage_v: float = Field(230.0, ge=100, le=480)
    bidirectional: bool = False
    negative_limit_means_discharge: bool = Field(
        False,
        description="OCPP 1.6/2.0.1 only: this charger treats a negative limit as discharge (vendor extension).",
    )
    evse_id: int = Field(1, ge=1, le=16)
    auth: ChargerAuth | None = None

    @model_validator(mode="after")
    def _discharge_needs_bidirectional(self) -> Self:
        if self.max_discharge_kw > 0 and not self.bidirectional:
            raise PydanticCustomError(
                "discharge_not_bidirectional",
                "max_discharge_kw is {kw} but bidirectional is false; set bidirectional: true or max_discharge_kw: 0",
                {"kw": _num(self.max_discharge_kw)},
            )
        if self.bidirectional and self.max_discharge_kw <= 0:
            raise PydanticCustomError(
                "bidirectional_without_power",
                "bidirectional is true but max_discharge_kw is 0; set the charger's discharge power",
            )
        return self


# ----------------------------------------------------------------------- vehicles


class Reserve(_Model):
    """The floor the controller never discharges below: a percent, or km of range."""

    percent: Percent | None = None
    km: float | None = Field(None, ge=0, le=2000)

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.percent is None) == (self.km is None):
            raise PydanticCustomError(
                "reserve_one_of",
                "{what}; set exactly one of them",
                {"what": "has neither percent nor km" if self.percent is None else "has both percent and km"},
            )
        return self


class DepartureRule(_Model):
    time: dt.time = Field(description="Local time of departure, HH:MM.")
    target_soc_percent: Percent
    return_time: dt.time | None = Field(
        None,
        description="Local time the car is usually back the same day, HH:MM (after `time`). The plan then "
        "counts on the car from then on, less `typical_trip_km` of energy; without it a departing car is "
        "planned as gone until it plugs in again.",
    )

    @field_validator("time", "return_time", mode="before")
    @classmethod
    def _hhmm(cls, value: Any) -> dt.time | None:
        return None if value is None else _clock_time(value)

    @model_validator(mode="after")
    def _back_after_leaving(self) -> Self:
        if self.return_time is not None and self.return_time <= self.time:
            raise ValueError(
                f"return_time {self.return_time:%H:%M} is not after time {self.time:%H:%M}; "
                "give the time the car is back the same day, or leave return_time out"
            )
        return self


class Permissions(_Model):
    v2g: bool = Field(False, description="May the car's energy be exported to the grid?")
    v2h: bool = Field(False, description="May the car cover the home's consumption?")
    v2l: bool = Field(False, description="May the car power loads directly (V2L sessions)?")


class VehicleConfig(_Model):
    id: Ident
    name: str | None = None
    usable_capacity_kwh: float = Field(gt=0, le=500)
    charge_efficiency: Fraction = 0.92
    discharge_efficiency: Fraction = 0.92
    max_charge_kw: Kw = Field(11.0, gt=0)
    max_discharge_kw: Kw = 0.0
    consumption_kwh_per_100km: float = Field(18.0, gt=0, le=100)
    typical_trip_km: float = Field(
        40.0,
        ge=0,
        le=2000,
        description="Used to estimate SoC on arrival when the car reports none, and the energy of a "
        "scheduled trip with a `return_time`.",
    )
    reserve: Reserve = Field(default_factory=lambda: Reserve(percent=20.0))
    max_soc_percent: Percent = Field(100.0, description="Upper SoC the controller charges to for arbitrage.")
    default_target_soc_percent: Percent = Field(80.0, description="Target for departures without their own.")
    departures: dict[str, DepartureRule] = Field(
        default_factory=dict, description="Weekly schedule: weekday name -> departure time and target SoC."
    )
    permissions: Permissions = Field(default_factory=Permissions)
    degradation_cost_per_kwh: float = Field(
        0.05, ge=0, le=5, description="Wear cost per kWh through the battery."
    )
    home_charger: str | None = Field(None, description="id of the charger this car normally uses.")
    v2l_cutoff_topic: str | None = Field(
        None, description="MQTT topic that stops a V2L session at the reserve."
    )
    v2l_cutoff_payload: str = Field(
        "OFF", max_length=1024, description="Payload published on v2l_cutoff_topic."
    )

    @field_validator("v2l_cutoff_topic")
    @classmethod
    def _cutoff_topic(cls, value: str | None) -> str | None:
        return _mqtt_topic(value, "write the one topic the V2L switch listens on")

    @field_validator("departures")
    @classmethod
    def _weekday_names(cls, value: dict[str, DepartureRule]) -> dict[str, DepartureRule]:
        by_day: dict[str, DepartureRule] = {}
        for day, rule in value.items():
            name = _weekday(day)
            if name in by_day:  # "Monday" and "monday": one would silently replace the other
                raise PydanticCustomError(
                    "duplicate_weekday", "{day} is listed twice; keep one entry per day", {"day": name}
                )
            by_day[name] = rule
        return by_day

    def energy_kwh_for_km(self, km: float) -> float:
        """Energy the car uses to drive ``km``, by its configured consumption."""
        return km * self.consumption_kwh_per_100km / 100.0

    @property
    def reserve_percent(self) -> float:
        """Reserve floor as percent of usable capacity (km converted with the consumption)."""
        if self.reserve.percent is not None:
            return self.reserve.percent
        return 100.0 * self.energy_kwh_for_km(self.reserve.km or 0.0) / self.usable_capacity_kwh

    @model_validator(mode="after")
    def _discharge_permissions(self) -> Self:
        if (self.permissions.v2g or self.permissions.v2h) and self.max_discharge_kw <= 0:
            raise PydanticCustomError(
                "discharge_permission_without_power",
                "permissions allow V2G/V2H but max_discharge_kw is 0; set the car's discharge power",
            )
        return self


# -------------------------------------------------------------------------- meters


class MeterFormat(StrEnum):
    TASMOTA = "tasmota"
    SHELLY_PRO3EM = "shelly_pro3em"
    DSMR_READER = "dsmr_reader"
    PLAIN = "plain"
    JSON = "json"


_JSON_PATH_FORMATS = frozenset({MeterFormat.JSON, MeterFormat.TASMOTA, MeterFormat.SHELLY_PRO3EM})
"""The formats whose parser reads ``json_path`` (plain and dsmr_reader payloads have no JSON tree to walk)."""


class MeterConfig(_Model):
    id: Ident
    role: MeterRole
    topic: str = Field(min_length=1, description="MQTT topic (for dsmr_reader: the topic prefix, e.g. dsmr).")
    format: MeterFormat = MeterFormat.PLAIN
    json_path: str | None = Field(
        None, description="For format json: dotted path such as ENERGY.Power or a.0.b."
    )
    scale: float = Field(1.0, description="Multiplier to W (e.g. 1000 for kW) or to percent.")
    sign: Literal[1, -1] = Field(1, description="-1 flips a meter that reports export as positive.")
    stale_after_s: float = Field(60.0, gt=0, le=86400)
    vehicle: str | None = Field(None, description="Vehicle id, for roles vehicle_soc and v2l.")

    @field_validator("scale")
    @classmethod
    def _scale_not_zero(cls, value: float) -> float:
        if value == 0:
            raise PydanticCustomError(
                "scale_zero",
                "is 0, which turns every reading into 0; use the multiplier to W, e.g. 1 for W or 1000 for kW",
            )
        return value

    @field_validator("topic")
    @classmethod
    def _no_wildcards(cls, value: str) -> str:
        topic = _mqtt_topic(value, "write the one topic this meter publishes on")
        assert topic is not None
        return topic

    @field_validator("json_path")
    @classmethod
    def _json_path_parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                # The parser the meter uses: a path that fails here would stop the daemon at start.
                parse_json_path(value)
            except ValueError as exc:
                raise PydanticCustomError(
                    "json_path_invalid",
                    "{problem}; write dotted keys, with numbers for list items: ENERGY.Power or a.0.b",
                    {"problem": str(exc)},
                ) from None
        return value

    @model_validator(mode="after")
    def _format_fields(self) -> Self:
        if self.format is MeterFormat.JSON and not self.json_path:
            raise PydanticCustomError(
                "json_path_missing", "format json needs json_path; add json_path, e.g. ENERGY.Power"
            )
        if self.json_path is not None and self.format not in _JSON_PATH_FORMATS:
            raise PydanticCustomError(
                "json_path_ignored",
                "json_path is set but format {format} does not read it; remove json_path, or set format: json",
                {"format": self.format.value},
            )
        if self.role in (MeterRole.VEHICLE_SOC, MeterRole.V2L) and not self.vehicle:
            raise PydanticCustomError(
                "meter_vehicle_missing",
                "role {role} needs the vehicle it reports on; add vehicle: <vehicle id>",
                {"role": self.role.value},
            )
        return self


# ------------------------------------------------------------------------- tariffs


class TimeOfUseWindow(_Model):
    start: dt.time = Field(description="Local time the window opens, HH:MM.")
    end: dt.time = Field(
        description="Local time it closes, HH:MM (24:00 = midnight); before start: it runs past midnight; "
        "equal to start: the whole day."
    )
    price_per_kwh: float = Field(ge=-10, le=10)
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


class PriceConfig(_Model):
    """One price: static, time-of-use windows over a base price, or dynamic from an MQTT topic."""

    static_price_per_kwh: float | None = Field(None, ge=-10, le=10)
    time_of_use: list[TimeOfUseWindow] = Field(default_factory=list)
    dynamic_topic: str | None = Field(
        None, description="MQTT topic carrying a JSON array of {start,end,value}."
    )
    dynamic_markup_per_kwh: float = Field(
        0.0, ge=-10, le=10, description="Added to dynamic prices (fees, taxes)."
    )
    dynamic_multiplier: float = Field(
        1.0, ge=0, le=10, description="Applied to dynamic prices before the markup."
    )

    @field_validator("dynamic_topic")
    @classmethod
    def _one_topic(cls, value: str | None) -> str | None:
        return _mqtt_topic(value, "write the one topic the prices are published on")

    @model_validator(mode="after")
    def _has_a_source(self) -> Self:
        if self.static_price_per_kwh is None and not self.time_of_use and not self.dynamic_topic:
            raise PydanticCustomError(
                "price_without_source",
                "has no price; set static_price_per_kwh, time_of_use windows or dynamic_topic",
            )
        if self.time_of_use and self.static_price_per_kwh is None:
            raise PydanticCustomError(
                "tou_without_base",
                "time_of_use has no price outside its windows; set static_price_per_kwh as that price",
            )
        return self


class TariffConfig(_Model):
    import_: PriceConfig = Field(alias="import")
    export: PriceConfig = Field(default_factory=lambda: PriceConfig(static_price_per_kwh=0.0))
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class GridSignalsConfig(_Model):
    limit_topic: str | None = Field(None, description="MQTT topic of grid-operator import/export caps.")
    outage_topic: str | None = Field(
        None,
        description="MQTT topic reporting grid loss: true/1/lost/off = grid down, false/0/ok/on = grid back "
        '(or JSON {"grid_lost": true}). While down, V2H cars keep the home up to their reserve.',
    )
    outage_max_age_s: float | None = Field(
        900.0,
        gt=0,
        le=604_800,
        description="An outage state not repeated on outage_topic for this long (s) counts as over: the "
        "grid is taken as back (logged as grid_state_expired), so a lost 'ok' cannot stop charging for "
        "good. The source must repeat 'lost' more often than this during a long outage. null: never expires.",
    )
    guaranteed_import_kw: Kw = Field(
        0.0, description="A cap never goes below this (e.g. 4.2 kW under Germany's §14a)."
    )

    @field_validator("limit_topic", "outage_topic")
    @classmethod
    def _one_topic(cls, value: str | None) -> str | None:
        return _mqtt_topic(value, "write the one topic the signal is published on")


class ForecastConfig(_Model):
    """Home load and PV forecasts (see docs/daemon.md)."""

    pv_forecast_topic: str | None = Field(
        None,
        description='MQTT topic with a PV forecast: [{"start", "end", "value"}] in W (or {"unit": "kW", '
        '"forecast": [...]}); steps it covers replace the forecast from PV history.',
    )
    load_history_weeks: int = Field(
        4, ge=1, le=12, description="Weeks of same-weekday history for home load."
    )
    pv_history_days: int = Field(7, ge=1, le=60, description="Days of history for the PV profile.")
    default_home_load_w: float = Field(
        400.0, ge=0, le=100_000, description="Home load assumed without history."
    )

    @field_validator("pv_forecast_topic")
    @classmethod
    def _one_topic(cls, value: str | None) -> str | None:
        return _mqtt_topic(value, "write the one topic the forecast is published on")


# -------------------------------------------------------------------- connections


class TlsConfig(_Model):
    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


class MqttConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = Field("v2x-controller", min_length=1, max_length=128)
    base_topic: str = Field(
        "v2x", min_length=1, description="Prefix for status, state, commands and replies."
    )
    keepalive_s: int = Field(30, ge=5, le=3600)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    homeassistant_discovery: bool = True
    discovery_prefix: str = "homeassistant"

    @field_validator("host")
    @classmethod
    def _a_host(cls, value: str) -> str:
        return _host(value, "write the broker's name or address, e.g. 127.0.0.1 or broker.lan")

    @field_validator("base_topic", "discovery_prefix")
    @classmethod
    def _a_prefix(cls, value: str, info: ValidationInfo) -> str:
        # The controller subscribes to <base_topic>/cmd/# and publishes under both: a wildcard in
        # them would make every publish fail.
        example = "v2x" if info.field_name == "base_topic" else "homeassistant"
        topic = _mqtt_topic(value, f"write a plain topic prefix such as {example}")
        assert topic is not None
        return topic

    @field_validator("username", "password", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class OcppTlsConfig(_Model):
    cert_file: Path = Field(description="Server certificate (PEM).")
    key_file: Path = Field(description="Server private key (PEM).")
    client_ca_file: Path | None = Field(
        None, description="CA for client certificates: security profile 3 (mTLS)."
    )


class OcppConfig(_Model):
    host: str = "0.0.0.0"
    port: int = Field(9000, ge=1, le=65535)
    tls: OcppTlsConfig | None = None
    accept_unknown_chargers: bool = False
    heartbeat_interval_s: int = Field(300, ge=10, le=86400)
    meter_sample_interval_s: int = Field(10, ge=1, le=3600)
    profile_validity_hours: float = Field(2.0, gt=0, le=48, description="How long a sent TxProfile holds.")
    call_timeout_s: float = Field(10.0, gt=0, le=120)
    accepted_id_tokens: list[Annotated[str, Field(min_length=1, max_length=255)]] | None = Field(
        None,
        min_length=1,
        description="RFID cards / idTokens that may charge (case-insensitive); absent: every token is accepted.",
    )

    @field_validator("host")
    @classmethod
    def _a_host(cls, value: str) -> str:
        return _host(value, _LISTEN_FIX)


class ApiConfig(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    token: SecretStr | None = Field(
        None, description="Bearer token every endpoint except /health requires; empty: no token."
    )

    @field_validator("host")
    @classmethod
    def _a_host(cls, value: str) -> str:
        return _host(value, _LISTEN_FIX)

    @field_validator("token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class StorageConfig(_Model):
    path: Path = Field(Path("v2x.sqlite"), description="SQLite file; relative to the working directory.")
    history_retention_days: int = Field(400, ge=1, le=3650)

    @field_validator("path", mode="before")
    @classmethod
    def _a_file_name(cls, value: Any) -> Any:
        if isinstance(value, str) and (value.strip() in ("", ".", "..") or value.strip().endswith("/")):
            raise PydanticCustomError("storage_path", "is not a file name")
        return value


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = "auto"


class OptimizerConfig(_Model):
    """Tuning of the schedule optimiser (see docs/optimizer.md)."""

    terminal_value_per_kwh: float | None = Field(
        None,
        ge=0,
        le=10,
        description="Value of a kWh left in a battery at the horizon end; default: the larger of the mean "
        "import price and the upper-quartile export price over the horizon (at least 0). Without it a "
        "receding-horizon plan empties the car at the edge.",
    )
    churn_cost_per_kw: float = Field(
        0.0005, ge=0, le=1, description="Small cost per kW of setpoint change between steps (less churn)."
    )
    churn_horizon_hours: float = Field(
        4.0,
        gt=0,
        le=8760,
        description="Setpoint changes are priced over the first hours of the plan only: what the chargers "
        "receive before later re-plans. Longer is slower to solve.",
    )
    solver_time_limit_s: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="Time budget of one plan (s): snapshot translation, the first model build and every "
        "solver pass together; when it is used up the safe fallback plan is used.",
    )


# ---------------------------------------------------------------------- the site


class SiteConfig(_Model):
    site: SiteSettings
    chargers: list[ChargerConfig] = Field(default_factory=list)
    vehicles: list[VehicleConfig] = Field(default_factory=list)
    meters: list[MeterConfig] = Field(default_factory=list)
    tariff: TariffConfig
    grid_signals: GridSignalsConfig = Field(default_factory=GridSignalsConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    ocpp: OcppConfig = Field(default_factory=OcppConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    forecast: ForecastConfig = Field(default_factory=ForecastConfig)

    @model_validator(mode="after")
    def _cross_field(self, info: ValidationInfo) -> Self:
        if isinstance(info.context, dict) and info.context.get(_PARTIAL):
            return self  # parse_config runs the checks itself, on the parts that parsed
        issues = _cross_field_issues(self)
        if issues:
            raise PydanticCustomError(
                "cross_field", "{count} cross-field problem(s)", {"count": len(issues), "issues": issues}
            )
        return self

    def charger(self, charger_id: str) -> ChargerConfig | None:
        return next((c for c in self.chargers if c.id == charger_id), None)

    def vehicle(self, vehicle_id: str) -> VehicleConfig | None:
        return next((v for v in self.vehicles if v.id == vehicle_id), None)


def physical_power_limits_kw(vehicle: VehicleConfig, charger: ChargerConfig | None) -> tuple[float, float]:
    """(max charge kW, max discharge kW) the car and charger can do together: the lower of the two;
    no discharge through a charger that is not bidirectional."""
    charge_kw = vehicle.max_charge_kw
    discharge_kw = vehicle.max_discharge_kw
    if charger is not None:
        charge_kw = min(charge_kw, charger.max_charge_kw)
        discharge_kw = min(discharge_kw, charger.max_discharge_kw) if charger.bidirectional else 0.0
    return charge_kw, discharge_kw


def power_limits_kw(vehicle: VehicleConfig, charger: ChargerConfig | None) -> tuple[float, float]:
    """The physical limits with the permissions applied: discharge needs V2H permission (V2H off
    means no discharge at all; V2G adds export on top)."""
    charge_kw, discharge_kw = physical_power_limits_kw(vehicle, charger)
    return charge_kw, discharge_kw if vehicle.permissions.v2h else 0.0


Loc = tuple[int | str, ...]
"""Where a value sits in the config tree: ("vehicles", 0, "reserve"). ``"*"`` stands for any index."""


def _overlaps(first: Loc, second: Loc) -> bool:
    """Does one location contain the other (``"*"`` matching any index)?"""
    return all(a == b or "*" in (a, b) for a, b in zip(first, second, strict=False))


@dataclass
class _Checks:
    """Collects cross-field problems. On a config with field errors the checks run on a repaired copy
    (bad values dropped for their defaults, bad list items dropped): ``where`` maps a location in the
    copy to the one the user wrote, and a problem that reads a ``repaired`` value is not reported,
    since it would be about a value the user did not write."""

    where: Callable[[Loc], Loc] = lambda loc: loc
    repaired: tuple[Loc, ...] = ()
    issues: list[ConfigIssue] = field(default_factory=list)

    def add(self, loc: Loc, message: str, fix: str, *, uses: Iterable[Loc] = ()) -> None:
        read = [self.where(loc), *(self.where(u) for u in uses)]
        if any(_overlaps(r, bad) for r in read for bad in self.repaired):
            return
        self.issues.append(ConfigIssue(_loc_to_path(read[0]), message, fix))


def _cross_field_issues(cfg: SiteConfig, checks: _Checks | None = None) -> list[ConfigIssue]:
    checks = checks if checks is not None else _Checks()
    _check_ids(cfg, checks)
    _check_vehicles(cfg, checks)
    _check_chargers(cfg, checks)
    _check_meters(cfg, checks)
    _check_tariff(cfg, checks)
    _check_connections(cfg, checks)
    return checks.issues


def _check_ids(cfg: SiteConfig, checks: _Checks) -> None:
    id_lists = {
        "chargers": [c.id for c in cfg.chargers],
        "vehicles": [v.id for v in cfg.vehicles],
        "meters": [m.id for m in cfg.meters],
    }
    for kind, ids in id_lists.items():
        seen: dict[str, int] = {}
        for i, item_id in enumerate(ids):
            if item_id in seen:
                checks.add(
                    (kind, i, "id"),
                    f"duplicate id {item_id!r}",
                    "give each one its own id",
                    uses=[(kind, seen[item_id], "id")],
                )
            seen.setdefault(item_id, i)


def _check_vehicles(cfg: SiteConfig, checks: _Checks) -> None:
    charger_ids = {c.id for c in cfg.chargers}
    v2g_vehicles: list[Loc] = []
    for i, v in enumerate(cfg.vehicles):
        at: Loc = ("vehicles", i)
        if v.home_charger is not None and v.home_charger not in charger_ids:
            checks.add(
                (*at, "home_charger"),
                f"unknown charger {v.home_charger!r}",
                f"use one of {sorted(charger_ids)} or add the charger under chargers",
                uses=[("chargers", "*", "id")],
            )
        reserve = v.reserve_percent
        reserve_uses = [(*at, "reserve"), (*at, "consumption_kwh_per_100km"), (*at, "usable_capacity_kwh")]
        if reserve >= 100:
            checks.add(
                (*at, "reserve"),
                f"reserve is {reserve:.0f} % of the battery",
                "lower the reserve",
                uses=reserve_uses,
            )
        for day, rule in v.departures.items():
            target_at = (*at, "departures", day, "target_soc_percent")
            if rule.target_soc_percent <= reserve:
                checks.add(
                    target_at,
                    f"target {rule.target_soc_percent:g} % is not above the reserve {reserve:.0f} %",
                    "raise the target or lower the reserve",
                    uses=reserve_uses,
                )
            if rule.target_soc_percent > v.max_soc_percent:
                checks.add(
                    target_at,
                    f"target {rule.target_soc_percent:g} % is above max_soc_percent {v.max_soc_percent:g}",
                    "lower the target or raise max_soc_percent",
                    uses=[(*at, "max_soc_percent")],
                )
        if v.default_target_soc_percent <= reserve:
            checks.add(
                (*at, "default_target_soc_percent"),
                f"{v.default_target_soc_percent:g} % is not above the reserve {reserve:.0f} %",
                "raise the target or lower the reserve",
                uses=reserve_uses,
            )
        if v.default_target_soc_percent > v.max_soc_percent:
            checks.add(
                (*at, "default_target_soc_percent"),
                f"{v.default_target_soc_percent:g} % is above max_soc_percent {v.max_soc_percent:g}",
                "lower default_target_soc_percent or raise max_soc_percent",
                uses=[(*at, "max_soc_percent")],
            )
        if v.max_soc_percent <= reserve:
            checks.add(
                (*at, "max_soc_percent"),
                f"{v.max_soc_percent:g} % is not above the reserve {reserve:.0f} %",
                "raise max_soc_percent",
                uses=reserve_uses,
            )
        if v.permissions.v2g:
            v2g_vehicles.append((*at, "permissions"))
        index = next((j for j, c in enumerate(cfg.chargers) if c.id == v.home_charger), None)
        if index is not None and (v.permissions.v2g or v.permissions.v2h):
            charger = cfg.chargers[index]
            if not charger.bidirectional:
                checks.add(
                    (*at, "permissions"),
                    f"V2G/V2H allowed but charger {charger.id!r} is not bidirectional",
                    "turn off v2g/v2h or use a bidirectional charger",
                    uses=[(*at, "home_charger"), ("chargers", index, "bidirectional")],
                )
    if v2g_vehicles and cfg.site.grid.export_limit_kw <= 0:
        checks.add(
            ("site", "grid", "export_limit_kw"),
            "a vehicle allows V2G but the export limit is 0",
            "set export_limit_kw to the export your connection allows",
            uses=v2g_vehicles,
        )


def _check_chargers(cfg: SiteConfig, checks: _Checks) -> None:
    for i, c in enumerate(cfg.chargers):
        if c.negative_limit_means_discharge and not c.bidirectional:
            checks.add(
                ("chargers", i, "negative_limit_means_discharge"),
                "is true but the charger is not bidirectional, so it would never be used",
                "set bidirectional: true and max_discharge_kw, or remove negative_limit_means_discharge",
                uses=[("chargers", i, "bidirectional")],
            )


def _check_meters(cfg: SiteConfig, checks: _Checks) -> None:
    vehicle_ids = {v.id for v in cfg.vehicles}
    for i, m in enumerate(cfg.meters):
        if m.vehicle is not None and m.vehicle not in vehicle_ids:
            checks.add(
                ("meters", i, "vehicle"),
                f"unknown vehicle {m.vehicle!r}",
                f"use one of {sorted(vehicle_ids)}",
                uses=[("vehicles", "*", "id")],
            )
    grid_meters = [i for i, m in enumerate(cfg.meters) if m.role is MeterRole.GRID]
    if len(grid_meters) > 1:
        checks.add(
            ("meters", grid_meters[1], "role"),
            "more than one grid meter",
            "keep one meter with role grid",
            uses=[("meters", grid_meters[0], "role")],
        )


_DAY_S = 86_400


def _weekly_spans(window: TimeOfUseWindow) -> list[tuple[int, int]]:
    """The seconds of the week ``window`` covers, as [start, end) spans (as ``signals._tou_price``
    reads it: the part after midnight belongs to the day the window opened)."""
    start = window.start.hour * 3600 + window.start.minute * 60 + window.start.second
    end = window.end.hour * 3600 + window.end.minute * 60 + window.end.second
    spans: list[tuple[int, int]] = []
    for day in window.days:
        base = WEEKDAYS.index(day) * _DAY_S
        if start < end:
            spans.append((base + start, base + end))
        elif start == end:
            spans.append((base, base + _DAY_S))
        else:
            spans.append((base + start, base + _DAY_S))
            next_day = (base + _DAY_S) % (7 * _DAY_S)
            if end > 0:
                spans.append((next_day, next_day + end))
    return spans


def _first_overlap(first: TimeOfUseWindow, second: TimeOfUseWindow) -> int | None:
    shared = [
        max(a0, b0)
        for a0, a1 in _weekly_spans(first)
        for b0, b1 in _weekly_spans(second)
        if a0 < b1 and b0 < a1
    ]
    return min(shared) if shared else None


def _check_tariff(cfg: SiteConfig, checks: _Checks) -> None:
    for name, price in (("import", cfg.tariff.import_), ("export", cfg.tariff.export)):
        windows = price.time_of_use
        for j in range(1, len(windows)):
            for i in range(j):
                second = _first_overlap(windows[i], windows[j])
                if second is None:
                    continue
                day, rest = divmod(second, _DAY_S)
                when = f"{WEEKDAYS[day]} {rest // 3600:02d}:{rest % 3600 // 60:02d}"
                checks.add(
                    ("tariff", name, "time_of_use", j),
                    f"overlaps time_of_use[{i}] from {when}, where time_of_use[{i}] sets the price",
                    "change start, end or days so that no two windows cover the same time",
                    uses=[("tariff", name, "time_of_use", i)],
                )
                break


def _check_connections(cfg: SiteConfig, checks: _Checks) -> None:
    tls = cfg.mqtt.tls
    files = [name for name in ("ca_file", "cert_file", "key_file") if getattr(tls, name) is not None]
    if not tls.enabled and (files or tls.insecure_skip_verify):
        settings = " and ".join(files or ["insecure_skip_verify"])
        password = " and the password" if cfg.mqtt.password is not None else ""
        checks.add(
            ("mqtt", "tls", "enabled"),
            f"is false but mqtt.tls sets {settings}: the connection{password} would go unencrypted",
            f"set mqtt.tls.enabled: true, or remove {settings} to connect without TLS",
            uses=[("mqtt", "tls"), ("mqtt", "password")],
        )
    if tls.enabled and tls.key_file is not None and tls.cert_file is None:
        checks.add(
            ("mqtt", "tls", "key_file"),
            "is set without cert_file",
            "add cert_file, the client certificate, or remove key_file",
            uses=[("mqtt", "tls")],
        )
    if cfg.api.enabled and cfg.api.port == cfg.ocpp.port and _hosts_overlap(cfg.api.host, cfg.ocpp.host):
        checks.add(
            ("api", "port"),
            f"{cfg.api.port} is also ocpp.port; the daemon could not listen on both",
            "give the HTTP API its own port, e.g. 8080",
            uses=[("api",), ("ocpp", "port"), ("ocpp", "host")],
        )
    # A charging profile is renewed only when less than half of its validity is left, and only when a
    # plan or dispatch sends one: with a validity under two re-plan intervals it can lapse in between.
    replan_minutes = cfg.site.replan_interval_minutes
    if cfg.ocpp.profile_validity_hours * 60 < 2 * replan_minutes:
        least_hours = math.ceil(round(replan_minutes / 30 * 1000, 6)) / 1000  # rounded up: it must pass
        checks.add(
            ("ocpp", "profile_validity_hours"),
            f"{_num(cfg.ocpp.profile_validity_hours)} h is less than twice site.replan_interval_minutes "
            f"({_num(replan_minutes)} min): a charging profile can lapse between two plans",
            f"set ocpp.profile_validity_hours to at least {_num(least_hours)}, "
            "or lower site.replan_interval_minutes",
            uses=[("site", "replan_interval_minutes")],
        )
    if cfg.grid_signals.guaranteed_import_kw > cfg.site.grid.import_limit_kw:
        checks.add(
            ("grid_signals", "guaranteed_import_kw"),
            f"{cfg.grid_signals.guaranteed_import_kw:g} kW is above site.grid.import_limit_kw",
            "lower it to at most the import limit",
            uses=[("site", "grid", "import_limit_kw")],
        )


def _hosts_overlap(first: str, second: str) -> bool:
    wildcard = ("0.0.0.0", "::", "")
    return first == second or first in wildcard or second in wildcard


# -------------------------------------------------------------------- loading


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config: where (``vehicles[0].reserve.percent``), what, and how to fix it."""

    path: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" + (f" ({self.fix})" if self.fix else "")


class ConfigError(Exception):
    """A config that cannot be used; ``issues`` lists every problem found."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(f"{source}: " + "; ".join(str(i) for i in issues))


_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""A site with thousands of chargers stays far below this."""
MAX_CONFIG_NODES = 200_000
"""Values after YAML aliases are expanded: a few lines of nested aliases ("billion laughs") expand
to 10**9 values and would hang the loader."""
MAX_CONFIG_DEPTH = 32


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that notes a key given twice in one mapping instead of silently keeping
    the last one (a second ``meters:`` block would drop the first). Merge keys (``<<: *base``) may
    still be overridden: only the keys written in the mapping itself are compared."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # (line, issue): mappings are not visited in the order they are written
        self.duplicates: list[tuple[int, ConfigIssue]] = []
        self._checked: set[int] = set()

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # Called on every mapping before its merge keys are spliced in (possibly more than once,
        # when it is also a merge source): compare its own keys the first time only.
        if id(node) not in self._checked:
            self._checked.add(id(node))
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in first_line:
                    issue = ConfigIssue(
                        f"line {line}",
                        f"key {str(key)!r} given twice (first on line {first_line[key]})",
                        "keep one of them: YAML would silently use only the last",
                    )
                    self.duplicates.append((line, issue))
                else:
                    first_line[key] = line
        super().flatten_mapping(node)


def _load_yaml(text: str) -> tuple[Any, list[ConfigIssue]]:
    """The YAML document in ``text`` and the keys given twice in it."""
    loader = _StrictLoader(text)
    try:
        data = loader.get_single_data()
        return data, [issue for _, issue in sorted(loader.duplicates, key=lambda found: found[0])]
    finally:
        loader.dispose()


class _TooLarge(Exception):
    """The config tree exceeds MAX_CONFIG_NODES or MAX_CONFIG_DEPTH."""


def _substitute_env(node: Any, env: Mapping[str, str], issues: list[ConfigIssue]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string, collecting missing variables.

    Also bounds the tree (values after aliases are expanded, and nesting): raises ``_TooLarge``."""
    budget = MAX_CONFIG_NODES

    def walk(node: Any, path: str, depth: int) -> Any:
        nonlocal budget
        budget -= 1
        if budget < 0 or depth > MAX_CONFIG_DEPTH:
            raise _TooLarge(path)
        if isinstance(node, dict):
            return {k: walk(v, _join(path, str(k)), depth + 1) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node)]
        if isinstance(node, str):

            def replace(match: re.Match[str]) -> str:
                name, default = match.group(1), match.group(2)
                value = env.get(name)
                # As in POSIX shells and Compose, ":-" also falls back when the variable is set but empty.
                if default is not None and not value:
                    return default
                if value is not None:
                    return value
                issues.append(
                    ConfigIssue(path, f"environment variable {name} is not set", f"export {name}=...")
                )
                return ""

            return _ENV_PATTERN.sub(replace, node)
        return node

    return walk(node, "", 0)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a problem with a mapping key, not its value
            path += " (key)"
        else:
            path = f"{path}[{part}]" if isinstance(part, int) else _join(path, part)
    return path or "(top level)"


def _shown(value: Any, path_parts: tuple[int | str, ...]) -> str:
    """The offending value for a message: never a secret, never a screenful."""
    if any(isinstance(part, str) and is_secret_key(part) for part in path_parts):
        return "the value"
    shown = repr(value) if isinstance(value, str) else str(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _describe(error: Mapping[str, Any]) -> ConfigIssue:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    loc = tuple(p for p in error["loc"] if not str(p).startswith("function-"))
    shown = _shown(error.get("input"), loc)
    path = _loc_to_path(loc)
    bounds = {
        "less_than_equal": ("is above", "le", "use a value of at most {b}"),
        "less_than": ("is not below", "lt", "use a value below {b}"),
        "greater_than_equal": ("is below", "ge", "use a value of at least {b}"),
        "greater_than": ("is not above", "gt", "use a value above {b}"),
    }
    if kind in bounds:
        phrase, key, fix = bounds[kind]
        bound = _num(ctx[key])
        return ConfigIssue(path, f"{shown} {phrase} {bound}", fix.format(b=bound))
    if kind == "missing":
        return ConfigIssue(path, "is required", "add this field")
    if kind == "extra_forbidden":
        return ConfigIssue(path, "is not a known field", "remove it or check its spelling")
    if kind in ("float_parsing", "float_type", "int_parsing", "int_type", "int_parsing_size"):
        return ConfigIssue(path, f"{shown} is not a number", "write a plain number")
    if kind == "int_from_float":
        return ConfigIssue(path, f"{shown} is not a whole number", "write a whole number")
    if kind == "finite_number":
        return ConfigIssue(path, f"{shown} is not a finite number", "write a plain number")
    if kind == "string_type":
        return ConfigIssue(path, f"{shown} is not text", "write text, in quotes if it looks like a number")
    if kind == "string_too_short":
        return ConfigIssue(path, "is empty", "write a value or remove the field")
    if kind == "string_too_long":
        return ConfigIssue(path, "is too long", f"use at most {ctx.get('max_length')} characters")
    if kind == "too_short":
        return ConfigIssue(path, "is empty", f"list at least {ctx.get('min_length')} item(s)")
    if kind == "too_long":
        return ConfigIssue(path, "has too many items", f"list at most {ctx.get('max_length')}")
    if kind in ("path_type", "storage_path"):
        return ConfigIssue(path, f"{shown} is not a file name", "write a path such as /data/v2x.sqlite")
    if kind == "invalid_key":
        return ConfigIssue(path, f"{shown} is not a name", "keys are names such as site or chargers")
    if kind == "clock_time":
        return ConfigIssue(path, f"{shown} is not {error['msg']}", "write HH:MM in quotes, e.g. '07:30'")
    if kind in ("bool_parsing", "bool_type"):
        return ConfigIssue(path, f"{shown} is not true/false", "write true or false")
    if kind in ("literal_error", "enum"):
        return ConfigIssue(path, f"{shown} is not allowed", f"use one of {ctx.get('expected', '')}")
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return ConfigIssue(path, f"{shown} is not a mapping", "write key: value pairs under it")
    if kind == "list_type":
        return ConfigIssue(path, f"{shown} is not a list", "write a YAML list (- item)")
    if kind in ("string_pattern_mismatch",):
        return ConfigIssue(
            path, f"{shown} has characters that are not allowed", "use letters, digits, - _ . :"
        )
    if kind in ("time_parsing", "time_type"):
        return ConfigIssue(path, f"{shown} is not a time", "write HH:MM in quotes, e.g. '07:30'")
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind not in _PYDANTIC_ERROR_TYPES:  # our own checks: "what is wrong; how to fix it"
        what, _, fix = message.partition("; ")
        return ConfigIssue(path, what, fix)
    return ConfigIssue(path, message, "see `v2x schema` for what this field takes")


def issues_from_validation_error(exc: ValidationError) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for error in exc.errors(include_url=False):
        if error["type"] == "cross_field":
            issues.extend(error["ctx"]["issues"])
        else:
            issues.append(_describe(error))
    return issues


_PARTIAL = "partial"
"""Validation context key: skip SiteConfig's cross-field validator (parse_config runs it itself)."""
_PLACEHOLDERS: dict[str, Any] = {
    "site": {"grid": {"import_limit_kw": 0}},
    "tariff": {"import": {"static_price_per_kwh": 0}},
}
"""Stand-ins for the required top-level sections when they cannot be read, so that the cross-field
checks still run on the rest (any check reading them is not reported)."""
_MAX_REPAIRS = 12


class _Repair:
    """A copy of a config tree with the values that fail validation taken out, round by round: a bad
    field goes (its default applies), a bad list item or mapping entry goes, a missing required field
    takes its container with it. Locations of what was taken are kept as the user wrote them."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.tree = copy.deepcopy(data)
        self.repaired: list[Loc] = []
        self._origin: dict[int, list[int]] = {}  # id(list in tree) -> original index of each item

    def original(self, loc: Loc) -> Loc:
        """``loc`` in the repaired tree -> the same place in the tree the user wrote."""
        node: Any = self.tree
        out: list[int | str] = []
        for part in loc:
            if isinstance(node, list) and isinstance(part, int):
                origin = self._origin.get(id(node))
                out.append(origin[part] if origin is not None and 0 <= part < len(origin) else part)
                node = node[part] if 0 <= part < len(node) else None
            else:
                out.append(part)
                node = node.get(part) if isinstance(node, dict) else None
        return tuple(out)

    def remove(self, errors: list[Any]) -> bool:
        """Take out what ``errors`` (pydantic's ``errors()``) point at; False when nothing could be."""
        targets: list[tuple[Any, int | str]] = []
        placed = False
        for error in errors:
            loc: Loc = tuple(p for p in error["loc"] if not str(p).startswith("function-"))
            if "[key]" in loc:  # a bad mapping key: the whole entry goes
                loc = loc[: loc.index("[key]")]
            if error["type"] == "missing":
                if len(loc) == 1 and isinstance(loc[0], str) and loc[0] in _PLACEHOLDERS:
                    self.tree[loc[0]] = copy.deepcopy(_PLACEHOLDERS[loc[0]])
                    self.repaired.append(loc)
                    placed = True
                    continue
                loc = loc[:-1]
            if not loc:
                return False
            parent: Any = self.tree
            for part in loc[:-1]:
                try:
                    parent = parent[part]
                except (KeyError, IndexError, TypeError):
                    parent = None
                    break
            key = loc[-1]
            present = (isinstance(parent, dict) and key in parent) or (
                isinstance(parent, list) and isinstance(key, int) and 0 <= key < len(parent)
            )
            if present and not any(p is parent and k == key for p, k in targets):
                self.repaired.append(self.original(loc))
                targets.append((parent, key))
        if not targets:
            return placed
        # Later list items first, so that earlier indices stay valid.
        for parent, key in sorted(targets, key=lambda t: t[1] if isinstance(t[1], int) else -1, reverse=True):
            if isinstance(parent, dict):
                parent.pop(key, None)
            elif isinstance(key, int) and key < len(parent):
                origin = self._origin.setdefault(id(parent), list(range(len(parent))))
                del parent[key], origin[key]
        return True


def _cross_field_issues_of_the_rest(data: dict[str, Any], first: ValidationError) -> list[ConfigIssue]:
    """The cross-field problems among the parts of ``data`` that are valid on their own, when
    ``first`` says that some are not (pydantic runs the cross-field checks only on a valid whole)."""
    repair = _Repair(data)
    errors = first.errors(include_url=False)
    for _ in range(_MAX_REPAIRS):
        if not repair.remove(errors):
            return []
        try:
            cfg = SiteConfig.model_validate(repair.tree, context={_PARTIAL: True})
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            continue
        checks = _Checks(where=repair.original, repaired=tuple(repair.repaired))
        return _cross_field_issues(cfg, checks)
    return []


def parse_config(data: Any, source: str = "<config>", env: Mapping[str, str] | None = None) -> SiteConfig:
    """Validate an already-parsed YAML/JSON tree into a SiteConfig, or raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigIssue("(top level)", "is not a mapping", "start with `site:`")])
    issues: list[ConfigIssue] = []
    try:
        data = _substitute_env(data, os.environ if env is None else env, issues)
    except _TooLarge as exc:
        where = str(exc) or "(top level)"
        problem = f"more than {MAX_CONFIG_NODES} values or nested deeper than {MAX_CONFIG_DEPTH} levels"
        raise ConfigError(
            source, [ConfigIssue(where, problem, "check YAML aliases (*name) and nesting")]
        ) from None
    if issues:
        raise ConfigError(source, issues)
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        issues = issues_from_validation_error(exc)
        if not any(error["type"] == "cross_field" for error in exc.errors(include_url=False)):
            issues += _cross_field_issues_of_the_rest(data, exc)
        raise ConfigError(source, issues) from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> SiteConfig:
    """Read a YAML site config; every problem is reported as a ConfigError with paths and fixes."""
    source = str(path)
    try:
        with Path(path).open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            source, [ConfigIssue("(file)", f"cannot read: {exc.strerror}", "check the path")]
        ) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            source,
            [
                ConfigIssue(
                    "(file)", f"is larger than {MAX_CONFIG_BYTES // 2**20} MiB", "is this the site config?"
                )
            ],
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            source,
            [ConfigIssue("(file)", f"is not UTF-8 text (byte {exc.start})", "save the file as UTF-8")],
        ) from None
    try:
        data, duplicates = _load_yaml(text)
    except RecursionError:
        raise ConfigError(
            source, [ConfigIssue("(file)", "is nested too deeply", "check the brackets and indentation")]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(file)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            source, [ConfigIssue(where, f"malformed YAML: {problem}", "fix the YAML syntax")]
        ) from None
    if duplicates:
        raise ConfigError(source, duplicates)
    return parse_config(data, source, env)
