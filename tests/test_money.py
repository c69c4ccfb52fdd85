"""controller.money: actual cost against charging without control, hand-computed."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.money import (
    KWH_PER_W_MINUTE,
    MoneySeries,
    VehicleSeries,
    money_between,
    money_for_period,
    period_bounds,
    plugged_sessions,
    uncontrolled_profile_w,
    vehicle_sessions,
)

T0 = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
NAN = math.nan
MIN = timedelta(minutes=1)


def arr(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def car(
    charger_w: list[float],
    plugged: list[bool],
    max_charge_w: float = 6000.0,
    vehicle_id: str = "car",
    soc_pct: list[float] | None = None,
    charge_efficiency: float = 1.0,
) -> VehicleSeries:
    return VehicleSeries(
        vehicle_id=vehicle_id,
        charger_w=arr(charger_w),
        plugged=np.asarray(plugged, dtype=bool),
        max_charge_w=max_charge_w,
        charge_efficiency=charge_efficiency,
        soc_pct=None if soc_pct is None else arr(soc_pct),
    )


def series(
    grid_w: list[float],
    import_price: list[float] | float,
    export_price: list[float] | float = 0.0,
    vehicles: tuple[VehicleSeries, ...] = (),
    start: datetime = T0,
) -> MoneySeries:
    n = len(grid_w)
    imp = [import_price] * n if isinstance(import_price, float) else import_price
    exp = [export_price] * n if isinstance(export_price, float) else export_price
    return MoneySeries(start, arr(grid_w), arr(imp), arr(exp), vehicles)


def whole(s: MoneySeries):
    return money_between(s, s.start_utc, s.start_utc + s.minutes * MIN)


def night_charge() -> MoneySeries:
    """House 1000 W; car plugged minutes 0-5, charges 6000 W in the cheap minutes 4-5 (0.2 kWh)."""
    car_w = [0.0, 0, 0, 0, 6000, 6000]
    grid_w = [1000.0 + w for w in car_w]
    return series(grid_w, [0.40, 0.40, 0.40, 0.10, 0.10, 0.10], 0.05, (car(car_w, [True] * 6),))


# --- the counterfactual's pieces -----------------------------------------------------------------


def test_plugged_sessions_are_maximal_runs():
    assert plugged_sessions([True, True, False, True, False, False, True]) == [(0, 2), (3, 4), (6, 7)]
    assert plugged_sessions([]) == []
    assert plugged_sessions([False, False]) == []


def test_uncontrolled_profile_partial_last_minute_and_what_does_not_fit():
    # 0.25 kWh at 6 kW (0.1 kWh a minute): two full minutes, then 0.05 kWh = 3000 W.
    profile_w, undelivered_kwh = uncontrolled_profile_w(0.25, 5, 6000.0)
    assert profile_w.tolist() == pytest.approx([6000, 6000, 3000, 0, 0])
    assert undelivered_kwh == 0.0
    profile_w, undelivered_kwh = uncontrolled_profile_w(0.25, 2, 6000.0)
    assert profile_w.tolist() == [6000, 6000]
    assert undelivered_kwh == pytest.approx(0.05)
    profile_w, undelivered_kwh = uncontrolled_profile_w(0.2, 2, 6000.0)  # exactly fits
    assert profile_w.tolist() == pytest.approx([6000, 6000])
    assert undelivered_kwh == pytest.approx(0.0, abs=1e-12)
    assert uncontrolled_profile_w(0.0, 3, 6000.0)[0].tolist() == [0, 0, 0]
    assert uncontrolled_profile_w(0.1, 3, 0.0)[1] == pytest.approx(0.1)


# --- hand-computed costs -------------------------------------------------------------------------


def test_night_charge_against_charging_at_plug_in():
    result = whole(night_charge())
    # actual: 3 min x 1 kW at 0.40, 1 min x 1 kW at 0.10, 2 min x 7 kW at 0.10
    assert result.actual_cost == pytest.approx((3 * 1 * 0.40 + 1 * 0.10 + 2 * 7 * 0.10) / 60)  # 0.045
    # uncontrolled: 6 kW at plug-in (minutes 0-1, at 0.40), the house alone afterwards
    assert result.uncontrolled_cost == pytest.approx((2 * 7 * 0.40 + 1 * 0.40 + 3 * 1 * 0.10) / 60)  # 0.105
    assert result.saving == pytest.approx(0.2 * (0.40 - 0.10))  # 0.06: the car's 0.2 kWh moved
    assert result.import_kwh == pytest.approx(18 / 60)
    assert result.uncontrolled_import_kwh == pytest.approx(18 / 60)
    assert result.export_kwh == result.uncontrolled_export_kwh == 0.0
    assert (result.minutes_total, result.minutes_counted, result.minutes_missing) == (6, 6, 0)
    (vehicle,) = result.vehicles
    assert vehicle.charged_kwh == pytest.approx(0.2)
    assert vehicle.discharged_kwh == 0.0
    assert vehicle.uncontrolled_charged_kwh == pytest.approx(0.2)
    assert vehicle.undelivered_kwh == 0.0
    (session,) = vehicle.sessions
    assert session.start_utc == T0 and session.end_utc == T0 + 6 * MIN
    assert session.starts_before_data and session.ends_after_data
    assert session.net_kwh == pytest.approx(0.2) and session.delivered_kwh == pytest.approx(0.2)


def test_v2g_discharge_is_export_income_in_actual_and_absent_in_uncontrolled():
    # House 1000 W; car charges 6000 W (0.1 kWh) in minute 0, discharges 3000 W (0.05 kWh) in minute 2.
    car_w = [6000.0, 0, -3000, 0]
    grid_w = [1000.0 + w for w in car_w]  # 7000, 1000, -2000, 1000
    export = [0.0, 0.0, 0.50, 0.0]
    result = whole(series(grid_w, 0.30, export, (car(car_w, [True] * 4),)))
    assert result.export_kwh == pytest.approx(2 / 60)
    assert result.actual_cost == pytest.approx((7 + 1 + 1) / 60 * 0.30 - 2 / 60 * 0.50)
    # uncontrolled: net 0.05 kWh at 6 kW from plug-in = 3000 W in minute 0, no discharge
    assert result.uncontrolled_export_kwh == 0.0
    assert result.uncontrolled_cost == pytest.approx((4 + 1 + 1 + 1) / 60 * 0.30)
    assert result.saving == pytest.approx(7 / 60 * 0.30 - (9 / 60 * 0.30 - 1 / 60))
    (vehicle,) = result.vehicles
    assert vehicle.charged_kwh == pytest.approx(0.1)
    assert vehicle.discharged_kwh == pytest.approx(0.05)
    assert vehicle.uncontrolled_charged_kwh == pytest.approx(0.05)


def test_net_discharge_is_floored_at_zero():
    car_w = [-3000.0, -3000.0]
    grid_w = [1000.0 + w for w in car_w]  # exporting 2000 W
    result = whole(series(grid_w, 0.30, 0.10, (car(car_w, [True, True]),)))
    assert result.actual_cost == pytest.approx(-2 * 2 / 60 * 0.10)
    assert result.uncontrolled_cost == pytest.approx(2 * 1 / 60 * 0.30)
    (session,) = result.vehicles[0].sessions
    assert session.net_kwh == 0.0 and session.delivered_kwh == 0.0
    assert result.vehicles[0].uncontrolled_charged_kwh == 0.0


def test_uncontrolled_negative_grid_is_export_at_export_price():
    # PV surplus 6000 W in minutes 2-3 soaked up by the car; uncontrolled, the car charged at
    # plug-in (minutes 0-1, house 1000 W) and the surplus went to the grid.
    house_w = [1000.0, 1000.0, -6000.0, -6000.0]
    car_w = [0.0, 0.0, 6000.0, 6000.0]
    grid_w = [h + c for h, c in zip(house_w, car_w, strict=True)]  # 1000, 1000, 0, 0
    result = whole(series(grid_w, 0.30, 0.08, (car(car_w, [True] * 4),)))
    assert result.actual_cost == pytest.approx(2 / 60 * 0.30)
    assert result.uncontrolled_import_kwh == pytest.approx(14 / 60)
    assert result.uncontrolled_export_kwh == pytest.approx(12 / 60)
    assert result.uncontrolled_cost == pytest.approx(14 / 60 * 0.30 - 12 / 60 * 0.08)


def test_missing_minutes_are_excluded_on_both_sides():
    base = night_charge()
    grid_w = base.grid_w.copy()
    grid_w[0] = NAN  # actual 1 kW, uncontrolled 7 kW at 0.40: both dropped
    import_price = base.import_price_per_kwh.copy()
    import_price[3] = NAN  # house only on both sides: 1 kW at 0.10 dropped
    result = whole(MoneySeries(T0, grid_w, import_price, base.export_price_per_kwh, base.vehicles))
    assert result.minutes_counted == 4 and result.minutes_missing == 2
    assert result.actual_cost == pytest.approx(0.045 - 1 / 60 * 0.40 - 1 / 60 * 0.10)
    assert result.uncontrolled_cost == pytest.approx(0.105 - 7 / 60 * 0.40 - 1 / 60 * 0.10)
    assert result.import_kwh == pytest.approx(16 / 60)
    # the car's energy is known in every minute: the session is whole
    assert result.vehicles[0].charged_kwh == pytest.approx(0.2)
    assert result.vehicles[0].uncontrolled_charged_kwh == pytest.approx(0.2)


def test_unknown_car_power_while_plugged_drops_the_minute():
    car_w = [NAN, 0.0, 6000.0]
    grid_w = [1000.0, 1000.0, 7000.0]
    result = whole(series(grid_w, 0.20, 0.0, (car(car_w, [True] * 3),)))
    assert result.minutes_counted == 2
    (session,) = result.vehicles[0].sessions
    assert session.unknown_power_minutes == 1 and session.net_kwh == pytest.approx(0.1)
    # uncontrolled: 6 kW in minute 0 (dropped), house alone in 1 and 2
    assert result.actual_cost == pytest.approx(8 / 60 * 0.20)
    assert result.uncontrolled_cost == pytest.approx(2 / 60 * 0.20)


def test_nan_handling():
    # unplugged: an unknown or stray reading is not the car's and drops nothing
    stray = car([NAN, 500.0, 0.0], [False, False, False])
    result = whole(series([1000.0, 1000.0, 1000.0], 0.20, 0.0, (stray,)))
    assert result.minutes_counted == 3
    assert result.actual_cost == result.uncontrolled_cost == pytest.approx(3 / 60 * 0.20)
    assert result.vehicles[0].charged_kwh == 0.0 and result.vehicles[0].sessions == ()
    # a missing export price drops the minute even when importing (uncontrolled may export)
    result = whole(series([1000.0, 1000.0], 0.20, [0.05, NAN]))
    assert result.minutes_counted == 1
    # nothing known at all: zero costs, every minute missing
    result = whole(series([NAN, NAN], [NAN, NAN], [NAN, NAN]))
    assert (result.actual_cost, result.uncontrolled_cost, result.saving) == (0.0, 0.0, 0.0)
    assert result.minutes_missing == 2
    # SoC: first and last known of the session
    soc_car = car([6000.0, 6000.0, 0.0], [True] * 3, soc_pct=[NAN, 50.0, 51.0])
    (session,) = vehicle_sessions(soc_car, T0)
    assert (session.soc_start_pct, session.soc_end_pct) == (50.0, 51.0)
    (session,) = vehicle_sessions(car([0.0], [True], soc_pct=[NAN]), T0)
    assert session.soc_start_pct is None and session.soc_end_pct is None


def test_session_cut_by_window_start():
    # Plugged minutes 1-8, charged in minutes 5-6; uncontrolled would have charged in minutes 1-2,
    # before a window of minutes 3-6.
    car_w = [0.0, 0, 0, 0, 0, 6000, 6000, 0, 0, 0]
    plugged = [False] + [True] * 8 + [False]
    s = series(list(car_w), 0.30, 0.0, (car(car_w, plugged),))
    result = money_between(s, T0 + 3 * MIN, T0 + 7 * MIN)
    assert result.minutes_total == result.minutes_counted == 4
    assert result.actual_cost == pytest.approx(0.2 * 0.30)
    assert result.uncontrolled_cost == 0.0
    (vehicle,) = result.vehicles
    assert vehicle.charged_kwh == pytest.approx(0.2) and vehicle.uncontrolled_charged_kwh == 0.0
    (session,) = vehicle.sessions  # whole, with its start before the window
    assert session.start_utc == T0 + MIN and session.end_utc == T0 + 9 * MIN
    assert session.net_kwh == pytest.approx(0.2) and not session.starts_before_data


def test_session_cut_by_window_end():
    # Plugged from minute 5 to the end of the data, charged in minutes 8-9; window minutes 0-7.
    car_w = [0.0, 0, 0, 0, 0, 0, 0, 0, 6000, 6000]
    plugged = [False] * 5 + [True] * 5
    s = series(list(car_w), 0.30, 0.0, (car(car_w, plugged),))
    result = money_between(s, T0, T0 + 8 * MIN)
    assert result.actual_cost == 0.0
    assert result.uncontrolled_cost == pytest.approx(0.2 * 0.30)
    assert result.vehicles[0].uncontrolled_charged_kwh == pytest.approx(0.2)
    assert result.vehicles[0].sessions[0].ends_after_data
    # the two windows add up to the whole series
    later = money_between(s, T0 + 8 * MIN, T0 + 10 * MIN)
    assert result.actual_cost + later.actual_cost == pytest.approx(whole(s).actual_cost)
    assert result.uncontrolled_cost + later.uncontrolled_cost == pytest.approx(whole(s).uncontrolled_cost)


def test_window_outside_the_series_is_missing():
    s = night_charge()
    result = money_between(s, T0 - 2 * MIN, T0 + 8 * MIN)
    assert (result.minutes_total, result.minutes_counted, result.minutes_missing) == (10, 6, 4)
    assert result.saving == pytest.approx(0.06)
    empty = money_between(s, T0 + 60 * MIN, T0 + 70 * MIN)
    assert empty.minutes_counted == 0 and empty.actual_cost == 0.0
    with pytest.raises(ValueError):
        money_between(s, T0 + MIN, T0)


def test_undelivered_energy_is_reported():
    # 0.3 kWh charged in a 3-minute session with max 4 kW configured (noisy data): 0.2 kWh fit.
    car_w = [6000.0, 6000.0, 6000.0]
    result = whole(series(list(car_w), 0.20, 0.0, (car(car_w, [True] * 3, max_charge_w=4000.0),)))
    (vehicle,) = result.vehicles
    assert vehicle.uncontrolled_charged_kwh == pytest.approx(0.2)
    assert vehicle.undelivered_kwh == pytest.approx(0.1)
    assert vehicle.sessions[0].delivered_kwh == pytest.approx(0.2)


def test_two_cars():
    # Car a as in night_charge; car b plugged minutes 2-5 charges at once at its max 3 kW for
    # minutes 2-3: its uncontrolled profile is its actual one and it saves nothing.
    a_w = [0.0, 0, 0, 0, 6000, 6000]
    b_w = [0.0, 0, 3000, 3000, 0, 0]
    grid_w = [1000.0 + a + b for a, b in zip(a_w, b_w, strict=True)]
    prices = [0.40, 0.40, 0.40, 0.10, 0.10, 0.10]
    cars = (
        car(a_w, [True] * 6, vehicle_id="a"),
        car(b_w, [False, False, True, True, True, True], max_charge_w=3000.0, vehicle_id="b"),
    )
    result = whole(series(grid_w, prices, 0.05, cars))
    b_cost = (3 * 0.40 + 3 * 0.10) / 60
    assert result.actual_cost == pytest.approx(0.045 + b_cost)
    assert result.uncontrolled_cost == pytest.approx(0.105 + b_cost)
    assert result.saving == pytest.approx(0.06)
    assert [v.vehicle_id for v in result.vehicles] == ["a", "b"]
    assert result.vehicles[1].uncontrolled_charged_kwh == pytest.approx(0.1)
    with pytest.raises(ValueError, match="repeat"):
        whole(series(grid_w, prices, 0.05, (cars[0], cars[0])))


def test_efficiency_gives_the_stored_energy():
    car_w = [6000.0, -3000.0, 0.0]
    (session,) = vehicle_sessions(car(car_w, [True] * 3, charge_efficiency=0.9), T0)
    assert session.stored_kwh == pytest.approx(0.1 * 0.9 - 0.05 / 0.9)
    assert session.uncontrolled_stored_kwh == pytest.approx(0.05 * 0.9)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="lengths"):
        whole(series([1.0, 2.0], 0.2, 0.0, (car([0.0], [True]),)))
    with pytest.raises(ValueError, match="efficiency"):
        whole(series([1.0], 0.2, 0.0, (car([0.0], [True], charge_efficiency=0.0),)))
    with pytest.raises(ValueError, match="minute-aligned"):
        whole(series([1.0], 0.2, start=T0 + timedelta(seconds=30)))
    with pytest.raises(ValueError, match="aware"):
        money_between(night_charge(), datetime(2026, 6, 1), datetime(2026, 6, 2))


# --- periods -------------------------------------------------------------------------------------

AMS = "Europe/Amsterdam"


def test_dst_day_lengths_amsterdam():
    start, end = period_bounds(datetime(2026, 3, 29, 12, tzinfo=UTC), AMS, "today")
    assert (start, end) == (datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 29, 22, tzinfo=UTC))
    assert end - start == timedelta(hours=23)
    start, end = period_bounds(datetime(2026, 10, 25, 12, tzinfo=UTC), AMS, "today")
    assert (start, end) == (datetime(2026, 10, 24, 22, tzinfo=UTC), datetime(2026, 10, 25, 23, tzinfo=UTC))
    assert end - start == timedelta(hours=25)
    start, end = period_bounds(datetime(2026, 6, 1, 12, tzinfo=UTC), ZoneInfo(AMS), "today")
    assert end - start == timedelta(hours=24)


def test_local_day_boundary_and_month():
    # 21:59 UTC on 29 March is 23:59 CEST, still the 29th; 22:00 UTC is the 30th.
    assert period_bounds(datetime(2026, 3, 29, 21, 59, tzinfo=UTC), AMS, "today")[0].day == 28
    assert period_bounds(datetime(2026, 3, 29, 22, 0, tzinfo=UTC), AMS, "today")[0] == datetime(
        2026, 3, 29, 22, tzinfo=UTC
    )
    start, end = period_bounds(datetime(2026, 3, 15, tzinfo=UTC), AMS, "month")
    assert (start, end) == (datetime(2026, 2, 28, 23, tzinfo=UTC), datetime(2026, 3, 31, 22, tzinfo=UTC))
    assert end - start == timedelta(days=31, hours=-1)
    start, end = period_bounds(datetime(2026, 12, 31, 23, 30, tzinfo=UTC), AMS, "month")  # 1 Jan local
    assert (start, end) == (datetime(2026, 12, 31, 23, tzinfo=UTC), datetime(2027, 1, 31, 23, tzinfo=UTC))
    with pytest.raises(ValueError):
        period_bounds(datetime(2026, 3, 15, tzinfo=UTC), AMS, "week")  # type: ignore[arg-type]


@pytest.mark.parametrize(("day", "minutes"), [(29, 23 * 60), (25, 25 * 60)])
def test_money_over_a_dst_day(day: int, minutes: int):
    month = 3 if day == 29 else 10
    data_start = datetime(2026, month, day - 1, 12, tzinfo=UTC)
    n = 2 * 24 * 60
    s = MoneySeries(data_start, np.full(n, 600.0), np.full(n, 0.25), np.full(n, 0.05))
    start, end = period_bounds(datetime(2026, month, day, 12, tzinfo=UTC), AMS, "today")
    result = money_between(s, start, end)
    assert result.minutes_total == result.minutes_counted == minutes
    assert result.actual_cost == pytest.approx(minutes * 600 * KWH_PER_W_MINUTE * 0.25)
    # the dashboard's "today" so far: up to the last complete minute
    so_far = money_for_period(s, start + timedelta(minutes=90, seconds=30), AMS, "today")
    assert so_far.minutes_total == so_far.minutes_counted == 90


# --- properties ----------------------------------------------------------------------------------

finite_w = st.floats(-20_000, 20_000, allow_nan=False)
maybe_w = st.one_of(finite_w, st.just(NAN))
price = st.one_of(st.floats(-0.5, 1.0, allow_nan=False), st.just(NAN))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(maybe_w, price, price), min_size=0, max_size=60))
def test_without_a_car_actual_equals_uncontrolled(minutes: list[tuple[float, float, float]]):
    grid_w = [m[0] for m in minutes]
    s = series(grid_w, [m[1] for m in minutes], [m[2] for m in minutes])
    result = whole(s)
    assert result.actual_cost == result.uncontrolled_cost
    assert result.saving == 0.0
    assert result.import_kwh == result.uncontrolled_import_kwh


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-11_000, 11_000, allow_nan=False), st.booleans()), min_size=1, max_size=60),
    st.floats(1000, 11_000),
    st.floats(-5000, 5000, allow_nan=False),
)
def test_uncontrolled_car_takes_the_net_energy_where_it_fits(
    minutes: list[tuple[float, bool]], max_charge_w: float, house_w: float
):
    car_w = [m[0] for m in minutes]
    plugged = [m[1] for m in minutes]
    vehicle = car(car_w, plugged, max_charge_w=max_charge_w)
    s = series([house_w + (w if p else 0.0) for w, p in minutes], 0.3, 0.1, (vehicle,))
    result = whole(s)
    sessions = result.vehicles[0].sessions
    for (first, end), session in zip(plugged_sessions(plugged), sessions, strict=True):
        fits = session.net_kwh <= (end - first) * max_charge_w * KWH_PER_W_MINUTE
        if fits:
            assert session.undelivered_kwh == pytest.approx(0.0, abs=1e-9)
            assert session.delivered_kwh == pytest.approx(session.net_kwh)
        assert session.delivered_kwh + session.undelivered_kwh == pytest.approx(session.net_kwh)
        assert session.net_kwh == pytest.approx(max(session.charged_kwh - session.discharged_kwh, 0.0))
    delivered_kwh = sum(session.delivered_kwh for session in sessions)
    assert result.vehicles[0].uncontrolled_charged_kwh == pytest.approx(delivered_kwh, abs=1e-9)
    # the house stays as measured: uncontrolled grid = house + uncontrolled car
    net_import_kwh = result.uncontrolled_import_kwh - result.uncontrolled_export_kwh
    assert net_import_kwh == pytest.approx(
        house_w * len(minutes) * KWH_PER_W_MINUTE + delivered_kwh, abs=1e-6
    )
