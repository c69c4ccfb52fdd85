"""Meter readings gathered into time buckets in memory, until the store writes them.

Filled on the event loop (every reading) and emptied from the store's thread (every flush), so it
has a lock of its own: a reading never waits for the disk.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

__all__ = ["Bucket", "HistoryBuckets"]


@dataclass(slots=True)
class Bucket:
    start: int
    """Unix seconds, aligned to the bucket size."""
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    samples: int = 0

    def add(self, value: float) -> None:
        self.total += value
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)
        self.samples += 1


class HistoryBuckets:
    """One open bucket per meter, and the closed ones not yet taken."""

    def __init__(self, bucket_s: int) -> None:
        self.bucket_s = bucket_s
        self._lock = threading.Lock()
        self._open: dict[str, Bucket] = {}
        self._complete: list[tuple[str, Bucket]] = []

    def add(self, meter_id: str, at_s: int, value: float) -> None:
        """One reading at unix second ``at_s``; not finite, or late for a closed bucket: dropped."""
        if not math.isfinite(value):
            return
        start = at_s // self.bucket_s * self.bucket_s
        with self._lock:
            bucket = self._open.get(meter_id)
            if bucket is None or bucket.start != start:
                if bucket is not None and bucket.start > start:
                    return  # late reading for a bucket already closed: history is downsampled, drop it
                if bucket is not None and bucket.samples:
                    self._complete.append((meter_id, bucket))
                bucket = self._open[meter_id] = Bucket(start)
            bucket.add(value)

    def take(self, now_s: int | None, *, partial: bool) -> list[tuple[str, Bucket]]:
        """The buckets complete at ``now_s`` (every open one when None), removed; ``partial`` also
        takes what the open buckets hold so far and leaves them open and empty."""
        cutoff = None if now_s is None else now_s // self.bucket_s * self.bucket_s
        with self._lock:
            done, self._complete = self._complete, []
            for meter_id, bucket in list(self._open.items()):
                if cutoff is None or bucket.start < cutoff:
                    if bucket.samples:
                        done.append((meter_id, bucket))
                    del self._open[meter_id]
                elif partial and bucket.samples:
                    done.append((meter_id, bucket))
                    self._open[meter_id] = Bucket(bucket.start)
        return done
