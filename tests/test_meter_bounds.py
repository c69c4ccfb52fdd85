"""Plausible readings only: each meter role's physical bounds, the clamp of small negatives, and what
a dropped reading leaves behind (one log line per topic, a count per meter in the state)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import structlog

from controller.clock import ManualClock, SystemClock
from controller.config import SiteConfig, parse_config
from controller.domain import MeterReading
from controller.meters import (
    NEGATIVE_TOLERANCE_W,
    Bounds,
    ImplausibleReading,
    PayloadError,
    apply_bounds,
    make_parser,
    meter_bounds,
    site_power_bound_w,
)
from controller.mqtt import SiteMqttClient
from controller.site import Site
from controller.views import state_view
from tests.test_mqtt_client import eventually, peer, running, site_config, uid

T0 = dt.datetime(2025, 1, 15, 2, 0, tzinfo=dt.UTC)


def config(grid: dict[str, Any] | None = None) -> SiteConfig:
    return parse_config(
        {
            "site": {"grid": grid or {"import_limit_kw": 17.3, "export_limit_kw": 10}},
            "vehicles": [{"id": "ev", "usable_capacity_kwh": 60, "permissions": {"v2l": True}}],
            "meters": [
                {"id": "grid", "role": "grid", "topic": "home/grid"},
                {"id": "pv", "role": "pv", "topic": "home/pv"},
                {"id": "home", "role": "home", "topic": "home/load"},
                {"id": "v2l", "role": "v2l", "topic": "car/v2l", "vehicle": "ev"},
                {"id": "soc", "role": "vehicle_soc", "topic": "car/soc", "vehicle": "ev"},
            ],
            "tariff": {"import": {"static_price_per_kwh": 0.3}, "export": {"static_price_per_kwh": 0.07}},
        }
    )


def parse_as(meter_id: str, payload: bytes, cfg: SiteConfig | None = None) -> float | None:
    cfg = cfg or config()
    meter = next(m for m in cfg.meters if m.id == meter_id)
    parsed = make_parser(meter, cfg).parse(meter.topic, payload)
    return None if parsed is None else parsed.value


# ---------------------------------------------------------------- the table


def test_site_bound_is_a_margin_over_the_largest_grid_rating() -> None:
    assert site_power_bound_w(config()) == pytest.approx(1.5 * 17_300)
    fused = config({"import_limit_kw": 11, "export_limit_kw": 0, "phase_fuse_a": 35})
    assert site_power_bound_w(fused) == pytest.approx(1.5 * 35 * 3 * 230)
    assert site_power_bound_w(config({"import_limit_kw": 0})) == pytest.approx(1.5 * 3680)
    assert site_power_bound_w(None) == 10_000_000.0


def test_bounds_by_role() -> None:
    cfg = config()
    bound = site_power_bound_w(cfg)
    assert bound == pytest.approx(25_950)
    by_id = {m.id: meter_bounds(m, cfg) for m in cfg.meters}
    assert {k: (b.low, b.high, b.unit, b.clamp_w) for k, b in by_id.items()} == {
        "grid": (-bound, bound, "W", 0.0),
        "pv": (0.0, bound, "W", NEGATIVE_TOLERANCE_W),
        "home": (0.0, bound, "W", NEGATIVE_TOLERANCE_W),
        "v2l": (0.0, bound, "W", NEGATIVE_TOLERANCE_W),
        "soc": (0.0, 100.0, "%", 0.0),
    }


def test_apply_bounds_clamps_only_small_negatives() -> None:
    no_negative = Bounds(0.0, 1000.0, clamp_w=50.0)
    assert apply_bounds(-50.0, no_negative) == 0.0
    with pytest.raises(ImplausibleReading) as refused:
        apply_bounds(-50.1, no_negative)
    assert (refused.value.value, refused.value.bound) == (-50.1, 0.0)
    with pytest.raises(ImplausibleReading) as refused:
        apply_bounds(-11.0, Bounds(-10.0, 10.0, clamp_w=50.0))  # clamps only where 0 is the floor
    assert refused.value.bound == -10.0
    with pytest.raises(ImplausibleReading) as refused:
        apply_bounds(1000.5, no_negative)
    assert refused.value.bound == 1000.0


# ---------------------------------------------------------------- the examples


@pytest.mark.parametrize(
    ("meter_id", "payload"),
    [
        ("pv", b"-5000"),
        ("home", b"-3000"),
        ("v2l", b"1.5e3 kW"),  # 1.5 MW
        ("grid", b"-30 kW"),  # beyond 1.5 x 17.3 kW
        ("soc", b"101"),
        ("soc", b"-1"),
    ],
)
def test_implausible_readings_are_refused(meter_id: str, payload: bytes) -> None:
    with pytest.raises(ImplausibleReading, match="implausible"):
        parse_as(meter_id, payload)


@pytest.mark.parametrize("payload", ["８０".encode(), "٨٠".encode(), "８０ %".encode()])
def test_soc_in_unicode_digits_is_refused(payload: bytes) -> None:
    with pytest.raises(PayloadError, match="ASCII"):
        parse_as("soc", payload)


@pytest.mark.parametrize(
    ("meter_id", "payload", "value"),
    [
        ("pv", b"-3", 0.0),  # inverter standby at night
        ("home", b"-50", 0.0),
        ("pv", b"2450", 2450.0),
        ("home", b"1.2 kW", 1200.0),
        ("v2l", b"1800 W", 1800.0),
        ("grid", b"-9.5 kW", -9500.0),
        ("grid", b"25 kW", 25000.0),
        ("soc", b"80", 80.0),
        ("soc", b"0", 0.0),
        ("soc", b"100 %", 100.0),
    ],
)
def test_plausible_readings_pass(meter_id: str, payload: bytes, value: float) -> None:
    assert parse_as(meter_id, payload) == value


def test_bounds_apply_after_the_meters_sign_and_clamp_drops_the_phases() -> None:
    cfg = config()
    pv = cfg.meters[1].model_copy(update={"sign": -1, "format": "shelly_pro3em"})
    parser = make_parser(pv, cfg)
    exporting = b'{"a_act_power":-1,"b_act_power":-1,"c_act_power":-1,"total_act_power":-3}'
    parsed = parser.parse(pv.topic, exporting)
    assert parsed is not None and parsed.value == 3.0 and parsed.phases_w == (1.0, 1.0, 1.0)
    parsed = parser.parse(pv.topic, exporting.replace(b"-", b""))  # standby draw: +3 W before the sign
    assert parsed is not None and (parsed.value, parsed.phases_w) == (0.0, ())


# ---------------------------------------------------------------- log and count


def test_a_drop_is_logged_once_per_topic_and_counted_in_the_state() -> None:
    cfg = config()
    clock = ManualClock(T0)
    readings: list[MeterReading] = []
    client = SiteMqttClient(cfg, clock, on_reading=readings.append, log_interval_s=0)
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            client.ingest("home/pv", b"-5000")
        client.ingest("home/load", b"-3000")
        client.ingest("car/soc", "８０".encode())
        client.ingest("home/pv", b"-3")  # plausible again: clamped to 0 and stored
        client.ingest("home/pv", b"-5000")  # a new episode: logged again
    assert [(r.meter_id, r.value) for r in readings] == [("pv", 0.0)]
    dropped = [e for e in logs if e["event"] == "meter_payload_rejected"]
    assert [(e["topic"], e["meter"]) for e in dropped] == [
        ("home/pv", "pv"),
        ("home/load", "home"),
        ("car/soc", "soc"),
        ("home/pv", "pv"),
    ]
    first = dropped[0]
    assert (first["log_level"], first["value"], first["bound"], first["unit"]) == (
        "warning",
        -5000.0,
        0.0,
        "W",
    )
    assert "implausible" in first["reason"] and "ASCII" in dropped[2]["reason"]
    assert [e["topic"] for e in logs if e["event"] == "meter_reading_plausible_again"] == ["home/pv"]
    assert (client.accepted, client.rejected) == (1, 6)
    site = Site(cfg, client.inputs)
    state = state_view(site, None, [], clock.now())
    assert state["meters"] == {
        "grid": {"dropped_readings": 0},
        "pv": {"dropped_readings": 4},
        "home": {"dropped_readings": 1},
        "v2l": {"dropped_readings": 0},
        "soc": {"dropped_readings": 1},
    }
    assert client.inputs.reading("home") is None and client.inputs.reading("soc") is None
    assert client.inputs.pv_power_w(clock.now()) == 0.0


# ---------------------------------------------------------------- over the broker


@pytest.fixture
def prefix() -> str:
    return f"v2x-test/{uid()}"


async def test_a_megawatt_v2l_payload_over_the_broker_is_not_stored(prefix: str) -> None:
    cfg = site_config(prefix)
    readings: list[MeterReading] = []
    client = SiteMqttClient(cfg, SystemClock(), on_reading=readings.append)
    with structlog.testing.capture_logs() as logs:
        async with running(client), peer() as p:
            await p.publish(f"{prefix}/car/v2l", b"1.5e3 kW", qos=1)
            await eventually(lambda: client.rejected == 1)
            assert client.inputs.reading("ev-v2l") is None
            await p.publish(f"{prefix}/car/v2l", b"1500 W", qos=1)
            await eventually(lambda: client.accepted == 1)
    assert [(r.meter_id, r.value) for r in readings] == [("ev-v2l", 1500.0)]
    assert client.inputs.v2l_power_w("ev", SystemClock().now()) == 1500.0
    assert client.inputs.dropped_readings("ev-v2l") == 1
    dropped = [e for e in logs if e["event"] == "meter_payload_rejected"]
    assert [(e["topic"], e["value"]) for e in dropped] == [(f"{prefix}/car/v2l", 1_500_000.0)]
