"""Core data types shared by every layer, and the conventions they carry.

Conventions (stated here once; no other module flips them):

* Power is in watts (``*_w``). Energy is in kWh (``*_kwh``) or Wh (``*_wh``) as named.
  Prices are currency per kWh (``*_per_kwh``).
* Vehicle power: **positive = charging the car**, negative = discharging it.
* Grid power: **positive = import** from the grid, negative = export to the grid.
* State of charge: percent 0-100 (``soc_percent``) at the edges; inside the optimiser
  it may be carried as kWh of stored energy (``energy_kwh``).
* Time: timezone-aware UTC ``datetime`` everywhere inside; local time only for user
  schedules (weekly departures), converted with the site's timezone.
* Plans live on a fixed step grid (default 15 min) aligned to the hour.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = [
    "BatteryPlan",
    "ChargerSchedule",
    "Departure",
    "GridLimits",
    "MeterReading",
    "MeterRole",
    "Plan",
    "PriceSeries",
    "SchedulePeriod",
    "V2LSession",
    "VehicleMode",
    "VehiclePlan",
    "VehicleState",
    "align_to_step",
    "ensure_utc",
]


def ensure_utc(moment: datetime) -> datetime:
    """Return ``moment`` in UTC; naive datetimes are rejected, not guessed."""
    if moment.tzinfo is UTC:  # the common case, and the cheap one (datetimes are immutable)
        return moment
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        raise ValueError(f"naive datetime {moment.isoformat()} has no timezone; use UTC")
    return moment.astimezone(UTC)


def utc_text(moment: datetime) -> str:
    """``moment`` as the daemon writes times in JSON: ISO 8601 in UTC with ``Z``."""
    return ensure_utc(moment).isoformat().replace("+00:00", "Z")


def align_to_step(moment: datetime, step: timedelta) -> datetime:
    """Floor ``moment`` to the plan grid (steps aligned to the hour)."""
    moment = ensure_utc(moment)
    hour = moment.replace(minute=0, second=0, microsecond=0)
    elapsed = moment - hour
    return hour + (elapsed // step) * step


class MeterRole(enum.StrEnum):
    """What a meter measures. Grid meters read + import / - export."""

    GRID = "grid"
    PV = "pv"
    HOME = "home"
    VEHICLE_SOC = "vehicle_soc"
    V2L = "v2l"
    BATTERY = "battery"
    """A home battery's power, + charging / - discharging."""
    BATTERY_SOC = "battery_soc"
    """A home battery's state of charge, percent."""


class VehicleMode(enum.StrEnum):
    """The driver's choice for a vehicle: plan freely, charge at full power now, or never discharge."""

    AUTO = "auto"
    CHARGE_NOW = "charge_now"
    NO_DISCHARGE = "no_discharge"


@dataclass(frozen=True, slots=True)
class MeterReading:
    """One normalised reading. ``value`` is W for power roles, percent for ``vehicle_soc`` and
    ``battery_soc``."""

    meter_id: str
    role: MeterRole
    value: float
    at: datetime
    retained: bool = False
    """A retained MQTT message: its age is unknown (``at`` is when it arrived)."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"meter {self.meter_id}: reading {self.value} is not finite")
        object.__setattr__(self, "at", ensure_utc(self.at))


@dataclass(frozen=True, slots=True)
class PriceSeries:
    """Prices on a regular grid: ``values_per_kwh[i]`` holds from ``start + i*step``."""

    start: datetime
    step: timedelta
    values_per_kwh: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", ensure_utc(self.start))
        if self.step <= timedelta(0):
            raise ValueError("price step must be positive")
        if not all(math.isfinite(v) for v in self.values_per_kwh):
            raise ValueError("prices must be finite numbers")

    @property
    def end(self) -> datetime:
        return self.start + self.step * len(self.values_per_kwh)

    def price_at(self, moment: datetime) -> float | None:
        """Price in force at ``moment``, or None outside the series."""
        moment = ensure_utc(moment)
        if moment < self.start or moment >= self.end:
            return None
        return self.values_per_kwh[int((moment - self.start) // self.step)]


@dataclass(frozen=True, slots=True)
class GridLimits:
    """Caps on grid power in W (both >= 0), valid in ``[valid_from, valid_until)``."""

    import_limit_w: float
    export_limit_w: float
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    def __post_init__(self) -> None:
        # Written as "not >= 0" so NaN, which fails every comparison, is refused too.
        if not (self.import_limit_w >= 0 and self.export_limit_w >= 0):
            raise ValueError("grid limits are magnitudes and must be >= 0 W")
        if self.valid_from is not None:
            object.__setattr__(self, "valid_from", ensure_utc(self.valid_from))
        if self.valid_until is not None:
            object.__setattr__(self, "valid_until", ensure_utc(self.valid_until))

    def is_valid_at(self, moment: datetime) -> bool:
        moment = ensure_utc(moment)
        if self.valid_from is not None and moment < self.valid_from:
            return False
        return self.valid_until is None or moment < self.valid_until


@dataclass(frozen=True, slots=True)
class Departure:
    """The driver leaves at ``at`` and wants ``target_soc_percent`` by then."""

    at: datetime
    target_soc_percent: float
    trip_energy_kwh: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", ensure_utc(self.at))
        if not 0 <= self.target_soc_percent <= 100:
            raise ValueError(f"target SoC {self.target_soc_percent} is outside 0-100 %")


@dataclass(frozen=True, slots=True)
class V2LSession:
    """The car powers loads directly; ``power_w`` is the expected draw (>= 0)."""

    vehicle_id: str
    start: datetime
    end: datetime | None
    power_w: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", ensure_utc(self.start))
        if self.end is not None:
            object.__setattr__(self, "end", ensure_utc(self.end))
        if not (math.isfinite(self.power_w) and self.power_w >= 0):
            raise ValueError("V2L power is a draw and must be a finite number >= 0 W")


@dataclass(frozen=True, slots=True)
class VehicleState:
    """What the site knows about one vehicle right now."""

    vehicle_id: str
    plugged_in: bool
    soc_percent: float | None
    soc_measured_at: datetime | None = None
    charger_id: str | None = None
    next_departure: Departure | None = None
    v2l_session: V2LSession | None = None

    def __post_init__(self) -> None:
        if self.soc_percent is not None and not 0 <= self.soc_percent <= 100:
            raise ValueError(f"SoC {self.soc_percent} is outside 0-100 %")
        if self.soc_measured_at is not None:
            object.__setattr__(self, "soc_measured_at", ensure_utc(self.soc_measured_at))


@dataclass(frozen=True, slots=True)
class VehiclePlan:
    """The plan for one vehicle: signed power per step, SoC at each step boundary."""

    vehicle_id: str
    power_w: tuple[float, ...]
    soc_percent: tuple[float, ...]
    reason: str
    departure_shortfall_kwh: float = 0.0
    throughput_kwh: float = 0.0
    v2l_power_w: tuple[float, ...] = ()
    """V2L load the plan serves per step (W, >= 0); empty when not planned."""

    @property
    def current_power_w(self) -> float:
        return self.power_w[0] if self.power_w else 0.0


@dataclass(frozen=True, slots=True)
class BatteryPlan:
    """The plan for one home battery: signed power per step (+ charging), SoC at each step boundary.

    ``controlled`` False: an ``observe`` battery; the values are the forecast of its own
    self-consumption rule (empty when its SoC is unknown), not setpoints.
    """

    battery_id: str
    controlled: bool
    power_w: tuple[float, ...]
    soc_percent: tuple[float, ...]
    reason: str = ""

    @property
    def current_power_w(self) -> float:
        return self.power_w[0] if self.power_w else 0.0


@dataclass(frozen=True, slots=True)
class Plan:
    """A schedule on the step grid from ``start``; every per-step tuple has ``steps`` items."""

    created_at: datetime
    start: datetime
    step: timedelta
    vehicles: dict[str, VehiclePlan]
    grid_import_w: tuple[float, ...]
    grid_export_w: tuple[float, ...]
    import_price_per_kwh: tuple[float, ...]
    export_price_per_kwh: tuple[float, ...]
    solver_status: str
    solve_time_ms: float
    fallback: bool = False
    import_cost: float = 0.0
    export_revenue: float = 0.0
    degradation_cost: float = 0.0
    notes: tuple[str, ...] = ()
    objective: float | None = None
    """The optimiser's objective value (costs plus penalties), None for fallback plans."""
    batteries: dict[str, BatteryPlan] = field(default_factory=dict)
    """The home batteries (``home_batteries``) by id; empty without any."""

    @property
    def steps(self) -> int:
        return len(self.grid_import_w)

    @property
    def total_cost(self) -> float:
        """What the plan costs in money: import cost - export revenue + battery wear (currency).

        Not included: the optimiser's penalties (reserve, targets, V2L, grid overload), the value it
        gives energy left in the cars at the horizon end, and the churn term; ``objective`` has those.
        """
        return self.import_cost - self.export_revenue + self.degradation_cost

    @property
    def end(self) -> datetime:
        return self.start + self.step * self.steps

    def step_index(self, moment: datetime) -> int | None:
        """Index of the step that contains ``moment``, or None outside the plan."""
        moment = ensure_utc(moment)
        if moment < self.start or moment >= self.end:
            return None
        return int((moment - self.start) // self.step)


@dataclass(frozen=True, slots=True)
class SchedulePeriod:
    """One period of a charger schedule, from ``start_offset`` after the schedule start.

    ``setpoint_w`` follows the vehicle sign (+ charge, - discharge). ``max_charge_w`` >= 0 and
    ``max_discharge_w`` >= 0 bound it; a charger that cannot discharge gets ``max_discharge_w = 0``.
    """

    start_offset: timedelta
    setpoint_w: float
    max_charge_w: float
    max_discharge_w: float = 0.0


@dataclass(frozen=True, slots=True)
class ChargerSchedule:
    """What one charger should do for the next hours; ``valid_until`` bounds it in time."""

    charger_id: str
    start: datetime
    valid_until: datetime
    periods: tuple[SchedulePeriod, ...]
    phases: int = 3
    evse_id: int = 1
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", ensure_utc(self.start))
        object.__setattr__(self, "valid_until", ensure_utc(self.valid_until))
        if self.valid_until <= self.start:
            raise ValueError("a charger schedule must end after it starts")
        if not self.periods or self.periods[0].start_offset != timedelta(0):
            raise ValueError("a charger schedule needs a first period at offset 0")
        offsets: Sequence[timedelta] = [p.start_offset for p in self.periods]
        if any(b <= a for a, b in itertools.pairwise(offsets)):
            raise ValueError("schedule periods must be in strictly increasing order")

    @property
    def discharges(self) -> bool:
        """Whether any period lets the car give energy back (a negative setpoint or a discharge bound)."""
        return any(p.setpoint_w < 0 or p.max_discharge_w > 0 for p in self.periods)
