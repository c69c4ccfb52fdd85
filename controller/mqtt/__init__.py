"""MQTT adapter: meter ingestion, grid signals, driver commands, state publishing, HA discovery."""

from controller.mqtt.client import (
    CommandHandler,
    CommandRejected,
    SignalKind,
    SiteMqttClient,
    build_tls_context,
)
from controller.mqtt.payloads import ControllerStatus, SiteFlows, VehicleStatus
from controller.mqtt.topics import Topics

__all__ = [
    "CommandHandler",
    "CommandRejected",
    "ControllerStatus",
    "SignalKind",
    "SiteFlows",
    "SiteMqttClient",
    "Topics",
    "VehicleStatus",
    "build_tls_context",
]
