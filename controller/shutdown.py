"""SIGTERM and SIGINT ask the daemon to stop, from the first line of ``v2x run`` to the process's last.

Plain ``signal.signal`` handlers, never reset: the event loop's own handlers exist only while the
loop runs and are put back to the default (terminate, exit 143) when it closes, so a signal during
start-up, or a second one late in the stop, would kill the process midway. Here a signal before the
daemon exists is remembered and stops it as soon as it runs; one after the stop began does nothing,
and once the daemon has ended the signals are ignored until the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["STOP_SIGNALS", "StopSignals"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """``install()`` once, early; ``connect(loop, stop)`` when the daemon runs."""

    def __init__(self) -> None:
        self.requested = False
        self._target: tuple[asyncio.AbstractEventLoop, Callable[[], None]] | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def install(self) -> None:
        """Take over SIGTERM and SIGINT (main thread only, as for every Python signal handler)."""
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        """Give the signals back (the command ended without running the daemon to its stop)."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def connect(self, loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
        """Call ``stop`` on ``loop`` for every signal from now on, and at once if one came already."""
        self._target = (loop, stop)
        if self.requested:
            loop.call_soon_threadsafe(stop)

    def disconnect(self) -> None:
        """The daemon has ended: later signals are ignored. Ignored, not handled: the interpreter puts
        a handled signal back to the default while it shuts down, and a signal then would still
        kill the process (143) after a clean stop."""
        self._target = None
        for sig in self._previous:
            signal.signal(sig, signal.SIG_IGN)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the main thread, possibly inside the event loop's own code:
        # only a flag and the loop's thread-safe wake-up, no logging (its locks could deadlock).
        self.requested = True
        target = self._target
        if target is not None:
            loop, stop = target
            with contextlib.suppress(RuntimeError):  # the loop closed in the meantime
                loop.call_soon_threadsafe(stop)
