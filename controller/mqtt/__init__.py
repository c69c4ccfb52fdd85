"""MQTT adapter: meter ingestion, grid signals, driver commands, state publishing, HA discovery."""

from controller.mqtt.client import (
    CommandHandler,
    CommandRejected,
    SignalKind,
    SiteMqttClient,
    build_tls_context,
)
from controller.mqtt.payloads import (
    ChargerStatus,
    ControllerStatus,
    ProfileOutcome,
    SiteFlows,
    VehicleStatus,
    charger_state,
)
from controller.mqtt.topics import Topics

__all__ = [
    "ChargerStatus",
    "CommandHandler",
    "CommandRejected",
    "ControllerStatus",
    "ProfileOutcome",
    "SignalKind",
    "SiteFlows",
    "SiteMqttClient",
    "Topics",
    "VehicleStatus",
    "build_tls_context",
    "charger_state",
]
