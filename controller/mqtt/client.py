"""The site's one MQTT connection: meters, signals and commands in; state, plan and status out.

``SiteMqttClient.run()`` is a long-lived task: it connects, subscribes, publishes a retained
``online`` on ``<base>/status`` (the broker publishes the retained ``offline`` last will if the
connection dies), and feeds every message into a :class:`~controller.site_inputs.SiteInputs`.
A lost connection is retried with exponential backoff and jitter, subscriptions are made again and
the retained state published so far is republished. Cancelling the task publishes ``offline`` and
disconnects cleanly. Bad payloads are logged with their topic and dropped; nothing a peer sends can
end the task.

``SiteMqttClient`` composes parts with one job each: :class:`MqttConnection` (the connection loop),
:class:`SiteIngestion` (meters and signals into the inputs), :class:`CommandChannel` (driver
commands and their replies) and :class:`StatePublisher` (state out, retained state republished).
"""

from __future__ import annotations

import random

import aiomqtt

from controller.clock import Clock
from controller.config import SiteConfig
from controller.domain import Plan
from controller.mqtt.command_channel import CommandChannel, CommandHandler, CommandRejected
from controller.mqtt.connection import (
    RECONNECT_CAP_S,
    MqttConnection,
    ReconnectPolicy,
    SessionHooks,
    build_tls_context,
    payload_bytes,
)
from controller.mqtt.ingestion import ReadingCallback, SignalCallback, SignalKind, SiteIngestion
from controller.mqtt.message_log import MessageCounts, ThrottledLog
from controller.mqtt.payloads import (
    BatteryStatus,
    ChargerStatus,
    ControllerStatus,
    SiteFlows,
    VehicleStatus,
)
from controller.mqtt.state_publisher import StatePublisher
from controller.mqtt.topics import Topics
from controller.site_inputs import SiteInputs

__all__ = ["CommandHandler", "CommandRejected", "SignalKind", "SiteMqttClient", "build_tls_context"]

_COMMAND_QOS = 1


class SiteMqttClient:
    """One MQTT connection for the site. Construct, then ``run()`` it as a task."""

    def __init__(
        self,
        cfg: SiteConfig,
        clock: Clock,
        inputs: SiteInputs | None = None,
        *,
        on_command: CommandHandler | None = None,
        on_reading: ReadingCallback | None = None,
        on_signal: SignalCallback | None = None,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = RECONNECT_CAP_S,
        reconnect_reset_after_s: float = 30.0,
        log_interval_s: float = 10.0,
        max_queued_messages: int = 10_000,
        rng: random.Random | None = None,
    ) -> None:
        self.reconnect = ReconnectPolicy(reconnect_min_s, reconnect_max_s, reconnect_reset_after_s)
        self.cfg = cfg
        self.clock = clock
        self.inputs = inputs if inputs is not None else SiteInputs(cfg)
        self.topics = Topics.from_config(cfg.mqtt)
        self.counts = MessageCounts()
        self._rng = rng if rng is not None else random.Random()
        # One limiter for all parts: at most one warning per topic per interval, whoever warns.
        warnings = ThrottledLog(log_interval_s)
        tls_context = build_tls_context(cfg.mqtt.tls)
        self.ingestion = SiteIngestion(
            cfg, clock, self.inputs, self.counts, warnings, on_reading=on_reading, on_signal=on_signal
        )
        hooks = SessionHooks(
            on_connect=self._on_connect,
            on_arrival=self.ingestion.ingest_on_arrival,
            on_message=self._dispatch,
            delay_s=self.backoff_s,
        )
        self.connection = MqttConnection(
            cfg.mqtt,
            self.topics.status,
            clock,
            hooks,
            subscriptions={**self.ingestion.subscriptions, self.topics.command_filter: _COMMAND_QOS},
            tls_context=tls_context,
            reset_after_s=self.reconnect.reset_after_s,
            max_queued_messages=max_queued_messages,
        )
        self.publisher = StatePublisher(cfg, self.topics, clock, self.connection, warnings)
        self.command_channel = CommandChannel(
            cfg, clock, self.topics, self.publisher, self.counts, warnings, on_command=on_command
        )
        self.commands = self.command_channel.queue

    # ------------------------------------------------------------ the parts' state

    @property
    def subscriptions(self) -> dict[str, int]:
        """Topic filter -> QoS, as subscribed on every connect."""
        return self.connection.subscriptions

    @property
    def connected(self) -> bool:
        return self.connection.connected

    @property
    def connections(self) -> int:
        return self.connection.connections

    @property
    def accepted(self) -> int:
        return self.counts.accepted

    @property
    def rejected(self) -> int:
        return self.counts.rejected

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        """Until connected and subscribed (raises TimeoutError after ``timeout_s``)."""
        await self.connection.wait_connected(timeout_s)

    # ------------------------------------------------------------------ in

    def backoff_s(self, attempt: int) -> float:
        """Delay before reconnect ``attempt`` (0-based): doubling from the minimum, capped, jittered."""
        return self.reconnect.delay_s(attempt, self._rng)

    async def run(self) -> None:
        """Connect and serve until cancelled; reconnects forever (see :meth:`MqttConnection.run`)."""
        await self.connection.run()

    async def _on_connect(self, client: aiomqtt.Client) -> None:
        await self.connection.announce(client)
        await self.publisher.republish(client)
        self.connection.mark_connected()

    async def _dispatch(self, message: aiomqtt.Message) -> None:
        """A queued message: a meter or signal (normally handled on arrival already), else a command."""
        topic = message.topic.value
        payload = payload_bytes(message)
        if self.ingestion.handles(topic):
            self.ingestion.ingest(topic, payload, retained=message.retain)
            return
        await self.command_channel.handle(topic, payload, message.retain)

    def ingest(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """Parse a meter or signal message and update the inputs (synchronous, no I/O)."""
        self.ingestion.ingest(topic, payload, retained)

    # ----------------------------------------------------------------- out

    async def publish_raw(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Publish a payload as is (e.g. a configured V2L cut-off command); False when not connected."""
        return await self.publisher.publish_raw(topic, payload, retain=retain)

    async def publish_site_flows(self, flows: SiteFlows) -> bool:
        """Retained on ``<base>/state/site``; QoS 0 since a fresher value follows soon."""
        return await self.publisher.publish_site_flows(flows)

    async def publish_vehicle(self, status: VehicleStatus) -> bool:
        return await self.publisher.publish_vehicle(status)

    async def publish_battery(self, status: BatteryStatus) -> bool:
        """Retained on ``<base>/state/battery/<id>``."""
        return await self.publisher.publish_battery(status)

    async def publish_charger(self, status: ChargerStatus) -> bool:
        """Retained on ``<base>/state/charger/<id>``: connection and the last profiles' outcome."""
        return await self.publisher.publish_charger(status)

    async def publish_plan(self, plan: Plan) -> bool:
        """The next 24 h of ``plan`` from now, compact JSON, retained on ``<base>/state/plan``."""
        return await self.publisher.publish_plan(plan)

    async def publish_status(self, status: ControllerStatus) -> bool:
        return await self.publisher.publish_status(status)
