"""A loop that runs its work on an interval and at once when asked, with the reasons it was asked.

The planner (every ``replan_interval_minutes``, and at once, debounced, on plug-in, new prices …) and
the dispatcher (every ``dispatch_interval_s``, and at once after a new plan or a limit breach) are the
same loop with different settings. All waiting goes through the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from controller.clock import Clock

__all__ = ["IntervalTrigger", "wait_for_event"]

log = structlog.get_logger("controller.trigger")


class IntervalTrigger:
    """``run(work)`` calls ``work(reasons)`` every ``interval_s`` (reasons ``[idle_reason]``) and as
    soon as :meth:`fire` is called; fires within ``debounce_s`` of the first make one run."""

    def __init__(
        self,
        clock: Clock,
        name: str,
        interval_s: float,
        *,
        debounce_s: float = 0.0,
        idle_reason: str = "interval",
    ) -> None:
        self.clock = clock
        self.name = name
        self.interval_s = interval_s
        self.debounce_s = debounce_s
        self.idle_reason = idle_reason
        self._fired = asyncio.Event()
        self._reasons: list[str] = []

    @property
    def pending(self) -> bool:
        """Whether a run was asked for and has not started yet."""
        return self._fired.is_set()

    @property
    def reasons(self) -> list[str]:
        """The reasons gathered for the next run, in the order they first came."""
        return list(self._reasons)

    def fire(self, reason: str | None = None) -> None:
        if reason is not None and reason not in self._reasons:
            self._reasons.append(reason)
        self._fired.set()

    def clear(self) -> None:
        """Forget what was asked so far (the next run waits for a new fire or the interval)."""
        self._fired.clear()
        self._reasons.clear()

    async def run(self, work: Callable[[list[str]], Awaitable[object]]) -> None:
        """Forever (until cancelled); a failing run is logged and the loop goes on."""
        while True:
            await wait_for_event(self._fired, self.interval_s, self.clock)
            if self._fired.is_set() and self.debounce_s > 0:
                await self.clock.sleep(self.debounce_s)  # one run for a burst of fires
            self._fired.clear()
            reasons, self._reasons = self._reasons or [self.idle_reason], []
            try:
                await work(reasons)
            except Exception:
                log.exception(f"{self.name}_failed")


async def wait_for_event(event: asyncio.Event, timeout_s: float, clock: Clock) -> None:
    """Until ``event`` is set or ``timeout_s`` of ``clock``'s time passed.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancel that lands just as the event is
    set, and a loop built on it would then never stop (SIGTERM would hang the exit).
    """
    with contextlib.suppress(TimeoutError):
        async with clock.timeout(timeout_s):
            await event.wait()
