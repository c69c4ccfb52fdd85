"""The home batteries in the site state (pure, no I/O): what each was last told, how its control
fares, and what the planner, the dispatcher and the load history see of it.

Power signs as everywhere: + charging the battery, - discharging it, W. The home load is what the
house itself draws: grid + PV - cars - batteries. The load forecast learns from it, so it must not
contain a battery's charging or discharging (it would learn the battery's own schedule as load).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from controller.config import HomeBatteryConfig
from controller.dispatch.battery_command import BatteryCommand, BatteryMode
from controller.dispatch.inputs import BatteryLive
from controller.domain import MeterRole, ensure_utc
from controller.snapshot import HomeBatterySnapshot

if TYPE_CHECKING:
    from controller.site import Site

__all__ = [
    "BatteryRuntime",
    "ControlStatus",
    "batteries_power_w",
    "battery_lives",
    "battery_power_w",
    "battery_snapshots",
    "home_load_w",
]

ControlStatus = Literal["observe", "idle", "ok", "refused", "unreachable", "released"]
"""``observe``: never commanded; ``idle``: controllable, nothing sent yet; ``ok``: the last command
took; ``refused``: the device refused the last write; ``unreachable``: the device or broker is gone;
``released``: handed back to the battery's own mode (on stop)."""


@dataclass(slots=True)
class BatteryRuntime:
    config: HomeBatteryConfig
    mode: BatteryMode = "auto"
    """What the battery was last told (``auto``: its own self-consumption mode)."""
    setpoint_w: float = 0.0
    """The last setpoint sent, + charge / - discharge (0 with ``hold`` and ``auto``)."""
    valid_until: dt.datetime | None = None
    control_status: ControlStatus = "idle"
    control_detail: str = ""
    """Why the control is not ``ok`` (the device's or broker's own words), empty when it is."""

    def __post_init__(self) -> None:
        if self.config.control.mode == "observe":
            self.control_status = "observe"

    @property
    def controllable(self) -> bool:
        return self.config.control.mode != "observe"

    def commanded(self, command: BatteryCommand) -> None:
        """A command went out (and, over Modbus, was verified)."""
        self.mode, self.valid_until = command.mode, command.valid_until
        self.setpoint_w = command.setpoint_w if command.mode in ("charge", "discharge") else 0.0
        self.control_status, self.control_detail = "ok", ""

    def commanded_power_w(self, now: dt.datetime) -> float | None:
        """What the battery does on our word while that word holds; None in its own mode."""
        if self.mode == "auto" or self.valid_until is None or ensure_utc(now) >= self.valid_until:
            return None
        return self.setpoint_w


def battery_power_w(site: Site, battery: BatteryRuntime, now: dt.datetime) -> float | None:
    """Measured power; without any power source, the setpoint a controlled battery holds (an
    ``observe`` battery without a power meter is unknown)."""
    battery_id = battery.config.id
    if site.inputs.battery_has_power_source(battery_id):
        return site.inputs.battery_power_w(battery_id, now)
    return battery.commanded_power_w(now)


def batteries_power_w(site: Site, now: dt.datetime) -> float | None:
    """All batteries together, + charging; None when any one is unknown (0 W without batteries)."""
    total = 0.0
    for battery in site.batteries.values():
        power = battery_power_w(site, battery, now)
        if power is None:
            return None
        total += power
    return total


def home_load_w(site: Site, now: dt.datetime) -> float | None:
    """The house's own load, W: the ``home`` meter where there is one, else grid + PV - cars -
    batteries when all are known (a stale PV meter is not 0 W; without PV meters PV is 0 W)."""
    inputs = site.inputs
    home = inputs.home_power_w(now)
    if home is not None:
        return max(0.0, home)
    grid = inputs.grid_power_w(now)
    pv = inputs.pv_power_w(now)
    has_pv_meter = any(m.role is MeterRole.PV for m in site.cfg.meters)
    if grid is None or (pv is None and has_pv_meter):
        return None
    cars = [site.measured_power_w(v, now) for v in site.vehicles.values() if v.plugged_in]
    batteries = batteries_power_w(site, now)
    if batteries is None or any(c is None for c in cars):
        return None
    return max(0.0, grid + (pv or 0.0) - sum(c for c in cars if c is not None) - batteries)


def battery_snapshots(site: Site, now: dt.datetime) -> list[HomeBatterySnapshot]:
    """One per configured battery, in config order; SoC None when unknown or stale."""
    return [
        HomeBatterySnapshot(
            id=battery.config.id,
            soc_percent=site.inputs.battery_soc_percent(battery.config.id, now),
            power_w=battery_power_w(site, battery, now),
        )
        for battery in site.batteries.values()
    ]


def battery_lives(site: Site, now: dt.datetime) -> tuple[BatteryLive, ...]:
    """The dispatcher's view of each configured battery, in config order."""
    return tuple(
        BatteryLive(
            battery_id=battery.config.id,
            soc_percent=site.inputs.battery_soc_percent(battery.config.id, now),
            power_w=battery_power_w(site, battery, now),
        )
        for battery in site.batteries.values()
    )
