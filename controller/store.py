"""SQLite persistence: meter history (downsampled), plans, charging sessions, overrides, events.

One file in WAL mode, so a reader (the API, a backup) never blocks the daemon. Durability is per
kind: overrides and sessions are synced to disk before the call returns (``synchronous=FULL`` for
that commit), so an acknowledged driver command or a session is never rolled back, even by a power
loss. Vehicle state, plans, history, events and the housekeeping deletes commit with
``synchronous=NORMAL``: no sync of their own, on disk at the next synced commit or checkpoint; a
power loss may lose the last of them, a crash of the process alone loses none. The schema is
versioned with ``PRAGMA user_version`` and migrated on open. Calls are synchronous and short; the
daemon makes them from one worker thread (:class:`~controller.store_writer.StoreWriter`), off the
event loop. History is batched: ``record_reading`` only adds to buckets in memory (it never
writes), and ``flush_history`` writes them.

Retention is bounded (``thin``): plans are kept all for two days, then one per hour up to 30 days,
then one per day; meter history is kept in its buckets for 14 days, then in five-minute buckets
(the finest plan step, so the forecasts read the same step means) up to 90 days (beyond the longest
forecast history), then in one-hour buckets. ``purge`` drops what is older than the retention.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from controller.domain import Plan, ensure_utc
from controller.history_buckets import Bucket, HistoryBuckets
from controller.plan_record import plan_from_dict, plan_to_dict

__all__ = ["ChargingSession", "HistoryPoint", "Store"]

log = structlog.get_logger("controller.store")

SCHEMA_VERSION = 2
# (age, slot seconds): older than age, one plan per slot is kept (the last one made in it).
PLAN_TIERS: tuple[tuple[timedelta, int], ...] = ((timedelta(days=2), 3600), (timedelta(days=30), 86400))
# (age, bucket seconds): older than age, meter history is merged into buckets of this size.
HISTORY_TIERS: tuple[tuple[timedelta, int], ...] = ((timedelta(days=14), 300), (timedelta(days=90), 3600))
_HISTORY_TABLE = """
CREATE TABLE IF NOT EXISTS meter_history (
    meter_id TEXT NOT NULL,
    bucket_start INTEGER NOT NULL,      -- unix seconds, UTC, aligned to the bucket size
    mean REAL NOT NULL,
    minimum REAL NOT NULL,
    maximum REAL NOT NULL,
    samples INTEGER NOT NULL,
    -- Time first: a flush writes one row per meter for the same minute, all in one page at the
    -- end of the tree (meter first put each meter's row in its own page: six pages per flush).
    PRIMARY KEY (bucket_start, meter_id)
) WITHOUT ROWID"""
_SCHEMA = (
    _HISTORY_TABLE
    + """;
CREATE TABLE IF NOT EXISTS plans (
    id INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    start INTEGER NOT NULL,
    fallback INTEGER NOT NULL,
    solver_status TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS plans_created ON plans(created_at);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    charger_id TEXT NOT NULL,
    vehicle_id TEXT,
    transaction_id TEXT,
    started_at INTEGER NOT NULL,
    stopped_at INTEGER,
    start_energy_wh REAL,
    stop_energy_wh REAL
);
CREATE INDEX IF NOT EXISTS sessions_open ON sessions(charger_id, stopped_at);
CREATE TABLE IF NOT EXISTS overrides (
    vehicle_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (vehicle_id, kind)
);
CREATE TABLE IF NOT EXISTS vehicle_state (
    vehicle_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events(at);
"""
)


def _json_object(text: str, table: str) -> dict[str, Any] | None:
    """A stored JSON object; a damaged row is logged and read as missing, never a crash at start."""
    try:
        body = json.loads(text)
    except ValueError as exc:
        log.warning("store_row_unreadable", table=table, error=str(exc))
        return None
    if not isinstance(body, dict):
        log.warning("store_row_unreadable", table=table, error="not a JSON object")
        return None
    return body


def _ts(moment: datetime) -> int:
    return int(ensure_utc(moment).timestamp())


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _thin_plans(db: sqlite3.Connection, now_s: int) -> int:
    """Keep the last plan per slot of each tier's age range (``PLAN_TIERS``)."""
    removed = 0
    for tier, (age, slot) in enumerate(PLAN_TIERS):
        upper = now_s - int(age.total_seconds())
        lower = now_s - int(PLAN_TIERS[tier + 1][0].total_seconds()) if tier + 1 < len(PLAN_TIERS) else 0
        removed += db.execute(
            "DELETE FROM plans WHERE created_at >= ? AND created_at < ? AND id NOT IN "
            "(SELECT MAX(id) FROM plans WHERE created_at >= ? AND created_at < ? GROUP BY created_at / ?)",
            (lower, upper, lower, upper, slot),
        ).rowcount
    return removed


def _merge_history(db: sqlite3.Connection, since: int, until: int, size: int) -> int:
    """Merge the buckets in [since, until) (multiples of ``size``) into buckets of ``size``."""
    groups = db.execute(
        "SELECT meter_id, bucket_start / ?1 * ?1 AS slot, SUM(mean * samples) / SUM(samples), MIN(minimum), "
        "MAX(maximum), SUM(samples), COUNT(*) FROM meter_history WHERE bucket_start >= ?2 AND bucket_start < ?3 "
        "GROUP BY meter_id, slot HAVING COUNT(*) > 1 OR MIN(bucket_start) <> slot",
        (size, since, until),
    ).fetchall()
    db.executemany(
        "DELETE FROM meter_history WHERE meter_id = ? AND bucket_start >= ? AND bucket_start < ?",
        [(g[0], g[1], g[1] + size) for g in groups],
    )
    db.executemany("INSERT INTO meter_history VALUES (?, ?, ?, ?, ?, ?)", [g[:6] for g in groups])
    return sum(g[6] - 1 for g in groups)


def _merge_buckets(db: sqlite3.Connection, buckets: list[tuple[str, Bucket]]) -> None:
    """Insert the buckets, merged into a row already stored (written in part, or a restart inside it)."""
    rows = [
        (m, b.start, b.total / b.samples, b.minimum, b.maximum, b.samples) for m, b in buckets if b.samples
    ]
    db.executemany(
        """INSERT INTO meter_history VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT(bucket_start, meter_id) DO UPDATE SET
             mean = (mean * samples + excluded.mean * excluded.samples) / (samples + excluded.samples),
             minimum = MIN(minimum, excluded.minimum), maximum = MAX(maximum, excluded.maximum),
             samples = samples + excluded.samples""",
        rows,
    )


def _import_peak(
    db: sqlite3.Connection, meter_id: str, since_s: int, now_s: int, window_s: int, bucket_s: int
) -> tuple[float, float]:
    """Negative buckets count as 0. A window is averaged over the buckets it has (1 minute for the
    last 14 days, 5 minutes up to 90): a meter silent for part of it is not counted as 0 there. The
    open window's energy sums its one-minute buckets."""
    if window_s <= 0:
        raise ValueError("window must be at least one second")
    current_s = now_s // window_s * window_s
    peak = db.execute(
        "SELECT MAX(average) FROM (SELECT bucket_start / ?1 AS slot, AVG(MAX(mean, 0.0)) AS average "
        "FROM meter_history WHERE meter_id = ?2 AND bucket_start >= ?3 AND bucket_start < ?4 GROUP BY slot)",
        (window_s, meter_id, since_s, current_s),
    ).fetchone()[0]
    so_far = db.execute(
        "SELECT SUM(MAX(mean, 0.0)) FROM meter_history WHERE meter_id = ? AND bucket_start >= ? AND bucket_start < ?",
        (meter_id, current_s, now_s),
    ).fetchone()[0]
    return float(peak or 0.0), float(so_far or 0.0) * bucket_s / 3600.0


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    bucket_start: datetime
    mean: float
    minimum: float
    maximum: float
    samples: int


@dataclass(frozen=True, slots=True)
class ChargingSession:
    id: int
    charger_id: str
    vehicle_id: str | None
    transaction_id: str | None
    started_at: datetime
    stopped_at: datetime | None
    start_energy_wh: float | None
    stop_energy_wh: float | None

    @property
    def energy_wh(self) -> float | None:
        if self.start_energy_wh is None or self.stop_energy_wh is None:
            return None
        return self.stop_energy_wh - self.start_energy_wh


class Store:
    """The embedded store. Thread-safe: one connection guarded by a lock."""

    def __init__(self, path: str | Path, *, bucket: timedelta = timedelta(minutes=1)) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._bucket_s = int(bucket.total_seconds())
        if self._bucket_s <= 0:
            raise ValueError("history bucket must be at least one second")
        self._lock = threading.Lock()
        self._buckets = HistoryBuckets(self._bucket_s)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: in WAL mode a commit is not synced, only checkpoints are (a power loss may lose the
        # last commits); ``_tx(durable=True)`` switches to FULL for the commits that must survive one.
        self._db.execute("PRAGMA synchronous=NORMAL")
        # History older than this (unix seconds) is already merged into each tier's buckets.
        self._thinned_until = [0] * len(HISTORY_TIERS)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: store schema {version} is newer than this version understands ({SCHEMA_VERSION}); "
                "upgrade v2x-controller or point storage.path at another file"
            )
        if version == 1:
            with self._tx() as db:  # history keyed meter first: the same rows, keyed time first
                db.execute("ALTER TABLE meter_history RENAME TO meter_history_v1")
                db.execute(_HISTORY_TABLE)
                db.execute("INSERT INTO meter_history SELECT * FROM meter_history_v1")
                db.execute("DROP TABLE meter_history_v1")
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            log.info("store_migrated", path=str(self.path), from_version=1, to_version=SCHEMA_VERSION)
        with self._lock:  # executescript commits on its own: the statements are all idempotent
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _tx(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``durable``: synced to disk (the WAL, and all before it) at COMMIT."""
        with self._lock:
            if durable:  # the level is read at COMMIT; it cannot change inside a transaction
                self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        self.flush_history()
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------- history

    def record_reading(self, meter_id: str, at: datetime, value: float) -> None:
        """Add one reading to its bucket, in memory only: ``flush_history`` writes the buckets."""
        self._buckets.add(meter_id, _ts(at), value)

    def flush_history(self, now: datetime | None = None, *, partial: bool = False) -> int:
        """Write the buckets complete at ``now`` (all open buckets when None); returns how many.

        ``partial`` also writes what the buckets still open hold so far; they stay open and the rest
        of each merges into the stored row when it is written (so a crash loses only what came since).
        """
        done = self._buckets.take(None if now is None else _ts(now), partial=partial)
        self._write_buckets(done)
        return len(done)

    def _write_buckets(self, buckets: list[tuple[str, Bucket]]) -> None:
        if buckets:
            with self._tx() as db:
                _merge_buckets(db, buckets)

    def history(self, meter_id: str, since: datetime, until: datetime) -> list[HistoryPoint]:
        with self._lock:
            rows = self._db.execute(
                "SELECT bucket_start, mean, minimum, maximum, samples FROM meter_history "
                "WHERE meter_id = ? AND bucket_start >= ? AND bucket_start < ? ORDER BY bucket_start",
                (meter_id, _ts(since), _ts(until)),
            ).fetchall()
        return [HistoryPoint(_dt(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    def history_means(
        self, meter_id: str, since: datetime, until: datetime, step: timedelta
    ) -> list[tuple[datetime, float]]:
        """Mean of the stored buckets per ``step`` (aligned to the epoch, so to the hour for steps
        that divide it), as ``(step start, mean)``: what a forecast on the plan grid needs, without
        reading every one-minute bucket of weeks of history into Python."""
        step_s = int(step.total_seconds())
        if step_s <= 0:
            raise ValueError("step must be at least one second")
        with self._lock:
            rows = self._db.execute(
                "SELECT (bucket_start / ?) * ? AS slot, AVG(mean) FROM meter_history "
                "WHERE meter_id = ? AND bucket_start >= ? AND bucket_start < ? GROUP BY slot ORDER BY slot",
                (step_s, step_s, meter_id, _ts(since), _ts(until)),
            ).fetchall()
        return [(_dt(r[0]), float(r[1])) for r in rows]

    def import_peak(
        self, meter_id: str, since: datetime, now: datetime, window: timedelta
    ) -> tuple[float, float]:
        """(the highest window-average import in ``[since, now's window)``, W; the import of now's
        window so far, Wh) from the stored buckets: see :func:`_import_peak`."""
        with self._lock:
            return _import_peak(
                self._db, meter_id, _ts(since), _ts(now), int(window.total_seconds()), self._bucket_s
            )

    def purge(self, older_than: datetime) -> int:
        cutoff = _ts(older_than)
        with self._tx() as db:
            n = db.execute("DELETE FROM meter_history WHERE bucket_start < ?", (cutoff,)).rowcount
            n += db.execute("DELETE FROM plans WHERE created_at < ?", (cutoff,)).rowcount
            n += db.execute("DELETE FROM events WHERE at < ?", (cutoff,)).rowcount
        return n

    def thin(self, now: datetime) -> int:
        """Thin plans and merge meter history into coarser buckets with age; returns rows removed."""
        now_s = _ts(now)
        with self._tx() as db:
            removed = _thin_plans(db, now_s)
            for tier, (age, size) in enumerate(HISTORY_TIERS):
                until = (now_s - int(age.total_seconds())) // size * size
                if size > self._bucket_s and until > self._thinned_until[tier]:
                    removed += _merge_history(db, self._thinned_until[tier], until, size)
                    self._thinned_until[tier] = until
        return removed

    # --------------------------------------------------------------- plans

    def save_plan(self, plan: Plan) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO plans (created_at, start, fallback, solver_status, body) VALUES (?, ?, ?, ?, ?)",
                (
                    _ts(plan.created_at),
                    _ts(plan.start),
                    int(plan.fallback),
                    plan.solver_status,
                    json.dumps(plan_to_dict(plan), separators=(",", ":")),
                ),
            )

    def latest_plan(self) -> Plan | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM plans ORDER BY id DESC LIMIT 1").fetchone()
        return plan_from_dict(json.loads(row[0])) if row else None

    # ------------------------------------------------------------ sessions

    def start_session(
        self,
        charger_id: str,
        started_at: datetime,
        *,
        vehicle_id: str | None = None,
        transaction_id: str | None = None,
        start_energy_wh: float | None = None,
    ) -> int:
        """Open a session; an open session on the same charger is closed first (a missed stop)."""
        with self._tx(durable=True) as db:
            db.execute(
                "UPDATE sessions SET stopped_at = ? WHERE charger_id = ? AND stopped_at IS NULL",
                (_ts(started_at), charger_id),
            )
            cursor = db.execute(
                "INSERT INTO sessions (charger_id, vehicle_id, transaction_id, started_at, start_energy_wh) "
                "VALUES (?, ?, ?, ?, ?)",
                (charger_id, vehicle_id, transaction_id, _ts(started_at), start_energy_wh),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def stop_session(
        self, charger_id: str, stopped_at: datetime, stop_energy_wh: float | None = None
    ) -> bool:
        with self._tx(durable=True) as db:
            n = db.execute(
                "UPDATE sessions SET stopped_at = ?, stop_energy_wh = ? WHERE charger_id = ? AND stopped_at IS NULL",
                (_ts(stopped_at), stop_energy_wh, charger_id),
            ).rowcount
        return n > 0

    def open_sessions(self) -> list[ChargingSession]:
        return self._sessions("WHERE stopped_at IS NULL ORDER BY id")

    def sessions(self, limit: int = 100) -> list[ChargingSession]:
        return self._sessions("ORDER BY id DESC LIMIT ?", (limit,))

    def _sessions(self, clause: str, params: tuple[Any, ...] = ()) -> list[ChargingSession]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, charger_id, vehicle_id, transaction_id, started_at, stopped_at, start_energy_wh, "
                f"stop_energy_wh FROM sessions {clause}",
                params,
            ).fetchall()
        return [
            ChargingSession(
                r[0], r[1], r[2], r[3], _dt(r[4]), _dt(r[5]) if r[5] is not None else None, r[6], r[7]
            )
            for r in rows
        ]

    # ----------------------------------------------------------- overrides

    def set_override(
        self,
        vehicle_id: str,
        kind: str,
        body: dict[str, Any],
        at: datetime,
        expires_at: datetime | None = None,
    ) -> None:
        with self._tx(durable=True) as db:
            db.execute(
                "INSERT INTO overrides VALUES (?, ?, ?, ?, ?) ON CONFLICT(vehicle_id, kind) DO UPDATE SET "
                "body = excluded.body, updated_at = excluded.updated_at, expires_at = excluded.expires_at",
                (vehicle_id, kind, json.dumps(body), _ts(at), _ts(expires_at) if expires_at else None),
            )

    def save_overrides(
        self, vehicle_id: str, bodies: Mapping[str, dict[str, Any]], cleared: Iterable[str], at: datetime
    ) -> None:
        """A vehicle's overrides by kind set and the ``cleared`` kinds removed, in one synced commit:
        what a driver command changed is on disk entirely or not at all."""
        with self._tx(durable=True) as db:
            db.executemany(
                "INSERT INTO overrides VALUES (?, ?, ?, ?, NULL) ON CONFLICT(vehicle_id, kind) DO UPDATE SET "
                "body = excluded.body, updated_at = excluded.updated_at, expires_at = NULL",
                [(vehicle_id, kind, json.dumps(body), _ts(at)) for kind, body in bodies.items()],
            )
            db.executemany(
                "DELETE FROM overrides WHERE vehicle_id = ? AND kind = ?", [(vehicle_id, k) for k in cleared]
            )

    def overrides(self, now: datetime) -> dict[tuple[str, str], dict[str, Any]]:
        """Overrides still in force at ``now``, by (vehicle id, kind)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT vehicle_id, kind, body FROM overrides WHERE expires_at IS NULL OR expires_at > ?",
                (_ts(now),),
            ).fetchall()
        return {(r[0], r[1]): body for r in rows if (body := _json_object(r[2], "overrides")) is not None}

    # -------------------------------------------------------- vehicle state

    def save_vehicle_state(self, vehicle_id: str, body: dict[str, Any], at: datetime) -> None:
        self.save_vehicle_states({vehicle_id: body}, at)

    def save_vehicle_states(self, bodies: Mapping[str, dict[str, Any]], at: datetime) -> None:
        """Vehicles' states in one commit. Not synced: the next SoC reading and the charger's own
        report restore what a power loss takes back; a process crash loses nothing."""
        if not bodies:
            return
        with self._tx() as db:
            db.executemany(
                "INSERT INTO vehicle_state VALUES (?, ?, ?) ON CONFLICT(vehicle_id) DO UPDATE SET "
                "body = excluded.body, updated_at = excluded.updated_at",
                [(vehicle_id, json.dumps(body), _ts(at)) for vehicle_id, body in bodies.items()],
            )

    def vehicle_states(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT vehicle_id, body FROM vehicle_state").fetchall()
        return {r[0]: body for r in rows if (body := _json_object(r[1], "vehicle_state")) is not None}

    # ---------------------------------------------------------------- events

    def log_event(self, kind: str, at: datetime, **body: Any) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO events (at, kind, body) VALUES (?, ?, ?)",
                (_ts(at), kind, json.dumps(body, default=str)),
            )

    def events(self, kind: str | None = None, limit: int = 100) -> list[tuple[datetime, str, dict[str, Any]]]:
        query = "SELECT at, kind, body FROM events"
        params: tuple[Any, ...] = ()
        if kind is not None:
            query += " WHERE kind = ?"
            params = (kind,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
        return [(_dt(r[0]), r[1], json.loads(r[2])) for r in rows]
