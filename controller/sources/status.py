"""How a fetched source is doing, for the log and ``/health``: a problem is logged when it starts and
when it ends, not at every retry."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import structlog

__all__ = ["SourceStatus"]

log = structlog.get_logger("controller.sources")


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class SourceStatus:
    """``source`` names the config field and the type, e.g. ``tariff.import.provider (awattar)``."""

    source: str
    failures: int = 0
    """Failed attempts in a row."""
    failing_since: dt.datetime | None = None
    reason: str = ""
    last_ok_at: dt.datetime | None = None
    slots: int = 0
    """Slots (prices) or windows (PV) the last good answer held."""

    def failed(self, reason: str, now: dt.datetime) -> None:
        self.failures += 1
        self.reason = reason
        if self.failing_since is None:
            self.failing_since = now
            log.warning("source_failed", source=self.source, reason=reason)

    def succeeded(self, now: dt.datetime, slots: int) -> None:
        if self.failing_since is not None:
            log.info("source_recovered", source=self.source, failing_since=_iso(self.failing_since))
        self.failures = 0
        self.failing_since = None
        self.reason = ""
        self.last_ok_at = now
        self.slots = slots

    def problem(self) -> str | None:
        """``source: failing since ...: reason`` while it fails, else None."""
        if self.failing_since is None:
            return None
        return f"{self.source} failing since {_iso(self.failing_since)}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.failing_since is None,
            "failing_since": _iso(self.failing_since),
            "reason": self.reason or None,
            "failures": self.failures,
            "last_ok_at": _iso(self.last_ok_at),
            "slots": self.slots,
        }
