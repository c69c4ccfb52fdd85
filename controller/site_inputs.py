"""The latest inputs of the site (pure state, no I/O): meter readings, vehicle SoC/V2L, prices, limits.

Adapters (MQTT today) feed it; the planner and dispatcher read it through the methods below with an
explicit ``now``, so the same object works under a simulated clock.

Staleness: a meter with no reading newer than its ``stale_after_s`` is stale (a meter never heard
from is stale too). A stale grid, PV or home meter puts the whole site into safe mode (no discharge)
until fresh data arrives; a stale vehicle SoC or V2L reading only makes that vehicle's value unknown.
A site without a grid meter is always in safe mode: nothing measures what a discharge does there.
A home battery's power and SoC come from its meters (roles ``battery`` and ``battery_soc``) or, for a
battery controlled over Modbus, from the device itself (``update_battery_device``); a stale or
retained (age unknown) value makes that battery's value unknown, never the whole site.
An outage state (``grid_lost``) not refreshed within ``grid_signals.outage_max_age_s`` no longer counts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from controller.config import MeterConfig, SiteConfig
from controller.dispatch.peak_window import ImportPeak
from controller.domain import GridLimits, MeterReading, MeterRole, ensure_utc
from controller.signals import (
    LimitSignal,
    LimitsOnGrid,
    PowerForecast,
    PriceSignal,
    PricesOnGrid,
    Timeline,
    limits_on_grid,
    prices_on_grid,
)

__all__ = [
    "BATTERY_ROLES",
    "NO_GRID_METER_REASON",
    "SITE_ROLES",
    "BatteryDeviceReading",
    "PriceDirection",
    "SiteInputs",
    "SiteSnapshot",
]

SITE_ROLES = frozenset({MeterRole.GRID, MeterRole.PV, MeterRole.HOME})
BATTERY_ROLES = frozenset({MeterRole.BATTERY, MeterRole.BATTERY_SOC})
NO_GRID_METER_REASON = (
    "no grid meter configured: discharge needs a measured grid (add a meter with role grid)"
)
PriceDirection = Literal["import", "export"]


@dataclass(frozen=True, slots=True)
class SiteSnapshot:
    """Fresh power values in W at one moment; None where the meter is missing or stale."""

    at: dt.datetime
    grid_power_w: float | None
    pv_power_w: float | None
    home_power_w: float | None
    safe_mode: bool
    stale_meters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BatteryDeviceReading:
    """A home battery read over its own interface (SunSpec over Modbus), not over MQTT meters."""

    soc_percent: float | None
    power_w: float | None
    """+ charging / - discharging."""
    at: dt.datetime
    stale_after_s: float


class _BatteryInputs:
    """The home batteries' part of :class:`SiteInputs`: their power and SoC from meters (roles
    ``battery`` and ``battery_soc``) or from the device itself (a Modbus battery)."""

    cfg: SiteConfig
    _readings: dict[str, MeterReading]
    _battery_devices: dict[str, BatteryDeviceReading]

    def _fresh_battery_reading(self, meter: MeterConfig, now: dt.datetime) -> MeterReading | None:
        """A retained battery value has an unknown age: it counts as unknown, like a stale one."""
        reading = self._readings.get(meter.id)
        if reading is None or reading.retained or (now - reading.at).total_seconds() > meter.stale_after_s:
            return None
        return reading

    def update_battery_device(
        self,
        battery_id: str,
        soc_percent: float | None,
        power_w: float | None,
        at: dt.datetime,
        stale_after_s: float,
    ) -> None:
        """A battery's SoC and power as read from the device; fresh for ``stale_after_s``."""
        if self.cfg.home_battery(battery_id) is None:
            raise KeyError(f"unknown home battery {battery_id!r}")
        self._battery_devices[battery_id] = BatteryDeviceReading(
            soc_percent, power_w, ensure_utc(at), stale_after_s
        )

    def _battery_device(self, battery_id: str, now: dt.datetime) -> BatteryDeviceReading | None:
        device = self._battery_devices.get(battery_id)
        if device is None or (now - device.at).total_seconds() > device.stale_after_s:
            return None
        return device

    def _battery_meters(self, role: MeterRole, battery_id: str) -> list[MeterConfig]:
        return [m for m in self.cfg.meters if m.role is role and m.battery == battery_id]

    def _fresh_battery_sum(self, role: MeterRole, battery_id: str, now: dt.datetime) -> float | None:
        meters = self._battery_meters(role, battery_id)
        readings = [self._fresh_battery_reading(m, now) for m in meters]
        if not meters or any(r is None for r in readings):
            return None
        return sum(r.value for r in readings if r is not None)

    def battery_power_w(self, battery_id: str, now: dt.datetime) -> float | None:
        """The battery's measured power (+ charging), None when it has no fresh source."""
        now = ensure_utc(now)
        device = self._battery_device(battery_id, now)
        if device is not None and device.power_w is not None:
            return device.power_w
        return self._fresh_battery_sum(MeterRole.BATTERY, battery_id, now)

    def battery_soc_percent(self, battery_id: str, now: dt.datetime) -> float | None:
        """The battery's SoC, None when it has no fresh source (stale: that battery is unknown)."""
        now = ensure_utc(now)
        device = self._battery_device(battery_id, now)
        if device is not None and device.soc_percent is not None:
            return device.soc_percent
        for meter in self._battery_meters(MeterRole.BATTERY_SOC, battery_id):
            reading = self._fresh_battery_reading(meter, now)
            if reading is not None:
                return min(100.0, max(0.0, reading.value))
        return None

    def battery_has_power_source(self, battery_id: str) -> bool:
        """A power meter, or a device that reports the battery's power (a Modbus battery)."""
        device = self._battery_devices.get(battery_id)
        from_device = device is not None and device.power_w is not None
        return from_device or bool(self._battery_meters(MeterRole.BATTERY, battery_id))


class SiteInputs(_BatteryInputs):
    def __init__(self, cfg: SiteConfig) -> None:
        self.cfg = cfg
        self._meters: dict[str, MeterConfig] = {m.id: m for m in cfg.meters}
        self._readings: dict[str, MeterReading] = {}
        self._phases_w: dict[str, tuple[float, ...]] = {}
        self._dropped: dict[str, int] = {}
        self._prices: dict[str, Timeline] = {
            "import": Timeline(name="import prices"),
            "export": Timeline(name="export prices"),
        }
        self._import_caps = Timeline(name="import caps")
        self._export_caps = Timeline(name="export caps")
        self.price_updates = 0
        self.limit_updates = 0
        self._pv_forecast = Timeline(name="pv forecast")
        self.grid_lost = False
        self.grid_state_at: dt.datetime | None = None
        capacity = cfg.tariff.capacity
        self.import_peak: ImportPeak | None = (
            ImportPeak(dt.timedelta(minutes=capacity.window_minutes), cfg.site.timezone)
            if capacity is not None
            else None
        )
        """With a capacity tariff: the month's peak of window-average import, from the grid meter."""
        self._peak_meter = next((m.id for m in cfg.meters if m.role is MeterRole.GRID), None)
        self._battery_devices: dict[str, BatteryDeviceReading] = {}

    # ---------------------------------------------------------------- meters

    def update_meter(self, reading: MeterReading, phases_w: tuple[float, ...] = ()) -> bool:
        """Store a reading; older than the one held (out of order) is ignored and returns False."""
        meter = self._meters.get(reading.meter_id)
        if meter is None:
            raise KeyError(f"unknown meter {reading.meter_id!r}")
        held = self._readings.get(reading.meter_id)
        if held is not None and reading.at < held.at:
            return False
        self._readings[reading.meter_id] = reading
        self._phases_w[reading.meter_id] = phases_w
        if self.import_peak is not None and reading.meter_id == self._peak_meter:
            self.import_peak.add(reading.at, reading.value, meter.stale_after_s)
        return True

    @property
    def peak_meter_id(self) -> str | None:
        """The grid meter whose readings the capacity tariff's peak follows (the first one)."""
        return self._peak_meter

    def month_peak_import_w(self, now: dt.datetime) -> float | None:
        """The month's peak window-average import so far, W; None without a capacity tariff."""
        return None if self.import_peak is None else self.import_peak.month_peak_w(now)

    def window_import_wh(self, now: dt.datetime) -> float:
        """Imported in the current capacity window up to ``now``, Wh (0 without a capacity tariff)."""
        return 0.0 if self.import_peak is None else self.import_peak.window_wh(now)

    def count_dropped(self, meter_id: str) -> None:
        """Count one message of a meter refused as unusable or implausible (never stored)."""
        if meter_id not in self._meters:
            raise KeyError(f"unknown meter {meter_id!r}")
        self._dropped[meter_id] = self._dropped.get(meter_id, 0) + 1

    def dropped_readings(self, meter_id: str) -> int:
        """How many messages of a meter were refused since the start."""
        return self._dropped.get(meter_id, 0)

    def meter_states(self) -> dict[str, dict[str, int]]:
        """Per configured meter: ``{"dropped_readings": n}``, for the published state."""
        return {m.id: {"dropped_readings": self.dropped_readings(m.id)} for m in self.cfg.meters}

    def reading(self, meter_id: str) -> MeterReading | None:
        """The last reading of a meter, fresh or not."""
        return self._readings.get(meter_id)

    def phases_w(self, meter_id: str) -> tuple[float, ...]:
        """Per-phase power of the last reading (L1-L3 where the format reads them: Shelly Pro 3EM,
        Tasmota SML, dsmr-reader), empty when the meter has none."""
        return self._phases_w.get(meter_id, ())

    def _is_fresh(self, meter: MeterConfig, now: dt.datetime) -> bool:
        reading = self._readings.get(meter.id)
        if reading is None:
            return False
        return (now - reading.at).total_seconds() <= meter.stale_after_s

    def stale_meters(self, now: dt.datetime) -> list[str]:
        """Ids of every meter (any role) without a fresh reading, in config order."""
        now = ensure_utc(now)
        return [m.id for m in self.cfg.meters if not self._is_fresh(m, now)]

    def is_stale(self, now: dt.datetime) -> bool:
        """True when a site meter (grid, PV, home) has no fresh reading."""
        now = ensure_utc(now)
        return any(not self._is_fresh(m, now) for m in self.cfg.meters if m.role in SITE_ROLES)

    def safe_mode_reasons(self, now: dt.datetime) -> list[str]:
        now = ensure_utc(now)
        reasons = [] if self.has_grid_meter else [NO_GRID_METER_REASON]
        return reasons + [
            f"meter {m.id} ({m.role.value}) is stale"
            for m in self.cfg.meters
            if m.role in SITE_ROLES and not self._is_fresh(m, now)
        ]

    @property
    def has_grid_meter(self) -> bool:
        return any(m.role is MeterRole.GRID for m in self.cfg.meters)

    def safe_mode(self, now: dt.datetime) -> bool:
        """No discharge while a site meter is stale or missing, or no grid meter is configured
        (safety invariant 5)."""
        return not self.has_grid_meter or self.is_stale(now)

    def _fresh_sum(self, role: MeterRole, now: dt.datetime, vehicle: str | None = None) -> float | None:
        meters = [m for m in self.cfg.meters if m.role is role and (vehicle is None or m.vehicle == vehicle)]
        if not meters or not all(self._is_fresh(m, now) for m in meters):
            return None
        return sum(self._readings[m.id].value for m in meters)

    def grid_power_w(self, now: dt.datetime) -> float | None:
        """Grid power (+ import / - export), None when missing or stale."""
        return self._fresh_sum(MeterRole.GRID, ensure_utc(now))

    def grid_phases_w(self, now: dt.datetime) -> tuple[float, float, float] | None:
        """Grid power per phase L1-L3 (+ import) of the grid meter's last reading (a site has one);
        None when it is missing or stale, its last reading has no value for every phase, or the
        grid is lost (an outage: nothing flows through the main fuses)."""
        now = ensure_utc(now)
        meter = next((m for m in self.cfg.meters if m.role is MeterRole.GRID), None)
        if meter is None or self.is_grid_lost(now) or not self._is_fresh(meter, now):
            return None
        phases = self._phases_w.get(meter.id, ())
        return (phases[0], phases[1], phases[2]) if len(phases) == 3 else None

    def pv_power_w(self, now: dt.datetime) -> float | None:
        """PV production summed over PV meters, None when any is missing or stale."""
        return self._fresh_sum(MeterRole.PV, ensure_utc(now))

    def home_power_w(self, now: dt.datetime) -> float | None:
        return self._fresh_sum(MeterRole.HOME, ensure_utc(now))

    def vehicle_soc_percent(self, vehicle_id: str, now: dt.datetime) -> float | None:
        """SoC from a ``vehicle_soc`` meter, None when there is none or it is stale."""
        now = ensure_utc(now)
        for m in self.cfg.meters:
            if m.role is MeterRole.VEHICLE_SOC and m.vehicle == vehicle_id and self._is_fresh(m, now):
                return self._readings[m.id].value
        return None

    def v2l_power_w(self, vehicle_id: str, now: dt.datetime) -> float | None:
        """Power the vehicle supplies to V2L loads (>= 0), None when unknown or stale."""
        return self._fresh_sum(MeterRole.V2L, ensure_utc(now), vehicle_id)

    def snapshot(self, now: dt.datetime) -> SiteSnapshot:
        now = ensure_utc(now)
        return SiteSnapshot(
            at=now,
            grid_power_w=self.grid_power_w(now),
            pv_power_w=self.pv_power_w(now),
            home_power_w=self.home_power_w(now),
            safe_mode=self.safe_mode(now),
            stale_meters=tuple(self.stale_meters(now)),
        )

    # --------------------------------------------------------------- signals

    def update_prices(self, direction: PriceDirection, signal: PriceSignal, received_at: dt.datetime) -> None:
        """Add a price forecast (values as sent; the tariff is applied when resampling)."""
        if direction not in self._prices:
            raise ValueError(f"price direction {direction!r} is not import or export")
        self._prices[direction].add(
            ((s.start, s.end, s.value_per_kwh) for s in signal.slots), received_at, signal.issued_at
        )
        self.price_updates += 1

    def update_grid_state(self, lost: bool, received_at: dt.datetime, *, retained: bool = False) -> bool:
        """Grid outage on/off (any live message refreshes it); returns True when the state changed.

        A retained message has an unknown age (the broker hands it out again on every reconnect):
        it sets the state only while none is known yet, stamped ``received_at`` so that a retained
        "lost" still ends after ``grid_signals.outage_max_age_s``; it never refreshes or overrides
        a known state."""
        received_at = ensure_utc(received_at)
        if retained and self.grid_state_at is not None:
            return False
        changed = lost != self.is_grid_lost(received_at)
        self.grid_lost = lost
        self.grid_state_at = received_at
        return changed

    def _grid_state_expired(self, now: dt.datetime) -> bool:
        max_age_s = self.cfg.grid_signals.outage_max_age_s
        return (
            max_age_s is not None
            and self.grid_state_at is not None
            and (ensure_utc(now) - self.grid_state_at).total_seconds() > max_age_s
        )

    def is_grid_lost(self, now: dt.datetime) -> bool:
        """The outage state at ``now``: ``grid_lost`` as last received, unless that was longer than
        ``grid_signals.outage_max_age_s`` ago (a lost "ok" must not stop charging for good)."""
        return self.grid_lost and not self._grid_state_expired(now)

    def expire_grid_state(self, now: dt.datetime) -> bool:
        """Fall back to "grid not lost" when the outage state was not refreshed within
        ``grid_signals.outage_max_age_s``; True when it did so now (for the caller to log)."""
        if self.grid_lost and self._grid_state_expired(now):
            self.grid_lost = False
            return True
        return False

    def update_pv_forecast(self, forecast: PowerForecast, received_at: dt.datetime) -> None:
        """Add a PV forecast (W per window); the newest message wins where windows overlap."""
        self._pv_forecast.add(forecast.segments, received_at, forecast.issued_at)

    def pv_forecast_on_grid(
        self, start: dt.datetime, step: dt.timedelta, n: int
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """PV forecast in W per step (time-weighted mean) and where the forecast covers the step."""
        return self._pv_forecast.mean_on_grid(start, step, n)

    def update_limits(self, signal: LimitSignal, received_at: dt.datetime) -> None:
        """Add grid-operator caps; each direction resolves on its own (newest message wins)."""
        imports = [(w.start, w.end, w.import_limit_w) for w in signal.windows if w.import_limit_w is not None]
        exports = [(w.start, w.end, w.export_limit_w) for w in signal.windows if w.export_limit_w is not None]
        if imports:
            self._import_caps.add(imports, received_at, signal.issued_at)
        if exports:
            self._export_caps.add(exports, received_at, signal.issued_at)
        self.limit_updates += 1

    def prices_on_grid(self, start: dt.datetime, step: dt.timedelta, n: int) -> PricesOnGrid:
        """Import/export price per kWh for each of ``n`` steps from ``start`` (after the tariff)."""
        tariff = self.cfg.tariff
        return prices_on_grid(
            tariff.import_,
            tariff.export,
            self._prices["import"],
            self._prices["export"],
            self.cfg.site.timezone,
            start,
            step,
            n,
        )

    def limits_on_grid(self, start: dt.datetime, step: dt.timedelta, n: int) -> LimitsOnGrid:
        """Import/export caps in W for each of ``n`` steps from ``start``."""
        return limits_on_grid(
            self.cfg.site.grid, self.cfg.grid_signals, self._import_caps, self._export_caps, start, step, n
        )

    def limits_at(self, now: dt.datetime) -> GridLimits:
        """The caps in force at ``now``, valid until the next signal boundary (None: no change known)."""
        now = ensure_utc(now)
        grid = self.limits_on_grid(now, dt.timedelta(milliseconds=1), 1)
        changes = [
            t
            for timeline in (self._import_caps, self._export_caps)
            for seg in timeline.segments()
            for t in seg[:2]
            if t > now
        ]
        return GridLimits(
            import_limit_w=float(grid.import_limit_w[0]),
            export_limit_w=float(grid.export_limit_w[0]),
            valid_from=now,
            valid_until=min(changes, default=None),
        )
