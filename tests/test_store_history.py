"""Store history as the daemon uses it: step means for the forecasts, and flushing from a worker thread."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.forecast import resample_to_grid
from controller.store import Store

T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
STEP = timedelta(minutes=15)


def test_history_means_are_the_step_means_of_the_stored_buckets(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite")
    try:
        for minute in range(-7, 3 * 60 + 11):  # partial steps at both ends, gaps below
            if minute % 17 == 0:
                continue
            at = T0 + timedelta(minutes=minute, seconds=5)
            store.record_reading("_home_load", at, 100.0 + minute)
            store.record_reading("_home_load", at + timedelta(seconds=30), 300.0 + 2 * minute)
        store.flush_history()
        since, until = T0 - timedelta(hours=1), T0 + timedelta(hours=4)
        buckets = [(p.bucket_start, p.mean) for p in store.history("_home_load", since, until)]
        expected = sorted(resample_to_grid(buckets, STEP).items())
        means = store.history_means("_home_load", since, until, STEP)
        assert [at for at, _ in means] == [at for at, _ in expected]
        assert [v for _, v in means] == pytest.approx([v for _, v in expected])
        assert all(at.minute % 15 == 0 and at.second == 0 for at, _ in means)
        assert store.history_means("other", since, until, STEP) == []
        with pytest.raises(ValueError):
            store.history_means("_home_load", since, until, timedelta(0))
    finally:
        store.close()


def test_flushing_from_a_thread_while_readings_arrive_loses_nothing(tmp_path: Path) -> None:
    """The daemon records on the event loop and flushes from a worker thread at the same time."""
    store = Store(tmp_path / "race.sqlite", bucket=timedelta(seconds=1))
    samples = 20_000
    done = threading.Event()
    errors: list[BaseException] = []

    def flusher() -> None:
        while not done.is_set():
            try:
                store.flush_history(T0 + timedelta(hours=1))
            except Exception as exc:  # e.g. "dictionary changed size during iteration"
                errors.append(exc)

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        for i in range(samples):
            # Four readings per one-second bucket, so buckets roll over while the flusher runs.
            store.record_reading("grid", T0 + timedelta(milliseconds=250 * i), 1.0)
    finally:
        done.set()
        thread.join(timeout=30)
    assert not errors, errors[:3]
    store.flush_history()
    points = store.history("grid", T0, T0 + timedelta(hours=2))
    assert sum(p.samples for p in points) == samples
    assert all(p.mean == 1.0 for p in points)
    store.close()
