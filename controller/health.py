"""What ``/health`` reports as degraded, and why: a pure function of the daemon's state.

Two questions, kept apart. *Alive*: every task runs and the dispatcher ticked recently; a daemon that
is not alive answers 503 and needs a restart. *Degraded*: alive, but the site is not running as
configured (MQTT down, safe mode, a charger offline, an old plan, stale meters, a fetched price or PV
source failing or late); it still answers 200, because a restart fixes none of these, and lists what
is degraded and why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from controller.config import SiteConfig
    from controller.domain import Plan
    from controller.site_inputs import SiteInputs

__all__ = [
    "CHARGER_OFFLINE_GRACE_S",
    "HealthFacts",
    "chargers_away_s",
    "degradations",
    "gather_facts",
    "health_details",
    "health_status",
]

CHARGER_OFFLINE_GRACE_S = 60.0
"""A configured charger counts as offline once it has been away this long (since the daemon started
or it was last heard from): a charger that reboots or reconnects is not worth an alarm."""


@dataclass(frozen=True, slots=True)
class HealthFacts:
    """What the decision needs, gathered by the daemon at one moment."""

    mqtt_connected: bool
    safe_mode_reasons: Sequence[str]
    """Why the site is in safe mode; empty when it is not."""
    chargers_away_s: Mapping[str, float]
    """Configured chargers not connected now -> seconds since last heard (or since start-up)."""
    plan_age_s: float
    """Seconds since the last plan (since start-up while there is none)."""
    has_plan: bool
    replan_interval_s: float
    stale_meters: Sequence[str]
    """Meters (any role) without a fresh reading, including those already behind safe mode."""
    safe_mode: bool = False
    chargers_connected: int = 0
    last_plan_at: dt.datetime | None = None
    plan_status: str | None = None
    settling_meters: frozenset[str] = frozenset()
    """Meters not heard from yet while the daemon has been up for less than their ``stale_after_s``:
    no reading was due yet, so they are not reported (safe mode holds meanwhile all the same)."""
    source_problems: Sequence[str] = ()
    """Fetched price and PV sources that fail or are late (the plan keeps the last known data)."""
    plan_fallback: bool = False
    """The last plan is the safe fallback schedule, not an optimised one (``plan_status`` says why)."""
    solver_time_limit_s: float | None = None
    """``optimizer.solver_time_limit_s``: named when plans run out of it."""


class _Connection(Protocol):
    @property
    def connected(self) -> bool: ...
    @property
    def last_seen(self) -> dt.datetime | None: ...


def chargers_away_s(
    configured: Iterable[str], live: Mapping[str, _Connection], now: dt.datetime, up_s: float
) -> dict[str, float]:
    """Configured chargers not connected -> seconds since last heard, at most ``up_s`` (the daemon's
    uptime: one never heard from has been away since start-up)."""
    away: dict[str, float] = {}
    for charger_id in configured:
        charger = live.get(charger_id)
        if charger is not None and charger.connected:
            continue
        last = charger.last_seen if charger is not None else None
        away[charger_id] = up_s if last is None else min(up_s, (now - last).total_seconds())
    return away


def degradations(facts: HealthFacts) -> list[dict[str, str]]:
    """``[{"what": ..., "why": ...}]`` for everything degraded; empty when the site runs as configured."""
    found: list[dict[str, str]] = []
    if not facts.mqtt_connected:
        found.append({"what": "mqtt", "why": "not connected to the broker: no meters, prices or commands"})
    safe_mode = [r for r in facts.safe_mode_reasons if not _names_any(r, facts.settling_meters)]
    if safe_mode:
        found.append({"what": "safe_mode", "why": "; ".join(safe_mode)})
    offline = sorted(cid for cid, away_s in facts.chargers_away_s.items() if away_s > CHARGER_OFFLINE_GRACE_S)
    if offline:
        found.append({"what": "chargers", "why": f"configured but offline: {', '.join(offline)}"})
    plan = _plan_problems(facts)
    if plan:
        found.append({"what": "plan", "why": "; ".join(plan)})
    # Site meters are named by safe mode already; the others (vehicle SoC, V2L) only here.
    behind_safe_mode = " ".join(facts.safe_mode_reasons)
    stale = [
        m
        for m in facts.stale_meters
        if f"meter {m} " not in behind_safe_mode and m not in facts.settling_meters
    ]
    if stale:
        found.append({"what": "meters", "why": f"no fresh reading: {', '.join(stale)}"})
    if facts.source_problems:
        found.append({"what": "sources", "why": "; ".join(facts.source_problems)})
    return found


def _plan_problems(facts: HealthFacts) -> list[str]:
    """A plan that is late, or one that is only the safe fallback schedule (and the fix when the
    solver's time budget is what it ran out of: on a large site the default is too short)."""
    problems = []
    if facts.plan_age_s > 2 * facts.replan_interval_s:
        age = f"{facts.plan_age_s:.0f} s"
        why = f"last plan {age} ago" if facts.has_plan else f"no plan {age} after start-up"
        problems.append(f"{why} (more than twice the {facts.replan_interval_s:.0f} s re-plan interval)")
    if facts.has_plan and facts.plan_fallback:
        status = facts.plan_status or "fallback"
        why = f"the safe fallback schedule runs, not an optimised plan ({status})"
        if _ran_out_of_time(status):
            limit = "" if facts.solver_time_limit_s is None else f" (now {facts.solver_time_limit_s:g} s)"
            why += f": the plan needs more time than it has; raise optimizer.solver_time_limit_s{limit}"
        problems.append(why)
    return problems


def _ran_out_of_time(status: str) -> bool:
    """The planner's statuses for a plan cut by its budget: ``fallback: time limit of …`` (used
    up before or between solver passes), ``fallback: solver Time limit reached`` (in the one LP's
    solve, HiGHS's name) and ``fallback: solver kTimeLimit`` (in the decomposition's)."""
    lowered = status.lower()
    return "time limit" in lowered or "timelimit" in lowered


def _names_any(reason: str, meters: frozenset[str]) -> bool:
    return any(f"meter {m} " in reason for m in meters)


def gather_facts(
    cfg: SiteConfig,
    inputs: SiteInputs,
    chargers: Mapping[str, _Connection],
    plan: Plan | None,
    source_problems: Sequence[str] = (),
    *,
    now: dt.datetime,
    up_s: float,
    mqtt_connected: bool,
) -> HealthFacts:
    """The facts from the daemon's parts at ``now``, the daemon up for ``up_s``; ``source_problems``
    from the fetched sources (:mod:`controller.sources.fetcher`)."""
    return HealthFacts(
        mqtt_connected=mqtt_connected,
        safe_mode_reasons=inputs.safe_mode_reasons(now),
        chargers_away_s=chargers_away_s((c.id for c in cfg.chargers), chargers, now, up_s),
        plan_age_s=(now - plan.created_at).total_seconds() if plan is not None else up_s,
        has_plan=plan is not None,
        replan_interval_s=cfg.site.replan_interval_minutes * 60.0,
        stale_meters=inputs.stale_meters(now),
        safe_mode=inputs.safe_mode(now),
        chargers_connected=sum(1 for c in chargers.values() if c.connected),
        last_plan_at=plan.created_at if plan is not None else None,
        plan_status=plan.solver_status if plan is not None else None,
        plan_fallback=plan is not None and plan.fallback,
        solver_time_limit_s=cfg.optimizer.solver_time_limit_s,
        source_problems=tuple(source_problems),
        settling_meters=frozenset(
            m.id for m in cfg.meters if inputs.reading(m.id) is None and up_s <= m.stale_after_s
        ),
    )


def health_status(alive: bool, degraded: Sequence[Mapping[str, str]]) -> str:
    """``unhealthy`` (not alive: 503), ``degraded`` (alive, 200) or ``ok``."""
    if not alive:
        return "unhealthy"
    return "degraded" if degraded else "ok"


def health_details(alive: bool, facts: HealthFacts, **details: Any) -> dict[str, Any]:
    """The ``/health`` body: ``status``, ``degraded``, ``details`` and the facts' summary."""
    degraded = degradations(facts)
    return {
        "status": health_status(alive, degraded),
        "degraded": degraded,
        **details,
        "safe_mode": facts.safe_mode,
        "mqtt_connected": facts.mqtt_connected,
        "chargers_connected": facts.chargers_connected,
        "last_plan_at": facts.last_plan_at,
        "plan_status": facts.plan_status,
    }
