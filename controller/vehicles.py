"""Vehicle state between readings: SoC tracking by energy counting, and the next departure.

SoC comes from the charger (OCPP measurand SoC) or from MQTT (a vehicle integration). Between
readings it is counted forward from what is metered and corrected on each reading:

* the charger's energy registers (``Energy.Active.Import/Export.Register``) where two samples in a
  row carry them: a register that goes backwards (a reset) or jumps further than the car's power
  allows in the time between counts nothing, and the interval falls back to power;
* else the charger's power samples: the previous power over the time to the next sample, up to
  10 min (a longer gap is not bridged);
* minus what a V2L meter measures the car supplying to its own loads.

Energy goes into the battery through the charge efficiency and out through the discharge
efficiency. When an interval could not be counted the SoC becomes an estimate. A car that arrives
without any SoC gets an estimate from its last known SoC and its typical trip, and a SoC of unknown
age (a retained MQTT message) is an estimate too; an estimate plans charging but never allows
discharge (unknown SoC = no discharge).

The weekly schedule gives the next departure and, for rules with a ``return_time``, the trips the
daemon can expect inside the plan horizon (:func:`scheduled_trips`). Pure: no I/O.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.config import VehicleConfig
from controller.domain import Departure, ensure_utc
from controller.snapshot import Trip

__all__ = ["SocEstimate", "SocTracker", "next_departure", "scheduled_trips"]

# Metered power is not bridged over a longer gap between samples: the SoC becomes an estimate.
_MAX_INTEGRATION_GAP = timedelta(minutes=10)
# A register may grow by up to this factor times what the car's maximum power gives over the time
# between two samples, plus this slack (register and timestamp resolution); more is a jump, not energy.
_REGISTER_POWER_FACTOR = 1.25
_REGISTER_SLACK_WH = 100.0
# Power derived from registers is the mean over at least this long (1 Wh more within one second
# would read as 3.6 kW).
_REGISTER_POWER_WINDOW = timedelta(seconds=10)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, slots=True)
class SocEstimate:
    soc_percent: float
    at: datetime
    """The moment the SoC stands for: the last reading, moved on by the energy counted since."""
    measured: bool
    """True when anchored on a real SoC reading (possibly counted since); False for a guess."""
    source: str
    read_at: datetime
    """When the SoC was last read (or restored, or estimated on arrival); counting does not move it."""


@dataclass(frozen=True, slots=True)
class _Registers:
    """One sample's energy registers in Wh (None: not reported)."""

    at: datetime
    import_wh: float | None
    export_wh: float | None


class SocTracker:
    """One vehicle's SoC: last reading plus energy counted since."""

    def __init__(self, vehicle: VehicleConfig) -> None:
        self.vehicle = vehicle
        self._soc: float | None = None
        self._at: datetime | None = None
        self._read_at: datetime | None = None
        self._measured = False
        self._source = ""
        # The charger: energy up to ``_counted_at`` is in the SoC; the last power and register sample.
        self._counted_at: datetime | None = None
        self._power_w: float | None = None
        self._power_at: datetime | None = None
        self._registers: _Registers | None = None
        self._window: _Registers | None = None
        self._register_power_w: float | None = None
        self.power_w: float | None = None
        """The charger's power as metered (+ charging): its last power sample, else the mean over
        its registers of the last ``_REGISTER_POWER_WINDOW`` or more; None when unknown."""
        # The V2L meter: its last draw (W >= 0), and V2L energy up to ``_v2l_counted_at`` is in the SoC.
        self._v2l_w: float | None = None
        self._v2l_at: datetime | None = None
        self._v2l_counted_at: datetime | None = None

    def _anchor(self, soc_percent: float, at: datetime, measured: bool, source: str) -> None:
        self._soc, self._at, self._read_at = soc_percent, at, at
        self._measured, self._source = measured, source
        self._counted_at = self._v2l_counted_at = at

    def restore(self, soc_percent: float, at: datetime, measured: bool, source: str = "store") -> None:
        self._anchor(soc_percent, ensure_utc(at), measured, source)

    def on_soc(self, soc_percent: float, at: datetime, source: str, *, measured: bool = True) -> None:
        """A SoC reading: the anchor for everything after it. Older than the last real reading:
        ignored. ``measured=False`` (a value of unknown age) only starts an estimate where no real
        reading is held; it never replaces one."""
        at = ensure_utc(at)
        if not 0 <= soc_percent <= 100:
            return
        if self._measured and self._read_at is not None and (not measured or at < self._read_at):
            return
        self._anchor(soc_percent, at, measured, source)

    def on_power(self, power_w: float, at: datetime) -> None:
        """Metered power at the charger (+ charging), without registers."""
        self.on_meter(at, power_w=power_w)

    def on_meter(
        self,
        at: datetime,
        power_w: float | None = None,
        energy_import_wh: float | None = None,
        energy_export_wh: float | None = None,
    ) -> bool:
        """A charger sample: power (+ charging) and/or its energy registers (Wh). Counts the energy
        since the previous sample into the SoC; a sample older than the last one is ignored.
        Returns whether the sample was taken (``power_w`` is then as of this sample)."""
        at = ensure_utc(at)
        registers: _Registers | None = None
        if energy_import_wh is not None or energy_export_wh is not None:
            registers = _Registers(at, energy_import_wh, energy_export_wh)
            if self._registers is not None and at < self._registers.at:
                registers = None
        if power_w is not None and self._power_at is not None and at < self._power_at:
            power_w = None
        if registers is None and power_w is None:
            return False
        self._count(at, registers)
        if registers is not None:
            self._registers = registers
            self._derive_power(registers)
        if power_w is not None:
            self._power_w, self._power_at = power_w, at
            self.power_w = power_w
        elif registers is not None and not self._power_recent(at):
            self.power_w = self._register_power_w
        return True

    def _power_recent(self, at: datetime) -> bool:
        return self._power_at is not None and at - self._power_at <= _MAX_INTEGRATION_GAP

    def _count(self, at: datetime, registers: _Registers | None) -> None:
        """Count the charger's energy from ``_counted_at`` to ``at``: registers, else power."""
        start = self._counted_at
        if self._soc is None or start is None or at <= start:
            return
        previous = self._registers
        unusable = False
        if registers is not None and previous is not None:
            energy_wh = self._register_energy(previous, registers)
            if energy_wh is not None:
                # Only the part of the interval after the last count (a reading may lie inside it).
                span_s = (at - previous.at).total_seconds()
                uncounted_s = (at - max(previous.at, start)).total_seconds()
                self._add(energy_wh * (1.0 if span_s <= 0 else min(1.0, uncounted_s / span_s)), at)
                return
            unusable = True  # a reset or a jump: the registers say nothing about this interval
        if self._power_w is not None and self._power_at is not None and self._power_recent(at):
            begin = max(self._power_at, start)
            self._add(self._power_w * max(0.0, (at - begin).total_seconds()) / 3600.0, at)
            return
        if unusable or self._power_at is not None:
            # Energy went unmetered: keep planning on the SoC, never discharge on it.
            self._measured = False
            self._counted_at = at

    def _register_energy(self, previous: _Registers, current: _Registers) -> float | None:
        """Net energy into the car (Wh) between two register samples; None when they cannot tell."""
        hours = max(0.0, (current.at - previous.at).total_seconds()) / 3600.0
        deltas: list[float | None] = []
        for before, after, max_kw in (
            (previous.import_wh, current.import_wh, self.vehicle.max_charge_kw),
            (previous.export_wh, current.export_wh, self.vehicle.max_discharge_kw),
        ):
            if before is None or after is None:
                deltas.append(None)
                continue
            delta = after - before
            if not 0.0 <= delta <= max_kw * 1000.0 * hours * _REGISTER_POWER_FACTOR + _REGISTER_SLACK_WH:
                return None  # backwards (a reset) or further than the car can take or give
            deltas.append(delta)
        imported, exported = deltas
        if imported is None and exported is None:
            return None
        # One register alone is the net energy unless the power says the other direction flowed.
        if exported is None:
            return None if self._power_w is not None and self._power_w < 0 else imported
        if imported is None:
            return None if self._power_w is not None and self._power_w > 0 else -exported
        return imported - exported

    def _derive_power(self, registers: _Registers) -> None:
        """The mean power over the registers of the last window (at least ``_REGISTER_POWER_WINDOW``)."""
        window = self._window
        if window is None or registers.at < window.at or registers.at - window.at > _MAX_INTEGRATION_GAP:
            if window is not None:
                self._register_power_w = None  # a gap: the last mean is no longer the power now
            self._window = registers
            return
        span = registers.at - window.at
        if span < _REGISTER_POWER_WINDOW:
            return
        energy_wh = self._register_energy(window, registers)
        self._register_power_w = None if energy_wh is None else energy_wh * 3600.0 / span.total_seconds()
        self._window = registers

    def _add(self, energy_wh: float, at: datetime) -> None:
        """Energy into the car at the charger (Wh, + charging) counted up to ``at``."""
        if self._soc is not None:
            self._soc = self._battery(self._soc, energy_wh)
            self._at = at if self._at is None else max(self._at, at)
        self._counted_at = at

    def _battery(self, soc: float, energy_wh: float) -> float:
        energy_kwh = energy_wh / 1000.0
        battery_kwh = (
            energy_kwh * self.vehicle.charge_efficiency
            if energy_kwh >= 0
            else energy_kwh / self.vehicle.discharge_efficiency
        )
        return min(100.0, max(0.0, soc + 100.0 * battery_kwh / self.vehicle.usable_capacity_kwh))

    def on_v2l(self, power_w: float, at: datetime) -> None:
        """What the car supplies to its own loads (V2L, W >= 0) as a V2L meter measures it: the
        previous draw over the time to this reading comes off the SoC, so a V2L session drains the
        SoC between SoC readings (a gap over 10 min with a draw makes the SoC an estimate)."""
        at = ensure_utc(at)
        if self._v2l_at is not None and at < self._v2l_at:
            return
        previous_w, previous_at = self._v2l_w, self._v2l_at
        self._v2l_w, self._v2l_at = max(0.0, power_w), at
        start = self._v2l_counted_at
        if self._soc is None or previous_w is None or previous_at is None or start is None:
            return
        if at - previous_at > _MAX_INTEGRATION_GAP:
            if previous_w > 0:
                self._measured = False
            self._v2l_counted_at = at
            return
        begin = max(previous_at, start)
        if at > begin:
            self._soc = self._battery(self._soc, -previous_w * (at - begin).total_seconds() / 3600.0)
            self._at = at if self._at is None else max(self._at, at)
            self._v2l_counted_at = at

    def on_arrival(self, at: datetime, trip_km: float | None = None) -> None:
        """Plugged in. Without a fresh reading, guess from the last SoC minus the trip's energy."""
        at = ensure_utc(at)
        self._forget_charger()
        if self._soc is None:
            return
        if trip_km is None:
            trip_km = self.vehicle.typical_trip_km
        used_percent = 100.0 * self.vehicle.energy_kwh_for_km(trip_km) / self.vehicle.usable_capacity_kwh
        self._anchor(max(0.0, self._soc - used_percent), at, False, "estimated from trip")

    def on_departure(self) -> None:
        self._forget_charger()

    def _forget_charger(self) -> None:
        self._power_w, self._power_at, self.power_w = None, None, None
        self._registers, self._window, self._register_power_w = None, None, None

    def estimate(self) -> SocEstimate | None:
        if self._soc is None or self._at is None or self._read_at is None:
            return None
        return SocEstimate(self._soc, self._at, self._measured, self._source, self._read_at)


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


def scheduled_trips(
    vehicle: VehicleConfig,
    now: datetime,
    end: datetime,
    timezone: str,
    *,
    plugged_in: bool,
    next_departure: Departure | None = None,
) -> list[Trip]:
    """The trips the weekly schedule lets the planner expect in ``[now, end)``, in time order.

    Each rule with a ``return_time`` is a trip from its departure to its return on the same local day
    (wall-clock times, so daylight saving time is honoured), using ``typical_trip_km`` of energy and
    wanting the rule's target at departure; rules without one say nothing about a return (the
    departure alone then plans the car as gone). A trip already under way counts only while the car
    is not plugged in (plugged in, it is back early or stayed home), and departs ``now`` with its
    whole energy and no target: the SoC the planner starts from is the one read before it left. ``next_departure`` is the next
    departure as the daemon knows it (:func:`next_departure`): when it falls on a rule's local day,
    that day's trip leaves then with its target instead, and there is no trip that day when it is
    not before the rule's return.
    """
    now, end = ensure_utc(now), ensure_utc(end)
    tz = zoneinfo.ZoneInfo(timezone)
    # No trip takes more than a full battery (and the snapshot bounds a trip's energy).
    energy_kwh = min(vehicle.energy_kwh_for_km(vehicle.typical_trip_km), vehicle.usable_capacity_kwh)
    announced_day = next_departure.at.astimezone(tz).date() if next_departure is not None else None
    trips: list[Trip] = []
    day = now.astimezone(tz).date()
    while datetime.combine(day, datetime.min.time(), tzinfo=tz) < end:
        rule = vehicle.departures.get(WEEKDAYS[day.weekday()])
        if rule is not None and rule.return_time is not None:
            depart = ensure_utc(datetime.combine(day, rule.time, tzinfo=tz))
            arrive = ensure_utc(datetime.combine(day, rule.return_time, tzinfo=tz))
            target: float | None = rule.target_soc_percent
            if next_departure is not None and announced_day == day:
                depart, target = next_departure.at, next_departure.target_soc_percent
            under_way = depart < now
            if depart < arrive and now < arrive and depart < end and not (under_way and plugged_in):
                if under_way:
                    # The planner counts a trip only from ``now`` on, but the SoC it starts from was
                    # read before the car left: the whole trip is still to come off it.
                    depart, target = now, None
                trips.append(
                    Trip(depart=depart, arrive=arrive, energy_kwh=energy_kwh, target_soc_percent=target)
                )
        day += timedelta(days=1)
    return trips
