"""PV-surplus following: cars the plan charges from PV take the measured surplus, not the forecast one."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from controller.config import VehicleConfig
from controller.dispatch.car_setpoint import CarSetpoint
from controller.dispatch.inputs import DispatchInputs
from controller.dispatch.send_policy import SentCommand
from controller.dispatch.site_power import site_without_cars_w

__all__ = ["follow_pv_surplus", "storing_beats_export"]


def follow_pv_surplus(
    inputs: DispatchInputs, cars: Collection[CarSetpoint], sent: Mapping[str, SentCommand]
) -> None:
    """Surplus followers share the measured surplus, within what each may take.

    The plan's export at this step stays as planned; a smaller surplus than forecast lowers the
    charging instead of importing for it, a larger one goes into the cars instead of the grid.
    """
    followers = [car for car in cars if car.follow_surplus]
    base_w = site_without_cars_w(inputs, cars, sent)
    plan = inputs.plan
    index = plan.step_index(inputs.now) if plan is not None else None
    if not followers or base_w is None or plan is None or index is None:
        return
    fixed_w = sum(car.setpoint_w for car in cars if not car.follow_surplus)
    surplus_w = -(base_w + fixed_w) - plan.grid_export_w[index]
    # More than the planned charging only where storing a kWh beats exporting it.
    caps_w = [
        car.max_charge_w
        if storing_beats_export(
            car.vehicle, plan.import_price_per_kwh[index], plan.export_price_per_kwh[index]
        )
        else car.setpoint_w
        for car in followers
    ]
    capacity_w = sum(caps_w)
    total_w = min(max(0.0, surplus_w), capacity_w)
    for car, cap_w in zip(followers, caps_w, strict=True):
        planned_w = car.setpoint_w
        car.setpoint_w = total_w * cap_w / capacity_w if capacity_w > 0 else 0.0
        car.reasons.append(f"following PV surplus {max(0.0, surplus_w):.0f} W")
        minimum_w = car.charger.lowest_min_power_w()
        if planned_w < car.setpoint_w < minimum_w:
            # Below the charger's minimum the extra would be a pulse at the minimum, drawn mostly
            # from the grid while the surplus is smaller than the pulse: not worth storing.
            car.setpoint_w = planned_w
            car.reasons.append(f"surplus below the {minimum_w:.0f} W charger minimum: not pulsed")
        if car.departure_soon and car.setpoint_w < planned_w:
            car.setpoint_w = planned_w
            car.reasons.append("departure within the hour: keeping the planned charge")


def storing_beats_export(vehicle: VehicleConfig, import_price: float, export_price: float) -> bool:
    """A kWh stored now saves roughly a kWh imported later, less round-trip losses and wear."""
    stored_value = import_price * vehicle.charge_efficiency * vehicle.discharge_efficiency
    return stored_value - vehicle.degradation_cost_per_kwh > export_price
