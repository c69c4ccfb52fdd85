"""The home batteries in the plant: what each physically does, minute by minute.

A battery told a setpoint (``control`` mqtt or modbus, a strategy that plans it) runs it within its
power ratings, its inverter's AC limit (DC coupling: PV first) and what its battery management
allows: down to ``min_soc_percent``, up to full. One told nothing (``None``: ``observe``, the
baselines, a controller that handed it back with ``auto`` or let its command lapse) runs the
self-consumption rule, the same rule the planner forecasts (``controller.optimizer.home_battery``):
each minute it charges from any export of the site without it (PV beyond the home and the cars) and
discharges into any import, within its power and between its ``floor_percent`` and
``max_soc_percent``. Batteries act in config order, each on the site including the ones before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from controller.config import HomeBatteryConfig, SiteConfig
from sim.scenario import FloatArray

__all__ = ["BatteryPlant", "BatterySpec", "initial_battery_soc"]


def initial_battery_soc(battery: HomeBatteryConfig) -> float:
    """Where a simulated battery starts: halfway between its floor and its max SoC."""
    return (battery.floor_percent + battery.max_soc_percent) / 2.0


@dataclass(frozen=True, slots=True)
class BatterySpec:
    battery_id: str
    controlled: bool
    capacity_kwh: float
    charge_efficiency: float
    discharge_efficiency: float
    max_charge_w: float
    max_discharge_w: float
    bms_min_kwh: float
    floor_kwh: float
    max_soc_kwh: float
    degradation_cost_per_kwh: float
    inverter_ac_w: float | None

    @classmethod
    def from_config(cls, battery: HomeBatteryConfig) -> BatterySpec:
        capacity = battery.usable_capacity_kwh
        return cls(
            battery_id=battery.id,
            controlled=battery.control.mode != "observe",
            capacity_kwh=capacity,
            charge_efficiency=battery.charge_efficiency,
            discharge_efficiency=battery.discharge_efficiency,
            max_charge_w=1000.0 * battery.max_charge_kw,
            max_discharge_w=1000.0 * battery.max_discharge_kw,
            bms_min_kwh=capacity * battery.min_soc_percent / 100.0,
            floor_kwh=capacity * battery.floor_percent / 100.0,
            max_soc_kwh=capacity * battery.max_soc_percent / 100.0,
            degradation_cost_per_kwh=battery.degradation_cost_per_kwh,
            inverter_ac_w=1000.0 * battery.inverter_ac_kw
            if battery.coupling == "dc" and battery.inverter_ac_kw is not None
            else None,
        )


class BatteryPlant:
    """The batteries' energy, stepped a minute at a time."""

    def __init__(self, config: SiteConfig) -> None:
        self.specs = tuple(BatterySpec.from_config(b) for b in config.home_batteries)
        self.energy_kwh = [
            spec.capacity_kwh * initial_battery_soc(b) / 100.0
            for spec, b in zip(self.specs, config.home_batteries, strict=True)
        ]
        self.last_power_w = [0.0 for _ in self.specs]
        """Each battery's average power over the last step (what its meter showed)."""

    def soc_percent(self, index: int) -> float:
        return 100.0 * self.energy_kwh[index] / self.specs[index].capacity_kwh

    def step(
        self, told_w: Sequence[float | None], site_minute_w: FloatArray, pv_minute_w: FloatArray, hours: float
    ) -> tuple[FloatArray, float]:
        """Run one step; ``site_minute_w``: the grid per minute without the batteries (+ import),
        ``hours``: one minute's length in hours. Returns (power per battery and minute, losses kWh)."""
        minutes = len(site_minute_w)
        out = np.zeros((len(self.specs), minutes))
        site = site_minute_w.astype(np.float64).tolist()
        pv = pv_minute_w.tolist()
        losses = 0.0
        for i, spec in enumerate(self.specs):
            told = told_w[i] if i < len(told_w) else None
            energy = self.energy_kwh[i]
            for m in range(minutes):
                power = self._power(spec, told, site[m], pv[m], energy, hours)
                if power > 0:
                    energy += power * hours / 1000.0 * spec.charge_efficiency
                    losses += power * hours / 1000.0 * (1.0 - spec.charge_efficiency)
                elif power < 0:
                    energy += power * hours / 1000.0 / spec.discharge_efficiency
                    losses += -power * hours / 1000.0 * (1.0 / spec.discharge_efficiency - 1.0)
                out[i, m] = power
                site[m] += power
            self.energy_kwh[i] = min(spec.capacity_kwh, max(0.0, energy))
            self.last_power_w[i] = float(out[i].mean()) if minutes else 0.0
        return out, losses

    @staticmethod
    def _power(
        spec: BatterySpec, told: float | None, site_w: float, pv_w: float, energy: float, hours: float
    ) -> float:
        if told is None:  # self-consumption: against the site's import or export, within its own limits
            wanted, low_kwh, high_kwh = -site_w, spec.floor_kwh, spec.max_soc_kwh
        else:
            wanted, low_kwh, high_kwh = told, spec.bms_min_kwh, spec.capacity_kwh
        if wanted > 0:
            room_w = max(0.0, high_kwh - energy) / (spec.charge_efficiency * hours) * 1000.0
            return min(wanted, spec.max_charge_w, room_w)
        if wanted < 0:
            left_w = max(0.0, energy - low_kwh) * spec.discharge_efficiency / hours * 1000.0
            limit_w = spec.max_discharge_w
            if spec.inverter_ac_w is not None:
                limit_w = min(limit_w, max(0.0, spec.inverter_ac_w - pv_w))
            return -min(-wanted, limit_w, left_w)
        return 0.0
