"""Filling the canonical LP with numbers: from the parameter vector to costs and bounds, and to HiGHS.

A re-solve sends HiGHS only the costs and bounds that differ from what it holds: fewer copies, and
the basis stays as valid as possible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.optimizer.lp_layout import INF, FloatArray, IndexArray, LpLayout

__all__ = ["HighsValues", "LpNumbers", "lp_numbers", "uncross"]


@dataclass(frozen=True, slots=True)
class LpNumbers:
    """Every cost and bound of the LP for one parameter vector."""

    cost: FloatArray
    constant: float
    lower: FloatArray
    upper: FloatArray
    raw_upper: FloatArray
    """``upper`` before the ulp fix-up of crossed bounds."""
    row_lower: FloatArray
    row_upper: FloatArray


def lp_numbers(layout: LpLayout, param_vec: FloatArray) -> LpNumbers:
    """Every cost and bound for the parameter vector (the whole map)."""
    out = layout.value_map @ param_vec
    n = layout.n_cols
    s = layout.block_ends
    cost = out[:n]
    constant = float(out[n])
    rhs = out[s[0] : s[1]]
    lower_vals = out[s[1] : s[2]]
    upper_vals = out[s[2] : s[3]]
    at = 4
    lower = layout.base_lower.copy()
    upper = layout.base_upper.copy()
    if layout.lower_tensor:
        lower = np.maximum(lower, out[s[at - 1] : s[at]])
        at += 1
    if layout.upper_tensor:
        upper = np.minimum(upper, out[s[at - 1] : s[at]])
    if layout.lower_unique:
        lower[layout.lower_cols] = np.maximum(lower[layout.lower_cols], lower_vals)
    else:
        np.maximum.at(lower, layout.lower_cols, lower_vals)
    if layout.upper_unique:
        upper[layout.upper_cols] = np.minimum(upper[layout.upper_cols], upper_vals)
    else:
        np.minimum.at(upper, layout.upper_cols, upper_vals)
    _, fixed_upper = uncross(lower, upper)
    row_upper = np.where(layout.kept_eq, rhs, INF)
    return LpNumbers(cost[:n], constant, lower, fixed_upper, upper, rhs, row_upper)


def uncross(lower: FloatArray, upper: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Rounding can cross a pair of equal bounds by an ulp; never let it read as infeasible."""
    crossed = lower > upper
    if crossed.any():
        upper = np.where(crossed & (lower <= upper + 1e-9), lower, upper)
    return lower, upper


class HighsValues:
    """What a HiGHS instance holds of the map's output, and sending it what changed.

    What HiGHS holds is recorded only after every call went through, so a failed update is sent
    again next time.
    """

    def __init__(self, layout: LpLayout, param_vec: FloatArray, loaded: LpNumbers) -> None:
        self._layout = layout
        self._loaded = loaded
        self._out = layout.value_map @ param_vec  # the map's output as loaded into HiGHS
        self._var_out = self._out[layout.var_rows]
        self._lower = loaded.lower.copy()
        self._raw_upper = loaded.raw_upper.copy()

    @property
    def objective_constant(self) -> float:
        """CVXPY's constant term of the objective, which HiGHS does not hold."""
        return float(self._out[self._layout.n_cols])

    def send_changes(self, highs: Any, param_vec: FloatArray) -> None:
        """Give HiGHS the costs and bounds for ``param_vec`` that differ from what it holds."""
        if not self._layout.incremental:
            self._send_changes_whole(highs, param_vec)
            return
        layout = self._layout
        new = layout.var_map @ param_vec
        moved = np.flatnonzero(new != self._var_out)
        if not len(moved):
            return
        entries = layout.var_rows[moved]
        values = new[moved]
        s = layout.block_ends
        cost_end, rhs_start, rhs_end, lower_end, upper_end = np.searchsorted(entries, layout.block_edges)
        if cost_end:
            cols = entries[:cost_end].astype(np.int32)
            highs.changeColsCost(len(cols), cols, values[:cost_end])
        if rhs_end > rhs_start:
            rows = (entries[rhs_start:rhs_end] - s[0]).astype(np.int32)
            rhs = values[rhs_start:rhs_end]
            highs.changeRowsBounds(len(rows), rows, rhs, np.where(layout.kept_eq[rows], rhs, INF))
        lower_cols = layout.lower_cols[entries[rhs_end:lower_end] - s[1]]
        upper_cols = layout.upper_cols[entries[lower_end:upper_end] - s[2]]
        lower_vals = np.maximum(layout.base_lower[lower_cols], values[rhs_end:lower_end])
        upper_vals = np.minimum(layout.base_upper[upper_cols], values[lower_end:upper_end])
        self._send_bound_changes(highs, lower_cols, lower_vals, upper_cols, upper_vals)
        self._lower[lower_cols] = lower_vals
        self._raw_upper[upper_cols] = upper_vals
        self._var_out = new
        self._out[entries] = values

    def _send_bound_changes(
        self,
        highs: Any,
        lower_cols: IndexArray,
        lower_vals: FloatArray,
        upper_cols: IndexArray,
        upper_vals: FloatArray,
    ) -> None:
        # Each side is computed from the raw other side (before the ulp fix-up in uncross).
        if len(lower_cols) and len(upper_cols):
            lower, upper = self._lower.copy(), self._raw_upper.copy()
            lower[lower_cols] = lower_vals
            upper[upper_cols] = upper_vals
            cols = np.union1d(lower_cols, upper_cols)
            _send_bounds(highs, cols, lower[cols], upper[cols])
        elif len(upper_cols):
            _send_bounds(highs, upper_cols, self._lower[upper_cols], upper_vals)
        elif len(lower_cols):
            _send_bounds(highs, lower_cols, lower_vals, self._raw_upper[lower_cols])

    def _send_changes_whole(self, highs: Any, param_vec: FloatArray) -> None:
        """The general path (several bound rows per column): recompute everything, send the diff."""
        numbers = lp_numbers(self._layout, param_vec)
        last = self._loaded
        cols = np.flatnonzero(numbers.cost != last.cost).astype(np.int32)
        if len(cols):
            highs.changeColsCost(len(cols), cols, numbers.cost[cols])
        cols = np.flatnonzero((numbers.lower != last.lower) | (numbers.upper != last.upper)).astype(np.int32)
        if len(cols):
            highs.changeColsBounds(len(cols), cols, numbers.lower[cols], numbers.upper[cols])
        rows = np.flatnonzero(numbers.row_lower != last.row_lower).astype(np.int32)
        if len(rows):
            highs.changeRowsBounds(len(rows), rows, numbers.row_lower[rows], numbers.row_upper[rows])
        self._loaded = numbers
        n = self._layout.n_cols
        self._out[:n] = numbers.cost
        self._out[n] = numbers.constant


def _send_bounds(highs: Any, cols: IndexArray, lower: FloatArray, upper: FloatArray) -> None:
    lower, upper = uncross(lower, upper)
    highs.changeColsBounds(len(cols), cols.astype(np.int32), lower, upper)
