"""Where every number of a DPP problem's canonical LP comes from (see ``compiled``).

CVXPY's parametric program is split, once, into the constraint matrix HiGHS holds and one sparse
map from the parameter vector to every cost, right-hand side, bound and parameter-dependent matrix
entry a solve needs. Rows with a single variable become column bounds, which keeps the LP small; a
row with a parameter-dependent entry always stays a row, and the entry stays in the matrix's
pattern whatever its value (HiGHS is told each value that moves).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import highspy
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from cvxpy.reductions.dcp2cone.cone_matrix_stuffing import ParamConeProg

__all__ = ["BoolArray", "FloatArray", "IndexArray", "LpLayout", "NotCompilableError", "ParamSlot"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IndexArray = npt.NDArray[np.integer[Any]]
ParamSlot = tuple[cp.Parameter, int, int]
"""A parameter, where its entries start in the parameter vector, and how many there are."""
INF = highspy.kHighsInf


class NotCompilableError(ValueError):
    """The problem is not a DPP linear program with parameter values set."""


@dataclass(frozen=True, eq=False, slots=True)
class LpLayout:
    """The canonical LP's shape and the map from parameter values to its numbers.

    The map's output is, in blocks: the costs (``n_cols``) and the objective constant (1), the
    kept rows' right-hand sides, the lower-bound rows, the upper-bound rows, the parameter-dependent
    matrix entries, then CVXPY's own bound tensors where it has them; ``block_ends`` holds where
    each block ends.
    """

    n_cols: int
    n_params: int
    """Entries of the parameter vector, without its trailing constant 1."""
    var_id_to_col: Mapping[int, int]
    param_slots: list[ParamSlot]
    """In the order of their entries in the parameter vector."""
    params_tile: bool
    """The slots tile the vector in order: one concatenate fills it."""
    kept_matrix: sp.csc_array
    """The constraint rows with more than one variable: what HiGHS holds as rows. Its
    parameter-dependent entries are stored (as 0) whatever their value; see ``coef_index``."""
    coef_rows: npt.NDArray[np.int32]
    """Kept row of each parameter-dependent matrix entry (their values: the map's ``coef`` block)."""
    coef_cols: npt.NDArray[np.int32]
    coef_index: IndexArray
    """Where each parameter-dependent entry sits in ``kept_matrix.data``."""
    kept_eq: BoolArray
    """Which kept rows are equalities (the rest are ``>= 0``)."""
    base_lower: FloatArray
    base_upper: FloatArray
    lower_cols: IndexArray
    """The column each lower-bound row of the map bounds."""
    upper_cols: IndexArray
    lower_unique: bool
    """At most one lower-bound row per column."""
    upper_unique: bool
    lower_tensor: bool
    """CVXPY's own parametric lower bounds (``lb_tensor``) are in the map."""
    upper_tensor: bool
    value_map: sp.csr_array
    block_ends: npt.NDArray[np.intp]
    var_rows: IndexArray
    """The rows of ``value_map`` that read a parameter: only they can change between solves."""
    var_map: sp.csr_array
    """``value_map`` restricted to ``var_rows``."""
    block_edges: npt.NDArray[np.intp]
    """Where each block starts among the map's rows: cost, constant, rhs, lower, upper, coef."""
    incremental: bool
    """With at most one bound row per column, a changed bound entry fixes its column alone."""

    @property
    def n_rows(self) -> int:
        return int(self.kept_matrix.shape[0])

    @classmethod
    def from_problem(cls, problem: cp.Problem) -> LpLayout:
        """Raises NotCompilableError unless the problem is a DPP LP with parameter values set."""
        prog = _canonical_program(problem)
        n = prog.x.size
        n_eq = prog.cone_dims.zero
        m = n_eq + prog.cone_dims.nonneg
        n_params = prog.total_param_size
        slots = _param_slots(prog)
        tensor = _SplitTensor.of(prog, n, m, n_params)
        bounds = _BoundRows.of(tensor.matrix, tensor.offset, n_eq, tensor.coef_rows)
        base_lower = np.full(n, -INF) if prog.lower_bounds is None else np.asarray(prog.lower_bounds, float)
        base_upper = np.full(n, INF) if prog.upper_bounds is None else np.asarray(prog.upper_bounds, float)
        extra = []
        lower_tensor = upper_tensor = False
        if prog.lb_tensor is not None:
            extra.append(sp.csr_array(prog.lb_tensor))
            lower_tensor = True
        if prog.ub_tensor is not None:
            extra.append(sp.csr_array(prog.ub_tensor))
            upper_tensor = True
        lower_cols = bounds.var[bounds.as_lower]
        upper_cols = bounds.var[bounds.as_upper]
        lower_unique = len(np.unique(lower_cols)) == len(lower_cols)
        upper_unique = len(np.unique(upper_cols)) == len(upper_cols)

        # One sparse map from the parameter vector to every number a solve needs.
        kept = bounds.kept
        blocks = [
            sp.csr_array(prog.q),
            -tensor.offset[kept],
            bounds.bound_map[bounds.as_lower],
            bounds.bound_map[bounds.as_upper],
            tensor.coef_map,
            *extra,
        ]
        block_ends = np.cumsum([b.shape[0] for b in blocks])
        value_map = sp.csr_array(sp.vstack(blocks, format="csr"))
        # Only rows of the map that read a parameter can change between solves; a re-solve
        # evaluates those alone and sends HiGHS only the entries whose value moved.
        reads_param = np.diff(sp.csr_array(value_map[:, :n_params]).indptr) > 0
        var_rows = np.flatnonzero(reads_param)
        kept_matrix, coef_rows, coef_index = _kept_matrix(tensor, kept)
        return cls(
            n_cols=n,
            n_params=n_params,
            var_id_to_col=prog.var_id_to_col,
            param_slots=slots,
            params_tile=_tiles(slots, n_params),
            kept_matrix=kept_matrix,
            coef_rows=coef_rows,
            coef_cols=tensor.coef_cols.astype(np.int32),
            coef_index=coef_index,
            kept_eq=kept < n_eq,
            base_lower=base_lower,
            base_upper=base_upper,
            lower_cols=lower_cols,
            upper_cols=upper_cols,
            lower_unique=lower_unique,
            upper_unique=upper_unique,
            lower_tensor=lower_tensor,
            upper_tensor=upper_tensor,
            value_map=value_map,
            block_ends=block_ends,
            var_rows=var_rows,
            var_map=sp.csr_array(value_map[var_rows]),
            block_edges=np.array([n, *block_ends[:5]]),
            incremental=lower_unique and upper_unique and not lower_tensor and not upper_tensor,
        )


def _canonical_program(problem: cp.Problem) -> ParamConeProg:
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
    return prog


def _param_slots(prog: ParamConeProg) -> list[ParamSlot]:
    return sorted(
        (
            (param, prog.param_id_to_col[param.id], param.size)
            for param in prog.parameters
            if param.id in prog.param_id_to_col
        ),
        key=lambda slot: slot[1],
    )


def _tiles(slots: list[ParamSlot], n_params: int) -> bool:
    """Slots that tile the vector in order can be filled with one concatenate."""
    ends = [col + size for _, col, size in slots]
    starts = [col for _, col, _ in slots]
    return starts == [0, *ends[:-1]] and (not ends or ends[-1] == n_params)


@dataclass(frozen=True, slots=True)
class _SplitTensor:
    """CVXPY's tensor as the constant part of the matrix A (m x n), the parameter-dependent entries
    of A, and the parametric offset b(params).

    The tensor's rows are the column-major entries of the m x (n + 1) matrix [A | b]; its columns
    are the parameter vector's entries (the last one the constant 1).
    """

    matrix: sp.csr_array
    """A without its parameter-dependent entries (zeros removed)."""
    coef_rows: IndexArray
    """Row (of the m) and column of each parameter-dependent entry, in column-major order."""
    coef_cols: IndexArray
    coef_map: sp.csr_array
    """Per parameter-dependent entry, the map from the parameter vector to its value."""
    offset: sp.csr_array

    @classmethod
    def of(cls, prog: ParamConeProg, n: int, m: int, n_params: int) -> _SplitTensor:
        tensor = sp.coo_array(prog.A)
        rows, cols, vals = tensor.row, tensor.col, tensor.data
        in_matrix = rows < n * m
        # An entry is parameter-dependent when any parameter reads into it; its constant part (if
        # any) then goes into its map too, so that the map gives the whole value.
        positions = np.unique(rows[in_matrix & (cols != n_params)])
        in_coef = in_matrix & np.isin(rows, positions)
        fixed = in_matrix & ~in_coef
        matrix = sp.csr_array((vals[fixed], (rows[fixed] % m, rows[fixed] // m)), shape=(m, n))
        matrix.sum_duplicates()
        matrix.eliminate_zeros()  # a stored zero must not make a row look like a bound
        coef_map = sp.csr_array(
            (vals[in_coef], (np.searchsorted(positions, rows[in_coef]), cols[in_coef])),
            shape=(len(positions), n_params + 1),
        )
        coef_map.sum_duplicates()
        offset = sp.csr_array(
            (vals[~in_matrix], (rows[~in_matrix] - n * m, cols[~in_matrix])), shape=(m, n_params + 1)
        )
        return cls(matrix, positions % m, positions // m, coef_map, offset)


def _kept_matrix(
    tensor: _SplitTensor, kept: IndexArray
) -> tuple[sp.csc_array, npt.NDArray[np.int32], IndexArray]:
    """The kept rows with the parameter-dependent entries in the pattern (stored as 0), the kept
    row of each such entry and its place in the matrix's ``data``."""
    kept_row = np.full(tensor.matrix.shape[0], -1, dtype=np.int64)
    kept_row[kept] = np.arange(len(kept))
    fixed = sp.coo_array(tensor.matrix[kept])
    coef_rows = kept_row[tensor.coef_rows]
    matrix = sp.csc_array(
        (
            np.concatenate([fixed.data, np.zeros(len(coef_rows))]),
            (np.concatenate([fixed.row, coef_rows]), np.concatenate([fixed.col, tensor.coef_cols])),
        ),
        shape=(len(kept), tensor.matrix.shape[1]),
    )
    matrix.sort_indices()
    # Entries in column-major order: (column, row) keys ascend along ``data``.
    keys = np.repeat(np.arange(matrix.shape[1], dtype=np.int64), np.diff(matrix.indptr)) * len(kept)
    keys += matrix.indices
    coef_index = np.searchsorted(keys, tensor.coef_cols.astype(np.int64) * len(kept) + coef_rows)
    return matrix, coef_rows.astype(np.int32), coef_index


@dataclass(frozen=True, slots=True)
class _BoundRows:
    """Rows a*x_j + b >= 0 (or == 0) are bounds on x_j; the rest go to HiGHS as rows."""

    kept: IndexArray
    var: IndexArray
    """The column of each single-variable row."""
    as_lower: BoolArray
    as_upper: BoolArray
    bound_map: sp.csr_array
    """Per single-variable row, the map from the parameter vector to its bound."""

    @classmethod
    def of(cls, matrix: sp.csr_array, offset: sp.csr_array, n_eq: int, coef_rows: IndexArray) -> _BoundRows:
        """``matrix`` without its parameter-dependent entries; ``coef_rows``: the rows that have one
        (never a bound, whatever the entry's value)."""
        nnz_per_row = np.diff(matrix.indptr)
        always_kept = np.zeros(len(nnz_per_row), dtype=bool)
        always_kept[coef_rows] = True
        single = np.flatnonzero((nnz_per_row == 1) & ~always_kept)
        coeff = matrix.data[matrix.indptr[single]]
        is_eq = single < n_eq
        return cls(
            kept=np.flatnonzero((nnz_per_row != 1) | always_kept),
            var=matrix.indices[matrix.indptr[single]],
            as_lower=is_eq | (coeff > 0),
            as_upper=is_eq | (coeff < 0),
            bound_map=sp.diags_array(-1.0 / coeff) @ offset[single],  # x_j = -b / a at the bound
        )
