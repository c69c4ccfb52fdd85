"""What the dispatcher asks of one home battery now; the daemon hands it to the battery's control
(MQTT setpoint or SunSpec over Modbus). An ``observe`` battery never gets one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["BatteryCommand", "BatteryMode"]

BatteryMode = Literal["charge", "discharge", "hold", "auto"]
"""``auto``: the battery's own self-consumption mode (what it falls back to on its own)."""


@dataclass(frozen=True, slots=True)
class BatteryCommand:
    battery_id: str
    setpoint_w: float
    """+ charge / - discharge, W; 0 with ``hold``; ignored with ``auto``."""
    mode: BatteryMode
    valid_until: datetime
    """The battery returns to ``auto`` by itself after this unless told again."""
    send: bool
    """False when the deadband says nothing changed (a keep-alive may still go out)."""
    reasons: tuple[str, ...] = ()
