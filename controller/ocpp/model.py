"""What the CSMS knows about each charger, and the small read-only protocol the rest of the app uses."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from controller.config import ChargerConfig, OcppVersion
from controller.domain import ChargerSchedule
from controller.ocpp.meter import MeterSample

__all__ = [
    "MAX_EVSES",
    "MAX_EVSE_ID",
    "BootInfo",
    "ChargerModel",
    "ChargerView",
    "ChargingNeeds",
    "EvseState",
    "EvseView",
    "MeterSnapshot",
    "ProfileRecord",
    "ProfileStatus",
]


MAX_EVSE_ID = 64
"""Highest EVSE (1.6: connector) id a charger may report; 0 is the whole station. Ids above it (or
negative 1.6 connector ids) are ignored: one id per message must not grow the model without end."""
MAX_EVSES = 32
"""Most EVSE entries kept per charger (the configured EVSE is always kept on top of these)."""


class ProfileStatus(enum.StrEnum):
    """What became of a charging profile (or of a request to send one)."""

    ACCEPTED = "accepted"  # the charger answered Accepted
    REJECTED = "rejected"  # Rejected, or a CALLERROR no retry can fix (NotSupported …): not retried
    UNCHANGED = "unchanged"  # the accepted profile already says this: nothing sent
    DEFERRED = "deferred"  # no transaction yet: sent when one starts
    NOT_CONNECTED = "not_connected"  # sent when the charger (re)connects
    TIMEOUT = "timeout"  # no answer in time: retried with backoff
    FAILED = "failed"  # a transient CALLERROR (InternalError …) or an invalid answer: retried
    SUPERSEDED = "superseded"  # a newer schedule replaced it before it was sent
    WITHHELD = "withheld"  # the daemon is stopping: a schedule that discharges is never sent


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    """One SetChargingProfile exchange: exactly what was sent and how the charger answered."""

    purpose: str  # "TxProfile" or "TxDefaultProfile"
    status: ProfileStatus
    payload: Mapping[str, Any]
    at: datetime
    schedule: ChargerSchedule | None = None
    transaction_id: str | None = None
    valid_to: datetime | None = None
    reason: str = ""
    attempt: int = 1

    @property
    def accepted(self) -> bool:
        return self.status is ProfileStatus.ACCEPTED


@dataclass(frozen=True, slots=True)
class MeterSnapshot:
    """Latest values per measurand, each kept with its own time (a message may carry only some)."""

    power_w: float | None = None  # + charging the car, - discharging
    power_at: datetime | None = None
    energy_import_wh: float | None = None
    energy_export_wh: float | None = None
    energy_at: datetime | None = None
    soc_percent: float | None = None
    soc_at: datetime | None = None

    def updated(self, sample: MeterSample) -> MeterSnapshot:
        snapshot = self
        if sample.power_w is not None and (self.power_at is None or sample.at >= self.power_at):
            snapshot = _replace(snapshot, power_w=sample.power_w, power_at=sample.at)
        has_energy = sample.energy_import_wh is not None or sample.energy_export_wh is not None
        if has_energy and (self.energy_at is None or sample.at >= self.energy_at):
            snapshot = _replace(
                snapshot,
                energy_import_wh=(
                    sample.energy_import_wh if sample.energy_import_wh is not None else self.energy_import_wh
                ),
                energy_export_wh=(
                    sample.energy_export_wh if sample.energy_export_wh is not None else self.energy_export_wh
                ),
                energy_at=sample.at,
            )
        if sample.soc_percent is not None and (self.soc_at is None or sample.at >= self.soc_at):
            snapshot = _replace(snapshot, soc_percent=sample.soc_percent, soc_at=sample.at)
        return snapshot


def _replace(snapshot: MeterSnapshot, **changes: Any) -> MeterSnapshot:
    values = {name: getattr(snapshot, name) for name in MeterSnapshot.__dataclass_fields__}
    values.update(changes)
    return MeterSnapshot(**values)


@dataclass(frozen=True, slots=True)
class ChargingNeeds:
    """NotifyEVChargingNeeds, normalised: W, Wh, percent, UTC. None where the EV said nothing."""

    evse_id: int
    at: datetime
    requested_energy_transfer: str
    departure_time: datetime | None = None
    target_soc_percent: float | None = None
    soc_percent: float | None = None
    energy_request_wh: float | None = None
    min_energy_request_wh: float | None = None
    max_energy_request_wh: float | None = None
    # 2.1 V2X energy window, signed as the EV sends it: Wh to the minimum / maximum SoC it allows
    # for V2X (negative = the battery is above that SoC, so that much may be discharged).
    min_v2x_energy_request_wh: float | None = None
    max_v2x_energy_request_wh: float | None = None
    max_charge_power_w: float | None = None
    min_charge_power_w: float | None = None
    max_discharge_power_w: float | None = None
    min_discharge_power_w: float | None = None
    ev_capacity_wh: float | None = None


@dataclass(frozen=True, slots=True)
class BootInfo:
    vendor: str
    model: str
    serial_number: str | None
    firmware_version: str | None
    at: datetime


class EvseView(Protocol):
    @property
    def evse_id(self) -> int: ...
    @property
    def status(self) -> str | None: ...
    @property
    def transaction_id(self) -> str | None: ...
    @property
    def meter(self) -> MeterSnapshot: ...
    @property
    def charging_needs(self) -> ChargingNeeds | None: ...


class ChargerView(Protocol):
    """Read-only view of one charger. ``status``/``transaction_id``/``meter`` are for its configured EVSE."""

    @property
    def charger_id(self) -> str: ...
    @property
    def connected(self) -> bool: ...
    @property
    def ocpp_version(self) -> OcppVersion | None: ...
    @property
    def boot(self) -> BootInfo | None: ...
    @property
    def evses(self) -> Mapping[int, EvseView]: ...
    @property
    def status(self) -> str | None: ...
    @property
    def transaction_id(self) -> str | None: ...
    @property
    def meter(self) -> MeterSnapshot: ...
    @property
    def charging_needs(self) -> ChargingNeeds | None: ...
    @property
    def last_profile(self) -> ProfileRecord | None: ...
    @property
    def default_profile(self) -> ProfileRecord | None: ...
    @property
    def last_seen(self) -> datetime | None: ...


@dataclass(slots=True)
class EvseState:
    evse_id: int
    status: str | None = None
    transaction_id: str | None = None
    meter: MeterSnapshot = field(default_factory=MeterSnapshot)
    charging_needs: ChargingNeeds | None = None


@dataclass(slots=True)
class ChargerModel:
    """Mutable state behind ``ChargerView``; only the OCPP adapter writes it."""

    config: ChargerConfig
    connected: bool = False
    ocpp_version: OcppVersion | None = None
    boot: BootInfo | None = None
    evses: dict[int, EvseState] = field(default_factory=dict)
    last_profile: ProfileRecord | None = None
    default_profile: ProfileRecord | None = None
    last_seen: datetime | None = None
    reported_variables: dict[str, str] = field(default_factory=dict)

    @property
    def charger_id(self) -> str:
        return self.config.id

    def evse(self, evse_id: int) -> EvseState | None:
        """The EVSE's state, created on first use; None (nothing stored) for an id out of bounds
        (see ``MAX_EVSE_ID``, ``MAX_EVSES``)."""
        state = self.evses.get(evse_id)
        if state is None:
            if evse_id != self.config.evse_id and (
                not 0 <= evse_id <= MAX_EVSE_ID or len(self.evses) >= MAX_EVSES
            ):
                return None
            state = self.evses[evse_id] = EvseState(evse_id)
        return state

    @property
    def _main(self) -> EvseState | None:
        return self.evses.get(self.config.evse_id)

    @property
    def status(self) -> str | None:
        main = self._main
        return main.status if main else None

    @property
    def transaction_id(self) -> str | None:
        main = self._main
        return main.transaction_id if main else None

    @property
    def meter(self) -> MeterSnapshot:
        main = self._main
        return main.meter if main else MeterSnapshot()

    @property
    def charging_needs(self) -> ChargingNeeds | None:
        main = self._main
        return main.charging_needs if main else None

    def find_transaction(self, transaction_id: str) -> EvseState | None:
        return next((e for e in self.evses.values() if e.transaction_id == transaction_id), None)
