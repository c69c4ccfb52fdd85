"""Small sites and scenarios shared by the simulator tests (and a check that they are what they say)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from controller.config import SiteConfig, parse_config
from sim.scenario import Scenario, Series, Trip

START = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday
STEP = timedelta(minutes=15)

TINY_SITE: dict[str, Any] = {
    "site": {
        "name": "tiny",
        "timezone": "UTC",
        "plan_step_minutes": 15,
        "horizon_hours": 12,
        "replan_interval_minutes": 15,
        "grid": {"import_limit_kw": 17.0, "export_limit_kw": 10.0},
    },
    "chargers": [
        {
            "id": "wb",
            "max_charge_kw": 7.0,
            "max_discharge_kw": 5.0,
            "bidirectional": True,
            "min_current_a": 0,
        }
    ],
    "vehicles": [
        {
            "id": "car",
            "usable_capacity_kwh": 40.0,
            "charge_efficiency": 0.9,
            "discharge_efficiency": 0.9,
            "max_charge_kw": 7.0,
            "max_discharge_kw": 5.0,
            "reserve": {"percent": 20},
            "max_soc_percent": 90,
            "default_target_soc_percent": 70,
            "departures": {
                "monday": {"time": "07:00", "target_soc_percent": 70},
                "tuesday": {"time": "07:00", "target_soc_percent": 70},
            },
            "permissions": {"v2g": True, "v2h": True},
            "degradation_cost_per_kwh": 0.02,
            "home_charger": "wb",
        }
    ],
    "tariff": {"import": {"static_price_per_kwh": 0.3}},
}


def tiny_config(**changes: Any) -> SiteConfig:
    data = copy.deepcopy(TINY_SITE)
    for path, value in changes.items():
        node = data
        parts = path.split("__")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[parts[-1]] = value
    return parse_config(data, "tiny")


def price_curve(steps: int, start: datetime = START) -> np.ndarray:
    """Cheap nights, dear evenings: enough spread for arbitrage."""
    hours = np.array([(start + STEP * k).hour for k in range(steps)])
    price = np.where(hours < 6, 0.10, 0.25)
    price = np.where((hours >= 17) & (hours < 21), 0.60, price)
    return price.astype(np.float64)


def tiny_series(days: float = 2.0, start: datetime = START, seed: int = 0) -> Series:
    steps = round(timedelta(days=days) / STEP)
    rng = np.random.default_rng(seed)
    hours = np.array([(start + STEP * k).hour + (start + STEP * k).minute / 60 for k in range(steps)])
    load = 300.0 + 900.0 * ((hours >= 17) & (hours < 22)) + rng.uniform(0, 200, steps)
    pv = np.clip(3000.0 * np.sin((hours - 6) / 12 * np.pi), 0, None)
    imp = price_curve(steps, start)
    return Series(start, STEP, imp, imp * 0.8, load, pv)


def tiny_trips(days: int = 2, start: datetime = START) -> tuple[Trip, ...]:
    trips = []
    for day in range(days):
        depart = start + timedelta(days=day, hours=7)
        trips.append(Trip("car", depart, depart + timedelta(hours=9), 8.0))
    return tuple(trips)


def tiny_scenario(days: int = 2, soc: float = 50.0, **config_changes: Any) -> Scenario:
    return Scenario(
        tiny_config(**config_changes),
        tiny_series(days),
        tiny_trips(days),
        {"car": soc},
        name="tiny",
    )


def test_tiny_scenario_is_two_days_with_two_commutes() -> None:
    scenario = tiny_scenario()
    assert scenario.steps == 192
    trips = scenario.scheduled_trips
    assert [(t.depart_index, t.arrive_index) for t in trips] == [(28, 64), (124, 160)]
    assert all(t.target_soc_percent == 70 for t in trips)
