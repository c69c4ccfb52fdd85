"""OCPP-J framing on one websocket: CALL, CALLRESULT, CALLERROR and 2.1's CALLRESULTERROR and SEND.

Payloads are validated against the JSON schemas shipped with the ``ocpp`` package, in both
directions (``controller.ocpp.schemas``). Its ``ChargePoint`` class is deliberately not used, which
sidesteps its known defects: every CALL gets an answer (actions the version does not define
NotImplemented, defined ones we do not handle acknowledged or NotSupported), message types 5 and 6
are understood on 2.1, outgoing payloads are written in camelCase by us (no snake->camel
conversion), a received CALLERROR always raises, and handlers never await an outgoing call
(follow-up work runs after the reply is on the wire).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from controller.clock import Clock, SystemClock
from controller.config import OcppVersion
from controller.ocpp.schemas import OcppCallError, error_code, has_response, known_actions, schema_error

__all__ = [
    "PERMANENT_ERROR_CODES",
    "CallErrorReceived",
    "CallTimeout",
    "NotConnected",
    "OcppCallError",
    "Reply",
    "ResponseInvalid",
    "RpcPeer",
    "has_response",
    "known_actions",
    "schema_error",
]

_MAX_ID_LENGTH = 36
MAX_ERROR_TEXT = 255
"""Longest errorDescription (OCPP-J: string[0..255]), and longest string echoed in errorDetails."""
# JSON may carry a lone UTF-16 surrogate ("\ud800"); UTF-8 cannot, so such a str cannot be sent.
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")

PERMANENT_ERROR_CODES = frozenset(
    {
        "NotSupported",
        "NotImplemented",
        "PropertyConstraintViolation",
        "OccurrenceConstraintViolation",
        "OccurenceConstraintViolation",  # 1.6 spelling
        "TypeConstraintViolation",
        "FormatViolation",
        "FormationViolation",  # 1.6 spelling
        "ProtocolError",
        "RpcFrameworkError",  # 2.x name of 1.6's ProtocolError
        "MessageTypeNotSupported",
        "SecurityError",
    }
)
"""CALLERROR codes that say the same CALL can never succeed: the charger lacks the action or
feature, or refuses this content or these credentials. Any other code (InternalError, GenericError,
one we do not know) may be transient."""


class CallErrorReceived(Exception):
    """The charger answered our CALL with a CALLERROR."""

    def __init__(self, action: str, code: str, description: str, details: Any) -> None:
        super().__init__(f"{action} answered with {code}: {description}")
        self.action = action
        self.code = code
        self.description = description
        self.details = details

    @property
    def permanent(self) -> bool:
        """True when sending the same CALL again would get the same error (no point retrying)."""
        return self.code in PERMANENT_ERROR_CODES


class ResponseInvalid(Exception):
    """The charger's CALLRESULT does not match the response schema."""


class CallTimeout(Exception):
    """No answer to our CALL within the timeout."""


class NotConnected(Exception):
    """The connection closed before or while a CALL was outstanding."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A handler's answer; ``then`` runs once the CALLRESULT is on the wire (never inside the handler)."""

    payload: dict[str, Any]
    then: Callable[[], Awaitable[None]] | None = None


Handler = Callable[[str, dict[str, Any]], Awaitable[Reply | None]]
"""``(action, payload) -> Reply``; None means: this action is not handled here."""


# Message types each version defines: 2.0.1 and 1.6 know CALL, CALLRESULT and CALLERROR only.
_MESSAGE_TYPES = {
    OcppVersion.V16: (2, 3, 4),
    OcppVersion.V201: (2, 3, 4),
    OcppVersion.V21: (2, 3, 4, 5, 6),
}
MAX_FRAME_DEPTH = 64
"""Deepest nesting of arrays/objects read in a frame. OCPP payloads nest about ten levels; a deeper
frame is refused like unparseable JSON, before the parser, the schema check or a handler can run out
of stack on it."""


def _dumps(frame: list[Any]) -> str:
    text = json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
    # A string taken from a frame may hold a lone surrogate: websockets would fail to encode it and
    # drop the connection. U+FFFD keeps the frame valid UTF-8 for every peer's JSON parser.
    return _LONE_SURROGATE.sub("\ufffd", text)


def _message_id(value: Any) -> str | None:
    """``value`` if it can be a message id and be echoed unchanged, else None."""
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID_LENGTH:
        return None
    return None if _LONE_SURROGATE.search(value) else value


def _cut(text: str) -> str:
    """At most MAX_ERROR_TEXT characters; the middle goes, so both ends of a description stay."""
    if len(text) <= MAX_ERROR_TEXT:
        return text
    keep = (MAX_ERROR_TEXT - 3) // 2
    return f"{text[:keep]}...{text[-keep:]}"


def _cut_strings(value: Any) -> Any:
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, dict):
        return {_cut(str(key)): _cut_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_cut_strings(item) for item in value]
    return value


def _too_deep(value: Any, limit: int) -> bool:
    """True if ``value`` nests arrays/objects more than ``limit`` levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _framework_error(version: OcppVersion, description: str) -> OcppCallError:
    return OcppCallError(error_code(version, "RpcFrameworkError"), description)


@dataclass
class FrameCounts:
    """One charger's frames since the daemon started, across its connections (for the metrics)."""

    received: int = 0
    sent: int = 0
    errors_sent: dict[str, int] = field(default_factory=dict)
    """CALLERRORs we answered with, by code."""
    errors_received: dict[str, int] = field(default_factory=dict)
    """CALLERRORs the charger answered our CALLs with, by code (``timeout``: no answer at all)."""

    def error(self, table: dict[str, int], code: str) -> None:
        table[code] = table.get(code, 0) + 1


class RpcPeer:
    """One charger's OCPP-J conversation; ``serve`` reads frames until the socket closes."""

    def __init__(
        self,
        connection: ServerConnection,
        version: OcppVersion,
        charger_id: str,
        handler: Handler,
        *,
        call_timeout_s: float,
        clock: Clock | None = None,
        counts: FrameCounts | None = None,
    ) -> None:
        self.connection = connection
        self.counts = counts if counts is not None else FrameCounts()
        self._clock: Clock = clock or SystemClock()
        self.version = version
        self.charger_id = charger_id
        self._handler = handler
        self._call_timeout_s = call_timeout_s
        self._call_lock = asyncio.Lock()  # OCPP allows one outstanding CALL per direction
        self._pending: tuple[str, str, asyncio.Future[dict[str, Any]]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.log = structlog.get_logger("controller.ocpp").bind(
            charger_id=charger_id, ocpp_version=version.value
        )

    # ------------------------------------------------------------------ outgoing

    async def call(
        self, action: str, payload: dict[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Send a CALL and return the CALLRESULT payload (validated).

        Raises CallErrorReceived, ResponseInvalid, CallTimeout or NotConnected. A payload that breaks
        the schema is our bug and raises ValueError before anything is sent.
        """
        problem = schema_error(self.version, action, payload)
        if problem is not None:
            raise ValueError(f"outgoing {action} breaks the OCPP {self.version.value} schema: {problem}")
        timeout = self._call_timeout_s if timeout_s is None else timeout_s
        async with self._call_lock:
            if self._closed:
                raise NotConnected(f"{self.charger_id} is not connected")
            unique_id = str(uuid.uuid4())
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._pending = (unique_id, action, future)
            try:
                try:
                    await self._write([2, unique_id, action, payload])
                except ConnectionClosed:
                    raise NotConnected(f"{self.charger_id} closed the connection") from None
                try:
                    async with self._clock.timeout(timeout):
                        return await future
                except TimeoutError:
                    self.counts.error(self.counts.errors_received, "timeout")
                    raise CallTimeout(f"no answer to {action} within {timeout:g} s") from None
            finally:
                self._pending = None
                # Left before the future was awaited (the socket died or the task was cancelled
                # mid-send): an outcome set meanwhile, e.g. serve()'s NotConnected, is consumed here,
                # or asyncio would report it as never retrieved.
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()

    # ------------------------------------------------------------------ incoming

    async def serve(self) -> None:
        try:
            async for message in self.connection:
                if isinstance(message, bytes):
                    self.log.warning("ocpp_binary_frame_ignored", size=len(message))
                    continue
                try:
                    await self._on_frame(message)
                except ConnectionClosed:
                    raise
                except Exception:  # one frame must never take the connection down (1011)
                    self.log.exception("ocpp_frame_failed", frame=message[:200])
        except ConnectionClosed:
            pass
        finally:
            self._closed = True
            if self._pending is not None and not self._pending[2].done():
                self._pending[2].set_exception(NotConnected(f"{self.charger_id} disconnected"))
            for task in list(self._tasks):
                task.cancel()

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The follow-up work running on this connection (its setup, say)."""
        return list(self._tasks)

    def spawn(self, work: Awaitable[None], name: str) -> None:
        """Run follow-up work tied to this connection; failures are logged, never raised."""

        async def guarded() -> None:
            try:
                await work
            except (NotConnected, asyncio.CancelledError):
                pass
            except Exception:
                self.log.exception("ocpp_task_failed", task=name)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if isinstance(work, Coroutine):
                work.close()  # cancelled before it ever ran (a short connection): no "never awaited"

        task = asyncio.create_task(guarded(), name=f"ocpp:{self.charger_id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(done)

    async def _send_error(self, unique_id: str, error: OcppCallError) -> None:
        # Descriptions and details may echo what the charger sent (an action name, a value): bounded
        # here, for every CALLERROR.
        frame = [4, unique_id, error.code, _cut(error.description), _cut_strings(error.details)]
        self.counts.error(self.counts.errors_sent, error.code)
        with contextlib.suppress(ConnectionClosed):
            await self._write(frame)

    async def _write(self, frame: list[Any]) -> None:
        await self.connection.send(_dumps(frame))
        self.counts.sent += 1

    async def _on_frame(self, raw: str) -> None:
        self.counts.received += 1
        try:
            frame = json.loads(raw)
        except Exception as error:  # JSONDecodeError, RecursionError (deep nesting), MemoryError …
            self.log.warning("ocpp_frame_not_json", error=type(error).__name__, frame=raw[:200])
            await self._send_unreadable("frame is not valid JSON")
            return
        if _too_deep(frame, MAX_FRAME_DEPTH):
            self.log.warning("ocpp_frame_too_deep", max_depth=MAX_FRAME_DEPTH, frame=raw[:200])
            await self._send_unreadable(f"frame nests deeper than {MAX_FRAME_DEPTH} levels")
            return
        if not isinstance(frame, list) or not frame:
            self.log.warning("ocpp_frame_malformed", frame=raw[:200])
            await self._send_error(
                "-1",
                _framework_error(self.version, "frame is not an OCPP-J array"),
            )
            return
        kind = frame[0]
        unique_id = _message_id(frame[1]) if len(frame) > 1 else None
        if not isinstance(kind, int) or isinstance(kind, bool):
            self.log.warning("ocpp_frame_malformed", frame=raw[:200])
            await self._send_error(
                unique_id or "-1",
                _framework_error(self.version, "message type is not an integer"),
            )
            return
        # Answers (3, 4, 5) and 2.1's SEND (6) are never answered, however broken: the sender expects
        # nothing, and an error in reply to an error could start a ping-pong.
        unanswered = kind in _MESSAGE_TYPES[self.version] and kind != 2
        if unique_id is None:
            self.log.warning("ocpp_frame_bad_message_id", frame=raw[:200])
            if not unanswered:
                await self._send_error(
                    "-1",
                    _framework_error(self.version, "message id is missing or invalid"),
                )
            return
        if kind == 2 and len(frame) == 4:
            await self._on_call(unique_id, frame[2], frame[3], confirmed=True)
        elif kind == 3 and len(frame) == 3:
            self._on_result(unique_id, frame[2])
        elif kind == 4 and len(frame) == 5:
            self._on_error(unique_id, frame[2], frame[3], frame[4])
        elif kind == 5 and len(frame) == 5 and self.version is OcppVersion.V21:
            # CALLRESULTERROR: the charger could not process one of our CALLRESULTs. Nothing to answer.
            self.log.warning(
                "ocpp_callresulterror_received", message_id=unique_id, code=frame[2], description=frame[3]
            )
        elif kind == 6 and len(frame) == 4 and self.version is OcppVersion.V21:
            await self._on_call(unique_id, frame[2], frame[3], confirmed=False)
        elif kind not in _MESSAGE_TYPES[self.version]:
            # OCPP-J 2.0.1/2.1 section 4.4: an unknown message type is answered MessageTypeNotSupported
            # (1.6: ProtocolError), so the sender can fall back to the types this version defines.
            self.log.warning("ocpp_message_type_unknown", message_type=kind, frame=raw[:200])
            await self._send_error(
                unique_id,
                OcppCallError(
                    error_code(self.version, "MessageTypeNotSupported"),
                    f"message type {kind} is not defined in OCPP {self.version.value}",
                ),
            )
        else:
            self.log.warning("ocpp_frame_malformed", message_type=kind, frame=raw[:200])
            if unanswered:
                return
            await self._send_error(
                unique_id,
                _framework_error(self.version, f"message type {kind} frame is malformed"),
            )

    async def _send_unreadable(self, description: str) -> None:
        # The message id cannot be read: id "-1"; 2.x names that RpcFrameworkError, 1.6 (which has
        # no such code) FormationViolation.
        code = "FormatViolation" if self.version is OcppVersion.V16 else "RpcFrameworkError"
        await self._send_error("-1", OcppCallError(error_code(self.version, code), description))

    async def _on_call(self, unique_id: str, action: Any, payload: Any, *, confirmed: bool) -> None:
        log = self.log.bind(action=_cut(action) if isinstance(action, str) else action, message_id=unique_id)
        reply = await self._dispatch(log, action, payload, confirmed)
        if not confirmed:  # SEND: the sender expects no answer, not even an error
            if isinstance(reply, OcppCallError):
                log.warning("ocpp_send_rejected", code=reply.code, description=reply.description)
            return
        if isinstance(reply, OcppCallError):
            await self._send_error(unique_id, reply)
            return
        try:
            await self._write([3, unique_id, reply.payload])
        except ConnectionClosed:
            return
        if reply.then is not None:
            self.spawn(reply.then(), f"after-{action}")

    async def _dispatch(self, log: Any, action: Any, payload: Any, confirmed: bool) -> Reply | OcppCallError:
        if not isinstance(action, str) or action not in known_actions(self.version):
            # OCPP-J: NotImplemented = the action is not known; NotSupported = known, not supported.
            log.warning("ocpp_action_unknown")
            return OcppCallError("NotImplemented", f"{action!r} is not an OCPP {self.version.value} action")
        if confirmed and not has_response(self.version, action):
            log.warning("ocpp_send_only_action_called")
            return _framework_error(self.version, f"{action} is sent with SEND (6), not CALL")
        if not isinstance(payload, dict):
            log.warning("ocpp_payload_not_object")
            return OcppCallError(error_code(self.version, "FormatViolation"), "payload is not an object")
        problem = schema_error(self.version, action, payload)
        if problem is not None:
            log.warning("ocpp_payload_invalid", code=problem.code, description=problem.description)
            return problem
        try:
            reply = await self._handler(action, payload)
        except OcppCallError as error:
            log.warning("ocpp_call_refused", code=error.code, description=error.description)
            return OcppCallError(error_code(self.version, error.code), error.description, error.details)
        except Exception:
            log.exception("ocpp_handler_failed")
            return OcppCallError("InternalError", f"{action} could not be processed")
        if reply is None:
            if not confirmed:
                log.info("ocpp_send_ignored")
                return Reply({})
            # Not handled here: acknowledge notifications whose answer is empty, refuse the rest.
            if schema_error(self.version, action, {}, response=True) is None:
                log.info("ocpp_action_acknowledged")
                return Reply({})
            log.info("ocpp_action_not_supported")
            return OcppCallError("NotSupported", f"{action} is not supported by this CSMS")
        problem = schema_error(self.version, action, reply.payload, response=True) if confirmed else None
        if problem is not None:  # our bug: say so instead of sending an invalid answer
            log.error("ocpp_reply_invalid", description=problem.description)
            return OcppCallError("InternalError", f"{action} reply could not be built")
        return reply

    def _take_pending(self, unique_id: str) -> tuple[str, asyncio.Future[dict[str, Any]]] | None:
        pending = self._pending
        if pending is None or pending[0] != unique_id or pending[2].done():
            self.log.warning("ocpp_unexpected_response", message_id=unique_id)
            return None
        return pending[1], pending[2]

    def _on_result(self, unique_id: str, payload: Any) -> None:
        taken = self._take_pending(unique_id)
        if taken is None:
            return
        action, future = taken
        if not isinstance(payload, dict):
            future.set_exception(ResponseInvalid(f"{action} result is not an object"))
            return
        problem = schema_error(self.version, action, payload, response=True)
        if problem is not None:
            future.set_exception(ResponseInvalid(f"{action} result: {problem.description}"))
            return
        future.set_result(payload)

    def _on_error(self, unique_id: str, code: Any, description: Any, details: Any) -> None:
        taken = self._take_pending(unique_id)
        if taken is None:
            return
        action, future = taken
        self.counts.error(self.counts.errors_received, str(code))
        future.set_exception(CallErrorReceived(action, str(code), str(description), details))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._closed = True
        await self.connection.close(code, reason)
