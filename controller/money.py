"""What the household paid over a period, and what it would have paid without control.

Pure arithmetic for the dashboard ("today", "this month": cost against charging without control):
no I/O, no asyncio, no database; numpy and the standard library only.

Inputs (:class:`MoneySeries`) are minute series aligned on one start (minute ``i`` covers
``[start_utc + i min, start_utc + (i + 1) min)``), NaN where unknown:

* ``grid_w``: the site's measured grid meter, positive = import, negative = export;
* ``import_price_per_kwh`` / ``export_price_per_kwh``: what an imported kWh costs and what an
  exported kWh earns, in currency units;
* per vehicle (:class:`VehicleSeries`): its measured charger power (positive charging, negative
  discharging), whether it was plugged in, its configured max charge power, its charge efficiency
  and optionally its SoC.

Actual cost, per counted minute: ``import_kwh * import_price - export_kwh * export_price`` from the
measured grid power.

Uncontrolled cost ("charging without control"), the counterfactual:

* the home, the PV and everything that is not a car stay as measured;
* each car, in each plugged-in session (a maximal run of plugged minutes), takes from the grid the
  same net energy it actually took in that session: the sum of its charging minus its discharging,
  floored at 0 (an uncontrolled car does not discharge);
* it takes that energy at its max charge power from the plug-in minute until the energy is
  delivered (the last minute partial), never beyond the session's end; what does not fit before
  unplug (inconsistent or noisy data) is not delivered and is reported as ``undelivered_kwh``;
* uncontrolled grid power per minute = measured grid - actual car power + uncontrolled car power,
  priced with the same import/export prices of that minute (a negative result is export, earning
  the export price).

Sessions are found over the whole series, not the window: a session cut by the window start or end
keeps its whole energy, and the window only selects which minutes (actual and uncontrolled) are
priced. Pass a series reaching before the window (e.g. a day earlier) so that a car plugged in
before the window start is seen from its plug-in; a session already plugged at the series' first
minute (``starts_before_data``) is treated as plugged in at that minute.

Details of the bookkeeping:

* a minute is counted only when the grid power and both prices are known and every plugged car's
  power is known; an uncounted minute is left out of both costs (both sides price the same
  minutes) and out of the grid energies, and is reported in ``minutes_missing`` (together with the
  window minutes outside the series);
* a car's power is its own only while plugged: in an unplugged minute its reading is ignored
  (taken as 0) and the grid stays as measured; an unknown power in a plugged minute adds nothing to
  the session's energy and is counted in ``unknown_power_minutes``;
* the car energies of a window (charged, discharged, uncontrolled) cover every window minute in
  which they are known, counted or not;
* the charge efficiency does not enter the counterfactual (both cars take the same grid energy);
  it gives the per-session estimate of the energy stored in the battery (``stored_kwh``, with the
  same efficiency assumed for discharging), which shows what V2G cycling cost the battery compared
  to the uncontrolled car (``uncontrolled_stored_kwh``).
"""

from __future__ import annotations

import math
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "KWH_PER_W_MINUTE",
    "MoneyResult",
    "MoneySeries",
    "Period",
    "SessionEnergy",
    "VehicleMoney",
    "VehicleSeries",
    "money_between",
    "money_for_period",
    "period_bounds",
    "plugged_sessions",
    "uncontrolled_profile_w",
    "vehicle_sessions",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Period = Literal["today", "month"]

KWH_PER_W_MINUTE = 1.0 / 60_000.0
"""Energy of one watt held for one minute, in kWh."""
_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class VehicleSeries:
    """One car's minute series, aligned with its :class:`MoneySeries`."""

    vehicle_id: str
    charger_w: FloatArray
    """Measured charger power, positive charging, negative discharging; NaN unknown."""
    plugged: BoolArray
    max_charge_w: float
    """Configured max charge power: the uncontrolled car charges at this."""
    charge_efficiency: float = 1.0
    """Fraction of the grid energy that reaches the battery."""
    soc_pct: FloatArray | None = None
    """State of charge per minute, NaN unknown; only reported (session start and end)."""


@dataclass(frozen=True, slots=True)
class MoneySeries:
    """The site's minute series from ``start_utc`` (minute-aligned, timezone-aware)."""

    start_utc: datetime
    grid_w: FloatArray
    import_price_per_kwh: FloatArray
    export_price_per_kwh: FloatArray
    vehicles: tuple[VehicleSeries, ...] = ()

    @property
    def minutes(self) -> int:
        return len(self.grid_w)


@dataclass(frozen=True, slots=True)
class SessionEnergy:
    """One plugged-in session over the whole series (not cut by a window)."""

    start_utc: datetime
    end_utc: datetime
    """Exclusive: the first unplugged minute (or the end of the series)."""
    starts_before_data: bool
    """Plugged at the series' first minute: the real plug-in may be earlier."""
    ends_after_data: bool
    """Plugged at the series' last minute: the session may go on."""
    charged_kwh: float
    discharged_kwh: float
    net_kwh: float
    """``charged_kwh - discharged_kwh`` floored at 0: what the uncontrolled car takes."""
    delivered_kwh: float
    """What the uncontrolled car takes before unplug: ``net_kwh`` when it fits."""
    undelivered_kwh: float
    unknown_power_minutes: int
    stored_kwh: float
    """Estimated net energy into the battery: charged x efficiency - discharged / efficiency."""
    uncontrolled_stored_kwh: float
    soc_start_pct: float | None
    soc_end_pct: float | None


@dataclass(frozen=True, slots=True)
class VehicleMoney:
    """One car's energies in a window, and its sessions overlapping the window."""

    vehicle_id: str
    charged_kwh: float
    discharged_kwh: float
    uncontrolled_charged_kwh: float
    undelivered_kwh: float
    """Sum over ``sessions``: net energy the uncontrolled car could not take before unplug."""
    sessions: tuple[SessionEnergy, ...]


@dataclass(frozen=True, slots=True)
class MoneyResult:
    """Costs in currency units over the counted minutes of ``[start_utc, end_utc)``."""

    start_utc: datetime
    end_utc: datetime
    actual_cost: float
    uncontrolled_cost: float
    saving: float
    """What control saved: uncontrolled cost - actual cost (negative: control cost money)."""
    import_kwh: float
    export_kwh: float
    uncontrolled_import_kwh: float
    uncontrolled_export_kwh: float
    minutes_total: int
    """Minutes starting in the window, in the series or not."""
    minutes_counted: int
    minutes_missing: int
    """``minutes_total - minutes_counted``: left out of both costs."""
    vehicles: tuple[VehicleMoney, ...]


@dataclass(frozen=True, slots=True)
class _VehicleProfile:
    """A car's whole-series arrays for the counterfactual."""

    actual_w: FloatArray
    """Charger power while plugged, 0 unplugged, NaN plugged and unknown."""
    uncontrolled_w: FloatArray
    sessions: list[tuple[int, int, SessionEnergy]]


# --- periods ---------------------------------------------------------------------------------------


def _aware_utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment!r}")
    return moment.astimezone(UTC)


def _local_midnight_utc(year: int, month: int, day: int, zone: tzinfo) -> datetime:
    # fold=0: an ambiguous midnight is its first occurrence; a midnight skipped by DST maps to the
    # instant of the jump, which is where that local day starts.
    return datetime(year, month, day, tzinfo=zone).astimezone(UTC)


def period_bounds(now: datetime, tz: str | tzinfo, period: Period) -> tuple[datetime, datetime]:
    """The local day ("today") or month ("month") containing ``now``, as ``[start, end)`` in UTC.

    Both bounds are local midnights, so a day is 23 or 25 hours long on a DST change.
    """
    zone = zoneinfo.ZoneInfo(tz) if isinstance(tz, str) else tz
    local = _aware_utc(now, "now").astimezone(zone)
    if period == "today":
        following = local.date() + timedelta(days=1)
        start = _local_midnight_utc(local.year, local.month, local.day, zone)
        end = _local_midnight_utc(following.year, following.month, following.day, zone)
    elif period == "month":
        next_year, next_month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        start = _local_midnight_utc(local.year, local.month, 1, zone)
        end = _local_midnight_utc(next_year, next_month, 1, zone)
    else:
        raise ValueError(f"unknown period {period!r}: 'today' or 'month'")
    return start, end


# --- the counterfactual ----------------------------------------------------------------------------


def plugged_sessions(plugged: npt.ArrayLike) -> list[tuple[int, int]]:
    """The maximal runs of plugged minutes as ``(first, end)`` indices, ``end`` exclusive."""
    flags = np.asarray(plugged, dtype=bool)
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1).tolist()
    ends = np.flatnonzero(edges == -1).tolist()
    return list(zip(starts, ends, strict=True))


def uncontrolled_profile_w(net_kwh: float, minutes: int, max_charge_w: float) -> tuple[FloatArray, float]:
    """Power per minute of a car taking ``net_kwh`` at ``max_charge_w`` from minute 0 (the last
    minute partial) within ``minutes`` minutes, and the kWh that did not fit."""
    profile_w = np.zeros(max(minutes, 0), dtype=np.float64)
    if not net_kwh > 0:
        return profile_w, 0.0
    if not max_charge_w > 0 or minutes <= 0:
        return profile_w, float(net_kwh)
    full_minute_kwh = max_charge_w * KWH_PER_W_MINUTE
    full_minutes = min(math.floor(net_kwh / full_minute_kwh), minutes)
    profile_w[:full_minutes] = max_charge_w
    rest_kwh = net_kwh - full_minutes * full_minute_kwh
    if full_minutes == minutes:
        return profile_w, max(rest_kwh, 0.0)
    if rest_kwh > 0:
        profile_w[full_minutes] = min(rest_kwh / KWH_PER_W_MINUTE, max_charge_w)
    return profile_w, 0.0


def _first_last_finite(values: FloatArray | None) -> tuple[float | None, float | None]:
    if values is None:
        return None, None
    known = values[np.isfinite(values)]
    if not len(known):
        return None, None
    return float(known[0]), float(known[-1])


def _check_vehicle(vehicle: VehicleSeries, minutes: int) -> None:
    lengths = {len(vehicle.charger_w), len(vehicle.plugged)}
    if vehicle.soc_pct is not None:
        lengths.add(len(vehicle.soc_pct))
    if lengths != {minutes}:
        raise ValueError(
            f"vehicle {vehicle.vehicle_id}: series lengths {sorted(lengths)}, expected {minutes}"
        )
    if not 0 < vehicle.charge_efficiency <= 1:
        raise ValueError(
            f"vehicle {vehicle.vehicle_id}: charge_efficiency {vehicle.charge_efficiency} not in (0, 1]"
        )
    if not math.isfinite(vehicle.max_charge_w) or vehicle.max_charge_w < 0:
        raise ValueError(f"vehicle {vehicle.vehicle_id}: max_charge_w {vehicle.max_charge_w} not >= 0")


def _session_energy(
    vehicle: VehicleSeries, first: int, end: int, start_utc: datetime, minutes: int
) -> tuple[SessionEnergy, FloatArray]:
    power_w = np.asarray(vehicle.charger_w[first:end], dtype=np.float64)
    known = np.isfinite(power_w)
    charged_kwh = float(np.sum(np.where(known & (power_w > 0), power_w, 0.0))) * KWH_PER_W_MINUTE
    discharged_kwh = float(np.sum(np.where(known & (power_w < 0), -power_w, 0.0))) * KWH_PER_W_MINUTE
    net_kwh = max(charged_kwh - discharged_kwh, 0.0)
    profile_w, undelivered_kwh = uncontrolled_profile_w(net_kwh, end - first, vehicle.max_charge_w)
    efficiency = vehicle.charge_efficiency
    soc = None if vehicle.soc_pct is None else np.asarray(vehicle.soc_pct[first:end], dtype=np.float64)
    soc_start_pct, soc_end_pct = _first_last_finite(soc)
    session = SessionEnergy(
        start_utc=start_utc + first * _MINUTE,
        end_utc=start_utc + end * _MINUTE,
        starts_before_data=first == 0,
        ends_after_data=end == minutes,
        charged_kwh=charged_kwh,
        discharged_kwh=discharged_kwh,
        net_kwh=net_kwh,
        delivered_kwh=net_kwh - undelivered_kwh,
        undelivered_kwh=undelivered_kwh,
        unknown_power_minutes=int(np.count_nonzero(~known)),
        stored_kwh=charged_kwh * efficiency - discharged_kwh / efficiency,
        uncontrolled_stored_kwh=(net_kwh - undelivered_kwh) * efficiency,
        soc_start_pct=soc_start_pct,
        soc_end_pct=soc_end_pct,
    )
    return session, profile_w


def vehicle_sessions(vehicle: VehicleSeries, start_utc: datetime) -> list[SessionEnergy]:
    """The car's plugged-in sessions over its whole series, with the counterfactual's energies."""
    return [
        session for _, _, session in _vehicle_profile(vehicle, start_utc, len(vehicle.charger_w)).sessions
    ]


def _vehicle_profile(vehicle: VehicleSeries, start_utc: datetime, minutes: int) -> _VehicleProfile:
    _check_vehicle(vehicle, minutes)
    plugged = np.asarray(vehicle.plugged, dtype=bool)
    charger_w = np.asarray(vehicle.charger_w, dtype=np.float64)
    actual_w = np.where(plugged, charger_w, 0.0)
    uncontrolled_w = np.zeros(minutes, dtype=np.float64)
    sessions = []
    for first, end in plugged_sessions(plugged):
        session, profile_w = _session_energy(vehicle, first, end, start_utc, minutes)
        uncontrolled_w[first:end] = profile_w
        sessions.append((first, end, session))
    return _VehicleProfile(actual_w=actual_w, uncontrolled_w=uncontrolled_w, sessions=sessions)


# --- pricing a window ------------------------------------------------------------------------------


def _check_series(series: MoneySeries) -> None:
    start = series.start_utc
    _aware_utc(start, "start_utc")
    if start.second or start.microsecond:
        raise ValueError(f"start_utc must be minute-aligned, got {start.isoformat()}")
    lengths = {len(series.grid_w), len(series.import_price_per_kwh), len(series.export_price_per_kwh)}
    if len(lengths) != 1:
        raise ValueError(f"grid and price series differ in length: {sorted(lengths)}")
    ids = [vehicle.vehicle_id for vehicle in series.vehicles]
    if len(set(ids)) != len(ids):
        raise ValueError(f"vehicle ids repeat: {ids}")


def _minute_index(series_start: datetime, moment: datetime) -> int:
    """Index of the first minute starting at or after ``moment`` (may lie outside the series)."""
    return math.ceil((moment - series_start) / _MINUTE)


def _grid_energy_kwh(grid_w: FloatArray) -> tuple[FloatArray, FloatArray]:
    import_kwh = np.maximum(grid_w, 0.0) * KWH_PER_W_MINUTE
    export_kwh = np.maximum(-grid_w, 0.0) * KWH_PER_W_MINUTE
    return import_kwh, export_kwh


def _cost(
    import_kwh: FloatArray, export_kwh: FloatArray, import_price: FloatArray, export_price: FloatArray
) -> float:
    return float(np.sum(import_kwh * import_price) - np.sum(export_kwh * export_price))


def _vehicle_money(vehicle: VehicleSeries, profile: _VehicleProfile, first: int, end: int) -> VehicleMoney:
    actual_w = profile.actual_w[first:end]
    known_w = np.where(np.isfinite(actual_w), actual_w, 0.0)
    sessions = tuple(
        session for s_first, s_end, session in profile.sessions if s_first < end and s_end > first
    )
    return VehicleMoney(
        vehicle_id=vehicle.vehicle_id,
        charged_kwh=float(np.sum(np.maximum(known_w, 0.0))) * KWH_PER_W_MINUTE,
        discharged_kwh=float(np.sum(np.maximum(-known_w, 0.0))) * KWH_PER_W_MINUTE,
        uncontrolled_charged_kwh=float(np.sum(profile.uncontrolled_w[first:end])) * KWH_PER_W_MINUTE,
        undelivered_kwh=sum(session.undelivered_kwh for session in sessions),
        sessions=sessions,
    )


def money_between(series: MoneySeries, start: datetime, end: datetime) -> MoneyResult:
    """Actual and uncontrolled cost over the minutes of ``series`` starting in ``[start, end)``.

    Sessions are taken from the whole series, so pass data from before ``start`` to see a car that
    was plugged in before the window. Minutes of the window outside the series count as missing.
    """
    _check_series(series)
    start_utc, end_utc = _aware_utc(start, "start"), _aware_utc(end, "end")
    if end_utc < start_utc:
        raise ValueError(f"window ends before it starts: {start_utc.isoformat()} .. {end_utc.isoformat()}")
    window_start = _minute_index(series.start_utc, start_utc)
    window_end = _minute_index(series.start_utc, end_utc)
    first = min(max(window_start, 0), series.minutes)
    last = min(max(window_end, first), series.minutes)

    grid_w = np.asarray(series.grid_w[first:last], dtype=np.float64)
    import_price = np.asarray(series.import_price_per_kwh[first:last], dtype=np.float64)
    export_price = np.asarray(series.export_price_per_kwh[first:last], dtype=np.float64)
    counted = np.isfinite(grid_w) & np.isfinite(import_price) & np.isfinite(export_price)
    uncontrolled_grid_w = grid_w.copy()
    vehicles = []
    for vehicle in series.vehicles:
        profile = _vehicle_profile(vehicle, series.start_utc, series.minutes)
        actual_w = profile.actual_w[first:last]
        counted &= np.isfinite(actual_w)
        uncontrolled_grid_w += profile.uncontrolled_w[first:last] - actual_w
        vehicles.append(_vehicle_money(vehicle, profile, first, last))

    import_price, export_price = import_price[counted], export_price[counted]
    import_kwh, export_kwh = _grid_energy_kwh(grid_w[counted])
    uncontrolled_import_kwh, uncontrolled_export_kwh = _grid_energy_kwh(uncontrolled_grid_w[counted])
    actual_cost = _cost(import_kwh, export_kwh, import_price, export_price)
    uncontrolled_cost = _cost(uncontrolled_import_kwh, uncontrolled_export_kwh, import_price, export_price)
    minutes_total = max(window_end - window_start, 0)
    minutes_counted = int(np.count_nonzero(counted))
    return MoneyResult(
        start_utc=start_utc,
        end_utc=end_utc,
        actual_cost=actual_cost,
        uncontrolled_cost=uncontrolled_cost,
        saving=uncontrolled_cost - actual_cost,
        import_kwh=float(np.sum(import_kwh)),
        export_kwh=float(np.sum(export_kwh)),
        uncontrolled_import_kwh=float(np.sum(uncontrolled_import_kwh)),
        uncontrolled_export_kwh=float(np.sum(uncontrolled_export_kwh)),
        minutes_total=minutes_total,
        minutes_counted=minutes_counted,
        minutes_missing=minutes_total - minutes_counted,
        vehicles=tuple(vehicles),
    )


def money_for_period(series: MoneySeries, now: datetime, tz: str | tzinfo, period: Period) -> MoneyResult:
    """The dashboard's figure: the local day or month containing ``now``, up to the last complete
    minute before ``now`` (the minute in progress and the future are not missing, just not yet)."""
    start, end = period_bounds(now, tz, period)
    now_utc = _aware_utc(now, "now")
    complete = now_utc.replace(second=0, microsecond=0)
    return money_between(series, start, min(end, max(complete, start)))
