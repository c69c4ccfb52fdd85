"""Snapping a setpoint to what a charger can do."""

from __future__ import annotations

from controller.config import ChargerConfig

__all__ = ["snap_to_charger"]


def snap_to_charger(setpoint_w: float, charger: ChargerConfig, reasons: list[str]) -> float:
    """Chargers cannot go below their minimum current: smaller setpoints round to zero.

    Rounding towards zero never breaks a limit, a permission or the reserve.
    """
    min_power_w = charger.min_current_a * charger.phases * charger.voltage_v
    if 0 < abs(setpoint_w) < min_power_w:
        reasons.append(f"below charger minimum {min_power_w:.0f} W: idle")
        return 0.0
    return round(setpoint_w, 1)
