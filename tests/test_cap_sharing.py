"""A binding grid cap is shared by a stated rule: the car with less time to spare charges first.

Two cars need more than the cap can give before they leave; prices are flat and a missed target
costs the same per kWh for both, so the LP alone has no reason to prefer either. Whatever the
order of the cars in the config, and on both solve paths, the car with less slack reaches its
target and the other one takes the whole shortfall.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from controller.domain import Plan
from controller.optimizer import Planner
from controller.optimizer.sharing import PER_KWH_HOUR, SLACK_MAX_H, charge_rank_per_kwh
from controller.optimizer.vehicle_rows import DepartureInfo
from tests.test_optimizer_helpers import T0, site, snapshot, vehicle

STEPS = 48  # 12 h of 15 minutes
CAP_KW = 12.0  # one car at 11 kW plus the home


def contest(order: tuple[str, str], decompose: bool) -> Plan:
    cars = [vehicle(v, v2g=False, v2h=False, degradation_cost_per_kwh=0.0) for v in order]
    config = site(cars, import_kw=CAP_KW, horizon_hours=12, charger={"min_current_a": 0})
    leaves = {"soon": T0 + timedelta(hours=4), "late": T0 + timedelta(hours=5)}
    snap = snapshot(
        STEPS,
        [
            {
                "id": v,
                "soc_percent": 30.0,
                "plugged_in": True,
                "departure": {"at": leaves[v], "target_soc_percent": 80.0},
            }
            for v in order
        ],
        load_w=500.0,
        import_price=0.25,
        export_price=0.05,
    )
    plan = Planner(config, decompose=decompose).plan(snap)
    assert plan.solver_status == "optimal"
    return plan


@pytest.mark.parametrize("decompose", [False, True], ids=["monolithic", "decomposed"])
@pytest.mark.parametrize("order", [("soon", "late"), ("late", "soon")])
def test_the_car_that_leaves_first_charges_first_under_a_binding_cap(
    order: tuple[str, str], decompose: bool
) -> None:
    plan = contest(order, decompose)
    soon = np.asarray(plan.vehicles["soon"].power_w)
    late = np.asarray(plan.vehicles["late"].power_w)
    # The cap binds: together they never draw more than it leaves beside the home.
    assert (soon + late <= (CAP_KW - 0.5) * 1000 + 1.0).all()
    assert soon.max() > 0 and late.max() > 0
    # 30 kWh each (32.61 kWh from the grid at 92 %) in 4 and 5 h, 11.5 kW for both: "soon" takes
    # its 32.61 in the first 4 h, "late" the other 13.39 and then 11 kWh alone: 22.44 of 30 kWh.
    assert plan.vehicles["soon"].departure_shortfall_kwh == pytest.approx(0.0, abs=1e-6)
    assert plan.vehicles["late"].departure_shortfall_kwh == pytest.approx(7.56, abs=0.01)


def test_the_rank_is_the_slack_before_the_next_target() -> None:
    hours = np.arange(1, 49, dtype=np.float64) * 0.25
    due = [DepartureInfo(T0 + timedelta(hours=4), 16, 50.0)]
    rank = charge_rank_per_kwh(
        [due, due, ()],
        e0_kwh=np.array([20.0, 50.0, 20.0]),
        charge_kw=np.array([10.0, 10.0, 10.0]),
        charge_efficiency=np.array([1.0, 1.0, 1.0]),
        hours_to_step_end=hours,
    )
    # 30 kWh at 10 kW: 3 h of the 4 h; a full car: all 4 h; no target: the most.
    assert rank == pytest.approx(PER_KWH_HOUR * np.array([1.0, 4.0, SLACK_MAX_H]))
