"""One or three phases, for chargers that can switch: low powers on one phase, with a hold time.

A 3-phase box at 6 A cannot go below 4.14 kW; on one phase it can run continuously from 1.38 kW.
A switching charger therefore runs a setpoint its single phase can carry on one phase, and anything
more on three. A switch is a contactor cycle and an interruption for the car: at most one per
``phase_switch_hold_s``; until the hold has passed the charger stays where it is, and the setpoint is
delivered on those phases (a pulse at the 3-phase minimum, or capped at the 1-phase maximum).
"""

from __future__ import annotations

from collections.abc import Collection, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.config import ChargerConfig
from controller.dispatch.car_setpoint import CarSetpoint

__all__ = ["PhaseState", "choose_phases", "wanted_phases"]


@dataclass(frozen=True, slots=True)
class PhaseState:
    """The phases a switching charger was last set to, and when it switched."""

    phases: int
    since: datetime


def wanted_phases(charger: ChargerConfig, setpoint_w: float) -> int:
    """The phases that deliver ``setpoint_w`` best: one where its single phase carries it."""
    if not charger.phase_switching or setpoint_w == 0.0:
        return charger.phases
    discharge = setpoint_w < 0
    if abs(setpoint_w) <= charger.max_power_w(1, discharge=discharge) and abs(
        setpoint_w
    ) < charger.min_power_w(charger.phases, discharge=discharge):
        return 1
    return charger.phases


def choose_phases(
    cars: Collection[CarSetpoint], now: datetime, held: MutableMapping[str, PhaseState]
) -> None:
    """Set each car's ``phases``; a switching charger switches only after its hold time."""
    for car in cars:
        charger = car.charger
        if not charger.phase_switching:
            car.phases = charger.phases
            continue
        state = held.get(charger.id)
        wanted = wanted_phases(charger, car.setpoint_w)
        if state is None:
            held[charger.id] = PhaseState(wanted, now)
            car.phases = wanted
        elif car.setpoint_w == 0.0 or wanted == state.phases:
            car.phases = state.phases  # idle: no reason to switch
        elif now - state.since >= timedelta(seconds=charger.phase_switch_hold_s):
            held[charger.id] = PhaseState(wanted, now)
            car.phases = wanted
            car.reasons.append(f"switched to {wanted} phase{'s' if wanted > 1 else ''}")
        else:
            car.phases = state.phases
            car.reasons.append(f"{state.phases}-phase held (switch hold {charger.phase_switch_hold_s:.0f} s)")
        if car.phases < charger.phases:
            # One phase carries a third of the rating: the setpoint and every later clamp see that.
            car.max_charge_w = min(car.max_charge_w, charger.max_power_w(1))
            car.max_discharge_w = min(car.max_discharge_w, charger.max_power_w(1, discharge=True))
            car.setpoint_w = max(-car.max_discharge_w, min(car.max_charge_w, car.setpoint_w))
