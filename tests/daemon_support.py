"""The daemon as a real subprocess, with an OCPP 2.1 charger and the real MQTT broker around it.

* :class:`DaemonSite` writes a site config with unique MQTT topics, a free OCPP port and the SQLite
  file in the test's temporary directory.
* :class:`DaemonProcess` runs ``.venv/bin/v2x run --config FILE``, reads its JSON log lines (stderr)
  and stops it with a signal; it is always killed at the end (``running_daemon``).
* :class:`Charger` is a raw OCPP-J 2.1 charger on ``websockets``: it answers every CSMS call and
  records each one with its arrival time, so tests assert the frames on the wire.
* :class:`Broker` publishes and watches topics on the real Mosquitto broker; :class:`MeterFeed`
  keeps meters fresh by publishing them (not retained) until told to stop.

The benchmark (``benchmarks/bench_daemon.py``) uses the same pieces.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import math
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from sim.hil.session import free_port as free_port  # re-exported: the tests' one free-port helper
from tests.ocpp_support import wait_until as eventually

ROOT = Path(__file__).resolve().parent.parent
V2X = ROOT / ".venv" / "bin" / "v2x"
BROKER_HOST = "127.0.0.1"
BROKER_PORT = 1883
CHARGER = "wb1"
VEHICLE = "car"
V2L_OFF = '{"v2l": "off"}'

Json = dict[str, Any]


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hour_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hourly_prices(values: list[float], start: datetime | None = None) -> list[Json]:
    """A price forecast payload: one slot per hour from the current hour."""
    first = hour_start(start or utc_now())
    return [
        {"start": iso(first + timedelta(hours=i)), "end": iso(first + timedelta(hours=i + 1)), "value": v}
        for i, v in enumerate(values)
    ]


# Import/export prices from the current hour on: an evening peak for three hours, a cheap night after.
PEAK_IMPORT = [0.45] * 3 + [0.20] * 21
PEAK_EXPORT = [0.80] * 3 + [0.05] * 21


def evening_timezone() -> str:
    """A fixed-offset zone in which it is 18:xx now, so the peak above is an evening peak there."""
    offset = (18 - utc_now().hour + 12) % 24 - 12
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


# ------------------------------------------------------------------------- site config


@dataclass
class DaemonSite:
    """One site config for the daemon: unique topics under ``prefix``, files under ``directory``."""

    directory: Path
    prefix: str
    ocpp_port: int
    tree: Json

    @property
    def config_path(self) -> Path:
        return self.directory / "site.yaml"

    @property
    def db_path(self) -> Path:
        return self.directory / "v2x.sqlite"

    @property
    def base(self) -> str:
        return str(self.tree["mqtt"]["base_topic"])

    def topic(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def command_topic(self, command: str, vehicle: str = VEHICLE) -> str:
        return f"{self.base}/cmd/{vehicle}/{command}"

    def write(self) -> Path:
        self.config_path.write_text(yaml.safe_dump(self.tree, sort_keys=False), encoding="utf-8")
        return self.config_path


def make_site(directory: Path, tag: str, *, chargers: int = 1, **site_settings: Any) -> DaemonSite:
    """A V2G/V2H/V2L home: ``chargers`` OCPP 2.1 bidirectional wallboxes (``wb1`` …), one car each
    (``car`` …), a grid meter, dynamic import/export prices and an outage topic, all on unique topics."""
    prefix = f"v2xtest/{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    charger_ids = [CHARGER] + [f"wb{i}" for i in range(2, chargers + 1)]
    vehicle_ids = [VEHICLE] + [f"car{i}" for i in range(2, chargers + 1)]
    tree: Json = {
        "site": {
            "name": tag,
            "timezone": "UTC",
            "replan_interval_minutes": 5,
            "dispatch_interval_s": 1,
            "grid": {"import_limit_kw": 17, "export_limit_kw": 10},
            **site_settings,
        },
        "chargers": [
            {
                "id": cid,
                "ocpp_versions": ["2.1"],
                "max_charge_kw": 11,
                "max_discharge_kw": 10,
                "bidirectional": True,
                "phases": 3,
            }
            for cid in charger_ids
        ],
        "vehicles": [
            {
                "id": vid,
                "usable_capacity_kwh": 60,
                "max_charge_kw": 11,
                "max_discharge_kw": 10,
                "reserve": {"percent": 20},
                "default_target_soc_percent": 80,
                "permissions": {"v2g": True, "v2h": True, "v2l": True},
                "home_charger": cid,
                "v2l_cutoff_topic": f"{prefix}/{vid}/v2l/set",
                "v2l_cutoff_payload": V2L_OFF,
            }
            for vid, cid in zip(vehicle_ids, charger_ids, strict=True)
        ],
        "meters": [{"id": "grid", "role": "grid", "topic": f"{prefix}/meter/grid", "stale_after_s": 3}],
        "tariff": {
            "import": {"dynamic_topic": f"{prefix}/prices/import"},
            "export": {"dynamic_topic": f"{prefix}/prices/export"},
        },
        "grid_signals": {"outage_topic": f"{prefix}/grid/outage"},
        "mqtt": {
            "host": BROKER_HOST,
            "port": BROKER_PORT,
            "client_id": f"daemon-{uuid.uuid4().hex[:10]}",
            "base_topic": f"{prefix}/v2x",
            "homeassistant_discovery": False,
        },
        "ocpp": {
            "host": "127.0.0.1",
            "port": free_port(),
            "heartbeat_interval_s": 300,
            "meter_sample_interval_s": 10,
            "call_timeout_s": 3,
        },
        "api": {"enabled": False},
        "storage": {"path": str(directory / "v2x.sqlite"), "history_flush_s": 2},
        "logging": {"level": "info", "format": "json"},
    }
    return DaemonSite(directory, prefix, int(tree["ocpp"]["port"]), copy.deepcopy(tree))


# ------------------------------------------------------------------------- the process


class DaemonProcess:
    """``v2x run`` as a child process; JSON log lines from its stderr file."""

    _runs = itertools.count(1)

    def __init__(self, site: DaemonSite) -> None:
        self.site = site
        run = next(self._runs)
        self.log_path = site.directory / f"daemon-{run}.log"
        self.out_path = site.directory / f"daemon-{run}.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as err, self.out_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(V2X), "run", "--config", str(self.site.config_path)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=self.site.directory,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def logs(self) -> list[Json]:
        entries = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries

    def events(self, name: str, **fields: Any) -> list[Json]:
        return [
            e for e in self.logs() if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
        ]

    async def wait_log(self, name: str, timeout_s: float = 10.0, count: int = 1, **fields: Any) -> Json:
        def found() -> Json | None:
            if self.returncode() is not None:
                raise AssertionError(f"daemon exited ({self.returncode()}) before {name}:\n{self.tail()}")
            hits = self.events(name, **fields)
            return hits[count - 1] if len(hits) >= count else None

        try:
            result: Json = await eventually(found, timeout_s, f"log event {name} {fields}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- daemon log ---\n{self.tail()}") from None
        return result

    async def wait_plan(self, trigger: str, after: int, timeout_s: float = 5.0) -> Json:
        """The first ``plan_ready`` after the first ``after`` ones that names ``trigger`` among its triggers."""

        def found() -> Json | None:
            if self.returncode() is not None:
                raise AssertionError(f"daemon exited ({self.returncode()}):\n{self.tail()}")
            plans = self.events("plan_ready")[after:]
            return next((p for p in plans if trigger in p.get("triggers", [])), None)

        try:
            result: Json = await eventually(found, timeout_s, f"a plan triggered by {trigger}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- daemon log ---\n{self.tail()}") from None
        return result

    async def wait_ready(self, timeout_s: float = 20.0) -> None:
        await self.wait_log("daemon_started", timeout_s)
        await self.wait_log("mqtt_connected", timeout_s)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def send_signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout_s: float = 15.0) -> int:
        await eventually(lambda: self.returncode() is not None, timeout_s, "daemon exit")
        rc = self.returncode()
        assert rc is not None
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def running_daemon(site: DaemonSite, *, ready: bool = True) -> AsyncIterator[DaemonProcess]:
    """Start the daemon on ``site`` (config written first); it is killed on the way out whatever happens."""
    site.write()
    daemon = DaemonProcess(site)
    daemon.start()
    try:
        if ready:
            await daemon.wait_ready()
        yield daemon
    finally:
        daemon.kill()


# ------------------------------------------------------------------------- MQTT


@dataclass
class Message:
    at: float
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Broker:
    """A client of the real broker: publish, and record everything under the subscribed filters."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[Message] = []
        self._owned: set[str] = set()

    async def subscribe(self, topic_filter: str) -> None:
        await self.client.subscribe(topic_filter, qos=1)

    async def publish(self, topic: str, payload: Any, *, retain: bool = False, qos: int = 1) -> None:
        if not isinstance(payload, bytes | str):
            payload = json.dumps(payload)
        await self.client.publish(topic, payload, qos=qos, retain=retain, timeout=5)

    async def _read(self) -> None:
        async for message in self.client.messages:
            raw = message.payload
            payload = raw if isinstance(raw, bytes) else str(raw).encode()
            self.messages.append(Message(time.monotonic(), message.topic.value, payload, message.retain))

    def on(self, topic: str, since: float = 0.0) -> list[Message]:
        return [m for m in self.messages if m.topic == topic and m.at >= since]

    async def wait_message(
        self,
        topic: str,
        predicate: Callable[[Message], bool] = lambda _: True,
        *,
        timeout_s: float = 10.0,
        since: float = 0.0,
    ) -> Message:
        def found() -> Message | None:
            return next((m for m in self.on(topic, since) if m.payload and predicate(m)), None)

        result: Message = await eventually(found, timeout_s, f"a matching message on {topic}")
        return result

    async def clear_retained(self, prefix: str) -> None:
        """Remove what the daemon left retained under ``prefix`` (the shared broker stays tidy)."""
        for topic in sorted({m.topic for m in self.messages if m.topic.startswith(prefix)}):
            with contextlib.suppress(aiomqtt.MqttError):
                await self.client.publish(topic, b"", qos=1, retain=True, timeout=5)


@contextlib.asynccontextmanager
async def broker(*watch: str, port: int = BROKER_PORT) -> AsyncIterator[Broker]:
    """Connected client of the broker on ``port`` with a reader task; ``watch`` filters are
    subscribed before it yields."""
    async with aiomqtt.Client(BROKER_HOST, port, identifier=f"test-{uuid.uuid4().hex[:10]}") as client:
        mqtt = Broker(client)
        reader = asyncio.create_task(mqtt._read())
        try:
            for topic_filter in watch:
                await mqtt.subscribe(topic_filter)
            yield mqtt
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, aiomqtt.MqttError):
                await asyncio.wait_for(reader, 5)


class MeterFeed:
    """Publishes meter values (not retained: the daemon ignores retained site meters) every period."""

    def __init__(self, mqtt: Broker, period_s: float = 0.5) -> None:
        self.mqtt = mqtt
        self.period_s = period_s
        self.values: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def set(self, topic: str, value_w: float) -> None:
        self.values[topic] = value_w

    def silence(self, topic: str) -> None:
        self.values.pop(topic, None)

    async def publish_now(self) -> None:
        for topic, value in list(self.values.items()):
            await self.mqtt.publish(topic, f"{value:.1f}", qos=0)

    async def _run(self) -> None:
        # A stop flag as well as cancel: on Python 3.11 aiomqtt's internal wait_for can swallow a
        # cancel that lands mid-publish, and the loop must still end.
        while not self._stop.is_set():
            with contextlib.suppress(aiomqtt.MqttError):
                await self.publish_now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.period_s)

    async def __aenter__(self) -> MeterFeed:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._stop.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 5)


# ------------------------------------------------------------------------- OCPP 2.1 charger


@dataclass
class Received:
    """A CALL the CSMS sent to the charger."""

    at: float
    action: str
    payload: Json


@dataclass
class Charger:
    """A raw OCPP-J 2.1 charger: answers every CSMS call (Accepted), records them with arrival times."""

    ws: ClientConnection
    charger_id: str
    received: list[Received] = field(default_factory=list)
    power_w: float = 0.0
    soc_percent: float | None = None
    report_power: bool = True
    """False: a basic charger that reports no ``Power.Active.*`` measurands."""
    energy_import_wh: float | None = None
    """``Energy.Active.Import.Register`` sent with every sample (None: not reported)."""
    follow_setpoint: bool = False
    """Act on TxProfiles: power follows the first period's setpoint (the benchmark's chargers)."""
    tx_profile_status: str = "Accepted"
    """How TxProfiles are answered ("Rejected" adds statusInfo reasonCode "TxNotFound")."""
    profile_answer_delay_s: float = 0.0
    """SetChargingProfile is answered this late (``math.inf``: never); other CALLs at once."""
    _pending: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    _late: set[asyncio.Task[None]] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    async def reader(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame[0] == 2:
                self.received.append(Received(time.monotonic(), frame[2], frame[3]))
                if frame[2] == "SetChargingProfile" and self.follow_setpoint:
                    profile = frame[3]["chargingProfile"]
                    if profile["chargingProfilePurpose"] == "TxProfile":
                        self.power_w = float(periods(frame[3])[0].get("setpoint", 0))
                reply = json.dumps([3, frame[1], self.answer(frame[2], frame[3])])
                if frame[2] == "SetChargingProfile" and self.profile_answer_delay_s > 0:
                    self._late.add(asyncio.create_task(self._answer_late(reply)))
                else:
                    await self.ws.send(reply)
            elif frame[0] in (3, 4):
                future = self._pending.pop(frame[1], None)
                if future is not None and not future.done():
                    if frame[0] == 3:
                        future.set_result(frame[2])
                    else:
                        future.set_exception(AssertionError(f"CALLERROR {frame[2]}: {frame[3]}"))

    async def _answer_late(self, reply: str) -> None:
        if math.isfinite(self.profile_answer_delay_s):
            await asyncio.sleep(self.profile_answer_delay_s)
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(reply)

    def answer(self, action: str, payload: Json) -> Json:
        purpose = payload.get("chargingProfile", {}).get("chargingProfilePurpose")
        if action == "SetChargingProfile" and purpose == "TxProfile" and self.tx_profile_status != "Accepted":
            return {"status": self.tx_profile_status, "statusInfo": {"reasonCode": "TxNotFound"}}
        if action == "SetVariables":
            return {
                "setVariableResult": [
                    {"attributeStatus": "Accepted", "component": d["component"], "variable": d["variable"]}
                    for d in payload["setVariableData"]
                ]
            }
        return {"status": "Accepted"}

    async def call(self, action: str, payload: Json, timeout_s: float = 5.0) -> Json:
        message_id = f"{self.charger_id}-{next(self._ids)}"
        future: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self.ws.send(json.dumps([2, message_id, action, payload]))
        async with asyncio.timeout(timeout_s):
            return await future

    # --------------------------------------------------------------- what arrived

    def mark(self) -> int:
        """Index to look for CALLs after (``since=charger.mark()``)."""
        return len(self.received)

    def profiles(self, purpose: str = "TxProfile", since: int = 0) -> list[Received]:
        return [
            r
            for r in self.received[since:]
            if r.action == "SetChargingProfile"
            and r.payload["chargingProfile"]["chargingProfilePurpose"] == purpose
        ]

    async def wait_profile(
        self,
        predicate: Callable[[Json], bool] = lambda _: True,
        *,
        purpose: str = "TxProfile",
        since: int = 0,
        timeout_s: float = 10.0,
    ) -> Received:
        def found() -> Received | None:
            return next((r for r in self.profiles(purpose, since) if predicate(r.payload)), None)

        result: Received = await eventually(found, timeout_s, f"a matching {purpose} at {self.charger_id}")
        return result

    # --------------------------------------------------------------- what we send

    async def boot(self) -> Json:
        return await self.call(
            "BootNotification",
            {
                "chargingStation": {
                    "vendorName": "Test",
                    "model": "Bidi-21",
                    "serialNumber": self.charger_id,
                },
                "reason": "PowerUp",
            },
        )

    async def status(self, connector_status: str, evse_id: int = 1) -> None:
        await self.call(
            "StatusNotification",
            {
                "timestamp": iso(utc_now()),
                "connectorStatus": connector_status,
                "evseId": evse_id,
                "connectorId": 1,
            },
        )

    def _meter_value(self, at: datetime | None = None) -> list[Json]:
        sampled: list[Json] = []
        if self.report_power:
            sampled += [
                {"value": max(self.power_w, 0.0), "measurand": "Power.Active.Import"},
                {"value": max(-self.power_w, 0.0), "measurand": "Power.Active.Export"},
            ]
        if self.energy_import_wh is not None:
            sampled.append(
                {
                    "value": round(self.energy_import_wh, 3),
                    "measurand": "Energy.Active.Import.Register",
                    "unitOfMeasure": {"unit": "Wh"},
                }
            )
        if self.soc_percent is not None:
            sampled.append(
                {
                    "value": self.soc_percent,
                    "measurand": "SoC",
                    "location": "EV",
                    "unitOfMeasure": {"unit": "Percent"},
                }
            )
        return [{"timestamp": iso(at or utc_now()), "sampledValue": sampled}]

    async def transaction(
        self,
        event_type: str,
        transaction_id: str,
        *,
        trigger: str = "MeterValuePeriodic",
        charging_state: str = "EVConnected",
        stopped_reason: str | None = None,
        at: datetime | None = None,
        evse_id: int = 1,
    ) -> Json:
        """A TransactionEvent with the current meter values, stamped ``at`` (default now); a
        ``Started`` one names ``evse_id``."""
        info: Json = {"transactionId": transaction_id, "chargingState": charging_state}
        if stopped_reason is not None:
            info["stoppedReason"] = stopped_reason
        payload: Json = {
            "eventType": event_type,
            "timestamp": iso(at or utc_now()),
            "triggerReason": trigger,
            "seqNo": next(self._seq),
            "transactionInfo": info,
            "meterValue": self._meter_value(at),
        }
        if event_type == "Started":
            payload["evse"] = {"id": evse_id, "connectorId": 1}
        return await self.call("TransactionEvent", payload)

    async def plug_in(self, transaction_id: str, soc_percent: float) -> None:
        """Cable in: Occupied, then a transaction with the car's SoC."""
        self.soc_percent = soc_percent
        await self.status("Occupied")
        await self.transaction("Started", transaction_id, trigger="CablePluggedIn")

    async def meter_values(self, at: datetime | None = None, evse_id: int = 1) -> None:
        """MeterValues of ``evse_id`` (0: the station's main meter)."""
        await self.call("MeterValues", {"evseId": evse_id, "meterValue": self._meter_value(at)})

    async def charging_needs(
        self, departure: datetime | None, target_soc_percent: float | None = None, **v2x: float
    ) -> Json:
        """NotifyEVChargingNeeds; ``v2x`` adds V2XChargingParameters (``maxDischargePower=2500`` …)."""
        parameters: Json = dict(v2x)
        if target_soc_percent is not None:
            parameters["targetSoC"] = target_soc_percent
        needs: Json = {"requestedEnergyTransfer": "AC_BPT" if v2x else "AC_three_phase"}
        if departure is not None:
            needs["departureTime"] = iso(departure)
        if parameters:
            needs["v2xChargingParameters"] = parameters
        return await self.call(
            "NotifyEVChargingNeeds", {"evseId": 1, "timestamp": iso(utc_now()), "chargingNeeds": needs}
        )


def periods(set_profile: Json) -> list[Json]:
    """The chargingSchedulePeriods of a 2.x SetChargingProfile payload."""
    rows: list[Json] = set_profile["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]
    return rows


def first_setpoint(set_profile: Json) -> float:
    return float(periods(set_profile)[0]["setpoint"])


def discharges(set_profile: Json) -> bool:
    """Anything in this profile that lets the car discharge: a negative setpoint or discharge limit."""
    return any(p.get("setpoint", 0) < 0 or p.get("dischargeLimit", 0) < 0 for p in periods(set_profile))


def charge_only(payload: Json) -> bool:
    """Nothing in the profile lets the car discharge: setpoints >= 0 and no discharge limit."""
    return not discharges(payload)


async def publish_prices(mqtt: Broker, site: DaemonSite, imports: list[float], exports: list[float]) -> None:
    await mqtt.publish(site.topic("prices/import"), hourly_prices(imports))
    await mqtt.publish(site.topic("prices/export"), hourly_prices(exports))


@contextlib.asynccontextmanager
async def charger(
    port: int, charger_id: str = CHARGER, *, boot: bool = True, subprotocol: str = "ocpp2.1"
) -> AsyncIterator[Charger]:
    """An OCPP 2.1 charger connected to the daemon (booted, default profile installed). Another
    ``subprotocol`` (``ocpp1.6``) gives the same raw client for frames the test writes itself, with
    ``boot=False`` (the helpers above speak 2.1)."""
    if subprotocol != "ocpp2.1" and boot:
        raise ValueError("only an OCPP 2.1 charger boots itself; pass boot=False")
    url = f"ws://127.0.0.1:{port}/ocpp/{charger_id}"
    async with connect(url, subprotocols=[Subprotocol(subprotocol)], open_timeout=5) as ws:
        assert ws.subprotocol == subprotocol
        cp = Charger(ws, charger_id)
        reader = asyncio.create_task(cp.reader())
        try:
            if boot:
                assert (await cp.boot())["status"] == "Accepted"
                await cp.wait_profile(purpose="TxDefaultProfile", timeout_s=10)
            yield cp
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
