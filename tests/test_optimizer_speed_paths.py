"""The planner's shortcuts give the numbers of the paths they skip."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from controller.optimizer import Planner, SiteShape
from controller.optimizer.inputs import _clip_trips
from tests.test_optimizer_helpers import T0, site, snapshot, vehicle


def _clip_by_steps(
    e0: float, e_max: float, gains: np.ndarray, trip: np.ndarray, last: int
) -> tuple[np.ndarray, np.ndarray]:
    """The step loop ``_clip_trips`` runs when a cut is possible (the reference)."""
    trip = trip.copy()
    clipped = np.zeros_like(trip)
    e = e0
    for k in range(last):
        e = min(e_max, e + gains[k]) - trip[k]
        if e < 0.0:
            clipped[k] = -e
            trip[k] += e
            e = 0.0
    return trip, clipped


@pytest.mark.parametrize("seed", range(40))
def test_trips_that_fit_in_the_car_are_not_cut_and_others_are_cut_as_by_the_step_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = SiteShape.from_config(site([vehicle()]), 96, None)
    t = shape.steps
    trip = np.zeros(t)
    spans = []
    for first in sorted(rng.choice(np.arange(4, t - 8), size=2, replace=False)):
        stop = int(first) + int(rng.integers(1, 8))
        trip[first:stop] += rng.uniform(0.5, 12.0)
        spans.append((T0 + timedelta(minutes=15 * int(first)), int(first), stop))
    e0 = float(rng.uniform(0.0, 1.2) * trip.sum())  # below, near and above what the trips take
    e_max = max(e0, 54.0)
    charge_max = rng.uniform(0.0, 3.0, t) * (rng.random(t) < 0.5)
    last = max(stop for _, _, stop in spans)
    gains = shape.step_h * shape.vehicles[0].charge_efficiency * charge_max
    expected_trip, clipped = _clip_by_steps(e0, e_max, gains, trip, last)
    notes: list[str] = []
    infos = _clip_trips(shape, 0, trip, e0, e_max, charge_max, spans, notes)
    np.testing.assert_array_equal(trip, expected_trip)
    cuts = []
    for _, a, b in spans:  # overlapping trips: each cut counted once
        cuts.append(float(clipped[a:b].sum()))
        clipped[a:b] = 0.0
    assert [i.clipped_kwh for i in infos] == pytest.approx(cuts, abs=1e-12)
    assert [i.energy_kwh for i in infos] == [float(expected_trip[a:b].sum()) for _, a, b in spans]
    assert len(notes) == sum(1 for i in infos if i.clipped_kwh > 1e-6)


def test_a_planner_without_reasons_plans_the_same_numbers_with_empty_reasons() -> None:
    cfg = site([vehicle(), vehicle("ev2")])
    leave = T0 + timedelta(hours=3)
    cars = [
        {
            "id": "ev",
            "soc_percent": 30,
            "plugged_in": True,
            "departure": {"at": leave, "target_soc_percent": 80},
        },
        {"id": "ev2", "soc_percent": 70, "plugged_in": True},
    ]
    snap = snapshot(96, cars, import_price=[0.1 + 0.3 * (k % 24 > 12) for k in range(96)])
    full = Planner(cfg).plan(snap)
    lean = Planner(cfg, explain=False).plan(snap)
    assert all(v.reason for v in full.vehicles.values())
    assert all(v.reason == "" for v in lean.vehicles.values())
    for vid, planned in full.vehicles.items():
        assert lean.vehicles[vid].power_w == planned.power_w
        assert lean.vehicles[vid].soc_percent == planned.soc_percent
        assert lean.vehicles[vid].departure_shortfall_kwh == planned.departure_shortfall_kwh
    assert (lean.grid_import_w, lean.grid_export_w, lean.notes) == (
        full.grid_import_w,
        full.grid_export_w,
        full.notes,
    )
    assert lean.objective == full.objective
