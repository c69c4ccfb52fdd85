"""OCPP CSMS for 1.6J, 2.0.1 and 2.1: websocket server, per-version adapters, V2X charging profiles.

Public surface: ``OcppServer`` (start/stop, ``apply_schedule``, ``install_default_profile``,
``charger``/``chargers`` views), the read-only ``ChargerView`` protocol and the events sent to the
``on_event`` callback. See docs/ocpp.md.
"""

from controller.backoff import Backoff
from controller.ocpp.events import (
    BootNotified,
    ChargerConnected,
    ChargerDisconnected,
    ChargingNeedsReported,
    EventSink,
    MeterValuesReceived,
    OcppEvent,
    ProfileAnswered,
    StatusChanged,
    TransactionEnded,
    TransactionStarted,
)
from controller.ocpp.meter import MeterSample
from controller.ocpp.model import (
    BootInfo,
    ChargerView,
    ChargingNeeds,
    EvseView,
    MeterSnapshot,
    ProfileRecord,
    ProfileStatus,
)
from controller.ocpp.server import OcppServer

__all__ = [
    "Backoff",
    "BootInfo",
    "BootNotified",
    "ChargerConnected",
    "ChargerDisconnected",
    "ChargerView",
    "ChargingNeeds",
    "ChargingNeedsReported",
    "EventSink",
    "EvseView",
    "MeterSample",
    "MeterSnapshot",
    "MeterValuesReceived",
    "OcppEvent",
    "OcppServer",
    "ProfileAnswered",
    "ProfileRecord",
    "ProfileStatus",
    "StatusChanged",
    "TransactionEnded",
    "TransactionStarted",
]
