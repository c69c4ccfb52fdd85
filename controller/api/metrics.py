"""Prometheus metrics of the daemon, in a registry of its own (never the global one).

Two kinds, kept apart:

* **Events**, counted as they happen: each plan (:meth:`DaemonMetrics.observe_plan`), each profile
  outcome (:meth:`DaemonMetrics.observe_profile`), each OCPP message and error
  (:meth:`DaemonMetrics.count_message`, :meth:`DaemonMetrics.count_error`); the daemon calls these.
* **State**, read at scrape time: a collector calls the ``sample`` function (for the daemon,
  :func:`daemon_sample`) and turns the :class:`MetricsSample` into gauges, so a gauge is never older
  than the scrape. A value the daemon does not know (a stale meter, no SoC reading, no plan yet) is
  left out, never exported as 0.

:meth:`DaemonMetrics.render` gives the exposition text and its content type for an HTTP handler. It
reads the daemon's state, so call it on the daemon's event loop (the HTTP API runs there).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeGuard

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from controller.views import charger_statuses, site_flows

if TYPE_CHECKING:
    import datetime as dt

    from controller.app import Daemon
    from controller.domain import Plan
    from controller.ocpp.rpc import FrameCounts

__all__ = [
    "PLAN_SOLVE_BUCKETS_S",
    "DaemonMetrics",
    "MessageDirection",
    "MetricsSample",
    "VehicleSample",
    "daemon_sample",
    "sample_families",
]

log = structlog.get_logger("controller.api.metrics")

PLAN_SOLVE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Histogram buckets of the solve time: 1 ms (a trivial fallback) to 10 s (a solver near its limit)."""

MessageDirection = Literal["received", "sent"]
"""An OCPP message as the CSMS sees it: received from the charger, or sent to it."""


@dataclass(frozen=True, slots=True)
class VehicleSample:
    """One vehicle at scrape time; None: unknown."""

    vehicle_id: str
    plugged_in: bool
    soc_percent: float | None = None
    """SoC anchored on a real reading (an estimate counts as unknown, as in the published state)."""
    power_w: float | None = None
    """Measured at its charger: + charging the car, - discharging; None when no recent sample."""


@dataclass(frozen=True, slots=True)
class MetricsSample:
    """What the gauges show, read from the daemon at one moment; None: unknown, not exported."""

    grid_power_w: float | None = None
    """+ import, - export."""
    pv_power_w: float | None = None
    home_power_w: float | None = None
    vehicles_power_w: float | None = None
    """Sum of the vehicles' measured power (those with a recent sample)."""
    vehicles: tuple[VehicleSample, ...] = ()
    chargers_connected: Mapping[str, bool] = field(default_factory=dict)
    """Every configured (or accepted unknown) charger -> connected now."""
    meters_stale: Mapping[str, bool] = field(default_factory=dict)
    """Every configured meter -> True when it has no fresh reading."""
    safe_mode: bool | None = None
    mqtt_connected: bool | None = None
    degraded: bool | None = None
    """``/health`` lists something as degraded (see :mod:`controller.health`)."""
    plan_age_s: float | None = None
    """Seconds since the current plan was made; None while there is none."""
    mqtt_messages_accepted: int | None = None
    mqtt_messages_rejected: int | None = None

    @property
    def stale_meters(self) -> int:
        """How many meters have no fresh reading."""
        return sum(1 for stale in self.meters_stale.values() if stale)


def daemon_sample(daemon: Daemon, now: dt.datetime | None = None) -> MetricsSample:
    """The daemon's state at ``now`` (default: its clock's now), from the same views it publishes."""
    now = now if now is not None else daemon.clock.now()
    site, inputs, plan = daemon.site, daemon.inputs, daemon.plan
    flows = site_flows(site, now)
    vehicles = tuple(
        VehicleSample(
            vehicle_id=vehicle.config.id,
            plugged_in=vehicle.plugged_in,
            soc_percent=site.measured_soc(vehicle),
            power_w=site.measured_power_w(vehicle, now),
        )
        for vehicle in site.vehicles.values()
    )
    chargers = {c.charger_id: c.connected for c in charger_statuses(daemon.cfg, daemon.ocpp.chargers, now)}
    stale = set(inputs.stale_meters(now))
    _alive, health = daemon.health()
    return MetricsSample(
        grid_power_w=flows.grid_power_w,
        pv_power_w=flows.pv_power_w,
        home_power_w=flows.home_power_w,
        vehicles_power_w=flows.vehicles_power_w,
        vehicles=vehicles,
        chargers_connected=chargers,
        meters_stale={m.id: m.id in stale for m in daemon.cfg.meters},
        safe_mode=flows.safe_mode,
        mqtt_connected=daemon.mqtt.connected,
        degraded=bool(health.get("degraded")),
        plan_age_s=(now - plan.created_at).total_seconds() if plan is not None else None,
        mqtt_messages_accepted=daemon.mqtt.accepted,
        mqtt_messages_rejected=daemon.mqtt.rejected,
    )


def _known(value: float | None) -> TypeGuard[float]:
    return value is not None and math.isfinite(value)


def _flag(value: bool | None) -> float | None:
    return None if value is None else float(value)


# Unlabelled gauges: name, help, how to read it from the sample.
_SITE_GAUGES: tuple[tuple[str, str, Callable[[MetricsSample], float | None]], ...] = (
    ("v2x_grid_power_watts", "Grid power: + import, - export (W).", lambda s: s.grid_power_w),
    ("v2x_pv_power_watts", "PV power (W).", lambda s: s.pv_power_w),
    ("v2x_home_power_watts", "Home consumption (W).", lambda s: s.home_power_w),
    (
        "v2x_vehicles_power_watts",
        "Sum of the vehicles' measured power: + charging, - discharging (W).",
        lambda s: s.vehicles_power_w,
    ),
    ("v2x_stale_meters", "Meters without a fresh reading.", lambda s: float(s.stale_meters)),
    ("v2x_safe_mode", "1 while the site is in safe mode.", lambda s: _flag(s.safe_mode)),
    ("v2x_mqtt_connected", "1 while connected to the MQTT broker.", lambda s: _flag(s.mqtt_connected)),
    ("v2x_degraded", "1 while /health lists something as degraded.", lambda s: _flag(s.degraded)),
    ("v2x_plan_age_seconds", "Seconds since the current plan was made.", lambda s: s.plan_age_s),
)


def _labelled(
    name: str, documentation: str, label: str, values: Iterable[tuple[str, float | None]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in values:
        if _known(value):
            family.add_metric([key], value)
    return family


def sample_families(sample: MetricsSample) -> Iterator[Metric]:
    """The gauges (and the MQTT message counter) of ``sample``; unknown values left out."""
    for name, documentation, read in _SITE_GAUGES:
        value = read(sample)
        if _known(value):
            yield GaugeMetricFamily(name, documentation, value=value)
    vehicles = sample.vehicles
    yield _labelled(
        "v2x_vehicle_soc_percent",
        "Vehicle state of charge from a real reading (%).",
        "vehicle",
        ((v.vehicle_id, v.soc_percent) for v in vehicles),
    )
    yield _labelled(
        "v2x_vehicle_power_watts",
        "Vehicle power measured at its charger: + charging, - discharging (W).",
        "vehicle",
        ((v.vehicle_id, v.power_w) for v in vehicles),
    )
    yield _labelled(
        "v2x_vehicle_plugged_in",
        "1 while the vehicle is plugged in.",
        "vehicle",
        ((v.vehicle_id, float(v.plugged_in)) for v in vehicles),
    )
    yield _labelled(
        "v2x_charger_connected",
        "1 while the charger is connected over OCPP.",
        "charger",
        ((cid, float(up)) for cid, up in sample.chargers_connected.items()),
    )
    yield _labelled(
        "v2x_meter_stale",
        "1 while the meter has no fresh reading.",
        "meter",
        ((mid, float(stale)) for mid, stale in sample.meters_stale.items()),
    )
    if sample.mqtt_messages_accepted is not None or sample.mqtt_messages_rejected is not None:
        messages = CounterMetricFamily(
            "v2x_mqtt_messages", "Incoming MQTT messages used or refused.", labels=["result"]
        )
        for result, count in (
            ("accepted", sample.mqtt_messages_accepted),
            ("rejected", sample.mqtt_messages_rejected),
        ):
            if count is not None:
                messages.add_metric([result], float(count))
        yield messages


_EVERY_FAMILY = MetricsSample(
    grid_power_w=0.0,
    pv_power_w=0.0,
    home_power_w=0.0,
    vehicles_power_w=0.0,
    safe_mode=False,
    mqtt_connected=False,
    degraded=False,
    plan_age_s=0.0,
    mqtt_messages_accepted=0,
    mqtt_messages_rejected=0,
)
"""A sample with every value known: its families are all the collector may yield."""


class _SampleCollector:
    """Reads the sample at each scrape (a prometheus_client ``Collector``)."""

    def __init__(self, sample: Callable[[], MetricsSample]) -> None:
        self._sample = sample

    def describe(self) -> Iterable[Metric]:
        """Every family it may yield (the registry checks the names for clashes with these)."""
        return list(sample_families(_EVERY_FAMILY))

    def collect(self) -> Iterable[Metric]:
        try:
            sample = self._sample()
        except Exception:  # a scrape must not fail: the event metrics are still worth having
            log.exception("metrics_sample_failed")
            return []
        return list(sample_families(sample))


class _ValueCollector:
    """One unlabelled gauge, read at each scrape and left out while unknown (None)."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float | None]) -> None:
        self._name, self._documentation, self._read = name, documentation, read

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self._name, self._documentation)]

    def collect(self) -> Iterable[Metric]:
        value = self._read()
        return [GaugeMetricFamily(self._name, self._documentation, value=value)] if _known(value) else []


class DaemonMetrics:
    """The daemon's metrics in their own :class:`CollectorRegistry` (instances share nothing)."""

    def __init__(self, sample: Callable[[], MetricsSample] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.plan_solve_seconds = Histogram(
            "v2x_plan_solve_seconds",
            "Time the planner's solver took per plan (s).",
            buckets=PLAN_SOLVE_BUCKETS_S,
            registry=self.registry,
        )
        self.plans = Counter(
            "v2x_plans",
            "Plans made, by result: optimal (the solver's) or fallback.",
            ["result"],
            registry=self.registry,
        )
        for result in ("optimal", "fallback"):
            self.plans.labels(result=result)  # both series exist from the start, at 0
        self._plan_cost: float | None = None
        self.registry.register(
            _ValueCollector(
                "v2x_plan_cost",
                "Net cost of the current plan over its horizon in the site currency: "
                "import cost - export revenue + battery wear.",
                lambda: self._plan_cost,
            )
        )
        self.charger_profiles = Counter(
            "v2x_charger_profiles",
            "Charging profile outcomes per charger (status: accepted, rejected, timeout, ...).",
            ["charger", "status"],
            registry=self.registry,
        )
        self.ocpp_messages = Counter(
            "v2x_ocpp_messages",
            "OCPP messages per charger, by direction (received, sent).",
            ["charger", "direction"],
            registry=self.registry,
        )
        self.ocpp_errors = Counter(
            "v2x_ocpp_errors",
            "OCPP errors per charger, by kind.",
            ["charger", "kind"],
            registry=self.registry,
        )
        self._synced: dict[tuple[str, str, str], int] = {}
        if sample is not None:
            self.registry.register(_SampleCollector(sample))

    @classmethod
    def for_daemon(cls, daemon: Daemon) -> DaemonMetrics:
        """Metrics whose gauges read ``daemon`` at each scrape (:func:`daemon_sample`)."""
        return cls(lambda: daemon_sample(daemon))

    # ------------------------------------------------------------------ events

    def observe_plan(self, plan: Plan) -> None:
        """A new plan: its solve time, its result, its cost."""
        solve_s = plan.solve_time_ms / 1000.0
        if math.isfinite(solve_s):
            self.plan_solve_seconds.observe(max(solve_s, 0.0))
        self.plans.labels(result="fallback" if plan.fallback else "optimal").inc()
        cost = plan.total_cost
        self._plan_cost = cost if math.isfinite(cost) else None

    def observe_profile(self, charger_id: str, status: str) -> None:
        """A profile outcome (``ProfileRecord.status``; a ``ProfileStatus`` is a ``str``)."""
        self.charger_profiles.labels(charger=charger_id, status=str(status)).inc()

    def count_message(self, charger_id: str, direction: MessageDirection) -> None:
        """One OCPP message (CALL, CALLRESULT, CALLERROR) received from or sent to a charger."""
        self.ocpp_messages.labels(charger=charger_id, direction=direction).inc()

    def count_error(self, charger_id: str, kind: str) -> None:
        """One OCPP error with a charger, e.g. a CALLERROR code, ``timeout`` or ``invalid_frame``."""
        self.ocpp_errors.labels(charger=charger_id, kind=kind).inc()

    def sync_frames(self, counts: Mapping[str, FrameCounts]) -> None:
        """Bring the OCPP counters up to the server's frame counts (counted where the frames pass):
        messages by direction; errors by kind, ``<code>`` or ``timeout`` for the charger's answers
        to our calls, ``sent:<code>`` for the CALLERRORs we answered the charger with."""
        for charger_id, frames in counts.items():
            totals = {("message", "received"): frames.received, ("message", "sent"): frames.sent}
            totals.update({("error", code): n for code, n in frames.errors_received.items()})
            totals.update({("error", f"sent:{code}"): n for code, n in frames.errors_sent.items()})
            for (what, label), total in totals.items():
                delta = total - self._synced.get((charger_id, what, label), 0)
                if delta <= 0:
                    continue
                self._synced[(charger_id, what, label)] = total
                if what == "message":
                    self.ocpp_messages.labels(charger=charger_id, direction=label).inc(delta)
                else:
                    self.ocpp_errors.labels(charger=charger_id, kind=label).inc(delta)

    # ----------------------------------------------------------------- scrapes

    def render(self) -> tuple[bytes, str]:
        """The exposition text (Prometheus text format) and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
