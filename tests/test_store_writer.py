"""Store writes run on the store's own thread, in order, off the event loop; a command waits for its."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from controller.commands import SetMode
from controller.domain import VehicleMode
from controller.store import Store
from controller.store_writer import StoreWriter
from tests.conftest import stored
from tests.test_site import example_daemon

T0 = datetime(2026, 12, 6, 12, tzinfo=UTC)
SLOW_WRITE_S = 0.4


class SlowStore(Store):
    """A store on a slow card: every override commit takes ``SLOW_WRITE_S``; records its threads."""

    threads: list[str]

    def save_overrides(
        self, vehicle_id: str, bodies: Mapping[str, dict[str, Any]], cleared: Any, at: datetime
    ) -> None:
        self.threads = [*getattr(self, "threads", []), threading.current_thread().name]
        time.sleep(SLOW_WRITE_S)
        super().save_overrides(vehicle_id, bodies, cleared, at)


def overrides_on_disk(path: Path) -> list[tuple[str, str]]:
    """What another process (a restarted daemon) would read now."""
    with sqlite3.connect(path) as db:
        return db.execute("SELECT vehicle_id, kind FROM overrides ORDER BY kind").fetchall()


async def test_a_command_is_on_disk_when_acknowledged_and_the_loop_runs_meanwhile(tmp_path: Path) -> None:
    daemon = example_daemon(tmp_path)
    slow = SlowStore(tmp_path / "v2x.sqlite")
    daemon.persistence.store = slow
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beat = asyncio.create_task(ticker())
    try:
        handled = asyncio.create_task(
            daemon.router.handle_command(SetMode("family-ev", VehicleMode.NO_DISCHARGE))
        )
        await asyncio.sleep(SLOW_WRITE_S / 2)
        assert not handled.done()  # no reply yet: the override is not on disk
        assert overrides_on_disk(slow.path) == []
        await handled
        assert ("family-ev", "mode") in overrides_on_disk(slow.path)
        assert ticks >= 10  # the loop kept running while the card was slow
        assert slow.threads == ["store_0"]
    finally:
        beat.cancel()
        daemon.persistence.close()


def test_writes_land_in_the_order_asked_and_close_waits_for_them(tmp_path: Path) -> None:
    store = Store(tmp_path / "v2x.sqlite")
    writer = StoreWriter()
    for n in range(50):
        writer.submit(store.start_session, "wb", T0 + timedelta(minutes=2 * n), transaction_id=f"tx{n}")
        writer.submit(store.log_event, "n", T0, n=n)
        writer.submit(store.stop_session, "wb", T0 + timedelta(minutes=2 * n + 1), float(n))
    writer.close()
    assert writer.backlog == 0
    assert [body["n"] for _, _, body in reversed(store.events("n", limit=100))] == list(range(50))
    sessions = store.sessions(limit=100)
    assert len(sessions) == 50 and store.open_sessions() == []
    assert all(s.stopped_at is not None and s.stopped_at > s.started_at for s in sessions)
    store.close()


def test_a_failed_write_is_logged_and_counted_and_the_next_ones_still_run(tmp_path: Path) -> None:
    store = Store(tmp_path / "v2x.sqlite")
    writer = StoreWriter()

    def broken() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with structlog.testing.capture_logs() as logs:
        failed = writer.submit(broken)
        writer.submit(store.log_event, "after", T0)
        writer.flushed().result(timeout=5)
    with pytest.raises(sqlite3.OperationalError):
        failed.result()
    assert writer.failed == 1
    assert [e["error"] for e in logs if e["event"] == "store_write_failed"] == [
        "OperationalError('disk I/O error')"
    ]
    assert [kind for _, kind, _ in store.events("after")] == ["after"]
    writer.close()
    store.close()


def test_an_unchanged_vehicle_state_is_not_written_again(tmp_path: Path) -> None:
    daemon = example_daemon(tmp_path)
    writes: list[int] = []
    real = daemon.store.save_vehicle_states

    def counted(bodies: dict[str, Any], at: datetime) -> None:
        writes.append(len(bodies))
        real(bodies, at)

    daemon.store.save_vehicle_states = counted
    daemon.persistence.save_vehicles()
    daemon.persistence.save_vehicles()  # nothing changed
    daemon.site.set_plugged("wallbox-garage", True, T0)
    daemon.persistence.save_vehicles()
    stored(daemon)
    assert writes == [1, 1]
    assert stored(daemon).vehicle_states()["family-ev"]["plugged_in"] is True
    daemon.persistence.close()
