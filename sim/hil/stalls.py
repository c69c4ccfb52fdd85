"""How long the event loop stalls during a HIL run. The daemon, the virtual home and the broker share
one loop; at ``--speed`` 1000 a stall of 50 ms (a garbage collection, a busy machine) is 50 simulated
seconds in which nobody reacts, so a run with long stalls drifts from ``v2x sim run``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType

__all__ = ["LoopStalls"]


class LoopStalls:
    """``async with LoopStalls() as stalls``: :attr:`worst_s` is the longest the loop was late to
    wake a ``period_s`` sleep inside the block, in real seconds."""

    def __init__(self, period_s: float = 0.005) -> None:
        self.period_s = period_s
        self.worst_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopStalls:
        self._task = asyncio.create_task(self._watch(), name="hil-loop-stalls")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            asked = time.monotonic() + self.period_s
            await asyncio.sleep(self.period_s)
            self.worst_s = max(self.worst_s, time.monotonic() - asked)
