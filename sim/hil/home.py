"""A virtual home around the real daemon: chargers with cars, meters, prices and trips from a scenario.

The home runs on the daemon's clock (a :class:`~controller.clock.ScaledClock` in simulated time):

* each vehicle's home charger is a :class:`~sim.hil.virtual_charger.VirtualCharger` with a
  :class:`~sim.hil.car.VirtualCar` at the scenario's initial SoC; a trip unplugs it at ``depart``,
  takes the trip's energy from the battery and plugs it in again at ``arrive``;
* the grid meter (Shelly Pro 3EM, per phase) reads home load - PV + what the chargers draw, the PV
  meter (Tasmota) the series' PV, both published by :class:`~sim.hil.meters.VirtualMeters`;
* the series' prices are published on the tariff topics for the next ``PRICE_HORIZON`` every hour,
  as a day-ahead market would be seen;
* it meters what the grid connection costs, minute by minute at the series' prices
  (:attr:`VirtualHome.totals`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiomqtt

from controller.clock import Clock
from controller.config import OcppVersion, SiteConfig
from sim.hil.car import VirtualCar
from sim.hil.faults import Faults
from sim.hil.meters import HomeMeters, MeterValues, VirtualMeters
from sim.hil.record import HilRecorder
from sim.hil.virtual_charger import VirtualCharger
from sim.information import IntArray, PriceKnowledge
from sim.scenario import Scenario

__all__ = ["HomeNow", "HomeTotals", "VirtualHome"]

PRICE_HORIZON = timedelta(hours=48)
PRICE_REPUBLISH = timedelta(hours=1)
TICK_S = 10.0
"""Simulated seconds between two physics steps (meters, energy, trips)."""


@dataclass(frozen=True, slots=True)
class _Trip:
    vehicle_id: str
    depart: datetime
    arrive: datetime
    energy_kwh: float
    target_soc_percent: float


@dataclass(slots=True)
class HomeTotals:
    """The grid connection's energy and money since the start (at the series' prices)."""

    import_kwh: float = 0.0
    export_kwh: float = 0.0
    cost: float = 0.0
    cars_charged_kwh: dict[str, float] = field(default_factory=dict)
    cars_discharged_kwh: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HomeNow:
    at: datetime
    grid_w: float
    load_w: float
    pv_w: float
    cars_w: dict[str, float]
    soc_percent: dict[str, float]
    plugged: dict[str, bool]


def price_payload(
    scenario: Scenario, since: datetime, column: str, known_until: IntArray
) -> list[dict[str, object]]:
    """The series' prices from the step containing ``since`` up to what is published by then (the
    simulator's :class:`~sim.information.PriceKnowledge`: today's, and tomorrow's from noon), as the
    daemon's dynamic price topics take them (``start``, ``end``, ``value`` per kWh)."""
    series = scenario.series
    first = min(series.steps - 1, max(0, math.floor(series.index_of(since))))
    last = min(series.steps, int(known_until[first]), first + int(PRICE_HORIZON / series.step))
    values = getattr(series, column)
    return [
        {
            "start": series.time_at(i).isoformat().replace("+00:00", "Z"),
            "end": series.time_at(i + 1).isoformat().replace("+00:00", "Z"),
            "value": round(float(values[i]), 5),
        }
        for i in range(first, last)
    ]


class VirtualHome:
    def __init__(
        self,
        scenario: Scenario,
        clock: Clock,
        *,
        ocpp_url: str,
        broker_port: int,
        meters: HomeMeters,
        versions: Mapping[str, OcppVersion] | None = None,
        faults: Faults | None = None,
        seed: int = 0,
        recorder: HilRecorder | None = None,
        call_timeout_s: float = 120.0,
    ) -> None:
        self.scenario = scenario
        self.cfg: SiteConfig = scenario.config
        self.clock = clock
        self.broker_port = broker_port
        self.meters = meters
        self.totals = HomeTotals()
        self.now: HomeNow | None = None
        self._last_tick: datetime | None = None
        self._last_net_wh: dict[str, float] = {}
        self.recorder = recorder
        series = scenario.series
        self._schedule = [
            _Trip(
                t.vehicle_id,
                series.time_at(t.depart_index),
                series.time_at(t.arrive_index),
                t.energy_kwh,
                t.target_soc_percent,
            )
            for t in scenario.scheduled_trips
        ]
        rng = random.Random(seed)
        self.cars: dict[str, VirtualCar] = {}
        self.chargers: dict[str, VirtualCharger] = {}
        for vehicle in self.cfg.vehicles:
            charger_id = vehicle.home_charger or (self.cfg.chargers[0].id if self.cfg.chargers else None)
            if charger_id is None or charger_id in self.chargers:
                continue
            car = VirtualCar(
                capacity_kwh=vehicle.usable_capacity_kwh,
                soc_percent=scenario.initial_soc(vehicle),
                max_charge_w=vehicle.max_charge_kw * 1000.0,
                max_discharge_w=vehicle.max_discharge_kw * 1000.0,
                charge_efficiency=vehicle.charge_efficiency,
                discharge_efficiency=vehicle.discharge_efficiency,
            )
            charger_cfg = self.cfg.charger(charger_id)
            version = (versions or {}).get(charger_id) or (
                charger_cfg.ocpp_versions[-1] if charger_cfg is not None else OcppVersion.V21
            )
            self.cars[vehicle.id] = car
            self.chargers[vehicle.id] = VirtualCharger.from_site(
                self.cfg,
                charger_id,
                version,
                f"{ocpp_url}/{charger_id}",
                car=car,
                clock=clock,
                rng=random.Random(rng.random()),
                faults=faults,
                call_timeout_s=call_timeout_s,
            )
        # The trips as the simulator runs them: snapped to the step grid (``Scenario.scheduled_trips``),
        # so a HIL run and ``v2x sim run`` see the same departures.
        self._events = sorted(
            [(t.depart, "depart", t.vehicle_id, t.energy_kwh) for t in self._schedule]
            + [(t.arrive, "arrive", t.vehicle_id, t.energy_kwh) for t in self._schedule]
        )

    # ------------------------------------------------------------------ running

    async def run(self, until: datetime, on_tick: Callable[[HomeNow], None] | None = None) -> HomeTotals:
        """Drive the home until the clock reaches ``until``; the chargers and meters stop after."""
        start = self.clock.now()
        away = {t.vehicle_id for t in self._schedule if t.depart <= start < t.arrive}
        async with contextlib.AsyncExitStack() as stack:
            client = aiomqtt.Client("127.0.0.1", self.broker_port, identifier="hil-home")
            await stack.enter_async_context(client)
            for vehicle_id, charger in self.chargers.items():
                await charger.start()
                stack.push_async_callback(charger.close)
                if vehicle_id not in away:
                    await self._plug_in(client, vehicle_id, start)
            meters = VirtualMeters(
                self.meters, self._meter_values, port=self.broker_port, clock=self.clock, period_s=2.0
            )
            await stack.enter_async_context(meters)
            prices = asyncio.create_task(self._publish_prices(client, until), name="hil-prices")
            stack.callback(prices.cancel)
            while (now := self.clock.now()) < until:
                await self._trips(client, now)
                self._step(now)
                if on_tick is not None and self.now is not None:
                    on_tick(self.now)
                await self.clock.sleep(TICK_S)
            self._step(self.clock.now())  # the last interval, up to (just past) ``until``
        return self.totals

    async def _trips(self, client: aiomqtt.Client, now: datetime) -> None:
        while self._events and self._events[0][0] <= now:
            at, kind, vehicle_id, energy_kwh = self._events.pop(0)
            charger, car = self.chargers.get(vehicle_id), self.cars.get(vehicle_id)
            if charger is None or car is None:
                continue
            if kind == "depart":
                await charger.unplug()
                if self.recorder is not None:
                    target_kwh = self._target_percent(vehicle_id, at) * car.capacity_kwh / 100.0
                    self.recorder.depart(vehicle_id, now, car.energy_wh / 1000.0, target_kwh)
                car.soc_percent = max(0.0, car.soc_percent - 100.0 * energy_kwh / car.capacity_kwh)
            else:
                await self._plug_in(client, vehicle_id, now)

    def _target_percent(self, vehicle_id: str, depart: datetime) -> float:
        """The driver's target for the trip leaving at ``depart`` (as the simulator schedules it)."""
        trips = [t for t in self._schedule if t.vehicle_id == vehicle_id]
        if trips:
            return float(
                min(trips, key=lambda t: abs((t.depart - depart).total_seconds())).target_soc_percent
            )
        vehicle = self.cfg.vehicle(vehicle_id)
        return vehicle.default_target_soc_percent if vehicle is not None else 80.0

    def _step(self, now: datetime) -> None:
        """Account the grid connection since the last tick. The interval is the clock's, not the
        nominal tick (a loaded machine wakes late), and the cars' energy is their chargers' own
        counters (exact through ramps), so no energy goes uncounted."""
        last = self._last_tick
        self._last_tick = now
        for charger in self.chargers.values():
            charger.advance()
        if last is None and self.recorder is not None:
            for vid, car in self.cars.items():
                self.recorder.initial_energy_kwh.setdefault(vid, car.energy_wh / 1000.0)
        net_wh = {vid: c.energy_import_wh - c.energy_export_wh for vid, c in self.chargers.items()}
        seconds = (now - last).total_seconds() if last is not None else 0.0
        previous = self._last_net_wh
        self._last_net_wh = net_wh
        if last is not None and seconds > 0:  # each car's mean power over the interval
            cars_w = {vid: (wh - previous.get(vid, wh)) * 3600.0 / seconds for vid, wh in net_wh.items()}
            for since, part_s, index in self._by_series_step(last, now):
                series = self.scenario.series
                grid_w = float(series.load_w[index]) - float(series.pv_w[index]) + sum(cars_w.values())
                self._account(since, part_s, index, grid_w, cars_w)
        series = self.scenario.series
        index = self._index(now)
        load_w, pv_w = float(series.load_w[index]), float(series.pv_w[index])
        self.now = HomeNow(
            at=now,
            grid_w=load_w - pv_w + sum(c.power_w for c in self.chargers.values()),
            load_w=load_w,
            pv_w=pv_w,
            cars_w={vid: charger.power_w for vid, charger in self.chargers.items()},
            soc_percent={vid: car.soc_percent for vid, car in self.cars.items()},
            plugged={vid: charger.transaction_id is not None for vid, charger in self.chargers.items()},
        )

    def _index(self, at: datetime) -> int:
        series = self.scenario.series
        return min(series.steps - 1, max(0, math.floor(series.index_of(at))))

    def _by_series_step(self, since: datetime, until: datetime) -> list[tuple[datetime, float, int]]:
        """``[since, until)`` cut at the series' step boundaries: (start, seconds, step index) each."""
        parts = []
        while since < until:
            index = self._index(since)
            end = min(until, self.scenario.series.time_at(index + 1))
            if end <= since:  # past the series' end: the last step's values hold
                end = until
            parts.append((since, (end - since).total_seconds(), index))
            since = end
        return parts

    def _account(
        self, since: datetime, seconds: float, index: int, grid_w: float, cars_w: dict[str, float]
    ) -> None:
        """``seconds`` from ``since`` at mean powers ``grid_w`` and ``cars_w``, priced at step ``index``."""
        series = self.scenario.series
        hours = seconds / 3600.0
        totals = self.totals
        totals.import_kwh += max(grid_w, 0.0) / 1000.0 * hours
        totals.export_kwh += max(-grid_w, 0.0) / 1000.0 * hours
        totals.cost += (
            (
                max(grid_w, 0.0) * float(series.import_price_per_kwh[index])
                - max(-grid_w, 0.0) * float(series.export_price_per_kwh[index])
            )
            / 1000.0
            * hours
        )
        for vid, power_w in cars_w.items():
            charged = totals.cars_charged_kwh.setdefault(vid, 0.0)
            discharged = totals.cars_discharged_kwh.setdefault(vid, 0.0)
            totals.cars_charged_kwh[vid] = charged + max(power_w, 0.0) / 1000.0 * hours
            totals.cars_discharged_kwh[vid] = discharged + max(-power_w, 0.0) / 1000.0 * hours
        if self.recorder is not None:
            self.recorder.sample(since, seconds, grid_w, cars_w)
            end = since + timedelta(seconds=seconds)
            step_index = math.floor(series.index_of(end)) - 1
            if step_index >= 0:
                self.recorder.step_end(
                    step_index,
                    {vid: car.energy_wh / 1000.0 for vid, car in self.cars.items()},
                    {vid: charger.transaction_id is not None for vid, charger in self.chargers.items()},
                )

    def _meter_values(self) -> MeterValues:
        now = self.now
        if now is None:
            return MeterValues()
        return MeterValues(grid_w=now.grid_w, grid_phases_w=(now.grid_w / 3.0,) * 3, pv_w=now.pv_w)

    async def _publish_prices(self, client: aiomqtt.Client, until: datetime) -> None:
        """Prices on the tariff topics, every ``PRICE_REPUBLISH`` of simulated time (retained)."""
        tariff = self.cfg.tariff
        topics = [
            (getattr(tariff.import_, "dynamic_topic", None), "import_price_per_kwh"),
            (getattr(tariff.export, "dynamic_topic", None), "export_price_per_kwh"),
        ]
        known = PriceKnowledge().known_until(self.scenario.series, self.cfg.site.timezone)
        while self.clock.now() < until:
            for topic, column in topics:
                if topic:
                    payload = json.dumps(price_payload(self.scenario, self.clock.now(), column, known))
                    await client.publish(topic, payload, qos=1, retain=True)
            await self.clock.sleep(PRICE_REPUBLISH.total_seconds())

    async def _plug_in(self, client: aiomqtt.Client, vehicle_id: str, now: datetime) -> None:
        """The car plugs in; the driver announces the next departure (as the simulator's driver does:
        the daemon's one-off departure command; a 2.1 car also tells its charger)."""
        car, charger = self.cars[vehicle_id], self.chargers[vehicle_id]
        upcoming = [t for t in self._schedule if t.vehicle_id == vehicle_id and t.depart > now]
        departure = min(upcoming, key=lambda t: t.depart).depart if upcoming else None
        if departure is not None:
            car.target_soc_percent = self._target_percent(vehicle_id, departure)
            command = {
                "at": departure.isoformat().replace("+00:00", "Z"),
                "target_soc_percent": car.target_soc_percent,
            }
            topic = f"{self.cfg.mqtt.base_topic}/cmd/{vehicle_id}/departure"
            await client.publish(topic, json.dumps(command), qos=1)
        await charger.plug_in(car, departure=departure)
        if self.recorder is not None:
            self.recorder.plug_in(vehicle_id, now, car.energy_wh / 1000.0)
