"""The schedule optimiser: a CVXPY LP that trades V2G/V2H/V2L against reserved driving range.

Public surface::

    planner = Planner(config)            # once per site shape (config + step count)
    plan = planner.plan(snapshot)        # every interval; -> controller.domain.Plan
    plan = plan_foresight(config, snap)  # one solve over a long horizon (simulator)

See docs/optimizer.md for the model, the snapshot format and the performance figures.
"""

from controller.optimizer.inputs import PlanInputs, SnapshotError
from controller.optimizer.model import ScheduleModel
from controller.optimizer.planner import Planner, PlanTimings, plan_foresight
from controller.optimizer.shape import PENALTIES, Penalties, SiteShape, VehicleSpec

__all__ = [
    "PENALTIES",
    "Penalties",
    "PlanInputs",
    "PlanTimings",
    "Planner",
    "ScheduleModel",
    "SiteShape",
    "SnapshotError",
    "VehicleSpec",
    "plan_foresight",
]
