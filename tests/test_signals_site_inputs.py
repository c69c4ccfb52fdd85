"""SiteInputs: staleness and safe mode per meter, vehicle values, prices and limits through the tariff."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from controller.config import SiteConfig, parse_config
from controller.domain import MeterReading, MeterRole
from controller.signals import parse_limit_signal, parse_price_signal
from controller.site import Site
from controller.site_inputs import SiteInputs

T0 = dt.datetime(2025, 1, 15, 12, 0, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)


def site(**overrides: Any) -> SiteConfig:
    data: dict[str, Any] = {
        "site": {"grid": {"import_limit_kw": 17.3, "export_limit_kw": 10, "fallback_import_limit_kw": 11}},
        "vehicles": [
            {"id": "ev", "usable_capacity_kwh": 60, "max_discharge_kw": 10, "permissions": {"v2l": True}}
        ],
        "meters": [
            {"id": "grid", "role": "grid", "topic": "g", "stale_after_s": 30},
            {"id": "pv", "role": "pv", "topic": "p", "stale_after_s": 120},
            {"id": "ev-soc", "role": "vehicle_soc", "topic": "s", "vehicle": "ev", "stale_after_s": 600},
            {"id": "ev-v2l", "role": "v2l", "topic": "l", "vehicle": "ev", "stale_after_s": 60},
        ],
        "tariff": {
            "import": {"dynamic_topic": "pi", "dynamic_multiplier": 1.21, "dynamic_markup_per_kwh": 0.15},
            "export": {"static_price_per_kwh": 0.07},
        },
        "grid_signals": {"limit_topic": "lim", "guaranteed_import_kw": 4.2},
    }
    data.update(overrides)
    return parse_config(data)


def reading(meter_id: str, role: MeterRole, value: float, at: dt.datetime) -> MeterReading:
    return MeterReading(meter_id, role, value, at)


def test_missing_meters_are_stale_and_force_safe_mode() -> None:
    inputs = SiteInputs(site())
    assert inputs.stale_meters(T0) == ["grid", "pv", "ev-soc", "ev-v2l"]
    assert inputs.safe_mode(T0) and inputs.is_stale(T0)
    assert inputs.safe_mode_reasons(T0) == ["meter grid (grid) is stale", "meter pv (pv) is stale"]
    assert inputs.grid_power_w(T0) is None


def test_fresh_site_meters_leave_safe_mode_until_one_goes_silent() -> None:
    inputs = SiteInputs(site())
    inputs.update_meter(reading("grid", MeterRole.GRID, -1500.0, T0))
    inputs.update_meter(reading("pv", MeterRole.PV, 4000.0, T0))
    assert not inputs.safe_mode(T0 + 30 * S)  # exactly at the timeout still fresh
    assert inputs.grid_power_w(T0 + 30 * S) == -1500.0
    assert inputs.stale_meters(T0 + 30 * S) == ["ev-soc", "ev-v2l"]  # vehicle meters never sent
    assert inputs.safe_mode(T0 + 31 * S)  # grid meter silent past 30 s
    assert inputs.grid_power_w(T0 + 31 * S) is None
    assert inputs.pv_power_w(T0 + 31 * S) == 4000.0
    assert inputs.snapshot(T0 + 31 * S).stale_meters == ("grid", "ev-soc", "ev-v2l")
    inputs.update_meter(reading("grid", MeterRole.GRID, 200.0, T0 + 40 * S))  # fresh data returns
    assert not inputs.safe_mode(T0 + 41 * S)


def test_out_of_order_reading_is_ignored() -> None:
    inputs = SiteInputs(site())
    assert inputs.update_meter(reading("grid", MeterRole.GRID, 1.0, T0 + 10 * S))
    assert not inputs.update_meter(reading("grid", MeterRole.GRID, 2.0, T0))
    held = inputs.reading("grid")
    assert held is not None and held.value == 1.0
    with pytest.raises(KeyError):
        inputs.update_meter(reading("nope", MeterRole.GRID, 1.0, T0))


def test_vehicle_soc_and_v2l_are_per_vehicle_and_go_unknown_when_stale() -> None:
    inputs = SiteInputs(site())
    inputs.update_meter(reading("ev-soc", MeterRole.VEHICLE_SOC, 64.0, T0))
    inputs.update_meter(reading("ev-v2l", MeterRole.V2L, 1800.0, T0))
    assert inputs.vehicle_soc_percent("ev", T0 + 600 * S) == 64.0
    assert inputs.vehicle_soc_percent("ev", T0 + 601 * S) is None
    assert inputs.v2l_power_w("ev", T0 + 60 * S) == 1800.0
    assert inputs.v2l_power_w("ev", T0 + 61 * S) is None
    assert inputs.vehicle_soc_percent("other", T0) is None


def test_phase_powers_kept_with_the_reading() -> None:
    inputs = SiteInputs(site())
    inputs.update_meter(reading("grid", MeterRole.GRID, 300.0, T0), (100.0, 150.0, 50.0))
    assert inputs.phases_w("grid") == (100.0, 150.0, 50.0)
    assert inputs.phases_w("pv") == ()


def test_grid_phases_reach_the_dispatcher_while_the_grid_meter_is_fresh() -> None:
    inputs = SiteInputs(site(grid_signals={"outage_topic": "out"}))
    assert inputs.grid_phases_w(T0) is None  # never heard from
    inputs.update_meter(reading("grid", MeterRole.GRID, 300.0, T0), (100.0, 150.0, 50.0))
    assert inputs.grid_phases_w(T0 + 30 * S) == (100.0, 150.0, 50.0)
    assert inputs.grid_phases_w(T0 + 31 * S) is None  # stale with the total
    inputs.update_meter(reading("grid", MeterRole.GRID, 300.0, T0 + 40 * S))  # a reading without phases
    assert inputs.grid_phases_w(T0 + 40 * S) is None and inputs.grid_power_w(T0 + 40 * S) == 300.0
    inputs.update_meter(reading("grid", MeterRole.GRID, 300.0, T0 + 50 * S), (100.0, 200.0))  # one missing
    assert inputs.grid_phases_w(T0 + 50 * S) is None
    inputs.update_meter(reading("grid", MeterRole.GRID, -90.0, T0 + 60 * S), (-30.0, -30.0, -30.0))
    assert inputs.grid_phases_w(T0 + 60 * S) == (-30.0, -30.0, -30.0)
    inputs.update_grid_state(True, T0 + 60 * S)  # an outage: nothing flows through the main fuses
    assert inputs.grid_phases_w(T0 + 60 * S) is None


def test_dispatch_inputs_carry_the_grid_phases() -> None:
    cfg = site()
    inputs = SiteInputs(cfg)
    inputs.update_meter(reading("grid", MeterRole.GRID, 300.0, T0), (100.0, 150.0, 50.0))
    inputs.update_meter(reading("pv", MeterRole.PV, 0.0, T0))
    live = Site(cfg, inputs).dispatch_inputs(T0, None)
    assert live.grid_phases_w == (100.0, 150.0, 50.0) and live.grid_power_w == 300.0
    assert Site(cfg, inputs).dispatch_inputs(T0 + 31 * S, None).grid_phases_w is None


def price_payload(values: list[float], start: dt.datetime) -> bytes:
    return json.dumps(
        [
            {
                "start": (start + i * dt.timedelta(hours=1)).isoformat(),
                "end": (start + (i + 1) * dt.timedelta(hours=1)).isoformat(),
                "value": v,
            }
            for i, v in enumerate(values)
        ]
    ).encode()


def test_prices_on_grid_apply_the_tariff_and_newest_message_wins() -> None:
    inputs = SiteInputs(site())
    hour = T0.replace(minute=0)
    inputs.update_prices("import", parse_price_signal(price_payload([0.10, 0.20, 0.30], hour)), T0)
    inputs.update_prices(
        "import", parse_price_signal(price_payload([0.50], hour + dt.timedelta(hours=1))), T0 + S
    )
    grid = inputs.prices_on_grid(hour, dt.timedelta(minutes=30), 6)
    expected = [v * 1.21 + 0.15 for v in (0.10, 0.10, 0.50, 0.50, 0.30, 0.30)]
    assert grid.import_per_kwh.tolist() == pytest.approx(expected)
    assert grid.export_per_kwh.tolist() == pytest.approx([0.07] * 6)
    assert inputs.price_updates == 2
    with pytest.raises(ValueError, match="direction"):
        inputs.update_prices("sideways", parse_price_signal(price_payload([0.1], hour)), T0)  # type: ignore[arg-type]


def test_limits_expire_to_the_fallback_and_respect_the_floor() -> None:
    inputs = SiteInputs(site())
    payload = json.dumps({"import_kw": 2.0, "export_kw": 3.0, "duration_s": 1800}).encode()
    inputs.update_limits(parse_limit_signal(payload, T0), T0)
    now_limits = inputs.limits_at(T0 + S)
    assert now_limits.import_limit_w == 4200.0  # 2 kW raised to the guaranteed 4.2 kW
    assert now_limits.export_limit_w == 3000.0
    assert now_limits.valid_until == T0 + dt.timedelta(minutes=30)
    later = inputs.limits_at(T0 + dt.timedelta(minutes=30))
    assert later.import_limit_w == 11000.0 and later.export_limit_w == 10000.0  # expired: fallbacks
    assert later.valid_until is None
    grid = inputs.limits_on_grid(T0, dt.timedelta(minutes=15), 3)
    assert grid.import_limit_w.tolist() == [4200.0, 4200.0, 11000.0]
    assert grid.from_signal.tolist() == [True, True, False]


def test_newer_limit_for_the_same_window_wins_per_direction() -> None:
    inputs = SiteInputs(site())
    end = (T0 + dt.timedelta(hours=1)).isoformat()
    inputs.update_limits(
        parse_limit_signal(json.dumps({"import_kw": 6, "export_kw": 1, "end": end}).encode(), T0), T0
    )
    inputs.update_limits(parse_limit_signal(json.dumps({"import_kw": 8, "end": end}).encode(), T0), T0 + S)
    limits = inputs.limits_at(T0 + 2 * S)
    assert (limits.import_limit_w, limits.export_limit_w) == (8000.0, 1000.0)
    assert inputs.limit_updates == 2
