"""Events the CSMS reports to the rest of the app, through one callback (``EventSink``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from controller.config import OcppVersion
from controller.ocpp.meter import MeterSample
from controller.ocpp.model import BootInfo, ChargingNeeds, ProfileRecord

__all__ = [
    "BootNotified",
    "ChargerConnected",
    "ChargerDisconnected",
    "ChargingNeedsReported",
    "EventSink",
    "MeterValuesReceived",
    "OcppEvent",
    "ProfileAnswered",
    "StatusChanged",
    "TransactionEnded",
    "TransactionStarted",
]


@dataclass(frozen=True, slots=True)
class ChargerConnected:
    charger_id: str
    ocpp_version: OcppVersion
    at: datetime
    replaced_previous: bool = False


@dataclass(frozen=True, slots=True)
class ChargerDisconnected:
    charger_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class BootNotified:
    charger_id: str
    boot: BootInfo


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """Connector/EVSE status as the charger names it (1.6 ``Charging``, 2.x ``Occupied`` …)."""

    charger_id: str
    evse_id: int
    connector_id: int
    status: str
    previous: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class TransactionStarted:
    charger_id: str
    evse_id: int
    transaction_id: str
    at: datetime
    id_token: str | None = None
    meter_start_wh: float | None = None


@dataclass(frozen=True, slots=True)
class TransactionEnded:
    charger_id: str
    evse_id: int
    transaction_id: str
    at: datetime
    reason: str | None = None
    meter_stop_wh: float | None = None


@dataclass(frozen=True, slots=True)
class MeterValuesReceived:
    """A new sample (power W signed + charging, energy registers Wh, SoC %) for one EVSE."""

    charger_id: str
    evse_id: int
    transaction_id: str | None
    sample: MeterSample


@dataclass(frozen=True, slots=True)
class ChargingNeedsReported:
    """The EV's needs (departure, target SoC, V2X power and energy limits) from NotifyEVChargingNeeds."""

    charger_id: str
    needs: ChargingNeeds


@dataclass(frozen=True, slots=True)
class ProfileAnswered:
    """A charging profile was answered (or failed); ``record.status`` says how."""

    charger_id: str
    record: ProfileRecord


OcppEvent = (
    ChargerConnected
    | ChargerDisconnected
    | BootNotified
    | StatusChanged
    | TransactionStarted
    | TransactionEnded
    | MeterValuesReceived
    | ChargingNeedsReported
    | ProfileAnswered
)

EventSink = Callable[[OcppEvent], None]
"""Called synchronously in the event loop; must not block (e.g. ``queue.put_nowait``)."""
