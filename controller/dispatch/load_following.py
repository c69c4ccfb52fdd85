"""V2H: cars whose discharge must not export cover the measured home load, not the forecast one."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from controller.dispatch.car_setpoint import CarSetpoint
from controller.dispatch.inputs import DispatchInputs
from controller.dispatch.send_policy import SentCommand
from controller.dispatch.site_power import site_without_cars_w

__all__ = ["follow_home_load"]


def follow_home_load(
    inputs: DispatchInputs, cars: Collection[CarSetpoint], sent: Mapping[str, SentCommand]
) -> None:
    """Load-following cars share the home's net load, pro rata to their discharge power."""
    followers = [car for car in cars if car.follow_load]
    if not followers:
        return
    base_w = site_without_cars_w(inputs, cars, sent)
    if base_w is None:
        _stop(followers, "grid meter silent: no discharge")
        return
    unknown = _unknown_power(cars, followers)
    if unknown:
        _stop(followers, f"power of {', '.join(unknown)} unknown: no discharge")
        return
    fixed_w = sum(car.setpoint_w for car in cars if not car.follow_load)
    net_home_w = max(0.0, base_w + fixed_w)
    capacity_w = sum(car.max_discharge_w for car in followers)
    for car in followers:
        share = car.max_discharge_w / capacity_w if capacity_w > 0 else 0.0
        planned_w = car.setpoint_w
        car.setpoint_w = -min(car.max_discharge_w, net_home_w * share)
        car.reasons.append(f"following home load {net_home_w:.0f} W")
        if car.departure_soon and car.setpoint_w < planned_w and not inputs.grid_lost:
            car.setpoint_w = planned_w
            car.reasons.append("departure within the hour: no more discharge than planned")


def _unknown_power(cars: Collection[CarSetpoint], followers: list[CarSetpoint]) -> list[str]:
    """The cars whose unknown power makes the home load unknown."""
    # Another car's unknown power makes the home load unknown: counted as 0 W, a charging car
    # would be covered as home load and exported. A lone follower's own unknown power is not
    # (just plugged in, or discharging: counting 0 W discharges less, never more).
    return [
        car.live.vehicle_id
        for car in cars
        if car.live.measured_power_w is None and (not car.follow_load or len(followers) > 1)
    ]


def _stop(followers: list[CarSetpoint], reason: str) -> None:
    """The home load is unknown: no discharge, sent at once."""
    for car in followers:
        car.setpoint_w = 0.0
        car.urgent = True
        car.reasons.append(reason)
