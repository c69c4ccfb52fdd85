"""The controller's state out: site flows, vehicles, home batteries, chargers, plan and status, retained.

Retained state is remembered and sent again on every connect (after the Home Assistant discovery
configs), so a broker that restarted without persistence gets it back.
"""

from __future__ import annotations

import aiomqtt
import structlog

from controller.clock import Clock
from controller.config import SiteConfig
from controller.domain import Plan
from controller.mqtt.connection import MqttConnection, honour_cancel
from controller.mqtt.discovery import discovery_messages
from controller.mqtt.message_log import ThrottledLog
from controller.mqtt.payloads import (
    BatteryStatus,
    ChargerStatus,
    ControllerStatus,
    SiteFlows,
    VehicleStatus,
    battery_payload,
    charger_payload,
    controller_payload,
    plan_payload,
    site_payload,
    vehicle_payload,
)
from controller.mqtt.topics import Topics

__all__ = ["StatePublisher"]

log = structlog.get_logger("controller.mqtt")

_PUBLISH_TIMEOUT_S = 5


class StatePublisher:
    """Publishes over the connection while it is up; remembers retained state for the next one."""

    def __init__(
        self,
        cfg: SiteConfig,
        topics: Topics,
        clock: Clock,
        connection: MqttConnection,
        warnings: ThrottledLog,
    ) -> None:
        self.cfg = cfg
        self.topics = topics
        self.clock = clock
        self._connection = connection
        self._warn = warnings
        self._retained: dict[str, bytes] = {}

    async def republish(self, client: aiomqtt.Client) -> None:
        """On connect: the discovery configs (when enabled), then all retained state so far."""
        if self.cfg.mqtt.homeassistant_discovery:
            for topic, payload in discovery_messages(self.cfg, self.topics):
                await client.publish(topic, payload, qos=1, retain=True)
        for topic, payload in list(self._retained.items()):
            await client.publish(topic, payload, qos=1, retain=True)

    async def publish(self, topic: str, payload: bytes, retain: bool, qos: int = 1) -> bool:
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
        client = self._connection.client
        if client is None:
            return False
        try:
            await client.publish(topic, payload, qos=qos, retain=retain, timeout=_PUBLISH_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            log.debug("mqtt_publish_failed", topic=topic, error=str(exc))
            return False
        except ValueError as exc:  # paho refuses e.g. an oversized payload
            self._retained.pop(topic, None)  # it would fail again on every reconnect
            self._warn.warning("mqtt_publish_refused", topic, error=str(exc))
            return False
        finally:
            honour_cancel()
        return True

    async def publish_raw(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Publish a payload as is (e.g. a configured V2L cut-off command); False when not connected."""
        return await self.publish(topic, payload, retain=retain, qos=1)

    async def publish_site_flows(self, flows: SiteFlows) -> bool:
        """Retained on ``<base>/state/site``; QoS 0 since a fresher value follows soon."""
        return await self.publish(self.topics.site, site_payload(flows), retain=True, qos=0)

    async def publish_vehicle(self, status: VehicleStatus) -> bool:
        return await self.publish(
            self.topics.vehicle(status.vehicle_id), vehicle_payload(status), retain=True
        )

    async def publish_battery(self, status: BatteryStatus) -> bool:
        """Retained on ``<base>/state/battery/<id>``: SoC, power, the plan's power now, control."""
        return await self.publish(
            self.topics.battery(status.battery_id), battery_payload(status), retain=True
        )

    async def publish_charger(self, status: ChargerStatus) -> bool:
        """Retained on ``<base>/state/charger/<id>``: connection and the last profiles' outcome."""
        return await self.publish(
            self.topics.charger(status.charger_id), charger_payload(status), retain=True
        )

    async def publish_plan(self, plan: Plan) -> bool:
        """The next 24 h of ``plan`` from now, compact JSON, retained on ``<base>/state/plan``."""
        return await self.publish(self.topics.plan, plan_payload(plan, self.clock.now()), retain=True)

    async def publish_status(self, status: ControllerStatus) -> bool:
        return await self.publish(self.topics.controller, controller_payload(status), retain=True)
