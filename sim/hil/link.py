"""OCPP-J on one websocket, charge-point side: CALLs out (one at a time), CALLs in, counters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from controller.clock import Clock

__all__ = ["CallError", "LinkClosed", "OcppLink", "ProtocolStats"]

Json = dict[str, Any]
CallHandler = Callable[[str, str, Json], Awaitable[None]]
"""(message id, action, payload): answer with :meth:`OcppLink.reply` / :meth:`OcppLink.reply_error`."""


class LinkClosed(Exception):
    """The websocket is gone (or the call could not be sent)."""


class CallError(Exception):
    """The CSMS answered a CALL with a CALLERROR."""

    def __init__(self, action: str, code: str, description: str) -> None:
        super().__init__(f"{action}: {code} {description}")
        self.code = code


@dataclass
class ProtocolStats:
    """What went over the wire and how the charger answered, over all its connections."""

    sent: int = 0
    """Frames sent (CALLs and answers)."""
    received: int = 0
    """Frames received."""
    calls_sent: Counter[str] = field(default_factory=Counter)
    calls_received: Counter[str] = field(default_factory=Counter)
    call_errors: int = 0
    """CALLERRORs the CSMS answered our CALLs with."""
    profiles_received: int = 0
    profiles_accepted: int = 0
    rejections: int = 0
    """SetChargingProfile answered Rejected (fault injection or a TxProfile for another transaction)."""
    timeouts: int = 0
    """SetChargingProfile left unanswered (fault injection)."""
    boots: int = 0
    reconnects: int = 0
    latencies_s: list[float] = field(default_factory=list)
    """Clock seconds from an accepted SetChargingProfile's arrival until the power it asks for is
    reached (after the ramp)."""


class OcppLink:
    """One connection. :meth:`run` reads until the socket closes; CALLs go to ``on_call`` in order
    (it must not await :meth:`call`: start a task for follow-ups)."""

    def __init__(
        self, ws: ClientConnection, clock: Clock, stats: ProtocolStats, on_call: CallHandler, timeout_s: float
    ) -> None:
        self.ws = ws
        self.clock = clock
        self.stats = stats
        self.on_call = on_call
        self.timeout_s = timeout_s
        self._pending: dict[str, tuple[str, asyncio.Future[Json]]] = {}
        self._one_call = asyncio.Lock()
        self.closed = asyncio.Event()

    async def _send(self, frame: list[Any]) -> None:
        try:
            await self.ws.send(json.dumps(frame))
        except ConnectionClosed as exc:
            raise LinkClosed(str(exc)) from None
        self.stats.sent += 1

    async def call(self, action: str, payload: Json) -> Json:
        """Send a CALL and wait for its answer (``timeout_s`` of the clock; TimeoutError)."""
        if self.closed.is_set():
            raise LinkClosed(f"{action}: not connected")
        async with self._one_call:  # OCPP-J: one outstanding CALL per direction
            message_id = uuid.uuid4().hex[:16]
            future: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
            self._pending[message_id] = (action, future)
            try:
                await self._send([2, message_id, action, payload])
                self.stats.calls_sent[action] += 1
                async with self.clock.timeout(self.timeout_s):
                    return await future
            finally:
                self._pending.pop(message_id, None)

    async def reply(self, message_id: str, payload: Json) -> None:
        with contextlib.suppress(LinkClosed):
            await self._send([3, message_id, payload])

    async def reply_error(self, message_id: str, code: str, description: str) -> None:
        with contextlib.suppress(LinkClosed):
            await self._send([4, message_id, code, description, {}])

    async def run(self) -> None:
        try:
            async for raw in self.ws:
                self.stats.received += 1
                await self._frame(raw)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            for action, future in self._pending.values():
                if not future.done():
                    future.set_exception(LinkClosed(f"{action}: connection closed"))

    async def _frame(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
            kind, message_id = int(frame[0]), str(frame[1])
        except (ValueError, TypeError, IndexError, KeyError):
            return  # nothing a charger could answer
        if kind == 2 and len(frame) >= 4:
            self.stats.calls_received[str(frame[2])] += 1
            await self.on_call(message_id, str(frame[2]), frame[3])
            return
        pending = self._pending.get(message_id)
        if pending is None or pending[1].done():
            return
        action, future = pending
        if kind == 3:
            future.set_result(frame[2] if len(frame) > 2 and isinstance(frame[2], dict) else {})
        elif kind == 4:
            self.stats.call_errors += 1
            future.set_exception(CallError(action, str(frame[2]), str(frame[3]) if len(frame) > 3 else ""))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self.ws.close()
        self.closed.set()
