"""The site's MQTT connection: connect, subscribe, announce ``online``, serve, reconnect with backoff.

The broker holds a retained ``offline`` last will on ``<base>/status``, published if the connection
dies; cancelling :meth:`MqttConnection.run` publishes ``offline`` itself and disconnects cleanly. A
lost connection is retried forever. What the messages mean is the owner's business, given as
:class:`SessionHooks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiomqtt
import structlog

from controller.backoff import Backoff
from controller.clock import Clock
from controller.config import MqttConfig, TlsConfig

__all__ = [
    "RECONNECT_CAP_S",
    "MqttConnection",
    "ReconnectPolicy",
    "SessionHooks",
    "build_tls_context",
    "honour_cancel",
    "payload_bytes",
]

log = structlog.get_logger("controller.mqtt")

_BROKER_TIMEOUT_S = 10
_OFFLINE_TIMEOUT_S = 2


def build_tls_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """An SSL context from the config, None when TLS is off. Reads the files (once, at start-up)."""
    if not tls.enabled:
        return None
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def honour_cancel() -> None:
    """Raise CancelledError if this task was cancelled but never saw it.

    Python 3.11's ``asyncio.wait_for`` (which aiomqtt awaits for every acknowledgement) swallows a
    cancel that races the awaited completion (fixed in 3.12); without this, stopping the client
    could hang forever.
    """
    task = asyncio.current_task()
    if sys.version_info < (3, 12) and task is not None and task.cancelling():
        raise asyncio.CancelledError


def payload_bytes(message: aiomqtt.Message) -> bytes:
    raw = message.payload
    return bytes(raw) if isinstance(raw, bytes | bytearray) else str(raw or "").encode()


RECONNECT_CAP_S = 5.0
"""The longest wait between reconnect attempts, whatever ``max_s`` asks for: while the broker is down
the site is in safe mode, so a broker that comes back must see the site again within seconds."""


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Reconnect waits drawn at random between ``min_s`` and a ceiling that doubles from ``2 * min_s``
    up to ``max_s`` (held to :data:`RECONNECT_CAP_S`); the doubling starts afresh only after a
    connection held for ``reset_after_s``.

    With the defaults (1 s, 5 s): the first waits are 1-2 s, 1-4 s, then 1-5 s for as long as the
    broker stays down, about 20 attempts a minute and never more than 60; a broker that comes back is
    reached again within 5 s. The random spread keeps a fleet of gateways that lost the same broker
    from reconnecting in step.
    """

    min_s: float = 1.0
    max_s: float = RECONNECT_CAP_S
    reset_after_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")
        if self.reset_after_s < 0:
            raise ValueError("need reconnect_reset_after_s >= 0")
        # A frozen dataclass: normalise through object.__setattr__.
        object.__setattr__(self, "max_s", min(self.max_s, RECONNECT_CAP_S))
        object.__setattr__(self, "min_s", min(self.min_s, self.max_s))

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        """Before reconnect ``attempt`` (0-based)."""
        return Backoff(initial_s=self.min_s, factor=2.0, max_s=self.max_s).spread_s(attempt + 1, rng)


@dataclass(frozen=True, slots=True)
class SessionHooks:
    """What the owner does over each connection."""

    on_connect: Callable[[aiomqtt.Client], Awaitable[None]]
    """Set the session up: :meth:`MqttConnection.announce` first, :meth:`MqttConnection.mark_connected`
    last, the owner's own steps between; raising drops the connection."""
    on_arrival: Callable[[aiomqtt.Message], bool]
    """Handle a message as it arrives (synchronous, no I/O); False queues it for ``on_message``."""
    on_message: Callable[[aiomqtt.Message], Awaitable[None]]
    """Handle a queued message in the connection's task."""
    delay_s: Callable[[int], float]
    """The wait before reconnect attempt ``n`` (0-based)."""


class MqttConnection:
    """One connection to the broker, kept up until cancelled."""

    def __init__(
        self,
        cfg: MqttConfig,
        status_topic: str,
        clock: Clock,
        hooks: SessionHooks,
        *,
        subscriptions: Mapping[str, int],
        tls_context: ssl.SSLContext | None,
        reset_after_s: float,
        max_queued_messages: int,
    ) -> None:
        self.cfg = cfg
        self.status_topic = status_topic
        self.clock = clock
        self._hooks = hooks
        self._subscriptions = dict(subscriptions)
        self._tls_context = tls_context
        self._reset_after_s = reset_after_s
        self._max_queued = max_queued_messages
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self.connections = 0

    @property
    def subscriptions(self) -> dict[str, int]:
        """Topic filter -> QoS, as subscribed on every connect."""
        return dict(self._subscriptions)

    @property
    def client(self) -> aiomqtt.Client | None:
        """The client while a connection is up (it may be still setting up), else None."""
        return self._client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        """Until connected and subscribed (raises TimeoutError after ``timeout_s``)."""
        async with asyncio.timeout(timeout_s):
            await self._connected.wait()

    def _queue_type(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        """aiomqtt's incoming queue, but messages the owner can handle at once are handled on arrival.

        Meter and signal handling is synchronous and I/O-free, so it skips a queue hop and a task per
        message (the hot path: several thousand meter messages a second); commands still queue up for
        the async loop because answering them publishes.
        """
        on_arrival = self._hooks.on_arrival

        class _Queue(asyncio.Queue[aiomqtt.Message]):
            def put_nowait(self, item: aiomqtt.Message) -> None:
                if not on_arrival(item):
                    super().put_nowait(item)

        return _Queue

    def _make_client(self) -> aiomqtt.Client:
        mqtt = self.cfg
        return aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            queue_type=self._queue_type(),
            username=mqtt.username,
            password=mqtt.password.get_secret_value() if mqtt.password else None,
            identifier=mqtt.client_id,
            keepalive=mqtt.keepalive_s,
            will=aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True),
            tls_context=self._tls_context,
            tls_insecure=mqtt.tls.insecure_skip_verify if mqtt.tls.enabled else None,
            max_queued_incoming_messages=self._max_queued,
            timeout=_BROKER_TIMEOUT_S,
        )

    async def run(self) -> None:
        """Connect and serve until cancelled; reconnects forever.

        The backoff starts afresh only after a connection held for ``reset_after_s``: one that drops
        right after connecting (a broker that refuses our publishes, a bug on connect) must not be
        retried in a tight loop.
        """
        attempt = 0
        while True:
            try:
                async with self._make_client() as client:
                    connected_at = self.clock.monotonic()
                    try:
                        await self._serve(client)
                    finally:
                        if self.clock.monotonic() - connected_at >= self._reset_after_s:
                            attempt = 0
            except aiomqtt.MqttError as exc:
                log.warning(
                    "mqtt_disconnected",
                    host=self.cfg.host,
                    port=self.cfg.port,
                    error=str(exc),
                    attempt=attempt,
                )
            except Exception:
                # Anything else is a bug, but the site must not lose its meters over it: retry.
                log.exception("mqtt_failed", host=self.cfg.host, port=self.cfg.port, attempt=attempt)
            finally:
                self._client = None
                self._connected.clear()
            delay_s = self._hooks.delay_s(attempt)
            attempt += 1
            await self.clock.sleep(delay_s)

    async def _serve(self, client: aiomqtt.Client) -> None:
        try:
            await self._hooks.on_connect(client)
            honour_cancel()
            async for message in client.messages:
                try:
                    await self._hooks.on_message(message)
                except aiomqtt.MqttError:
                    raise
                except Exception:
                    log.exception("message_failed", topic=message.topic.value)
                honour_cancel()
        except asyncio.CancelledError:
            # A clean disconnect suppresses the last will, so say goodbye ourselves.
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(_OFFLINE_TIMEOUT_S):
                    await client.publish(self.status_topic, b"offline", qos=1, retain=True)
            log.info("mqtt_stopped")
            raise

    async def announce(self, client: aiomqtt.Client) -> None:
        """First step on connect: subscribe, count the connection, publish a retained ``online``."""
        await client.subscribe(list(self._subscriptions.items()))
        self._client = client
        self.connections += 1
        await client.publish(self.status_topic, b"online", qos=1, retain=True)

    def mark_connected(self) -> None:
        """Last step on connect, once the owner has set the session up."""
        self._connected.set()
        log.info(
            "mqtt_connected",
            host=self.cfg.host,
            port=self.cfg.port,
            subscriptions=len(self._subscriptions),
            connections=self.connections,
        )
