"""The LP of a large site, solved by Dantzig-Wolfe decomposition on the rows that couple its cars.

The cars meet only in the site's rows (power balance, grid caps, pulse shares, the own-use cap,
the capacity peak): every other row holds the columns of one car. The monolithic simplex pays for
that coupling in every iteration (its cost grows with the square of the cars); here each car's
part is solved on its own and only the small site problem sees them together.

One round: the restricted master (the site's columns and rows, one convexity row per car, one
column per schedule a car has proposed) gives prices ``y`` on the site rows; every car's LP,
costed at ``c - A_site^T y``, proposes its best schedule at those prices (a few cars to a HiGHS
instance that holds their own rows only, warm from the last round); a proposal
that would lower the master's cost joins it. The Lagrangian bound ``z + sum(min reduced cost)``
proves how far the master's plan is from the optimum; rounds stop within ``GAP`` of its magnitude.

The master is feasible from the first round: an artificial column per site row (priced at
``ARTIFICIAL_COST``) covers what the first proposals cannot, so a solve cut short by its time
limit still has a plan (the best so far, with its gap) wherever the artificials are out of it.
Pure: numpy, scipy and HiGHS; nothing of the planner.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import scipy.sparse as sp

from controller.optimizer.lp_layout import INF, BoolArray, FloatArray, IndexArray, LpLayout
from controller.optimizer.lp_solve import LpResult, new_highs, run_warm_then_cold
from controller.optimizer.lp_values import Columnwise, LpNumbers, columnwise, lp_numbers, pass_columns

__all__ = ["ARTIFICIAL_COST", "GAP", "USABLE_GAP", "BlockSplit", "DecomposedLp"]

GAP = 1e-9
"""Rounds stop when the Lagrangian bound is this close to the master's cost (relative, at least 1)."""
ARTIFICIAL_COST = 1e4
"""Per unit of a site row's violation in the master: far above any price or penalty of the plan."""
CARS_PER_INSTANCE = 8
"""Cars whose own LPs share one HiGHS instance (see ``_BlockGroup``)."""
USABLE_GAP = 0.05
"""A plan cut by the time limit is used when it is proven within this of the optimum (relative):
further off, its missed targets may cost more than the fallback plan's safe schedule."""
PRICING_THREADS = min(
    4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
)
"""Car groups priced at once: HiGHS lets go of Python's lock while it solves, so the groups of a
round run on as many cores (one pool for the process, whatever the number of planners)."""
_MAX_ROUNDS = 500
_IDLE_ROUNDS = 8
"""A proposal out of the master's solution this many rounds in a row is dropped (if dear enough)."""
_PURGE_MARGIN = 1e-3
"""Relative to the objective, per car: a dropped proposal costs at least this much more than the
master's prices pay for it."""
_ARTIFICIAL_TOL = 1e-7
"""An artificial below this is out of the plan (HiGHS's own feasibility tolerance)."""


@dataclass(frozen=True, slots=True)
class BlockSplit:
    """Which columns and rows belong to one car (a block) and which to the site.

    A row is a block row when every column it holds belongs to the same car; any other row
    (several cars, or a site column) couples, and goes to the master.
    """

    n_blocks: int
    block_cols: IndexArray
    """The LP columns of all blocks, ascending."""
    block_of_col: IndexArray
    """The block of each of ``block_cols``."""
    site_cols: IndexArray
    block_rows: IndexArray
    block_of_row: IndexArray
    """The block of each of ``block_rows``."""
    link_rows: IndexArray

    @classmethod
    def of(cls, matrix: sp.csc_array, owner: IndexArray) -> BlockSplit:
        """``owner``: per LP column its block (0 .. n-1), or -1 for a site column."""
        rows = sp.csr_array(matrix)
        per_row = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
        owners = owner[rows.indices]
        low = np.full(rows.shape[0], np.iinfo(np.int64).max)
        high = np.full(rows.shape[0], -1)
        np.minimum.at(low, per_row, owners)
        np.maximum.at(high, per_row, owners)
        in_block = (low == high) & (low >= 0)
        block_cols = np.flatnonzero(owner >= 0)
        return cls(
            n_blocks=int(owner.max()) + 1 if len(block_cols) else 0,
            block_cols=block_cols,
            block_of_col=owner[block_cols],
            site_cols=np.flatnonzero(owner < 0),
            block_rows=np.flatnonzero(in_block),
            block_of_row=low[in_block],
            link_rows=np.flatnonzero(~in_block),
        )


class DecomposedLp:
    """Solves the LP of ``layout`` split by ``split``; warm across solves (the cars' LPs' bases and
    the site rows' last prices)."""

    def __init__(self, layout: LpLayout, split: BlockSplit) -> None:
        self._layout = layout
        self._split = split
        # Where the submatrices' entries sit in the whole matrix's data: a solve fills them by a
        # gather (parameter-dependent entries change between solves).
        index = layout.kept_matrix.copy()
        index.data = np.arange(index.nnz, dtype=np.float64)
        link = sp.csc_array(index[split.link_rows])
        link_blocks = sp.csc_array(link[:, split.block_cols])
        link_blocks.sort_indices()
        touches_site = np.diff(link_blocks.indptr) > 0
        self._groups = [
            _BlockGroup(index, split, cars, touches_site)
            for cars in np.array_split(np.arange(split.n_blocks), max(1, split.n_blocks // CARS_PER_INSTANCE))
        ]
        self._link_blocks = link_blocks
        self._link_blocks_data = link_blocks.data.astype(np.int64)
        self._proposal_columns = _ProposalColumns(link_blocks, split.block_of_col, split.n_blocks)
        link_site = sp.csc_array(link[:, split.site_cols])
        link_site.sort_indices()
        self._link_site = link_site
        self._link_site_data = link_site.data.astype(np.int64)
        self._prices: FloatArray | None = None
        self.rounds = 0
        """Rounds of the last solve."""
        self.gap = 0.0
        """The last solve's proven distance to the optimum, relative to its objective."""
        self.max_rounds = _MAX_ROUNDS
        """A solve that reaches it ends as one cut by its time limit."""

    # ------------------------------------------------------------------ solving

    def solve(self, param_vec: FloatArray, time_limit_s: float) -> LpResult:
        started = time.perf_counter()
        deadline = started + time_limit_s
        layout, split = self._layout, self._split
        numbers = lp_numbers(layout, param_vec)
        data = layout.kept_matrix.data.copy()
        data[layout.coef_index] = numbers.coef
        link_blocks = self._with_data(self._link_blocks, data[self._link_blocks_data])
        link_site = self._with_data(self._link_site, data[self._link_site_data])
        block_cost = numbers.cost[split.block_cols]
        for group in self._groups:
            group.load(numbers, data)
        master = _Master(split, numbers, link_site)
        n = split.n_blocks
        everyone = np.arange(n)
        # A proposal that stays out of the site rows (so the first master is feasible without
        # artificials: the site alone fits them), and the cars' answer to the last solve's
        # prices (0 on a cold start).
        first = np.empty(len(block_cost))
        if not all(_each_group(self._groups, lambda group: group.propose_still(block_cost, first))):
            return self._failed("block LP", started)
        self._add(master, link_blocks.data, block_cost, first, everyone)
        prices = self._prices if self._prices is not None else np.zeros(len(split.link_rows))
        answer = self._propose(block_cost - link_blocks.T @ prices)
        if answer is None:
            return self._failed("block LP", started)
        self._add(master, link_blocks.data, block_cost, answer, everyone)
        best: tuple[_Mix, float, float] | None = None
        status = "kTimeLimit"
        limit = self.max_rounds
        bound = -np.inf
        for self.rounds in range(1, limit + 1):
            solved = master.solve()
            if solved is None:
                return self._failed("master", started)
            lam, y, mu, z = solved
            self._prices = y
            reduced = block_cost - link_blocks.T @ y
            x = self._propose(reduced)
            if x is None:
                return self._failed("block LP", started)
            car_reduced = np.bincount(split.block_of_col, weights=reduced * x, minlength=n) - mu
            scale = max(1.0, abs(z))
            # Every round's bound holds: the best of them, not the last, is the proof.
            bound = max(bound, z + float(np.minimum(car_reduced, 0.0).sum()))
            self.gap = max(0.0, z - bound) / scale
            if master.artificials(lam) <= _ARTIFICIAL_TOL:
                best = (master.mix(lam), z, self.gap)
            joining = np.flatnonzero(car_reduced < -GAP * scale / max(1, n))
            if self.gap <= GAP or not len(joining):
                status = "kOptimal"
                break
            if time.perf_counter() >= deadline:
                break
            master.purge(lam, _PURGE_MARGIN * scale / max(1, n))
            self._add(master, link_blocks.data, block_cost, x, joining)
        elapsed = time.perf_counter() - started
        if best is None or best[2] > USABLE_GAP:
            return LpResult(status, False, None, float("nan"), elapsed, self.rounds, best[2] if best else 0.0)
        mix, z, self.gap = best
        solution = master.solution(mix, layout.n_cols)
        objective = float(numbers.cost @ solution) + numbers.constant
        return LpResult(status, True, solution, objective, elapsed, self.rounds, self.gap)

    def forget(self) -> None:
        """Start the next solve cold (after a failed one)."""
        self._prices = None
        for group in self._groups:
            group.highs.clearSolver()

    # ------------------------------------------------------------------ parts

    @staticmethod
    def _with_data(pattern: sp.csc_array, data: FloatArray) -> sp.csc_array:
        return sp.csc_array((data, pattern.indices, pattern.indptr), shape=pattern.shape)

    def _propose(self, cost: FloatArray) -> FloatArray | None:
        """Every car's best schedule at ``cost`` (None: a block LP failed)."""
        x = np.empty(len(cost))
        done = _each_group(self._groups, lambda group: group.propose(cost, x))
        return x if all(done) else None

    def _add(
        self,
        master: _Master,
        link_data: FloatArray,
        block_cost: FloatArray,
        x: FloatArray,
        cars: IndexArray,
    ) -> None:
        """``cars``' schedules in ``x`` as columns of the master (``link_data``: this solve's
        entries of the cars' columns in the site rows)."""
        split = self._split
        cost: FloatArray = np.bincount(
            split.block_of_col, weights=block_cost * x, minlength=split.n_blocks
        ).astype(np.float64)
        master.add_columns(cost[cars], self._proposal_columns.of(link_data, x, cars), cars, x)

    def _failed(self, what: str, started: float) -> LpResult:
        self.forget()
        return LpResult(
            f"error: {what}", False, None, float("nan"), time.perf_counter() - started, self.rounds
        )


class _ProposalColumns:
    """A proposal's column in the master: what the car's schedule puts into each site row, then
    1 in the car's convexity row. The entries' places are fixed by the LP's pattern, so a round
    sums them in one ``bincount`` rather than multiplying sparse matrices."""

    def __init__(self, link_blocks: sp.csc_array, block_of_col: IndexArray, n_cars: int) -> None:
        n_link = link_blocks.shape[0]
        self._n_link = n_link
        self._col = np.repeat(np.arange(link_blocks.shape[1]), np.diff(link_blocks.indptr))
        """The block column of each entry of ``link_blocks`` (in its data order)."""
        car_row, self._entry = np.unique(
            block_of_col[self._col] * n_link + link_blocks.indices, return_inverse=True
        )
        self._rows = (car_row % n_link).astype(np.int32)
        """Per (car, site row) entry, sorted by car then row: its site row."""
        self._count = np.bincount(car_row // n_link, minlength=n_cars)
        self._start = np.concatenate([[0], np.cumsum(self._count)])

    def of(self, link_data: FloatArray, x: FloatArray, cars: IndexArray) -> Columnwise:
        """The columns of ``cars``' schedules in ``x`` (``link_data``: ``link_blocks``'s values)."""
        if not len(cars):
            return np.zeros(1, dtype=np.int32), np.zeros(0, dtype=np.int32), np.zeros(0)
        summed = np.bincount(self._entry, weights=link_data * x[self._col], minlength=len(self._rows))
        count = self._count[cars]
        ends = np.cumsum(count + 1)
        indptr = np.concatenate([[0], ends]).astype(np.int32)
        # Each column's site entries (a run from the car's start), then its convexity entry.
        taken = np.repeat(self._start[cars] - (ends - count - 1), count + 1) + np.arange(ends[-1])
        convexity = ends - 1
        taken[convexity] = 0
        indices = self._rows[taken]
        indices[convexity] = self._n_link + cars
        data = summed[taken]
        data[convexity] = 1.0
        return indptr, indices, data


@cache
def _pricing_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=PRICING_THREADS, thread_name_prefix="pricing")


# A forked child has none of the pool's threads: it would wait on them for ever, so it gets a new pool.
os.register_at_fork(after_in_child=_pricing_pool.cache_clear)


def _each_group(groups: list[_BlockGroup], work: Callable[[_BlockGroup], bool]) -> list[bool]:
    """``work`` on every group (they write disjoint parts of a round's arrays), on the pool."""
    if PRICING_THREADS == 1 or len(groups) == 1:
        return [work(group) for group in groups]
    return list(_pricing_pool().map(work, groups))


class _BlockGroup:
    """Some cars' own rows in one HiGHS instance (warm from its last solve).

    A few cars share an instance: HiGHS's fixed cost per run weighs on one car's tiny LP, and its
    cost per iteration grows with the instance, so neither one car nor all of them is fastest.
    """

    def __init__(
        self, index: sp.csc_array, split: BlockSplit, cars: IndexArray, touches_site: BoolArray
    ) -> None:
        self.cols = np.flatnonzero(np.isin(split.block_of_col, cars))
        """Positions among ``split.block_cols``."""
        linked = touches_site[self.cols]
        self._linked = np.flatnonzero(linked).astype(np.int32)
        """Positions among ``cols`` of the columns in a site row: the only ones the prices move."""
        self._linked_cols = self.cols[linked]
        rows = np.flatnonzero(np.isin(split.block_of_row, cars))
        self._lp_cols = split.block_cols[self.cols]
        self._lp_rows = split.block_rows[rows]
        pattern = sp.csc_array(index[self._lp_rows][:, self._lp_cols])
        pattern.sort_indices()
        self._indptr = pattern.indptr.astype(np.int32)
        self._indices = pattern.indices.astype(np.int32)
        self._data = pattern.data.astype(np.int64)
        self.highs: Any = new_highs()
        self._lower = np.zeros(0)
        self._upper = np.zeros(0)

    def load(self, numbers: LpNumbers, data: FloatArray) -> None:
        """This solve's numbers, keeping the basis of the last one."""
        highs, cols, rows = self.highs, self._lp_cols, self._lp_rows
        basis = highs.getBasis()  # invalid before the first solve
        self._lower = numbers.lower[cols]
        self._upper = numbers.upper[cols]
        pass_columns(
            highs,
            (numbers.cost[cols], self._lower, self._upper),
            (numbers.row_lower[rows], numbers.row_upper[rows]),
            (self._indptr, self._indices, data[self._data]),
        )
        if basis.valid:
            highs.setBasis(basis)

    def propose_still(self, cost: FloatArray, x: FloatArray) -> bool:
        """As :meth:`propose`, with every column in a site row held at its bound nearest 0 (for
        the cars: no power)."""
        cols = self._linked
        lower, upper = self._lower[cols], self._upper[cols]
        still = np.clip(0.0, lower, upper)
        self.highs.changeColsBounds(len(cols), cols, still, still)
        try:
            return self.propose(cost, x)
        finally:
            self.highs.changeColsBounds(len(cols), cols, lower, upper)

    def propose(self, cost: FloatArray, x: FloatArray) -> bool:
        """These cars' best schedules at ``cost`` into ``x``; False when HiGHS failed. ``cost``
        differs from the loaded one only where prices on the site rows enter (``_linked``)."""
        highs = self.highs
        highs.changeColsCost(len(self._linked), self._linked, cost[self._linked_cols])
        if not run_warm_then_cold(highs):
            return False
        x[self.cols] = highs.getSolution().col_value
        return True


class _Master:
    """The restricted master: site columns, artificials, and the proposals' weights."""

    def __init__(self, split: BlockSplit, numbers: LpNumbers, link_site: sp.csc_array) -> None:
        self._split = split
        n_link = len(split.link_rows)
        n = split.n_blocks
        self._n_link = n_link
        self._n_site = len(split.site_cols)
        highs = self._highs = new_highs()
        highs.setOptionValue("simplex_strategy", 4)  # primal: new columns keep the basis feasible
        site = sp.csc_array(sp.vstack([link_site, sp.csc_array((n, self._n_site))]))
        site.sort_indices()
        cols, rows = split.site_cols, split.link_rows
        pass_columns(
            highs,
            (numbers.cost[cols], numbers.lower[cols], numbers.upper[cols]),
            (
                np.concatenate([numbers.row_lower[rows], np.ones(n)]),
                np.concatenate([numbers.row_upper[rows], np.ones(n)]),
            ),
            columnwise(site),
        )
        eye = sp.identity(n_link, format="csc")
        artificials = sp.csc_array(sp.vstack([sp.hstack([eye, -eye]), sp.csc_array((n, 2 * n_link))]))
        artificials.sort_indices()
        self._add(np.full(2 * n_link, ARTIFICIAL_COST), columnwise(artificials))
        self._first_proposal = self._n_site + 2 * n_link
        self._values: list[FloatArray] = []
        """Per round, every car's proposed block columns (of which the joining cars' are columns)."""
        self._car = np.zeros(0, dtype=np.int64)
        """Per proposal column (in master order): its car, its round, rounds since it was used."""
        self._round = np.zeros(0, dtype=np.int64)
        self._idle = np.zeros(0, dtype=np.int64)
        self._reduced = np.zeros(0)
        """The master's reduced costs at its last solution."""

    def _add(self, cost: FloatArray, columns: Columnwise) -> None:
        indptr, indices, data = columns
        count = len(cost)
        self._highs.addCols(
            count, cost, np.zeros(count), np.full(count, INF), len(data), indptr[:-1], indices, data
        )

    def add_columns(
        self, cost: FloatArray, columns: Columnwise, cars: IndexArray, values: FloatArray
    ) -> None:
        """Proposals of ``cars`` (their site rows and convexity rows in ``columns``), from the
        round's schedules ``values``."""
        self._add(cost, columns)
        self._car = np.concatenate([self._car, cars])
        self._round = np.concatenate([self._round, np.full(len(cars), len(self._values))])
        self._idle = np.concatenate([self._idle, np.zeros(len(cars), dtype=np.int64)])
        self._values.append(values)

    def purge(self, columns: FloatArray, margin: float) -> None:
        """Drop proposals unused for ``_IDLE_ROUNDS`` rounds that cost at least ``margin`` more than
        the master's prices pay: the master's simplex prices every column each iteration, and its
        proposals' columns are dense in the site rows. (A column near the margin would only come
        back: dropping it makes the rounds cycle.)"""
        used = columns[self._first_proposal :] > 0.0
        self._idle = np.where(used, 0, self._idle + 1)
        dear = self._reduced[self._first_proposal :] > margin
        stale = np.flatnonzero((self._idle >= _IDLE_ROUNDS) & dear)
        if not len(stale):
            return
        self._highs.deleteCols(len(stale), (stale + self._first_proposal).astype(np.int32))
        keep = np.ones(len(self._idle), dtype=bool)
        keep[stale] = False
        self._car, self._round, self._idle = self._car[keep], self._round[keep], self._idle[keep]

    def solve(self) -> tuple[FloatArray, FloatArray, FloatArray, float] | None:
        """Column values, site-row prices, convexity prices and cost; None when HiGHS failed."""
        highs = self._highs
        if not run_warm_then_cold(highs):
            return None
        solution = highs.getSolution()
        y = np.asarray(solution.row_dual, dtype=np.float64)
        self._reduced = np.asarray(solution.col_dual, dtype=np.float64)
        z = float(highs.getInfoValue("objective_function_value")[1])
        return np.asarray(solution.col_value, dtype=np.float64), y[: self._n_link], y[self._n_link :], z

    def artificials(self, columns: FloatArray) -> float:
        return float(columns[self._n_site : self._first_proposal].sum())

    def mix(self, columns: FloatArray) -> _Mix:
        """What a master solution takes of each proposal (kept apart from later purges)."""
        return _Mix(
            columns[: self._n_site].copy(), columns[self._first_proposal :].copy(), self._car, self._round
        )

    def solution(self, mix: _Mix, n_cols: int) -> FloatArray:
        """The LP's columns: the site's from the master, each car's the mix of its proposals."""
        split = self._split
        x = np.zeros(n_cols)
        x[split.site_cols] = mix.site
        blocks = np.zeros(len(split.block_cols))
        weight = np.zeros(split.n_blocks)
        for round_no in np.unique(mix.round[mix.weight > 0.0]):
            weight[:] = 0.0
            mine = mix.round == round_no
            weight[mix.car[mine]] = mix.weight[mine]
            blocks += weight[split.block_of_col] * self._values[round_no]
        x[split.block_cols] = blocks
        return x


@dataclass(frozen=True, slots=True)
class _Mix:
    """A master solution: the site columns' values and each proposal's weight, car and round."""

    site: FloatArray
    weight: FloatArray
    car: IndexArray
    round: IndexArray
