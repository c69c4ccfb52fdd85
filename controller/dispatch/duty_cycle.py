"""A step's average power below the charger's minimum, delivered as a pulse at the minimum.

AC charging cannot run below 6 A per phase (IEC 61851): a 3-phase box at 230 V pauses below
4.14 kW. A plan step asking for less is delivered as the minimum power exactly, from the step's
start, for the share of the step that gives the step's energy, then nothing until the step ends.
Anchoring the pulse to the step (not to when a schedule was sent) means a schedule re-sent in the
middle of a step continues the same pulse: never two pulses in one step, never a restarted one.

On-times are whole seconds (schedule periods are in seconds). Over a run of steps the rounding is
carried: the on-time of step ``i`` is the rounded cumulative on-time up to it less the rounded
cumulative on-time before it, so the energy of a whole schedule is exact to one second of pulse.

Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Pulse", "pulse_train", "step_pulse"]


@dataclass(frozen=True, slots=True)
class Pulse:
    """One step's delivery: ``power_w`` (signed) for ``on_s`` seconds from the step's start, then 0."""

    power_w: float
    on_s: int
    step_s: int

    @property
    def continuous(self) -> bool:
        """The power holds for the whole step (at or above the minimum, or nothing at all)."""
        return self.on_s >= self.step_s or self.power_w == 0.0

    @property
    def energy_wh(self) -> float:
        return self.power_w * self.on_s / 3600.0

    def power_at(self, offset_s: float) -> float:
        """The power ``offset_s`` seconds after the step's start."""
        return self.power_w if offset_s < self.on_s else 0.0


def _on_seconds(average_w: float, min_w: float, step_s: int) -> float:
    return abs(average_w) / min_w * step_s


def step_pulse(average_w: float, min_w: float, step_s: int, carried_s: float = 0.0) -> Pulse:
    """How a step's ``average_w`` is delivered by a charger whose minimum is ``min_w``.

    At or above the minimum (or with no minimum) the power holds all step. Below it: ``min_w`` with
    the sign of ``average_w`` for the rounded share of the step; ``carried_s`` is what earlier steps'
    rounding left (seconds of pulse, + owed), added before rounding.
    """
    if average_w == 0.0 or min_w <= 0.0 or abs(average_w) >= min_w:
        return Pulse(average_w, step_s, step_s)
    on_s = max(0, min(step_s, round(_on_seconds(average_w, min_w, step_s) + carried_s)))
    power_w = math.copysign(min_w, average_w)
    return Pulse(power_w if on_s > 0 else 0.0, on_s, step_s)


def pulse_train(
    averages_w: Sequence[float], min_w: float, step_s: int, *, discharge_min_w: float | None = None
) -> list[Pulse]:
    """One pulse per step for consecutive steps, the rounding carried from step to step.

    ``min_w`` is the charging minimum, ``discharge_min_w`` the discharging one (default: the same).
    A change of direction (charge to discharge) starts the carry afresh: seconds owed to a charge
    are not paid by a discharge.
    """
    pulses: list[Pulse] = []
    carried_s = 0.0
    last_sign = 0.0
    for average_w in averages_w:
        sign = math.copysign(1.0, average_w) if average_w != 0.0 else 0.0
        minimum_w = discharge_min_w if sign < 0 and discharge_min_w is not None else min_w
        if sign != last_sign:
            carried_s = 0.0
        pulse = step_pulse(average_w, minimum_w, step_s, carried_s)
        if pulse.continuous and pulse.on_s >= step_s:
            carried_s = 0.0
        else:
            carried_s += _on_seconds(average_w, minimum_w, step_s) - pulse.on_s
        last_sign = sign
        pulses.append(pulse)
    return pulses
