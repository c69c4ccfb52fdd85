"""Prometheus metrics: the exposition text parsed back, event metrics, scrape-time gauges, a real daemon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from controller.api.metrics import DaemonMetrics, MetricsSample, VehicleSample, daemon_sample
from controller.domain import MeterReading, MeterRole, Plan
from controller.ocpp.model import ProfileStatus
from tests.conftest import stored
from tests.test_site import example_daemon

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def make_plan(
    solve_time_ms: float = 2.5,
    *,
    fallback: bool = False,
    import_cost: float = 1.20,
    export_revenue: float = 0.30,
    degradation_cost: float = 0.05,
) -> Plan:
    return Plan(
        created_at=T0,
        start=T0,
        step=timedelta(minutes=15),
        vehicles={},
        grid_import_w=(0.0, 400.0),
        grid_export_w=(0.0, 0.0),
        import_price_per_kwh=(0.41, 0.30),
        export_price_per_kwh=(0.11, 0.10),
        solver_status="fallback" if fallback else "optimal",
        solve_time_ms=solve_time_ms,
        fallback=fallback,
        import_cost=import_cost,
        export_revenue=export_revenue,
        degradation_cost=degradation_cost,
        objective=None if fallback else 1.25,
    )


def samples(metrics: DaemonMetrics) -> list[Sample]:
    """Every sample of a scrape, parsed back from the exposition text."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return [s for family in text_string_to_metric_families(body.decode()) for s in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float | None:
    """The value of the one sample ``name`` with exactly ``labels``; None when it is absent."""
    hits = [s.value for s in found if s.name == name and s.labels == labels]
    assert len(hits) <= 1, f"{name} {labels}: {len(hits)} samples"
    return hits[0] if hits else None


def names(found: list[Sample]) -> set[str]:
    return {s.name for s in found}


FULL = MetricsSample(
    grid_power_w=-1500.0,
    pv_power_w=4200.0,
    home_power_w=700.0,
    vehicles_power_w=-2000.0,
    vehicles=(
        VehicleSample("family-ev", plugged_in=True, soc_percent=63.5, power_w=-2000.0),
        VehicleSample("second-ev", plugged_in=False),
    ),
    chargers_connected={"wallbox-garage": True, "wallbox-drive": False},
    meters_stale={"grid": False, "pv": True},
    safe_mode=True,
    mqtt_connected=True,
    degraded=False,
    plan_age_s=95.0,
    mqtt_messages_accepted=12,
    mqtt_messages_rejected=3,
)


def test_the_sampled_gauges_carry_the_sample_with_their_labels() -> None:
    found = samples(DaemonMetrics(lambda: FULL))
    assert value(found, "v2x_grid_power_watts") == -1500.0
    assert value(found, "v2x_pv_power_watts") == 4200.0
    assert value(found, "v2x_home_power_watts") == 700.0
    assert value(found, "v2x_vehicles_power_watts") == -2000.0
    assert value(found, "v2x_vehicle_soc_percent", vehicle="family-ev") == 63.5
    assert value(found, "v2x_vehicle_power_watts", vehicle="family-ev") == -2000.0
    assert value(found, "v2x_vehicle_plugged_in", vehicle="family-ev") == 1.0
    assert value(found, "v2x_vehicle_plugged_in", vehicle="second-ev") == 0.0
    assert value(found, "v2x_charger_connected", charger="wallbox-garage") == 1.0
    assert value(found, "v2x_charger_connected", charger="wallbox-drive") == 0.0
    assert value(found, "v2x_meter_stale", meter="grid") == 0.0
    assert value(found, "v2x_meter_stale", meter="pv") == 1.0
    assert value(found, "v2x_stale_meters") == 1.0
    assert value(found, "v2x_safe_mode") == 1.0
    assert value(found, "v2x_mqtt_connected") == 1.0
    assert value(found, "v2x_degraded") == 0.0
    assert value(found, "v2x_plan_age_seconds") == 95.0
    assert value(found, "v2x_mqtt_messages_total", result="accepted") == 12.0
    assert value(found, "v2x_mqtt_messages_total", result="rejected") == 3.0


def test_unknown_values_are_left_out_not_exported_as_zero() -> None:
    sample = MetricsSample(
        grid_power_w=800.0,
        vehicles=(VehicleSample("family-ev", plugged_in=True, soc_percent=None, power_w=None),),
        meters_stale={"grid": False},
    )
    found = samples(DaemonMetrics(lambda: sample))
    assert value(found, "v2x_grid_power_watts") == 800.0
    for absent in (
        "v2x_pv_power_watts",
        "v2x_home_power_watts",
        "v2x_vehicles_power_watts",
        "v2x_vehicle_soc_percent",
        "v2x_vehicle_power_watts",
        "v2x_safe_mode",
        "v2x_mqtt_connected",
        "v2x_degraded",
        "v2x_plan_age_seconds",
        "v2x_mqtt_messages_total",
        "v2x_plan_cost",
    ):
        assert absent not in names(found), absent
    assert value(found, "v2x_vehicle_plugged_in", vehicle="family-ev") == 1.0  # always known
    assert value(found, "v2x_stale_meters") == 0.0


def test_gauges_are_read_at_each_scrape() -> None:
    current = [MetricsSample(grid_power_w=100.0)]
    metrics = DaemonMetrics(lambda: current[0])
    assert value(samples(metrics), "v2x_grid_power_watts") == 100.0
    current[0] = MetricsSample(grid_power_w=None)
    assert "v2x_grid_power_watts" not in names(samples(metrics))  # gone, not the old 100 W


def test_a_failing_sample_leaves_the_event_metrics() -> None:
    def broken() -> MetricsSample:
        raise RuntimeError("boom")

    metrics = DaemonMetrics(broken)
    metrics.observe_plan(make_plan())
    found = samples(metrics)
    assert value(found, "v2x_plans_total", result="optimal") == 1.0
    assert "v2x_grid_power_watts" not in names(found)


def test_without_a_sample_only_the_event_metrics() -> None:
    found = samples(DaemonMetrics(None))
    assert not {n for n in names(found) if n.endswith(("_watts", "_percent"))}
    assert value(found, "v2x_plans_total", result="optimal") == 0.0  # both results exist from the start
    assert value(found, "v2x_plans_total", result="fallback") == 0.0
    assert value(found, "v2x_plan_solve_seconds_count") == 0.0


def test_plans_fill_the_histogram_count_the_result_and_set_the_cost() -> None:
    metrics = DaemonMetrics(None)
    metrics.observe_plan(make_plan(0.8))  # 0.8 ms: in the first bucket (1 ms)
    metrics.observe_plan(make_plan(40.0))  # 40 ms
    metrics.observe_plan(make_plan(3000.0, fallback=True, import_cost=2.0, export_revenue=0.5))
    found = samples(metrics)
    assert value(found, "v2x_plan_solve_seconds_count") == 3.0
    assert value(found, "v2x_plan_solve_seconds_sum") == pytest.approx(0.0008 + 0.040 + 3.0)
    bucket = "v2x_plan_solve_seconds_bucket"
    assert value(found, bucket, le="0.001") == 1.0
    assert value(found, bucket, le="0.05") == 2.0
    assert value(found, bucket, le="2.5") == 2.0
    assert value(found, bucket, le="5.0") == 3.0
    assert value(found, bucket, le="10.0") == 3.0
    assert value(found, bucket, le="+Inf") == 3.0
    assert value(found, "v2x_plans_total", result="optimal") == 2.0
    assert value(found, "v2x_plans_total", result="fallback") == 1.0
    # The last plan's net cost: import - export + battery wear.
    assert value(found, "v2x_plan_cost") == pytest.approx(2.0 - 0.5 + 0.05)


def test_profiles_messages_and_errors_are_counted_per_charger() -> None:
    metrics = DaemonMetrics(None)
    metrics.observe_profile("wallbox-garage", ProfileStatus.ACCEPTED)
    metrics.observe_profile("wallbox-garage", ProfileStatus.REJECTED)
    metrics.observe_profile("wallbox-garage", "rejected")
    metrics.observe_profile("wallbox-drive", ProfileStatus.TIMEOUT)
    for _ in range(3):
        metrics.count_message("wallbox-garage", "received")
    metrics.count_message("wallbox-garage", "sent")
    metrics.count_error("wallbox-garage", "FormatViolation")
    metrics.count_error("wallbox-drive", "timeout")
    found = samples(metrics)
    profiles = "v2x_charger_profiles_total"
    assert value(found, profiles, charger="wallbox-garage", status="accepted") == 1.0
    assert value(found, profiles, charger="wallbox-garage", status="rejected") == 2.0
    assert value(found, profiles, charger="wallbox-drive", status="timeout") == 1.0
    assert value(found, profiles, charger="wallbox-drive", status="accepted") is None
    messages = "v2x_ocpp_messages_total"
    assert value(found, messages, charger="wallbox-garage", direction="received") == 3.0
    assert value(found, messages, charger="wallbox-garage", direction="sent") == 1.0
    errors = "v2x_ocpp_errors_total"
    assert value(found, errors, charger="wallbox-garage", kind="FormatViolation") == 1.0
    assert value(found, errors, charger="wallbox-drive", kind="timeout") == 1.0


def test_two_instances_share_nothing() -> None:
    first = DaemonMetrics(lambda: MetricsSample(grid_power_w=1.0))
    second = DaemonMetrics(lambda: MetricsSample(grid_power_w=2.0))
    first.observe_plan(make_plan())
    first.observe_profile("wallbox-garage", "rejected")
    first.count_message("wallbox-garage", "sent")
    found = samples(second)
    assert value(found, "v2x_grid_power_watts") == 2.0
    assert value(found, "v2x_plans_total", result="optimal") == 0.0
    assert value(found, "v2x_plan_solve_seconds_count") == 0.0
    assert "v2x_plan_cost" not in names(found)
    assert "v2x_charger_profiles_total" not in names(found)
    assert "v2x_ocpp_messages_total" not in names(found)
    assert value(samples(first), "v2x_grid_power_watts") == 1.0


def test_daemon_sample_reads_a_daemon_built_from_the_example_config(tmp_path: Path) -> None:
    daemon = example_daemon(
        tmp_path, [{"id": "ev-soc", "role": "vehicle_soc", "topic": "ev/soc", "vehicle": "family-ev"}]
    )
    try:
        now = datetime.now(UTC)
        daemon.inputs.update_meter(MeterReading("grid", MeterRole.GRID, 1200.0, now))
        soc = MeterReading("ev-soc", MeterRole.VEHICLE_SOC, 41.0, now)
        daemon.inputs.update_meter(soc)
        daemon.router.handle_reading(soc)
        daemon.plan = make_plan()
        sample = daemon_sample(daemon, now)

        assert sample.grid_power_w == 1200.0
        assert sample.pv_power_w is None  # the PV meter never reported: stale, unknown
        assert sample.home_power_w is None  # no home meter configured
        assert sample.meters_stale == {"grid": False, "pv": True, "ev-soc": False}
        assert sample.stale_meters == 1
        assert sample.safe_mode is True  # a stale site meter (PV)
        assert sample.mqtt_connected is False  # never started
        assert sample.degraded is True
        assert sample.chargers_connected == {"wallbox-garage": False}
        (car,) = sample.vehicles
        assert car.vehicle_id == "family-ev" and car.plugged_in is False
        assert car.soc_percent == 41.0
        assert car.power_w is None
        assert sample.plan_age_s == pytest.approx((now - T0).total_seconds())
        assert sample.mqtt_messages_accepted == 0 and sample.mqtt_messages_rejected == 0

        found = samples(DaemonMetrics.for_daemon(daemon))
        assert value(found, "v2x_grid_power_watts") == 1200.0
        assert "v2x_pv_power_watts" not in names(found)
        assert value(found, "v2x_vehicle_soc_percent", vehicle="family-ev") == 41.0
        assert value(found, "v2x_charger_connected", charger="wallbox-garage") == 0.0
        assert value(found, "v2x_meter_stale", meter="pv") == 1.0
        assert value(found, "v2x_safe_mode") == 1.0
        assert value(found, "v2x_mqtt_connected") == 0.0
    finally:
        stored(daemon).close()


def test_ocpp_frame_counts_become_counters_that_only_grow_by_what_is_new() -> None:
    from controller.ocpp.rpc import FrameCounts

    metrics = DaemonMetrics()
    frames = FrameCounts(received=5, sent=4)
    frames.error(frames.errors_received, "timeout")
    frames.error(frames.errors_sent, "FormatViolation")
    metrics.sync_frames({"wb1": frames})
    frames.received += 2
    frames.error(frames.errors_received, "timeout")
    metrics.sync_frames({"wb1": frames})
    metrics.sync_frames({"wb1": frames})  # nothing new: nothing added
    text = metrics.render()[0].decode()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert values[("v2x_ocpp_messages_total", (("charger", "wb1"), ("direction", "received")))] == 7
    assert values[("v2x_ocpp_messages_total", (("charger", "wb1"), ("direction", "sent")))] == 4
    assert values[("v2x_ocpp_errors_total", (("charger", "wb1"), ("kind", "timeout")))] == 2
    assert values[("v2x_ocpp_errors_total", (("charger", "wb1"), ("kind", "sent:FormatViolation")))] == 1
