"""Store writes off the event loop: one worker thread, in the order they were asked for.

A write whose result someone waits for (a driver command is acknowledged only once its override is
on disk) is awaited with :func:`asyncio.wrap_future`; every other write (plans, events, sessions,
vehicle state, history) is queued and the loop goes on. One thread keeps the order, so a session's
stop is never written before its start and a later vehicle state never under an earlier one. A write
that fails is logged and counted; it never reaches the loop as an unhandled exception.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

import structlog

__all__ = ["BACKLOG_WARNING", "StoreWriter"]

log = structlog.get_logger("controller.store")

BACKLOG_WARNING = 100
"""Writes waiting beyond this many mean the disk does not keep up (health reports it)."""


def _nothing() -> None:
    return None


class StoreWriter:
    """Runs store writes on one thread of its own, first asked, first written."""

    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._lock = threading.Lock()
        self._waiting = 0
        self.failed = 0
        """Writes that raised since start."""

    @property
    def backlog(self) -> int:
        """Writes asked for and not yet done."""
        return self._waiting

    def submit(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Queue ``write(*args, **kwargs)``; its future holds the result or the exception."""
        with self._lock:
            self._waiting += 1
        future = self._executor.submit(write, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def flushed(self) -> concurrent.futures.Future[None]:
        """Done once every write asked for before is done (for a reader that must see them)."""
        return self.submit(_nothing)

    def _done(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._waiting -= 1
        error = None if future.cancelled() else future.exception()
        if error is not None:
            self.failed += 1
            log.error("store_write_failed", error=repr(error))

    def close(self) -> None:
        """Write everything still queued, then stop the thread (at shutdown, after the last write)."""
        self._executor.shutdown(wait=True)
