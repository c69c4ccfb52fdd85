"""Dispatch: the current plan step plus live readings -> a setpoint and a schedule per charger.

The plan is made every few minutes on forecasts; the dispatcher runs every few seconds on
measurements. It keeps the plan's intent while enforcing, at once, what must never wait for the
next plan: grid limits (fuse), the reserve floor, V2G permissions and safe mode.

Pure: no I/O, no asyncio. State kept here is only what was last sent (deadband, rate limit).

One job per module, in the order a tick runs them:

- ``car_setpoint``: per car, the plan's power within its limits, permissions and reserve;
- ``load_following``: V2H cars cover the measured home load;
- ``surplus_following``: cars the plan charges from PV take the measured surplus;
- ``grid_limits``: fuse and caps, applied at once (the capacity tariff's cap too: ``peak_window``);
- ``phase_limits``: every phase within the main fuse per phase, 1-phase chargers on their phase;
- ``snapping``: nothing between 0 and a charger's minimum;
- ``schedule``: the bounded ChargerSchedule sent with the setpoint;
- ``send_policy``: deadband and rate limit, except for safety and renewals;
- ``dispatcher``: the ``Dispatcher`` that runs them and remembers what was sent.
"""

from controller.dispatch.car_setpoint import DEPARTURE_GUARD
from controller.dispatch.dispatcher import ChargerCommand, Dispatcher
from controller.dispatch.inputs import DispatchInputs, VehicleLive
from controller.domain import VehicleMode

__all__ = [
    "DEPARTURE_GUARD",
    "ChargerCommand",
    "DispatchInputs",
    "Dispatcher",
    "VehicleLive",
    "VehicleMode",
]
