"""Domain types: conventions enforced at construction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.clock import ManualClock
from controller.domain import (
    ChargerSchedule,
    Departure,
    GridLimits,
    MeterReading,
    MeterRole,
    PriceSeries,
    SchedulePeriod,
    V2LSession,
    align_to_step,
    ensure_utc,
)

T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError, match="naive"):
        ensure_utc(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        MeterReading("grid", MeterRole.GRID, 100.0, datetime(2026, 1, 1))


def test_align_to_step_floors_to_hour_grid() -> None:
    moment = datetime(2026, 11, 24, 17, 44, 59, tzinfo=UTC)
    assert align_to_step(moment, timedelta(minutes=15)) == datetime(2026, 11, 24, 17, 30, tzinfo=UTC)


def test_meter_reading_rejects_nan() -> None:
    with pytest.raises(ValueError, match="not finite"):
        MeterReading("grid", MeterRole.GRID, float("nan"), T0)


def test_price_series_lookup() -> None:
    prices = PriceSeries(T0, timedelta(hours=1), (0.1, 0.2))
    assert prices.price_at(T0 + timedelta(minutes=90)) == 0.2
    assert prices.price_at(T0 + timedelta(hours=2)) is None
    assert prices.price_at(T0 - timedelta(seconds=1)) is None


def test_grid_limits_validity_window() -> None:
    limits = GridLimits(4200.0, 0.0, valid_from=T0, valid_until=T0 + timedelta(hours=1))
    assert limits.is_valid_at(T0) and not limits.is_valid_at(T0 + timedelta(hours=1))
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="magnitudes"):
            GridLimits(bad, 0.0)
        with pytest.raises(ValueError, match="magnitudes"):
            GridLimits(0.0, bad)


def test_v2l_power_is_a_finite_draw() -> None:
    assert V2LSession("car", T0, None, 1500.0).power_w == 1500.0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="draw"):
            V2LSession("car", T0, None, bad)


def test_departure_target_range() -> None:
    with pytest.raises(ValueError):
        Departure(T0, 120.0)


def test_charger_schedule_is_bounded_and_ordered() -> None:
    period = SchedulePeriod(timedelta(0), -3000.0, 11000.0, 10000.0)
    schedule = ChargerSchedule("wb", T0, T0 + timedelta(hours=2), (period,))
    assert schedule.periods[0].setpoint_w < 0
    with pytest.raises(ValueError, match="end after"):
        ChargerSchedule("wb", T0, T0, (period,))
    with pytest.raises(ValueError, match="increasing"):
        ChargerSchedule("wb", T0, T0 + timedelta(hours=2), (period, period))


def test_manual_clock_moves_forward_only() -> None:
    clock = ManualClock(T0)
    assert clock.advance(timedelta(minutes=5)) == T0 + timedelta(minutes=5)
    with pytest.raises(ValueError):
        clock.advance(timedelta(seconds=-1))
