"""The site's one MQTT connection: meters, signals and commands in; state, plan and status out.

``SiteMqttClient.run()`` is a long-lived task: it connects, subscribes, publishes a retained
``online`` on ``<base>/status`` (the broker publishes the retained ``offline`` last will if the
connection dies), and feeds every message into a :class:`~controller.site_inputs.SiteInputs`.
A lost connection is retried with exponential backoff and jitter, subscriptions are made again and
the retained state published so far is republished. Cancelling the task publishes ``offline`` and
disconnects cleanly. Bad payloads are logged with their topic and dropped; nothing a peer sends can
end the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import aiomqtt
import structlog

from controller.backoff import Backoff
from controller.clock import Clock
from controller.commands import (
    MAX_COMMAND_PAYLOAD_BYTES,
    Command,
    CommandError,
    parse_command,
    request_id_of,
)
from controller.config import MeterConfig, SiteConfig, TlsConfig
from controller.domain import MeterReading, MeterRole, Plan
from controller.meters import MeterParser, PayloadError, make_parser
from controller.mqtt.discovery import discovery_messages
from controller.mqtt.payloads import (
    ChargerStatus,
    ControllerStatus,
    SiteFlows,
    VehicleStatus,
    charger_payload,
    controller_payload,
    plan_payload,
    reply_payload,
    site_payload,
    vehicle_payload,
)
from controller.mqtt.topics import Topics
from controller.signals import (
    SignalError,
    parse_grid_state,
    parse_limit_signal,
    parse_price_signal,
    parse_pv_forecast,
)
from controller.site_inputs import SiteInputs

__all__ = ["CommandHandler", "CommandRejected", "SignalKind", "SiteMqttClient", "build_tls_context"]

log = structlog.get_logger("controller.mqtt")

SignalKind = Literal["import_prices", "export_prices", "limits", "grid_state", "pv_forecast"]
CommandHandler = Callable[[Command], Awaitable[None]]
_SITE_ROLES = frozenset({MeterRole.GRID, MeterRole.PV, MeterRole.HOME})


class CommandRejected(Exception):
    """Raised by a command handler to refuse a valid command; the message goes into the reply."""


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


@dataclass(slots=True)
class _Route:
    kind: Literal["meter", "import_prices", "export_prices", "limits", "grid_state", "pv_forecast"]
    parser: MeterParser | None = None


class _RateLimitedLog:
    """At most one warning per topic per interval, so a broken device cannot flood the log."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, event: str, topic: str, **fields: object) -> None:
        now = time.monotonic()
        last = self._last.get(topic)
        if last is not None and now - last < self.interval_s:
            self._suppressed[topic] = self._suppressed.get(topic, 0) + 1
            return
        if len(self._last) > 10_000:  # bounded memory under a flood of distinct topics
            self._last.clear()
            self._suppressed.clear()
        self._last[topic] = now
        log.warning(event, topic=topic, suppressed=self._suppressed.pop(topic, 0), **fields)


def _honour_cancel() -> None:
    """Raise CancelledError if this task was cancelled but never saw it.

    Python 3.11's ``asyncio.wait_for`` (which aiomqtt awaits for every acknowledgement) swallows a
    cancel that races the awaited completion (fixed in 3.12); without this, stopping the client
    could hang forever.
    """
    task = asyncio.current_task()
    if sys.version_info < (3, 12) and task is not None and task.cancelling():
        raise asyncio.CancelledError


def _payload_bytes(message: aiomqtt.Message) -> bytes:
    raw = message.payload
    return bytes(raw) if isinstance(raw, bytes | bytearray) else str(raw or "").encode()


def _preview(payload: bytes) -> str:
    return payload[:80].decode("utf-8", "replace")


class SiteMqttClient:
    """One MQTT connection for the site. Construct, then ``run()`` it as a task."""

    def __init__(
        self,
        cfg: SiteConfig,
        clock: Clock,
        inputs: SiteInputs | None = None,
        *,
        on_command: CommandHandler | None = None,
        on_reading: Callable[[MeterReading], None] | None = None,
        on_signal: Callable[[SignalKind], None] | None = None,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        reconnect_reset_after_s: float = 30.0,
        log_interval_s: float = 10.0,
        max_queued_messages: int = 10_000,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")
        if reconnect_reset_after_s < 0:
            raise ValueError("need reconnect_reset_after_s >= 0")
        self.cfg = cfg
        self.clock = clock
        self.inputs = inputs if inputs is not None else SiteInputs(cfg)
        self.topics = Topics.from_config(cfg.mqtt)
        self.commands: asyncio.Queue[Command] = asyncio.Queue(maxsize=100)
        self._on_command = on_command
        self._on_reading = on_reading
        self._on_signal = on_signal
        self._backoff = Backoff(initial_s=reconnect_min_s, factor=2.0, max_s=reconnect_max_s)
        self._reconnect_reset_after_s = reconnect_reset_after_s
        self._max_queued = max_queued_messages
        self._rng = rng if rng is not None else random.Random()
        self._warn = _RateLimitedLog(log_interval_s)
        self._tls_context = build_tls_context(cfg.mqtt.tls)
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._retained: dict[str, bytes] = {}
        self._routes: dict[str, list[_Route]] = {}
        self._subscriptions: dict[str, int] = {}
        self.connections = 0
        self.accepted = 0
        self.rejected = 0
        self._build_routes()

    # ------------------------------------------------------------- topology

    def _add_route(self, topic: str, route: _Route, qos: int) -> None:
        self._routes.setdefault(topic, []).append(route)
        self._subscriptions[topic] = max(qos, self._subscriptions.get(topic, 0))

    def _build_routes(self) -> None:
        for meter in self.cfg.meters:
            parser = make_parser(meter)
            for topic in parser.topics:
                self._add_route(topic, _Route("meter", parser), qos=0)
        tariff = self.cfg.tariff
        if tariff.import_.dynamic_topic:
            self._add_route(tariff.import_.dynamic_topic, _Route("import_prices"), qos=1)
        if tariff.export.dynamic_topic:
            self._add_route(tariff.export.dynamic_topic, _Route("export_prices"), qos=1)
        if self.cfg.grid_signals.limit_topic:
            self._add_route(self.cfg.grid_signals.limit_topic, _Route("limits"), qos=1)
        if self.cfg.grid_signals.outage_topic:
            self._add_route(self.cfg.grid_signals.outage_topic, _Route("grid_state"), qos=1)
        if self.cfg.forecast.pv_forecast_topic:
            self._add_route(self.cfg.forecast.pv_forecast_topic, _Route("pv_forecast"), qos=1)
        self._subscriptions[self.topics.command_filter] = 1

    @property
    def subscriptions(self) -> dict[str, int]:
        """Topic filter -> QoS, as subscribed on every connect."""
        return dict(self._subscriptions)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        """Until connected and subscribed (raises TimeoutError after ``timeout_s``)."""
        async with asyncio.timeout(timeout_s):
            await self._connected.wait()

    # ------------------------------------------------------------ connection

    def _queue_type(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        """aiomqtt's incoming queue, but meter and signal messages are handled on arrival.

        Their handling is synchronous and I/O-free, so it skips a queue hop and a task per message
        (the hot path: several thousand meter messages a second); commands still queue up for the
        async loop because answering them publishes.
        """
        fast = self._ingest_message

        class _Queue(asyncio.Queue[aiomqtt.Message]):
            def put_nowait(self, item: aiomqtt.Message) -> None:
                if not fast(item):
                    super().put_nowait(item)

        return _Queue

    def _make_client(self) -> aiomqtt.Client:
        mqtt = self.cfg.mqtt
        return aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            queue_type=self._queue_type(),
            username=mqtt.username,
            password=mqtt.password.get_secret_value() if mqtt.password else None,
            identifier=mqtt.client_id,
            keepalive=mqtt.keepalive_s,
            will=aiomqtt.Will(self.topics.status, b"offline", qos=1, retain=True),
            tls_context=self._tls_context,
            tls_insecure=mqtt.tls.insecure_skip_verify if mqtt.tls.enabled else None,
            max_queued_incoming_messages=self._max_queued,
            timeout=10,
        )

    def backoff_s(self, attempt: int) -> float:
        """Delay before reconnect ``attempt`` (0-based): doubling from the minimum, capped, jittered."""
        return self._backoff.jittered_s(attempt + 1, self._rng)

    async def run(self) -> None:
        """Connect and serve until cancelled; reconnects forever.

        The backoff starts afresh only after a connection held for ``reconnect_reset_after_s``: one
        that drops right after connecting (a broker that refuses our publishes, a bug on connect)
        must not be retried in a tight loop.
        """
        attempt = 0
        while True:
            try:
                async with self._make_client() as client:
                    connected_at = self.clock.monotonic()
                    try:
                        await self._serve(client)
                    finally:
                        if self.clock.monotonic() - connected_at >= self._reconnect_reset_after_s:
                            attempt = 0
            except aiomqtt.MqttError as exc:
                log.warning(
                    "mqtt_disconnected",
                    host=self.cfg.mqtt.host,
                    port=self.cfg.mqtt.port,
                    error=str(exc),
                    attempt=attempt,
                )
            except Exception:
                # Anything else is a bug, but the site must not lose its meters over it: retry.
                log.exception(
                    "mqtt_failed", host=self.cfg.mqtt.host, port=self.cfg.mqtt.port, attempt=attempt
                )
            finally:
                self._client = None
                self._connected.clear()
            delay = self.backoff_s(attempt)
            attempt += 1
            await self.clock.sleep(delay)

    async def _serve(self, client: aiomqtt.Client) -> None:
        try:
            await self._on_connect(client)
            _honour_cancel()
            async for message in client.messages:
                try:
                    await self._dispatch(message)
                except aiomqtt.MqttError:
                    raise
                except Exception:
                    log.exception("message_failed", topic=message.topic.value)
                _honour_cancel()
        except asyncio.CancelledError:
            # A clean disconnect suppresses the last will, so say goodbye ourselves.
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(2):
                    await client.publish(self.topics.status, b"offline", qos=1, retain=True)
            log.info("mqtt_stopped")
            raise

    async def _on_connect(self, client: aiomqtt.Client) -> None:
        await client.subscribe(list(self._subscriptions.items()))
        self._client = client
        self.connections += 1
        await client.publish(self.topics.status, b"online", qos=1, retain=True)
        if self.cfg.mqtt.homeassistant_discovery:
            for topic, payload in discovery_messages(self.cfg, self.topics):
                await client.publish(topic, payload, qos=1, retain=True)
        for topic, payload in list(self._retained.items()):
            await client.publish(topic, payload, qos=1, retain=True)
        self._connected.set()
        log.info(
            "mqtt_connected",
            host=self.cfg.mqtt.host,
            port=self.cfg.mqtt.port,
            subscriptions=len(self._subscriptions),
            connections=self.connections,
        )

    # --------------------------------------------------------------- ingest

    def _ingest_message(self, message: aiomqtt.Message) -> bool:
        """Handle a meter/signal message now; False leaves it (a command) to the async loop."""
        topic = message.topic.value
        if topic not in self._routes:
            return False
        try:
            self.ingest(topic, _payload_bytes(message), retained=message.retain)
        except Exception:
            # Never let a bug in parsing reach paho's read loop, which would drop the connection.
            log.exception("ingest_failed", topic=topic)
        return True

    async def _dispatch(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = _payload_bytes(message)
        if topic in self._routes:
            self.ingest(topic, payload, retained=message.retain)
            return
        levels = self.topics.command_levels(topic)
        if levels is None:
            return
        if len(levels) == 2:
            await self._command(topic, levels[0], levels[1], payload, message.retain)
        else:
            await self._invalid_command_topic(topic, levels, payload, message.retain)

    def ingest(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """Parse a meter or signal message and update the inputs (synchronous, no I/O)."""
        now = self.clock.now()
        for route in self._routes.get(topic, ()):
            if route.parser is not None:
                self._ingest_meter(route.parser, topic, payload, retained, now)
            else:
                self._ingest_signal(route.kind, topic, payload, now, retained)

    def _ingest_meter(
        self, parser: MeterParser, topic: str, payload: bytes, retained: bool, now: datetime
    ) -> None:
        meter: MeterConfig = parser.meter
        if retained and meter.role in _SITE_ROLES:
            # A retained power value has an unknown age: it must not make a silent meter look fresh.
            log.debug("meter_retained_ignored", topic=topic, meter=meter.id)
            return
        # Other retained values (a car's SoC) are kept, marked retained: the daemon takes them as an
        # estimate to plan on, never as a reading that allows discharge.
        try:
            parsed = parser.parse(topic, payload)
        except PayloadError as exc:
            self.rejected += 1
            self._warn.warning(
                "meter_payload_rejected", topic, meter=meter.id, reason=str(exc), payload=_preview(payload)
            )
            return
        if parsed is None:
            return
        reading = MeterReading(meter.id, meter.role, parsed.value, now, retained=retained)
        self.inputs.update_meter(reading, parsed.phases_w)
        self.accepted += 1
        if self._on_reading is not None:
            try:
                self._on_reading(reading)
            except Exception:
                log.exception("on_reading_failed", topic=topic, meter=meter.id)

    def _ingest_signal(
        self, kind: str, topic: str, payload: bytes, received_at: datetime, retained: bool = False
    ) -> None:
        try:
            if kind == "limits":
                self.inputs.update_limits(parse_limit_signal(payload, received_at), received_at)
                signal: SignalKind = "limits"
            elif kind == "pv_forecast":
                self.inputs.update_pv_forecast(parse_pv_forecast(payload), received_at)
                signal = "pv_forecast"
            elif kind == "grid_state":
                # A retained outage state (age unknown, sent again on every reconnect) only sets
                # the state while none is known: it must not keep an outage alive.
                lost = parse_grid_state(payload)
                if retained and self.inputs.grid_state_at is not None:
                    log.debug("grid_state_retained_ignored", topic=topic, grid_lost=lost)
                if not self.inputs.update_grid_state(lost, received_at, retained=retained):
                    return
                log.warning(
                    "grid_state_changed", topic=topic, grid_lost=self.inputs.grid_lost, retained=retained
                )
                signal = "grid_state"
            elif kind == "import_prices":
                self.inputs.update_prices(
                    "import", parse_price_signal(payload, self.cfg.site.currency), received_at
                )
                signal = "import_prices"
            else:
                self.inputs.update_prices(
                    "export", parse_price_signal(payload, self.cfg.site.currency), received_at
                )
                signal = "export_prices"
        except SignalError as exc:
            self.rejected += 1
            self._warn.warning(
                "signal_rejected", topic, kind=kind, reason=str(exc), payload=_preview(payload)
            )
            return
        self.accepted += 1
        log.info("signal_accepted", topic=topic, kind=kind)
        if self._on_signal is not None:
            try:
                self._on_signal(signal)
            except Exception:
                log.exception("on_signal_failed", topic=topic, kind=kind)

    # ------------------------------------------------------------- commands

    async def _command(self, topic: str, vehicle_id: str, name: str, payload: bytes, retained: bool) -> None:
        if retained:
            # A retained command would run again on every reconnect; only live commands count.
            self._warn.warning("command_retained_ignored", topic, vehicle=vehicle_id, command=name)
            return
        now = self.clock.now()
        request_id = request_id_of(payload) if len(payload) <= MAX_COMMAND_PAYLOAD_BYTES else None
        try:
            command = parse_command(self.cfg, vehicle_id, name, payload, now)
            await self._deliver(topic, command)
        except (CommandError, CommandRejected) as exc:
            self.rejected += 1
            self._warn.warning("command_rejected", topic, vehicle=vehicle_id, command=name, reason=str(exc))
            await self._reply(vehicle_id, name, False, request_id, str(exc))
            return
        except Exception:
            # A bug, not the sender's fault; the sender still gets an answer instead of a timeout.
            self.rejected += 1
            log.exception("command_failed", topic=topic, vehicle=vehicle_id, command=name)
            await self._reply(vehicle_id, name, False, request_id, "internal error")
            return
        self.accepted += 1
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
        self.rejected += 1
        self._warn.warning("command_topic_invalid", topic, reason=reason, retained=retained)
        if retained or len(levels) < 2:
            return
        request_id = request_id_of(payload) if len(payload) <= MAX_COMMAND_PAYLOAD_BYTES else None
        await self._reply(levels[0], levels[1], False, request_id, reason)

    async def _deliver(self, topic: str, command: Command) -> None:
        if self._on_command is None:
            try:
                self.commands.put_nowait(command)
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
        await self._publish(self.topics.reply(vehicle_id, name), payload, retain=False, qos=1)

    # ------------------------------------------------------------ publishing

    async def _publish(self, topic: str, payload: bytes, retain: bool, qos: int = 1) -> bool:
        """Publish now if connected; retained state is remembered and sent again after a reconnect.

        A topic or payload the client refuses (a wildcard in a configured topic, say) is logged and
        reported as not published, never raised into the caller's loop, and never remembered.
        """
        try:
            aiomqtt.Topic(topic)
        except (ValueError, TypeError) as exc:
            self._warn.warning("mqtt_publish_refused", topic, error=str(exc))
            return False
        if retain:
            self._retained[topic] = payload
        client = self._client
        if client is None:
            return False
        try:
            await client.publish(topic, payload, qos=qos, retain=retain, timeout=5)
        except aiomqtt.MqttError as exc:
            log.debug("mqtt_publish_failed", topic=topic, error=str(exc))
            return False
        except ValueError as exc:  # paho refuses e.g. an oversized payload
            self._retained.pop(topic, None)  # it would fail again on every reconnect
            self._warn.warning("mqtt_publish_refused", topic, error=str(exc))
            return False
        finally:
            _honour_cancel()
        return True

    async def publish_raw(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Publish a payload as is (e.g. a configured V2L cut-off command); False when not connected."""
        return await self._publish(topic, payload, retain=retain, qos=1)

    async def publish_site_flows(self, flows: SiteFlows) -> bool:
        """Retained on ``<base>/state/site``; QoS 0 since a fresher value follows soon."""
        return await self._publish(self.topics.site, site_payload(flows), retain=True, qos=0)

    async def publish_vehicle(self, status: VehicleStatus) -> bool:
        return await self._publish(
            self.topics.vehicle(status.vehicle_id), vehicle_payload(status), retain=True
        )

    async def publish_charger(self, status: ChargerStatus) -> bool:
        """Retained on ``<base>/state/charger/<id>``: connection and the last profiles' outcome."""
        return await self._publish(
            self.topics.charger(status.charger_id), charger_payload(status), retain=True
        )

    async def publish_plan(self, plan: Plan) -> bool:
        """The next 24 h of ``plan`` from now, compact JSON, retained on ``<base>/state/plan``."""
        return await self._publish(self.topics.plan, plan_payload(plan, self.clock.now()), retain=True)

    async def publish_status(self, status: ControllerStatus) -> bool:
        return await self._publish(self.topics.controller, controller_payload(status), retain=True)
