"""The world at one moment, as the planner sees it: vehicles, forecasts, prices and limits.

A :class:`Snapshot` is plain validated data (pydantic, no solver import), so the daemon, the
simulator and the ``v2x plan`` command can build one cheaply. Series (``load_w`` …) are per plan
step: value ``i`` holds for ``[start + i*step, start + (i+1)*step)`` where ``start`` is ``time``
floored to the site's step grid (``controller.domain.align_to_step``). Units follow ``domain``:
W, kWh, percent, currency per kWh; vehicle power + = charging, grid power + = import.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from controller.config import ConfigError, ConfigIssue, issues_from_validation_error
from controller.domain import VehicleMode

__all__ = [
    "MAX_SERIES_LENGTH",
    "DepartureGoal",
    "DepartureHold",
    "HomeBatterySnapshot",
    "SessionLimits",
    "Snapshot",
    "Trip",
    "V2LRequest",
    "VehicleSnapshot",
    "load_snapshot",
    "parse_snapshot",
]

# A year of 5-minute steps, with room to spare; longer series are a mistake, not a plan.
MAX_SERIES_LENGTH = 110_000

Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
PowerW = Annotated[float, Field(ge=0, le=10_000_000, allow_inf_nan=False)]
# Prices beyond +-10 per kWh are data errors; the planner's penalties assume they are bounded.
PricePerKwh = Annotated[float, Field(ge=-10, le=10, allow_inf_nan=False)]
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DepartureGoal(_Model):
    """The next departure: the driver wants ``target_soc_percent`` by ``at``."""

    at: AwareDatetime = Field(description="Departure time (ISO 8601 with offset).")
    target_soc_percent: Percent = Field(description="State of charge wanted at departure, %.")

    _at_utc = field_validator("at")(_utc)


class DepartureHold(_Model):
    """A departure that has passed with the car still plugged in: the driver is about to leave, so
    its target is a floor (no discharge below it; a car below it is charged towards it)."""

    departure_at: AwareDatetime = Field(description="The overdue departure (ISO 8601 with offset).")
    soc_percent: Percent = Field(description="Its target, held as a floor, %.")
    until: AwareDatetime | None = Field(
        None,
        description="When the next scheduled departure takes its place and the hold ends; null: only an "
        "unplug or a new announced departure ends it.",
    )

    _times_utc = field_validator("departure_at", "until")(_utc)


class Trip(_Model):
    """An interval the car is away (unplugged, driving) and the energy it uses."""

    depart: AwareDatetime
    arrive: AwareDatetime
    energy_kwh: float = Field(
        ge=0,
        le=500,
        allow_inf_nan=False,
        description="Energy used by the trip. More than the car can hold or take in before the trip is "
        "planned as an empty car on arrival, with a note.",
    )
    target_soc_percent: Percent | None = Field(
        None, description="Optional SoC wanted at `depart` (perfect-foresight runs with many trips)."
    )

    _times_utc = field_validator("depart", "arrive")(_utc)

    @model_validator(mode="after")
    def _arrive_after_depart(self) -> Self:
        if self.arrive <= self.depart:
            raise PydanticCustomError("trip_order", "arrive must be after depart")
        return self


class V2LRequest(_Model):
    """A vehicle-to-load session (planned or running): the car powers loads directly."""

    start: AwareDatetime
    end: AwareDatetime | None = Field(None, description="Planned end; null means until further notice.")
    power_w: float = Field(ge=0, le=50_000, allow_inf_nan=False, description="Expected draw, W.")

    _times_utc = field_validator("start", "end")(_utc)

    @model_validator(mode="after")
    def _end_after_start(self) -> Self:
        if self.end is not None and self.end <= self.start:
            raise PydanticCustomError("v2l_order", "end must be after start")
        return self


class SessionLimits(_Model):
    """Limits the EV itself reported for this charging session (OCPP 2.1 NotifyEVChargingNeeds).

    They only tighten the site config: power caps below the car/charger ratings, a V2X floor above
    the configured reserve, a V2X ceiling below the configured max SoC. Never loosen either.
    """

    max_charge_power_w: PowerW | None = Field(None, description="The EV's maximum charge power now, W.")
    max_discharge_power_w: PowerW | None = Field(
        None, description="The EV's maximum discharge power now, W (a magnitude)."
    )
    min_soc_percent: Percent | None = Field(
        None, description="The EV's own floor for V2X: never discharged below it, %."
    )
    max_soc_percent: Percent | None = Field(
        None,
        description="The EV's own ceiling for V2X: not charged above it except for a departure target, %.",
    )

    @model_validator(mode="after")
    def _floor_below_ceiling(self) -> Self:
        low, high = self.min_soc_percent, self.max_soc_percent
        if low is not None and high is not None and low > high:
            raise PydanticCustomError(
                "soc_window",
                "min_soc_percent {low} is above max_soc_percent {high}",
                {"low": low, "high": high},
            )
        return self


class HomeBatterySnapshot(_Model):
    """One home battery (``home_batteries`` in the config) now."""

    id: Ident = Field(description="Battery id from the site config.")
    soc_percent: Percent | None = Field(
        description="State of charge now; null when unknown (the planner then neither charges nor "
        "discharges it on purpose)."
    )
    power_w: float | None = Field(
        None, ge=-1_000_000, le=1_000_000, allow_inf_nan=False, description="Measured power, + charging, W."
    )


class VehicleSnapshot(_Model):
    """One vehicle: its state now and what is known about its next hours."""

    id: Ident = Field(description="Vehicle id from the site config.")
    soc_percent: Percent | None = Field(
        description="State of charge now; null when unknown (the planner then never discharges it)."
    )
    plugged_in: bool
    departure: DepartureGoal | None = None
    away: list[Trip] = Field(
        default_factory=list, description="Known trips inside the horizon, in time order, not overlapping."
    )
    v2l: V2LRequest | None = None
    mode: VehicleMode = Field(
        VehicleMode.AUTO,
        description="auto: plan freely; charge_now: fill to max SoC at once; no_discharge: never discharge.",
    )
    charge_to_percent: Percent | None = Field(
        None, description="With charge_now: the SoC to fill to instead of max_soc_percent (up to 100)."
    )
    session_limits: SessionLimits | None = Field(
        None, description="Limits the EV reported for this session; they only tighten the config."
    )
    hold: DepartureHold | None = Field(
        None,
        description="An overdue departure: the car is still plugged in after it, so its target is held as "
        "a floor until the car leaves, a new departure is announced or the next one takes its place.",
    )

    @property
    def hold_soc_percent(self) -> float | None:
        """The SoC an overdue departure holds (no discharge below it), None when none."""
        return self.hold.soc_percent if self.hold is not None else None

    @field_validator("away")
    @classmethod
    def _trips_in_order(cls, trips: list[Trip]) -> list[Trip]:
        for i in range(1, len(trips)):
            if trips[i].depart < trips[i - 1].arrive:
                raise PydanticCustomError(
                    "trips_overlap",
                    "trip {i} departs before trip {j} arrives; list trips in time order without overlap",
                    {"i": i, "j": i - 1},
                )
        return trips


Series = Annotated[list[float], Field(min_length=1, max_length=MAX_SERIES_LENGTH)]
PowerSeries = Annotated[list[PowerW], Field(min_length=1, max_length=MAX_SERIES_LENGTH)]
PriceSeries = Annotated[list[PricePerKwh], Field(min_length=1, max_length=MAX_SERIES_LENGTH)]


class Snapshot(_Model):
    """The world at ``time``: the planner's only input besides the site config."""

    description: str | None = Field(None, max_length=2000, description="Free text: what this snapshot shows.")
    time: AwareDatetime = Field(description="Moment of the snapshot (ISO 8601 with offset); kept in UTC.")
    step_minutes: int | None = Field(
        None, description="Step of the series; when given it must match the site's plan_step_minutes."
    )
    vehicles: list[VehicleSnapshot] = Field(default_factory=list)
    home_batteries: list[HomeBatterySnapshot] = Field(default_factory=list)
    load_w: PowerSeries = Field(description="Home load forecast per step, W (excluding the cars).")
    pv_w: PowerSeries = Field(description="PV production forecast per step, W.")
    import_price_per_kwh: PriceSeries
    export_price_per_kwh: PriceSeries
    import_limit_w: PowerSeries | None = Field(
        None, description="Grid import cap per step, W; default: the site's import_limit_kw."
    )
    export_limit_w: PowerSeries | None = Field(
        None, description="Grid export cap per step, W; default: the site's export_limit_kw."
    )
    month_peak_import_w: PowerW | None = Field(
        None,
        description="Capacity tariff: the month's highest window-average grid import so far (the month in "
        "the site's time zone), W, at least the tariff's minimum peak; null: only the minimum.",
    )
    window_import_wh: float = Field(
        0.0,
        ge=0,
        le=10_000_000,
        allow_inf_nan=False,
        description="Capacity tariff: grid import already in the capacity window under way, before time, Wh.",
    )

    _time_utc = field_validator("time")(_utc)

    @field_validator("vehicles")
    @classmethod
    def _unique_ids(cls, vehicles: list[VehicleSnapshot]) -> list[VehicleSnapshot]:
        seen: set[str] = set()
        for v in vehicles:
            if v.id in seen:
                raise PydanticCustomError("duplicate_vehicle", "vehicle '{id}' is listed twice", {"id": v.id})
            seen.add(v.id)
        return vehicles

    @model_validator(mode="after")
    def _series_lengths(self) -> Self:
        steps = len(self.load_w)
        for name in (
            "pv_w",
            "import_price_per_kwh",
            "export_price_per_kwh",
            "import_limit_w",
            "export_limit_w",
        ):
            series: Sequence[float] | None = getattr(self, name)
            if series is not None and len(series) != steps:
                raise PydanticCustomError(
                    "series_length",
                    "{name} has {n} values but load_w has {steps}; give every series one value per step",
                    {"name": name, "n": len(series), "steps": steps},
                )
        return self

    @property
    def steps(self) -> int:
        return len(self.load_w)

    def vehicle(self, vehicle_id: str) -> VehicleSnapshot | None:
        return next((v for v in self.vehicles if v.id == vehicle_id), None)


def parse_snapshot(data: Any, source: str = "<snapshot>") -> Snapshot:
    """Validate a parsed JSON tree into a Snapshot, or raise ConfigError with paths and fixes."""
    if not isinstance(data, dict):
        raise ConfigError(
            source, [ConfigIssue("(top level)", "is not an object", 'start with {"time": ...}')]
        )
    try:
        return Snapshot.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, issues_from_validation_error(exc)) from None


def load_snapshot(path: str | Path) -> Snapshot:
    """Read a snapshot JSON file; every problem is reported as a ConfigError."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            source, [ConfigIssue("(file)", f"cannot read: {reason}", "check the path")]
        ) from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            source,
            [
                ConfigIssue(
                    f"line {exc.lineno}, column {exc.colno}", f"malformed JSON: {exc.msg}", "fix the JSON"
                )
            ],
        ) from None
    except ValueError as exc:
        raise ConfigError(source, [ConfigIssue("(file)", str(exc), "write plain finite numbers")]) from None
    return parse_snapshot(data, source)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")
