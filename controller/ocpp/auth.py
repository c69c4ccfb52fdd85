"""HTTP Basic auth for chargers, with brakes: each wrong password costs a PBKDF2 run, so

* after ``FAILURES_PER_ID`` wrong passwords for one charger id (or ``FAILURES_PER_ADDRESS`` from one
  remote address) within ``FAILURE_WINDOW_S``, further attempts are refused without any check for
  ``BLOCK_S``; each new block of the same id/address lasts twice as long, up to ``MAX_BLOCK_S``;
  a right password clears its id's record, ``MAX_BLOCK_S`` without a failure forgives the history;
* at most ``CONCURRENT_CHECKS`` PBKDF2 runs are in flight at once (others wait their turn);
* a password verified once is remembered (as a keyed digest), so reconnects cost no PBKDF2.

The limits are module constants (tests patch them); ``CONCURRENT_CHECKS`` is read when the checker
is created, the others on every use.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from controller.backoff import Backoff
from controller.passwords import verify_password

__all__ = ["AuthThrottle", "Blocked", "PasswordChecker"]

FAILURES_PER_ID = 5
FAILURES_PER_ADDRESS = 20  # several chargers may share one address (NAT): looser than per id
FAILURE_WINDOW_S = 60.0
BLOCK_S = 30.0
MAX_BLOCK_S = 900.0
CONCURRENT_CHECKS = 2
MAX_TRACKED = 4096  # records kept at most; idle ones are pruned first


@dataclass(slots=True)
class _Record:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0
    strikes: int = 0  # blocks so far: the next one lasts BLOCK_S * 2**strikes
    last_failure: float = 0.0


@dataclass(frozen=True, slots=True)
class Blocked:
    """Refused without a check: too many recent failures for this id or address."""

    retry_after_s: float


class AuthThrottle:
    """Failure counts and blocks per charger id and per remote address; ``now`` gives seconds."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._records: dict[tuple[str, str], _Record] = {}

    @staticmethod
    def _keys(charger_id: str, address: str | None) -> list[tuple[tuple[str, str], int]]:
        keys = [(("id", charger_id), FAILURES_PER_ID)]
        if address is not None:
            keys.append((("address", address), FAILURES_PER_ADDRESS))
        return keys

    def retry_after_s(self, charger_id: str, address: str | None) -> float | None:
        """Seconds until this id and address may try again; None if they may now."""
        now = self._now()
        waits = [
            record.blocked_until - now
            for key, _ in self._keys(charger_id, address)
            if (record := self._records.get(key)) is not None and record.blocked_until > now
        ]
        return max(waits) if waits else None

    def failed(self, charger_id: str, address: str | None) -> float | None:
        """Count a wrong password; returns the block length if this failure started a block."""
        now = self._now()
        started: float | None = None
        for key, limit in self._keys(charger_id, address):
            record = self._records.get(key)
            if record is None:
                self._prune(now)
                record = self._records[key] = _Record()
            if now - record.last_failure > MAX_BLOCK_S:
                record.strikes = 0  # quiet for long enough: history forgiven
            record.last_failure = now
            record.failures.append(now)
            while record.failures and now - record.failures[0] > FAILURE_WINDOW_S:
                record.failures.popleft()
            if len(record.failures) >= limit:
                block = Backoff(initial_s=BLOCK_S, max_s=MAX_BLOCK_S).delay_s(record.strikes + 1)
                record.strikes += 1
                record.failures.clear()
                record.blocked_until = max(record.blocked_until, now + block)
                started = max(started or 0.0, block)
        return started

    def succeeded(self, charger_id: str) -> None:
        """The right password for this id: its record goes (the address keeps its count)."""
        self._records.pop(("id", charger_id), None)

    def _prune(self, now: float) -> None:
        if len(self._records) < MAX_TRACKED:
            return
        for key, record in list(self._records.items()):
            if record.blocked_until <= now and now - record.last_failure > FAILURE_WINDOW_S:
                del self._records[key]
        while len(self._records) >= MAX_TRACKED:  # all busy: the oldest failure goes first
            oldest = min(self._records, key=lambda k: self._records[k].last_failure)
            del self._records[oldest]


class PasswordChecker:
    """Checks a charger's Basic-auth password against its stored hash, within the throttle."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.throttle = AuthThrottle(now)
        self._checks = asyncio.Semaphore(CONCURRENT_CHECKS)
        # Verified passwords, keyed by a keyed digest: PBKDF2 costs ~0.1 s, reconnects should not.
        self._key = secrets.token_bytes(32)
        self.verified: dict[str, bytes] = {}
        self.log = structlog.get_logger("controller.ocpp")

    async def check(
        self, charger_id: str, address: str | None, password: str, stored_hash: str
    ) -> bool | Blocked:
        """True for the right password, False for a wrong one, ``Blocked`` if not checked at all."""
        wait = self.throttle.retry_after_s(charger_id, address)
        if wait is not None:
            return Blocked(wait)
        digest = hmac.new(self._key, f"{stored_hash}\0{password}".encode(), hashlib.sha256).digest()
        known = self.verified.get(charger_id)
        if known is not None and hmac.compare_digest(known, digest):
            self.throttle.succeeded(charger_id)
            return True
        await self._checks.acquire()
        # Waiting may have taken a while: someone else's failures may have started a block since.
        wait = self.throttle.retry_after_s(charger_id, address)
        if wait is not None:
            self._checks.release()
            return Blocked(wait)
        # PBKDF2 is deliberately slow: keep it off the event loop. The outcome is recorded (and the
        # slot freed) when the thread ends, even if this handshake is cancelled meanwhile.
        thread = asyncio.ensure_future(asyncio.to_thread(verify_password, password, stored_hash))

        def finished(done: asyncio.Future[bool]) -> None:
            self._checks.release()
            if done.cancelled() or done.exception() is not None:
                return
            if done.result():
                self.verified[charger_id] = digest
                self.throttle.succeeded(charger_id)
                return
            block = self.throttle.failed(charger_id, address)
            if block is not None:
                self.log.warning("ocpp_auth_backoff", charger_id=charger_id, remote=address, block_s=block)

        thread.add_done_callback(finished)
        return await asyncio.shield(thread)
