"""Shared part of the per-version adapters: state updates and events, no protocol specifics."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

import structlog

from controller.clock import Clock
from controller.config import OcppVersion
from controller.ocpp.events import (
    EventSink,
    MeterValuesReceived,
    OcppEvent,
    StatusChanged,
    TransactionEnded,
    TransactionStarted,
)
from controller.ocpp.meter import (
    DroppedReading,
    MeterSample,
    MeterValueError,
    parse_meter_values,
    parse_timestamp,
)
from controller.ocpp.model import MAX_EVSE_ID, MAX_EVSES, ChargerModel, EvseState
from controller.ocpp.profiles import format_time
from controller.ocpp.rpc import OcppCallError, Reply, RpcPeer

__all__ = ["Adapter", "SessionHooks"]

POWER_PLAUSIBILITY_FACTOR = 10.0
"""A reported power above this many times the charger's configured maximum (charge or discharge) is
a unit or meter error (W sent as kW …): the reading is dropped, not believed."""

SAMPLED_MEASURANDS = (
    # Tried in order: chargers reject the whole list when one measurand is unknown to them.
    "Power.Active.Import,Power.Active.Export,Energy.Active.Import.Register,Energy.Active.Export.Register,SoC",
    "Power.Active.Import,Energy.Active.Import.Register,SoC",
    "Power.Active.Import,Energy.Active.Import.Register",
)


class SessionHooks(Protocol):
    def after_boot(self) -> Awaitable[None]:
        """Configure the charger once the BootNotification answer is on the wire."""
        ...

    def resync(self) -> Awaitable[None]:
        """Re-sync a charger that talks without booting first (it ran before this process started)."""
        ...

    def transaction_started(self, evse_id: int) -> None:
        """A transaction started: the current schedule can now be sent as a TxProfile."""
        ...


class Adapter:
    """Turns one version's incoming CALLs into model updates and events; builds its outgoing CALLs."""

    version: OcppVersion
    heartbeat_interval_s = 300  # the session sets the configured value
    # Case-folded idTags/idTokens that may charge; None accepts every token (the session sets it).
    accepted_tokens: frozenset[str] | None = None

    def __init__(self, model: ChargerModel, clock: Clock, emit: EventSink, hooks: SessionHooks) -> None:
        self.model = model
        self.clock = clock
        self._emit = emit
        self.hooks = hooks
        self.log = structlog.get_logger("controller.ocpp").bind(
            charger_id=model.charger_id, ocpp_version=self.version.value
        )
        self._routes: dict[str, Callable[[dict[str, Any]], Reply]] = {}
        # Set up once per connection: its first answered message (a boot or not) or its silence decides.
        self._setup_decided = False

    async def handle(self, action: str, payload: dict[str, Any]) -> Reply | None:
        self.model.last_seen = self.clock.now()
        route = self._routes.get(action)
        reply = None if route is None else route(payload)
        if reply is not None and not self._setup_decided:
            self._setup_decided = True
            if action != "BootNotification":
                # Talking without booting: it kept running while it was away (or while the
                # controller restarted). Ask for its state instead of waiting for the next plug-in.
                self.log.info("ocpp_running_charger_resync", first_action=action)
                reply = dataclasses.replace(reply, then=self.hooks.resync)
        return reply

    async def resync_if_silent(self, wait_s: float) -> None:
        """Re-sync a charger that neither booted nor said anything within ``wait_s`` of connecting.

        An idle charger that kept running while this process restarted may send nothing until its
        next heartbeat (minutes): without this it would stay on whatever profile it had until then.
        """
        await self.clock.sleep(wait_s)
        if self._setup_decided:
            return  # it booted, or talked and was re-synced by ``handle``
        self._setup_decided = True
        self.log.info("ocpp_silent_charger_resync", waited_s=wait_s)
        await self.hooks.resync()

    # ----------------------------------------------------------- outgoing

    async def configure_sampling(self, peer: RpcPeer, interval_s: int) -> None:
        raise NotImplementedError

    def resync_triggers(self, evse_id: int) -> list[dict[str, Any]]:
        """TriggerMessage payloads that make a reconnected charger resend its status and transaction."""
        raise NotImplementedError

    # ----------------------------------------------------------- authorisation

    def token_accepted(self, token: str | None, token_type: str | None = None) -> bool:
        """True unless an accepted-token list is configured and ``token`` is not on it.

        2.x ``NoAuthorization`` tokens (a charger set to free charging) are not cards: accepted.
        """
        if self.accepted_tokens is None or token is None or token_type == "NoAuthorization":
            return True
        if token.casefold() in self.accepted_tokens:
            return True
        self.log.warning("ocpp_id_token_refused", id_token=token, token_type=token_type)
        return False

    # ----------------------------------------------------------- helpers

    def now_text(self) -> str:
        return format_time(self.clock.now())

    def emit(self, event: OcppEvent) -> None:
        self._emit(event)

    def timestamp(self, raw: Any) -> datetime:
        """A charger timestamp, or now when absent; an unreadable one is answered as a format error."""
        if raw is None:
            return self.clock.now()
        try:
            return parse_timestamp(raw)
        except MeterValueError as error:
            raise OcppCallError("FormatViolation", str(error)) from None

    @property
    def max_plausible_power_w(self) -> float:
        config = self.model.config
        return POWER_PLAUSIBILITY_FACTOR * 1000.0 * max(config.max_charge_kw, config.max_discharge_kw)

    def meter_sample(self, meter_values: Any) -> MeterSample | None:
        """Unreadable values are refused (CALLERROR); implausible ones are logged and left out."""
        try:
            return parse_meter_values(
                meter_values or [], max_power_w=self.max_plausible_power_w, on_dropped=self._meter_dropped
            )
        except MeterValueError as error:
            raise OcppCallError("PropertyConstraintViolation", f"meterValue: {error}") from None

    def _meter_dropped(self, reading: DroppedReading) -> None:
        self.log.warning(
            "ocpp_meter_value_dropped",
            measurand=reading.measurand,
            phase=reading.phase,
            value=reading.value,
            reason=reading.reason,
        )

    def evse(self, evse_id: int, action: str) -> EvseState | None:
        """The model's EVSE, or None (logged) if the id is out of bounds: the message is answered
        as usual, but changes nothing and emits no event."""
        evse = self.model.evse(evse_id)
        if evse is None:
            self.log.warning(
                "ocpp_evse_ignored",
                evse_id=evse_id,
                action=action,
                max_evse_id=MAX_EVSE_ID,
                max_evses=MAX_EVSES,
            )
        return evse

    def record_meter(self, evse_id: int, transaction_id: str | None, sample: MeterSample | None) -> None:
        if sample is None:
            return
        evse = self.evse(evse_id, "meter values")
        if evse is None:
            return
        evse.meter = evse.meter.updated(sample)
        self.emit(MeterValuesReceived(self.model.charger_id, evse_id, transaction_id, sample))

    def record_status(self, evse_id: int, connector_id: int, status: str, at: datetime) -> None:
        evse = self.evse(evse_id, "status")
        if evse is None:
            return
        previous = evse.status
        evse.status = status
        if previous != status:
            self.log.info("ocpp_status", evse_id=evse_id, status=status, previous=previous)
            self.emit(StatusChanged(self.model.charger_id, evse_id, connector_id, status, previous, at))

    def start_transaction(
        self,
        evse_id: int,
        transaction_id: str,
        at: datetime,
        id_token: str | None,
        meter_start_wh: float | None,
    ) -> None:
        evse = self.evse(evse_id, "transaction start")
        if evse is None or evse.transaction_id == transaction_id:
            return
        evse.transaction_id = transaction_id
        self.log.info("ocpp_transaction_started", evse_id=evse_id, transaction_id=transaction_id)
        self.emit(
            TransactionStarted(self.model.charger_id, evse_id, transaction_id, at, id_token, meter_start_wh)
        )
        self.hooks.transaction_started(evse_id)

    def end_transaction(
        self,
        evse_id: int,
        transaction_id: str,
        at: datetime,
        reason: str | None,
        meter_stop_wh: float | None,
    ) -> None:
        evse = self.evse(evse_id, "transaction end")
        if evse is None:
            return
        if evse.transaction_id == transaction_id:
            evse.transaction_id = None
        self.log.info("ocpp_transaction_ended", evse_id=evse_id, transaction_id=transaction_id, reason=reason)
        self.emit(TransactionEnded(self.model.charger_id, evse_id, transaction_id, at, reason, meter_stop_wh))
