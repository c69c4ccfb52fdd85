"""Chaos: the daemon (``v2x run``, a real process) against its own Mosquitto that is SIGKILLed and
restarted on the same port, and against a flood of malformed meter payloads. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import random
import signal
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.mqtt.connection import RECONNECT_CAP_S
from tests.chaos_support import Json, Mosquitto, PayloadFeed, chaos_site, http_get, peer, poll_api
from tests.daemon_support import VEHICLE, Broker, DaemonSite, Message, running_daemon
from tests.test_daemon_e2e import history_samples

pytestmark = pytest.mark.chaos


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def connected_and_safe(health: Json) -> bool:
    return health["mqtt_connected"] is True and health["safe_mode"] is False


async def test_broker_killed_and_restarted(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """SIGKILL of the broker: the daemon stays up in safe mode, reconnects once the broker is back,
    republishes its retained state to the empty broker, resubscribes (a fresh reading reaches the
    site state) and leaves safe mode."""
    site, api = chaos_site(tmp_path, "chaos-broker", mosquitto.port)
    grid = site.topic("meter/grid")
    async with running_daemon(site) as daemon:
        async with peer(mosquitto.port, f"{site.base}/#") as mqtt, PayloadFeed(mqtt, {grid: b"400"}):
            await poll_api(api, "/health", connected_and_safe, 15, "connected, out of safe mode")
            await mqtt.wait_message(f"{site.base}/state/controller", timeout_s=10)

        mosquitto.kill()
        await poll_api(api, "/health", lambda h: h["mqtt_connected"] is False, 10, "the disconnect")
        # The grid meter is silent past its stale_after_s (3 s): safe mode, the daemon still answers.
        down = await poll_api(api, "/health", lambda h: h["safe_mode"] is True, 10, "safe mode")
        assert down["stopped_tasks"] == [] and daemon.returncode() is None
        await asyncio.sleep(3.0)  # several refused reconnect attempts

        mosquitto.start()
        await poll_api(
            api, "/health", lambda h: h["mqtt_connected"] is True, RECONNECT_CAP_S + 10, "reconnect"
        )
        await daemon.wait_log("mqtt_connected", count=2, timeout_s=5)

        async with peer(mosquitto.port, f"{site.base}/#") as mqtt:
            # The restarted broker kept nothing (no persistence): what is retained the daemon published.
            status = await mqtt.wait_message(f"{site.base}/status", lambda m: m.retain, timeout_s=10)
            assert status.payload == b"online"
            await mqtt.wait_message(f"{site.base}/state/controller", lambda m: m.retain, timeout_s=10)

            async with PayloadFeed(mqtt, {grid: b"1234.5"}):
                state = await poll_api(
                    api, "/state", lambda s: s["grid_power_w"] == 1234.5, 15, "the fresh reading in the state"
                )
                health = await poll_api(api, "/health", connected_and_safe, 10, "safe mode left")
                await mqtt.wait_message(
                    f"{site.base}/state/controller", lambda m: m.json()["safe_mode"] is False, timeout_s=15
                )
        assert state["safe_mode"] is False
        assert health["stopped_tasks"] == [] and health["status"] != "unhealthy"
        await daemon.wait_log("safe_mode_left", timeout_s=5)
        assert daemon.events("mqtt_disconnected") and not daemon.events("task_failed")
        assert daemon.returncode() is None


def junk_payloads() -> list[bytes]:
    """Binary junk, huge and non-finite numbers, wrong JSON shapes, oversized payloads."""
    shapes: list[object] = [
        [],
        {},
        None,
        True,
        "400",
        [1, 2, 3],
        {"ENERGY": []},
        {"ENERGY": {"Power": "NaN"}},
        {"ENERGY": {"Power": 1e308}},
        {"ENERGY": {"Power": None}},
        {"SML": {"Power_curr": [1]}},
        {"total_act_power": "abc"},
        {"total_act_power": -1e300},
        {"total_act_power": {"nested": 1}},
        {"battery": "full"},
        {"battery": {"soc": 1e9}},
        {"battery": {"soc": -5}},
        {"battery": {"soc": [50]}},
    ]
    raw = [
        bytes(range(256)),
        b"\x00\xff\xfe\x80\x81garbage",
        b"\xc3\x28",
        b"",
        b" ",
        b"NaN",
        b"nan",
        b"Infinity",
        b"-inf",
        b"1e400",
        b"-1e400",
        b"1e308",
        b"9" * 500,
        b"0x1F",
        b"12,5",
        b"{" * 2000,
        b'{"total_act_power": NaN}',
        b'{"ENERGY": {"Power": Infinity}}',
        b"x" * 200_000,
    ]
    return raw + [json.dumps(s).encode() for s in shapes]


async def test_flood_of_malformed_payloads_on_every_meter_topic(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A few hundred bad payloads on each meter topic: the daemon stays alive (every task running,
    the dispatcher ticking, the API answering), counts the drops, and uses the next valid reading."""
    site, api = chaos_site(tmp_path, "chaos-flood", mosquitto.port)
    topics = {
        "grid": site.topic("meter/grid"),
        "pv": site.topic("tele/pv/SENSOR"),
        "home": site.topic("shelly/status/em:0"),
        "soc": site.topic("car/state"),
    }
    site.tree["meters"] += [
        {"id": "pv", "role": "pv", "topic": topics["pv"], "format": "tasmota", "stale_after_s": 30},
        {
            "id": "home",
            "role": "home",
            "topic": topics["home"],
            "format": "shelly_pro3em",
            "stale_after_s": 30,
        },
        {
            "id": "soc",
            "role": "vehicle_soc",
            "topic": topics["soc"],
            "format": "json",
            "json_path": "battery.soc",
            "vehicle": VEHICLE,
        },
    ]
    valid = {
        topics["grid"]: b"777",
        topics["pv"]: b'{"ENERGY": {"Power": 1500}}',
        topics["home"]: b'{"id": 0, "total_act_power": 900.0}',
        topics["soc"]: b'{"battery": {"soc": 55}}',
    }
    junk = junk_payloads()
    rounds = 8  # 8 x 37 payloads x 4 topics: about 1200 messages
    async with running_daemon(site) as daemon, peer(mosquitto.port) as mqtt:
        async with PayloadFeed(mqtt, dict(valid)):
            await poll_api(api, "/health", connected_and_safe, 15, "connected, out of safe mode")

        for _ in range(rounds):
            for payload in junk:
                for topic in topics.values():
                    await mqtt.publish(topic, payload, qos=0)
        await mqtt.publish(topics["grid"], b"", qos=1)  # a round trip: the flood has left this client

        # The daemon lives through it: every task runs, the dispatcher ticks, /health answers 200.
        status, health = await http_get(api, "/health")
        assert status == 200 and health["stopped_tasks"] == [], health
        assert daemon.returncode() is None

        valid[topics["grid"]] = b"4321"
        async with PayloadFeed(mqtt, valid):
            state = await poll_api(
                api,
                "/state",
                lambda s: s["grid_power_w"] == 4321 and not s["safe_mode"],
                15,
                "the valid reading",
            )
            health = await poll_api(api, "/health", connected_and_safe, 10, "running normally")
        assert health["stopped_tasks"] == [] and health["last_dispatch_s_ago"] <= 5
        dropped = {meter: counts["dropped_readings"] for meter, counts in state["meters"].items()}
        assert all(dropped[meter] > 0 for meter in topics), dropped
        assert daemon.events("meter_payload_rejected") and not daemon.events("task_failed")
        # Warnings are rate-limited per topic: a flood does not flood the log.
        assert len(daemon.events("meter_payload_rejected")) < 100
        assert daemon.returncode() is None


def answers(request_id: str, message: Message) -> bool:
    return bool(message.json().get("request_id") == request_id)


async def acknowledged_departures(
    mqtt: Broker, site: DaemonSite, base: datetime, first: int, sent: list[int], acked: list[int]
) -> None:
    """Departure commands n = first, first + 1, … (at ``base`` + n minutes), each sent when the one
    before was answered; ``sent`` and ``acked`` record them. Runs until cancelled."""
    topic, reply = site.command_topic("departure"), f"{site.base}/reply/{VEHICLE}/departure"
    for n in itertools.count(first):
        sent.append(n)
        request_id = f"kill-{n}"
        at = (base + timedelta(minutes=n)).isoformat().replace("+00:00", "Z")
        await mqtt.publish(topic, {"at": at, "target_soc_percent": 50 + n % 50, "request_id": request_id})
        answer = await mqtt.wait_message(reply, functools.partial(answers, request_id))
        assert answer.json()["ok"] is True, answer.json()
        acked.append(n)


def stored_departure(db_path: Path, base: datetime) -> int | None:
    """The command number of the departure override on disk (what a restart would read)."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        row = db.execute("SELECT body FROM overrides WHERE vehicle_id = ? AND kind = 'departure'", (VEHICLE,))
        found = row.fetchone()
    if found is None:
        return None
    at = datetime.fromisoformat(json.loads(found[0])["at"])
    return round((at - base).total_seconds() / 60)


async def test_kill_9_while_writing_loses_no_acknowledged_command(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """SIGKILL at a random moment while commands, meter history (flushed every second), plans and
    events are being written, three times on the same file: after each, the database passes
    ``PRAGMA integrity_check``, holds the last acknowledged command (or one sent after it, written
    but not yet answered), and the restarted daemon starts from it."""
    site, api = chaos_site(tmp_path, "chaos-kill", mosquitto.port)
    site.tree["storage"]["history_flush_s"] = 1
    grid = site.topic("meter/grid")
    base = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=3)
    rng = random.Random(9)
    sent: list[int] = []
    acked: list[int] = []
    for kill in range(3):
        async with (
            running_daemon(site) as daemon,
            peer(mosquitto.port, f"{site.base}/reply/#") as mqtt,
            PayloadFeed(mqtt, {grid: b"400"}, period_s=0.02),
        ):
            health = await poll_api(api, "/health", connected_and_safe, 15, "connected, out of safe mode")
            assert health["stopped_tasks"] == []
            before = len(acked)
            writer = asyncio.create_task(acknowledged_departures(mqtt, site, base, len(sent), sent, acked))
            try:
                await asyncio.sleep(rng.uniform(1.0, 2.5))
                daemon.send_signal(signal.SIGKILL)
                assert await daemon.wait_exit(10) == -signal.SIGKILL
            finally:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, AssertionError, TimeoutError):
                    await writer
            assert len(acked) > before + 3, f"kill {kill}: too few commands answered to mean anything"
        on_disk = stored_departure(site.db_path, base)
        assert on_disk is not None and acked[-1] <= on_disk <= sent[-1], (kill, acked[-1], on_disk, sent[-1])
    assert history_samples(site.db_path, "grid") > 0

    async with running_daemon(site), peer(mosquitto.port) as mqtt, PayloadFeed(mqtt, {grid: b"400"}):
        state = await poll_api(api, "/state", lambda s: VEHICLE in s["vehicles"], 15, "the state")
    departure = datetime.fromisoformat(state["vehicles"][VEHICLE]["departure_at"])
    assert departure == base + timedelta(minutes=stored_departure(site.db_path, base) or 0)
