"""An MQTT broker in this process (amqtt), so ``v2x demo`` and hardware-in-the-loop tests need no
Mosquitto: MQTT 3.1.1 on 127.0.0.1, anonymous, nothing persisted, no ``$SYS`` topics.

    async with EmbeddedBroker() as broker:          # a free port, picked by the OS
        cfg["mqtt"]["port"] = broker.port

amqtt is chatty (every connection and packet at INFO/DEBUG): its loggers, and those of
``transitions`` (its state machines), are set to WARNING while a quiet broker runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Any, Self

__all__ = ["EmbeddedBroker", "broker_config"]

log = logging.getLogger(__name__)

NOISY_LOGGERS = ("amqtt", "transitions")
"""Loggers amqtt writes to: its own, and the state machines of ``transitions`` under it."""
_ANONYMOUS = "amqtt.plugins.authentication.AnonymousAuthPlugin"


def broker_config(host: str, port: int) -> dict[str, Any]:
    """amqtt 0.12's config for one TCP listener on ``host:port`` (0: a free port).

    ``plugins`` lists every plugin to load, so only anonymous auth runs: none of amqtt's defaults
    (the ``$SYS`` publisher with its 20 s interval, the packet and event loggers), no persistence
    (amqtt persists only through its contrib plugin) and no topic checks (none loaded: all allowed).
    """
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {_ANONYMOUS: {"allow_anonymous": True}},
    }


class EmbeddedBroker:
    """amqtt's broker on ``host:port`` in the running event loop; ``port`` 0 lets the OS pick a free
    port, read from :attr:`port` once started. ``stop`` closes every client connection and the
    listening socket (amqtt binds with ``SO_REUSEADDR``, so the port can be bound again at once)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        quiet: bool = True,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.quiet = quiet
        self.stop_timeout_s = stop_timeout_s
        self._broker: Any = None  # amqtt.broker.Broker (amqtt has no type information)
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port it listens on (only once started)."""
        if self._port is None:
            raise RuntimeError("the broker is not running")
        return self._port

    @property
    def running(self) -> bool:
        return self._broker is not None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen on ``host:port``; raises ``OSError``-based ``BrokerError`` when it cannot bind."""
        if self._broker is not None:
            raise RuntimeError("the broker is already running")
        if self.quiet:
            for name in NOISY_LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)
        from amqtt.broker import Broker  # type: ignore[import-untyped]  # the sim extra; no py.typed

        broker = Broker(broker_config(self.host, self._requested_port))
        _only_own_retained(broker)
        await broker.start()
        self._broker = broker
        self._port = _bound_port(broker)
        log.info("embedded MQTT broker listening on %s:%d", self.host, self._port)

    async def stop(self) -> None:
        """Disconnect every client and close the listener, within ``stop_timeout_s``; idempotent."""
        broker, self._broker = self._broker, None
        if broker is None:
            return
        try:
            async with asyncio.timeout(self.stop_timeout_s):
                await broker.shutdown()
        except TimeoutError:
            log.warning("embedded MQTT broker did not shut down within %.1f s", self.stop_timeout_s)
            _close_listeners(broker)
        finally:
            self._port = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def _only_own_retained(broker: Any) -> None:
    """Fix amqtt 0.12 sending retained messages for other clients' subscriptions.

    On every CONNECT, amqtt walks *all* topic filters any client subscribed to (``_subscriptions``)
    and sends the new client each retained message matching one of them, meant for a persistent
    session's own subscriptions: a fresh client is flooded with retained messages it never
    subscribed to (the daemon would get every retained message under a test's ``#``). Here a
    filter's retained messages go only to a session subscribed to that filter, which keeps both
    the subscribe path and a persistent session's resubscription.
    """
    publish_retained = broker._publish_retained_messages_for_subscription

    async def only_own(subscription: tuple[str, int], session: Any) -> None:
        subscribers = broker._subscriptions.get(subscription[0], ())
        if any(s.client_id == session.client_id for s, _qos in subscribers):
            await publish_retained(subscription, session)

    broker._publish_retained_messages_for_subscription = only_own


def _servers(broker: Any) -> list[Any]:
    # amqtt keeps its listeners in a private dict (name -> Server wrapping an asyncio.Server); it has
    # no public way to read the port a "host:0" bind got.
    return list(getattr(broker, "_servers", {}).values())


def _bound_port(broker: Any) -> int:
    for server in _servers(broker):
        for sock in getattr(server.instance, "sockets", ()):
            return int(sock.getsockname()[1])
    raise RuntimeError("amqtt started without a listening socket")


def _close_listeners(broker: Any) -> None:
    for server in _servers(broker):
        with contextlib.suppress(Exception):
            server.instance.close()
