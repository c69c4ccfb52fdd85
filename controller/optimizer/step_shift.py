"""Carrying a warm start over to a plan that starts later: the last basis moved by whole steps.

A receding-horizon plan re-solves the same LP with its steps one grid step later. HiGHS keeps the
basis of the last solve, but that basis holds the last plan's decisions at the last plan's step
indices: every change of direction sits one step off, and the simplex spends its iterations moving
them back. Moved by the steps the plan's start moved (each column and row takes the status of its
twin that many steps later; the last steps, which have no twin, repeat the last one), the basis
describes the last plan's schedule as it continues, and a re-plan whose world held to the forecast
needs no iteration at all.

Columns: every variable's last axis is the step (``ScheduleModel``), column-major, so a column's
twin is ``stride`` columns on per step. Rows: a row's twin is the row whose columns are its
columns' twins, found by a hash of the column set (integer weights summed exactly in float64).
What has no twin keeps its own status. The result is made a consistent basis (as many basic
variables as rows) before HiGHS gets it; a basis that is poor or even singular only costs
iterations (HiGHS repairs a singular one with slacks), never the optimum.
"""

from __future__ import annotations

from typing import Any

import highspy
import numpy as np
import scipy.sparse as sp

from controller.optimizer.lp_layout import FloatArray, IndexArray

__all__ = ["SHIFT_FROM_COLUMNS", "StepShift"]

SHIFT_FROM_COLUMNS = 5000
"""Below this many LP columns the basis is not moved: moving it costs about 0.15 ms (highspy takes a
basis as lists, one Python object per status), which is what it saves on a small LP. Measured on
the optimiser benchmark's cars re-planned every 15 minutes (``plan()`` mean, off -> on): 1 car
0.83 -> 0.86 ms, 3 cars 1.54 -> 1.62 ms, 5 cars (3,300 columns) 2.38 -> 2.37 ms, 10 cars
(6,444 columns) 6.94 -> 6.20 ms, 50 cars 69 -> 57 ms; the simulated year (1 car, 1,950 columns)
gained nothing."""

_STATUS = np.array(
    [
        highspy.HighsBasisStatus.kLower,
        highspy.HighsBasisStatus.kBasic,
        highspy.HighsBasisStatus.kUpper,
        highspy.HighsBasisStatus.kZero,
    ],
    dtype=object,
)
_LOWER, _BASIC, _UPPER, _ZERO = (np.int8(code) for code in range(4))
_AT_BOUND = 1e-9
_HASH_WEIGHT_BELOW = 2**36
"""Row hashes sum one weight per entry: below 2^36, rows of up to 2^17 entries sum exactly."""


class StepShift:
    """The twin map of one LP (``matrix``: its rows, any sparse format) for shifts of whole steps.

    ``step``, ``steps`` and ``stride`` describe each column: its step (-1: not on the step grid),
    the number of steps of its variable, and how many columns one step on is.
    """

    def __init__(self, matrix: sp.sparray, step: IndexArray, steps: IndexArray, stride: IndexArray) -> None:
        rows = sp.csr_array(matrix)
        self._pattern = sp.csr_array((np.ones(rows.nnz), rows.indices, rows.indptr), shape=rows.shape)
        self._step = np.asarray(step, dtype=np.int64)
        self._steps = np.asarray(steps, dtype=np.int64)
        self._stride = np.asarray(stride, dtype=np.int64)
        weights = np.random.default_rng(0).integers(1, _HASH_WEIGHT_BELOW, size=rows.shape[1])
        self._weight = weights.astype(np.float64)
        row_hash = self._pattern @ self._weight
        self._by_hash = np.argsort(row_hash, kind="stable")
        self._sorted_hash = row_hash[self._by_hash]
        self._maps: dict[int, tuple[IndexArray, IndexArray]] = {}

    def twins(self, steps: int) -> tuple[IndexArray, IndexArray]:
        """Per column and per row of the LP after a shift by ``steps``: its twin's index before it."""
        if steps not in self._maps:
            col = np.arange(len(self._step))
            timed = self._step >= 0
            later = np.minimum(self._step[timed] + steps, self._steps[timed] - 1)
            col[timed] += (later - self._step[timed]) * self._stride[timed]
            twin_hash = self._pattern @ self._weight[col]
            at = np.searchsorted(self._sorted_hash, twin_hash).clip(0, len(twin_hash) - 1)
            found = self._sorted_hash[at] == twin_hash
            row = np.where(found, self._by_hash[at], np.arange(len(twin_hash)))
            self._maps[steps] = (col, row)
        return self._maps[steps]

    def carry(self, highs: Any, steps: int, x: FloatArray, lower: FloatArray, upper: FloatArray) -> bool:
        """Give ``highs`` its basis moved by ``steps``; ``x`` is the solution of that basis and
        ``lower``/``upper`` the column bounds it was solved with. False: HiGHS had no basis or
        refused it (the next solve then starts from what it had)."""
        status, basic = highs.getBasicVariables()
        if status != highspy.HighsStatus.kOk or len(basic) != self._pattern.shape[0]:
            return False
        # A nonbasic column sits at a finite bound (or at 0 when it has none).
        home = np.where(lower > -np.inf, _LOWER, np.where(upper < np.inf, _UPPER, _ZERO))
        col_code = np.where(x >= upper - _AT_BOUND, _UPPER, home)
        col_code[basic[basic >= 0]] = _BASIC
        row_code = np.zeros(len(basic), dtype=np.int8)  # _LOWER
        row_code[-1 - basic[basic < 0]] = _BASIC
        col_twin, row_twin = self.twins(steps)
        cols, rows = col_code[col_twin], row_code[row_twin]
        _as_many_basic_as_rows(cols, rows, home)
        basis = highspy.HighsBasis()
        basis.col_status = _STATUS[cols].tolist()
        basis.row_status = _STATUS[rows].tolist()
        return bool(highs.setBasis(basis) == highspy.HighsStatus.kOk)


def _as_many_basic_as_rows(cols: IndexArray, rows: IndexArray, home: IndexArray) -> None:
    """Repeated last steps can leave a basic variable too many or too few: take the surplus from
    the last basic columns (to their ``home`` bound), fill a lack with the last rows' slacks."""
    surplus = int(np.count_nonzero(cols == _BASIC) + np.count_nonzero(rows == _BASIC)) - len(rows)
    if surplus > 0:
        demoted = np.flatnonzero(cols == _BASIC)[-surplus:]
        cols[demoted] = home[demoted]
    elif surplus < 0:
        rows[np.flatnonzero(rows != _BASIC)[surplus:]] = _BASIC
