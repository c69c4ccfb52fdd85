"""Vehicle state between readings: SoC tracking by energy counting, and the next departure.

SoC comes from the charger (OCPP measurand SoC) or from MQTT (a vehicle integration). Between
readings it is integrated from the metered power through the battery's efficiency and corrected on
each reading. A car that arrives without any SoC gets an estimate from its last known SoC and its
typical trip; an estimate plans charging but never allows discharge (unknown SoC = no discharge).
Pure: no I/O.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.config import VehicleConfig
from controller.domain import Departure, ensure_utc

__all__ = ["SocEstimate", "SocTracker", "next_departure"]

# A measured SoC older than this with no power readings in between is no longer trusted.
_MAX_INTEGRATION_GAP = timedelta(minutes=10)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, slots=True)
class SocEstimate:
    soc_percent: float
    at: datetime
    measured: bool
    """True when anchored on a real SoC reading (possibly integrated since); False for a guess."""
    source: str


class SocTracker:
    """One vehicle's SoC: last reading plus energy counted since."""

    def __init__(self, vehicle: VehicleConfig) -> None:
        self.vehicle = vehicle
        self._soc: float | None = None
        self._at: datetime | None = None
        self._measured = False
        self._source = ""
        self._power_w: float | None = None
        self._power_at: datetime | None = None

    def restore(self, soc_percent: float, at: datetime, measured: bool, source: str = "store") -> None:
        self._soc, self._at, self._measured, self._source = soc_percent, ensure_utc(at), measured, source

    def on_soc(self, soc_percent: float, at: datetime, source: str) -> None:
        """A real SoC reading: the anchor for everything after it. Older than the anchor: ignored."""
        at = ensure_utc(at)
        if not 0 <= soc_percent <= 100 or (self._at is not None and self._measured and at < self._at):
            return
        self._soc, self._at, self._measured, self._source = soc_percent, at, True, source
        self._power_at = at if self._power_w is not None else None

    def on_power(self, power_w: float, at: datetime) -> None:
        """Metered power at the charger (+ charging). Integrates the previous value over the gap."""
        at = ensure_utc(at)
        if self._power_w is not None and self._power_at is not None and self._soc is not None:
            gap = at - self._power_at
            if timedelta(0) < gap <= _MAX_INTEGRATION_GAP:
                self._soc = self._integrate(self._soc, self._power_w, gap)
                self._at = at
            elif gap > _MAX_INTEGRATION_GAP:
                self._measured = False  # energy went unmetered: keep planning on it, never discharge on it
        if self._power_at is None or at >= self._power_at:
            self._power_w, self._power_at = power_w, at

    def _integrate(self, soc: float, power_w: float, gap: timedelta) -> float:
        energy_kwh = power_w * gap.total_seconds() / 3_600_000.0
        battery_kwh = (
            energy_kwh * self.vehicle.charge_efficiency
            if energy_kwh >= 0
            else energy_kwh / self.vehicle.discharge_efficiency
        )
        return min(100.0, max(0.0, soc + 100.0 * battery_kwh / self.vehicle.usable_capacity_kwh))

    def on_arrival(self, at: datetime, trip_km: float | None = None) -> None:
        """Plugged in. Without a fresh reading, guess from the last SoC minus the trip's energy."""
        at = ensure_utc(at)
        self._power_w, self._power_at = None, None
        if self._soc is None:
            return
        if trip_km is None:
            trip_km = self.vehicle.typical_trip_km
        used_percent = (
            100.0
            * trip_km
            * self.vehicle.consumption_kwh_per_100km
            / 100.0
            / self.vehicle.usable_capacity_kwh
        )
        self._soc = max(0.0, self._soc - used_percent)
        self._at, self._measured, self._source = at, False, "estimated from trip"

    def on_departure(self) -> None:
        self._power_w, self._power_at = None, None

    def estimate(self) -> SocEstimate | None:
        if self._soc is None or self._at is None:
            return None
        return SocEstimate(self._soc, self._at, self._measured, self._source)


def next_departure(
    vehicle: VehicleConfig,
    now: datetime,
    timezone: str,
    *,
    one_off: Departure | None = None,
    from_charger: Departure | None = None,
    horizon: timedelta = timedelta(days=8),
) -> Departure | None:
    """The earliest upcoming departure: a one-off override, the charger's (EV charging needs) or the weekly schedule."""
    now = ensure_utc(now)
    candidates = [d for d in (one_off, from_charger) if d is not None and d.at > now]
    tz = zoneinfo.ZoneInfo(timezone)
    local_now = now.astimezone(tz)
    for offset in range(horizon.days + 1):
        day = (local_now + timedelta(days=offset)).date()
        rule = vehicle.departures.get(WEEKDAYS[day.weekday()])
        if rule is None:
            continue
        at = datetime.combine(day, rule.time, tzinfo=tz)
        if at > local_now:
            candidates.append(Departure(at, rule.target_soc_percent))
            break
    return min(candidates, key=lambda d: d.at) if candidates else None
