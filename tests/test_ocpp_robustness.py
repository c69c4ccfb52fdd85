"""Bad input, bad chargers and bad networks: every path answers properly or is logged and ignored."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from functools import partial
from typing import Any

import ocpp.v16
import ocpp.v21
import pytest
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from controller.clock import ManualClock
from controller.domain import ChargerSchedule, SchedulePeriod
from controller.ocpp import (
    Backoff,
    ChargerConnected,
    ChargerDisconnected,
    ChargingNeedsReported,
    MeterValuesReceived,
    ProfileAnswered,
    ProfileStatus,
    StatusChanged,
    TransactionStarted,
)
from controller.ocpp.sender import REFUSED_RETRY_S
from tests.ocpp_support import (
    PASSWORD,
    PASSWORD_HASH,
    T0,
    basic_auth,
    iso,
    library_charger,
    running_server,
    site,
    wait_until,
)

FAST = Backoff(initial_s=0.05, factor=2, max_s=0.2)


def one_hour(charger_id: str, setpoint_w: float = 4000, evse_id: int = 1) -> ChargerSchedule:
    return ChargerSchedule(
        charger_id,
        T0,
        T0 + timedelta(hours=1),
        (SchedulePeriod(timedelta(0), setpoint_w, 11000, 0),),
        evse_id=evse_id,
    )


class Raw:
    """A hand-written OCPP-J charger: whatever bytes the test wants."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    async def send(self, frame: Any) -> None:
        await self.connection.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def recv(self, timeout_s: float = 3.0) -> Any:
        return json.loads(await self.recv_text(timeout_s))

    async def recv_text(self, timeout_s: float = 3.0) -> str:
        """The next frame exactly as it was on the wire."""
        raw = await asyncio.wait_for(self.connection.recv(), timeout_s)
        assert isinstance(raw, str)
        return raw

    async def call(self, unique_id: str, action: str, payload: dict[str, Any]) -> Any:
        await self.send([2, unique_id, action, payload])
        return await self.recv()

    async def answer_to(self, unique_id: str, action: str, payload: dict[str, Any]) -> Any:
        """Send a CALL and return its answer, passing over (not answering) the server's own CALLs."""
        await self.send([2, unique_id, action, payload])
        return await self.answer()

    async def answer(self) -> Any:
        """The next frame that is not a CALL of the server's (those are passed over, not answered)."""
        while True:
            frame = await self.recv()
            if frame[0] != 2:
                return frame

    async def answer_setup(self) -> list[Any]:
        """Answer the server's setup CALLs (Accepted) until its two re-sync triggers; returns them."""
        calls: list[Any] = []
        while sum(1 for c in calls if c[2] == "TriggerMessage") < 2:
            frame = await self.recv()
            assert frame[0] == 2, frame
            calls.append(frame)
            if frame[2] == "SetVariables":
                result: dict[str, Any] = {
                    "setVariableResult": [
                        {
                            "attributeStatus": "Accepted",
                            "component": d["component"],
                            "variable": d["variable"],
                        }
                        for d in frame[3]["setVariableData"]
                    ]
                }
            else:
                result = {"status": "Accepted"}
            await self.send([3, frame[1], result])
        return calls

    async def silent(self, wait_s: float = 0.3) -> bool:
        try:
            await asyncio.wait_for(self.connection.recv(), wait_s)
        except TimeoutError:
            return True
        return False


def raw_connect(port: int, charger_id: str, version: str, **kwargs: Any) -> Any:
    return connect(
        f"ws://127.0.0.1:{port}/ocpp/{charger_id}", subprotocols=[Subprotocol(f"ocpp{version}")], **kwargs
    )


TX_STARTED = {
    "eventType": "Started",
    "timestamp": iso(T0),
    "triggerReason": "CablePluggedIn",
    "seqNo": 0,
    "transactionInfo": {"transactionId": "t1"},
    "evse": {"id": 1, "connectorId": 1},
}


@pytest.mark.parametrize(
    ("version", "frame", "expected_id", "expected_code"),
    [
        ("2.0.1", "{not json", "-1", "RpcFrameworkError"),
        ("2.1", '[2, "x", ', "-1", "RpcFrameworkError"),
        ("1.6", "[2, 'x'", "-1", "FormationViolation"),
        ("2.0.1", '{"a": 1}', "-1", "RpcFrameworkError"),
        ("1.6", "[]", "-1", "ProtocolError"),
        ("2.0.1", '[2, 17, "Heartbeat", {}]', "-1", "RpcFrameworkError"),
        # A lone surrogate cannot be echoed as UTF-8: not a usable message id.
        ("2.0.1", '[2, "k14\\ud800", "Heartbeat", {}]', "-1", "RpcFrameworkError"),
        ("1.6", '[2, "\\udc00", "Heartbeat", {}]', "-1", "ProtocolError"),
        # No integer message type, but a readable id: answered with that id.
        ("2.0.1", '[2.5, "mt1", "Heartbeat", {}]', "mt1", "RpcFrameworkError"),
        ("1.6", '["2", "mt2", "Heartbeat", {}]', "mt2", "ProtocolError"),
        ("2.1", '[null, "mt3", "Heartbeat", {}]', "mt3", "RpcFrameworkError"),
        ("2.0.1", '[true, "mt4", "Heartbeat", {}]', "mt4", "RpcFrameworkError"),
        ("2.0.1", '[2.5, "mt5\\ud800", "Heartbeat", {}]', "-1", "RpcFrameworkError"),
        ("2.0.1", "[null, 17]", "-1", "RpcFrameworkError"),
        ("2.0.1", '[7, "m1", "Heartbeat", {}]', "m1", "MessageTypeNotSupported"),
        ("2.0.1", '[6, "m2", "Heartbeat", {}]', "m2", "MessageTypeNotSupported"),
        ("2.0.1", '[2, "m3", "Heartbeat"]', "m3", "RpcFrameworkError"),
        ("2.0.1", '[2, "m4", "Heartbeat", []]', "m4", "FormatViolation"),
        ("2.0.1", '[2, "m5", "MakeCoffee", {}]', "m5", "NotImplemented"),
        ("1.6", '[2, "m6", "TransactionEvent", {}]', "m6", "NotImplemented"),
        (
            "2.0.1",
            '[2, "m7", "BootNotification", {"reason": "PowerUp"}]',
            "m7",
            "OccurrenceConstraintViolation",
        ),
        (
            "1.6",
            '[2, "m8", "BootNotification", {"chargePointModel": "x"}]',
            "m8",
            "OccurenceConstraintViolation",
        ),
        (
            "2.1",
            '[2, "m9", "StatusNotification", {"timestamp": "2030-06-01T12:00:00Z", "connectorStatus": "Occupied", "evseId": "1", "connectorId": 1}]',
            "m9",
            "TypeConstraintViolation",
        ),
        (
            "2.1",
            '[2, "m10", "StatusNotification", {"timestamp": "2030-06-01T12:00:00Z", "connectorStatus": "Happy", "evseId": 1, "connectorId": 1}]',
            "m10",
            "PropertyConstraintViolation",
        ),
        ("1.6", '[2, "m11", "Heartbeat", {"extra": true}]', "m11", "FormationViolation"),
        (
            "2.1",
            '[2, "m12", "StatusNotification", {"timestamp": "noon", "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1}]',
            "m12",
            "FormatViolation",
        ),
        (
            "1.6",
            '[2, "m13", "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": "2030-06-01T12:00:00Z", "sampledValue": [{"value": "lots", "measurand": "SoC"}]}]}]',
            "m13",
            "PropertyConstraintViolation",
        ),
        (
            "2.1",
            '[2, "m15", "NotifyPeriodicEventStream", {"id": 1, "pending": 0, "basetime": "2030-06-01T12:00:00Z", "data": []}]',
            "m15",
            "RpcFrameworkError",
        ),
        ("2.1", '[2, "m16", "MakeCoffee", {}]', "m16", "NotImplemented"),
        (
            "2.1",
            '[2, "m17", "Get15118EVCertificate", {"iso15118SchemaVersion": "x", "action": "Install", "exiRequest": "y"}]',
            "m17",
            "NotSupported",
        ),
        (
            "2.0.1",
            '[2, "m14", "Get15118EVCertificate", {"iso15118SchemaVersion": "x", "action": "Install", "exiRequest": "y"}]',
            "m14",
            "NotSupported",
        ),
        # Nested too deeply for the JSON parser (RecursionError), or for the rest of the stack.
        ("2.0.1", "[" * 200_000, "-1", "RpcFrameworkError"),
        (
            "2.1",
            '[2, "d1", "DataTransfer", {"vendorId": "x", "data": ' + "[" * 5000,
            "-1",
            "RpcFrameworkError",
        ),
        ("1.6", "[" * 200_000, "-1", "FormationViolation"),
        ("1.6", '{"a": ' * 3000 + "1" + "}" * 3000, "-1", "FormationViolation"),
        (
            "2.0.1",
            '[2, "d2", "DataTransfer", {"vendorId": "x", "data": ' + "[" * 900 + "]" * 900 + "}]",
            "-1",
            "RpcFrameworkError",
        ),
        (
            "1.6",
            '[2, "d3", "DataTransfer", {"vendorId": "x", "data": ' + "[" * 900 + "]" * 900 + "}]",
            "-1",
            "FormationViolation",
        ),
    ],
)
async def test_bad_frames_get_the_right_callerror(
    version: str, frame: str, expected_id: str, expected_code: str
) -> None:
    async with (
        running_server(site([{"id": "cp"}])) as (server, _),
        raw_connect(server.port, "cp", version) as connection,
    ):
        raw = Raw(connection)
        await raw.send(frame)
        answer = await raw.recv()
        assert answer[:3] == [4, expected_id, expected_code]
        assert isinstance(answer[3], str) and isinstance(answer[4], dict)
        # The connection survives and still answers.
        assert (await raw.call("ok", "Heartbeat", {}))[:2] == [3, "ok"]


@pytest.mark.parametrize(
    ("version", "frame", "expected"),
    [
        # OCPP-J 2.0.1 4.4: an unknown message type SHALL be answered with MessageTypeNotSupported;
        # 2.0.1 defines types 2-4 only, so 2.1's CALLRESULTERROR (5) and SEND (6) are unknown there.
        (
            "2.0.1",
            '[5, "r1", "InternalError", "could not process your answer", {}]',
            '[4,"r1","MessageTypeNotSupported","message type 5 is not defined in OCPP 2.0.1",{}]',
        ),
        (
            "2.0.1",
            '[6, "s1", "Heartbeat", {}]',
            '[4,"s1","MessageTypeNotSupported","message type 6 is not defined in OCPP 2.0.1",{}]',
        ),
        (
            "2.1",
            '[7, "x1", "Heartbeat", {}]',
            '[4,"x1","MessageTypeNotSupported","message type 7 is not defined in OCPP 2.1",{}]',
        ),
        # 1.6 has no MessageTypeNotSupported: an RPC-level fault is a ProtocolError there (NotSupported
        # means "a known action we do not support", which says nothing about a message type).
        (
            "1.6",
            '[5, "r2", "InternalError", "", {}]',
            '[4,"r2","ProtocolError","message type 5 is not defined in OCPP 1.6",{}]',
        ),
        (
            "1.6",
            '[6, "s2", "Heartbeat", {}]',
            '[4,"s2","ProtocolError","message type 6 is not defined in OCPP 1.6",{}]',
        ),
        ("1.6", '[9, "x2"]', '[4,"x2","ProtocolError","message type 9 is not defined in OCPP 1.6",{}]'),
    ],
)
async def test_unknown_message_types_get_the_spec_error_on_the_wire(
    version: str, frame: str, expected: str
) -> None:
    async with (
        running_server(site([{"id": "cp"}])) as (server, _),
        raw_connect(server.port, "cp", version) as connection,
    ):
        raw = Raw(connection)
        await raw.send(frame)
        assert await raw.recv_text() == expected
        assert (await raw.call("ok", "Heartbeat", {}))[:2] == [3, "ok"]


async def test_a_fault_while_reading_a_frame_is_logged_and_the_connection_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from controller.ocpp.rpc import RpcPeer

    def broken(self: RpcPeer, unique_id: str, payload: Any) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(RpcPeer, "_on_result", broken)
    with structlog.testing.capture_logs() as logs:
        async with (
            running_server(site([{"id": "cp"}])) as (server, _),
            raw_connect(server.port, "cp", "2.0.1") as connection,
        ):
            raw = Raw(connection)
            await raw.send([3, "answer", {}])
            assert await raw.silent()
            assert (await raw.call("hb", "Heartbeat", {}))[:2] == [3, "hb"]
    assert [e["frame"] for e in logs if e["event"] == "ocpp_frame_failed"] == ['[3, "answer", {}]']


async def test_binary_frames_and_stray_answers_are_ignored() -> None:
    async with (
        running_server(site([{"id": "cp"}])) as (server, _),
        raw_connect(server.port, "cp", "2.0.1") as connection,
    ):
        raw = Raw(connection)
        await raw.send(b"\x00\x01")
        await raw.send([3, "nobody-asked", {}])
        await raw.send([4, "nobody-asked", "InternalError", "", {}])
        await raw.send([3, "broken"])
        assert await raw.silent()
        assert (await raw.call("hb", "Heartbeat", {}))[:2] == [3, "hb"]


async def test_21_send_and_callresulterror_frames_get_no_answer() -> None:
    async with (
        running_server(site([{"id": "cp"}])) as (server, _),
        raw_connect(server.port, "cp", "2.1") as connection,
    ):
        raw = Raw(connection)
        await raw.send(
            [
                6,
                "s1",
                "NotifyPeriodicEventStream",
                {"id": 1, "pending": 0, "basetime": iso(T0), "data": [{"t": 0, "v": "1"}]},
            ]
        )
        await raw.send([5, "r1", "InternalError", "could not process your answer", {}])
        await raw.send([6, "s2", "NotifyPeriodicEventStream", {"broken": True}])  # invalid SEND: logged only
        assert await raw.silent()
        assert (await raw.call("hb", "Heartbeat", {}))[:2] == [3, "hb"]


@pytest.mark.parametrize(
    "frame",
    [
        '[6, "s1", {}]',
        '[6, "s2"]',
        '[6, "s3", "Heartbeat", {}, {}]',
        '[6, 17, "Heartbeat", {}]',
        '[6, "s4\\ud800", "Heartbeat", {}]',
        "[3]",
        '[4, 17, "InternalError", "", {}]',
        '[5, "r1"]',
    ],
)
async def test_21_malformed_sends_and_answers_get_no_answer(frame: str) -> None:
    async with (
        running_server(site([{"id": "cp"}])) as (server, _),
        raw_connect(server.port, "cp", "2.1") as connection,
    ):
        raw = Raw(connection)
        await raw.send(frame)
        assert await raw.silent()
        assert (await raw.call("hb", "Heartbeat", {}))[:2] == [3, "hb"]


@pytest.mark.parametrize("answer", ["result", "error"])
async def test_echoed_strings_with_lone_surrogates_never_break_the_send(
    answer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.ocpp.rpc import OcppCallError, Reply
    from controller.ocpp.v2 import V2Adapter

    def echoing(self: V2Adapter, payload: dict[str, Any]) -> Reply:
        vendor = payload["customData"]["vendorId"]
        if answer == "error":
            raise OcppCallError("PropertyConstraintViolation", f"vendor {vendor} unknown", {"vendor": vendor})
        return Reply({"customData": {"vendorId": vendor}})

    monkeypatch.setattr(V2Adapter, "_status", echoing)
    status = (
        '{"timestamp": "2030-06-01T12:00:00Z", "connectorStatus": "Occupied", "evseId": 1,'
        ' "connectorId": 1, "customData": {"vendorId": "acme\\ud800"}}'
    )
    async with (
        running_server(site([{"id": "cp"}])) as (server, _),
        raw_connect(server.port, "cp", "2.0.1") as connection,
    ):
        raw = Raw(connection)
        await raw.send(f'[2, "s", "StatusNotification", {status}]')
        reply = await raw.answer()
        if answer == "error":
            assert reply == [
                4,
                "s",
                "PropertyConstraintViolation",
                "vendor acme\ufffd unknown",
                {"vendor": "acme\ufffd"},
            ]
        else:
            assert reply == [3, "s", {"customData": {"vendorId": "acme\ufffd"}}]
        # A surrogate pair (sent escaped, as json.dumps writes it) is one character: echoed.
        assert (await raw.answer_to("hb\U0001f600", "Heartbeat", {}))[:2] == [3, "hb\U0001f600"]


async def test_callerror_descriptions_and_details_are_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.ocpp.rpc import OcppCallError, Reply
    from controller.ocpp.v2 import V2Adapter

    def echoing(self: V2Adapter, payload: dict[str, Any]) -> Reply:
        vendor = payload["customData"]["vendorId"]
        raise OcppCallError(
            "PropertyConstraintViolation", vendor * 100, {"vendor": vendor * 100, "all": [vendor * 2]}
        )

    monkeypatch.setattr(V2Adapter, "_status", echoing)
    status = {
        "timestamp": iso(T0),
        "connectorStatus": "Occupied",
        "evseId": 1,
        "connectorId": 1,
        "customData": {"vendorId": "v" * 255},
    }
    async with (
        running_server(site([{"id": "cp"}])) as (server, _),
        raw_connect(server.port, "cp", "2.0.1") as connection,
    ):
        raw = Raw(connection)
        await raw.send([2, "big", "x" * 1_000_000, {}])
        wire = await raw.recv_text()
        assert len(wire) < 400
        answer = json.loads(wire)
        assert answer[:3] == [4, "big", "NotImplemented"] and len(answer[3]) == 255
        # Cut in the middle: what it is about and what is wrong with it both stay readable.
        assert answer[3].startswith("'xxxx") and answer[3].endswith("xxxx' is not an OCPP 2.0.1 action")
        assert answer[4] == {}
        answer = await raw.call("s", "StatusNotification", status)
        assert answer[:3] == [4, "s", "PropertyConstraintViolation"]
        assert answer[3] == "v" * 126 + "..." + "v" * 126
        assert answer[4] == {"vendor": "v" * 126 + "..." + "v" * 126, "all": ["v" * 126 + "..." + "v" * 126]}
        assert (await raw.call("hb", "Heartbeat", {}))[:2] == [3, "hb"]


@pytest.mark.parametrize("caller", ["direct", "follow-up"])
async def test_a_charger_gone_mid_call_leaves_no_unretrieved_future(
    caller: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection dies while our CALL is still being sent (websockets waits for the close then):
    whether the call raises from the send or its task is cancelled, asyncio reports nothing."""
    import controller.ocpp.server as server_module

    monkeypatch.setattr(server_module, "SILENT_RESYNC_AFTER_S", 60)  # only the CALL this test makes
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        async with running_server(site([{"id": "cp", "ocpp_versions": ["2.0.1"]}])) as (server, events):
            real_send = ServerConnection.send
            sending = asyncio.Event()

            async def send_until_gone(self: ServerConnection, message: Any, **kwargs: Any) -> None:
                if isinstance(message, str) and message.startswith("[2,"):
                    sending.set()
                    await wait_until(lambda: events.of(ChargerDisconnected), what="the charger gone")
                await real_send(self, message, **kwargs)

            monkeypatch.setattr(ServerConnection, "send", send_until_gone)
            async with raw_connect(server.port, "cp", "2.0.1") as connection:
                raw = Raw(connection)
                if caller == "direct":
                    install = asyncio.create_task(server.install_default_profile("cp"))
                else:  # the setup a boot starts, a task of the connection
                    boot = {"reason": "PowerUp", "chargingStation": {"vendorName": "Raw", "model": "R"}}
                    assert (await raw.call("b", "BootNotification", boot))[:2] == [3, "b"]
                await asyncio.wait_for(sending.wait(), 3)
            await events.wait(ChargerDisconnected)
            if caller == "direct":
                assert (await install).status is ProfileStatus.NOT_CONNECTED
        gc.collect()
    finally:
        loop.set_exception_handler(previous_handler)
    assert not reported, [context.get("message") for context in reported]


# ------------------------------------------------------------------ implausible meter values


@pytest.mark.parametrize("version", ["2.0.1", "1.6"])
async def test_implausible_meter_values_are_dropped_logged_and_the_rest_is_used(version: str) -> None:
    def reading(value: float | str, measurand: str, unit: str, phase: str | None = None) -> dict[str, Any]:
        if version == "1.6":
            item: dict[str, Any] = {"value": str(value), "measurand": measurand, "unit": unit}
        else:
            item = {"value": value, "measurand": measurand, "unitOfMeasure": {"unit": unit}}
        if phase is not None:
            item["phase"] = phase
        return item

    first = [
        reading(1e306, "Power.Active.Import", "kW"),  # finite as sent, infinite in W
        reading(-5000, "Energy.Active.Import.Register", "Wh"),
        reading(1200, "Energy.Active.Export.Register", "Wh"),
        reading(55, "SoC", "Percent"),
    ]
    second = [
        reading(7400, "Power.Active.Import", "kW"),  # W sent as kW: 7.4 MW on an 11 kW charger
        reading(0, "Power.Active.Export", "W"),  # alone it would read as "not charging"
        reading(400, "Power.Active.Import", "kW", "L1"),  # 400 kW: only the charger's bound catches it
        reading(5000, "Energy.Active.Import.Register", "Wh"),
    ]
    key = "connectorId" if version == "1.6" else "evseId"
    payloads = [
        (f"mv{n}", {key: 1, "meterValue": [{"timestamp": iso(T0), "sampledValue": values}]})
        for n, values in enumerate((first, second))
    ]
    with structlog.testing.capture_logs() as logs:
        async with (
            running_server(site([{"id": "cp"}])) as (server, events),
            raw_connect(server.port, "cp", version) as connection,
        ):
            raw = Raw(connection)
            for unique_id, payload in payloads:
                # Answered as received: a CALLERROR would make the charger resend the same values.
                assert await raw.answer_to(unique_id, "MeterValues", payload) == [3, unique_id, {}]
            samples = [e.sample for e in await events.wait(MeterValuesReceived, 2)]
            view = server.charger("cp")
            assert view is not None
            meter = view.meter
    assert samples[0].power_w is None and samples[0].energy_import_wh is None
    assert samples[0].energy_export_wh == 1200 and samples[0].soc_percent == 55
    assert samples[1].power_w is None and samples[1].energy_import_wh == 5000
    assert meter.power_w is None and meter.energy_import_wh == 5000 and meter.soc_percent == 55
    dropped = [entry for entry in logs if entry["event"] == "ocpp_meter_value_dropped"]
    assert [(d["charger_id"], d["measurand"], d["phase"]) for d in dropped] == [
        ("cp", "Power.Active.Import", None),
        ("cp", "Energy.Active.Import.Register", None),
        ("cp", "Power.Active.Import", None),
        ("cp", "Power.Active.Import", "L1"),
    ]
    assert dropped[0]["value"] == float("inf") and dropped[1]["value"] == -5000
    assert all(d["log_level"] == "warning" for d in dropped)


async def test_rejected_profile_is_recorded_and_not_retried_until_a_while_later() -> None:
    clock = ManualClock(T0)
    async with (
        running_server(site([{"id": "cp"}]), clock=clock, backoff=FAST) as (server, events),
        library_charger(server, "cp", "2.1", answers={"SetChargingProfile": "Rejected"}) as charger,
    ):
        await start_and_settle(charger)
        record = await server.apply_schedule(one_hour("cp"))
        assert record.status is ProfileStatus.REJECTED and record.reason == "Rejected"
        view = server.charger("cp")
        assert view is not None and view.last_profile == record and not view.last_profile.accepted
        assert events.of(ProfileAnswered)[-1].record.status is ProfileStatus.REJECTED
        await asyncio.sleep(0.4)
        assert len(charger.tap.profiles()) == 1
        # Wanted again with the same content: not sent again, answered with the refusal.
        assert (await server.apply_schedule(one_hour("cp"))) == record
        assert len(charger.tap.profiles()) == 1
        # A refusal may pass (a reboot, a transaction the charger had not started yet): still wanted
        # REFUSED_RETRY_S later, it is offered again.
        clock.advance(timedelta(seconds=REFUSED_RETRY_S - 1))
        assert (await server.apply_schedule(one_hour("cp"))) == record
        clock.advance(timedelta(seconds=2))
        again = await server.apply_schedule(one_hour("cp"))
        assert again.status is ProfileStatus.REJECTED and again.at > record.at
        assert len(charger.tap.profiles()) == 2


async def start_and_settle(charger: Any) -> None:
    """Start a transaction without booting, then wait until the re-sync that triggers is over."""
    await charger.call(ocpp.v21.call.TransactionEvent(**_started_kwargs()))
    await wait_until(lambda: len(charger.tap.calls("TriggerMessage")) == 2, what="re-sync")
    await asyncio.sleep(0.05)  # the triggers' answers are on their way back


def _started_kwargs() -> dict[str, Any]:
    return {
        "event_type": "Started",
        "seq_no": 0,
        "timestamp": iso(T0),
        "trigger_reason": "CablePluggedIn",
        "transaction_info": {"transaction_id": "t1"},
        "evse": {"id": 1, "connector_id": 1},
    }


async def test_unanswered_profile_times_out_and_is_retried_with_backoff() -> None:
    cfg = site([{"id": "cp"}], call_timeout_s=0.2)
    async with (
        running_server(cfg, clock=ManualClock(T0), backoff=FAST) as (server, events),
        library_charger(server, "cp", "2.1") as charger,
    ):
        await start_and_settle(charger)
        charger.tap.ignore_actions.add("SetChargingProfile")
        record = await server.apply_schedule(one_hour("cp"))
        assert record.status is ProfileStatus.TIMEOUT
        await wait_until(lambda: len(charger.tap.profiles()) >= 3, timeout_s=20, what="retries")
        charger.tap.ignore_actions.clear()
        view = server.charger("cp")
        assert view is not None
        await wait_until(
            lambda: view.last_profile is not None and view.last_profile.accepted,
            timeout_s=20,
            what="accepted",
        )
        assert view.last_profile is not None and view.last_profile.attempt >= 3
        statuses = [e.record.status for e in events.of(ProfileAnswered) if e.record.purpose == "TxProfile"]
        assert statuses[:2] == [ProfileStatus.TIMEOUT, ProfileStatus.TIMEOUT]
        assert statuses[-1] is ProfileStatus.ACCEPTED
        # The charger stayed usable meanwhile: one outstanding call never blocked its own calls.
        assert (await charger.call(ocpp.v21.call.Heartbeat())).current_time


async def test_callerror_answer_fails_then_retry_succeeds() -> None:
    async with (
        running_server(site([{"id": "cp"}]), clock=ManualClock(T0), backoff=FAST) as (server, _),
        raw_connect(server.port, "cp", "2.0.1") as connection,
    ):
        raw = Raw(connection)
        assert (await raw.call("t", "TransactionEvent", TX_STARTED))[0] == 3
        await raw.answer_setup()
        pending = asyncio.create_task(server.apply_schedule(one_hour("cp")))
        first = await raw.recv()
        assert first[2] == "SetChargingProfile"
        await raw.send([4, first[1], "InternalError", "busy", {}])
        record = await pending
        assert record.status is ProfileStatus.FAILED and "InternalError" in record.reason
        second = await raw.recv()
        assert second[2] == "SetChargingProfile" and second[3] == first[3]
        await raw.send([3, second[1], {"status": "Accepted"}])
        view = server.charger("cp")
        assert view is not None
        await wait_until(lambda: view.last_profile is not None and view.last_profile.accepted)
        # A result that breaks the response schema counts as a failure too.
        pending = asyncio.create_task(server.apply_schedule(one_hour("cp", setpoint_w=5000)))
        third = await raw.recv()
        await raw.send([3, third[1], {"status": "Maybe"}])
        assert (await pending).status is ProfileStatus.FAILED


@contextlib.asynccontextmanager
async def refusing_charger(port: int, code: str, calls: list[Any]) -> AsyncIterator[Raw]:
    """A 2.0.1 charger that answers every SetChargingProfile with CALLERROR ``code`` and every other
    CALL Accepted, in the background; the server's CALLs are collected in ``calls``."""

    async def answer(raw: Raw) -> None:
        while True:
            frame = await raw.recv(timeout_s=60)
            if frame[0] != 2:
                continue  # answers to our own CALLs
            calls.append(frame)
            if frame[2] == "SetChargingProfile":
                await raw.send([4, frame[1], code, "not for this charger", {}])
            elif frame[2] == "SetVariables":
                results = [
                    {"attributeStatus": "Accepted", "component": d["component"], "variable": d["variable"]}
                    for d in frame[3]["setVariableData"]
                ]
                await raw.send([3, frame[1], {"setVariableResult": results}])
            else:
                await raw.send([3, frame[1], {"status": "Accepted"}])

    async with raw_connect(port, "cp", "2.0.1") as connection:
        raw = Raw(connection)
        task = asyncio.create_task(answer(raw))
        try:
            yield raw
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await task


def sent_profiles(calls: list[Any], purpose: str) -> list[dict[str, Any]]:
    return [
        c[3]
        for c in calls
        if c[2] == "SetChargingProfile" and c[3]["chargingProfile"]["chargingProfilePurpose"] == purpose
    ]


@pytest.mark.parametrize("code", ["NotSupported", "OccurenceConstraintViolation", "SecurityError"])
async def test_callerror_that_can_never_succeed_is_final_one_attempt_per_profile(
    code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import controller.ocpp.server as server_module

    monkeypatch.setattr(server_module, "SILENT_RESYNC_AFTER_S", 0.3)  # it never boots: re-synced
    cfg = site([{"id": "cp", "ocpp_versions": ["2.0.1"]}])
    async with running_server(cfg, clock=ManualClock(T0), backoff=FAST) as (server, events):
        calls: list[Any] = []
        async with refusing_charger(server.port, code, calls) as raw:
            await raw.send([2, "t", "TransactionEvent", TX_STARTED])
            await wait_until(lambda: sum(c[2] == "TriggerMessage" for c in calls) == 2, what="re-sync")
            record = await server.apply_schedule(one_hour("cp"))
            assert record.status is ProfileStatus.REJECTED and code in record.reason
            # The same content planned again five minutes on: not sent, answered as before.
            replanned = ChargerSchedule(
                "cp",
                T0 + timedelta(minutes=5),
                T0 + timedelta(minutes=65),
                (SchedulePeriod(timedelta(0), 4000, 11000, 0),),
            )
            assert (await server.apply_schedule(replanned)) == record
            changed = await server.apply_schedule(one_hour("cp", setpoint_w=5000))
            assert changed.status is ProfileStatus.REJECTED and changed.attempt == 1
            await asyncio.sleep(0.6)  # backoff (0.05 s doubling) would have retried several times
            assert len(sent_profiles(calls, "TxDefaultProfile")) == 1
            assert len(sent_profiles(calls, "TxProfile")) == 2
            view = server.charger("cp")
            assert view is not None and view.last_profile == changed
            assert view.default_profile is not None and view.default_profile.status is ProfileStatus.REJECTED
            answered = [(e.record.purpose, e.record.status) for e in events.of(ProfileAnswered)]
            assert answered == [
                ("TxDefaultProfile", ProfileStatus.REJECTED),
                ("TxProfile", ProfileStatus.REJECTED),
                ("TxProfile", ProfileStatus.REJECTED),
            ]
        # A reconnect sends both once more (the charger may have been updated meanwhile).
        calls.clear()
        async with refusing_charger(server.port, code, calls):
            await wait_until(lambda: sent_profiles(calls, "TxProfile"), what="the profile, re-sent")
            await asyncio.sleep(0.6)
            assert len(sent_profiles(calls, "TxDefaultProfile")) == 1
            assert len(sent_profiles(calls, "TxProfile")) == 1


async def test_reconnect_replaces_connection_resyncs_and_resends_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import controller.ocpp.server as server_module

    monkeypatch.setattr(server_module, "SILENT_RESYNC_AFTER_S", 0.3)  # the second one does not boot
    async with running_server(site([{"id": "cp"}]), clock=ManualClock(T0)) as (server, events):
        async with library_charger(server, "cp", "2.1") as first:
            await first.boot()
            await first.call(ocpp.v21.call.TransactionEvent(**_started_kwargs()))
            assert (await server.apply_schedule(one_hour("cp"))).accepted
            sent_before = first.tap.calls("SetChargingProfile")[-1]
            async with library_charger(server, "cp", "2.1") as second:
                # The old socket is closed by the server; the new one is the charger now.
                await wait_until(lambda: first.tap.connection.close_code == 1000, what="old socket closed")
                await wait_until(lambda: second.tap.calls("TriggerMessage"), what="status re-sync")
                await wait_until(
                    lambda: [p for p in second.tap.calls("SetChargingProfile") if p == sent_before],
                    what="profile re-sent",
                )
                view = server.charger("cp")
                assert view is not None and view.connected and view.transaction_id == "t1"
                assert events.of(ChargerConnected)[-1].replaced_previous
                assert not events.of(ChargerDisconnected)
        await events.wait(ChargerDisconnected)


async def test_16_charger_running_before_a_controller_restart_is_resynced() -> None:
    """No BootNotification (the charger kept running while the controller restarted): re-sync anyway."""
    async with (
        running_server(site([{"id": "cp", "ocpp_versions": ["1.6"]}]), clock=ManualClock(T0)) as (
            server,
            events,
        ),
        library_charger(server, "cp", "1.6") as charger,
    ):
        await charger.call(ocpp.v16.call.Heartbeat())
        await wait_until(lambda: len(charger.tap.calls("TriggerMessage")) == 2, what="re-sync triggers")
        assert [c["key"] for c in charger.tap.calls("ChangeConfiguration")] == [
            "MeterValuesSampledData",
            "MeterValueSampleInterval",
        ]
        assert len(charger.tap.profiles("TxDefaultProfile")) == 1
        assert charger.tap.calls("TriggerMessage") == [
            {"requestedMessage": "StatusNotification"},
            {"requestedMessage": "MeterValues", "connectorId": 1},
        ]
        # The triggered MeterValues name the running transaction: adopted, so profiles can target it.
        await charger.call(
            ocpp.v16.call.MeterValues(
                connector_id=1,
                transaction_id=4242,
                meter_value=[
                    {
                        "timestamp": iso(T0),
                        "sampled_value": [{"value": "3680", "measurand": "Power.Active.Import", "unit": "W"}],
                    }
                ],
            )
        )
        view = server.charger("cp")
        assert view is not None and view.transaction_id == "4242" and view.meter.power_w == 3680
        assert events.of(TransactionStarted)[-1].transaction_id == "4242"
        assert (await server.apply_schedule(one_hour("cp"))).accepted
        assert charger.tap.profiles()[-1]["csChargingProfiles"]["transactionId"] == 4242
        # Only the first message re-syncs.
        await charger.call(ocpp.v16.call.Heartbeat())
        await asyncio.sleep(0.1)
        assert len(charger.tap.calls("TriggerMessage")) == 2


async def test_21_charger_running_before_a_controller_restart_is_resynced() -> None:
    async with (
        running_server(site([{"id": "cp"}]), clock=ManualClock(T0)) as (server, _),
        library_charger(server, "cp", "2.1") as charger,
    ):
        assert (await server.apply_schedule(one_hour("cp"))).status is ProfileStatus.DEFERRED
        await charger.call(
            ocpp.v21.call.StatusNotification(
                timestamp=iso(T0), connector_status="Occupied", evse_id=1, connector_id=1
            )
        )
        await wait_until(lambda: len(charger.tap.calls("TriggerMessage")) == 2, what="re-sync triggers")
        assert charger.tap.calls("TriggerMessage") == [
            {"requestedMessage": "StatusNotification", "evse": {"id": 1, "connectorId": 1}},
            {"requestedMessage": "TransactionEvent", "evse": {"id": 1}},
        ]
        assert len(charger.tap.profiles("TxDefaultProfile")) == 1
        await charger.call(
            ocpp.v21.call.TransactionEvent(
                **{**_started_kwargs(), "event_type": "Updated", "trigger_reason": "Trigger"}
            )
        )
        await wait_until(lambda: charger.tap.profiles(), what="the wanted profile, sent once re-synced")
        assert charger.tap.profiles()[0]["chargingProfile"]["transactionId"] == "t1"


async def test_silent_charger_running_before_a_controller_restart_is_resynced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reconnected without booting and idle (its next heartbeat minutes away): re-synced anyway."""
    import controller.ocpp.server as server_module

    monkeypatch.setattr(server_module, "SILENT_RESYNC_AFTER_S", 0.5)
    cfg = site([{"id": "cp", "ocpp_versions": ["2.0.1"]}])
    async with (
        running_server(cfg, clock=ManualClock(T0)) as (server, _),
        raw_connect(server.port, "cp", "2.0.1") as connection,
    ):
        raw = Raw(connection)
        assert await raw.silent(0.3)  # a booting charger gets its moment to boot first
        calls = await raw.answer_setup()
        assert [c[2] for c in calls] == [
            "SetVariables",
            "SetVariables",
            "SetChargingProfile",
            "TriggerMessage",
            "TriggerMessage",
        ]
        assert calls[2][3]["chargingProfile"]["chargingProfilePurpose"] == "TxDefaultProfile"
        assert calls[-2][3] == {"requestedMessage": "StatusNotification", "evse": {"id": 1, "connectorId": 1}}
        assert calls[-1][3] == {"requestedMessage": "TransactionEvent", "evse": {"id": 1}}
        # Talking now does not re-sync it a second time.
        answer = await raw.answer_to("h", "Heartbeat", {})
        assert answer[0] == 3 and await raw.silent(0.3)


async def test_charger_that_boots_at_once_is_not_also_resynced(monkeypatch: pytest.MonkeyPatch) -> None:
    import controller.ocpp.server as server_module

    monkeypatch.setattr(server_module, "SILENT_RESYNC_AFTER_S", 0.3)
    cfg = site([{"id": "cp", "ocpp_versions": ["2.0.1"]}])
    async with (
        running_server(cfg) as (server, _),
        library_charger(server, "cp", "2.0.1") as charger,
    ):
        await charger.boot()
        await wait_until(lambda: charger.tap.profiles("TxDefaultProfile"), what="setup after boot")
        await asyncio.sleep(0.6)
        assert not charger.tap.calls("TriggerMessage")
        assert len(charger.tap.profiles("TxDefaultProfile")) == 1


@pytest.mark.parametrize("version", ["1.6", "2.0.1", "2.1"])
async def test_a_known_charger_that_reboots_is_set_up_once_per_boot(
    version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import controller.ocpp.server as server_module

    monkeypatch.setattr(server_module, "SILENT_RESYNC_AFTER_S", 0.3)
    config_action = "ChangeConfiguration" if version == "1.6" else "SetVariables"
    cfg = site([{"id": "cp", "ocpp_versions": [version]}])
    async with running_server(cfg) as (server, _):
        setups = []
        for _boot in range(2):  # the first boot, then a reboot: a new connection that boots at once
            async with library_charger(server, "cp", version) as charger:
                await charger.boot()
                await wait_until(partial(charger.tap.profiles, "TxDefaultProfile"), what="setup")
                await asyncio.sleep(0.6)  # past the silent charger's wait: nothing more comes
                setups.append(
                    (
                        len(charger.tap.calls(config_action)),
                        len(charger.tap.profiles("TxDefaultProfile")),
                        len(charger.tap.calls("TriggerMessage")),
                    )
                )
        assert setups[0][1:] == (1, 0) and setups[0][0] >= 1
        assert setups[1] == setups[0]


async def test_default_profile_is_retried_until_the_charger_answers() -> None:
    cfg = site([{"id": "cp", "ocpp_versions": ["2.0.1"]}], call_timeout_s=0.2)
    async with (
        running_server(cfg, backoff=FAST) as (server, events),
        library_charger(server, "cp", "2.0.1") as charger,
    ):
        charger.tap.ignore_actions.add("SetChargingProfile")
        await charger.boot()
        view = server.charger("cp")
        assert view is not None
        await wait_until(lambda: len(charger.tap.profiles("TxDefaultProfile")) >= 2, what="a retry")
        assert view.default_profile is not None and view.default_profile.status is ProfileStatus.TIMEOUT
        charger.tap.ignore_actions.clear()
        await wait_until(
            lambda: view.default_profile is not None and view.default_profile.accepted, what="accepted"
        )
        assert view.default_profile is not None and view.default_profile.attempt >= 2
        count = len(charger.tap.profiles("TxDefaultProfile"))
        await asyncio.sleep(0.4)
        assert len(charger.tap.profiles("TxDefaultProfile")) == count  # accepted: no more retries
        answered = [e.record for e in events.of(ProfileAnswered) if e.record.purpose == "TxDefaultProfile"]
        assert answered[0].status is ProfileStatus.TIMEOUT and answered[-1].accepted


async def test_never_more_than_one_outstanding_call_per_charger() -> None:
    async with (
        running_server(site([{"id": "cp", "ocpp_versions": ["2.0.1"]}])) as (server, _),
        raw_connect(server.port, "cp", "2.0.1") as connection,
    ):
        raw = Raw(connection)
        boot = {"reason": "PowerUp", "chargingStation": {"vendorName": "Raw", "model": "R"}}
        assert (await raw.call("b", "BootNotification", boot))[0] == 3
        first = await raw.recv()
        assert first[:3] == [2, first[1], "SetVariables"]
        # Setup continues and someone wants the default profile now: both wait for our answer.
        install = asyncio.create_task(server.install_default_profile("cp"))
        assert await raw.silent(0.5)
        await raw.send(
            [
                3,
                first[1],
                {
                    "setVariableResult": [
                        {
                            "attributeStatus": "Accepted",
                            "component": d["component"],
                            "variable": d["variable"],
                        }
                        for d in first[3]["setVariableData"]
                    ]
                },
            ]
        )
        second = await raw.recv()
        assert second[0] == 2 and second[1] != first[1]
        assert await raw.silent(0.3)  # again nothing else until this one is answered
        install.cancel()


async def test_schedule_before_connect_is_sent_once_the_transaction_starts() -> None:
    async with running_server(site([{"id": "cp"}]), clock=ManualClock(T0)) as (server, _):
        assert (await server.apply_schedule(one_hour("cp"))).status is ProfileStatus.NOT_CONNECTED
        with pytest.raises(KeyError):
            await server.apply_schedule(one_hour("nobody"))
        async with library_charger(server, "cp", "2.1") as charger:
            await charger.call(ocpp.v21.call.TransactionEvent(**_started_kwargs()))
            await wait_until(lambda: charger.tap.profiles(), what="deferred profile")
            assert charger.tap.profiles()[0]["chargingProfile"]["transactionId"] == "t1"


async def test_newer_schedule_supersedes_one_waiting_to_be_sent() -> None:
    cfg = site([{"id": "cp"}], call_timeout_s=0.5)
    async with (
        running_server(cfg, clock=ManualClock(T0), backoff=FAST) as (server, _),
        library_charger(server, "cp", "2.1") as charger,
    ):
        await charger.call(ocpp.v21.call.TransactionEvent(**_started_kwargs()))
        charger.tap.ignore_actions.add("SetChargingProfile")
        first = asyncio.create_task(server.apply_schedule(one_hour("cp", 1000)))
        await wait_until(lambda: charger.tap.profiles())
        second = asyncio.create_task(server.apply_schedule(one_hour("cp", 2000)))
        third = asyncio.create_task(server.apply_schedule(one_hour("cp", 3000)))
        await asyncio.sleep(0.05)
        charger.tap.ignore_actions.clear()
        assert (await first).status is ProfileStatus.TIMEOUT
        assert (await second).status is ProfileStatus.SUPERSEDED
        assert (await third).status is ProfileStatus.ACCEPTED
        setpoints = [
            p["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"][0]["setpoint"]
            for p in charger.tap.profiles()
        ]
        assert 2000 not in setpoints and setpoints[-1] == 3000


async def test_install_default_profile_on_demand_and_clean_stop() -> None:
    events_seen: list[Any] = []
    async with (
        running_server(site([{"id": "cp", "ocpp_versions": ["2.0.1"]}])) as (server, _),
        library_charger(server, "cp", "2.0.1") as charger,
    ):
        record = await server.install_default_profile("cp")
        assert record.accepted and record.purpose == "TxDefaultProfile"
        sent = charger.tap.calls("SetChargingProfile")[-1]
        assert sent["evseId"] == 0 and sent["chargingProfile"]["chargingProfilePurpose"] == "TxDefaultProfile"
        await server.stop()
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(charger.tap.connection.recv(), 3)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        events_seen.append(closed.value.rcvd.code)
    assert events_seen == [1001]
    assert (await server.install_default_profile("cp")).status is ProfileStatus.NOT_CONNECTED


async def test_failing_event_sink_breaks_nothing() -> None:
    def explode(_: Any) -> None:
        raise RuntimeError("sink bug")

    from controller.ocpp import OcppServer

    async with (
        OcppServer(site([{"id": "cp"}]), on_event=explode, host="127.0.0.1", port=0) as server,
        raw_connect(server.port, "cp", "2.0.1") as connection,
    ):
        raw = Raw(connection)
        assert (await raw.call("t", "TransactionEvent", TX_STARTED))[0] == 3
        view = server.charger("cp")
        assert view is not None and view.transaction_id == "t1"


# ------------------------------------------------------------------ the handshake


async def test_no_common_subprotocol_completes_handshake_then_closes() -> None:
    cfg = site([{"id": "cp", "ocpp_versions": ["2.1"]}])
    async with running_server(cfg) as (server, events):
        for offered in (["ocpp1.6", "ocpp2.0.1"], ["ocpp2.0"], None):
            async with connect(
                f"ws://127.0.0.1:{server.port}/ocpp/cp",
                subprotocols=[Subprotocol(p) for p in offered] if offered else None,
            ) as connection:
                assert connection.response is not None and connection.response.status_code == 101
                assert connection.subprotocol is None
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(connection.recv(), 3)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1002
        assert not events.of(ChargerConnected)


async def test_version_restricted_by_config() -> None:
    cfg = site([{"id": "cp", "ocpp_versions": ["1.6", "2.0.1"]}])
    async with running_server(cfg) as (server, _):
        offered = ["ocpp2.1", "ocpp1.6", "ocpp2.0.1"]
        async with connect(
            f"ws://127.0.0.1:{server.port}/ocpp/cp",
            subprotocols=[Subprotocol(p) for p in offered] if offered else None,
        ) as connection:
            assert connection.subprotocol == "ocpp2.0.1"


async def test_unknown_charger_refused_unless_config_accepts() -> None:
    async with running_server(site([{"id": "cp"}])) as (server, _):
        for path in ("/ocpp/stranger", "/ocpp/a/b", "/"):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(
                    f"ws://127.0.0.1:{server.port}{path}", subprotocols=[Subprotocol("ocpp2.0.1")]
                ):
                    pass
            assert refused.value.response.status_code == 404
    async with (
        running_server(site([{"id": "cp"}], accept_unknown_chargers=True)) as (server, events),
        raw_connect(server.port, "stranger", "2.1") as connection,
    ):
        assert (await Raw(connection).call("hb", "Heartbeat", {}))[0] == 3
        view = server.charger("stranger")
        assert view is not None and view.connected
        assert (await events.wait(ChargerConnected))[0].charger_id == "stranger"


async def test_unknown_charger_is_forgotten_when_it_disconnects() -> None:
    cfg = site([{"id": "cp"}], accept_unknown_chargers=True)
    async with running_server(cfg) as (server, events):
        for round_ in (1, 2):
            async with raw_connect(server.port, "stranger", "2.1") as connection:
                assert (await Raw(connection).call("hb", "Heartbeat", {}))[0] == 3
                assert server.charger("stranger") is not None and "stranger" in server._tasks
                sender = server._tasks["stranger"]
            await events.wait(ChargerDisconnected, round_)
            await wait_until(lambda: server.charger("stranger") is None, what="the stranger forgotten")
            assert "stranger" not in server._tasks and sender.done()
            with pytest.raises(KeyError):
                await server.apply_schedule(one_hour("stranger"))
        # A configured charger stays known while away.
        async with raw_connect(server.port, "cp", "2.1") as connection:
            assert (await Raw(connection).call("hb", "Heartbeat", {}))[0] == 3
        await events.wait(ChargerDisconnected, 3)
        view = server.charger("cp")
        assert view is not None and not view.connected and "cp" in server._tasks


async def test_connected_unknown_chargers_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    import controller.ocpp.server as server_module

    monkeypatch.setattr(server_module, "MAX_UNKNOWN_CHARGERS", 2)
    cfg = site([{"id": "cp"}], accept_unknown_chargers=True)
    async with (
        running_server(cfg) as (server, _),
        raw_connect(server.port, "s1", "2.1") as first,
        raw_connect(server.port, "s2", "2.1"),
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with raw_connect(server.port, "s3", "2.1"):
                pass
        assert refused.value.response.status_code == 503
        # The configured charger is never counted, and a freed place can be taken.
        async with raw_connect(server.port, "cp", "2.1") as connection:
            assert (await Raw(connection).call("hb", "Heartbeat", {}))[0] == 3
        await first.close()
        await wait_until(lambda: server.charger("s1") is None, what="s1 forgotten")
        async with raw_connect(server.port, "s3", "2.1") as connection:
            assert (await Raw(connection).call("hb", "Heartbeat", {}))[0] == 3
        assert sorted(server.chargers) == ["cp", "s2", "s3"]


async def test_simultaneous_unknown_handshakes_cannot_pass_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    import controller.ocpp.server as server_module

    monkeypatch.setattr(server_module, "MAX_UNKNOWN_CHARGERS", 2)
    handle = server_module.OcppServer._handle

    async def handled_late(self: Any, connection: Any) -> None:
        await asyncio.sleep(0.2)  # a busy loop: other handshakes complete before this one is handled
        await handle(self, connection)

    monkeypatch.setattr(server_module.OcppServer, "_handle", handled_late)
    cfg = site([{"id": "cp"}], accept_unknown_chargers=True)
    async with running_server(cfg) as (server, _):
        attempts = await asyncio.gather(
            *(raw_connect(server.port, f"s{i}", "2.1") for i in range(6)), return_exceptions=True
        )
        connected = [a for a in attempts if not isinstance(a, BaseException)]
        refused = [a for a in attempts if isinstance(a, InvalidStatus)]
        assert len(connected) == 2 and len(refused) == 4, attempts
        assert all(r.response.status_code == 503 for r in refused)
        for connection in connected:
            await connection.close()
        await wait_until(lambda: not server.chargers.keys() - {"cp"}, what="unknown chargers forgotten")
        # The places are free again: neither the refused nor the closed handshakes hold one.
        async with raw_connect(server.port, "s9", "2.1") as connection:
            assert (await Raw(connection).call("hb", "Heartbeat", {}))[0] == 3


async def test_evse_ids_beyond_bounds_are_answered_but_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    import controller.ocpp.model as model_module

    monkeypatch.setattr(model_module, "MAX_EVSES", 2)

    def status(evse_id: int) -> dict[str, Any]:
        return {"timestamp": iso(T0), "connectorStatus": "Occupied", "evseId": evse_id, "connectorId": 1}

    huge = 99_999_999
    meter = [{"timestamp": iso(T0), "sampledValue": [{"value": 5, "measurand": "SoC"}]}]
    tx = {**TX_STARTED, "evse": {"id": huge, "connectorId": 1}}
    needs = {"evseId": huge, "chargingNeeds": {"requestedEnergyTransfer": "AC_three_phase"}}
    with structlog.testing.capture_logs() as logs:
        async with (
            running_server(site([{"id": "cp"}])) as (server, events),
            raw_connect(server.port, "cp", "2.1") as connection,
        ):
            raw = Raw(connection)
            assert await raw.answer_to("s", "StatusNotification", status(huge)) == [3, "s", {}]
            assert await raw.answer_to("m", "MeterValues", {"evseId": huge, "meterValue": meter}) == [
                3,
                "m",
                {},
            ]
            assert await raw.answer_to("t", "TransactionEvent", tx) == [3, "t", {}]
            answer = await raw.answer_to("n", "NotifyEVChargingNeeds", needs)
            assert answer == [3, "n", {"status": "Rejected"}]
            # At most MAX_EVSES distinct EVSEs, plus the configured one (evse 1) whenever it comes.
            for n, evse_id in enumerate((2, 3, 4, 1)):
                assert (await raw.answer_to(f"s{n}", "StatusNotification", status(evse_id)))[0] == 3
            view = server.charger("cp")
            assert view is not None and sorted(view.evses) == [1, 2, 3]
            assert [e.evse_id for e in events.of(StatusChanged)] == [2, 3, 1]
            assert not events.of(MeterValuesReceived) and not events.of(TransactionStarted)
            assert not events.of(ChargingNeedsReported)
    ignored = [e for e in logs if e["event"] == "ocpp_evse_ignored"]
    assert {e["evse_id"] for e in ignored} == {huge, 4}
    assert all(e["charger_id"] == "cp" and e["log_level"] == "warning" for e in ignored)


async def test_16_connector_ids_beyond_bounds_are_ignored() -> None:
    async with (
        running_server(site([{"id": "cp"}])) as (server, events),
        raw_connect(server.port, "cp", "1.6") as connection,
    ):
        raw = Raw(connection)
        for n, connector in enumerate((-5, 99_999_999, 0, 1)):
            payload = {"connectorId": connector, "errorCode": "NoError", "status": "Available"}
            assert await raw.answer_to(f"s{n}", "StatusNotification", payload) == [3, f"s{n}", {}]
        meter = [{"timestamp": iso(T0), "sampledValue": [{"value": "5", "measurand": "SoC"}]}]
        payload = {"connectorId": 99_999_999, "transactionId": 7, "meterValue": meter}
        assert await raw.answer_to("m", "MeterValues", payload) == [3, "m", {}]
        view = server.charger("cp")
        assert view is not None and sorted(view.evses) == [0, 1]
        assert not events.of(MeterValuesReceived) and not events.of(TransactionStarted)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, 401),
        (basic_auth("cp", "wrong-password"), 401),
        (basic_auth("someone-else", PASSWORD), 401),
        ({"Authorization": "Basic !!!"}, 401),
        ({"Authorization": "Bearer abc"}, 401),
    ],
)
async def test_basic_auth_refusals(headers: dict[str, str] | None, expected: int) -> None:
    cfg = site([{"id": "cp", "auth": {"password_hash": PASSWORD_HASH}}])
    async with running_server(cfg) as (server, events):
        with pytest.raises(InvalidStatus) as refused:
            async with raw_connect(server.port, "cp", "2.0.1", additional_headers=headers):
                pass
        assert refused.value.response.status_code == expected
        assert refused.value.response.headers["WWW-Authenticate"].startswith("Basic")
        assert not events.of(ChargerConnected)


async def test_basic_auth_accepts_the_right_password_and_remembers_it() -> None:
    cfg = site([{"id": "cp", "auth": {"password_hash": PASSWORD_HASH}}])
    async with running_server(cfg) as (server, _):
        for _ in range(2):
            async with library_charger(server, "cp", "2.0.1", password=PASSWORD) as charger:
                assert (await charger.boot()).status == "Accepted"
        assert "cp" in server._handshakes.passwords.verified


@pytest.mark.parametrize("fault", ["raises", "invalid_reply"])
async def test_our_own_handler_faults_become_internal_error(
    fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.ocpp.rpc import Reply
    from controller.ocpp.v2 import V2Adapter

    def broken(self: V2Adapter, payload: dict[str, Any]) -> Reply:
        if fault == "raises":
            raise RuntimeError("bug")
        return Reply({"status": "Accepted"})  # StatusNotification answers {}: schema says no

    monkeypatch.setattr(V2Adapter, "_status", broken)
    async with (
        running_server(site([{"id": "cp"}])) as (server, _),
        raw_connect(server.port, "cp", "2.0.1") as connection,
    ):
        raw = Raw(connection)
        status = {"timestamp": iso(T0), "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1}
        answer = await raw.call("s", "StatusNotification", status)
        assert answer[:3] == [4, "s", "InternalError"]
        assert (await raw.call("hb", "Heartbeat", {}))[:2] == [3, "hb"]


async def test_a_bug_while_building_a_profile_fails_that_one_and_keeps_the_sender(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import controller.ocpp.sender as sender_module
    from controller.ocpp.profiles import tx_profile_payload as real

    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise ValueError("cannot build")

    async with (
        running_server(site([{"id": "cp"}]), clock=ManualClock(T0)) as (server, _),
        library_charger(server, "cp", "2.1") as charger,
    ):
        await charger.call(ocpp.v21.call.TransactionEvent(**_started_kwargs()))
        monkeypatch.setattr(sender_module, "tx_profile_payload", broken)
        record = await server.apply_schedule(one_hour("cp"))
        assert record.status is ProfileStatus.FAILED and "cannot build" in record.reason
        monkeypatch.setattr(sender_module, "tx_profile_payload", real)
        assert (await server.apply_schedule(one_hour("cp", 5000))).accepted
