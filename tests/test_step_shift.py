"""A plan that starts whole steps later re-solves warm from the last basis moved with it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from controller.config import SiteConfig
from controller.optimizer import Planner, step_shift
from controller.optimizer.compiled import CompiledLp
from controller.optimizer.step_shift import _BASIC, _LOWER, _UPPER, StepShift, _as_many_basic_as_rows
from controller.snapshot import Snapshot
from tests.test_capacity_tariff import with_tariff
from tests.test_optimizer_helpers import T0, site, snapshot, vehicle

STEP = timedelta(minutes=15)
DEFAULT_SHIFT_FROM_COLUMNS = step_shift.SHIFT_FROM_COLUMNS


@pytest.fixture(autouse=True)
def _move_any_basis(monkeypatch: pytest.MonkeyPatch) -> None:
    """These sites are small: move the basis whatever the LP's size (the size gate has its test)."""
    monkeypatch.setattr(step_shift, "SHIFT_FROM_COLUMNS", 0)


def _world(k: int, steps: int = 96) -> Snapshot:
    """The site ``k`` steps after T0: the same day-night prices and load as time moves on, two
    cars that leave in the morning (one with a pulse below its charger's minimum at night)."""
    hours = (np.arange(steps) + k) * 0.25 + 16.0
    night = ((hours % 24) < 6) | ((hours % 24) >= 23)
    price = np.where(night, 0.12, 0.34) + 0.05 * np.sin(hours / 3.0)
    load_w = 400.0 + 900.0 * ((hours % 24) > 17) * ((hours % 24) < 22)
    leave = T0 + timedelta(hours=16)
    cars = [
        {
            "id": "ev",
            "soc_percent": 35,
            "plugged_in": True,
            "departure": {"at": leave, "target_soc_percent": 80},
        },
        {"id": "ev2", "soc_percent": 70, "plugged_in": True},
    ]
    return snapshot(
        steps, cars, time=T0 + k * STEP, load_w=load_w, import_price=price, export_price=0.6 * price
    )


def _objectives(planner: Planner, snaps: list[Snapshot]) -> tuple[list[float], list[int], list[int]]:
    objectives, iterations, shifts = [], [], []
    for snap in snaps:
        plan = planner.plan(snap)
        assert plan.objective is not None and planner.last_result is not None
        objectives.append(plan.objective)
        iterations.append(planner.last_result.iterations)
        shifts.append(planner.path.last_shift_steps)
    return objectives, iterations, shifts


def _unshifted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CompiledLp, "shift_steps", lambda self, steps: False)


def _config() -> SiteConfig:
    return site([vehicle(), vehicle("ev2")])


def test_a_plan_one_step_later_starts_from_the_moved_basis_and_reaches_the_same_optimum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The world follows its forecast, so the plan one step on continues the last one: the moved
    # basis is (almost) optimal at once, while the unmoved one needs its changes moved back.
    snaps = [_world(k) for k in range(8)]
    moved, moved_iterations, shifts = _objectives(Planner(_config()), snaps)
    assert shifts == [0] + [1] * 7
    fresh = [Planner(_config()).plan(s).objective for s in snaps]
    assert moved == pytest.approx(fresh, rel=1e-9)
    _unshifted(monkeypatch)
    unmoved, unmoved_iterations, _ = _objectives(Planner(_config()), snaps)
    assert unmoved == pytest.approx(fresh, rel=1e-9)
    assert sum(moved_iterations[1:]) < sum(unmoved_iterations[1:]) / 2


def test_only_a_start_whole_steps_later_and_within_the_horizon_moves_the_basis() -> None:
    planner = Planner(site([vehicle(), vehicle("ev2")], horizon_hours=6))
    steps = planner.steps
    later = [_world(k, steps) for k in (0, 2, 2)]
    same_step = snapshot(
        steps,
        [{"id": "ev", "soc_percent": 50, "plugged_in": True}],
        time=T0 + 2 * STEP + timedelta(minutes=7),
    )
    back = _world(1, steps)
    beyond = _world(1 + steps, steps)
    _, _, shifts = _objectives(planner, [*later, same_step, back, beyond, _world(2 + steps, steps)])
    assert shifts == [0, 2, 0, 0, 0, 0, 1]


def test_the_moved_basis_serves_a_capacity_tariff_and_a_partly_elapsed_first_step() -> None:
    config = with_tariff(site([vehicle()], horizon_hours=8, import_kw=25))
    steps = Planner(config).steps
    snaps = [_world(k, steps) for k in range(5)]
    snaps = [
        s.model_copy(update={"vehicles": s.vehicles[:1], "time": s.time + timedelta(minutes=4)})
        for s in snaps
    ]
    moved, _, shifts = _objectives(Planner(config), snaps)
    assert shifts == [0, 1, 1, 1, 1]
    assert moved == pytest.approx([Planner(config).plan(s).objective for s in snaps], rel=1e-9)


def _columns_of(planner: Planner, name: str) -> Any:
    assert planner.model is not None and planner._lp is not None
    return planner._lp.columns_of(getattr(planner.model, name))


def test_each_column_and_row_takes_the_status_of_its_twin_steps_later() -> None:
    planner = Planner(site([vehicle(), vehicle("ev2")], horizon_hours=4))
    planner.plan(_world(0, planner.steps))
    planner.plan(_world(1, planner.steps))  # the first shift builds the twin map
    lp, model = planner._lp, planner.model
    assert lp is not None and model is not None and lp._step_shift is not None
    col_twin, row_twin = lp._step_shift.twins(2)
    t = planner.steps
    charge = np.arange(lp.n_cols)[_columns_of(planner, "charge_kw")].reshape((2, t), order="F")
    # Car 1 at step s takes car 1 at step s + 2; the last two steps repeat the last step.
    assert col_twin[charge[1, 3]] == charge[1, 5]
    assert col_twin[charge[0, t - 2]] == charge[0, t - 1] == col_twin[charge[0, t - 1]]
    imports = np.arange(lp.n_cols)[_columns_of(planner, "import_kw")]
    assert col_twin[imports[0]] == imports[2]
    matrix = lp._layout.kept_matrix.tocsr()
    moved = 0
    for row in range(lp.n_rows):
        cols = set(matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]].tolist())
        twin = int(row_twin[row])
        twin_cols = set(matrix.indices[matrix.indptr[twin] : matrix.indptr[twin + 1]].tolist())
        if twin != row:
            assert twin_cols == {int(col_twin[c]) for c in cols}
            moved += 1
    # The energy balance of each car, the site's balance and caps, pulses and churn move; what
    # has no twin (the first step's balance reads the energy now, the last steps) keeps its own.
    assert moved > 0.8 * lp.n_rows


def test_a_basis_with_a_basic_variable_too_many_or_too_few_is_evened_out_at_its_end() -> None:
    home = np.array([_LOWER, _UPPER, _LOWER, _LOWER])
    cols = np.array([_BASIC, _BASIC, _BASIC, _LOWER])
    rows = np.array([_BASIC, _LOWER])
    _as_many_basic_as_rows(cols, rows, home)  # 4 basic for 2 rows: the last two basic columns go
    assert cols.tolist() == [_BASIC, _UPPER, _LOWER, _LOWER] and rows.tolist() == [_BASIC, _LOWER]
    cols = np.array([_LOWER, _LOWER, _LOWER, _LOWER])
    rows = np.array([_LOWER, _LOWER])
    _as_many_basic_as_rows(cols, rows, home)  # none basic: the rows' slacks, last first
    assert rows.tolist() == [_BASIC, _BASIC]


def test_a_step_shift_on_a_tiny_lp_maps_rows_by_their_columns() -> None:
    # Two variables over three steps (x column-major 2 per step, y one per step); rows: x0+x1 per
    # step and y[s] - y[s-1].
    import scipy.sparse as sp

    x = [[0, 1], [2, 3], [4, 5]]
    y = [6, 7, 8]
    rows = [[*x[s]] for s in range(3)] + [[y[s], y[s - 1]] for s in (1, 2)]
    matrix = sp.lil_array((len(rows), 9))
    for r, cols in enumerate(rows):
        for c in cols:
            matrix[r, c] = 1.0
    step = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2])
    shift = StepShift(sp.csr_array(matrix), step, np.full(9, 3), np.array([2] * 6 + [1] * 3))
    col_twin, row_twin = shift.twins(1)
    assert col_twin.tolist() == [2, 3, 4, 5, 4, 5, 7, 8, 8]
    assert row_twin.tolist() == [1, 2, 2, 4, 4]


class _FirstRunCut:
    """A real HiGHS instance whose first run is cut: by an iteration limit of 1 (a failure that is
    not the time limit), or by a time limit already passed."""

    def __init__(self, highs: Any, cut: str) -> None:
        self._highs = highs
        self._cut = cut
        self.runs = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._highs, name)

    def setOptionValue(self, name: str, value: Any) -> Any:
        if name == "time_limit" and self._cut == "time" and self.runs == 0:
            value = 0.0
        return self._highs.setOptionValue(name, value)

    def run(self) -> Any:
        limit = 1 if self._cut == "iterations" and self.runs == 0 else 1_000_000
        self._highs.setOptionValue("simplex_iteration_limit", limit)
        self.runs += 1
        return self._highs.run()


def _loaded_highs() -> tuple[Any, float]:
    """A HiGHS instance holding a planner's LP, cold, and that LP's optimum."""
    planner = Planner(_config())
    plan = planner.plan(_world(0))
    assert planner._lp is not None and planner._lp._values is not None and plan.objective is not None
    highs = planner._lp._highs
    highs.clearSolver()
    return highs, plan.objective - planner._lp._values.objective_constant


def test_a_solve_that_fails_short_of_its_time_limit_runs_once_more_from_scratch() -> None:
    from controller.optimizer.lp_solve import run

    highs, optimum = _loaded_highs()
    cut = _FirstRunCut(highs, "iterations")
    result = run(cut, 10.0, 0.0, {})
    assert cut.runs == 2 and result.optimal
    assert result.objective == pytest.approx(optimum, rel=1e-9)
    assert result.iterations > 100  # both runs counted; the second started cold


def test_a_solve_cut_by_its_time_limit_is_not_run_again() -> None:
    import highspy

    from controller.optimizer.lp_solve import _TIME_LIMIT, run

    assert highs_name(highspy.HighsModelStatus.kTimeLimit) == _TIME_LIMIT
    highs, _ = _loaded_highs()
    cut = _FirstRunCut(highs, "time")
    result = run(cut, 10.0, 0.0, {})
    assert cut.runs == 1 and not result.optimal and result.status == _TIME_LIMIT


def highs_name(status: Any) -> str:
    from controller.optimizer.lp_solve import new_highs

    return str(new_highs().modelStatusToString(status))


@pytest.mark.parametrize("part", ["master", "cars"])
def test_a_decomposed_plan_whose_warm_start_fails_solves_that_part_again_from_scratch(
    monkeypatch: pytest.MonkeyPatch, part: str
) -> None:
    from controller.optimizer import decompose

    cut: list[_FirstRunCut] = []

    def cut_first_run(init: Any) -> Any:
        def wrapped(self: Any, *args: Any) -> None:
            init(self, *args)
            name = "_highs" if part == "master" else "highs"
            cut.append(_FirstRunCut(getattr(self, name), "iterations"))
            setattr(self, name, cut[-1])

        return wrapped

    owner = decompose._Master if part == "master" else decompose._BlockGroup
    monkeypatch.setattr(owner, "__init__", cut_first_run(owner.__init__))
    from benchmarks.bench_optimizer import World, site_config

    config, snap = site_config(12), World(12, seed=5).snapshot(0)
    plan = Planner(config, decompose=True, time_limit_s=60.0).plan(snap)
    assert cut and cut[0].runs >= 2
    assert plan.solver_status == "optimal" and plan.objective is not None
    assert plan.objective == pytest.approx(Planner(config).plan(snap).objective, rel=1e-6)


def test_the_basis_is_moved_only_for_an_lp_large_enough_for_it_to_pay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks.bench_optimizer import World, site_config

    monkeypatch.setattr(step_shift, "SHIFT_FROM_COLUMNS", DEFAULT_SHIFT_FROM_COLUMNS)
    small = Planner(_config())
    _, _, shifts = _objectives(small, [_world(k) for k in range(3)])
    assert small._lp is not None and small._lp.n_cols < DEFAULT_SHIFT_FROM_COLUMNS and shifts == [0, 0, 0]
    world = World(12, seed=2)
    fleet = Planner(site_config(12))
    snaps = []
    for k in range(3):
        snaps.append(world.snapshot(15 * k))
        world.drift()
    _, _, shifts = _objectives(fleet, snaps)
    assert fleet._lp is not None and fleet._lp.n_cols >= DEFAULT_SHIFT_FROM_COLUMNS and shifts == [0, 1, 1]
