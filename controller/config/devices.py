"""The ``chargers:``, ``vehicles:`` and ``meters:`` sections, and the power a car and its charger
can do together."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from controller.config.fields import (
    Fraction,
    Ident,
    Kw,
    Percent,
    _clock_time,
    _Model,
    _mqtt_topic,
    _num,
    _weekday,
)
from controller.domain import MeterRole
from controller.passwords import is_password_hash
from controller.values import parse_json_path

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
    allow_unauthenticated: bool = Field(
        False,
        description="Accept this charger without a password on an OCPP listener beyond localhost "
        "(a network you trust); without it, check-config and run warn.",
    )
    min_charge_w: float | None = Field(
        None,
        ge=0,
        le=100_000,
        description="Smallest charging power, W, where it is not min_current_a x phases x voltage_v "
        "(DC boxes, OCPP 2.1 chargers set in W). Below it the charger pauses.",
    )
    min_discharge_w: float | None = Field(
        None,
        ge=0,
        le=100_000,
        description="Smallest discharging power, W, where it is not min_current_a x phases x voltage_v.",
    )
    phase_switching: bool = Field(
        False,
        description="A 3-phase charger that can switch to one phase: low powers use one phase "
        "(min_current_a x voltage_v, 1.38 kW at 6 A) instead of a duty cycle at the 3-phase minimum.",
    )
    phase_switch_hold_s: float = Field(
        300.0, ge=0, le=86_400, description="Least time between two phase switches, s (contactor wear)."
    )
    phase: Literal[1, 2, 3] = Field(
        1,
        description="The grid phase (L1-L3) a 1-phase charger, or a switching charger on one phase, draws on.",
    )

    @model_validator(mode="after")
    def _switching_needs_three_phases(self) -> Self:
        if self.phase_switching and self.phases != 3:
            raise PydanticCustomError(
                "phase_switching_one_phase",
                "phase_switching needs a 3-phase charger (phases: 3); remove phase_switching",
            )
        return self

    def min_power_w(self, phases: int | None = None, *, discharge: bool = False) -> float:
        """The smallest power the charger can run at on ``phases`` (default: all it has), W."""
        configured = self.min_discharge_w if discharge else self.min_charge_w
        if configured is not None:
            return configured
        return self.min_current_a * (self.phases if phases is None else phases) * self.voltage_v

    @property
    def lowest_phases(self) -> int:
        """The fewest phases the charger can run on: one where it can switch, else all it has."""
        return 1 if self.phase_switching else self.phases

    def lowest_min_power_w(self, *, discharge: bool = False) -> float:
        """The smallest power the charger can run at continuously, on the fewest phases, W."""
        return self.min_power_w(self.lowest_phases, discharge=discharge)

    def max_power_w(self, phases: int, *, discharge: bool = False) -> float:
        """The most the charger can do on ``phases`` (its rating, shared pro rata per phase), W."""
        rating_kw = self.max_discharge_kw if discharge else self.max_charge_kw
        return 1000.0 * rating_kw * phases / self.phases

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


class EarlyDepartures(_Model):
    """How early a scheduled departure's target is due, learnt from when the car really left.

    The rule: the target of a weekly-schedule departure is due ``lead`` before the scheduled time,
    where ``lead`` is how much earlier than scheduled the car was unplugged on that weekday, taken
    at ``cover_share`` of the last ``learn_weeks`` such days (at least ``min_samples`` of them),
    never more than ``max_lead_minutes``. An announced departure is due when announced.
    """

    learn_weeks: int = Field(8, ge=1, le=52, description="How many past weeks of the same weekday count.")
    cover_share: Fraction = Field(
        0.8, description="Share of those past departures the target would have been ready for."
    )
    min_samples: int = Field(3, ge=1, le=52, description="Fewer departures seen than this: no lead.")
    max_lead_minutes: int = Field(120, ge=0, le=720, description="The lead never exceeds this.")


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
    early_departures: EarlyDepartures = Field(default_factory=EarlyDepartures)
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
    battery: str | None = Field(None, description="Home battery id, for roles battery and battery_soc.")

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
        if self.role in (MeterRole.BATTERY, MeterRole.BATTERY_SOC) and not self.battery:
            raise PydanticCustomError(
                "meter_battery_missing",
                "role {role} needs the home battery it reports on; add battery: <battery id>",
                {"role": self.role.value},
            )
        return self


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
