"""What became of incoming messages: counts of accepted and rejected ones, and warnings limited per topic."""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

__all__ = ["MessageCounts", "ThrottledLog", "payload_preview"]

log = structlog.get_logger("controller.mqtt")

_MAX_TRACKED_TOPICS = 10_000
_PREVIEW_BYTES = 80


@dataclass(slots=True)
class MessageCounts:
    """Incoming messages used (a reading, a signal, a command) and refused (bad payload, refused command)."""

    accepted: int = 0
    rejected: int = 0


class ThrottledLog:
    """At most one warning per topic per interval, so a broken device cannot flood the log."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last_monotonic_s: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, event: str, topic: str, **fields: object) -> None:
        now_s = time.monotonic()
        last_s = self._last_monotonic_s.get(topic)
        if last_s is not None and now_s - last_s < self.interval_s:
            self._suppressed[topic] = self._suppressed.get(topic, 0) + 1
            return
        if len(self._last_monotonic_s) > _MAX_TRACKED_TOPICS:  # bounded memory under a flood of topics
            self._last_monotonic_s.clear()
            self._suppressed.clear()
        self._last_monotonic_s[topic] = now_s
        log.warning(event, topic=topic, suppressed=self._suppressed.pop(topic, 0), **fields)


def payload_preview(payload: bytes) -> str:
    """The start of a payload as text, for a log line."""
    return payload[:_PREVIEW_BYTES].decode("utf-8", "replace")
