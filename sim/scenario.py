"""Scenarios: a site config plus a time series (prices, load, PV) and the trips of each car.

Formats (ISO 8601 timestamps with an explicit UTC offset, converted to UTC):

* series CSV, exactly the columns ``timestamp,import_price_eur_per_kwh,export_price_eur_per_kwh,load_kw,pv_kw``
  in any order; one row per interval starting at ``timestamp``; any regular step that resamples to the plan
  step (a multiple of it is held, a divisor of it is averaged). Load and PV are average kW over the interval.
* trips CSV, exactly the columns ``vehicle,depart,arrive,energy_kwh``: the car is away from ``depart`` to
  ``arrive`` and its battery loses ``energy_kwh`` on the way.

Every problem is a :class:`ScenarioError` naming the file, the row (1 = first data row) and the column.
"""

from __future__ import annotations

import csv
import itertools
import math
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog

from controller.config import SiteConfig, VehicleConfig
from controller.domain import ensure_utc

__all__ = [
    "SERIES_COLUMNS",
    "TRIPS_COLUMNS",
    "FloatArray",
    "Scenario",
    "ScenarioError",
    "ScheduledTrip",
    "Series",
    "Trip",
    "departure_target_percent",
    "load_scenario",
    "load_series_csv",
    "load_trips_csv",
    "write_series_csv",
    "write_trips_csv",
]

FloatArray = npt.NDArray[np.float64]

SERIES_COLUMNS = (
    "timestamp",
    "import_price_eur_per_kwh",
    "export_price_eur_per_kwh",
    "load_kw",
    "pv_kw",
)
TRIPS_COLUMNS = ("vehicle", "depart", "arrive", "energy_kwh")

# Sanity bounds: beyond them a value is a unit mistake (EUR/MWh for EUR/kWh, W for kW), not data.
MAX_ABS_PRICE_PER_KWH = 10.0
MAX_SITE_POWER_KW = 1000.0

_log = structlog.get_logger(__name__)


class ScenarioError(Exception):
    """A scenario file that cannot be used: where (file, row, column) and what is wrong."""

    def __init__(self, source: str, message: str, row: int | None = None, column: str | None = None) -> None:
        self.source = source
        self.row = row
        self.column = column
        self.message = message
        where = source
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column}"
        super().__init__(f"{where}: {message}")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, eq=False)
class Series:
    """Per-step actuals on the plan grid: step ``i`` covers ``[start + i*step, start + (i+1)*step)``."""

    start: datetime
    step: timedelta
    import_price_per_kwh: FloatArray
    export_price_per_kwh: FloatArray
    load_w: FloatArray
    pv_w: FloatArray

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", ensure_utc(self.start))
        n = len(self.load_w)
        arrays = (self.import_price_per_kwh, self.export_price_per_kwh, self.pv_w)
        if any(len(a) != n for a in arrays):
            raise ValueError("series arrays must have the same length")
        if self.step <= timedelta(0):
            raise ValueError("series step must be positive")

    @property
    def steps(self) -> int:
        return len(self.load_w)

    @property
    def end(self) -> datetime:
        return self.start + self.step * self.steps

    @property
    def step_hours(self) -> float:
        return self.step.total_seconds() / 3600.0

    def time_at(self, index: int) -> datetime:
        return self.start + self.step * index

    def index_of(self, moment: datetime) -> float:
        """Position of ``moment`` on the grid in steps (fractional)."""
        return (ensure_utc(moment) - self.start) / self.step

    def window(self, first: int, last: int) -> Series:
        """Steps ``[first, last)`` as a new series."""
        return Series(
            self.time_at(first),
            self.step,
            self.import_price_per_kwh[first:last].copy(),
            self.export_price_per_kwh[first:last].copy(),
            self.load_w[first:last].copy(),
            self.pv_w[first:last].copy(),
        )


@dataclass(frozen=True, slots=True)
class Trip:
    """The car is away from ``depart`` to ``arrive`` and uses ``energy_kwh`` from its battery."""

    vehicle_id: str
    depart: datetime
    arrive: datetime
    energy_kwh: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "depart", ensure_utc(self.depart))
        object.__setattr__(self, "arrive", ensure_utc(self.arrive))
        if self.arrive <= self.depart:
            raise ValueError("a trip must arrive after it departs")
        if not math.isfinite(self.energy_kwh) or self.energy_kwh < 0:
            raise ValueError("trip energy must be a finite number >= 0 kWh")


@dataclass(frozen=True, slots=True)
class ScheduledTrip:
    """A trip on the step grid: away for steps ``[depart_index, arrive_index)``.

    ``target_soc_percent`` is what the driver wants at departure (the weekly rule of that local weekday,
    else the vehicle's default target).
    """

    vehicle_id: str
    depart_index: int
    arrive_index: int
    energy_kwh: float
    target_soc_percent: float
    depart: datetime
    arrive: datetime

    @property
    def away_steps(self) -> int:
        return self.arrive_index - self.depart_index


def departure_target_percent(vehicle: VehicleConfig, depart: datetime, timezone: str) -> float:
    """Target SoC for a departure: the weekly rule of its local weekday, else the default target."""
    local = ensure_utc(depart).astimezone(zoneinfo.ZoneInfo(timezone))
    rule = vehicle.departures.get(local.strftime("%A").lower())
    return rule.target_soc_percent if rule is not None else vehicle.default_target_soc_percent


@dataclass(frozen=True, eq=False)
class Scenario:
    """Everything a simulation needs: the site, the actuals, the trips and the initial state."""

    config: SiteConfig
    series: Series
    trips: tuple[Trip, ...] = ()
    initial_soc_percent: dict[str, float] = field(default_factory=dict)
    name: str = "scenario"

    def __post_init__(self) -> None:
        plan_step = timedelta(minutes=self.config.site.plan_step_minutes)
        if self.series.step != plan_step:
            raise ValueError(f"series step {self.series.step} is not the plan step {plan_step}")
        known = {v.id for v in self.config.vehicles}
        for trip in self.trips:
            if trip.vehicle_id not in known:
                raise ValueError(f"trip for unknown vehicle {trip.vehicle_id!r}")
        for vehicle_id, soc in self.initial_soc_percent.items():
            if vehicle_id not in known:
                raise ValueError(f"initial SoC for unknown vehicle {vehicle_id!r}")
            if not 0 <= soc <= 100:
                raise ValueError(f"initial SoC {soc} of {vehicle_id} is outside 0-100 %")

    @property
    def steps(self) -> int:
        return self.series.steps

    def initial_soc(self, vehicle: VehicleConfig) -> float:
        return self.initial_soc_percent.get(vehicle.id, vehicle.default_target_soc_percent)

    @cached_property
    def scheduled_trips(self) -> tuple[ScheduledTrip, ...]:
        """Trips snapped to the nearest step boundaries (at least one step away), inside the series."""
        out: list[ScheduledTrip] = []
        n = self.series.steps
        for trip in sorted(self.trips, key=lambda t: (t.vehicle_id, t.depart)):
            vehicle = self.config.vehicle(trip.vehicle_id)
            assert vehicle is not None
            depart_index = round(self.series.index_of(trip.depart))
            arrive_index = max(depart_index + 1, round(self.series.index_of(trip.arrive)))
            if arrive_index <= 0 or depart_index >= n:
                continue
            target = departure_target_percent(vehicle, trip.depart, self.config.site.timezone)
            out.append(
                ScheduledTrip(
                    trip.vehicle_id,
                    depart_index,
                    arrive_index,
                    trip.energy_kwh,
                    target,
                    trip.depart,
                    trip.arrive,
                )
            )
        # Snapping can make back-to-back trips touch; keep each one at least a step long and apart.
        cleaned: list[ScheduledTrip] = []
        for item in out:
            previous = cleaned[-1] if cleaned else None
            if (
                previous is not None
                and previous.vehicle_id == item.vehicle_id
                and item.depart_index < previous.arrive_index
            ):
                cleaned[-1] = ScheduledTrip(
                    item.vehicle_id,
                    previous.depart_index,
                    max(previous.arrive_index, item.arrive_index),
                    previous.energy_kwh + item.energy_kwh,
                    previous.target_soc_percent,
                    previous.depart,
                    item.arrive,
                )
                continue
            cleaned.append(item)
        return tuple(cleaned)

    def trips_of(self, vehicle_id: str) -> tuple[ScheduledTrip, ...]:
        return tuple(t for t in self.scheduled_trips if t.vehicle_id == vehicle_id)

    def window(self, first: int, last: int, name: str | None = None) -> Scenario:
        """Steps ``[first, last)``; trips that touch the window are kept as they are."""
        series = self.series.window(first, last)
        trips = tuple(t for t in self.trips if t.arrive > series.start and t.depart < series.end)
        return Scenario(self.config, series, trips, dict(self.initial_soc_percent), name or self.name)

    def with_config(self, config: SiteConfig) -> Scenario:
        return Scenario(config, self.series, self.trips, dict(self.initial_soc_percent), self.name)


# ------------------------------------------------------------------ CSV reading


def _read_rows(path: Path, expected: Sequence[str]) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """Header -> column positions, and the data rows numbered from 1; checks the header exactly."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ScenarioError(source, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ScenarioError(source, "is not UTF-8 text") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or not any(h.strip() for h in header):
        raise ScenarioError(source, f"is empty; expected a header {','.join(expected)}", row=0)
    names = [h.strip() for h in header]
    unknown = [n for n in names if n not in expected]
    missing = [n for n in expected if n not in names]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if unknown or missing or duplicated:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown column(s) {', '.join(unknown)}")
        if duplicated:
            parts.append(f"duplicated column(s) {', '.join(duplicated)}")
        raise ScenarioError(
            source, "; ".join(parts) + f"; the header must be exactly {','.join(expected)}", row=0
        )
    positions = {name: names.index(name) for name in expected}
    rows: list[tuple[int, list[str]]] = []
    for number, row in enumerate(reader, start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            raise ScenarioError(source, f"has {len(row)} fields, the header has {len(names)}", row=number)
        rows.append((number, row))
    return positions, rows


def _parse_time(source: str, row: int, column: str, text: str) -> datetime:
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ScenarioError(
            source, f"{value!r} is not an ISO 8601 time; write e.g. 2024-01-01T00:00:00Z", row, column
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ScenarioError(
            source, f"{value!r} has no UTC offset; write it in UTC with a trailing Z", row, column
        )
    return moment.astimezone(UTC)


def _parse_number(
    source: str, row: int, column: str, text: str, low: float | None = None, high: float | None = None
) -> float:
    value = text.strip()
    try:
        number = float(value)
    except ValueError:
        raise ScenarioError(source, f"{value!r} is not a number", row, column) from None
    if not math.isfinite(number):
        raise ScenarioError(source, f"{value!r} is not a finite number", row, column)
    if low is not None and number < low:
        raise ScenarioError(source, f"{number:g} is below {low:g}", row, column)
    if high is not None and number > high:
        raise ScenarioError(source, f"{number:g} is above {high:g} (wrong unit?)", row, column)
    return number


def load_series_csv(path: str | Path, plan_step: timedelta) -> Series:
    """Read a series CSV and resample it to ``plan_step``; raises :class:`ScenarioError`."""
    path = Path(path)
    source = str(path)
    positions, rows = _read_rows(path, SERIES_COLUMNS)
    if len(rows) < 2:
        raise ScenarioError(source, f"has {len(rows)} data row(s); at least 2 are needed to know the step")
    times: list[datetime] = []
    values = np.empty((len(rows), 4), dtype=np.float64)
    bounds = {
        "import_price_eur_per_kwh": (-MAX_ABS_PRICE_PER_KWH, MAX_ABS_PRICE_PER_KWH),
        "export_price_eur_per_kwh": (-MAX_ABS_PRICE_PER_KWH, MAX_ABS_PRICE_PER_KWH),
        "load_kw": (0.0, MAX_SITE_POWER_KW),
        "pv_kw": (0.0, MAX_SITE_POWER_KW),
    }
    for i, (number, row) in enumerate(rows):
        times.append(_parse_time(source, number, "timestamp", row[positions["timestamp"]]))
        for j, column in enumerate(SERIES_COLUMNS[1:]):
            low, high = bounds[column]
            values[i, j] = _parse_number(source, number, column, row[positions[column]], low, high)
    step = times[1] - times[0]
    if step <= timedelta(0):
        raise ScenarioError(
            source, "timestamps must increase; this one is not after the row before", rows[1][0]
        )
    for i in range(2, len(times)):
        delta = times[i] - times[i - 1]
        if delta != step:
            what = (
                "is not after the row before" if delta <= timedelta(0) else f"is {delta} after the row before"
            )
            raise ScenarioError(
                source,
                f"{times[i].isoformat()} {what}; the step set by the first rows is {step}",
                rows[i][0],
                "timestamp",
            )
    start = times[0]
    if start.second or start.microsecond or (start.minute * 60) % int(plan_step.total_seconds()):
        raise ScenarioError(
            source,
            f"{start.isoformat()} is not on the {plan_step} plan grid (aligned to the hour)",
            1,
            "timestamp",
        )
    if step >= plan_step:
        if step % plan_step:
            raise ScenarioError(
                source, f"step {step} is not a multiple or a divisor of the plan step {plan_step}"
            )
        repeat = step // plan_step
        resampled = np.repeat(values, repeat, axis=0)
    else:
        if plan_step % step:
            raise ScenarioError(
                source, f"step {step} is not a multiple or a divisor of the plan step {plan_step}"
            )
        group = plan_step // step
        whole = len(values) // group
        if whole == 0:
            raise ScenarioError(source, f"covers less than one plan step of {plan_step}")
        if whole * group != len(values):
            _log.warning("series ends inside a plan step; the last rows are dropped", source=source)
        resampled = values[: whole * group].reshape(whole, group, 4).mean(axis=1)
    return Series(
        start=start,
        step=plan_step,
        import_price_per_kwh=np.ascontiguousarray(resampled[:, 0]),
        export_price_per_kwh=np.ascontiguousarray(resampled[:, 1]),
        load_w=np.ascontiguousarray(resampled[:, 2] * 1000.0),
        pv_w=np.ascontiguousarray(resampled[:, 3] * 1000.0),
    )


def load_trips_csv(path: str | Path, config: SiteConfig) -> tuple[Trip, ...]:
    """Read a trips CSV for the vehicles of ``config``; raises :class:`ScenarioError`."""
    path = Path(path)
    source = str(path)
    positions, rows = _read_rows(path, TRIPS_COLUMNS)
    vehicles = {v.id: v for v in config.vehicles}
    trips: list[tuple[int, Trip]] = []
    for number, row in rows:
        vehicle_id = row[positions["vehicle"]].strip()
        vehicle = vehicles.get(vehicle_id)
        if vehicle is None:
            known = ", ".join(sorted(vehicles)) or "none configured"
            raise ScenarioError(source, f"unknown vehicle {vehicle_id!r}; known: {known}", number, "vehicle")
        depart = _parse_time(source, number, "depart", row[positions["depart"]])
        arrive = _parse_time(source, number, "arrive", row[positions["arrive"]])
        if arrive <= depart:
            raise ScenarioError(
                source, f"arrives at {arrive.isoformat()}, not after it departs", number, "arrive"
            )
        energy = _parse_number(
            source, number, "energy_kwh", row[positions["energy_kwh"]], 0.0, vehicle.usable_capacity_kwh
        )
        trips.append((number, Trip(vehicle_id, depart, arrive, energy)))
    by_vehicle: dict[str, list[tuple[int, Trip]]] = {}
    for number, trip in trips:
        by_vehicle.setdefault(trip.vehicle_id, []).append((number, trip))
    for items in by_vehicle.values():
        items.sort(key=lambda item: item[1].depart)
        for (first_row, first), (second_row, second) in itertools.pairwise(items):
            if second.depart < first.arrive:
                raise ScenarioError(
                    source,
                    f"departs before the trip in row {first_row} of {first.vehicle_id} has arrived",
                    second_row,
                    "depart",
                )
    return tuple(trip for _, trip in trips)


# ------------------------------------------------------------------ CSV writing


def _iso(moment: datetime) -> str:
    return ensure_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_series_csv(path: str | Path, series: Series) -> None:
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SERIES_COLUMNS)
        for i in range(series.steps):
            writer.writerow(
                (
                    _iso(series.time_at(i)),
                    f"{series.import_price_per_kwh[i]:.5f}",
                    f"{series.export_price_per_kwh[i]:.5f}",
                    f"{series.load_w[i] / 1000.0:.3f}",
                    f"{series.pv_w[i] / 1000.0:.3f}",
                )
            )


def write_trips_csv(path: str | Path, trips: Iterable[Trip]) -> None:
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(TRIPS_COLUMNS)
        for trip in sorted(trips, key=lambda t: (t.depart, t.vehicle_id)):
            writer.writerow((trip.vehicle_id, _iso(trip.depart), _iso(trip.arrive), f"{trip.energy_kwh:.2f}"))


def load_scenario(
    config_path: str | Path,
    series_path: str | Path,
    trips_path: str | Path | None = None,
    initial_soc_percent: dict[str, float] | None = None,
    name: str | None = None,
) -> Scenario:
    """Config YAML + series CSV (+ trips CSV); raises ``ConfigError`` or :class:`ScenarioError`."""
    from controller.config import load_config

    config = load_config(config_path)
    plan_step = timedelta(minutes=config.site.plan_step_minutes)
    series = load_series_csv(series_path, plan_step)
    trips = load_trips_csv(trips_path, config) if trips_path is not None else ()
    days = series.steps * series.step_hours / 24.0
    default_name = f"{config.site.name} {series.start:%Y-%m-%d} +{days:g} d"
    scenario = Scenario(config, series, trips, dict(initial_soc_percent or {}), name or default_name)
    outside = sum(1 for t in trips if t.arrive <= series.start or t.depart >= series.end)
    if outside:
        _log.warning("trips outside the series period are ignored", source=str(trips_path), ignored=outside)
    return scenario
