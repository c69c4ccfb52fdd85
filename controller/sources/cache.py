"""The fetched data on disk, one small JSON file per source in ``sources/`` beside the SQLite file,
so a restart neither loses the day's prices nor asks the provider again.

A file names the config it was fetched with (a digest): after a config change it is ignored. Values
are stored as handed to the site (prices in the site's currency, PV in W). Writes go to a temporary
file renamed over the old one, so a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from controller.signals.payload import Segment

__all__ = ["CachedData", "SourceCache", "config_digest"]

log = structlog.get_logger("controller.sources")

_VERSION = 1


def config_digest(config_json: str) -> str:
    return hashlib.sha256(config_json.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class CachedData:
    fetched_at: dt.datetime
    segments: tuple[Segment, ...]


def _segment(item: Any) -> Segment:
    start, end, value = item
    segment = (dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end), float(value))
    if segment[0].tzinfo is None or segment[1].tzinfo is None or not segment[0] < segment[1]:
        raise ValueError("a segment without time zone or of no length")
    return segment


class SourceCache:
    """One source's cache file: ``path``, valid for the config with digest ``digest``."""

    def __init__(self, path: Path, digest: str) -> None:
        self.path = path
        self.digest = digest

    def load(self, keep_after: dt.datetime) -> CachedData | None:
        """What the file holds (segments ending after ``keep_after``); None when there is no usable file.
        A corrupt file is logged and ignored (the next write replaces it)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("source_cache_unreadable", path=str(self.path), reason=str(exc))
            return None
        try:
            data = json.loads(text)
            if data.get("version") != _VERSION or data.get("config") != self.digest:
                log.info("source_cache_ignored", path=str(self.path), reason="written for another config")
                return None
            fetched_at = dt.datetime.fromisoformat(data["fetched_at"])
            if fetched_at.tzinfo is None:
                raise ValueError("fetched_at without time zone")
            segments = tuple(s for s in map(_segment, data["segments"]) if s[1] > keep_after)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("source_cache_corrupt", path=str(self.path), reason=f"{type(exc).__name__}: {exc}")
            return None
        return CachedData(fetched_at.astimezone(dt.UTC), segments)

    def save(self, data: CachedData) -> None:
        """Write ``data`` atomically (blocking: call it in a worker thread)."""
        body = {
            "version": _VERSION,
            "config": self.digest,
            "fetched_at": data.fetched_at.isoformat(),
            "segments": [[s.isoformat(), e.isoformat(), v] for s, e, v in data.segments],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with temporary.open("w", encoding="utf-8") as out:
                json.dump(body, out, separators=(",", ":"))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        finally:
            temporary.unlink(missing_ok=True)
