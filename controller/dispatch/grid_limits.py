"""Fuse and grid caps on the setpoints: applied at once, not at the next plan.

The capacity tariff's cap (``peak_window.capacity_import_cap_w``) is one more import cap: it only
reduces charging, never below 0, so the home keeps whatever it draws and no car is made to discharge.
It leaves a car alone within the hour before its departure: reaching the target is a safety
invariant, a higher monthly peak only costs money (the fuse and grid caps still bind there).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from controller.dispatch.car_setpoint import CarSetpoint
from controller.dispatch.inputs import DispatchInputs
from controller.dispatch.send_policy import SentCommand
from controller.dispatch.site_power import site_without_cars_w

__all__ = ["clamp_to_grid_limits"]


def clamp_to_grid_limits(
    inputs: DispatchInputs, cars: Collection[CarSetpoint], sent: Mapping[str, SentCommand]
) -> None:
    """Over the import cap: reduce charging. Over the export cap: reduce discharge, then absorb."""
    base_w = site_without_cars_w(inputs, cars, sent, unknown_as_sent=True)
    if base_w is None or inputs.grid_lost:
        return
    predicted_w = base_w + sum(car.setpoint_w for car in cars)
    if predicted_w > inputs.import_limit_w:
        _reduce_charging(cars, predicted_w - inputs.import_limit_w)
    elif predicted_w < -inputs.export_limit_w:
        _reduce_export(cars, -inputs.export_limit_w - predicted_w)
    if inputs.capacity_cap_w is not None:
        # Never below the home without the cars: the cap limits charging, not the house.
        cap_w = max(inputs.capacity_cap_w, base_w)
        predicted_w = base_w + sum(car.setpoint_w for car in cars)
        if predicted_w > cap_w:
            _reduce_charging(
                [car for car in cars if not car.departure_soon],
                predicted_w - cap_w,
                "capacity tariff: charging reduced to keep the peak",
            )


def _reduce_charging(
    cars: Collection[CarSetpoint], excess_w: float, reason: str = "import limit: charging reduced"
) -> None:
    """The largest charging first, until the import is back within its cap."""
    for car in sorted(cars, key=lambda c: -c.setpoint_w):
        if excess_w <= 0 or car.setpoint_w <= 0:
            continue
        cut_w = min(car.setpoint_w, excess_w)
        excess_w -= cut_w
        car.setpoint_w -= cut_w
        car.max_instant_w = min(car.max_instant_w, car.setpoint_w)  # the cap binds at every instant
        car.urgent = True
        car.reasons.append(reason)


def _reduce_export(cars: Collection[CarSetpoint], excess_w: float) -> None:
    """The largest discharge first: less of it, then charging (a full car only up to idle)."""
    for car in sorted(cars, key=lambda c: c.setpoint_w):
        if excess_w <= 0:
            break
        full = car.live.soc_percent is not None and car.live.soc_percent >= car.vehicle.max_soc_percent
        ceiling_w = 0.0 if full else car.max_charge_w
        raise_by_w = min(max(0.0, ceiling_w - car.setpoint_w), excess_w)
        if raise_by_w > 0:
            excess_w -= raise_by_w
            car.setpoint_w += raise_by_w
            if car.setpoint_w < 0:  # what discharge is left is the headroom under the export cap
                car.max_instant_w = min(car.max_instant_w, -car.setpoint_w)
            car.urgent = True
            car.reasons.append("export limit: discharge reduced")
