"""One clock abstraction, injected everywhere, so simulated time can run fast.

A clock reads the time (``now``, ``monotonic``) and waits on its own time scale (``sleep``,
``timeout``): every interval, retry delay and protocol timeout of the daemon goes through it.

* :class:`SystemClock`: wall time, waits in real seconds (production).
* :class:`ManualClock`: ``now`` moves only when told; waits in real seconds (unit tests).
* :class:`ScaledClock`: time runs ``speed`` times faster than real time from a chosen start, and
  waits are shortened to match, so the whole daemon runs an hour in seconds (simulation, tests).

What is bounded by the real world stays on real time: the stop's budget (a container's grace period
is real seconds) and the I/O timeouts of the libraries underneath (websocket pings, MQTT keep-alive).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

from controller.domain import ensure_utc

__all__ = ["Clock", "ManualClock", "ScaledClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on this clock's scale from an arbitrary origin, never going back (for intervals)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    def timeout(self, seconds: float | None) -> asyncio.Timeout:
        """``asyncio.timeout`` after ``seconds`` of this clock's time (None: never)."""
        ...


class _RealTimeWaits:
    """Waits in real seconds."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def timeout(self, seconds: float | None) -> asyncio.Timeout:
        return asyncio.timeout(seconds)


class SystemClock(_RealTimeWaits):
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock(_RealTimeWaits):
    """A clock whose ``now`` only moves when told to (tests); it waits in real seconds."""

    def __init__(self, start: datetime) -> None:
        self._now = ensure_utc(start)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("time does not run backwards")
        self._now += delta
        return self._now

    def set(self, moment: datetime) -> None:
        moment = ensure_utc(moment)
        if moment < self._now:
            raise ValueError("time does not run backwards")
        self._now = moment


class ScaledClock:
    """Time from ``start`` running ``speed`` times faster than real time (``speed`` 1: real time).

    ``sleep(60)`` at speed 600 takes 0.1 real seconds. The clock starts when created; everything the
    daemon times (intervals, debounce, OCPP call timeouts, retry delays, staleness) scales with it,
    so the faithful limit is where real latencies (a solve, a round trip) stop being small against
    the shortened waits.
    """

    def __init__(self, start: datetime, speed: float) -> None:
        if not speed > 0:
            raise ValueError("speed must be above 0")
        self.start = ensure_utc(start)
        self.speed = float(speed)
        self._origin = time.monotonic()

    def elapsed_s(self) -> float:
        """Seconds of this clock's time since it was created."""
        return (time.monotonic() - self._origin) * self.speed

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed_s())

    def monotonic(self) -> float:
        return self.elapsed_s()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)

    def timeout(self, seconds: float | None) -> asyncio.Timeout:
        return asyncio.timeout(None if seconds is None else seconds / self.speed)

    async def sleep_until(self, moment: datetime) -> None:
        """Wait until ``now()`` reaches ``moment``."""
        await self.sleep((ensure_utc(moment) - self.now()).total_seconds())
