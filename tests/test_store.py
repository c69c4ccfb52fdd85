"""SQLite store on real files: history, plans, sessions, overrides, survival across reopen."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.clock import ManualClock
from controller.commands import SetDeparture
from controller.domain import BatteryPlan, Departure, Plan, VehiclePlan
from controller.persistence import SitePersistence
from controller.site import Site
from controller.site_events import SiteEvents
from controller.store import Store
from tests.test_departures import at, config

T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)


def sample_plan(created: datetime = T0) -> Plan:
    return Plan(
        created_at=created,
        start=T0,
        step=timedelta(minutes=15),
        vehicles={
            "ev": VehiclePlan(
                "ev", (-3200.44, 0.0), (60.0, 58.96, 58.96), "discharging", 0.0, 0.8, (500.0, 0.0)
            )
        },
        grid_import_w=(0.0, 400.0),
        grid_export_w=(0.0, 0.0),
        import_price_per_kwh=(0.41, 0.30),
        export_price_per_kwh=(0.11, 0.10),
        solver_status="optimal",
        solve_time_ms=2.5,
        import_cost=0.03,
        objective=1.25,
    )


def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "v2x.sqlite")
    store.close()
    db = sqlite3.connect(tmp_path / "v2x.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2


def test_a_version_1_store_is_migrated_with_its_history(tmp_path: Path) -> None:
    """Version 1 keyed history meter first; version 2 keys it time first, with the same rows."""
    path = tmp_path / "v2x.sqlite"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE meter_history (meter_id TEXT NOT NULL, bucket_start INTEGER NOT NULL, "
            "mean REAL NOT NULL, minimum REAL NOT NULL, maximum REAL NOT NULL, samples INTEGER NOT NULL, "
            "PRIMARY KEY (meter_id, bucket_start)) WITHOUT ROWID"
        )
        start = int(T0.timestamp())
        old.executemany(
            "INSERT INTO meter_history VALUES (?, ?, ?, ?, ?, ?)",
            [(m, start + 60 * i, 10.0 * i, 0.0, 20.0 * i, 60) for m in ("grid", "pv") for i in range(3)],
        )
        old.execute("PRAGMA user_version=1")
    old.close()
    store = Store(path)
    assert [p.mean for p in store.history("pv", T0, T0 + timedelta(hours=1))] == [0.0, 10.0, 20.0]
    store.record_reading("grid", T0 + timedelta(minutes=2, seconds=5), 80.0)
    store.flush_history()  # merges into the migrated row
    assert store.history("grid", T0, T0 + timedelta(hours=1))[-1].samples == 61
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    (ddl,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'meter_history'").fetchone()
    assert "PRIMARY KEY (bucket_start, meter_id)" in ddl
    assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'meter_history_v1'").fetchone()[0] == 0


def _commit_levels(store: Store) -> list[tuple[str, str]]:
    """(table written, ``PRAGMA synchronous`` in force) for each commit from now on."""
    commits: list[tuple[str, str]] = []
    state = {"level": store._db.execute("PRAGMA synchronous").fetchone()[0], "table": ""}

    def trace(sql: str) -> None:
        words = sql.split()
        head = words[0].upper() if words else ""
        if head == "PRAGMA" and sql.replace(" ", "").lower().startswith("pragmasynchronous="):
            state["level"] = sql.split("=")[1].strip().upper()
        elif head in ("INSERT", "UPDATE", "DELETE") and not state["table"]:
            upper = [w.upper() for w in words]
            state["table"] = words[
                upper.index("INTO" if head == "INSERT" else ("FROM" if head == "DELETE" else "UPDATE")) + 1
            ]
        elif head == "COMMIT":
            commits.append((state["table"], str(state["level"])))
            state["table"] = ""

    store._db.set_trace_callback(trace)
    return commits


def test_what_must_survive_a_power_loss_is_synced_the_rest_is_not(tmp_path: Path) -> None:
    # In WAL mode NORMAL (1) may roll back the last commits on a power loss; FULL (2) syncs each one.
    store = Store(tmp_path / "v2x.sqlite")
    try:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1
        commits = _commit_levels(store)
        store.set_override("ev", "mode", {"mode": "fast"}, T0)
        store.save_overrides("ev", {}, ["v2l"], T0)
        store.save_vehicle_state("ev", {"soc": 50}, T0)
        store.start_session("cp1", T0, transaction_id="t1")
        store.stop_session("cp1", T0 + timedelta(hours=1))
        store.save_plan(sample_plan())
        store.record_reading("grid", T0, 1.0)
        store.flush_history()
        store.log_event("signal", T0, signal="prices")
        store.purge(T0 - timedelta(days=400))
        store.thin(T0)
        store._db.set_trace_callback(None)
        durable = {"overrides", "sessions"}
        assert [level for table, level in commits if table in durable] == ["FULL"] * 4
        assert {table for table, level in commits if level != "FULL"} >= {
            "plans",
            "meter_history",
            "events",
            "vehicle_state",
        }
        assert all(level in ("1", "NORMAL") for table, level in commits if table not in durable)
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # back to NORMAL after each
    finally:
        store.close()


def test_a_driver_command_is_synced_before_it_is_acknowledged(tmp_path: Path) -> None:
    """The MQTT reply goes out when the command handler returns; the handler waits for the override's
    write (tests/test_store_writer.py), which is one synced commit."""
    store = Store(tmp_path / "v2x.sqlite")
    site = Site(config())
    now = at(0, 19)
    SiteEvents(site).command(SetDeparture("car", Departure(at(1, 9), 75.0)), now)
    commits = _commit_levels(store)
    persistence = SitePersistence(store, site, ManualClock(now))
    persistence.save_overrides(site.vehicles["car"]).result(timeout=10)
    store._db.set_trace_callback(None)
    persistence.close()
    assert commits[0] == ("overrides", "FULL")
    assert all(level == "FULL" for table, level in commits if table == "overrides")


def test_newer_schema_is_refused_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "v2x.sqlite"
    sqlite3.connect(path).execute("PRAGMA user_version=99")
    with pytest.raises(RuntimeError, match="newer than this version"):
        Store(path)


def test_history_is_downsampled_into_buckets(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    for second, value in [(0, 100.0), (20, 300.0), (59, 200.0), (61, 1000.0)]:
        store.record_reading("grid", T0 + timedelta(seconds=second), value)
    store.record_reading("grid", T0 + timedelta(seconds=30), float("nan"))
    store.record_reading("grid", T0 + timedelta(seconds=10), 5.0)  # late for a closed bucket: dropped
    assert store.history("grid", T0, T0 + timedelta(hours=1)) == []  # recording never writes
    assert store.flush_history(now=T0 + timedelta(seconds=90)) == 1  # the second bucket is still open
    points = store.history("grid", T0, T0 + timedelta(hours=1))
    assert [(p.mean, p.minimum, p.maximum, p.samples) for p in points] == [(200.0, 100.0, 300.0, 3)]
    assert store.flush_history(now=T0 + timedelta(seconds=120)) == 1
    assert len(store.history("grid", T0, T0 + timedelta(hours=1))) == 2


def test_a_partial_flush_writes_the_open_bucket_and_the_rest_merges_into_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.record_reading("grid", T0, 100.0)
    store.record_reading("grid", T0 + timedelta(seconds=10), 300.0)
    assert store.flush_history(T0 + timedelta(seconds=15)) == 0  # nothing complete yet
    assert store.flush_history(T0 + timedelta(seconds=15), partial=True) == 1
    points = store.history("grid", T0, T0 + timedelta(hours=1))
    assert [(p.mean, p.minimum, p.maximum, p.samples) for p in points] == [(200.0, 100.0, 300.0, 2)]
    assert store.flush_history(T0 + timedelta(seconds=16), partial=True) == 0  # nothing new
    store.record_reading("grid", T0 + timedelta(seconds=5), 50.0)  # still the open minute
    store.record_reading("grid", T0 + timedelta(seconds=40), 1000.0)
    store.record_reading("grid", T0 + timedelta(seconds=70), 7.0)  # the next minute
    assert store.flush_history(T0 + timedelta(seconds=75)) == 1
    (first,) = store.history("grid", T0, T0 + timedelta(minutes=1))
    assert (first.mean, first.minimum, first.maximum, first.samples) == (362.5, 50.0, 1000.0, 4)
    store.close()  # the open second minute is written on the way out
    again = Store(tmp_path / "s.sqlite")
    assert [p.samples for p in again.history("grid", T0, T0 + timedelta(hours=1))] == [4, 1]
    again.close()


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.record_reading("pv", T0, -1500.0)
    battery = BatteryPlan("house", True, (2500.0, -1000.04), (50.0, 53.0, 51.9), "charging from PV")
    store.save_plan(dataclasses.replace(sample_plan(), batteries={"house": battery}))
    session = store.start_session("wb", T0, vehicle_id="ev", transaction_id="tx1", start_energy_wh=1000.0)
    store.set_override("ev", "departure", {"at": "2026-11-25T06:30:00+00:00", "target_soc_percent": 90}, T0)
    store.set_override("ev", "mode", {"mode": "charge_now"}, T0, expires_at=T0 + timedelta(hours=1))
    store.save_vehicle_state("ev", {"soc_percent": 61.5, "plugged_in": True}, T0)
    store.log_event("plan", T0, status="optimal")
    store.close()  # flushes the open history bucket

    again = Store(path)
    assert again.history("pv", T0, T0 + timedelta(minutes=1))[0].mean == -1500.0
    restored = again.latest_plan()
    assert restored is not None
    assert restored.vehicles["ev"].power_w == (-3200.4, 0.0)  # stored to 0.1 W
    assert restored.vehicles["ev"].v2l_power_w == (500.0, 0.0) and restored.objective == 1.25
    assert restored.start == T0 and restored.step == timedelta(minutes=15) and restored.import_cost == 0.03
    # A restored plan keeps its battery setpoints (a restart does not leave the battery in auto).
    assert restored.batteries["house"] == dataclasses.replace(battery, power_w=(2500.0, -1000.0))
    [open_session] = again.open_sessions()
    assert open_session.id == session and open_session.transaction_id == "tx1"
    assert again.overrides(T0 + timedelta(minutes=30)).keys() == {("ev", "departure"), ("ev", "mode")}
    assert again.overrides(T0 + timedelta(hours=2)).keys() == {("ev", "departure")}
    assert again.vehicle_states()["ev"]["soc_percent"] == 61.5
    assert again.events("plan")[0][2] == {"status": "optimal"}
    assert again.stop_session("wb", T0 + timedelta(hours=1), stop_energy_wh=8000.0)
    assert again.sessions()[0].energy_wh == 7000.0
    assert not again.stop_session("wb", T0 + timedelta(hours=2))
    again.close()


def test_new_session_closes_a_missed_stop(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.start_session("wb", T0)
    store.start_session("wb", T0 + timedelta(hours=3))
    sessions = store.sessions()
    assert len(sessions) == 2 and sessions[1].stopped_at == T0 + timedelta(hours=3)
    assert len(store.open_sessions()) == 1


def test_purge_drops_old_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.record_reading("grid", T0 - timedelta(days=500), 1.0)
    store.record_reading("grid", T0, 2.0)
    store.flush_history()
    store.save_plan(sample_plan(created=T0 - timedelta(days=500)))
    assert store.purge(T0 - timedelta(days=400)) == 2
    assert [p.mean for p in store.history("grid", T0 - timedelta(days=600), T0 + timedelta(days=1))] == [2.0]


def test_what_was_written_survives_a_crash_without_close(tmp_path: Path) -> None:
    """kill -9: no close. Everything but the history recorded since the last flush is on disk."""
    path = tmp_path / "s.sqlite"
    crashed = Store(path)
    crashed.record_reading("grid", T0, 100.0)
    crashed.record_reading("grid", T0 + timedelta(minutes=1), 300.0)  # closes the first minute
    crashed.flush_history(T0 + timedelta(minutes=1, seconds=10))  # as the daemon does, from a thread
    crashed.record_reading("grid", T0 + timedelta(minutes=1, seconds=20), 500.0)
    crashed.start_session("wb", T0, transaction_id="tx1")
    crashed.set_override("ev", "mode", {"mode": "no_discharge"}, T0)
    crashed.save_vehicle_state("ev", {"soc_percent": 44.0}, T0)
    # A second connection while the first is never closed: what a restarted daemon sees.
    again = Store(path)
    assert [p.mean for p in again.history("grid", T0, T0 + timedelta(hours=1))] == [100.0]  # minute 2 lost
    assert [s.transaction_id for s in again.open_sessions()] == ["tx1"]
    assert again.overrides(T0) == {("ev", "mode"): {"mode": "no_discharge"}}
    assert again.vehicle_states() == {"ev": {"soc_percent": 44.0}}
    again.close()


def test_damaged_rows_read_as_missing_not_as_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.set_override("ev", "mode", {"mode": "auto"}, T0)
    store.save_vehicle_state("ev", {"soc_percent": 50.0}, T0)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO overrides VALUES ('ev', 'weekly', '{broken', 0, NULL)")
        db.execute("INSERT INTO overrides VALUES ('ev', 'v2l', '[1, 2]', 0, NULL)")
        db.execute("INSERT INTO vehicle_state VALUES ('van', 'null', 0)")
    assert store.overrides(T0) == {("ev", "mode"): {"mode": "auto"}}
    assert store.vehicle_states() == {"ev": {"soc_percent": 50.0}}
    store.close()


def test_plans_are_written_with_utc_z_times_and_older_ones_are_still_read(tmp_path: Path) -> None:
    import json

    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.save_plan(sample_plan())
    with sqlite3.connect(path) as db:
        (body,) = db.execute("SELECT body FROM plans").fetchone()
    stored = json.loads(body)
    assert stored["created_at"] == "2026-11-24T17:00:00Z" and stored["start"].endswith("Z")
    # The form earlier versions wrote, without the fields added since (V2L power per step).
    older = {
        **stored,
        "created_at": "2026-11-24T18:00:00+01:00",
        "start": stored["start"].replace("Z", "+00:00"),
        "vehicles": {
            vid: {k: v for k, v in vp.items() if k != "v2l_power_w"} for vid, vp in stored["vehicles"].items()
        },
    }
    with sqlite3.connect(path) as db:
        db.execute("UPDATE plans SET body = ?", (json.dumps(older),))
    restored = store.latest_plan()
    assert restored is not None and restored.created_at == T0 and restored.vehicles["ev"].v2l_power_w == ()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE plans SET body = ?", (json.dumps({**stored, "start": "tomorrow"}),))
    with pytest.raises(ValueError):  # logged and skipped by the daemon
        store.latest_plan()
    store.close()


def test_the_early_departure_history_and_plug_times_survive_a_restart(tmp_path: Path) -> None:
    site = Site(config())
    site.set_plugged("wb", True, at(-1, 20))
    site.set_plugged("wb", False, at(0, 6, 40))  # Monday's 07:00 departure, 20 min early
    site.set_plugged("wb", True, at(0, 18))
    now = at(0, 19)
    SiteEvents(site).command(SetDeparture("car", Departure(at(1, 9), 75.0)), now)
    car = site.vehicles["car"]
    store = Store(tmp_path / "v2x.sqlite")
    SitePersistence(store, site, ManualClock(now)).save_vehicles()
    store.close()

    reopened = Store(tmp_path / "v2x.sqlite")
    again = Site(config())
    SitePersistence(reopened, again, ManualClock(now)).restore()
    back = again.vehicles["car"]
    assert back.departures_seen == car.departures_seen and len(back.departures_seen) == 1
    assert back.departures_seen[0].early == timedelta(minutes=20)
    assert (back.plugged_at, back.announced_at) == (at(0, 18), now)

    # A store written before these were kept still loads: no history, plugged in since unknown.
    reopened.save_vehicle_state("car", {"plugged_in": True, "charger_id": "wb", "soc_percent": 61.5}, now)
    older = Site(config())
    SitePersistence(reopened, older, ManualClock(now)).restore()
    old = older.vehicles["car"]
    assert (
        old.plugged_in and old.departures_seen == () and old.plugged_at is None and old.announced_at is None
    )
    reopened.close()
