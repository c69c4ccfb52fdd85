"""The site's power without the cars, from the meters and what each car draws now."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from controller.dispatch.car_setpoint import CarSetpoint
from controller.dispatch.inputs import DispatchInputs
from controller.dispatch.send_policy import SentCommand

__all__ = ["site_without_cars_w"]


def site_without_cars_w(
    inputs: DispatchInputs,
    cars: Collection[CarSetpoint],
    sent: Mapping[str, SentCommand],
    *,
    unknown_as_sent: bool = False,
) -> float | None:
    """The site without the cars: measured grid power minus what the cars draw now.

    A car whose power is unknown counts as 0 W, or with ``unknown_as_sent`` as the setpoint last
    sent to it (what it was told to draw: a charging car does not vanish from the fuse check
    because its charger samples slowly).

    In an outage the grid meter reads nothing useful (0 W, or silent): the home meter minus PV
    is the load the cars must carry, when there is one.
    """
    if inputs.grid_lost and inputs.home_power_w is not None:
        return inputs.home_power_w - (inputs.pv_power_w or 0.0)
    if inputs.grid_power_w is None:
        return None
    return inputs.grid_power_w - sum(_car_power_w(car, sent, unknown_as_sent) for car in cars)


def _car_power_w(car: CarSetpoint, sent: Mapping[str, SentCommand], unknown_as_sent: bool) -> float:
    if car.live.measured_power_w is not None:
        return car.live.measured_power_w
    last = sent.get(car.charger.id)
    return last.setpoint_w if unknown_as_sent and last is not None else 0.0
