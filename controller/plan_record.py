"""A Plan as JSON: how the store keeps it and ``v2x plan --json`` prints it.

W rounded to 0.1 W, SoC to 0.001 %, times ISO 8601 UTC with ``Z`` (plans stored before with
``+00:00`` are still read). A stored plan that does not validate raises ``ValueError``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field

from controller.domain import BatteryPlan, Plan, VehiclePlan
from controller.site_records import StoredRecord, UtcTime

__all__ = ["BatteryPlanRecord", "PlanRecord", "VehiclePlanRecord", "plan_from_dict", "plan_to_dict"]


class VehiclePlanRecord(StoredRecord):
    reason: str
    current_power_w: float = 0.0
    departure_shortfall_kwh: float = 0.0
    throughput_kwh: float = 0.0
    power_w: list[float]
    soc_percent: list[float]
    v2l_power_w: list[float] = Field(default_factory=list)

    @classmethod
    def from_plan(cls, plan: VehiclePlan) -> VehiclePlanRecord:
        return cls(
            reason=plan.reason,
            current_power_w=round(plan.current_power_w, 1),
            departure_shortfall_kwh=round(plan.departure_shortfall_kwh, 4),
            throughput_kwh=round(plan.throughput_kwh, 4),
            power_w=[round(p, 1) for p in plan.power_w],
            soc_percent=[round(s, 3) for s in plan.soc_percent],
            v2l_power_w=[round(p, 1) for p in plan.v2l_power_w],
        )

    def to_plan(self, vehicle_id: str) -> VehiclePlan:
        return VehiclePlan(
            vehicle_id,
            tuple(self.power_w),
            tuple(self.soc_percent),
            self.reason,
            self.departure_shortfall_kwh,
            self.throughput_kwh,
            tuple(self.v2l_power_w),
        )


class BatteryPlanRecord(StoredRecord):
    controlled: bool
    reason: str = ""
    power_w: list[float]
    soc_percent: list[float]

    @classmethod
    def from_plan(cls, plan: BatteryPlan) -> BatteryPlanRecord:
        return cls(
            controlled=plan.controlled,
            reason=plan.reason,
            power_w=[round(p, 1) for p in plan.power_w],
            soc_percent=[round(s, 3) for s in plan.soc_percent],
        )

    def to_plan(self, battery_id: str) -> BatteryPlan:
        return BatteryPlan(
            battery_id, self.controlled, tuple(self.power_w), tuple(self.soc_percent), self.reason
        )


class PlanRecord(StoredRecord):
    """Every field of a plan; ``steps`` is derived and only written, for readers of the JSON."""

    created_at: UtcTime
    start: UtcTime
    step_minutes: float
    steps: int = 0
    solver_status: str
    solve_time_ms: float
    fallback: bool = False
    objective: float | None = None
    import_cost: float = 0.0
    export_revenue: float = 0.0
    degradation_cost: float = 0.0
    total_cost: float = 0.0
    notes: list[str] = Field(default_factory=list)
    vehicles: dict[str, VehiclePlanRecord]
    batteries: dict[str, BatteryPlanRecord] = Field(default_factory=dict)
    """Home batteries (absent in plans stored before they existed)."""
    grid_import_w: list[float]
    grid_export_w: list[float]
    import_price_per_kwh: list[float]
    export_price_per_kwh: list[float]

    @classmethod
    def from_plan(cls, plan: Plan) -> PlanRecord:
        return cls(
            created_at=plan.created_at,
            start=plan.start,
            step_minutes=plan.step.total_seconds() / 60.0,
            steps=plan.steps,
            solver_status=plan.solver_status,
            solve_time_ms=round(plan.solve_time_ms, 3),
            fallback=plan.fallback,
            objective=plan.objective,
            import_cost=plan.import_cost,
            export_revenue=plan.export_revenue,
            degradation_cost=plan.degradation_cost,
            total_cost=plan.total_cost,
            notes=list(plan.notes),
            vehicles={vid: VehiclePlanRecord.from_plan(vp) for vid, vp in plan.vehicles.items()},
            batteries={bid: BatteryPlanRecord.from_plan(bp) for bid, bp in plan.batteries.items()},
            grid_import_w=[round(p, 1) for p in plan.grid_import_w],
            grid_export_w=[round(p, 1) for p in plan.grid_export_w],
            import_price_per_kwh=list(plan.import_price_per_kwh),
            export_price_per_kwh=list(plan.export_price_per_kwh),
        )

    def to_plan(self) -> Plan:
        return Plan(
            created_at=self.created_at,
            start=self.start,
            step=timedelta(minutes=self.step_minutes),
            vehicles={vid: vp.to_plan(vid) for vid, vp in self.vehicles.items()},
            grid_import_w=tuple(self.grid_import_w),
            grid_export_w=tuple(self.grid_export_w),
            import_price_per_kwh=tuple(self.import_price_per_kwh),
            export_price_per_kwh=tuple(self.export_price_per_kwh),
            solver_status=self.solver_status,
            solve_time_ms=self.solve_time_ms,
            fallback=self.fallback,
            import_cost=self.import_cost,
            export_revenue=self.export_revenue,
            degradation_cost=self.degradation_cost,
            notes=tuple(self.notes),
            objective=self.objective,
            batteries={bid: bp.to_plan(bid) for bid, bp in self.batteries.items()},
        )


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """Every field of a plan as JSON-ready data."""
    dumped: dict[str, Any] = PlanRecord.from_plan(plan).model_dump(mode="json")
    return dumped


def plan_from_dict(data: dict[str, Any]) -> Plan:
    """The inverse of :func:`plan_to_dict` (derived fields such as ``steps`` are ignored)."""
    return PlanRecord.model_validate(data).to_plan()
