"""Re-solving a DPP CVXPY problem fast: its canonical LP, held in a warm HiGHS instance.

``problem.solve()`` re-runs several milliseconds of Python per call even when only parameter
values change. A DPP problem's canonical form is affine in the parameters, so CVXPY's own
parametric program (``get_problem_data(...)["param_prob"]``) holds, once computed, everything
needed: the cost vector, the constraint right-hand sides and the matrix entries that parameters
multiply into are sparse linear maps of the parameter vector. A re-solve is one sparse mat-vec,
the costs, bounds and matrix entries that moved sent to HiGHS, and a simplex run warm-started from
the previous basis. Rows with a single variable become column bounds, which keeps the LP small.

The CVXPY problem stays the source of truth: this module only evaluates CVXPY's canonicalisation
and reads variables back by CVXPY's own column offsets. The parts: ``lp_layout`` (the LP's shape
and the parameter map), ``lp_values`` (numbers from parameter values, and what HiGHS is sent),
``lp_solve`` (running HiGHS, reading the result).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cvxpy as cp
import numpy as np
import numpy.typing as npt

from controller.optimizer import step_shift
from controller.optimizer.decompose import BlockSplit, DecomposedLp
from controller.optimizer.lp_layout import FloatArray, IndexArray, LpLayout, NotCompilableError
from controller.optimizer.lp_solve import LpResult, StatusNames, new_highs, run
from controller.optimizer.lp_values import HighsValues

__all__ = ["CompiledLp", "LpResult", "NotCompilableError"]


class CompiledLp:
    """The canonical LP of a DPP ``problem``; :meth:`solve` takes parameter values, not the problem.

    ``time_limit_s`` bounds each solve (:meth:`set_time_limit` changes it; the planner gives each
    pass what is left of its per-plan budget); HiGHS then reports ``kTimeLimit`` and no solution is
    used.
    """

    def __init__(
        self,
        problem: cp.Problem,
        time_limit_s: float,
        blocks: Callable[[CompiledLp], IndexArray] | None = None,
    ) -> None:
        """``blocks``: for a large site, gives each column's car (-1: the site's) once the layout
        is known; the LP can then be solved by decomposition too (module ``decompose``,
        :meth:`solve`). Each way builds its solver state on its first solve."""
        layout = self._layout = LpLayout.from_problem(problem)
        self.n_cols = layout.n_cols
        self.n_rows = layout.n_rows
        self._param_vec = np.zeros(layout.n_params + 1)
        self._param_vec[layout.n_params] = 1.0  # the constant column
        self._time_limit_s = float(time_limit_s)
        self.load_from_problem()
        self._status_names: StatusNames = {}
        self._blocks = blocks(self) if blocks is not None else None
        self.decomposed: DecomposedLp | None = None
        """The decomposition, once a solve has used it."""
        self._steps_of_columns: tuple[IndexArray, IndexArray, IndexArray] | None = None
        self._step_shift: step_shift.StepShift | None = None
        self._last_x: FloatArray | None = None
        """The solution of the basis HiGHS holds (None: it holds none worth moving)."""
        self._highs: Any = None
        self._values: HighsValues | None = None

    @property
    def can_decompose(self) -> bool:
        return self._blocks is not None

    def _monolithic(self) -> tuple[Any, HighsValues]:
        """The warm HiGHS instance holding the whole LP (loaded on first use)."""
        if self._values is None:
            self._highs = new_highs()
            self._values = HighsValues(self._layout, self._param_vec)
            self._values.load(self._highs)
        return self._highs, self._values

    @property
    def _incremental(self) -> bool:
        """Re-solves send only the map entries that moved (else every number is recomputed)."""
        return self._layout.incremental

    @property
    def parameters(self) -> Sequence[cp.Parameter]:
        """The problem's parameters in the order :meth:`load_parameter_list` takes their values."""
        return [p for p, _, _ in self._layout.param_slots]

    # ------------------------------------------------------------------ variables

    def offset_of(self, variable: cp.Variable) -> int:
        """Column where ``variable`` starts (CVXPY's canonical order, column-major within it)."""
        return int(self._layout.var_id_to_col[variable.id])

    def columns_of(self, variable: cp.Variable) -> slice:
        """The columns of ``variable`` in a solution vector."""
        start = self.offset_of(variable)
        return slice(start, start + variable.size)

    def value_of(self, x: FloatArray, variable: cp.Variable) -> FloatArray:
        shaped: FloatArray = x[self.columns_of(variable)].reshape(variable.shape, order="F")
        return shaped

    # ----------------------------------------------------------------- parameters

    def load_parameter_values(self, values: Mapping[int, npt.ArrayLike]) -> None:
        """Set parameter values by parameter id (column-major, as CVXPY flattens them)."""
        vec = self._param_vec
        for param, col, size in self._layout.param_slots:
            if param.id in values:
                vec[col : col + size] = np.ravel(values[param.id], order="F")

    def load_parameter_list(self, values: Sequence[FloatArray]) -> None:
        """Set every parameter's value, in the order of :attr:`parameters` (the fast path)."""
        slots = self._layout.param_slots
        if len(values) != len(slots):
            raise ValueError(f"{len(values)} values for {len(slots)} parameters")
        vec = self._param_vec
        if self._layout.params_tile:
            np.concatenate([v.ravel(order="F") for v in values], out=vec[:-1])
            return
        for (_, col, size), value in zip(slots, values, strict=True):
            vec[col : col + size] = np.ravel(value, order="F")

    def load_from_problem(self) -> None:
        """Use the values currently set on the CVXPY parameters."""
        vec = self._param_vec
        for param, col, size in self._layout.param_slots:
            vec[col : col + size] = np.ravel(np.asarray(param.value), order="F")

    # -------------------------------------------------------------------- solving

    def know_steps(self, step: IndexArray, steps: IndexArray, stride: IndexArray) -> None:
        """Each column's step, its variable's number of steps and the columns per step (module
        ``step_shift``): :meth:`shift_steps` can then move the warm start with the plan's start."""
        self._steps_of_columns = (step, steps, stride)
        self._step_shift = None  # built on the first shift

    def shift_steps(self, steps: int) -> bool:
        """The next solve is the same LP ``steps`` steps later: move the basis HiGHS holds with it.
        True when it was moved (else the next solve starts from the basis as it is)."""
        if self._steps_of_columns is None or self._last_x is None or self._values is None or steps < 1:
            return False
        if self.n_cols < step_shift.SHIFT_FROM_COLUMNS:
            return False
        if self._step_shift is None:
            self._step_shift = step_shift.StepShift(self._layout.kept_matrix, *self._steps_of_columns)
        lower, upper = self._values.bounds
        try:
            return self._step_shift.carry(self._highs, steps, self._last_x, lower, upper)
        except Exception:  # a warm start is an optimisation: never let it cost the plan
            return False

    def set_time_limit(self, seconds: float) -> None:
        self._time_limit_s = float(seconds)

    def solve(self, decomposed: bool = False) -> LpResult:
        """Solve with the loaded parameter values, warm-starting from the previous basis (the
        monolithic simplex), or by decomposition (``decomposed``; needs ``blocks``)."""
        self._last_x = None
        if decomposed:
            return self._solve_decomposed()
        highs, values = self._monolithic()
        try:
            values.send_changes(highs, self._param_vec)
            result = run(highs, self._time_limit_s, values.objective_constant, self._status_names)
        except Exception as exc:  # a solver crash must become a fallback plan, not a dead daemon
            highs.clearSolver()
            return LpResult(f"error: {exc}", False, None, float("nan"), 0.0, 0)
        self._last_x = result.x
        return result

    def _solve_decomposed(self) -> LpResult:
        if self._blocks is None:
            raise ValueError("this LP was compiled without the cars' blocks: it cannot be decomposed")
        if self.decomposed is None:
            self.decomposed = DecomposedLp(
                self._layout, BlockSplit.of(self._layout.kept_matrix, self._blocks)
            )
        try:
            return self.decomposed.solve(self._param_vec, self._time_limit_s)
        except Exception as exc:  # as above
            self.decomposed.forget()
            return LpResult(f"error: {exc}", False, None, float("nan"), 0.0, 0)
