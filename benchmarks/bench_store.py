"""What the store writes to the disk: bytes per day of normal operation, and its size after a year.

A simulated day, on simulated time, written as the daemon writes it: six history series read every
second, flushed (the open minute in part) every ``storage.history_flush_s`` (its default); a plan every 5
minutes (24 h at 15-minute steps, two cars); every minute two vehicle states saved (one commit) and
the housekeeping (purge, thinning). The
kernel's writeback is emulated by syncing the files every 30 simulated seconds, so pages written
again before that count once, as they would. Measured from ``/proc/self/io``: ``wchar`` (what
SQLite hands to the kernel) and ``write_bytes`` (what goes to the block device), for the store as it
is (per-kind durability) and with every commit synced (``synchronous=FULL`` for all).

Then a year, written day by day with fake timestamps (plans and one-minute buckets as above) and
thinned daily as housekeeping does: the database's size at the end.

    .venv/bin/python benchmarks/bench_store.py [--dir /var/tmp] [--days 365]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlite3

from controller.config import StorageConfig
from controller.domain import Plan, VehiclePlan
from controller.plan_record import plan_to_dict
from controller.store import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = 86_400
SERIES = ("grid", "pv_meter", "wb1", "wb2", "_home_load", "_pv")
STEPS = 96


class FullSyncStore(Store):
    """Every commit synced, as the store did before durability per kind."""

    @contextmanager
    def _tx(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        with super()._tx(durable=True) as db:
            yield db


def realistic_plan(created: datetime) -> Plan:
    def wave(base: float, k: int) -> tuple[float, ...]:
        return tuple(round(base * ((i * k) % 17 - 8) / 8, 2) for i in range(STEPS))

    vehicles = {
        vid: VehiclePlan(
            vid, wave(7400.0, n + 3), tuple(round(40 + i * 0.37, 2) for i in range(STEPS + 1)), "cost"
        )
        for n, vid in enumerate(("ev1", "ev2"))
    }
    return Plan(
        created_at=created,
        start=created,
        step=timedelta(minutes=15),
        vehicles=vehicles,
        grid_import_w=wave(3000.0, 5),
        grid_export_w=wave(2000.0, 7),
        import_price_per_kwh=wave(0.3, 11),
        export_price_per_kwh=wave(0.1, 13),
        solver_status="optimal",
        solve_time_ms=42.0,
    )


def io_counters() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(":") for line in f)}


def sync_files(path: Path) -> None:
    for name in (path, Path(f"{path}-wal")):
        if name.exists():
            fd = os.open(name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def simulated_day(directory: Path, store_type: type[Store]) -> tuple[dict[str, int], float]:
    path = directory / f"day-{store_type.__name__}.sqlite"
    store = store_type(path)
    vehicle = {"plugged_in": True, "charger_id": "wb1", "soc_percent": 55.0, "soc_at": "x" * 25}
    # A day before: the store is not empty (history and plans up to now), as in operation.
    for t in range(-DAY, 0, 300):
        store.save_plan(realistic_plan(T0 + timedelta(seconds=t)))
    sync_files(path)
    before, started = io_counters(), time.perf_counter()
    flush_s = int(StorageConfig().history_flush_s)
    for t in range(0, DAY, flush_s):
        now = T0 + timedelta(seconds=t + flush_s)
        for s in range(flush_s):
            for n, series in enumerate(SERIES):
                store.record_reading(series, T0 + timedelta(seconds=t + s), 1000.0 + n + s)
        store.flush_history(now, partial=True)
        if t % 60 == 0:
            store.save_vehicle_states(
                {vid: {**vehicle, "soc_percent": 55.0 + t / 3600} for vid in ("ev1", "ev2")}, now
            )
            store.purge(now - timedelta(days=400))
            store.thin(now)
        if t % 300 == 0:
            store.save_plan(realistic_plan(now))
        if t % 30 < flush_s:
            sync_files(path)  # the kernel's writeback
    sync_files(path)
    elapsed = time.perf_counter() - started
    after = io_counters()
    store.close()
    return {k: after[k] - before[k] for k in ("wchar", "write_bytes")}, elapsed


def simulated_year(directory: Path, days: int) -> tuple[int, int, int]:
    path = directory / "year.sqlite"
    store = Store(path)
    body = json.dumps(plan_to_dict(realistic_plan(T0)), separators=(",", ":"))
    start = int(T0.timestamp())
    for day in range(days):
        day_start = start + day * DAY
        plans = [(day_start + i * 300, day_start, 0, "optimal", body) for i in range(DAY // 300)]
        history = [
            (series, ts, 1000.0, 999.0, 1001.0, 60)
            for series in SERIES
            for ts in range(day_start, day_start + DAY, 60)
        ]
        with store._tx() as db:
            db.executemany(
                "INSERT INTO plans (created_at, start, fallback, solver_status, body) VALUES (?, ?, ?, ?, ?)",
                plans,
            )
            db.executemany("INSERT INTO meter_history VALUES (?, ?, ?, ?, ?, ?)", history)
        end = datetime.fromtimestamp(day_start + DAY, UTC)
        store.purge(end - timedelta(days=400))
        store.thin(end)
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    plans_kept = store._db.execute("SELECT COUNT(*) FROM plans").fetchone()[0]
    store.close()
    return path.stat().st_size, plans_kept, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/var/tmp", help="a directory on the disk to measure (not tmpfs)")
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        for store_type in (Store, FullSyncStore):
            written, elapsed = simulated_day(directory, store_type)
            label = "per-kind durability" if store_type is Store else "every commit synced"
            print(
                f"one day, {label}: wchar {written['wchar'] / 2**20:.1f} MiB, "
                f"write_bytes {written['write_bytes'] / 2**20:.1f} MiB ({elapsed:.1f} s to simulate)"
            )
        size, plans, body = simulated_year(directory, args.days)
        print(
            f"after {args.days} days with housekeeping: {size / 2**20:.1f} MiB ({plans} plans of {body} B kept)"
        )


if __name__ == "__main__":
    main()
