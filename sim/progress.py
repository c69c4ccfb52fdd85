"""A small text progress bar on a stream (stderr), redrawn in place on a terminal."""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """``bar(done, total)`` draws ``label [#####.....]  52 % 12.3 s`` in place on a terminal; off a
    terminal (logs, CI) it writes one line when the run is done.

    The time is counted from the first call (the simulator calls ``bar(0, total)`` as its loop
    starts), so at 100 % it matches the run's ``wall_time_s``; set-up before the loop is not in it.
    """

    def __init__(self, stream: TextIO, label: str, width: int = 30, enabled: bool = True) -> None:
        self.stream = stream
        self.label = label
        self.width = width
        self.enabled = enabled
        self.started: float | None = None
        self.elapsed_s = 0.0
        """Seconds from the first call to the last drawn one."""
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last_percent = -1

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        now = time.perf_counter()
        if self.started is None:
            self.started = now
        percent = min(100, int(100 * done / total))
        if percent == self._last_percent or (not self._tty and percent != 100):
            return
        self._last_percent = percent
        filled = self.width * percent // 100
        self.elapsed_s = now - self.started
        text = f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {percent:3d} % {self.elapsed_s:6.1f} s"
        if self._tty:
            end = "\n" if percent == 100 else ""
            self.stream.write("\r" + text + end)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
