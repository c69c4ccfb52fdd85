"""``OcppServer.make_safe``, the OCPP side of the daemon's stop: nothing that discharges once it began,
the safe profile instead of whatever was waiting, all chargers in parallel within the budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Any

import ocpp.v21

from controller.backoff import Backoff
from controller.clock import ManualClock
from controller.domain import ChargerSchedule, SchedulePeriod
from controller.ocpp import OcppServer
from controller.ocpp.model import ProfileStatus
from tests.ocpp_support import T0, LibraryCharger, iso, library_charger, running_server, site, wait_until

FAST = Backoff(initial_s=0.05, factor=2, max_s=0.2)
BIDIRECTIONAL = {"bidirectional": True, "max_discharge_kw": 10, "ocpp_versions": ["2.1"]}


def schedule(charger_id: str, setpoint_w: float) -> ChargerSchedule:
    return ChargerSchedule(
        charger_id,
        T0,
        T0 + timedelta(hours=1),
        (SchedulePeriod(timedelta(0), setpoint_w, 11_000, max(0.0, -setpoint_w)),),
    )


def discharges(payload: dict[str, Any]) -> bool:
    rows = payload["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]
    return any(r.get("setpoint", 0) < 0 or r.get("dischargeLimit", 0) < 0 for r in rows)


@asynccontextmanager
async def chargers_in_transaction(server: OcppServer, ids: list[str]) -> AsyncIterator[list[LibraryCharger]]:
    """OCPP 2.1 chargers, booted (default profile accepted) and each in transaction ``t1``."""
    async with AsyncExitStack() as stack:
        connected = [await stack.enter_async_context(library_charger(server, cid, "2.1")) for cid in ids]
        for charger in connected:
            await charger.boot()
            await charger.call(
                ocpp.v21.call.TransactionEvent(
                    event_type="Started",
                    seq_no=0,
                    timestamp=iso(T0),
                    trigger_reason="CablePluggedIn",
                    transaction_info={"transaction_id": "t1"},
                    evse={"id": 1, "connector_id": 1},
                )
            )
        for charger in connected:
            await wait_until(partial(charger.tap.profiles, "TxDefaultProfile"), what="the default profile")
        yield connected


async def test_a_discharge_waiting_for_its_answer_is_replaced_by_the_safe_profile_and_never_sent_again() -> (
    None
):
    cfg = site([{"id": "cp", **BIDIRECTIONAL}], call_timeout_s=10)
    async with (
        running_server(cfg, clock=ManualClock(T0)) as (server, _),
        chargers_in_transaction(server, ["cp"]) as (charger,),
    ):
        await asyncio.sleep(0.1)  # the setup's last answers are on their way back
        charger.tap.ignore_actions.add("SetChargingProfile")  # from now on it never answers one
        in_flight = asyncio.create_task(server.apply_schedule(schedule("cp", -10_000)))
        await wait_until(lambda: [p for p in charger.tap.profiles() if discharges(p)], what="the discharge")
        waiting = asyncio.create_task(server.apply_schedule(schedule("cp", -8_000)))  # a newer one queued
        await asyncio.sleep(0.05)
        sent = len(charger.tap.calls("SetChargingProfile"))

        started = time.monotonic()
        records = await server.make_safe({"cp": schedule("cp", 2_000)}, budget_s=0.5)
        assert time.monotonic() - started < 1.0  # the budget, not the 10 s call timeout
        # The in-flight call was abandoned; what waited behind it was withheld.
        assert (await in_flight).status is ProfileStatus.WITHHELD
        assert (await waiting).status is ProfileStatus.WITHHELD
        after = charger.tap.calls("SetChargingProfile")[sent:]
        assert len(after) == 1 and not discharges(after[0])  # only the safe TxProfile went out
        assert after[0]["chargingProfile"]["transactionId"] == "t1"
        assert records == {"cp": []}  # nothing answered within the budget
        # Later wishes to discharge go nowhere.
        assert (await server.apply_schedule(schedule("cp", -5_000))).status is ProfileStatus.WITHHELD
        await asyncio.sleep(0.2)
        assert len(charger.tap.calls("SetChargingProfile")) == sent + 1


async def test_every_charger_gets_the_safe_tx_profile_then_the_default_profile_in_parallel() -> None:
    ids = ["a", "b", "c"]
    cfg = site([{"id": cid, **BIDIRECTIONAL} for cid in ids])
    async with (
        running_server(cfg, clock=ManualClock(T0)) as (server, _),
        chargers_in_transaction(server, ids) as chargers,
    ):
        await asyncio.sleep(0.1)
        counts = [len(c.tap.calls("SetChargingProfile")) for c in chargers]
        # A safe schedule that discharges after all is withheld too; the default profile still goes.
        safe = {"a": schedule("a", 3_000), "b": schedule("b", 0.0), "c": schedule("c", -1_000)}
        records = await server.make_safe(safe, budget_s=3.0)
        assert [(r.purpose, r.status) for r in records["a"]] == [
            ("TxProfile", ProfileStatus.ACCEPTED),
            ("TxDefaultProfile", ProfileStatus.ACCEPTED),
        ]
        assert [r.status for r in records["b"]] == [ProfileStatus.ACCEPTED, ProfileStatus.ACCEPTED]
        assert [(r.purpose, r.status) for r in records["c"]] == [
            ("TxProfile", ProfileStatus.WITHHELD),
            ("TxDefaultProfile", ProfileStatus.ACCEPTED),
        ]
        for charger, count in zip(chargers, counts, strict=True):
            after = charger.tap.calls("SetChargingProfile")[count:]
            assert [p["chargingProfile"]["chargingProfilePurpose"] for p in after][-1] == "TxDefaultProfile"
            assert not [p for p in after if "transactionId" in p["chargingProfile"] and discharges(p)]


async def test_a_stop_with_twenty_silent_chargers_takes_the_budget_once() -> None:
    ids = [f"cp{i}" for i in range(20)]
    cfg = site([{"id": cid, **BIDIRECTIONAL} for cid in ids], call_timeout_s=10)
    async with (
        running_server(cfg, clock=ManualClock(T0)) as (server, _),
        chargers_in_transaction(server, ids) as chargers,
    ):
        await asyncio.sleep(0.2)
        for charger in chargers:
            charger.tap.ignore_actions.add("SetChargingProfile")
        started = time.monotonic()
        records = await server.make_safe({cid: schedule(cid, 1_000) for cid in ids}, budget_s=0.5)
        assert time.monotonic() - started < 1.0  # in parallel: one budget, not twenty
        assert records == {cid: [] for cid in ids}
        for charger in chargers:  # each got its safe TxProfile on the wire
            assert not discharges(charger.tap.profiles()[-1])


async def test_once_the_stop_begins_a_discharge_waiting_for_its_retry_is_never_sent() -> None:
    cfg = site([{"id": "cp", **BIDIRECTIONAL}], call_timeout_s=0.2)
    async with (
        running_server(cfg, clock=ManualClock(T0), backoff=FAST) as (server, _),
        chargers_in_transaction(server, ["cp"]) as (charger,),
    ):
        await asyncio.sleep(0.1)
        charger.tap.ignore_actions.add("SetChargingProfile")
        first = await server.apply_schedule(schedule("cp", -10_000))
        assert first.status is ProfileStatus.TIMEOUT  # retried with backoff from now on
        server.begin_stop()  # what the daemon does first when it stops
        sent = len(charger.tap.calls("SetChargingProfile"))
        await asyncio.sleep(0.8)  # several backoff delays (0.05 s doubling, at most 0.2 s)
        assert len(charger.tap.calls("SetChargingProfile")) == sent
