"""The plant: what physically happens at the home, step by step.

Batteries with separate charge and discharge efficiency (power is measured on the AC side, at the
charger), power limits of car and charger, availability (a car on a trip cannot charge), trips that
drain the battery while away, the home's load and PV, and the grid meter that closes the balance::

    grid_w = load_w - pv_w + sum(vehicle power_w)        (+ import, - export)

The plant never decides anything: it applies requested powers within physical limits (plugged in,
power ratings, an empty or full battery) and reports what happened. The reserve floor is the
controller's promise, not physics, so the plant lets a car go below it and the metrics count it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from controller.config import SiteConfig, VehicleConfig, physical_power_limits_kw
from sim.scenario import Scenario, ScheduledTrip

__all__ = ["DepartureOutcome", "Plant", "StepOutcome", "VehicleSpec"]


@dataclass(frozen=True, slots=True)
class VehicleSpec:
    """The physical car on its home charger."""

    vehicle_id: str
    capacity_kwh: float
    charge_efficiency: float
    discharge_efficiency: float
    max_charge_w: float
    max_discharge_w: float
    reserve_kwh: float
    max_soc_kwh: float

    @classmethod
    def from_config(cls, vehicle: VehicleConfig, config: SiteConfig) -> VehicleSpec:
        charger = config.charger(vehicle.home_charger) if vehicle.home_charger else None
        charge_kw, discharge_kw = physical_power_limits_kw(vehicle, charger)
        capacity = vehicle.usable_capacity_kwh
        return cls(
            vehicle_id=vehicle.id,
            capacity_kwh=capacity,
            charge_efficiency=vehicle.charge_efficiency,
            discharge_efficiency=vehicle.discharge_efficiency,
            max_charge_w=1000.0 * charge_kw,
            max_discharge_w=1000.0 * discharge_kw,
            reserve_kwh=capacity * vehicle.reserve_percent / 100.0,
            max_soc_kwh=capacity * vehicle.max_soc_percent / 100.0,
        )


@dataclass(frozen=True, slots=True)
class DepartureOutcome:
    """A car leaving: what it had, what the driver wanted, and the most it could have had."""

    vehicle_id: str
    step: int
    energy_kwh: float
    target_kwh: float
    reachable_kwh: float
    """Energy had the car charged at full power since it was plugged in (capped at the target)."""

    @property
    def shortfall_kwh(self) -> float:
        return max(0.0, self.target_kwh - self.energy_kwh)

    @property
    def avoidable_shortfall_kwh(self) -> float:
        return max(0.0, min(self.target_kwh, self.reachable_kwh) - self.energy_kwh)


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """One step, per vehicle in config order; energies in kWh over the step."""

    power_w: tuple[float, ...]
    energy_kwh: tuple[float, ...]
    plugged_in: tuple[bool, ...]
    grid_w: float
    losses_kwh: float
    drive_kwh: float
    unmet_drive_kwh: float
    departures: tuple[DepartureOutcome, ...]


class Plant:
    """Steps a scenario forward; holds each battery's energy and the trips' effects."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        config = scenario.config
        self.specs = tuple(VehicleSpec.from_config(v, config) for v in config.vehicles)
        self.step_hours = scenario.series.step_hours
        self.energy_kwh = [
            spec.capacity_kwh * scenario.initial_soc(v) / 100.0
            for spec, v in zip(self.specs, config.vehicles, strict=True)
        ]
        n = scenario.steps
        count = len(self.specs)
        self.away: npt.NDArray[np.bool_] = np.zeros((count, n), dtype=np.bool_)
        self.drain_kwh: npt.NDArray[np.float64] = np.zeros((count, n), dtype=np.float64)
        self._departing: dict[int, list[tuple[int, ScheduledTrip]]] = {}
        self._arriving: dict[int, list[int]] = {}
        for i, spec in enumerate(self.specs):
            for trip in scenario.trips_of(spec.vehicle_id):
                first, last = max(0, trip.depart_index), min(n, trip.arrive_index)
                self.away[i, first:last] = True
                # Drain spread evenly over the whole trip, also its part outside the series.
                self.drain_kwh[i, first:last] += trip.energy_kwh / trip.away_steps
                if trip.depart_index >= 0:
                    self._departing.setdefault(trip.depart_index, []).append((i, trip))
                if trip.arrive_index < n:
                    self._arriving.setdefault(trip.arrive_index, []).append(i)
        # Shadow energy of a car that charged at full power since it was plugged in.
        self._reachable_kwh = list(self.energy_kwh)
        self._away_list: list[list[bool]] = self.away.T.tolist()
        self._drain_list: list[list[float]] = self.drain_kwh.T.tolist()

    def plugged_in(self, k: int) -> tuple[bool, ...]:
        return tuple(not a for a in self._away_list[k])

    def soc_percent(self, index: int) -> float:
        return 100.0 * self.energy_kwh[index] / self.specs[index].capacity_kwh

    def clamp(self, index: int, k: int, power_w: float) -> float:
        """The power the car actually takes at step ``k`` for a request of ``power_w``."""
        if self._away_list[k][index] or power_w != power_w:  # NaN requests are refused as 0
            return 0.0
        spec = self.specs[index]
        energy = self.energy_kwh[index]
        if power_w > 0:
            room_w = (
                max(0.0, spec.capacity_kwh - energy) / (spec.charge_efficiency * self.step_hours) * 1000.0
            )
            return min(power_w, spec.max_charge_w, room_w)
        if power_w < 0:
            left_w = max(0.0, energy) * spec.discharge_efficiency / self.step_hours * 1000.0
            return -min(-power_w, spec.max_discharge_w, left_w)
        return 0.0

    def step(self, k: int, requested_w: list[float], load_w: float, pv_w: float) -> StepOutcome:
        """Apply ``requested_w`` (vehicle sign, one per vehicle) over step ``k``."""
        departures: list[DepartureOutcome] = []
        for i, trip in self._departing.get(k, ()):
            spec = self.specs[i]
            target = spec.capacity_kwh * trip.target_soc_percent / 100.0
            departures.append(
                DepartureOutcome(spec.vehicle_id, k, self.energy_kwh[i], target, self._reachable_kwh[i])
            )
        for i in self._arriving.get(k, ()):
            self._reachable_kwh[i] = self.energy_kwh[i]
        hours = self.step_hours
        powers: list[float] = []
        losses = drive = unmet = 0.0
        away = self._away_list[k]
        drain = self._drain_list[k]
        for i, spec in enumerate(self.specs):
            power = self.clamp(i, k, requested_w[i])
            energy = self.energy_kwh[i]
            if power > 0:
                ac_kwh = power * hours / 1000.0
                energy += ac_kwh * spec.charge_efficiency
                losses += ac_kwh * (1.0 - spec.charge_efficiency)
            elif power < 0:
                ac_kwh = -power * hours / 1000.0
                energy -= ac_kwh / spec.discharge_efficiency
                losses += ac_kwh * (1.0 / spec.discharge_efficiency - 1.0)
            if away[i]:
                used = min(drain[i], max(0.0, energy))
                energy -= used
                drive += used
                unmet += drain[i] - used
                self._reachable_kwh[i] = energy
            else:
                full_kwh = spec.max_charge_w * hours / 1000.0 * spec.charge_efficiency
                self._reachable_kwh[i] = min(spec.capacity_kwh, self._reachable_kwh[i] + full_kwh)
            # Clamping keeps energy within [0, capacity] up to rounding.
            self.energy_kwh[i] = min(spec.capacity_kwh, max(0.0, energy))
            powers.append(power)
        grid_w = load_w - pv_w + sum(powers)
        return StepOutcome(
            power_w=tuple(powers),
            energy_kwh=tuple(self.energy_kwh),
            plugged_in=tuple(not a for a in away),
            grid_w=grid_w,
            losses_kwh=losses,
            drive_kwh=drive,
            unmet_drive_kwh=unmet,
            departures=tuple(departures),
        )
