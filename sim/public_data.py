"""Scenarios from public data: Dutch day-ahead prices, a measured household load and Dutch PV.

The files are those of the data folder of the ``ev2gym`` 2.0.0 package (MIT licence), which
collected them from public sources:

* ``nl_day_ahead_prices_2015_2023.csv``: ``timestamp_utc,price_eur_per_mwh``, hourly;
* ``household_loads_15min_kw.csv``: 24 households (columns), one year of 15-minute average kW;
* ``pv_netherlands_2019_kw_per_kwp.csv``: ``time,local_time,electricity`` (kW per kWp), hourly, UTC.

The year of prices is chosen freely; load row ``i`` and the PV hour of the same day of year are
mapped onto it (all three are non-leap years). The load is scaled to a European household's annual
energy. Trips come from the seeded commute generator (the data has none).
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from controller.config import SiteConfig
from sim.generators import generate_trips
from sim.scenario import FloatArray, Scenario, ScenarioError, Series
from sim.tariffs import Tariff, apply_tariff

__all__ = ["DEFAULT_DATA_DIR", "build_public_scenario", "read_day_ahead", "read_household_load", "read_pv"]

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
PRICES_FILE = "nl_day_ahead_prices_2015_2023.csv"
LOADS_FILE = "household_loads_15min_kw.csv"
PV_FILE = "pv_netherlands_2019_kw_per_kwp.csv"


def _open(path: Path) -> list[list[str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.reader(handle))
    except OSError as exc:
        raise ScenarioError(str(path), f"cannot read: {exc.strerror or exc}") from None


def read_day_ahead(data_dir: Path, year: int) -> FloatArray:
    """Hourly day-ahead prices of ``year`` (UTC) in EUR/kWh; a missing hour repeats the one before."""
    path = data_dir / PRICES_FILE
    rows = _open(path)
    start = datetime(year, 1, 1, tzinfo=UTC)
    hours = round((datetime(year + 1, 1, 1, tzinfo=UTC) - start) / timedelta(hours=1))
    out = np.full(hours, np.nan)
    for number, row in enumerate(rows[1:], start=1):
        if not row or not row[0].startswith(str(year)):
            continue
        try:
            at = datetime.fromisoformat(row[0])
            value = float(row[1])
        except (ValueError, IndexError):
            raise ScenarioError(str(path), "is not a timestamp and a price", number) from None
        index = round((at - start) / timedelta(hours=1))
        if 0 <= index < hours:
            out[index] = value / 1000.0
    if np.isnan(out[0]):
        raise ScenarioError(str(path), f"has no price for the first hour of {year}")
    for i in range(1, hours):
        if np.isnan(out[i]):
            out[i] = out[i - 1]
    return out


def read_household_load(data_dir: Path, house: str, annual_kwh: float) -> FloatArray:
    """One household's 15-minute load in W, scaled to ``annual_kwh`` over the year."""
    path = data_dir / LOADS_FILE
    rows = _open(path)
    header = rows[0]
    if house not in header:
        raise ScenarioError(
            str(path), f"has no household {house!r}; use one of {', '.join(header)}", column=house
        )
    column = header.index(house)
    values = np.array([float(r[column]) for r in rows[1:] if r], dtype=np.float64)
    energy_kwh = values.sum() * 0.25
    out: FloatArray = values * (annual_kwh / energy_kwh) * 1000.0
    return out


def read_pv(data_dir: Path, kwp: float) -> FloatArray:
    """Hourly PV output in W for a ``kwp`` system over 2019 (UTC hours)."""
    rows = _open(data_dir / PV_FILE)
    out: FloatArray = np.array([float(r[2]) for r in rows[1:] if r], dtype=np.float64) * kwp * 1000.0
    return out


def build_public_scenario(
    config: SiteConfig,
    data_dir: Path = DEFAULT_DATA_DIR,
    year: int = 2023,
    tariff: Tariff = "dynamic",
    house: str = "house_6",
    annual_load_kwh: float = 3500.0,
    pv_kwp: float = 5.0,
    first_day: int = 0,
    days: int | None = None,
    seed: int = 7,
    initial_soc_percent: dict[str, float] | None = None,
) -> Scenario:
    """A scenario on the config's plan grid from day ``first_day`` of ``year`` for ``days`` days."""
    step = timedelta(minutes=config.site.plan_step_minutes)
    if step > timedelta(minutes=15) or timedelta(minutes=15) % step:
        raise ValueError("public-data scenarios need a plan step that divides 15 minutes")
    per_15 = timedelta(minutes=15) // step
    per_hour = timedelta(hours=1) // step
    prices = np.repeat(read_day_ahead(data_dir, year), per_hour)
    load = np.repeat(read_household_load(data_dir, house, annual_load_kwh), per_15)
    pv = np.repeat(read_pv(data_dir, pv_kwp), per_hour)
    total = min(len(prices), len(load), len(pv))
    steps_per_day = round(timedelta(days=1) / step)
    first = first_day * steps_per_day
    last = total if days is None else min(total, first + days * steps_per_day)
    if first >= last:
        raise ValueError(f"day {first_day} is outside the data year")
    import_price, export_price = apply_tariff(prices[first:last], tariff)
    start = datetime(year, 1, 1, tzinfo=UTC) + step * first
    series = Series(start, step, import_price, export_price, load[first:last].copy(), pv[first:last].copy())
    trips = generate_trips(np.random.default_rng(seed), config, start, series.end)
    return Scenario(
        config,
        series,
        trips,
        dict(initial_soc_percent or {}),
        name=f"nl-{year}-{tariff}" + (f"-d{first_day}+{days}" if days is not None else ""),
    )
