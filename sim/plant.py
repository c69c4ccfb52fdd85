"""The plant: what physically happens at the home, step by step and minute by minute inside a step.

Batteries with separate charge and discharge efficiency (power is measured on the AC side, at the
charger), power limits of car and charger, availability (a car on a trip cannot charge), trips that
drain the battery while away, the home's load and PV, and the grid meter that closes the balance::

    grid_w = load_w - pv_w + sum(vehicle power_w)        (+ import, - export)

Inside a step the plant runs in 1-minute sub-steps: each charger follows what it was told over the
step (``sim.charger_model``: a request between 0 and its minimum pauses, one above its maximum is
capped, a pulse ending mid-minute counts to the second), each minute's power is limited by the room
left in the battery or the energy left in it, and the grid meter closes the balance per minute (load
and PV held at the step's values unless per-minute values are given). Import and export are the
sums of the minutes' positive and negative parts: a pulse at 4.14 kW for a quarter of a step
against a 1 kW home exports inside the step even where the step's average would not. A step in
which every car's power is constant and nothing runs out skips the minute loop (the same figures).

The plant never decides anything: it applies requested powers within physical limits (plugged in,
power ratings, the charger's minimum, an empty or full battery) and reports what happened. The
reserve floor and the SoC ceiling are the controller's promises, not physics, so the plant lets a
car cross them and the metrics count it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from controller.config import SiteConfig, VehicleConfig, physical_power_limits_kw
from sim.charger_model import ChargerModel, Pieces
from sim.home_battery import BatteryPlant
from sim.scenario import FloatArray, Scenario, ScheduledTrip

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


@dataclass(frozen=True, slots=True, eq=False)
class StepOutcome:
    """One step, per vehicle in config order; energies in kWh over the step."""

    power_w: tuple[float, ...]
    """Each car's average power over the step."""
    energy_kwh: tuple[float, ...]
    plugged_in: tuple[bool, ...]
    grid_w: float
    """The grid meter's average over the step (+ import)."""
    losses_kwh: float
    drive_kwh: float
    unmet_drive_kwh: float
    departures: tuple[DepartureOutcome, ...]
    import_kwh: float
    """Imported inside the step: the sum of the minutes' imports (not the netted average)."""
    export_kwh: float
    """Exported inside the step: the sum of the minutes' exports."""
    minute_power_w: FloatArray
    """Each car's power per minute, (vehicles, minutes per step)."""
    grid_minute_w: FloatArray
    """The grid meter per minute (+ import)."""
    battery_power_w: tuple[float, ...] = ()
    """Each home battery's average power over the step (+ charging), config order."""
    battery_energy_kwh: tuple[float, ...] = ()
    battery_minute_w: FloatArray | None = None
    """Each home battery's power per minute, (batteries, minutes per step); None without any."""
    battery_losses_kwh: float = 0.0


class Plant:
    """Steps a scenario forward; holds each battery's energy and the trips' effects."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        config = scenario.config
        self.specs = tuple(VehicleSpec.from_config(v, config) for v in config.vehicles)
        self.step_hours = scenario.series.step_hours
        self.chargers = tuple(ChargerModel.for_vehicle(v, config) for v in config.vehicles)
        step_s = scenario.series.step.total_seconds()
        if step_s <= 0 or step_s % 60:
            raise ValueError(f"a plant step of {step_s:g} s is not a whole number of minutes")
        self.step_s = int(step_s)
        self.minutes_per_step = self.step_s // 60
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
        self.batteries: BatteryPlant | None = BatteryPlant(config) if config.home_batteries else None
        """The home batteries (module ``sim.home_battery``); None without any."""

    def plugged_in(self, k: int) -> tuple[bool, ...]:
        return tuple(not a for a in self._away_list[k])

    def soc_percent(self, index: int) -> float:
        return 100.0 * self.energy_kwh[index] / self.specs[index].capacity_kwh

    def step(
        self,
        k: int,
        requested_w: Sequence[float],
        load_w: float,
        pv_w: float,
        pieces: Sequence[Pieces | None] | None = None,
        load_minutes_w: Sequence[float] | None = None,
        pv_minutes_w: Sequence[float] | None = None,
        battery_w: Sequence[float | None] | None = None,
    ) -> StepOutcome:
        """Apply step ``k``: per vehicle (config order) what its charger is told, ``pieces[i]``
        (``sim.charger_model``), or where that is None the constant ``requested_w[i]`` (vehicle sign)
        on the charger's phases. ``load_minutes_w`` / ``pv_minutes_w`` (optional, one value per
        minute) replace the step's load and PV inside the step. ``battery_w``: per home battery the
        setpoint it runs (+ charging), None (for all or one): its own self-consumption rule."""
        departures = self._departures(k)
        hours = self.step_hours
        minutes = self.minutes_per_step
        minute_w = np.empty((len(self.specs), minutes))
        powers: list[float] = []
        losses = drive = unmet = 0.0
        varies = False
        away = self._away_list[k]
        drain = self._drain_list[k]
        for i, spec in enumerate(self.specs):
            energy = self.energy_kwh[i]
            if away[i]:
                minute_w[i] = 0.0
                power = 0.0
                used = min(drain[i], max(0.0, energy))
                energy -= used
                drive += used
                unmet += drain[i] - used
                self._reachable_kwh[i] = energy
            else:
                told = pieces[i] if pieces is not None else None
                power, energy, loss, uneven = self._charge(i, requested_w[i], told, minute_w[i])
                losses += loss
                varies = varies or uneven
                full_kwh = spec.max_charge_w * hours / 1000.0 * spec.charge_efficiency
                self._reachable_kwh[i] = min(spec.capacity_kwh, self._reachable_kwh[i] + full_kwh)
            # Clamping keeps energy within [0, capacity] up to rounding.
            self.energy_kwh[i] = min(spec.capacity_kwh, max(0.0, energy))
            powers.append(power)
        battery_minute_w: FloatArray | None = None
        battery_losses = 0.0
        if self.batteries is not None:
            load_m = np.full(minutes, load_w) if load_minutes_w is None else np.asarray(load_minutes_w, float)
            pv_m = np.full(minutes, pv_w) if pv_minutes_w is None else np.asarray(pv_minutes_w, float)
            battery_minute_w, battery_losses = self.batteries.step(
                battery_w or (), load_m - pv_m + minute_w.sum(axis=0), pv_m, hours / minutes
            )
            # The batteries run as loads of the site: their minutes join the grid meter's.
            load_minutes_w = (load_m + battery_minute_w.sum(axis=0)).tolist()
            pv_minutes_w = pv_m.tolist()
        grid_w, grid_minute_w, import_kwh, export_kwh = self._grid(
            load_w, pv_w, powers, minute_w, varies, (load_minutes_w, pv_minutes_w)
        )
        return StepOutcome(
            power_w=tuple(powers),
            energy_kwh=tuple(self.energy_kwh),
            plugged_in=tuple(not a for a in away),
            grid_w=grid_w,
            losses_kwh=losses,
            drive_kwh=drive,
            unmet_drive_kwh=unmet,
            departures=departures,
            import_kwh=import_kwh,
            export_kwh=export_kwh,
            minute_power_w=minute_w,
            grid_minute_w=grid_minute_w,
            battery_power_w=tuple(self.batteries.last_power_w) if self.batteries is not None else (),
            battery_energy_kwh=tuple(self.batteries.energy_kwh) if self.batteries is not None else (),
            battery_minute_w=battery_minute_w,
            battery_losses_kwh=battery_losses,
        )

    def _grid(
        self,
        load_w: float,
        pv_w: float,
        powers: list[float],
        minute_w: FloatArray,
        varies: bool,
        finer: tuple[Sequence[float] | None, Sequence[float] | None],
    ) -> tuple[float, FloatArray, float, float]:
        """The grid meter: (step average, per minute, import kWh, export kWh inside the step)."""
        hours = self.step_hours
        minutes = self.minutes_per_step
        grid_w = load_w - pv_w + sum(powers)
        load_minutes_w, pv_minutes_w = finer
        if load_minutes_w is None and pv_minutes_w is None:
            if not varies:
                imported, exported = max(grid_w, 0.0), max(-grid_w, 0.0)
                return grid_w, np.full(minutes, grid_w), imported * hours / 1000.0, exported * hours / 1000.0
            grid_minute_w = (load_w - pv_w) + minute_w.sum(axis=0)
        else:
            load = np.full(minutes, load_w) if load_minutes_w is None else np.asarray(load_minutes_w, float)
            pv = np.full(minutes, pv_w) if pv_minutes_w is None else np.asarray(pv_minutes_w, float)
            grid_minute_w = load - pv + minute_w.sum(axis=0)
            grid_w = float(grid_minute_w.mean())
        to_kwh = hours / minutes / 1000.0
        import_kwh = float(np.maximum(grid_minute_w, 0.0).sum()) * to_kwh
        export_kwh = float(np.maximum(-grid_minute_w, 0.0).sum()) * to_kwh
        return grid_w, grid_minute_w, import_kwh, export_kwh

    def _departures(self, k: int) -> tuple[DepartureOutcome, ...]:
        departures: list[DepartureOutcome] = []
        for i, trip in self._departing.get(k, ()):
            spec = self.specs[i]
            target = spec.capacity_kwh * trip.target_soc_percent / 100.0
            departures.append(
                DepartureOutcome(spec.vehicle_id, k, self.energy_kwh[i], target, self._reachable_kwh[i])
            )
        for i in self._arriving.get(k, ()):
            self._reachable_kwh[i] = self.energy_kwh[i]
        return tuple(departures)

    def _charge(
        self, i: int, requested_w: float, told: Pieces | None, out: FloatArray
    ) -> tuple[float, float, float, bool]:
        """One plugged-in car over the step: (average power, energy after, losses, whether its
        power changes inside the step); ``out`` receives its power per minute."""
        charger = self.chargers[i]
        delivered = (
            charger.delivered_w(requested_w) if told is None else charger.constant_w(told, self.step_s)
        )
        if delivered is None:
            return self._per_minute(i, charger.follow(told or (), self.step_s), out)
        spec = self.specs[i]
        energy = self.energy_kwh[i]
        ac_kwh = abs(delivered) * self.step_hours / 1000.0
        if delivered > 0.0 and ac_kwh * spec.charge_efficiency <= spec.capacity_kwh - energy:
            out[:] = delivered
            return (
                delivered,
                energy + ac_kwh * spec.charge_efficiency,
                ac_kwh * (1.0 - spec.charge_efficiency),
                False,
            )
        if delivered < 0.0 and ac_kwh / spec.discharge_efficiency <= energy:
            out[:] = delivered
            loss = ac_kwh * (1.0 / spec.discharge_efficiency - 1.0)
            return delivered, energy - ac_kwh / spec.discharge_efficiency, loss, False
        if delivered == 0.0:
            out[:] = 0.0
            return 0.0, energy, 0.0, False
        return self._per_minute(i, np.full(self.minutes_per_step, delivered), out)

    def _per_minute(
        self, i: int, delivered_w: FloatArray, out: FloatArray
    ) -> tuple[float, float, float, bool]:
        """Minute by minute: each minute's power limited by the room or the energy left."""
        spec = self.specs[i]
        hours = self.step_hours / self.minutes_per_step
        energy = self.energy_kwh[i]
        losses = 0.0
        for m, requested in enumerate(delivered_w.tolist()):
            power = 0.0
            if requested > 0.0:
                room_w = max(0.0, spec.capacity_kwh - energy) / (spec.charge_efficiency * hours) * 1000.0
                power = min(requested, room_w)
                ac_kwh = power * hours / 1000.0
                energy += ac_kwh * spec.charge_efficiency
                losses += ac_kwh * (1.0 - spec.charge_efficiency)
            elif requested < 0.0:
                left_w = max(0.0, energy) * spec.discharge_efficiency / hours * 1000.0
                power = -min(-requested, left_w)
                ac_kwh = -power * hours / 1000.0
                energy -= ac_kwh / spec.discharge_efficiency
                losses += ac_kwh * (1.0 / spec.discharge_efficiency - 1.0)
            out[m] = power
        return float(out.mean()), energy, losses, True
