"""Bounded retention: a year of plans and history, thinned with age as housekeeping does, stays small."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.clock import ScaledClock
from controller.persistence import SitePersistence
from controller.site import Site
from controller.store import Store
from tests.test_departures import config
from tests.test_store import sample_plan

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = 86_400
SERIES = ("_home_load", "grid")


def _value(series: str, ts: int) -> float:
    return float(ts // 60 % 1000 + (0 if series == "grid" else 5000))


def _write_day(store: Store, day_start: int, body: str) -> None:
    """One day as the daemon writes it: a plan every 5 minutes, one-minute history buckets."""
    plans = [(day_start + i * 300, day_start, 0, "optimal", body) for i in range(DAY // 300)]
    history = [
        (series, ts, _value(series, ts), _value(series, ts) - 1, _value(series, ts) + 1, 6)
        for series in SERIES
        for ts in range(day_start, day_start + DAY, 60)
    ]
    with store._tx() as db:
        db.executemany(
            "INSERT INTO plans (created_at, start, fallback, solver_status, body) VALUES (?, ?, ?, ?, ?)",
            plans,
        )
        db.executemany("INSERT INTO meter_history VALUES (?, ?, ?, ?, ?, ?)", history)


def _live_bytes(store: Store) -> int:
    row = store._db.execute(
        "SELECT page_count - freelist_count, page_size FROM pragma_page_count, pragma_freelist_count, pragma_page_size"
    ).fetchone()
    return int(row[0] * row[1])


def test_a_year_of_plans_and_history_thinned_daily_stays_within_a_bound(tmp_path: Path) -> None:
    store = Store(tmp_path / "year.sqlite")
    body = json.dumps(json.loads(store_plan_body()), separators=(",", ":"))
    start = int(T0.timestamp())
    try:
        for day in range(365):
            _write_day(store, start + day * DAY, body)
            store.thin(datetime.fromtimestamp(start + (day + 1) * DAY, UTC))
        now = datetime.fromtimestamp(start + 365 * DAY, UTC)
        store.purge(now - timedelta(days=400))
        assert store.thin(now) == 0  # idempotent: nothing more to thin at the same moment
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        plans = dict(
            store._db.execute("SELECT created_at / ?, COUNT(*) FROM plans GROUP BY 1", (DAY,)).fetchall()
        )
        newest_day = start // DAY + 364
        assert plans[newest_day] == plans[newest_day - 1] == 288  # the last two days: every plan
        assert plans[newest_day - 10] == 24  # one per hour up to 30 days
        assert plans[newest_day - 100] == plans[start // DAY] == 1  # then one per day
        assert sum(plans.values()) == 2 * 288 + 28 * 24 + 335
        latest = store._db.execute("SELECT MAX(created_at) FROM plans").fetchone()[0]
        assert latest == start + 365 * DAY - 300
        assert store.latest_plan() is not None

        # The last 14 days: every one-minute bucket, exactly as written.
        recent = store.history("grid", now - timedelta(days=14), now)
        assert len(recent) == 14 * 1440
        assert all(p.mean == _value("grid", int(p.bucket_start.timestamp())) for p in recent)
        # Up to 90 days: five-minute buckets with the sample-weighted mean, minimum and maximum.
        older = store.history("grid", now - timedelta(days=20), now - timedelta(days=19))
        assert len(older) == 288 and {p.samples for p in older} == {30}
        first = older[0]
        minutes = [_value("grid", int(first.bucket_start.timestamp()) + 60 * i) for i in range(5)]
        assert first.mean == pytest.approx(sum(minutes) / 5)
        assert (first.minimum, first.maximum) == (min(minutes) - 1, max(minutes) + 1)
        # Beyond: one-hour buckets.
        oldest = store.history("_home_load", T0, T0 + timedelta(days=1))
        assert len(oldest) == 24 and {p.samples for p in oldest} == {360}

        rows = store._db.execute("SELECT COUNT(*) FROM meter_history").fetchone()[0]
        assert rows == len(SERIES) * (14 * 1440 + 76 * 288 + 275 * 24)
        # Unthinned: 105,120 plans and over a million buckets (over 100 MB with this plan body).
        assert _live_bytes(store) < 8 * 2**20
        assert (tmp_path / "year.sqlite").stat().st_size < 160 * 2**20
    finally:
        store.close()


def test_thinning_keeps_the_forecast_step_means(tmp_path: Path) -> None:
    store = Store(tmp_path / "means.sqlite")
    start = int(T0.timestamp())
    try:
        for day in range(30):
            _write_day(store, start + day * DAY, "{}")
        now = datetime.fromtimestamp(start + 30 * DAY, UTC)
        step = timedelta(minutes=15)
        before = store.history_means("grid", T0, now, step)
        assert store.thin(now) > 0
        after = store.history_means("grid", T0, now, step)
        assert [at for at, _ in after] == [at for at, _ in before]
        assert [v for _, v in after] == pytest.approx([v for _, v in before])
    finally:
        store.close()


def test_housekeeping_purges_and_thins(tmp_path: Path) -> None:
    store = Store(tmp_path / "hk.sqlite")
    start = int(T0.timestamp())
    clock = ScaledClock(datetime.fromtimestamp(start + 20 * DAY, UTC), speed=1000.0)
    persistence = SitePersistence(store, Site(config()), clock)
    try:
        for day in range(20):
            _write_day(store, start + day * DAY, "{}")

        async def run() -> None:
            task = asyncio.create_task(persistence.housekeeping(10.0, 60.0, retention_days=15))
            await asyncio.sleep(0.5)  # 500 s of daemon time: housekeeping ran several times
            task.cancel()

        asyncio.run(run())
        first = int(store._db.execute("SELECT MIN(created_at) FROM plans").fetchone()[0])
        assert first >= start + 5 * DAY  # purged beyond the retention
        assert store._db.execute("SELECT COUNT(*) FROM plans").fetchone()[0] < 2 * 288 + 18 * 24
    finally:
        store.close()


def store_plan_body() -> str:
    """A plan as the daemon stores it (its JSON body)."""
    from controller.plan_record import plan_to_dict

    return json.dumps(plan_to_dict(sample_plan()))
