"""OCPP CSMS under load: 200 simulated chargers on loopback, MeterValues every 10 s, one plan update.

This process runs ``OcppServer`` (the measured process). A child process simulates the chargers with
hand-written OCPP-J frames over ``websockets`` (a third each on 1.6, 2.0.1 and 2.1): boot, status,
a transaction, then MeterValues (power, energy, SoC) every ``--interval`` seconds, spread evenly.

Reported:

* setup: time until every charger is booted, configured, has its default profile and a transaction;
* steady state: server CPU (% of one core) while only MeterValues flow, and the messages handled;
* plan update: one ``apply_schedule`` per charger at once -> time until every profile is
  acknowledged (target <= 2 s), then the same plan again (nothing changed: nothing sent);
* peak RSS of the server process (target <= 250 MB).

Bounded: ``--chargers`` (default 200) connections, ``--timeout`` seconds overall (default 120).

    .venv/bin/python benchmarks/bench_ocpp.py [--chargers 200] [--interval 10] [--steady 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing as mp
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from controller.config import SiteConfig, parse_config
from controller.domain import ChargerSchedule, SchedulePeriod
from controller.logs import configure_logging
from controller.ocpp import (
    MeterValuesReceived,
    OcppEvent,
    OcppServer,
    ProfileStatus,
    TransactionStarted,
)

VERSIONS = ("1.6", "2.0.1", "2.1")


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- chargers (child)


class SimCharger:
    """One charger speaking raw OCPP-J; answers every CSMS call with Accepted."""

    def __init__(self, ws: ClientConnection, version: str) -> None:
        self.ws = ws
        self.version = version
        self.ids = itertools.count()
        self.pending: dict[str, asyncio.Future[Any]] = {}

    async def reader(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame[0] == 2:
                await self.ws.send(json.dumps([3, frame[1], self.answer(frame[2], frame[3])]))
            elif frame[0] in (3, 4) and frame[1] in self.pending:
                self.pending.pop(frame[1]).set_result(frame[2] if frame[0] == 3 else None)

    def answer(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "SetVariables":
            return {
                "setVariableResult": [
                    {"attributeStatus": "Accepted", "component": d["component"], "variable": d["variable"]}
                    for d in payload["setVariableData"]
                ]
            }
        return {"status": "Accepted"}

    async def call(self, action: str, payload: dict[str, Any]) -> Any:
        unique_id = str(next(self.ids))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[unique_id] = future
        await self.ws.send(json.dumps([2, unique_id, action, payload]))
        return await asyncio.wait_for(future, 30)

    def meter_value(self, power_w: float, energy_wh: float, soc: float) -> list[dict[str, Any]]:
        if self.version == "1.6":
            values: list[dict[str, Any]] = [
                {"value": f"{power_w:.0f}", "measurand": "Power.Active.Import", "unit": "W"},
                {"value": f"{energy_wh:.0f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": f"{soc:.0f}", "measurand": "SoC", "unit": "Percent"},
            ]
        else:
            values = [
                {"value": power_w, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}},
                {
                    "value": energy_wh,
                    "measurand": "Energy.Active.Import.Register",
                    "unitOfMeasure": {"unit": "Wh"},
                },
                {"value": soc, "measurand": "SoC", "unitOfMeasure": {"unit": "Percent"}},
            ]
        return [{"timestamp": now_text(), "sampledValue": values}]

    async def session(self, index: int, interval_s: float, offset_s: float) -> None:
        if self.version == "1.6":
            await self.call("BootNotification", {"chargePointVendor": "Sim", "chargePointModel": "S1"})
            await self.call(
                "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}
            )
            started = await self.call(
                "StartTransaction",
                {"connectorId": 1, "idTag": "SIM", "meterStart": 0, "timestamp": now_text()},
            )
            transaction: Any = started["transactionId"]
        else:
            await self.call(
                "BootNotification",
                {"reason": "PowerUp", "chargingStation": {"vendorName": "Sim", "model": "S2"}},
            )
            await self.call(
                "StatusNotification",
                {"timestamp": now_text(), "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1},
            )
            transaction = f"tx-{index}"
            await self.call(
                "TransactionEvent",
                {
                    "eventType": "Started",
                    "timestamp": now_text(),
                    "triggerReason": "CablePluggedIn",
                    "seqNo": 0,
                    "transactionInfo": {"transactionId": transaction},
                    "evse": {"id": 1, "connectorId": 1},
                },
            )
        await asyncio.sleep(offset_s)
        energy_wh = 0.0
        for tick in itertools.count():
            energy_wh += 7400 * interval_s / 3600
            meter = self.meter_value(7400, energy_wh, 40 + tick % 50)
            if self.version == "1.6":
                await self.call(
                    "MeterValues", {"connectorId": 1, "transactionId": transaction, "meterValue": meter}
                )
            else:
                await self.call("MeterValues", {"evseId": 1, "meterValue": meter})
            await asyncio.sleep(interval_s)


async def run_charger(port: int, index: int, interval_s: float, offset_s: float) -> None:
    version = VERSIONS[index % len(VERSIONS)]
    url = f"ws://127.0.0.1:{port}/ocpp/sim-{index:04d}"
    async with connect(
        url,
        subprotocols=[Subprotocol(f"ocpp{version}")],
        compression=None,
        open_timeout=60,
        ping_interval=None,
    ) as ws:
        charger = SimCharger(ws, version)
        reader = asyncio.create_task(charger.reader())
        try:
            await charger.session(index, interval_s, offset_s)
        finally:
            reader.cancel()


async def chargers_main(port: int, count: int, interval_s: float, timeout_s: float) -> None:
    async def one(index: int) -> None:
        with contextlib.suppress(Exception):
            await run_charger(port, index, interval_s, interval_s * index / count)

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(one(i) for i in range(count)))


def chargers_process(port: int, count: int, interval_s: float, timeout_s: float) -> None:
    asyncio.run(chargers_main(port, count, interval_s, timeout_s))


# --------------------------------------------------------------------------- server (this process)


def bench_site(count: int) -> SiteConfig:
    chargers = [
        {
            "id": f"sim-{i:04d}",
            "bidirectional": True,
            "max_discharge_kw": 10,
            "ocpp_versions": [VERSIONS[i % 3]],
        }
        for i in range(count)
    ]
    return parse_config(
        {
            "site": {"grid": {"import_limit_kw": 1000, "export_limit_kw": 1000}},
            "chargers": chargers,
            "tariff": {"import": {"static_price_per_kwh": 0.3}},
            "ocpp": {"host": "127.0.0.1", "port": 9000, "meter_sample_interval_s": 10, "call_timeout_s": 10},
        },
        env={},
    )


def plan_for(charger_id: str, start: datetime, setpoint_w: float) -> ChargerSchedule:
    # A 24 h plan on 15-min steps; the TxProfile carries the first 2 h (the validity bound).
    periods = tuple(
        SchedulePeriod(timedelta(minutes=15 * k), setpoint_w if k % 2 == 0 else -setpoint_w / 2, 11000, 10000)
        for k in range(96)
    )
    return ChargerSchedule(charger_id, start, start + timedelta(hours=24), periods)


async def server_main(args: argparse.Namespace) -> dict[str, Any]:
    counts = {"meter": 0, "tx": 0}

    def on_event(event: OcppEvent) -> None:
        if isinstance(event, MeterValuesReceived):
            counts["meter"] += 1
        elif isinstance(event, TransactionStarted):
            counts["tx"] += 1

    proc = psutil.Process()
    results: dict[str, Any] = {"chargers": args.chargers}
    async with OcppServer(bench_site(args.chargers), on_event=on_event, host="127.0.0.1", port=0) as server:
        ctx = mp.get_context("spawn")
        child = ctx.Process(
            target=chargers_process,
            args=(server.port, args.chargers, args.interval, args.timeout),
            daemon=True,
        )
        started = time.perf_counter()
        child.start()
        views = list(server.chargers.values())

        def ready() -> bool:
            return all(v.transaction_id and v.default_profile and v.default_profile.accepted for v in views)

        while not ready():
            if time.perf_counter() - started > args.timeout / 2:
                raise SystemExit(f"only {sum(1 for v in views if v.transaction_id)} chargers got ready")
            await asyncio.sleep(0.05)
        results["setup_s"] = time.perf_counter() - started

        await asyncio.sleep(args.interval)  # let the first meter round settle
        cpu0, wall0, meter0 = proc.cpu_times(), time.perf_counter(), counts["meter"]
        await asyncio.sleep(args.steady)
        cpu1, wall1 = proc.cpu_times(), time.perf_counter()
        busy = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        results["steady_cpu_percent"] = 100 * busy / (wall1 - wall0)
        results["steady_meter_values_per_s"] = (counts["meter"] - meter0) / (wall1 - wall0)

        start = datetime.now(UTC).replace(second=0, microsecond=0)
        plans = [plan_for(v.charger_id, start, 7000) for v in views]
        cpu0 = proc.cpu_times()
        t0 = time.perf_counter()
        records = await asyncio.gather(*(server.apply_schedule(p) for p in plans))
        results["plan_update_s"] = time.perf_counter() - t0
        cpu1 = proc.cpu_times()
        results["plan_update_cpu_s"] = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        results["accepted"] = sum(r.status is ProfileStatus.ACCEPTED for r in records)
        t0 = time.perf_counter()
        again = await asyncio.gather(*(server.apply_schedule(p) for p in plans))
        results["unchanged_update_s"] = time.perf_counter() - t0
        results["unchanged"] = sum(r.status is ProfileStatus.UNCHANGED for r in again)
        results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results["rss_mb"] = proc.memory_info().rss / 2**20
        results["meter_values_total"] = counts["meter"]
    child.join(10)
    if child.is_alive():
        child.kill()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chargers", type=int, default=200)
    parser.add_argument("--interval", type=float, default=10.0, help="MeterValues period per charger, s")
    parser.add_argument("--steady", type=float, default=20.0, help="steady-state measuring window, s")
    parser.add_argument("--timeout", type=float, default=120.0, help="hard bound on the whole run, s")
    args = parser.parse_args()
    if not 1 <= args.chargers <= 1000:
        parser.error("--chargers must be 1..1000")
    configure_logging("warning", "json")  # per-charger info logs are not what we measure

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(args.timeout):
            return await server_main(args)

    results = asyncio.run(bounded())
    n = results["chargers"]
    print(
        f"OCPP CSMS, {n} chargers on loopback (1.6 / 2.0.1 / 2.1 mixed), MeterValues every {args.interval:g} s"
    )
    print(f"  setup (boot, config, default profile, transaction): {results['setup_s']:.2f} s")
    print(
        f"  steady state: {results['steady_meter_values_per_s']:.1f} MeterValues/s, "
        f"server CPU {results['steady_cpu_percent']:.1f} % of one core"
    )
    print(
        f"  plan update to all: {results['accepted']}/{n} profiles acknowledged in "
        f"{results['plan_update_s'] * 1000:.0f} ms (target <= 2000 ms), CPU {results['plan_update_cpu_s']:.2f} s"
    )
    print(
        f"  same plan again: {results['unchanged']}/{n} unchanged, nothing sent, "
        f"{results['unchanged_update_s'] * 1000:.1f} ms"
    )
    print(
        f"  server peak RSS {results['peak_rss_mb']:.0f} MB (target <= 250 MB), now {results['rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
