"""One path from the world to the plan: the simulator's events, given to a real daemon through its
own entry points (OCPP event handler, MQTT message parsing, the command handler), leave the daemon in
the same state as the simulator's ``mpc`` path, and both build the same planner snapshot and the
same dispatcher inputs, field by field."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np

from controller.app import Daemon
from controller.clock import ManualClock
from controller.commands import Command
from controller.domain import MeterReading, VehicleMode
from controller.ocpp.model import ChargingNeeds
from sim.information import InformationModel
from sim.plant import Plant
from sim.site_feed import FeedFaults, MeterOutage, PriceUpdate, SiteEvent, SiteFeed, SocOutage
from tests.conftest import stored
from tests.test_sim_support import START, tiny_scenario

METERS = [
    {"id": "grid", "role": "grid", "topic": "home/grid", "stale_after_s": 600},
    {"id": "pv", "role": "pv", "topic": "home/pv", "stale_after_s": 600},
]
CHARGE_W = 3000.0


async def deliver(daemon: Daemon, events: list[SiteEvent]) -> None:
    """The events as a real daemon receives them: OCPP events from its server, meter and price
    messages as MQTT payloads on their topics, commands from its command channel."""
    topics = {m.id: m.topic for m in daemon.cfg.meters}
    tariff = daemon.cfg.tariff
    for event in events:
        if isinstance(event, MeterReading):
            daemon.mqtt.ingest(topics[event.meter_id], repr(event.value).encode())
        elif isinstance(event, PriceUpdate):
            price = tariff.import_ if event.direction == "import" else tariff.export
            assert price.dynamic_topic is not None
            slots = [
                {"start": s.start.isoformat(), "end": s.end.isoformat(), "value": s.value_per_kwh}
                for s in event.signal.slots
            ]
            daemon.mqtt.ingest(price.dynamic_topic, json.dumps(slots).encode())
        elif isinstance(event, Command):
            await daemon.router.handle_command(event)
        else:
            daemon.router.handle_ocpp_event(event)


async def test_the_simulators_events_leave_the_daemon_and_the_simulator_in_the_same_state(
    tmp_path: Path,
) -> None:
    scenario = tiny_scenario(
        days=2,
        meters=METERS,
        storage={"path": str(tmp_path / "v2x.sqlite")},
        tariff={"import": {"static_price_per_kwh": 0.3}},
    )
    faults = FeedFaults(
        # The PV meter is silent for two hours on the first morning: stale, safe mode.
        meter_outages=(MeterOutage("pv", START + timedelta(hours=2), START + timedelta(hours=4)),),
        # The car comes back from its first trip to a charger that reports no SoC for a while.
        soc_outages=(SocOutage("car", START + timedelta(hours=15), START + timedelta(hours=20)),),
        # Its EV reports its own limits at every plug-in.
        ev_limits={
            "car": ChargingNeeds(1, START, "AC_BPT", max_charge_power_w=6000.0, max_discharge_power_w=2500.0)
        },
    )
    plant = Plant(scenario)
    info = InformationModel(scenario, plant)
    horizon = 48
    feed = SiteFeed(scenario.config, horizon, faults)
    clock = ManualClock(START)
    daemon = Daemon(feed.config, clock)
    load_w, pv_w = np.full(horizon, 500.0), np.full(horizon, 1000.0)
    seen = {"safe mode": 0, "estimated soc": 0, "ev limits": 0, "prices": 0}
    try:
        for k in range(scenario.steps - 1):
            info.advance_to(k)
            now = info.now
            clock.set(now)
            vehicles = info.vehicles(horizon)
            power = {v.vehicle_id: CHARGE_W if v.plugged_in else 0.0 for v in vehicles}
            events = feed.step_events(info, vehicles, power)
            feed.apply(events, now)
            await deliver(daemon, events)

            sim, real = feed.site, daemon.site
            assert sim.inputs.stale_meters(now) == real.inputs.stale_meters(now)
            assert sim.inputs.safe_mode_reasons(now) == real.inputs.safe_mode_reasons(now)
            for vehicle_id, vehicle in sim.vehicles.items():
                assert vehicle.tracker.estimate() == real.vehicles[vehicle_id].tracker.estimate()
                assert vehicle.session_limits == real.vehicles[vehicle_id].session_limits
            planned = sim.planner_snapshot(now, load_w, pv_w).model_dump()
            assert planned == real.planner_snapshot(now, load_w, pv_w).model_dump()
            assert sim.dispatch_inputs(now, None) == real.dispatch_inputs(now, None)

            seen["safe mode"] += bool(sim.inputs.safe_mode_reasons(now))
            estimate = sim.vehicles["car"].tracker.estimate()
            car = planned["vehicles"][0]
            if estimate is not None and not estimate.measured and car["plugged_in"]:
                seen["estimated soc"] += 1
                assert car["mode"] == VehicleMode.NO_DISCHARGE  # no discharge on a guessed SoC
            seen["ev limits"] += car["session_limits"] is not None
            seen["prices"] += any(isinstance(e, PriceUpdate) for e in events)
            plant.step(k, [power["car"]], float(scenario.series.load_w[k]), float(scenario.series.pv_w[k]))
    finally:
        stored(daemon).close()
    # The sequence went through every case it is meant to compare.
    assert all(count > 0 for count in seen.values()), seen
