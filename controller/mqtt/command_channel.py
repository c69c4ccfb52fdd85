"""Driver commands: ``<base>/cmd/<vehicle>/<command>`` in, validated and delivered, answered on
``<base>/reply/<vehicle>/<command>``.

Every command gets a reply, also one refused or one that hit a bug (the sender gets an answer
instead of a timeout). A retained command is ignored: it would run again on every reconnect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from controller.clock import Clock
from controller.commands import (
    MAX_COMMAND_PAYLOAD_BYTES,
    Command,
    CommandError,
    parse_command,
    request_id_of,
)
from controller.config import SiteConfig
from controller.mqtt.message_log import MessageCounts, ThrottledLog
from controller.mqtt.payloads import reply_payload
from controller.mqtt.state_publisher import StatePublisher
from controller.mqtt.topics import Topics

__all__ = ["CommandChannel", "CommandHandler", "CommandRejected"]

log = structlog.get_logger("controller.mqtt")

CommandHandler = Callable[[Command], Awaitable[None]]
MAX_PENDING_COMMANDS = 100


class CommandRejected(Exception):
    """Raised by a command handler to refuse a valid command; the message goes into the reply."""


def _request_id(payload: bytes) -> str | None:
    return request_id_of(payload) if len(payload) <= MAX_COMMAND_PAYLOAD_BYTES else None


class CommandChannel:
    """Commands to the handler, or without one into :attr:`queue`; replies through the publisher."""

    def __init__(
        self,
        cfg: SiteConfig,
        clock: Clock,
        topics: Topics,
        publisher: StatePublisher,
        counts: MessageCounts,
        warnings: ThrottledLog,
        *,
        on_command: CommandHandler | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.topics = topics
        self.queue: asyncio.Queue[Command] = asyncio.Queue(maxsize=MAX_PENDING_COMMANDS)
        self._publisher = publisher
        self._counts = counts
        self._warn = warnings
        self._on_command = on_command

    async def handle(self, topic: str, payload: bytes, retained: bool) -> None:
        """A message on any topic: a command is answered, anything outside ``cmd/`` is ignored."""
        levels = self.topics.command_levels(topic)
        if levels is None:
            return
        if len(levels) == 2:
            await self._command(topic, levels[0], levels[1], payload, retained)
        else:
            await self._invalid_command_topic(topic, levels, payload, retained)

    async def _command(self, topic: str, vehicle_id: str, name: str, payload: bytes, retained: bool) -> None:
        if retained:
            # A retained command would run again on every reconnect; only live commands count.
            self._warn.warning("command_retained_ignored", topic, vehicle=vehicle_id, command=name)
            return
        now = self.clock.now()
        request_id = _request_id(payload)
        try:
            command = parse_command(self.cfg, vehicle_id, name, payload, now)
            await self._deliver(topic, command)
        except (CommandError, CommandRejected) as exc:
            self._counts.rejected += 1
            self._warn.warning("command_rejected", topic, vehicle=vehicle_id, command=name, reason=str(exc))
            await self._reply(vehicle_id, name, False, request_id, str(exc))
            return
        except Exception:
            # A bug, not the sender's fault; the sender still gets an answer instead of a timeout.
            self._counts.rejected += 1
            log.exception("command_failed", topic=topic, vehicle=vehicle_id, command=name)
            await self._reply(vehicle_id, name, False, request_id, "internal error")
            return
        self._counts.accepted += 1
        log.info("command_accepted", topic=topic, vehicle=vehicle_id, command=name, request_id=request_id)
        await self._reply(vehicle_id, name, True, request_id, None)

    async def _invalid_command_topic(
        self, topic: str, levels: tuple[str, ...], payload: bytes, retained: bool
    ) -> None:
        """A topic under ``cmd/`` without exactly ``<vehicle>/<command>``: logged, and answered on
        ``reply/<vehicle>/<command>`` when its first two levels name them (extra levels)."""
        expected = self.topics.command("<vehicle>", "<command>")
        reason = f"command topic has {len(levels)} level(s) after cmd/, not 2; use {expected}"
        if len(levels) > 2:
            reason = f"command topic has extra levels after cmd/{levels[0]}/{levels[1]}; use {expected}"
        self._counts.rejected += 1
        self._warn.warning("command_topic_invalid", topic, reason=reason, retained=retained)
        if retained or len(levels) < 2:
            return
        await self._reply(levels[0], levels[1], False, _request_id(payload), reason)

    async def _deliver(self, topic: str, command: Command) -> None:
        if self._on_command is None:
            try:
                self.queue.put_nowait(command)
            except asyncio.QueueFull:
                raise CommandRejected("controller busy: too many pending commands") from None
            return
        try:
            await self._on_command(command)
        except CommandRejected:
            raise
        except Exception as exc:
            log.exception("command_handler_failed", topic=topic, vehicle=command.vehicle_id)
            raise CommandRejected("internal error") from exc

    async def _reply(
        self, vehicle_id: str, name: str, ok: bool, request_id: str | None, error: str | None
    ) -> None:
        # Names come from the topic: keep wildcard characters out of the reply topic.
        if any(c in vehicle_id + name for c in "+#") or not vehicle_id or not name:
            return
        payload = reply_payload(vehicle_id, name, ok, self.clock.now(), request_id, error)
        await self._publisher.publish(self.topics.reply(vehicle_id, name), payload, retain=False, qos=1)
