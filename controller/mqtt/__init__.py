"""MQTT adapter: meter ingestion, grid signals, driver commands, state publishing, HA discovery.

:class:`SiteMqttClient` is the one object the daemon uses; it composes the connection loop
(:class:`MqttConnection`), the ingestion of meters and signals (:class:`SiteIngestion`), driver
commands and their replies (:class:`CommandChannel`) and state publishing (:class:`StatePublisher`).
"""

from controller.mqtt.client import SiteMqttClient
from controller.mqtt.command_channel import CommandChannel, CommandHandler, CommandRejected
from controller.mqtt.connection import MqttConnection, ReconnectPolicy, build_tls_context
from controller.mqtt.ingestion import SignalKind, SiteIngestion
from controller.mqtt.payloads import (
    BatteryStatus,
    ChargerStatus,
    ControllerStatus,
    ProfileOutcome,
    SiteFlows,
    VehicleStatus,
    battery_state,
    charger_state,
)
from controller.mqtt.state_publisher import StatePublisher
from controller.mqtt.topics import Topics

__all__ = [
    "BatteryStatus",
    "ChargerStatus",
    "CommandChannel",
    "CommandHandler",
    "CommandRejected",
    "ControllerStatus",
    "MqttConnection",
    "ProfileOutcome",
    "ReconnectPolicy",
    "SignalKind",
    "SiteFlows",
    "SiteIngestion",
    "SiteMqttClient",
    "StatePublisher",
    "Topics",
    "VehicleStatus",
    "battery_state",
    "build_tls_context",
    "charger_state",
]
