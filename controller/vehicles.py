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
daemon can expect inside the plan horizon (:func:`scheduled_trips`). An announced departure (the
one-off command or the charger's) replaces the rule of its own local date. Drivers leave early or
late:

* **early**: each unplug within ``max_lead_minutes`` before to ``LATE_WINDOW`` after a weekly-schedule
  departure is remembered (:func:`departure_seen`, :func:`remember_departure`); a weekday's target is
  then due the learnt lead before the rule's time (:func:`early_leads`, the rule of
  ``EarlyDepartures``);
* **late**: a car still plugged in after its departure holds that departure's target as a floor
  (:func:`overdue_departure`) until it is unplugged, a new departure is announced, or the next
  departure takes its place.

Pure: no I/O.
"""

from __future__ import annotations

import functools
import math
import zoneinfo
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from controller.config import DepartureRule, VehicleConfig
from controller.domain import Departure, ensure_utc
from controller.snapshot import Trip

__all__ = [
    "LATE_WINDOW",
    "MAX_DEPARTURES_SEEN",
    "DepartureSeen",
    "OverdueDeparture",
    "SocEstimate",
    "SocTracker",
    "departure_seen",
    "early_leads",
    "next_departure",
    "overdue_departure",
    "remember_departure",
    "scheduled_trips",
]

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
# An unplug up to this long after a weekly-schedule departure is still that departure (a late one);
# up to ``early_departures.max_lead_minutes`` before it, an early one.
LATE_WINDOW = timedelta(hours=3)
# At most one remembered departure per day for the longest ``learn_weeks`` (52).
MAX_DEPARTURES_SEEN = 7 * 52
# How far back an overdue departure is looked for (a weekly schedule repeats within a week).
_OVERDUE_LOOKBACK_DAYS = 8


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


def _occurrences(
    vehicle: VehicleConfig,
    tz: zoneinfo.ZoneInfo,
    first: date,
    last: date,
    leads: Mapping[str, timedelta] | None,
) -> Iterator[tuple[date, Departure]]:
    """The weekly schedule's departures on the local days ``first..last``, each due its weekday's
    lead before the rule's wall-clock time."""
    day = first
    while day <= last:
        weekday = WEEKDAYS[day.weekday()]
        rule = vehicle.departures.get(weekday)
        if rule is not None:
            lead = leads.get(weekday, timedelta(0)) if leads else timedelta(0)
            at = _local_time_in_utc(day, rule.time, tz) - lead
            yield day, Departure(at, rule.target_soc_percent)
        day += timedelta(days=1)


@functools.lru_cache(maxsize=1024)
def _local_time_in_utc(day: date, wall_clock: time, tz: zoneinfo.ZoneInfo) -> datetime:
    """``day`` at ``wall_clock`` in ``tz``, in UTC (cached: every re-plan asks for the same days)."""
    return ensure_utc(datetime.combine(day, wall_clock, tzinfo=tz))


def _announced_days(tz: zoneinfo.ZoneInfo, *announced: Departure | None) -> set[date]:
    """The local dates whose weekly rule an announced departure replaces."""
    return {d.at.astimezone(tz).date() for d in announced if d is not None}


def next_departure(
    vehicle: VehicleConfig,
    now: datetime,
    timezone: str,
    *,
    one_off: Departure | None = None,
    from_charger: Departure | None = None,
    horizon: timedelta = timedelta(days=8),
    leads: Mapping[str, timedelta] | None = None,
) -> Departure | None:
    """The next departure after ``now``: the earliest of the announced ones (a one-off override, the
    charger's from the EV's charging needs) and the weekly schedule's.

    An announced departure replaces the weekly rule of its own local date, earlier or later than the
    rule's time: on that date the schedule has no departure (an announced departure after the day's
    rule has passed is simply the next one). A weekly departure's target is due ``leads[weekday]``
    before the rule's time (:func:`early_leads`); an announced one is due when announced.
    """
    now = ensure_utc(now)
    tz = zoneinfo.ZoneInfo(timezone)
    candidates = [d for d in (one_off, from_charger) if d is not None and d.at > now]
    replaced = _announced_days(tz, one_off, from_charger)
    today = now.astimezone(tz).date()
    for day, departure in _occurrences(vehicle, tz, today, today + timedelta(days=horizon.days), leads):
        if day not in replaced and departure.at > now:
            candidates.append(departure)
            break
    return min(candidates, key=lambda d: d.at) if candidates else None


@dataclass(frozen=True, slots=True)
class OverdueDeparture:
    """A departure that has passed with the car still plugged in: the driver is about to leave."""

    departure: Departure
    until: datetime | None
    """When the next scheduled departure takes its place (None: only an unplug or a new
    announcement ends the hold)."""


def overdue_departure(
    vehicle: VehicleConfig,
    now: datetime,
    timezone: str,
    *,
    one_off: Departure | None = None,
    from_charger: Departure | None = None,
    leads: Mapping[str, timedelta] | None = None,
    plugged_at: datetime | None = None,
    announced_at: datetime | None = None,
) -> OverdueDeparture | None:
    """The departure a plugged-in car is overdue for, whose target it holds as a floor; None if none.

    The overdue departure is the latest departure at or before ``now`` (announced, or the weekly
    schedule's on a date no announcement replaced, due as :func:`next_departure` says). The car
    holds its target while all of these are true:

    * the car has been plugged in since before it (``plugged_at`` None: since an unknown time, so
      it counts as before);
    * no departure was announced after it (``announced_at``: the one-off command or a new departure
      from the charger);
    * its replacement has not come: ``until``, the earlier of the return time of the weekly rule of
      its local date (if after it: the trip clearly did not happen) and the next departure after it
      (which then takes its place, overdue in turn if the car is still plugged in).

    Unplugging ends the hold (the caller asks only for a plugged-in car).
    """
    now = ensure_utc(now)
    tz = zoneinfo.ZoneInfo(timezone)
    replaced = _announced_days(tz, one_off, from_charger)
    today = now.astimezone(tz).date()
    passed = [d for d in (one_off, from_charger) if d is not None and d.at <= now]
    first = today - timedelta(days=_OVERDUE_LOOKBACK_DAYS)
    # Tomorrow's too: a lead may bring it before midnight.
    for day, departure in _occurrences(vehicle, tz, first, today + timedelta(days=1), leads):
        if day not in replaced and departure.at <= now:
            passed.append(departure)
    if not passed:
        return None
    last = max(passed, key=lambda d: d.at)
    if plugged_at is not None and ensure_utc(plugged_at) >= last.at:
        return None  # plugged in after it: back from that trip, or arrived since
    if announced_at is not None and ensure_utc(announced_at) > last.at:
        return None
    ends: list[datetime] = []
    day = last.at.astimezone(tz).date()
    rule = vehicle.departures.get(WEEKDAYS[day.weekday()])
    if rule is not None and rule.return_time is not None:
        back = _local_time_in_utc(day, rule.return_time, tz)
        if back > last.at:
            ends.append(back)
    following = next_departure(
        vehicle, last.at, timezone, one_off=one_off, from_charger=from_charger, leads=leads
    )
    if following is not None:
        ends.append(following.at)
    until = min(ends) if ends else None
    if until is not None and until <= now:
        return None
    return OverdueDeparture(last, until)


# ----------------------------------------------------------------- early departures


@dataclass(frozen=True, slots=True)
class DepartureSeen:
    """An unplug near a weekly-schedule departure: what the schedule said and when the car left."""

    weekday: str
    scheduled: time
    """The rule's local time that day."""
    scheduled_at: datetime
    """That departure as a moment (UTC), without any lead."""
    unplugged_at: datetime

    @property
    def early(self) -> timedelta:
        """How much earlier than scheduled the car left (negative: later)."""
        return self.scheduled_at - self.unplugged_at


def departure_seen(
    vehicle: VehicleConfig,
    unplugged_at: datetime,
    timezone: str,
    *,
    announced: tuple[Departure | None, ...] = (),
) -> DepartureSeen | None:
    """The weekly-schedule departure an unplug at ``unplugged_at`` was, or None.

    An unplug is a departure of the schedule when it lies from ``early_departures.max_lead_minutes``
    before a rule's time to ``LATE_WINDOW`` after it (the nearest such rule), on a local date whose
    rule no ``announced`` departure replaced (the driver said otherwise that day).
    """
    unplugged_at = ensure_utc(unplugged_at)
    tz = zoneinfo.ZoneInfo(timezone)
    before = timedelta(minutes=vehicle.early_departures.max_lead_minutes)
    replaced = _announced_days(tz, *announced)
    day = unplugged_at.astimezone(tz).date()
    best: DepartureSeen | None = None
    for rule_day, departure in _occurrences(
        vehicle, tz, day - timedelta(days=1), day + timedelta(days=1), None
    ):
        if rule_day in replaced or not departure.at - before <= unplugged_at <= departure.at + LATE_WINDOW:
            continue
        weekday = WEEKDAYS[rule_day.weekday()]
        rule: DepartureRule = vehicle.departures[weekday]
        seen = DepartureSeen(weekday, rule.time, departure.at, unplugged_at)
        if best is None or abs(seen.early) < abs(best.early):
            best = seen
    return best


def remember_departure(
    seen: tuple[DepartureSeen, ...], new: DepartureSeen, vehicle: VehicleConfig
) -> tuple[DepartureSeen, ...]:
    """``seen`` with ``new`` added: the first unplug of a departure counts (a later one of the same
    departure is not added), only the last ``learn_weeks`` weeks are kept, at most
    ``MAX_DEPARTURES_SEEN``."""
    if any(s.scheduled_at == new.scheduled_at for s in seen):
        return seen
    oldest = new.scheduled_at - timedelta(weeks=vehicle.early_departures.learn_weeks)
    kept = sorted((*(s for s in seen if s.scheduled_at > oldest), new), key=lambda s: s.scheduled_at)
    return tuple(kept[-MAX_DEPARTURES_SEEN:])


def early_leads(
    vehicle: VehicleConfig, seen: tuple[DepartureSeen, ...], now: datetime, timezone: str
) -> dict[str, timedelta]:
    """Per weekday with a rule, how long before the rule's time its target is due (the rule of
    ``EarlyDepartures``; weekdays without a lead are left out).

    The samples are the departures seen on that weekday at the rule's current time (a changed time
    starts over) within the last ``learn_weeks`` weeks of local dates; with fewer than
    ``min_samples`` there is no lead. Each sample's earliness (0 for a late one), sorted, is taken at
    ``cover_share``: the smallest lead that covers at least that share of them, at most
    ``max_lead_minutes``.
    """
    settings = vehicle.early_departures
    tz = zoneinfo.ZoneInfo(timezone)
    since = ensure_utc(now).astimezone(tz).date() - timedelta(weeks=settings.learn_weeks)
    cap = timedelta(minutes=settings.max_lead_minutes)
    leads: dict[str, timedelta] = {}
    for weekday, rule in vehicle.departures.items():
        early = sorted(
            max(timedelta(0), s.early)
            for s in seen
            if s.weekday == weekday
            and s.scheduled == rule.time
            and s.scheduled_at.astimezone(tz).date() > since
        )
        covered = math.ceil(settings.cover_share * len(early) - 1e-9)
        if len(early) < settings.min_samples or covered <= 0:
            continue
        lead = min(early[covered - 1], cap)
        if lead > timedelta(0):
            leads[weekday] = lead
    return leads


def scheduled_trips(
    vehicle: VehicleConfig,
    now: datetime,
    end: datetime,
    timezone: str,
    *,
    plugged_in: bool,
    next_departure: Departure | None = None,
    leads: Mapping[str, timedelta] | None = None,
) -> list[Trip]:
    """The trips the weekly schedule lets the planner expect in ``[now, end)``, in time order.

    Each rule with a ``return_time`` is a trip from its departure to its return on the same local day
    (wall-clock times, so daylight saving time is honoured), using ``typical_trip_km`` of energy and
    wanting the rule's target at departure; rules without one say nothing about a return (the
    departure alone then plans the car as gone). A trip already under way counts only while the car
    is not plugged in (plugged in, it is back early or stayed home), and departs ``now`` with its
    whole energy and no target: the SoC the planner starts from is the one read before it left.
    ``next_departure`` is the next departure as the daemon knows it (:func:`next_departure`): when it falls on a rule's local day,
    that day's trip leaves then with its target instead, and there is no trip that day when it is
    not before the rule's return. A trip leaves its weekday's learnt lead (``leads``, as for
    :func:`next_departure`) before the rule's time.
    """
    now, end = ensure_utc(now), ensure_utc(end)
    tz = zoneinfo.ZoneInfo(timezone)
    # No trip takes more than a full battery (and the snapshot bounds a trip's energy).
    energy_kwh = min(vehicle.energy_kwh_for_km(vehicle.typical_trip_km), vehicle.usable_capacity_kwh)
    announced_day = next_departure.at.astimezone(tz).date() if next_departure is not None else None
    trips: list[Trip] = []
    day = now.astimezone(tz).date()
    while datetime.combine(day, datetime.min.time(), tzinfo=tz) < end:
        weekday = WEEKDAYS[day.weekday()]
        rule = vehicle.departures.get(weekday)
        if rule is not None and rule.return_time is not None:
            lead = leads.get(weekday, timedelta(0)) if leads else timedelta(0)
            depart = _local_time_in_utc(day, rule.time, tz) - lead
            arrive = _local_time_in_utc(day, rule.return_time, tz)
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
