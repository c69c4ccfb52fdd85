"""Re-solving a DPP CVXPY problem fast: its canonical LP, held in a warm HiGHS instance.

``problem.solve()`` re-runs several milliseconds of Python per call even when only parameter
values change. A DPP problem's canonical form is affine in the parameters, so CVXPY's own
parametric program (``get_problem_data(...)["param_prob"]``) holds, once computed, everything
needed: the cost vector and the constraint right-hand sides are sparse linear maps of the
parameter vector. When the constraint matrix itself does not depend on parameters (checked here),
a re-solve is one sparse mat-vec, new costs and bounds for HiGHS, and a simplex run warm-started
from the previous basis. Rows with a single variable become column bounds, which keeps the LP small.

The CVXPY problem stays the source of truth: this module only evaluates CVXPY's canonicalisation
and reads variables back by CVXPY's own column offsets.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import highspy
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from cvxpy.reductions.dcp2cone.cone_matrix_stuffing import ParamConeProg

__all__ = ["CompiledLp", "LpResult", "NotCompilableError"]

FloatArray = npt.NDArray[np.float64]
_INF = highspy.kHighsInf
# The bare solver class, not the ``highspy.Highs`` wrapper: the wrapper's constructor calls into
# HiGHS before any option can be set, which prints a banner straight to stdout (and would corrupt
# `v2x plan --json`); its Python callbacks are not needed here. Typed as Any: highspy is only
# partly typed.
_HIGHS_CLASS: Any = getattr(getattr(highspy, "_core", None), "_Highs", highspy.Highs)


class NotCompilableError(ValueError):
    """The problem is not an LP whose constraint matrix is free of parameters."""


@dataclass(frozen=True, slots=True)
class LpResult:
    status: str
    """HiGHS model status name, e.g. ``kOptimal``, ``kTimeLimit``."""
    optimal: bool
    x: FloatArray | None
    objective: float
    solver_time_s: float
    iterations: int


class CompiledLp:
    """The canonical LP of a DPP ``problem``; :meth:`solve` takes parameter values, not the problem.

    ``time_limit_s`` bounds each solve (:meth:`set_time_limit` changes it; the planner gives each
    pass what is left of its per-plan budget); HiGHS then reports ``kTimeLimit`` and no solution is
    used.
    """

    def __init__(self, problem: cp.Problem, time_limit_s: float) -> None:
        if not problem.is_dpp():
            raise NotCompilableError("the problem is not DPP")
        for param in problem.parameters():
            if param.value is None:
                raise NotCompilableError(f"parameter {param.name()} needs a value before compiling")
        data, _, _ = problem.get_problem_data(cp.HIGHS)
        prog = data["param_prob"]
        if not isinstance(prog, ParamConeProg) or prog.P is not None:
            raise NotCompilableError("the canonical problem is not a linear program")
        dims = prog.cone_dims
        if dims.exp or dims.soc or dims.psd or dims.p3d or dims.pnd:
            raise NotCompilableError("the canonical problem has non-linear cones")
        if prog.is_mixed_integer():
            raise NotCompilableError("integer variables are not supported")

        self._prog = prog
        n = prog.x.size
        m = dims.zero + dims.nonneg
        n_params = prog.total_param_size
        self.n_cols = n
        self._n_eq = dims.zero
        self._param_slots = sorted(
            (
                (param, prog.param_id_to_col[param.id], param.size)
                for param in prog.parameters
                if param.id in prog.param_id_to_col
            ),
            key=lambda slot: slot[1],
        )
        self._param_vec = np.zeros(n_params + 1)
        self._param_vec[n_params] = 1.0  # the constant column
        ends = [col + size for _, col, size in self._param_slots]
        starts = [col for _, col, _ in self._param_slots]
        # Slots that tile the vector in order can be filled with one concatenate (load_parameter_list).
        self._params_tile = starts == [0, *ends[:-1]] and (not ends or ends[-1] == n_params)

        # Split CVXPY's tensor into the constant matrix [A] and the parametric offset b(params):
        # its rows are the column-major entries of the m x (n + 1) matrix [A | b].
        tensor = sp.coo_array(prog.A)
        rows, cols, vals = tensor.row, tensor.col, tensor.data
        in_matrix = rows < n * m
        if np.any(cols[in_matrix] != n_params):
            raise NotCompilableError("the constraint matrix depends on parameters")
        matrix = sp.csr_array((vals[in_matrix], (rows[in_matrix] % m, rows[in_matrix] // m)), shape=(m, n))
        matrix.sum_duplicates()
        matrix.eliminate_zeros()  # a stored zero must not make a row look like a bound
        offset = sp.csr_array(
            (vals[~in_matrix], (rows[~in_matrix] - n * m, cols[~in_matrix])), shape=(m, n_params + 1)
        )
        cost = sp.csr_array(prog.q)

        # Rows a*x_j + b >= 0 (or == 0) are bounds on x_j; the rest go to HiGHS as rows.
        nnz_per_row = np.diff(matrix.indptr)
        single = np.flatnonzero(nnz_per_row == 1)
        kept = np.flatnonzero(nnz_per_row != 1)
        coeff = matrix.data[matrix.indptr[single]]
        var = matrix.indices[matrix.indptr[single]]
        is_eq = single < self._n_eq
        as_lower = is_eq | (coeff > 0)
        as_upper = is_eq | (coeff < 0)
        bound_map = sp.diags_array(-1.0 / coeff) @ offset[single]  # x_j = -b / a at the bound

        base_lower = np.full(n, -_INF) if prog.lower_bounds is None else np.asarray(prog.lower_bounds, float)
        base_upper = np.full(n, _INF) if prog.upper_bounds is None else np.asarray(prog.upper_bounds, float)
        extra = []
        self._lower_tensor = self._upper_tensor = False
        if prog.lb_tensor is not None:
            extra.append(sp.csr_array(prog.lb_tensor))
            self._lower_tensor = True
        if prog.ub_tensor is not None:
            extra.append(sp.csr_array(prog.ub_tensor))
            self._upper_tensor = True
        self._base_lower = base_lower
        self._base_upper = base_upper
        self._lower_cols = var[as_lower]
        self._upper_cols = var[as_upper]
        self._lower_unique = len(np.unique(self._lower_cols)) == len(self._lower_cols)
        self._upper_unique = len(np.unique(self._upper_cols)) == len(self._upper_cols)

        # One sparse map from the parameter vector to every number a solve needs.
        self._kept_rows = kept
        self._kept_eq = kept < self._n_eq
        blocks = [cost, -offset[kept], bound_map[as_lower], bound_map[as_upper], *extra]
        self._sizes = np.cumsum([b.shape[0] for b in blocks])
        self._map = sp.csr_array(sp.vstack(blocks, format="csr"))
        # Only rows of the map that read a parameter can change between solves; a re-solve
        # evaluates those alone and sends HiGHS only the entries whose value moved.
        reads_param = np.diff(sp.csr_array(self._map[:, :n_params]).indptr) > 0
        self._var_rows = np.flatnonzero(reads_param)
        self._var_map = sp.csr_array(self._map[self._var_rows])
        # Where each block of the map starts among its rows: cost, constant, rhs, lower, upper.
        self._block_edges = np.array([n, self._sizes[0], self._sizes[1], self._sizes[2], self._sizes[3]])
        # With at most one bound row per column, a changed bound entry fixes its column alone.
        self._incremental = (
            self._lower_unique and self._upper_unique and not self._lower_tensor and not self._upper_tensor
        )

        kept_matrix = sp.csc_array(matrix[kept])
        self.n_rows = len(kept)
        self._row_upper_ineq = np.full(self.n_rows, _INF)

        self._highs: Any = _HIGHS_CLASS()
        self._highs.setOptionValue("output_flag", False)
        self._time_limit_s = float(time_limit_s)
        self._highs.setOptionValue("solver", "simplex")
        self.load_from_problem()
        numbers = self._numbers()
        lp = highspy.HighsLp()
        lp.num_col_ = n
        lp.num_row_ = self.n_rows
        lp.col_cost_ = numbers.cost
        lp.col_lower_ = numbers.lower
        lp.col_upper_ = numbers.upper
        lp.row_lower_ = numbers.row_lower
        lp.row_upper_ = numbers.row_upper
        lp.offset_ = 0.0
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = kept_matrix.indptr
        lp.a_matrix_.index_ = kept_matrix.indices
        lp.a_matrix_.value_ = kept_matrix.data
        lp.a_matrix_.num_col_ = n
        lp.a_matrix_.num_row_ = self.n_rows
        self._highs.passModel(lp)
        self._loaded = numbers
        self._out = self._map @ self._param_vec  # the map's output as loaded into HiGHS
        self._var_out = self._out[self._var_rows]
        self._lower = numbers.lower.copy()
        self._raw_upper = numbers.raw_upper.copy()
        self._status_names: dict[Any, str] = {}

    # ---------------------------------------------------------------------- solving

    def offset_of(self, variable: cp.Variable) -> int:
        """Column where ``variable`` starts (CVXPY's canonical order, column-major within it)."""
        return int(self._prog.var_id_to_col[variable.id])

    def columns_of(self, variable: cp.Variable) -> slice:
        """The columns of ``variable`` in a solution vector."""
        start = self.offset_of(variable)
        return slice(start, start + variable.size)

    def value_of(self, x: FloatArray, variable: cp.Variable) -> FloatArray:
        shaped: FloatArray = x[self.columns_of(variable)].reshape(variable.shape, order="F")
        return shaped

    def load_parameter_values(self, values: Mapping[int, npt.ArrayLike]) -> None:
        """Set parameter values by parameter id (column-major, as CVXPY flattens them)."""
        vec = self._param_vec
        for param, col, size in self._param_slots:
            if param.id in values:
                vec[col : col + size] = np.ravel(values[param.id], order="F")

    def load_parameter_list(self, values: Sequence[FloatArray]) -> None:
        """Set every parameter's value, in the order of :attr:`parameters` (the fast path)."""
        if len(values) != len(self._param_slots):
            raise ValueError(f"{len(values)} values for {len(self._param_slots)} parameters")
        vec = self._param_vec
        if self._params_tile:
            np.concatenate([v.ravel(order="F") for v in values], out=vec[:-1])
            return
        for (_, col, size), value in zip(self._param_slots, values, strict=True):
            vec[col : col + size] = np.ravel(value, order="F")

    def load_from_problem(self) -> None:
        """Use the values currently set on the CVXPY parameters."""
        vec = self._param_vec
        for param, col, size in self._param_slots:
            vec[col : col + size] = np.ravel(param.value, order="F")

    @dataclass(frozen=True, slots=True)
    class _Numbers:
        cost: FloatArray
        constant: float
        lower: FloatArray
        upper: FloatArray
        raw_upper: FloatArray
        """``upper`` before the ulp fix-up of crossed bounds."""
        row_lower: FloatArray
        row_upper: FloatArray

    def _numbers(self) -> CompiledLp._Numbers:
        """Every cost and bound for the loaded parameter values (the whole map)."""
        out = self._map @ self._param_vec
        n = self.n_cols
        s = self._sizes
        cost = out[:n]
        constant = float(out[n])
        rhs = out[s[0] : s[1]]
        lower_vals = out[s[1] : s[2]]
        upper_vals = out[s[2] : s[3]]
        at = 4
        lower = self._base_lower.copy()
        upper = self._base_upper.copy()
        if self._lower_tensor:
            lower = np.maximum(lower, out[s[at - 1] : s[at]])
            at += 1
        if self._upper_tensor:
            upper = np.minimum(upper, out[s[at - 1] : s[at]])
        if self._lower_unique:
            lower[self._lower_cols] = np.maximum(lower[self._lower_cols], lower_vals)
        else:
            np.maximum.at(lower, self._lower_cols, lower_vals)
        if self._upper_unique:
            upper[self._upper_cols] = np.minimum(upper[self._upper_cols], upper_vals)
        else:
            np.minimum.at(upper, self._upper_cols, upper_vals)
        _, fixed_upper = _uncross(lower, upper)
        row_upper = np.where(self._kept_eq, rhs, self._row_upper_ineq)
        return CompiledLp._Numbers(cost[:n], constant, lower, fixed_upper, upper, rhs, row_upper)

    def solve(self) -> LpResult:
        """Solve with the loaded parameter values, warm-starting from the previous basis."""
        try:
            return self._solve()
        except Exception as exc:  # a solver crash must become a fallback plan, not a dead daemon
            self._highs.clearSolver()
            return LpResult(f"error: {exc}", False, None, float("nan"), 0.0, 0)

    def _send_changes(self) -> None:
        """Give HiGHS the costs and bounds that differ from what it holds (nothing else).

        Fewer copies, and the basis stays as valid as possible. What HiGHS holds is recorded only
        after every call went through, so a failed update is sent again next time.
        """
        if not self._incremental:
            self._send_changes_whole()
            return
        h = self._highs
        new = self._var_map @ self._param_vec
        moved = np.flatnonzero(new != self._var_out)
        if not len(moved):
            return
        entries = self._var_rows[moved]
        values = new[moved]
        s = self._sizes
        cost_end, rhs_start, rhs_end, lower_end, upper_end = np.searchsorted(entries, self._block_edges)
        if cost_end:
            cols = entries[:cost_end].astype(np.int32)
            h.changeColsCost(len(cols), cols, values[:cost_end])
        if rhs_end > rhs_start:
            rows = (entries[rhs_start:rhs_end] - s[0]).astype(np.int32)
            rhs = values[rhs_start:rhs_end]
            h.changeRowsBounds(len(rows), rows, rhs, np.where(self._kept_eq[rows], rhs, _INF))
        lower_cols = self._lower_cols[entries[rhs_end:lower_end] - s[1]]
        upper_cols = self._upper_cols[entries[lower_end:upper_end] - s[2]]
        lower_vals = np.maximum(self._base_lower[lower_cols], values[rhs_end:lower_end])
        upper_vals = np.minimum(self._base_upper[upper_cols], values[lower_end:upper_end])
        # Each side is computed from the raw other side (before the ulp fix-up in _uncross).
        if len(lower_cols) and len(upper_cols):
            lower, upper = self._lower.copy(), self._raw_upper.copy()
            lower[lower_cols] = lower_vals
            upper[upper_cols] = upper_vals
            cols = np.union1d(lower_cols, upper_cols)
            self._send_bounds(cols, lower[cols], upper[cols])
        elif len(upper_cols):
            self._send_bounds(upper_cols, self._lower[upper_cols], upper_vals)
        elif len(lower_cols):
            self._send_bounds(lower_cols, lower_vals, self._raw_upper[lower_cols])
        self._lower[lower_cols] = lower_vals
        self._raw_upper[upper_cols] = upper_vals
        self._var_out = new
        self._out[entries] = values

    def _send_bounds(self, cols: npt.NDArray[np.integer[Any]], lower: FloatArray, upper: FloatArray) -> None:
        lower, upper = _uncross(lower, upper)
        self._highs.changeColsBounds(len(cols), cols.astype(np.int32), lower, upper)

    def _send_changes_whole(self) -> None:
        """The general path (several bound rows per column): recompute everything, send the diff."""
        numbers = self._numbers()
        h = self._highs
        last = self._loaded
        cols = np.flatnonzero(numbers.cost != last.cost).astype(np.int32)
        if len(cols):
            h.changeColsCost(len(cols), cols, numbers.cost[cols])
        cols = np.flatnonzero((numbers.lower != last.lower) | (numbers.upper != last.upper)).astype(np.int32)
        if len(cols):
            h.changeColsBounds(len(cols), cols, numbers.lower[cols], numbers.upper[cols])
        rows = np.flatnonzero(numbers.row_lower != last.row_lower).astype(np.int32)
        if len(rows):
            h.changeRowsBounds(len(rows), rows, numbers.row_lower[rows], numbers.row_upper[rows])
        self._loaded = numbers
        self._out[: self.n_cols] = numbers.cost
        self._out[self.n_cols] = numbers.constant

    def _solve(self) -> LpResult:
        self._send_changes()
        h = self._highs
        # HiGHS's time limit counts the instance's whole life, so move it on before each run.
        h.setOptionValue("time_limit", h.getRunTime() + self._time_limit_s)
        started = time.perf_counter()
        h.run()
        elapsed = time.perf_counter() - started
        status = h.getModelStatus()
        name = self._status_names.get(status)
        if name is None:
            name = self._status_names[status] = h.modelStatusToString(status)
        iterations = int(h.getInfoValue("simplex_iteration_count")[1])
        if status != highspy.HighsModelStatus.kOptimal:
            h.clearSolver()  # do not warm-start the next solve from a failed one
            return LpResult(name, False, None, float("nan"), elapsed, iterations)
        x = np.array(h.getSolution().col_value, dtype=np.float64)
        # HiGHS's objective is cost . x (no offset is loaded); CVXPY's constant term comes on top.
        objective = float(h.getInfoValue("objective_function_value")[1]) + float(self._out[self.n_cols])
        return LpResult(name, True, x, objective, elapsed, iterations)

    def set_time_limit(self, seconds: float) -> None:
        self._time_limit_s = float(seconds)

    @property
    def parameters(self) -> Sequence[cp.Parameter]:
        """The problem's parameters in the order :meth:`load_parameter_list` takes their values."""
        return [p for p, _, _ in self._param_slots]


def _uncross(lower: FloatArray, upper: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Rounding can cross a pair of equal bounds by an ulp; never let it read as infeasible."""
    crossed = lower > upper
    if crossed.any():
        upper = np.where(crossed & (lower <= upper + 1e-9), lower, upper)
    return lower, upper
