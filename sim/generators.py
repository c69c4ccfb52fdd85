"""Seeded synthetic scenarios for quick runs: household load, PV, day-ahead prices and commutes.

Each generator takes a ``numpy.random.Generator`` (or a seed) and the step grid, and returns one
array per step; the same seed gives the same scenario. The shapes are plausible, not calibrated:
use the public-data builder (``sim.public_data``) for realistic studies.
"""

from __future__ import annotations

import math
import zoneinfo
from datetime import datetime, timedelta

import numpy as np

from controller.config import SiteConfig
from controller.domain import align_to_step, ensure_utc
from sim.scenario import FloatArray, Scenario, Series, Trip
from sim.tariffs import Tariff, apply_tariff

__all__ = [
    "generate_day_ahead_prices",
    "generate_load",
    "generate_pv",
    "generate_scenario",
    "generate_trips",
    "local_hours",
]


def local_hours(start: datetime, steps: int, step: timedelta, timezone: str) -> tuple[FloatArray, FloatArray]:
    """Local hour of day (fractional, at the middle of each step) and day of year of each step."""
    zone = zoneinfo.ZoneInfo(timezone)
    hours = np.empty(steps)
    day_of_year = np.empty(steps)
    for k in range(steps):
        local = (start + step * k + step / 2).astimezone(zone)
        hours[k] = local.hour + local.minute / 60.0 + local.second / 3600.0
        day_of_year[k] = local.timetuple().tm_yday
    return hours, day_of_year


def _weekday(start: datetime, steps: int, step: timedelta, timezone: str) -> np.ndarray:
    zone = zoneinfo.ZoneInfo(timezone)
    return np.array([(start + step * k).astimezone(zone).weekday() for k in range(steps)])


def _ar1(rng: np.random.Generator, steps: int, correlation: float) -> FloatArray:
    shocks = rng.standard_normal(steps)
    out = np.empty(steps)
    scale = math.sqrt(1.0 - correlation**2)
    state = shocks[0] if steps else 0.0
    for k in range(steps):
        if k:
            state = correlation * state + scale * shocks[k]
        out[k] = state
    return out


def generate_load(
    rng: np.random.Generator,
    start: datetime,
    steps: int,
    step: timedelta,
    timezone: str = "UTC",
    annual_kwh: float = 3500.0,
) -> FloatArray:
    """Household load in W: base load, morning and evening peaks, more in winter, noise and spikes."""
    hours, day_of_year = local_hours(start, steps, step, timezone)
    weekend = _weekday(start, steps, step, timezone) >= 5
    morning = np.exp(-0.5 * ((hours - np.where(weekend, 9.0, 7.5)) / 1.0) ** 2)
    midday = np.exp(-0.5 * ((hours - 13.0) / 2.0) ** 2) * np.where(weekend, 0.6, 0.25)
    evening = np.exp(-0.5 * ((hours - 19.0) / 1.8) ** 2)
    shape = 0.35 + 0.5 * morning + midday + 1.1 * evening
    season = 1.0 + 0.2 * np.cos(2 * math.pi * (day_of_year - 15) / 365.0)
    noise = np.exp(0.25 * _ar1(rng, steps, 0.8))
    spikes = (rng.random(steps) < 0.03) * rng.uniform(1.0, 2.5, steps)
    load = shape * season * noise + spikes * (hours > 6.5)
    mean_kw = annual_kwh / (365.0 * 24.0)
    out: FloatArray = load / max(load.mean(), 1e-9) * mean_kw * 1000.0
    return out


def generate_pv(
    rng: np.random.Generator,
    start: datetime,
    steps: int,
    step: timedelta,
    timezone: str = "UTC",
    kwp: float = 5.0,
    latitude_deg: float = 52.0,
) -> FloatArray:
    """PV output in W: clear-sky sine of the sun's elevation, a random cloudiness per day, noise."""
    hours, day_of_year = local_hours(start, steps, step, timezone)
    utc_offset = np.array(
        [
            (
                (start + step * k).astimezone(zoneinfo.ZoneInfo(timezone)).utcoffset() or timedelta()
            ).total_seconds()
            / 3600.0
            for k in range(steps)
        ]
    )
    solar_hour = hours - utc_offset  # solar noon near 12:00 UTC at 5 degrees east; close enough
    declination = math.radians(23.44) * np.sin(2 * math.pi * (284 + day_of_year) / 365.0)
    lat = math.radians(latitude_deg)
    hour_angle = np.radians(15.0 * (solar_hour - 12.0))
    sin_elev = np.sin(lat) * np.sin(declination) + np.cos(lat) * np.cos(declination) * np.cos(hour_angle)
    clear = np.clip(sin_elev, 0.0, None) ** 1.2
    since_midnight_s = (start - start.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
    day = np.floor((np.arange(steps) * step.total_seconds() + since_midnight_s) / 86400.0).astype(int)
    days = int(day.max()) + 1 if steps else 0
    cloud_day = rng.beta(2.0, 1.6, size=days)  # 1 = clear
    intra = np.clip(1.0 + 0.25 * _ar1(rng, steps, 0.9), 0.2, 1.3)
    out: FloatArray = kwp * 1000.0 * 0.85 * clear * (0.15 + 0.85 * cloud_day[day]) * intra
    return np.clip(out, 0.0, kwp * 1000.0)


def generate_day_ahead_prices(
    rng: np.random.Generator,
    start: datetime,
    steps: int,
    step: timedelta,
    timezone: str = "UTC",
    mean_per_kwh: float = 0.09,
) -> FloatArray:
    """Day-ahead prices per kWh, constant per hour: morning and evening peaks, a solar dip at midday
    (negative on some sunny days), a random level per day."""
    hours, day_of_year = local_hours(start, steps, step, timezone)
    whole_hours = np.floor(hours) + 0.5
    morning = np.exp(-0.5 * ((whole_hours - 8.0) / 1.5) ** 2)
    evening = np.exp(-0.5 * ((whole_hours - 19.0) / 2.0) ** 2)
    solar = np.exp(-0.5 * ((whole_hours - 13.5) / 2.2) ** 2)
    summer = 0.5 + 0.5 * np.sin(2 * math.pi * (day_of_year - 80) / 365.0)
    day = np.floor(np.arange(steps) * step.total_seconds() / 86400.0).astype(int)
    days = int(day.max()) + 1 if steps else 0
    level = rng.lognormal(0.0, 0.3, size=days)
    sunny = rng.random(days) < 0.3
    shape = 1.0 + 0.45 * morning + 0.8 * evening - (0.6 + 0.9 * sunny[day]) * solar * summer
    hourly_noise = rng.normal(0.0, 0.08, size=steps // max(1, round(3600 / step.total_seconds())) + 2)
    per_step_hour = np.floor(np.arange(steps) * step.total_seconds() / 3600.0).astype(int)
    out: FloatArray = mean_per_kwh * level[day] * (shape + hourly_noise[per_step_hour])
    return out


def generate_trips(
    rng: np.random.Generator, config: SiteConfig, start: datetime, end: datetime
) -> tuple[Trip, ...]:
    """Commutes from each car's weekly departure rules (local time), back 8-10 h later on weekdays and
    2-6 h later at weekends; distance lognormal around 40 km, energy from the car's consumption."""
    zone = zoneinfo.ZoneInfo(config.site.timezone)
    trips: list[Trip] = []
    names = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    first_day = ensure_utc(start).astimezone(zone).date() - timedelta(days=1)
    last_day = ensure_utc(end).astimezone(zone).date() + timedelta(days=1)
    for vehicle in config.vehicles:
        day = first_day
        while day <= last_day:
            rule = vehicle.departures.get(names[day.weekday()])
            if rule is not None:
                jitter = timedelta(minutes=float(rng.normal(0.0, 10.0)))
                depart_local = datetime.combine(day, rule.time, tzinfo=zone) + jitter
                away_h = rng.uniform(8.0, 10.0) if day.weekday() < 5 else rng.uniform(2.0, 6.0)
                km = float(np.clip(rng.lognormal(math.log(40.0), 0.5), 2.0, 300.0))
                energy = min(vehicle.energy_kwh_for_km(km), 0.6 * vehicle.usable_capacity_kwh)
                depart = ensure_utc(depart_local)
                arrive = depart + timedelta(hours=float(away_h))
                if arrive > ensure_utc(start) and depart < ensure_utc(end):
                    trips.append(Trip(vehicle.id, depart, arrive, round(energy, 2)))
            day += timedelta(days=1)
    return tuple(trips)


def generate_scenario(
    config: SiteConfig,
    start: datetime,
    days: float,
    seed: int = 0,
    tariff: Tariff = "dynamic",
    annual_load_kwh: float = 3500.0,
    pv_kwp: float = 5.0,
    initial_soc_percent: dict[str, float] | None = None,
) -> Scenario:
    """A whole synthetic scenario on the config's plan grid."""
    step = timedelta(minutes=config.site.plan_step_minutes)
    start = align_to_step(ensure_utc(start), step)
    steps = round(timedelta(days=days) / step)
    rng = np.random.default_rng(seed)
    tz = config.site.timezone
    load = generate_load(rng, start, steps, step, tz, annual_load_kwh)
    pv = generate_pv(rng, start, steps, step, tz, pv_kwp) if pv_kwp > 0 else np.zeros(steps)
    day_ahead = generate_day_ahead_prices(rng, start, steps, step, tz)
    import_price, export_price = apply_tariff(day_ahead, tariff)
    series = Series(start, step, import_price, export_price, load, pv)
    trips = generate_trips(rng, config, start, series.end)
    return Scenario(config, series, trips, dict(initial_soc_percent or {}), name=f"synthetic-{seed}")
