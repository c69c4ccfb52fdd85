"""Physical bounds of a meter reading by role: what a site can plausibly measure (pure, no I/O).

A reading outside its role's bounds is a unit or scale error, a sign error or a broken device, and
is dropped (raised as :class:`ImplausibleReading`); a small negative on a role that cannot be
negative (inverter standby at night, a meter's offset) is clamped to 0 instead.

=============== ====================================== =========================================
role            lowest                                 highest
=============== ====================================== =========================================
``grid``        - site bound                           + site bound
``pv``          - ``NEGATIVE_TOLERANCE_W`` (clamped 0) site bound (the config knows no PV peak)
``home``        - ``NEGATIVE_TOLERANCE_W`` (clamped 0) site bound
``v2l``         - ``NEGATIVE_TOLERANCE_W`` (clamped 0) site bound
``vehicle_soc`` 0 %                                    100 %
=============== ====================================== =========================================

The site bound is ``SITE_POWER_MARGIN`` x the largest of ``site.grid.import_limit_kw``,
``export_limit_kw`` and ``phase_fuse_a`` x 3 x ``phase_voltage_v`` (at least ``MIN_CONNECTION_KW``);
without a site config it is :data:`~controller.meters.payload.MAX_POWER_W`.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.config import MeterConfig, SiteConfig
from controller.domain import MeterRole
from controller.meters.payload import MAX_POWER_W, PayloadError

__all__ = [
    "MIN_CONNECTION_KW",
    "NEGATIVE_TOLERANCE_W",
    "SITE_POWER_MARGIN",
    "Bounds",
    "ImplausibleReading",
    "apply_bounds",
    "meter_bounds",
    "site_power_bound_w",
]

NEGATIVE_TOLERANCE_W = 50.0
"""Negatives down to this on ``pv``, ``home`` and ``v2l`` (standby draw, meter offset) read as 0 W."""
SITE_POWER_MARGIN = 1.5
"""How far beyond the grid connection's rating a power reading may go."""
MIN_CONNECTION_KW = 3.68
"""The smallest connection the site bound assumes (1 x 16 A at 230 V), whatever the limits say."""

_PHASES = 3


class ImplausibleReading(PayloadError):
    """A reading that parsed but lies outside its role's physical bounds."""

    def __init__(self, value: float, low: float, high: float, unit: str) -> None:
        self.value = value
        self.low = low
        self.high = high
        self.unit = unit
        super().__init__(
            f"{value:g} {unit} is implausible: outside {low:g}..{high:g} {unit} (check the unit, scale or sign)"
        )

    @property
    def bound(self) -> float:
        """The bound the value crossed."""
        return self.low if self.value < self.low else self.high


@dataclass(frozen=True, slots=True)
class Bounds:
    """``low``..``high`` in the role's unit; values in [-``clamp_w``, 0) read as 0."""

    low: float
    high: float
    unit: str = "W"
    clamp_w: float = 0.0


def site_power_bound_w(site: SiteConfig | None) -> float:
    """The largest power, W, any meter of the site can plausibly measure."""
    if site is None:
        return MAX_POWER_W
    grid = site.site.grid
    kw = max(grid.import_limit_kw, grid.export_limit_kw, MIN_CONNECTION_KW)
    if grid.phase_fuse_a is not None:
        kw = max(kw, grid.phase_fuse_a * _PHASES * grid.phase_voltage_v / 1000.0)
    return min(round(SITE_POWER_MARGIN * kw * 1000.0, 1), MAX_POWER_W)


def meter_bounds(meter: MeterConfig, site: SiteConfig | None = None) -> Bounds:
    """The bounds of one meter's normalised readings (W after ``sign``, or percent)."""
    if meter.role in (MeterRole.VEHICLE_SOC, MeterRole.BATTERY_SOC):
        return Bounds(0.0, 100.0, "%")
    bound_w = site_power_bound_w(site)
    if meter.role in (MeterRole.GRID, MeterRole.BATTERY):  # both flow either way
        return Bounds(-bound_w, bound_w)
    return Bounds(0.0, bound_w, clamp_w=NEGATIVE_TOLERANCE_W)


def apply_bounds(value: float, bounds: Bounds) -> float:
    """``value``, or 0 for a small negative within the tolerance; raises ImplausibleReading beyond."""
    if bounds.low <= value <= bounds.high:
        return value
    if value < bounds.low and bounds.low == 0.0 and value >= -bounds.clamp_w:
        return 0.0
    raise ImplausibleReading(value, bounds.low, bounds.high, bounds.unit)
