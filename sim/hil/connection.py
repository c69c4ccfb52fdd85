"""The connection side of a virtual charge point: websocket with the version's subprotocol, boot,
heartbeats, reconnecting, and every task it runs (all ended by :meth:`ChargePoint.close`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Coroutine
from typing import Any, Self

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException
from websockets.typing import Subprotocol

from controller.clock import Clock
from controller.config import OcppVersion
from sim.hil import frames
from sim.hil.link import CallError, LinkClosed, OcppLink, ProtocolStats

__all__ = ["SUBPROTOCOLS", "ChargePoint"]

Json = dict[str, Any]
SUBPROTOCOLS = {OcppVersion.V16: "ocpp1.6", OcppVersion.V201: "ocpp2.0.1", OcppVersion.V21: "ocpp2.1"}
OPEN_TIMEOUT_S = 10.0
BOOT_ATTEMPTS = 10


class ChargePoint:
    """A charge point's link to the CSMS; subclasses answer its CALLs (:meth:`on_call`)."""

    def __init__(
        self,
        charger_id: str,
        version: OcppVersion,
        url: str,
        clock: Clock,
        call_timeout_s: float,
        password: str | None,
    ) -> None:
        self.charger_id = charger_id
        self.version = version
        self.url = url
        self.clock = clock
        self.call_timeout_s = call_timeout_s
        self.password = password
        self.stats = ProtocolStats()
        self.link: OcppLink | None = None
        self.heartbeat_s = 300.0
        self.tasks: set[asyncio.Task[Any]] = set()
        """Background work of the charger's life (ended by close)."""
        self.session_tasks: set[asyncio.Task[Any]] = set()
        """Work of one connection (readers, late answers, follow-ups)."""
        self.connection_lock = asyncio.Lock()
        """Held while the connection is being replaced (reboot, reconnect)."""

    @property
    def connected(self) -> bool:
        return self.link is not None and not self.link.closed.is_set()

    async def on_call(self, message_id: str, action: str, payload: Json) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def send_status(self) -> None:
        raise NotImplementedError

    async def send_meter_values(self, trigger: str = "MeterValuePeriodic") -> None:
        raise NotImplementedError

    @property
    def in_transaction(self) -> bool:
        raise NotImplementedError

    def trigger(self, payload: Json) -> tuple[Json, Coroutine[Any, Any, Any] | None]:
        """TriggerMessage: its answer and the message to send once it is on the wire."""
        wanted = payload.get("requestedMessage")
        if wanted == "StatusNotification":
            return {"status": "Accepted"}, self.send_status()
        if wanted == "TransactionEvent" and not self.in_transaction:
            return {"status": "Rejected"}, None
        if wanted in ("MeterValues", "TransactionEvent"):
            return {"status": "Accepted"}, self.send_meter_values("Trigger")
        if wanted == "Heartbeat":
            return {"status": "Accepted"}, self.call("Heartbeat", {})
        return {"status": "NotImplemented"}, None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def spawn(self, work: Coroutine[Any, Any, Any], into: set[asyncio.Task[Any]] | None = None) -> None:
        group = self.session_tasks if into is None else into
        task = asyncio.create_task(work)
        group.add(task)
        task.add_done_callback(group.discard)

    async def open(self) -> None:
        """Open the websocket (Basic auth with ``password``) and start reading it."""
        headers = {}
        if self.password is not None:
            token = base64.b64encode(f"{self.charger_id}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        subprotocol = SUBPROTOCOLS[self.version]
        ws = await connect(
            self.url,
            subprotocols=[Subprotocol(subprotocol)],
            additional_headers=headers,
            open_timeout=OPEN_TIMEOUT_S,
        )
        if ws.subprotocol != subprotocol:
            await ws.close()
            raise ConnectionError(f"the CSMS did not accept {subprotocol} (got {ws.subprotocol})")
        self.link = OcppLink(ws, self.clock, self.stats, self.on_call, self.call_timeout_s)
        self.spawn(self.link.run())

    async def boot(self, reason: str) -> None:
        """BootNotification until Accepted (Pending/Rejected: again after the interval it names)."""
        for _ in range(BOOT_ATTEMPTS):
            answer = await self.call(*frames.boot(self.version, self.charger_id, reason))
            if answer.get("status") == "Accepted":
                self.heartbeat_s = float(answer.get("interval") or 300)
                self.stats.boots += 1
                return
            await self.clock.sleep(float(answer.get("interval") or 5))
        raise ConnectionError(f"{self.charger_id}: boot not accepted")

    async def call(self, action: str, payload: Json) -> Json:
        link = self.link
        if link is None:
            raise LinkClosed(f"{action}: not connected")
        return await link.call(action, payload)

    async def reconnect(self, offline_s: float = 1.0) -> None:
        """Connection lost and back, no reboot: what runs stays (the CSMS re-syncs the charger)."""
        async with self.connection_lock:
            await self.drop()
            await self.clock.sleep(offline_s)
            await self.open()
            self.stats.reconnects += 1
            await self.quietly(self.send_status())  # back: tell the CSMS at once (it re-syncs)

    async def answer(
        self,
        link: OcppLink,
        message_id: str,
        answer: Json,
        then: Coroutine[Any, Any, Any] | None,
        delay_s: float = 0.0,
    ) -> None:
        """Answer a CALL (``delay_s`` late); ``then`` runs once the answer is on the wire."""
        try:
            if delay_s > 0:
                await self.clock.sleep(delay_s)
            await link.reply(message_id, answer)
        except BaseException:
            if then is not None:
                then.close()
            raise
        if then is not None:
            await self.quietly(then)

    async def drop(self) -> None:
        """Close the websocket (the CSMS sees the connection go)."""
        link, self.link = self.link, None
        if link is not None:
            await link.close()

    async def close(self) -> None:
        """Close the socket and end every task (bounded)."""
        tasks = self.tasks | self.session_tasks
        for task in tasks:
            task.cancel()
        await self.drop()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        self.tasks.clear()
        self.session_tasks.clear()

    async def quietly(self, work: Coroutine[Any, Any, Any]) -> None:
        """``work``, where a lost connection or a refused or unanswered CALL is not an error."""
        with contextlib.suppress(LinkClosed, CallError, TimeoutError):
            await work

    async def heartbeat_loop(self) -> None:
        while True:
            await self.clock.sleep(self.heartbeat_s)
            if self.connected:
                await self.quietly(self.call("Heartbeat", {}))

    async def keep_connected(self) -> None:
        """A connection the CSMS closed is opened again (without a boot: the charger kept running)."""
        if self.connected or self.connection_lock.locked():
            return
        with contextlib.suppress(OSError, TimeoutError, WebSocketException):
            async with self.connection_lock:
                await self.open()
                self.stats.reconnects += 1
