"""The daemon's own site state, fed with what happens in the simulated home.

The simulator proves what the daemon earns and keeps only if it runs the daemon's code from the
world to the plan. So the ``mpc`` strategy does not build the planner's snapshot itself: each step it
hands the events a real daemon would receive to :class:`controller.site_events.SiteEvents` (the
same code the daemon's event handlers call), into one :class:`controller.site.Site`, and asks the
site for the planner snapshot and the dispatcher's inputs, exactly as the daemon does:

* the chargers connect (with the OCPP version the daemon would negotiate, which decides whether a
  discharge can reach them);
* plug-in and unplug as the charger reports them (status, transaction start, transaction end);
* the car's SoC and power in a MeterValues sample at every step while it is plugged in;
* the grid meter (the home's net load plus what the cars draw), and the PV and home meters where
  the config has them, all stamped when the simulator makes them, so a meter goes stale only when
  a scenario makes it so;
* prices as published (the day-ahead auction's publication time), the rest filled by the daemon's
  own rule;
* the next departure as the driver announces it (the daemon's one-off departure command), unless
  the driver announces nothing (``trip_info="schedule-only"``): then the daemon has its weekly
  schedule and what it learns from the unplugs it sees.

The scenario's prices are final prices: the simulated daemon reads them as a dynamic tariff without
multiplier or markup, from the same price timelines as live prices. A config without a grid meter
gets one (``SIMULATED_GRID_METER``): the daemon refuses to discharge without one.

:class:`FeedFaults` makes the home behave worse on purpose: a meter that goes silent for a while, a
charger that reports no SoC (basic AC charging), an EV that reports its own limits at plug-in.
:meth:`SiteFeed.events` lists a step's events as the daemon would receive them, so the same list can
be given to a real daemon (a test does so to prove both paths end in the same state).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from controller.commands import Command, SetDeparture
from controller.config import MeterConfig, PriceConfig, SiteConfig
from controller.domain import Departure, MeterReading, MeterRole
from controller.ocpp.events import (
    ChargerConnected,
    ChargingNeedsReported,
    MeterValuesReceived,
    OcppEvent,
    StatusChanged,
    TransactionEnded,
    TransactionStarted,
)
from controller.ocpp.handshake import choose_version
from controller.ocpp.meter import MeterSample
from controller.ocpp.model import ChargingNeeds
from controller.signals import PriceSignal, PriceSlot
from controller.site import Site
from controller.site_events import EV_DISCONNECTED, Reaction, SiteEvents
from controller.site_inputs import PriceDirection
from sim.information import InformationModel, VehicleObservation
from sim.scenario import FloatArray

__all__ = [
    "SIMULATED_GRID_METER",
    "FeedFaults",
    "MeterOutage",
    "PriceUpdate",
    "SiteEvent",
    "SiteFeed",
    "SocOutage",
    "simulated_daemon_config",
]

SIMULATED_GRID_METER = "simulated-grid"
_PRICE_TOPIC = "simulated/prices/{}"


@dataclass(frozen=True, slots=True)
class MeterOutage:
    """Meter ``meter_id`` publishes nothing in ``[start, end)``."""

    meter_id: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class SocOutage:
    """The charger of ``vehicle_id`` reports no SoC in ``[start, end)`` (basic AC charging): the
    daemon counts energy from an estimate."""

    vehicle_id: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class FeedFaults:
    meter_outages: tuple[MeterOutage, ...] = ()
    soc_outages: tuple[SocOutage, ...] = ()
    ev_limits: Mapping[str, ChargingNeeds] = field(default_factory=dict)
    """Per vehicle, the NotifyEVChargingNeeds its EV sends at plug-in (``at`` and SoC are set then)."""


@dataclass(frozen=True, slots=True)
class PriceUpdate:
    """A price message as the daemon's MQTT client hands it over (values as sent)."""

    direction: PriceDirection
    signal: PriceSignal


SiteEvent = OcppEvent | MeterReading | PriceUpdate | Command


def simulated_daemon_config(config: SiteConfig) -> SiteConfig:
    """``config`` as the simulated daemon runs it: prices from the scenario as a plain dynamic
    tariff, and a grid meter if the config has none."""
    tariff = config.tariff.model_copy(
        update={
            "import_": PriceConfig(dynamic_topic=_PRICE_TOPIC.format("import")),
            "export": PriceConfig(dynamic_topic=_PRICE_TOPIC.format("export")),
        }
    )
    meters = list(config.meters)
    if not any(m.role is MeterRole.GRID for m in meters):
        meters.append(MeterConfig(id=SIMULATED_GRID_METER, role=MeterRole.GRID, topic="simulated/meter/grid"))
    for battery in config.home_batteries:
        # The simulated home reports each battery's power and SoC on meters of its own.
        for role in (MeterRole.BATTERY, MeterRole.BATTERY_SOC):
            if not any(m.role is role and m.battery == battery.id for m in meters):
                meters.append(
                    MeterConfig(
                        id=f"simulated-{role.value.replace('_', '-')}-{battery.id}",
                        role=role,
                        topic=f"simulated/meter/{role.value}/{battery.id}",
                        battery=battery.id,
                    )
                )
    return config.model_copy(update={"tariff": tariff, "meters": meters})


class SiteFeed:
    """One daemon's site state in the simulated home; ``feed`` once per step, before planning."""

    def __init__(self, config: SiteConfig, horizon_steps: int, faults: FeedFaults | None = None) -> None:
        self.config = simulated_daemon_config(config)
        self.site = Site(self.config)
        self.events = SiteEvents(self.site)
        self.horizon_steps = horizon_steps
        self.faults = faults or FeedFaults()
        self._site_meters = [
            m for m in self.config.meters if m.role in (MeterRole.GRID, MeterRole.PV, MeterRole.HOME)
        ]
        self._chargers = {v.id: v.home_charger for v in self.config.vehicles}
        self._plugged: dict[str, bool] = {}
        self._announced: dict[str, datetime | None] = {}
        self._published_until = 0
        self._transactions = 0
        self._transaction: dict[str, str] = {}
        self._connected = False

    def feed(
        self, info: InformationModel, vehicles: tuple[VehicleObservation, ...], power_w: Mapping[str, float]
    ) -> Reaction:
        """Apply this step's events (``power_w``: what each plugged-in car draws now, + charging);
        returns what they ask of the daemon (re-plan and why). The home batteries' power and SoC
        come from ``info.live_batteries()``."""
        return self.apply(self.step_events(info, vehicles, power_w), info.now)

    def apply(self, events: list[SiteEvent], now: datetime) -> Reaction:
        """Hand ``events`` to the site as the daemon's handlers do."""
        reaction = Reaction()
        inputs = self.site.inputs
        for event in events:
            if isinstance(event, MeterReading):
                inputs.update_meter(event)
                reaction.merge(self.events.reading(event))
            elif isinstance(event, PriceUpdate):
                inputs.update_prices(event.direction, event.signal, now)
                reaction.replan.append(f"{event.direction}_prices")
            elif isinstance(event, Command):
                reaction.merge(self.events.command(event, now))
            else:
                reaction.merge(self.events.ocpp(event, now))
        return reaction

    def step_events(
        self, info: InformationModel, vehicles: tuple[VehicleObservation, ...], power_w: Mapping[str, float]
    ) -> list[SiteEvent]:
        """What the daemon receives during this step, in order."""
        now = info.now
        events: list[SiteEvent] = []
        if not self._connected:
            self._connected = True
            events += self._connect_chargers(now)
        for vehicle in vehicles:
            events += self._vehicle(vehicle, power_w.get(vehicle.vehicle_id, 0.0), now)
        cars_w = sum(power_w.get(v.vehicle_id, 0.0) for v in vehicles if v.plugged_in)
        batteries = info.live_batteries()
        events += self._meters(info, cars_w + sum(b[1] for b in batteries), now)
        events += self._battery_meters(batteries, now)
        events += self._prices(info, now)
        return events

    # ---------------------------------------------------------------- events

    def _connect_chargers(self, now: datetime) -> list[SiteEvent]:
        events: list[SiteEvent] = []
        for charger in self.config.chargers:
            # It offers every version it is configured for; the daemon picks as its server does.
            version = choose_version([f"ocpp{v.value}" for v in charger.ocpp_versions], charger.ocpp_versions)
            if version is not None:
                events.append(ChargerConnected(charger.id, version, now))
        return events

    def _vehicle(self, vehicle: VehicleObservation, power_w: float, now: datetime) -> list[SiteEvent]:
        vehicle_id = vehicle.vehicle_id
        charger_id = self._chargers.get(vehicle_id)
        if charger_id is None:
            return []
        evse_id = self.site.charger_evse.get(charger_id, 1)
        events: list[SiteEvent] = []
        was_plugged = self._plugged.get(vehicle_id, False)
        self._plugged[vehicle_id] = vehicle.plugged_in
        silent = any(o.vehicle_id == vehicle_id and o.start <= now < o.end for o in self.faults.soc_outages)
        soc = None if silent else vehicle.soc_percent
        if vehicle.plugged_in and not was_plugged:
            self._transactions += 1
            self._transaction[vehicle_id] = f"sim-{self._transactions}"
            events.append(StatusChanged(charger_id, evse_id, 1, "Occupied", "Available", now))
            events.append(TransactionStarted(charger_id, evse_id, self._transaction[vehicle_id], now))
            needs = self.faults.ev_limits.get(vehicle_id)
            if needs is not None:
                needs = dataclasses.replace(needs, evse_id=evse_id, at=now, soc_percent=soc)
                events.append(ChargingNeedsReported(charger_id, needs))
        transaction = self._transaction.get(vehicle_id, "sim-0")
        if was_plugged and not vehicle.plugged_in:
            events.append(TransactionEnded(charger_id, evse_id, transaction, now, reason=EV_DISCONNECTED))
            events.append(StatusChanged(charger_id, evse_id, 1, "Available", "Occupied", now))
        if vehicle.plugged_in:
            sample = MeterSample(at=now, power_w=power_w, soc_percent=soc)
            events.append(MeterValuesReceived(charger_id, evse_id, transaction, sample))
        events += self._announce(vehicle)
        return events

    def _announce(self, vehicle: VehicleObservation) -> list[SiteEvent]:
        """The driver's next departure, announced once (and again when it changes); nothing when the
        driver announces nothing."""
        if not vehicle.departure_announced:
            return []
        known = vehicle.next_departure
        at = known.at if known is not None else None
        previous = self._announced.get(vehicle.vehicle_id)
        self._announced[vehicle.vehicle_id] = at
        if known is None or previous == at:
            return []
        return [SetDeparture(vehicle.vehicle_id, Departure(known.at, known.target_soc_percent))]

    def _meters(self, info: InformationModel, cars_w: float, now: datetime) -> list[SiteEvent]:
        pv_w = info.live_pv_w()
        load_w = info.live_load_w()
        values = {MeterRole.GRID: load_w - pv_w + cars_w, MeterRole.PV: pv_w, MeterRole.HOME: load_w}
        events: list[SiteEvent] = []
        seen: set[MeterRole] = set()
        for meter in self._site_meters:
            # One meter per role carries the whole flow; a second one of the role reads 0.
            value = values[meter.role] if meter.role not in seen else 0.0
            seen.add(meter.role)
            if not any(o.meter_id == meter.id and o.start <= now < o.end for o in self.faults.meter_outages):
                events.append(MeterReading(meter.id, meter.role, value, now))
        return events

    def _battery_meters(
        self, batteries: tuple[tuple[str, float, float], ...], now: datetime
    ) -> list[SiteEvent]:
        """Each home battery's power (+ charging) and SoC on the meters that name it."""
        events: list[SiteEvent] = []
        for battery_id, power_w, soc_percent in batteries:
            for meter in self.config.meters:
                if meter.battery != battery_id:
                    continue
                if meter.role is MeterRole.BATTERY:
                    events.append(MeterReading(meter.id, meter.role, power_w, now))
                elif meter.role is MeterRole.BATTERY_SOC:
                    events.append(MeterReading(meter.id, meter.role, soc_percent, now))
        return events

    def _prices(self, info: InformationModel, now: datetime) -> list[SiteEvent]:
        """Prices published since the last step, as a price message would carry them; only as far
        ahead as a plan can look (a tariff known for the whole year arrives a day at a time)."""
        until = min(info.prices_published_until(), info.k + self.horizon_steps + info.steps_per_day)
        start = max(self._published_until, info.k)
        if until <= start:
            return []
        self._published_until = until
        imports, exports = info.published_prices(start, until)
        step = info.step
        first = now + (start - info.k) * step
        updates: list[SiteEvent] = []
        directions: tuple[tuple[PriceDirection, FloatArray], ...] = (("import", imports), ("export", exports))
        for direction, values in directions:
            slots = tuple(
                PriceSlot(first + i * step, first + (i + 1) * step, float(value))
                for i, value in enumerate(values)
            )
            updates.append(PriceUpdate(direction, PriceSignal(slots)))
        return updates
