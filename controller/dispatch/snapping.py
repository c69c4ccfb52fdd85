"""What a charger can deliver of a setpoint: below its minimum, a pulse at the minimum, or nothing.

A step's average below the charger's minimum power is delivered as a pulse at the minimum for part
of the step (``duty_cycle``, applied where the schedule is built). Nothing is pulsed where a pulse
would break what the average respects:

* a discharge that may not export (V2H without V2G permission, or any discharge in an outage,
  when the home is an island) is pulsed only where the measured load covers the pulse, which it
  never does below the minimum: such a car idles (safety invariant 4);
* a pulse at the minimum above the headroom a grid or phase limit leaves (``max_instant_w``).

Rounding to zero never breaks a limit, a permission or the reserve.
"""

from __future__ import annotations

from controller.dispatch.car_setpoint import CarSetpoint
from controller.dispatch.inputs import DispatchInputs

__all__ = ["deliverable_w"]


def deliverable_w(inputs: DispatchInputs, car: CarSetpoint) -> float:
    """The car's setpoint as the average its charger will deliver this step (0 where it may not pulse)."""
    setpoint_w = car.setpoint_w
    discharge = setpoint_w < 0
    min_power_w = car.charger.min_power_w(car.phases, discharge=discharge)
    if not 0 < abs(setpoint_w) < min_power_w:
        return round(setpoint_w, 1)
    if discharge and (inputs.grid_lost or (car.follow_load and not car.vehicle.permissions.v2g)):
        car.reasons.append(f"home load below the {min_power_w:.0f} W discharge minimum: idle")
        return 0.0
    if min_power_w > car.max_instant_w:
        car.reasons.append(f"a pulse at the {min_power_w:.0f} W minimum would break a limit: idle")
        return 0.0
    share = abs(setpoint_w) / min_power_w
    car.reasons.append(
        f"below the charger minimum: pulsed at {min_power_w:.0f} W for {share:.0%} of each step"
    )
    return round(setpoint_w, 1)
