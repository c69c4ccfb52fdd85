"""Per plan, how the planner's LP is solved: the one LP (its warm start moved with the plan's start,
module ``step_shift``) or by decomposition on the site rows (module ``decompose``)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from controller.optimizer.compiled import CompiledLp
from controller.optimizer.inputs import PlanInputs

__all__ = ["DECOMPOSE_FROM_ACTIVE", "SolvePath"]

DECOMPOSE_FROM_ACTIVE = 135
"""From this many cars that can charge or discharge in the horizon, a plan is solved by
decomposition: below it the monolithic simplex is faster, also on a large site where few cars are
home (docs/optimizer.md, "Scaling with the number of cars")."""


class SolvePath:
    """``decompose``: True always, False never, None per plan (from ``DECOMPOSE_FROM_ACTIVE`` cars
    that can act); ``vehicles`` configured, on a grid of ``steps`` steps of ``step``."""

    def __init__(self, decompose: bool | None, vehicles: int, step: timedelta, steps: int) -> None:
        self.decompose = decompose
        self.may_decompose = bool(decompose) or (decompose is None and vehicles >= DECOMPOSE_FROM_ACTIVE)
        """Whether the LP needs the cars' blocks (a site with fewer cars never decomposes)."""
        self._step = step
        self._steps = steps
        self._last_start: datetime | None = None
        self.last_decomposed = False
        """Whether the last plan was solved by decomposition."""
        self.last_shift_steps = 0
        """Steps the warm start was moved by for the last plan (0: not moved)."""

    def choose(self, lp: CompiledLp, inputs: PlanInputs) -> bool:
        """This plan's path (True: decomposition); a monolithic plan that starts whole steps after
        the last plan re-solves the same LP shifted in time, so HiGHS's basis is moved with it."""
        use = self.decompose
        if use is None:
            can_act = (inputs.charge_ub_kw > 0.0).any(axis=1) | (inputs.discharge_ub_kw > 0.0).any(axis=1)
            use = int(np.count_nonzero(can_act)) >= DECOMPOSE_FROM_ACTIVE
        self.last_decomposed = use and lp.can_decompose
        last, self._last_start = self._last_start, inputs.start
        self.last_shift_steps = 0
        if not self.last_decomposed and last is not None and inputs.start > last:
            steps = int((inputs.start - last) / self._step)
            if steps < self._steps and lp.shift_steps(steps):
                self.last_shift_steps = steps
        return self.last_decomposed
