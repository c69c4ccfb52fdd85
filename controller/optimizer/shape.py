"""What stays fixed for a planner: the vehicles' physics and permissions, the step grid, the weights.

Everything here comes from the site config; it decides the shape of the optimisation problem, so
a change means building a new :class:`~controller.optimizer.Planner`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import numpy.typing as npt

from controller.config import SiteConfig, VehicleConfig, power_limits_kw
from controller.optimizer.capacity import CapacityShape
from controller.optimizer.home_battery import BatterySpec

__all__ = ["PENALTIES", "Penalties", "SiteShape", "VehicleSpec"]


@dataclass(frozen=True, slots=True)
class Penalties:
    """Weights of the soft constraints, in currency.

    They are ordered so the optimiser never trades a higher duty for a lower one: the reserve floor
    (per kWh below it, per step) > a V2L session > a departure target > any price (snapshot prices
    are bounded to +-10 per kWh). Physical limits are hard; only a grid overload the home causes by
    itself (load or PV beyond a cap, which the cars can only reduce) is priced, at ``grid_overload``.
    """

    reserve_per_kwh_step: float = 1000.0
    v2l_unserved_per_kwh: float = 200.0
    target_per_kwh: float = 100.0
    grid_overload_per_kwh: float = 500.0


PENALTIES = Penalties()


@dataclass(frozen=True, slots=True)
class VehicleSpec:
    """One vehicle on its home charger, as the optimiser models it (kW and kWh inside)."""

    vehicle_id: str
    capacity_kwh: float
    charge_efficiency: float
    discharge_efficiency: float
    max_charge_kw: float
    max_discharge_kw: float
    """0 unless V2H is permitted and the charger can discharge."""
    v2g: bool
    v2l: bool
    reserve_kwh: float
    max_soc_kwh: float
    degradation_cost_per_kwh: float
    min_charge_kw: float = 0.0
    """The charger's smallest charging power (its fewest phases), at most ``max_charge_kw``; a
    step's average below it is delivered as a pulse at this power. 0: any power (no pulses)."""
    min_discharge_kw: float = 0.0
    """The same for discharging (0 when the car cannot discharge)."""

    @property
    def own_use_only(self) -> bool:
        """Discharges only to cover the home (V2H without V2G)."""
        return self.max_discharge_kw > 0 and not self.v2g

    @classmethod
    def from_config(cls, vehicle: VehicleConfig, config: SiteConfig) -> VehicleSpec:
        charger = config.charger(vehicle.home_charger) if vehicle.home_charger else None
        charge_kw, discharge_kw = power_limits_kw(vehicle, charger)
        capacity = vehicle.usable_capacity_kwh
        min_charge_kw = min_discharge_kw = 0.0
        if charger is not None:
            min_charge_kw = min(charge_kw, charger.lowest_min_power_w() / 1000.0)
            min_discharge_kw = min(discharge_kw, charger.lowest_min_power_w(discharge=True) / 1000.0)
        return cls(
            vehicle_id=vehicle.id,
            capacity_kwh=capacity,
            charge_efficiency=vehicle.charge_efficiency,
            discharge_efficiency=vehicle.discharge_efficiency,
            max_charge_kw=charge_kw,
            max_discharge_kw=discharge_kw,
            v2g=vehicle.permissions.v2g and discharge_kw > 0,
            v2l=vehicle.permissions.v2l,
            reserve_kwh=capacity * min(vehicle.reserve_percent, 100.0) / 100.0,
            max_soc_kwh=capacity * vehicle.max_soc_percent / 100.0,
            degradation_cost_per_kwh=vehicle.degradation_cost_per_kwh,
            min_charge_kw=min_charge_kw,
            min_discharge_kw=min_discharge_kw,
        )


@dataclass(frozen=True, eq=False, slots=True)
class VehicleConstants:
    """Per-vehicle constants as arrays, in config order (vectorised input building)."""

    max_charge_kw: npt.NDArray[np.float64]
    max_discharge_kw: npt.NDArray[np.float64]
    min_charge_kw: npt.NDArray[np.float64]
    min_discharge_kw: npt.NDArray[np.float64]
    reserve_kwh: npt.NDArray[np.float64]
    max_soc_kwh: npt.NDArray[np.float64]
    capacity_kwh: npt.NDArray[np.float64]
    charge_efficiency: npt.NDArray[np.float64]
    discharge_efficiency: npt.NDArray[np.float64]
    degradation_cost_per_kwh: npt.NDArray[np.float64]

    @classmethod
    def of(cls, vehicles: tuple[VehicleSpec, ...]) -> VehicleConstants:
        return cls(
            capacity_kwh=np.array([v.capacity_kwh for v in vehicles], dtype=np.float64),
            charge_efficiency=np.array([v.charge_efficiency for v in vehicles], dtype=np.float64),
            discharge_efficiency=np.array([v.discharge_efficiency for v in vehicles], dtype=np.float64),
            degradation_cost_per_kwh=np.array(
                [v.degradation_cost_per_kwh for v in vehicles], dtype=np.float64
            ),
            max_charge_kw=np.array([v.max_charge_kw for v in vehicles], dtype=np.float64),
            max_discharge_kw=np.array([v.max_discharge_kw for v in vehicles], dtype=np.float64),
            min_charge_kw=np.array([v.min_charge_kw for v in vehicles], dtype=np.float64),
            min_discharge_kw=np.array([v.min_discharge_kw for v in vehicles], dtype=np.float64),
            reserve_kwh=np.array([v.reserve_kwh for v in vehicles], dtype=np.float64),
            max_soc_kwh=np.array([v.max_soc_kwh for v in vehicles], dtype=np.float64),
        )


@dataclass(frozen=True, slots=True)
class SiteShape:
    """The fixed part of the problem: ``steps`` steps of ``step`` for these vehicles."""

    vehicles: tuple[VehicleSpec, ...]
    steps: int
    step: timedelta
    import_limit_kw: float
    export_limit_kw: float
    churn_cost_per_kw: float
    churn_hours: float
    terminal_value_per_kwh: float | None
    solver_time_limit_s: float
    timezone: str
    currency: str
    penalties: Penalties = PENALTIES
    capacity: CapacityShape | None = None
    """The capacity tariff (``tariff.capacity``); None: no peak variable at all."""
    batteries: tuple[BatterySpec, ...] = ()
    """The home batteries (``home_batteries``), in config order; module ``home_battery``."""
    constants: VehicleConstants = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "constants", VehicleConstants.of(self.vehicles))

    @property
    def step_h(self) -> float:
        return self.step.total_seconds() / 3600.0

    @property
    def churn_steps(self) -> int:
        """Steps over which setpoint changes are priced (0 or 1: no churn term)."""
        if self.churn_cost_per_kw <= 0:
            return 0
        return min(self.steps, math.ceil(self.churn_hours / self.step_h - 1e-9))

    @property
    def controlled_batteries(self) -> tuple[BatterySpec, ...]:
        """The batteries in the LP (``control`` mqtt or modbus)."""
        return tuple(b for b in self.batteries if b.controlled)

    @property
    def observe_batteries(self) -> tuple[BatterySpec, ...]:
        return tuple(b for b in self.batteries if not b.controlled)

    @property
    def own_use_mask(self) -> tuple[bool, ...]:
        return tuple(v.own_use_only for v in self.vehicles)

    @classmethod
    def from_config(
        cls, config: SiteConfig, steps: int | None = None, time_limit_s: float | None = None
    ) -> SiteShape:
        site = config.site
        count = site.steps if steps is None else steps
        if count < 1:
            raise ValueError(f"a plan needs at least one step, not {count}")
        opt = config.optimizer
        return cls(
            vehicles=tuple(VehicleSpec.from_config(v, config) for v in config.vehicles),
            steps=count,
            step=timedelta(minutes=site.plan_step_minutes),
            import_limit_kw=site.grid.import_limit_kw,
            export_limit_kw=site.grid.export_limit_kw,
            churn_cost_per_kw=opt.churn_cost_per_kw,
            churn_hours=opt.churn_horizon_hours,
            terminal_value_per_kwh=opt.terminal_value_per_kwh,
            solver_time_limit_s=opt.solver_time_limit_s if time_limit_s is None else time_limit_s,
            timezone=site.timezone,
            currency=site.currency,
            capacity=CapacityShape.of(config, timedelta(minutes=site.plan_step_minutes)),
            batteries=tuple(BatterySpec.from_config(b) for b in config.home_batteries),
        )
