"""The plan's step grid in seconds from its start, with step 0 starting at the snapshot time."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

__all__ = ["StepGrid"]

FloatArray = npt.NDArray[np.float64]


class StepGrid:
    """Seconds from the plan start for each step edge, with step 0 starting at the snapshot time."""

    def __init__(self, start: datetime, time: datetime, step: timedelta, steps: int) -> None:
        self.start = start
        self.step_s = step.total_seconds()
        self.steps = steps
        self.t0_s = (time - start).total_seconds()
        self.lo = np.arange(steps, dtype=np.float64) * self.step_s
        self.lo[0] = self.t0_s
        self.hi = (np.arange(steps, dtype=np.float64) + 1.0) * self.step_s
        self.end_s = self.hi[-1]

    def seconds(self, moment: datetime) -> float:
        return (moment - self.start).total_seconds()

    def overlap_s(self, a_s: float, b_s: float) -> FloatArray:
        """Seconds of ``[a_s, b_s)`` inside each step (from the snapshot time on)."""
        if b_s <= self.t0_s or a_s >= self.end_s:
            return np.zeros(self.steps)
        first = max(0, int(a_s // self.step_s))
        last = min(self.steps, math.ceil(b_s / self.step_s))
        out = np.zeros(self.steps)
        lo = np.maximum(self.lo[first:last], a_s)
        hi = np.minimum(self.hi[first:last], b_s)
        out[first:last] = np.clip(hi - lo, 0.0, None)
        return out

    def step_index(self, moment_s: float) -> int:
        """Index of the step containing ``moment_s`` (may be outside ``[0, steps)``)."""
        return int(moment_s // self.step_s)
