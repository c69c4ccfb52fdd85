"""The EV's own limits for its session, as NotifyEVChargingNeeds brings them, in the vehicle's terms."""

from __future__ import annotations

import math
from dataclasses import dataclass

from controller.config import VehicleConfig
from controller.snapshot import SessionLimits
from controller.vehicles import SocEstimate

__all__ = ["EvReportedLimits", "session_limits"]

# Power an EV may report that is still a number, not a data error (as the snapshot bounds it).
_MAX_REPORTED_POWER_W = 10_000_000.0


@dataclass(frozen=True, slots=True)
class EvReportedLimits:
    """The EV's limits as NotifyEVChargingNeeds brings them: W, and the V2X energy window in Wh
    from now (ISO 15118-20: a negative minimum means that much may be discharged before the EV's
    own floor; the maximum is the energy up to its own ceiling). None where the EV said nothing."""

    max_charge_power_w: float | None = None
    max_discharge_power_w: float | None = None
    min_v2x_energy_wh: float | None = None
    max_v2x_energy_wh: float | None = None


def session_limits(
    vehicle: VehicleConfig, estimate: SocEstimate | None, reported: EvReportedLimits | None
) -> SessionLimits | None:
    """The reported limits in this vehicle's terms: W caps, and the V2X energy window turned into
    SoC bounds on the SoC known now (``estimate``) (without a SoC the window cannot be placed and is left out).
    Numbers that make no sense (negative power, not finite) count as not reported."""
    if reported is None:
        return None

    def power(value: float | None) -> float | None:
        if value is None or not math.isfinite(value) or value < 0:
            return None
        return min(value, _MAX_REPORTED_POWER_W)

    capacity_wh = 1000.0 * vehicle.usable_capacity_kwh

    def soc(energy_wh: float | None) -> float | None:
        if energy_wh is None or estimate is None or not math.isfinite(energy_wh) or capacity_wh <= 0:
            return None
        return min(100.0, max(0.0, estimate.soc_percent + 100.0 * energy_wh / capacity_wh))

    floor, ceiling = soc(reported.min_v2x_energy_wh), soc(reported.max_v2x_energy_wh)
    if floor is not None and ceiling is not None and ceiling < floor:
        ceiling = None  # contradictory window: keep the floor (the safe half)
    limits = SessionLimits(
        max_charge_power_w=power(reported.max_charge_power_w),
        max_discharge_power_w=power(reported.max_discharge_power_w),
        min_soc_percent=None if floor is None else round(floor, 3),
        max_soc_percent=None if ceiling is None else round(ceiling, 3),
    )
    return None if limits == SessionLimits() else limits
