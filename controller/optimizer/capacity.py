"""The capacity tariff in the LP: a price per kW of the month's highest window-average import.

One variable per step, ``peak_kw[t]``: the running peak of the month that step ``t`` is in. Rows,
all with a constant matrix (the snapshot's time only moves right-hand sides and bounds)::

    window:  D * peak_kw[t] - sum(step_h * import_kw[s], s in the window ending at t) >= window_rhs[t]
    chain:   peak_kw[t] - peak_kw[t-1] >= chain_rhs[t]     (0; a large negative number where a month starts)
    floor:   peak_kw[t] >= floor_kw[t]                       (month to date now; the minimum in a new month)

and the term ``price * (sum(peak_kw[t] at each month's last step in the horizon) - month_to_date)``:
the peak a month ends with is charged for what it adds to the month so far; a month that starts
inside the horizon is charged in full, from the minimum up.

Windows are aligned to the wall clock (the epoch). When the step divides the window (5 or 15
minutes for a 15-minute window) a window is its ``k`` steps and ``D`` is the window's length: exact,
and the window under way counts the energy already imported in it (``window_import_wh``) in the
row of its last step. Where the step does not divide the window (10-minute steps) or is longer
than it, every step is its own row with ``D`` = the step: the step average stands for the window
average; the window's energy so far is then scaled to the part of step 0 already past, as if the
import so far had been steady. Rows of steps that end no window get a right-hand side no import
can reach, so they never bind; the last step's row always counts (a partial window is a lower bound).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from controller.config import SiteConfig
from controller.dispatch.peak_window import next_month_start, window_start

__all__ = ["CapacityModel", "CapacityShape", "capacity_inputs"]

cvx: Any = cp
FloatArray = npt.NDArray[np.float64]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

FIELDS = (
    "capacity_window_rhs",
    "capacity_chain_rhs",
    "capacity_floor_kw",
    "capacity_month_end",
    "capacity_peak_now_kw",
)
"""The PlanInputs fields (and parameter names) of the capacity term."""


@dataclass(frozen=True, slots=True)
class CapacityShape:
    """The capacity tariff as the model's shape sees it."""

    price_per_kw_month: float
    minimum_peak_kw: float
    window: dt.timedelta
    window_steps: int
    """Steps per window row: ``window / step`` when exact, else 1 (the step average)."""
    row_hours: float
    """``D``: the window's length in hours when exact, else the step's."""
    exact: bool

    @classmethod
    def of(cls, config: SiteConfig, step: dt.timedelta) -> CapacityShape | None:
        tariff = config.tariff.capacity
        if tariff is None:
            return None
        window = dt.timedelta(minutes=tariff.window_minutes)
        exact = window >= step and window % step == dt.timedelta(0)
        return cls(
            price_per_kw_month=tariff.price_per_kw_month,
            minimum_peak_kw=tariff.minimum_peak_kw,
            window=window,
            window_steps=window // step if exact else 1,
            row_hours=(window if exact else step).total_seconds() / 3600.0,
            exact=exact,
        )


def capacity_inputs(
    cap: CapacityShape,
    *,
    time: dt.datetime,
    start: dt.datetime,
    step: dt.timedelta,
    steps: int,
    timezone: str,
    month_peak_import_w: float | None,
    window_import_wh: float,
    import_max_kw: float,
) -> dict[str, FloatArray]:
    """The parameter values for one snapshot (PlanInputs fields ``FIELDS``)."""
    step_s = step.total_seconds()
    start_s = (start - _EPOCH).total_seconds()
    starts_s = start_s + np.arange(steps, dtype=np.float64) * step_s
    ends_s = starts_s + step_s
    # Month of each step (0: the snapshot's), from the month starts inside the horizon.
    edges: list[float] = []
    edge = next_month_start(time, timezone)
    while (edge - _EPOCH).total_seconds() < ends_s[-1]:
        edges.append((edge - _EPOCH).total_seconds())
        edge = next_month_start(edge, timezone)
    month = np.searchsorted(np.array(edges), starts_s, side="right")
    month_end = np.ones(steps)
    month_end[:-1] = month[:-1] != month[1:]

    now_kw = max(cap.minimum_peak_kw, (month_peak_import_w or 0.0) / 1000.0)
    so_far_kwh = window_import_wh / 1000.0
    k, dt_h = cap.window_steps, step_s / 3600.0
    window_rhs = np.full(steps, -(k * dt_h * import_max_kw + 1.0))  # never binds
    if cap.exact:
        active = np.flatnonzero(np.isclose(np.mod(ends_s, cap.window.total_seconds()), 0.0))
        active = np.union1d(active, [steps - 1])
        window_rhs[active] = 0.0
        window_rhs[active[0]] = so_far_kwh
    else:
        window_rhs[:] = 0.0
        in_window_s = (time - window_start(time, cap.window)).total_seconds()
        in_step_s = (time - start).total_seconds()
        window_rhs[0] = so_far_kwh * in_step_s / in_window_s if in_window_s > 0 else 0.0
    big_kw = now_kw + import_max_kw + so_far_kwh / cap.row_hours + 1.0
    chain_rhs = np.where(month[1:] != month[:-1], -big_kw, 0.0)
    return {
        "capacity_window_rhs": window_rhs,
        "capacity_chain_rhs": chain_rhs,
        "capacity_floor_kw": np.where(month == 0, now_kw, cap.minimum_peak_kw).astype(np.float64),
        "capacity_month_end": month_end,
        "capacity_peak_now_kw": np.array([now_kw]),
    }


class CapacityModel:
    """The capacity tariff's variable, parameters, rows and term for a model of ``steps`` steps."""

    def __init__(self, cap: CapacityShape, steps: int, step_h: float, imported: Any) -> None:
        self.cap = cap
        t = steps
        self.params: dict[str, cp.Parameter] = {
            "capacity_window_rhs": cp.Parameter(t, name="capacity_window_rhs"),
            "capacity_floor_kw": cp.Parameter(t, nonneg=True, name="capacity_floor_kw"),
            "capacity_month_end": cp.Parameter(t, nonneg=True, name="capacity_month_end"),
            "capacity_peak_now_kw": cp.Parameter(1, nonneg=True, name="capacity_peak_now_kw"),
        }
        if t > 1:
            self.params["capacity_chain_rhs"] = cp.Parameter(t - 1, name="capacity_chain_rhs")
        self.peak_kw = cp.Variable(t, nonneg=True, name="peak_kw")
        k = cap.window_steps
        rows = np.repeat(np.arange(t), k)
        cols = rows - np.tile(np.arange(k), t)
        keep = cols >= 0
        window_sum = sp.csr_array((np.full(int(keep.sum()), step_h), (rows[keep], cols[keep])), shape=(t, t))
        p = self.params
        self.constraints: list[cp.Constraint] = [
            cap.row_hours * self.peak_kw - window_sum @ imported >= p["capacity_window_rhs"],
            self.peak_kw >= p["capacity_floor_kw"],
        ]
        if t > 1:
            self.constraints.append(self.peak_kw[1:] - self.peak_kw[:-1] >= p["capacity_chain_rhs"])
        self.term: cp.Expression = cap.price_per_kw_month * (
            p["capacity_month_end"] @ self.peak_kw - cvx.sum(p["capacity_peak_now_kw"])
        )
