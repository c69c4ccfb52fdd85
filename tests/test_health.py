"""``/health``: alive (200 / 503) kept apart from degraded (what and why), from the pure decision to a
running daemon and ``v2x health``."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from highspy import HighsModelStatus

from controller.health import (
    CHARGER_OFFLINE_GRACE_S,
    HealthFacts,
    chargers_away_s,
    degradations,
    health_details,
)
from tests.chaos_support import http_get
from tests.daemon_support import (
    V2X,
    MeterFeed,
    broker,
    charger,
    free_port,
    make_site,
    running_daemon,
)

FINE = HealthFacts(
    mqtt_connected=True,
    safe_mode_reasons=(),
    chargers_away_s={},
    plan_age_s=10.0,
    has_plan=True,
    replan_interval_s=300.0,
    stale_meters=(),
)


def whats(facts: HealthFacts) -> list[str]:
    return [d["what"] for d in degradations(facts)]


def test_a_site_running_as_configured_is_ok() -> None:
    assert degradations(FINE) == []
    body = health_details(True, FINE, stopped_tasks=[])
    assert body["status"] == "ok" and body["degraded"] == [] and body["stopped_tasks"] == []


def test_each_degradation_says_why() -> None:
    facts = replace(
        FINE,
        mqtt_connected=False,
        safe_mode_reasons=("meter grid (grid) is stale",),
        chargers_away_s={"wb2": CHARGER_OFFLINE_GRACE_S + 1, "wb1": 5.0},
        plan_age_s=601.0,
        stale_meters=("grid", "car-soc"),
    )
    found = {d["what"]: d["why"] for d in degradations(facts)}
    assert list(found) == ["mqtt", "safe_mode", "chargers", "plan", "meters"]
    assert "broker" in found["mqtt"]
    assert found["safe_mode"] == "meter grid (grid) is stale"
    assert found["chargers"] == "configured but offline: wb2"  # wb1 is within its grace
    assert "601 s" in found["plan"] and "300 s" in found["plan"]
    assert found["meters"] == "no fresh reading: car-soc"  # grid is named by safe mode already
    body = health_details(True, facts)
    assert body["status"] == "degraded" and len(body["degraded"]) == 5
    assert health_details(False, facts)["status"] == "unhealthy"


def test_plan_age_limit_is_twice_the_replan_interval() -> None:
    assert whats(replace(FINE, plan_age_s=600.0)) == []
    assert whats(replace(FINE, plan_age_s=600.5)) == ["plan"]
    none_yet = degradations(replace(FINE, plan_age_s=700.0, has_plan=False))
    assert "no plan" in none_yet[0]["why"]


def test_a_fallback_plan_is_degraded_and_one_out_of_time_names_the_budget() -> None:
    from benchmarks.bench_optimizer import World, site_config
    from controller.optimizer import Planner
    from controller.optimizer.lp_solve import new_highs

    assert whats(replace(FINE, plan_status="optimal")) == []
    # The planner's own statuses for a plan that ran out of its budget: before a solve (a real
    # planner with no time at all), in the one LP's solve (HiGHS's name) and in a decomposed one.
    planner = Planner(site_config(1), 96, time_limit_s=1e-9)
    out_of_time = planner.plan(World(1, seed=1).snapshot(0))
    assert out_of_time.fallback
    highs_name = new_highs().modelStatusToString(HighsModelStatus.kTimeLimit)
    for status in (
        out_of_time.solver_status,
        f"fallback: solver {highs_name}",
        "fallback: solver kTimeLimit",
    ):
        facts = replace(FINE, plan_fallback=True, plan_status=status, solver_time_limit_s=2.0)
        [entry] = degradations(facts)
        assert entry["what"] == "plan"
        assert entry["why"].startswith(f"the safe fallback schedule runs, not an optimised plan ({status})")
        assert entry["why"].endswith("raise optimizer.solver_time_limit_s (now 2 s)")
    other = degradations(replace(FINE, plan_fallback=True, plan_status="fallback: model error: x"))
    assert other == [
        {
            "what": "plan",
            "why": "the safe fallback schedule runs, not an optimised plan (fallback: model error: x)",
        }
    ]
    # A late fallback plan: one entry with both reasons.
    late = degradations(
        replace(FINE, plan_age_s=700.0, plan_fallback=True, plan_status="fallback: direction")
    )
    assert [d["what"] for d in late] == ["plan"]
    assert "700 s ago" in late[0]["why"] and "; the safe fallback schedule runs" in late[0]["why"]


def test_meters_not_due_yet_after_start_up_are_not_reported() -> None:
    settling = replace(
        FINE,
        safe_mode_reasons=("meter grid (grid) is stale",),
        stale_meters=("grid", "car-soc"),
        settling_meters=frozenset({"grid", "car-soc"}),
    )
    assert degradations(settling) == []
    one_due = replace(settling, settling_meters=frozenset({"car-soc"}))
    assert whats(one_due) == ["safe_mode"]


@dataclass
class _Conn:
    connected: bool
    last_seen: dt.datetime | None


def test_chargers_away_since_last_heard_or_start_up() -> None:
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    live = {
        "up": _Conn(True, now - dt.timedelta(seconds=500)),
        "gone": _Conn(False, now - dt.timedelta(seconds=90)),
        "silent": _Conn(False, None),
    }
    away = chargers_away_s(["up", "gone", "silent", "never"], live, now, up_s=120.0)
    assert away == {"gone": 90.0, "silent": 120.0, "never": 120.0}


# ------------------------------------------------------------------------- the daemon


def v2x_health(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(V2X), "health", "--config", str(config)], capture_output=True, text=True, timeout=30
    )


async def test_mqtt_down_is_degraded_but_still_answers_200(tmp_path: Path) -> None:
    site = make_site(tmp_path, "health-mqtt")
    site.tree["mqtt"]["port"] = free_port()  # nothing listens there
    api_port = free_port()
    site.tree["api"] = {"enabled": True, "host": "127.0.0.1", "port": api_port}
    async with running_daemon(site, ready=False) as daemon:
        await daemon.wait_log("daemon_started")
        await daemon.wait_log("mqtt_disconnected")
        status, health = await http_get(api_port, "/health")
        assert status == 200 and health["status"] == "degraded", health
        assert "mqtt" in [d["what"] for d in health["degraded"]]
        health = await health_when(api_port, lambda h: len(h["degraded"]) >= 2)
        found = {d["what"]: d["why"] for d in health["degraded"]}
        assert list(found) == ["mqtt", "safe_mode"]
        assert "meter grid (grid) is stale" in found["safe_mode"]
        assert health["stopped_tasks"] == [] and health["mqtt_connected"] is False
        probe = await asyncio.to_thread(v2x_health, site.config_path)
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.startswith("degraded:") and "mqtt: not connected" in probe.stdout


async def health_when(
    port: int, check: Callable[[dict[str, Any]], bool], timeout_s: float = 8.0
) -> dict[str, Any]:
    """The first 200 ``/health`` answer that passes ``check``."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, health = await http_get(port, "/health")
        assert status == 200, health
        if check(health):
            return health
        assert time.monotonic() < deadline, health
        await asyncio.sleep(0.05)


async def test_safe_mode_is_degraded_with_its_reason_then_ok_once_everything_is_up(tmp_path: Path) -> None:
    site = make_site(tmp_path, "health-safe")
    api_port = free_port()
    site.tree["api"] = {"enabled": True, "host": "127.0.0.1", "port": api_port}
    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with running_daemon(site):
                # The grid meter was never heard from: once its stale_after_s (3 s) has passed since
                # start-up, safe mode is reported with its reason.
                health = await health_when(api_port, lambda h: h["status"] == "degraded")
                assert health["degraded"] == [{"what": "safe_mode", "why": "meter grid (grid) is stale"}]
                assert health["safe_mode"] is True and health["mqtt_connected"] is True

                async with MeterFeed(mqtt) as meters, charger(site.ocpp_port):
                    meters.set(site.topic("meter/grid"), 400.0)
                    await meters.publish_now()
                    health = await health_when(api_port, lambda h: h["status"] == "ok")
                    assert health["degraded"] == [] and health["chargers_connected"] == 1
                    probe = await asyncio.to_thread(v2x_health, site.config_path)
                    assert probe.returncode == 0 and probe.stdout.startswith("healthy:"), probe
        finally:
            await mqtt.clear_retained(site.prefix)


async def test_a_site_whose_plans_run_out_of_time_says_so_and_how_to_fix_it(tmp_path: Path) -> None:
    site = make_site(tmp_path, "health-budget")
    site.tree["optimizer"] = {"solver_time_limit_s": 1e-6}
    api_port = free_port()
    site.tree["api"] = {"enabled": True, "host": "127.0.0.1", "port": api_port}
    async with broker(f"{site.base}/#") as mqtt:
        try:
            async with running_daemon(site), MeterFeed(mqtt) as meters, charger(site.ocpp_port):
                meters.set(site.topic("meter/grid"), 400.0)
                await meters.publish_now()
                health = await health_when(
                    api_port, lambda h: any(d["what"] == "plan" for d in h["degraded"]), timeout_s=20.0
                )
                [entry] = [d for d in health["degraded"] if d["what"] == "plan"]
                assert "the safe fallback schedule runs" in entry["why"], entry
                assert entry["why"].endswith("raise optimizer.solver_time_limit_s (now 1e-06 s)"), entry
                probe = await asyncio.to_thread(v2x_health, site.config_path)
                assert probe.returncode == 0 and "raise optimizer.solver_time_limit_s" in probe.stdout, probe
        finally:
            await mqtt.clear_retained(site.prefix)
