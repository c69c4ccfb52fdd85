"""Baseline strategies the controller is measured against (neither ever discharges).

Both decide a power per step; :class:`StepDelivery` tells the car's charger that step average the
way the charger can run it (below its minimum, a pulse at the minimum from the step's start, as the
dispatcher does), and the plant runs it minute by minute.

* ``uncontrolled``: a plain wallbox. Full power from plug-in until the departure target, then idle.
* ``smart``: the cheapest slots before departure. Each step it ranks the steps up to the next
  departure (or the next 24 h) by the price it expects to pay there (published prices, then the last
  published day; PV surplus counts at the export price it would have earned) and charges now only if
  now is among the cheapest steps that together reach the target. Its cars share the import limit,
  measured live on the grid meter.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from controller.config import ChargerConfig, SiteConfig
from controller.dispatch.duty_cycle import pulse_train, step_pulse
from sim.charger_model import Pieces, delivery_phases, pulse_pieces
from sim.engine import Decision
from sim.information import InformationModel, Observation, VehicleObservation
from sim.plant import VehicleSpec

__all__ = ["SmartCharging", "StepDelivery", "Uncontrolled"]


class StepDelivery:
    """Step averages as each car's home charger is told them.

    An average below the charger's lowest minimum (``ChargerConfig.lowest_min_power_w``) is a pulse
    at that minimum from the step's start on its lowest phases (``controller.dispatch.duty_cycle``);
    any other average runs all step, on one phase where a switching charger's single phase carries
    it and its full phases' minimum is above it, else on all phases (and, between the single
    phase's maximum and the full phases' minimum, as a pulse at the full phases' minimum). A car
    without a home charger gets its average as it is (None).
    """

    def __init__(self, config: SiteConfig, step_s: int) -> None:
        self.step_s = step_s
        self.chargers: tuple[ChargerConfig | None, ...] = tuple(
            config.charger(v.home_charger) if v.home_charger else None for v in config.vehicles
        )

    def pieces(self, index: int, average_w: float) -> Pieces | None:
        """One step on its own (the rounding to whole seconds not carried)."""
        charger = self.chargers[index]
        if charger is None:
            return None
        least = charger.lowest_min_power_w(discharge=average_w < 0.0)
        if 0.0 < abs(average_w) < least:
            return pulse_pieces(step_pulse(average_w, least, self.step_s), charger.lowest_phases)
        return self._running(charger, average_w)

    def train(self, index: int, averages_w: Sequence[float]) -> list[Pieces | None]:
        """Consecutive steps: the pulses' rounding carried from step to step (``pulse_train``)."""
        charger = self.chargers[index]
        if charger is None:
            return [None] * len(averages_w)
        averages = np.asarray(averages_w, dtype=np.float64)
        least_c = charger.lowest_min_power_w()
        least_d = charger.lowest_min_power_w(discharge=True)
        # Separate trains per direction: a change of direction starts the carry afresh anyway.
        charging = pulse_train(np.where(averages > 0.0, averages, 0.0).tolist(), least_c, self.step_s)
        discharging = pulse_train(np.where(averages < 0.0, averages, 0.0).tolist(), least_d, self.step_s)
        out: list[Pieces | None] = []
        for average_w, charge, discharge in zip(averages.tolist(), charging, discharging, strict=True):
            if 0.0 < average_w < least_c:
                out.append(pulse_pieces(charge, charger.lowest_phases))
            elif -least_d < average_w < 0.0:
                out.append(pulse_pieces(discharge, charger.lowest_phases))
            else:
                out.append(self._running(charger, average_w))
        return out

    def _running(self, charger: ChargerConfig, average_w: float) -> Pieces:
        phases = delivery_phases(charger, average_w)
        least = charger.min_power_w(phases, discharge=average_w < 0.0)
        if 0.0 < abs(average_w) < least:
            return pulse_pieces(step_pulse(average_w, least, self.step_s), phases)
        return ((0.0, average_w, phases),)


def _target_percent(config_default: float, vehicle: VehicleObservation) -> float:
    return vehicle.next_departure.target_soc_percent if vehicle.next_departure else config_default


def _power_to_reach(spec: VehicleSpec, soc_percent: float, target_percent: float, step_hours: float) -> float:
    """Charging power (AC) that brings the car to ``target_percent`` in one step, capped at full power."""
    missing_kwh = spec.capacity_kwh * (target_percent - soc_percent) / 100.0
    if missing_kwh <= 1e-9:
        return 0.0
    return min(spec.max_charge_w, missing_kwh / (spec.charge_efficiency * step_hours) * 1000.0)


def _delivered(delivery: StepDelivery, powers: Sequence[float]) -> Decision:
    pieces = tuple(delivery.pieces(i, p) for i, p in enumerate(powers))
    return Decision(tuple(powers), pieces=pieces)


class Uncontrolled:
    name = "uncontrolled"

    def __init__(self, config: SiteConfig) -> None:
        self.specs = tuple(VehicleSpec.from_config(v, config) for v in config.vehicles)
        self.default_targets = tuple(v.default_target_soc_percent for v in config.vehicles)
        self.delivery = StepDelivery(config, config.site.plan_step_minutes * 60)

    def decide(self, info: InformationModel) -> Decision:
        hours = info.step.total_seconds() / 3600.0
        powers: list[float] = []
        for spec, default, vehicle in zip(self.specs, self.default_targets, info.vehicles(1), strict=True):
            if not vehicle.plugged_in:
                powers.append(0.0)
                continue
            target = _target_percent(default, vehicle)
            powers.append(_power_to_reach(spec, vehicle.soc_percent, target, hours))
        return _delivered(self.delivery, powers)


class SmartCharging:
    name = "smart"

    def __init__(self, config: SiteConfig) -> None:
        self.specs = tuple(VehicleSpec.from_config(v, config) for v in config.vehicles)
        self.default_targets = tuple(v.default_target_soc_percent for v in config.vehicles)
        self.delivery = StepDelivery(config, config.site.plan_step_minutes * 60)

    def decide(self, info: InformationModel) -> Decision:
        hours = info.step.total_seconds() / 3600.0
        vehicles = info.vehicles(1)
        plugged = [v for v in vehicles if v.plugged_in]
        if not plugged:
            return Decision(tuple(0.0 for _ in vehicles))
        deadlines = [
            v.next_departure.index - info.k if v.next_departure else info.steps_per_day for v in plugged
        ]
        horizon = max(1, *deadlines)
        obs = info.observe(horizon)
        powers: list[float] = []
        for spec, default, vehicle in zip(self.specs, self.default_targets, vehicles, strict=True):
            if not vehicle.plugged_in:
                powers.append(0.0)
                continue
            deadline = vehicle.next_departure.index - info.k if vehicle.next_departure else info.steps_per_day
            target = _target_percent(default, vehicle)
            powers.append(self._power_now(spec, vehicle, target, max(1, deadline), obs, hours))
        # Load management on the live grid meter keeps the fuse, as in any wallbox with a meter.
        headroom = obs.import_limit_w - info.live_site_w()
        total = sum(powers)
        allowed = max(headroom, 0.0)
        if total > allowed:
            powers = [p * allowed / total for p in powers]
        return _delivered(self.delivery, powers)

    @staticmethod
    def _power_now(
        spec: VehicleSpec,
        vehicle: VehicleObservation,
        target_percent: float,
        deadline: int,
        obs: Observation,
        hours: float,
    ) -> float:
        missing_kwh = spec.capacity_kwh * (target_percent - vehicle.soc_percent) / 100.0
        if missing_kwh <= 1e-9:
            return 0.0
        net_w = obs.load_w[:deadline] - obs.pv_w[:deadline]
        slot_w = np.clip(obs.import_limit_w - net_w, 0.0, spec.max_charge_w)
        slot_w[0] = spec.max_charge_w  # the current step: the live meter settles the limit
        surplus_w = np.clip(-net_w, 0.0, slot_w)
        with np.errstate(invalid="ignore", divide="ignore"):
            price = np.where(
                slot_w > 0,
                (
                    surplus_w * obs.export_price_per_kwh[:deadline]
                    + (slot_w - surplus_w) * obs.import_price_per_kwh[:deadline]
                )
                / np.maximum(slot_w, 1e-9),
                np.inf,
            )
        order = np.lexsort((np.arange(deadline), price))  # cheapest first, earlier on ties
        slot_kwh = slot_w * hours / 1000.0 * spec.charge_efficiency
        remaining = missing_kwh
        for index in order:
            if remaining <= 1e-9 or not np.isfinite(price[index]):
                break
            take = min(float(slot_kwh[index]), remaining)
            if index == 0:
                return take / (spec.charge_efficiency * hours) * 1000.0
            remaining -= take
        # Now was not needed, unless the cheaper steps cannot carry the whole need.
        return 0.0 if remaining <= 1e-9 else spec.max_charge_w
