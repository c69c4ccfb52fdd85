"""One charger's profile sender: the newest wanted schedule as its TxProfile, retried until answered.

The sender keeps only the newest wanted schedule; a single task sends it, so there is never more
than one SetChargingProfile outstanding per charger, and a schedule that was overtaken by a newer
one before it went out is reported as superseded instead of being sent. A profile the charger
refused (Rejected, or a CALLERROR that can never succeed) is not sent again while the wanted schedule
says the same, until the charger reconnects, a transaction starts or ``REFUSED_RETRY_S`` passed: a
refusal can be passing (a transaction the charger had not started yet, a reboot), and meanwhile the
charger runs on its default profile, which charges at full power past the SoC ceiling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from controller.backoff import Backoff
from controller.clock import Clock
from controller.domain import ChargerSchedule
from controller.ocpp.events import EventSink, ProfileAnswered
from controller.ocpp.model import ChargerModel, ProfileRecord, ProfileStatus
from controller.ocpp.profiles import (
    ChargerLimits,
    default_profile_payload,
    profile_valid_to,
    same_schedule,
    tx_profile_payload,
)
from controller.ocpp.rpc import CallErrorReceived, CallTimeout, NotConnected, ResponseInvalid, RpcPeer

__all__ = ["REFUSED_RETRY_S", "ProfileSender"]

REFUSED_RETRY_S = 300.0
"""A refused TxProfile is offered again after this long (clock seconds) if it is still wanted."""

_WITHHELD_REASON = "the daemon is stopping"


class ProfileSender:
    """Sends one charger's profiles over whichever connection ``current_peer`` returns at the time.

    ``run`` is the sender task; ``apply`` hands it a schedule and waits for the first outcome.
    """

    def __init__(
        self,
        model: ChargerModel,
        limits: ChargerLimits,
        clock: Clock,
        emit: EventSink,
        backoff: Backoff,
        *,
        max_validity: timedelta,
        current_peer: Callable[[], RpcPeer | None],
    ) -> None:
        self.model = model
        self.limits = limits
        self.clock = clock
        self._emit = emit
        self._backoff = backoff
        self._max_validity = max_validity
        self._current_peer = current_peer
        self._desired: ChargerSchedule | None = None
        self._force = False
        self._wake = asyncio.Event()
        self._waiters: list[tuple[ChargerSchedule, asyncio.Future[ProfileRecord]]] = []
        self._stopping = False
        self.log = structlog.get_logger("controller.ocpp").bind(charger_id=model.charger_id)

    def wake(self, *, force: bool = False) -> None:
        """Send the wanted schedule again; ``force`` even if the charger already has it or refused it."""
        self._force = self._force or force
        self._wake.set()

    def transaction_started(self, evse_id: int) -> None:
        if self._desired is not None and self._desired.evse_id == evse_id:
            self.wake(force=True)

    async def apply(self, schedule: ChargerSchedule) -> ProfileRecord:
        """Make ``schedule`` the wanted one and wait for the first outcome of sending it."""
        if self._stopping:
            return self._withheld(schedule)
        future: asyncio.Future[ProfileRecord] = asyncio.get_running_loop().create_future()
        self._desired = schedule
        self._waiters.append((schedule, future))
        self.wake()
        return await future

    async def install_default(self, peer: RpcPeer | None = None, *, attempt: int = 1) -> ProfileRecord:
        """The safe TxDefaultProfile, over ``peer`` or else the current connection."""
        peer = self._current_peer() if peer is None else peer
        now = self.clock.now()
        if peer is None:
            return ProfileRecord("TxDefaultProfile", ProfileStatus.NOT_CONNECTED, {}, now)
        payload = default_profile_payload(peer.version, self.limits)
        record = await self._send(peer, "TxDefaultProfile", payload, attempt=attempt)
        self.model.default_profile = record
        return record

    async def run(self) -> None:
        """The sender task: one at a time, newest schedule wins, retries with backoff."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            force, self._force = self._force, False
            try:
                await self._send_desired(force)
            except Exception as error:  # a bug here must not stop this charger's sender for good
                self.log.exception("ocpp_profile_sender_failed")
                schedule = self._desired
                if schedule is not None:
                    failed = ProfileRecord(
                        "TxProfile", ProfileStatus.FAILED, {}, self.clock.now(), schedule, reason=str(error)
                    )
                    self._resolve(schedule, failed)

    def fail_waiters(self, status: ProfileStatus = ProfileStatus.NOT_CONNECTED) -> None:
        """Answer everyone still waiting (the server is stopping): not connected, or ``status``."""
        now = self.clock.now()
        for schedule, future in self._waiters:
            if not future.done():
                future.set_result(ProfileRecord("TxProfile", status, {}, now, schedule=schedule))
        self._waiters.clear()

    def begin_stop(self) -> None:
        """The daemon is stopping: from now on nothing that discharges goes out, and whatever was
        still waiting to be sent is dropped."""
        self._stopping = True
        self._desired = None
        self.fail_waiters(ProfileStatus.WITHHELD)

    async def send_once(self, schedule: ChargerSchedule) -> ProfileRecord:
        """``schedule`` as the TxProfile now, once and without retry (the sender task is stopped):
        neither an unchanged nor a refused earlier profile holds it back. Once stopping, one that
        discharges is withheld."""
        record, _ = await self._attempt(schedule, True, 1)
        return record

    def _withheld(self, schedule: ChargerSchedule) -> ProfileRecord:
        self.log.warning("ocpp_profile_withheld", reason=_WITHHELD_REASON)
        return ProfileRecord(
            "TxProfile",
            ProfileStatus.WITHHELD,
            {},
            self.clock.now(),
            schedule=schedule,
            reason=_WITHHELD_REASON,
        )

    async def _send_desired(self, force: bool) -> None:
        attempt = 0
        while (schedule := self._desired) is not None:
            attempt += 1
            self._resolve_other_than(schedule)
            record, retry = await self._attempt(schedule, force, attempt)
            self._resolve(schedule, record)
            if not retry:
                return
            delay = self._backoff.delay_s(attempt)
            self.log.info("ocpp_profile_retry", attempt=attempt, delay_s=delay, status=record.status.value)
            with contextlib.suppress(TimeoutError):
                async with self.clock.timeout(delay):
                    await self._wake.wait()
            if self._wake.is_set():
                return  # something new (schedule, reconnect, transaction): the run loop takes it
            force = True

    def _resolve(self, schedule: ChargerSchedule, record: ProfileRecord) -> None:
        keep = []
        for wanted, future in self._waiters:
            if wanted is schedule:
                if not future.done():
                    future.set_result(record)
            else:
                keep.append((wanted, future))
        self._waiters = keep

    def _resolve_other_than(self, schedule: ChargerSchedule) -> None:
        now = self.clock.now()
        for wanted, future in self._waiters:
            if wanted is not schedule and not future.done():
                future.set_result(
                    ProfileRecord("TxProfile", ProfileStatus.SUPERSEDED, {}, now, schedule=wanted)
                )
        self._waiters = [(w, f) for w, f in self._waiters if w is schedule]

    async def _attempt(
        self, schedule: ChargerSchedule, force: bool, attempt: int
    ) -> tuple[ProfileRecord, bool]:
        """One try at sending ``schedule``: its record, and whether to retry."""
        now = self.clock.now()
        peer = self._current_peer()
        if self._stopping and schedule.discharges:
            return self._withheld(schedule), False
        if peer is None:
            return ProfileRecord("TxProfile", ProfileStatus.NOT_CONNECTED, {}, now, schedule=schedule), False
        evse = self.model.evses.get(schedule.evse_id)
        transaction_id = evse.transaction_id if evse else None
        if transaction_id is None:
            return ProfileRecord("TxProfile", ProfileStatus.DEFERRED, {}, now, schedule=schedule), False
        valid_to = profile_valid_to(schedule, self._max_validity)
        if valid_to <= now:
            reason = "the schedule ended before it could be sent"
            return ProfileRecord(
                "TxProfile", ProfileStatus.FAILED, {}, now, schedule, transaction_id, valid_to, reason
            ), False
        answered = None if force else self._answered_before(schedule, transaction_id, valid_to, now)
        if answered is not None:
            return answered, False
        payload = tx_profile_payload(
            peer.version,
            schedule,
            self.limits,
            transaction_id=transaction_id,
            max_validity=self._max_validity,
        )
        record = await self._send(
            peer,
            "TxProfile",
            payload,
            attempt=attempt,
            schedule=schedule,
            transaction_id=transaction_id,
            valid_to=valid_to,
        )
        self.model.last_profile = record
        return record, record.status in (ProfileStatus.TIMEOUT, ProfileStatus.FAILED)

    def _answered_before(
        self, schedule: ChargerSchedule, transaction_id: str, valid_to: datetime, now: datetime
    ) -> ProfileRecord | None:
        """The outcome without a call when the last TxProfile for this transaction already says the
        same: accepted and holding for long enough (UNCHANGED), or refused (that refusal)."""
        last = self.model.last_profile
        if last is None or last.schedule is None or last.transaction_id != transaction_id:
            return None
        if (
            last.accepted
            and last.valid_to is not None
            and valid_to >= last.valid_to
            and last.valid_to - now >= self._max_validity / 2
            and same_schedule(last.schedule, schedule, last.valid_to)
        ):
            return ProfileRecord(
                "TxProfile",
                ProfileStatus.UNCHANGED,
                last.payload,
                now,
                schedule,
                transaction_id,
                last.valid_to,
            )
        if (
            last.status is ProfileStatus.REJECTED
            and same_schedule(last.schedule, schedule, valid_to)
            and (now - last.at).total_seconds() < REFUSED_RETRY_S
        ):
            # Refused with this content: it would likely be refused again (each time logged, stored
            # and dispatched on). A change of content, a reconnect, a new transaction or
            # REFUSED_RETRY_S later sends again.
            return last
        return None

    async def _send(
        self,
        peer: RpcPeer,
        purpose: str,
        payload: dict[str, Any],
        *,
        attempt: int,
        schedule: ChargerSchedule | None = None,
        transaction_id: str | None = None,
        valid_to: datetime | None = None,
    ) -> ProfileRecord:
        reason = ""
        try:
            result = await peer.call("SetChargingProfile", payload)
        except CallTimeout as error:
            status, reason = ProfileStatus.TIMEOUT, str(error)
        except CallErrorReceived as error:
            # NotSupported, FormatViolation … answer the same CALL the same way every time: final,
            # like Rejected. InternalError, GenericError … may pass: retried.
            status = ProfileStatus.REJECTED if error.permanent else ProfileStatus.FAILED
            reason = str(error)
        except ResponseInvalid as error:
            status, reason = ProfileStatus.FAILED, str(error)
        except NotConnected as error:
            status, reason = ProfileStatus.NOT_CONNECTED, str(error)
        else:
            status = ProfileStatus.ACCEPTED if result["status"] == "Accepted" else ProfileStatus.REJECTED
            info = result.get("statusInfo") or {}
            reason = result["status"] if status is ProfileStatus.REJECTED else ""
            if info.get("reasonCode"):
                reason = f"{reason} ({info['reasonCode']})".strip()
        record = ProfileRecord(
            purpose, status, payload, self.clock.now(), schedule, transaction_id, valid_to, reason, attempt
        )
        log = self.log.bind(purpose=purpose, status=status.value, attempt=attempt)
        if status is ProfileStatus.ACCEPTED:
            log.info("ocpp_profile_accepted")
        else:
            log.warning("ocpp_profile_not_accepted", reason=reason)
        if status is not ProfileStatus.NOT_CONNECTED:
            self._emit(ProfileAnswered(self.model.charger_id, record))
        return record
