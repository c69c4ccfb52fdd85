"""Filling the canonical LP with numbers: from the parameter vector to costs, bounds and the
parameter-dependent matrix entries, and to HiGHS.

A re-solve sends HiGHS only the numbers that differ from what it holds: fewer copies, and the basis
stays as valid as possible. A changed matrix entry goes through ``changeCoeff``; HiGHS then keeps
the basis but factorises it afresh on the next run. An entry that turns 0 or stops being 0 moves
every entry after it in HiGHS's matrix; when many do, the whole LP is passed again instead, with the
basis carried over (the same warm start, one copy).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from controller.optimizer.lp_layout import INF, FloatArray, IndexArray, LpLayout

__all__ = [
    "Columnwise",
    "HighsValues",
    "LpNumbers",
    "columnwise",
    "lp_numbers",
    "pass_columns",
    "pass_lp",
    "uncross",
]

_SMALL_COEF = 1e-9
"""HiGHS's ``small_matrix_value``: a matrix entry this small is not stored (it counts as 0)."""
# What sending matrix entries costs, against passing the whole LP again (measured with highspy 1.16
# on 1 to 50 cars): a changed value is one Python call; an entry that appears or disappears moves
# every entry after it; the whole LP is one copy of it plus HiGHS's own checks and set-up.
_CHANGE_NS = 1300.0
_INSERT_NS = 2000.0
_INSERT_NS_PER_NNZ = 1.5
_RELOAD_NS = 200_000.0
_RELOAD_NS_PER_NNZ = 60.0


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
    coef: FloatArray
    """The parameter-dependent matrix entries (``LpLayout.coef_rows``, ``coef_cols``)."""


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
    coef = out[s[3] : s[4]]
    at = 5
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
    return LpNumbers(cost[:n], constant, lower, fixed_upper, upper, rhs, row_upper, coef)


Columnwise = tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], FloatArray]
"""A column-wise matrix as HiGHS takes it: start of each column (and the end), row indices, values."""


def columnwise(matrix: sp.csc_array, values: FloatArray | None = None) -> Columnwise:
    """``matrix`` (indices sorted) for HiGHS, with ``values`` in place of its own when given."""
    data = matrix.data if values is None else values
    return matrix.indptr.astype(np.int32), matrix.indices.astype(np.int32), data


def pass_lp(highs: Any, layout: LpLayout, numbers: LpNumbers) -> None:
    """Give HiGHS the whole LP: the kept rows column-wise, costs and bounds."""
    kept_matrix = layout.kept_matrix
    values = kept_matrix.data.copy()
    values[layout.coef_index] = numbers.coef
    pass_columns(
        highs,
        (numbers.cost, numbers.lower, numbers.upper),
        (numbers.row_lower, numbers.row_upper),
        columnwise(kept_matrix, values),
    )


def pass_columns(
    highs: Any,
    columns: tuple[FloatArray, FloatArray, FloatArray],
    rows: tuple[FloatArray, FloatArray],
    matrix: Columnwise,
) -> None:
    """Give HiGHS an LP to minimise: ``columns`` (cost, lower, upper), ``rows`` (lower, upper) and the
    column-wise ``matrix`` (start of each column, row indices, values), numpy arrays straight
    through (a ``HighsLp`` built attribute by attribute copies them element by element)."""
    cost, lower, upper = columns
    row_lower, row_upper = rows
    starts, indices, values = matrix
    status = highs.passModel(
        len(cost),
        len(row_lower),
        len(values),
        int(highspy.MatrixFormat.kColwise),
        int(highspy.ObjSense.kMinimize),
        0.0,
        cost,
        lower,
        upper,
        row_lower,
        row_upper,
        starts,
        indices,
        values,
        np.zeros(len(cost), dtype=np.int32),  # every column continuous
    )
    if status == highspy.HighsStatus.kError:
        raise RuntimeError("HiGHS refused the LP")


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

    def __init__(self, layout: LpLayout, param_vec: FloatArray) -> None:
        self._layout = layout
        self._nnz = int(layout.kept_matrix.nnz)
        self._hold(param_vec, lp_numbers(layout, param_vec))
        self.reloads = 0
        """How many times the whole LP was passed again (many matrix entries turned 0 or non-0)."""

    def _hold(self, param_vec: FloatArray, numbers: LpNumbers) -> None:
        """Record ``numbers`` (those of ``param_vec``) as what HiGHS holds."""
        layout = self._layout
        self._loaded = numbers
        self._out = layout.value_map @ param_vec  # the map's output as loaded into HiGHS
        self._var_out = self._out[layout.var_rows]
        self._lower = numbers.lower.copy()
        self._raw_upper = numbers.raw_upper.copy()

    def load(self, highs: Any) -> None:
        """Pass HiGHS the whole LP with the numbers held (the first time)."""
        _pass_keeping_basis(highs, self._layout, self._loaded)

    def _reload(self, highs: Any, param_vec: FloatArray) -> None:
        numbers = lp_numbers(self._layout, param_vec)
        _pass_keeping_basis(highs, self._layout, numbers)
        self._hold(param_vec, numbers)
        self.reloads += 1

    def _reload_is_cheaper(self, old: FloatArray, new: FloatArray) -> bool:
        """Whether passing the whole LP again costs less than changing these matrix entries."""
        reload_ns = _RELOAD_NS + _RELOAD_NS_PER_NNZ * self._nnz
        if len(new) * _CHANGE_NS >= reload_ns:
            return True
        structural = np.count_nonzero((np.abs(old) <= _SMALL_COEF) != (np.abs(new) <= _SMALL_COEF))
        insert_ns = _INSERT_NS + _INSERT_NS_PER_NNZ * self._nnz
        return bool(structural * insert_ns + (len(new) - structural) * _CHANGE_NS > reload_ns)

    @property
    def bounds(self) -> tuple[FloatArray, FloatArray]:
        """The column bounds HiGHS holds (lower, upper)."""
        if self._layout.incremental:
            return self._lower, self._raw_upper
        return self._loaded.lower, self._loaded.upper

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
        cost_end, rhs_start, rhs_end, lower_end, upper_end, coef_end = np.searchsorted(
            entries, layout.block_edges
        )
        coefs = entries[upper_end:coef_end] - s[3]
        if len(coefs) and self._reload_is_cheaper(
            self._out[entries[upper_end:coef_end]], values[upper_end:coef_end]
        ):
            self._reload(highs, param_vec)
            return
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
        if len(coefs):
            _send_coefs(highs, layout, coefs, values[upper_end:coef_end])
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
        entries = np.flatnonzero(numbers.coef != last.coef)
        if len(entries) and self._reload_is_cheaper(last.coef[entries], numbers.coef[entries]):
            self._reload(highs, param_vec)
            return
        cols = np.flatnonzero(numbers.cost != last.cost).astype(np.int32)
        if len(cols):
            highs.changeColsCost(len(cols), cols, numbers.cost[cols])
        cols = np.flatnonzero((numbers.lower != last.lower) | (numbers.upper != last.upper)).astype(np.int32)
        if len(cols):
            highs.changeColsBounds(len(cols), cols, numbers.lower[cols], numbers.upper[cols])
        rows = np.flatnonzero(numbers.row_lower != last.row_lower).astype(np.int32)
        if len(rows):
            highs.changeRowsBounds(len(rows), rows, numbers.row_lower[rows], numbers.row_upper[rows])
        if len(entries):
            _send_coefs(highs, self._layout, entries, numbers.coef[entries])
        self._loaded = numbers
        n = self._layout.n_cols
        self._out[:n] = numbers.cost
        self._out[n] = numbers.constant


def _pass_keeping_basis(highs: Any, layout: LpLayout, numbers: LpNumbers) -> None:
    """The whole LP again, warm-started from HiGHS's basis where it has one."""
    basis = highs.getBasis()
    pass_lp(highs, layout, numbers)
    if basis.valid:
        highs.setBasis(basis)


def _send_coefs(highs: Any, layout: LpLayout, entries: IndexArray, values: FloatArray) -> None:
    """Parameter-dependent matrix entries, one call each (highspy has no call for several; the
    loop runs in ``map``, not in Python bytecode)."""
    rows, cols = layout.coef_rows[entries].tolist(), layout.coef_cols[entries].tolist()
    deque(map(highs.changeCoeff, rows, cols, values.tolist()), maxlen=0)


def _send_bounds(highs: Any, cols: IndexArray, lower: FloatArray, upper: FloatArray) -> None:
    lower, upper = uncross(lower, upper)
    highs.changeColsBounds(len(cols), cols.astype(np.int32), lower, upper)
