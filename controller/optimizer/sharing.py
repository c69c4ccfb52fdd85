"""Who charges first when the cars together want more than the grid cap gives.

Without a rule the LP splits a binding cap by whichever vertex its simplex reaches: the same site
could serve the car that leaves in an hour last. The rule: a car with less time to spare before
its next target charges first. Each car's charging carries a tiny cost per kWh, proportional to
its slack (hours to its next target less the hours it needs at full power to reach it; a car
without a target: the most slack). The cost is the same in every step for one car, so it moves
no car's charging in time; it only orders the cars where they compete. At ``PER_KWH_HOUR`` it is
far below any price difference the plan acts on (48 h of slack: 0.05 ct/kWh).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from controller.optimizer.lp_layout import FloatArray
from controller.optimizer.vehicle_rows import DepartureInfo

__all__ = ["PER_KWH_HOUR", "SLACK_MAX_H", "charge_rank_per_kwh"]

PER_KWH_HOUR = 1e-5
"""Currency per kWh charged, per hour of slack."""
SLACK_MAX_H = 48.0
"""Slack is counted up to this (and a car without a target has it)."""


def charge_rank_per_kwh(
    targets: Sequence[Sequence[DepartureInfo]],
    e0_kwh: FloatArray,
    charge_kw: FloatArray,
    charge_efficiency: FloatArray,
    hours_to_step_end: FloatArray,
) -> FloatArray:
    """Per car, the cost per kWh charged that ranks it: ``PER_KWH_HOUR`` x its slack in hours.

    ``charge_kw``: each car's full charging power; ``hours_to_step_end``: from now to the end of
    each step of the plan (a target at boundary ``index`` is due ``hours_to_step_end[index - 1]``).
    """
    slack_h = np.full(len(targets), SLACK_MAX_H)
    for i, car_targets in enumerate(targets):
        if not car_targets:
            continue
        first = car_targets[0]
        due_h = float(hours_to_step_end[first.index - 1])
        missing_kwh = max(0.0, first.target_kwh - float(e0_kwh[i]))
        power_kw = float(charge_kw[i] * charge_efficiency[i])
        needed_h = missing_kwh / power_kw if power_kw > 0 else SLACK_MAX_H
        slack_h[i] = min(SLACK_MAX_H, max(0.0, due_h - needed_h))
    rank: FloatArray = PER_KWH_HOUR * slack_h
    return rank
