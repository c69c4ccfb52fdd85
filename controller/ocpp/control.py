"""Per charger: the live connection, the setup after boot/reconnect, and the stop.

The charger's profiles go out through its one ``ProfileSender`` (``controller.ocpp.sender``).
"""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import structlog

from controller.backoff import Backoff
from controller.clock import Clock
from controller.config import OcppConfig
from controller.domain import ChargerSchedule
from controller.ocpp.base import Adapter
from controller.ocpp.events import EventSink
from controller.ocpp.model import ChargerModel, ProfileRecord, ProfileStatus
from controller.ocpp.profiles import ChargerLimits
from controller.ocpp.rpc import CallErrorReceived, CallTimeout, ResponseInvalid, RpcPeer
from controller.ocpp.sender import ProfileSender

__all__ = ["ChargerControl"]

_CALL_FAILURES = (CallTimeout, CallErrorReceived, ResponseInvalid)


class ChargerControl:
    """One charger as the server holds it: its model, its live connection, its profile sender.

    It is the adapters' ``SessionHooks``: the setup after a boot or a reconnect runs here.
    """

    def __init__(
        self,
        model: ChargerModel,
        limits: ChargerLimits,
        clock: Clock,
        emit: EventSink,
        config: OcppConfig,
        backoff: Backoff,
    ) -> None:
        self.model = model
        self.clock = clock
        self._config = config
        self._backoff = backoff
        self.peer: RpcPeer | None = None
        self.adapter: Adapter | None = None
        self.profiles = ProfileSender(
            model,
            limits,
            clock,
            emit,
            backoff,
            max_validity=timedelta(hours=config.profile_validity_hours),
            current_peer=lambda: self.peer,
        )
        self.log = structlog.get_logger("controller.ocpp").bind(charger_id=model.charger_id)

    # --------------------------------------------------------------- connection

    def attach(self, peer: RpcPeer, adapter: Adapter) -> RpcPeer | None:
        """Make ``peer`` the live connection; returns the one it replaces."""
        previous = self.peer
        self.peer, self.adapter = peer, adapter
        self.model.connected = True
        self.model.ocpp_version = peer.version
        self.model.last_seen = self.clock.now()
        return previous

    def detach(self, peer: RpcPeer) -> bool:
        """Forget ``peer`` if it is still the live one; True if the charger is now disconnected."""
        if self.peer is not peer:
            return False
        self.peer = self.adapter = None
        self.model.connected = False
        return True

    # --------------------------------------------------------------- SessionHooks

    def after_boot(self) -> Coroutine[Any, Any, None]:
        return self.setup(resync=False)

    def resync(self) -> Coroutine[Any, Any, None]:
        return self.setup(resync=True)

    def transaction_started(self, evse_id: int) -> None:
        self.profiles.transaction_started(evse_id)

    async def setup(self, *, resync: bool) -> None:
        """Sampling config, the safe default profile, (after a reconnect) fresh status and transaction,
        the current profile; then the default profile again with backoff until the charger answers it.

        Bound to the connection it started on: if a new connection replaces it midway, that one runs
        its own setup and this one stops.
        """
        peer, adapter = self.peer, self.adapter
        if peer is None or adapter is None:
            return
        try:
            await adapter.configure_sampling(peer, self._config.meter_sample_interval_s)
        except _CALL_FAILURES as error:
            self.log.warning("ocpp_sampling_config_failed", error=str(error))
        if self.peer is not peer:
            return
        default = await self.profiles.install_default(peer)
        if resync:
            for trigger in adapter.resync_triggers(self.model.config.evse_id):
                if self.peer is not peer:
                    return
                try:
                    await peer.call("TriggerMessage", trigger)
                except _CALL_FAILURES as error:
                    self.log.info(
                        "ocpp_trigger_failed", requested=trigger["requestedMessage"], error=str(error)
                    )
        if self.peer is not peer:
            return
        self.profiles.wake(force=True)
        await self._retry_default(peer, default)

    async def _retry_default(self, peer: RpcPeer, record: ProfileRecord) -> None:
        # The default profile is what keeps a charger safe without us: unanswered or failed with a
        # transient CALLERROR, it is sent again (a refusal is final until the next setup, like for
        # TxProfiles).
        attempt = record.attempt
        while record.status in (ProfileStatus.TIMEOUT, ProfileStatus.FAILED):
            delay = self._backoff.delay_s(attempt)
            self.log.info("ocpp_default_profile_retry", attempt=attempt, delay_s=delay)
            await self.clock.sleep(delay)
            if self.peer is not peer:
                return
            attempt += 1
            record = await self.profiles.install_default(peer, attempt=attempt)

    # --------------------------------------------------------------- the stop

    def begin_stop(self) -> None:
        """The daemon is stopping: from now on nothing that discharges goes out, and whatever was
        still waiting to be sent is dropped. :meth:`make_safe` then sends the safe profiles."""
        self.profiles.begin_stop()

    async def make_safe(self, schedule: ChargerSchedule | None) -> list[ProfileRecord]:
        """The stop's last word to this charger, sent directly (the sender task has been stopped):
        ``schedule`` as the running transaction's TxProfile (it outranks the default profile, so an
        earlier discharging TxProfile would otherwise stay in force until it expires), then the safe
        default profile. The caller bounds the time; a call cut short is simply abandoned."""
        peer = self.peer
        if peer is None:
            return []
        records = []
        if schedule is not None:
            records.append(await self.profiles.send_once(schedule))
        records.append(await self.profiles.install_default(peer))
        return records
