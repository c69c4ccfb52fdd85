"""Sites and snapshots for the optimiser tests, and how a snapshot becomes optimiser inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from controller.config import SiteConfig, parse_config
from controller.domain import Plan
from controller.optimizer import Planner, SiteShape
from controller.optimizer.inputs import build_inputs
from controller.snapshot import Snapshot

T0 = datetime(2025, 1, 6, 16, 0, tzinfo=UTC)


def vehicle(
    vid: str = "ev",
    *,
    capacity_kwh: float = 60.0,
    v2g: bool = True,
    v2h: bool = True,
    v2l: bool = True,
    reserve_percent: float = 20.0,
    max_soc_percent: float = 90.0,
    max_charge_kw: float = 11.0,
    max_discharge_kw: float = 10.0,
    efficiency: float = 0.92,
    degradation_cost_per_kwh: float = 0.05,
) -> dict[str, Any]:
    discharge = max_discharge_kw if (v2g or v2h) else 0.0
    return {
        "id": vid,
        "usable_capacity_kwh": capacity_kwh,
        "charge_efficiency": efficiency,
        "discharge_efficiency": efficiency,
        "max_charge_kw": max_charge_kw,
        "max_discharge_kw": discharge,
        "reserve": {"percent": reserve_percent},
        "max_soc_percent": max_soc_percent,
        "default_target_soc_percent": max(reserve_percent + 1, min(80.0, max_soc_percent)),
        "permissions": {"v2g": v2g, "v2h": v2h, "v2l": v2l},
        "degradation_cost_per_kwh": degradation_cost_per_kwh,
        "home_charger": f"wb-{vid}",
    }


def site(
    vehicles: list[dict[str, Any]],
    *,
    import_kw: float = 17.3,
    export_kw: float = 10.0,
    step_minutes: int = 15,
    horizon_hours: int = 24,
    charger: dict[str, Any] | None = None,
    chargers_by_vehicle: dict[str, dict[str, Any]] | None = None,
    **optimizer: Any,
) -> SiteConfig:
    """A site with one charger per vehicle; ``charger`` adds fields to each (e.g. ``min_current_a``:
    by default 6 A on three phases, so powers below 4.14 kW are pulsed), ``chargers_by_vehicle``
    to the charger of one vehicle."""
    chargers = [
        {
            "id": v["home_charger"],
            "max_charge_kw": 22.0,
            "max_discharge_kw": 22.0 if v["max_discharge_kw"] > 0 else 0.0,
            "bidirectional": v["max_discharge_kw"] > 0,
            **(charger or {}),
            **(chargers_by_vehicle or {}).get(v["id"], {}),
        }
        for v in vehicles
    ]
    return parse_config(
        {
            "site": {
                "timezone": "Europe/Amsterdam",
                "plan_step_minutes": step_minutes,
                "horizon_hours": horizon_hours,
                "grid": {
                    "import_limit_kw": import_kw,
                    "export_limit_kw": export_kw,
                },
            },
            "chargers": chargers,
            "vehicles": vehicles,
            "tariff": {"import": {"static_price_per_kwh": 0.3}},
            "optimizer": optimizer,
        },
        env={},
    )


def snapshot(
    steps: int,
    vehicles: list[dict[str, Any]],
    *,
    time: datetime = T0,
    load_w: Any = 500.0,
    pv_w: Any = 0.0,
    import_price: Any = 0.3,
    export_price: Any = 0.1,
    **extra: Any,
) -> Snapshot:
    def series(value: Any) -> list[float]:
        arr = np.broadcast_to(np.asarray(value, dtype=float), (steps,))
        return [float(x) for x in arr]

    return Snapshot.model_validate(
        {
            "time": time,
            "vehicles": vehicles,
            "load_w": series(load_w),
            "pv_w": series(pv_w),
            "import_price_per_kwh": series(import_price),
            "export_price_per_kwh": series(export_price),
            **extra,
        }
    )


def soc_at(plan: Plan, vid: str, moment: datetime) -> float:
    """SoC (%) at the step boundary at or before ``moment``."""
    index = int((moment - plan.start) // plan.step)
    return plan.vehicles[vid].soc_percent[index]


# ------------------------------------------------------------------ inputs translation


def test_partial_first_step_is_scaled_and_reported_as_real_power() -> None:
    cfg = site([vehicle()])
    now = T0 + timedelta(minutes=7)  # 8 of 15 minutes left in the first step
    snap = snapshot(96, [{"id": "ev", "soc_percent": 30, "plugged_in": True, "mode": "charge_now"}], time=now)
    planner = Planner(cfg)
    inputs = build_inputs(snap, planner.shape)
    assert inputs.start == T0
    assert inputs.first_step_fraction == pytest.approx(8 / 15)
    assert inputs.charge_ub_kw[0, 0] == pytest.approx(11.0 * 8 / 15)
    plan = planner.plan(snap)
    vp = plan.vehicles["ev"]
    assert vp.power_w[0] == pytest.approx(11_000.0, rel=1e-6)
    gained_kwh = (vp.soc_percent[1] - vp.soc_percent[0]) / 100 * 60
    assert gained_kwh == pytest.approx(11.0 * 0.92 * 8 / 60, rel=1e-6)
    assert plan.grid_import_w[0] == pytest.approx(11_500.0, rel=1e-6)


def test_departure_without_return_makes_the_car_unavailable_after_it() -> None:
    cfg = site([vehicle()])
    dep = T0 + timedelta(hours=5, minutes=10)
    snap = snapshot(
        96,
        [
            {
                "id": "ev",
                "soc_percent": 50,
                "plugged_in": True,
                "departure": {"at": dep, "target_soc_percent": 80},
            }
        ],
    )
    inputs = build_inputs(snap, SiteShape.from_config(cfg))
    k = 20  # 21:00-21:15 holds the departure
    assert inputs.available[0, :k].all() and not inputs.available[0, k:].any()
    (target,) = inputs.targets[0]
    assert target.index == k and target.target_kwh == pytest.approx(48.0)
    assert inputs.floor_kwh[0, k - 1] == pytest.approx(48.0)
    assert inputs.target_gap_kwh[0, k - 1] == pytest.approx(48.0 - 12.0)


def test_trip_energy_spread_over_the_away_steps_and_car_back_after_arrival() -> None:
    cfg = site([vehicle()])
    depart, arrive = T0 + timedelta(hours=2, minutes=5), T0 + timedelta(hours=3, minutes=5)
    snap = snapshot(
        96,
        [
            {
                "id": "ev",
                "soc_percent": 50,
                "plugged_in": True,
                "departure": {"at": depart, "target_soc_percent": 70},
                "away": [{"depart": depart, "arrive": arrive, "energy_kwh": 12}],
            }
        ],
    )
    inputs = build_inputs(snap, SiteShape.from_config(cfg))
    away = ~inputs.available[0]
    assert np.flatnonzero(away).tolist() == list(range(8, 13))
    assert inputs.trip_kwh[0].sum() == pytest.approx(12.0)
    assert inputs.trip_kwh[0, 8] == pytest.approx(12.0 * 10 / 60)
    assert inputs.trip_kwh[0, 12] == pytest.approx(12.0 * 5 / 60)
    plan = Planner(cfg).plan(snap)
    assert soc_at(plan, "ev", T0 + timedelta(hours=2)) >= 70 - 1e-6
    assert inputs.available[0, 13:].all()  # back home after the trip
    assert all(plan.vehicles["ev"].power_w[k] == 0 for k in range(8, 13))


def test_unplugged_car_waits_for_the_end_of_the_trip_under_way() -> None:
    cfg = site([vehicle()])
    snap = snapshot(
        96,
        [
            {
                "id": "ev",
                "soc_percent": 40,
                "plugged_in": False,
                "away": [
                    {"depart": T0 - timedelta(hours=1), "arrive": T0 + timedelta(hours=1), "energy_kwh": 8}
                ],
            }
        ],
    )
    inputs = build_inputs(snap, SiteShape.from_config(cfg))
    assert not inputs.available[0, :4].any() and inputs.available[0, 4:].all()
    assert inputs.trip_kwh[0].sum() == pytest.approx(4.0)  # half the trip is already behind


def test_unplugged_car_without_known_return_is_away_all_horizon() -> None:
    inputs = build_inputs(
        snapshot(96, [{"id": "ev", "soc_percent": 40, "plugged_in": False}]),
        SiteShape.from_config(site([vehicle()])),
    )
    assert not inputs.available.any()


def test_departure_after_the_horizon_sets_what_must_be_in_the_car_at_its_end() -> None:
    cfg = site([vehicle()], horizon_hours=4)
    dep = T0 + timedelta(hours=6)  # 2 h after the horizon: 2 h x 11 kW x 0.92 can still be charged
    inputs = build_inputs(
        snapshot(
            16,
            [
                {
                    "id": "ev",
                    "soc_percent": 20,
                    "plugged_in": True,
                    "departure": {"at": dep, "target_soc_percent": 90},
                }
            ],
        ),
        SiteShape.from_config(cfg),
    )
    (target,) = inputs.targets[0]
    assert target.beyond_horizon and target.index == 16
    assert target.target_kwh == pytest.approx(54.0 - 2 * 11 * 0.92)
    assert inputs.available[0].all()


def test_passed_departure_and_unknown_soc_and_unpermitted_v2l_are_noted() -> None:
    cfg = site([vehicle(v2l=False)])
    snap = snapshot(
        96,
        [
            {
                "id": "ev",
                "soc_percent": None,
                "plugged_in": True,
                "departure": {"at": T0 - timedelta(minutes=30), "target_soc_percent": 80},
                "v2l": {"start": T0, "end": None, "power_w": 1000},
            }
        ],
        import_price=0.5,
        export_price=0.6,
    )
    planner = Planner(cfg)
    plan = planner.plan(snap)
    notes = " | ".join(plan.notes)
    assert "departure" in notes and "passed" in notes
    assert "SoC unknown" in notes
    assert "V2L is not permitted" in notes
    assert "export price above import price" in notes
    assert planner.last_inputs is not None
    assert not planner.last_inputs.discharge_ub_kw.any() and not planner.last_inputs.v2l_kw.any()
    assert np.all(planner.last_inputs.export_price_model <= planner.last_inputs.import_price)
    assert min(plan.vehicles["ev"].power_w) >= 0


# An evening peak that pays for discharging, a cheap night that pays for filling up, a dear day.
PEAK_IMPORT = np.select([np.arange(96) < 12, np.arange(96) < 40], [0.45, 0.02], 0.40)
PEAK_EXPORT = np.where(np.arange(96) < 12, 0.80, 0.01)


def ev_limits(**limits: Any) -> list[dict[str, Any]]:
    return [{"id": "ev", "soc_percent": 70, "plugged_in": True, "session_limits": limits or None}]


def test_the_evs_session_limits_tighten_power_floor_and_ceiling_of_the_plan() -> None:
    planner = Planner(site([vehicle()]))  # 60 kWh, reserve 20 %, max SoC 90 %, 11 kW / 10 kW
    free = planner.plan(snapshot(96, ev_limits(), import_price=PEAK_IMPORT, export_price=PEAK_EXPORT))
    assert min(free.vehicles["ev"].power_w) < -3000.0 and min(free.vehicles["ev"].soc_percent) < 50.0
    assert max(free.vehicles["ev"].power_w) > 5000.0 and max(free.vehicles["ev"].soc_percent) > 80.0

    limits = {
        "max_charge_power_w": 5000,
        "max_discharge_power_w": 3000,
        "min_soc_percent": 50,
        "max_soc_percent": 80,
    }
    snap = snapshot(96, ev_limits(**limits), import_price=PEAK_IMPORT, export_price=PEAK_EXPORT)
    plan = planner.plan(snap)
    power, soc = plan.vehicles["ev"].power_w, plan.vehicles["ev"].soc_percent
    assert plan.solver_status == "optimal"
    assert min(power) >= -3000.0 - 1e-3 and min(power) < -2900.0  # still discharges, within the cap
    assert max(power) <= 5000.0 + 1e-3
    assert min(soc) >= 50.0 - 1e-3 and max(soc) <= 80.0 + 1e-3
    inputs = build_inputs(snap, planner.shape)
    assert inputs.charge_ub_kw.max() == pytest.approx(5.0) and inputs.discharge_ub_kw.max() == pytest.approx(
        3.0
    )
    assert inputs.floor_kwh.min() == pytest.approx(30.0) and inputs.e_max_kwh.max() == pytest.approx(48.0)
    assert inputs.target_gap_kwh.max() == 0.0  # the EV's floor is priced as a reserve, not as a target


def test_the_evs_session_limits_never_loosen_the_config() -> None:
    shape = Planner(site([vehicle()])).shape
    loose = {
        "max_charge_power_w": 50_000,
        "max_discharge_power_w": 50_000,
        "min_soc_percent": 5,
        "max_soc_percent": 100,
    }
    inputs = build_inputs(snapshot(96, ev_limits(**loose)), shape)
    assert inputs.charge_ub_kw.max() == pytest.approx(11.0) and inputs.discharge_ub_kw.max() == pytest.approx(
        10.0
    )
    assert inputs.floor_kwh.min() == pytest.approx(12.0) and inputs.e_max_kwh.max() == pytest.approx(54.0)
    # The EV's floor above the SoC now stops discharge without forcing a charge at any price.
    below = [{"id": "ev", "soc_percent": 40, "plugged_in": True, "session_limits": {"min_soc_percent": 50}}]
    assert build_inputs(snapshot(96, below), shape).floor_kwh.min() == pytest.approx(24.0)
    # A departure target above the EV's ceiling still wins; a later departure needs more by the
    # horizon's end when the EV charges slower than the config allows.
    leave = {"at": T0 + timedelta(hours=6), "target_soc_percent": 85}
    capped = [{**below[0], "departure": leave, "session_limits": {"max_soc_percent": 60}}]
    assert build_inputs(snapshot(96, capped), shape).e_max_kwh.max() == pytest.approx(51.0)
    short = Planner(site([vehicle()], horizon_hours=4)).shape
    late = {"at": T0 + timedelta(hours=6), "target_soc_percent": 90}
    slow = [{"id": "ev", "soc_percent": 20, "plugged_in": True, "departure": late}]
    slow[0]["session_limits"] = {"max_charge_power_w": 5000}
    (target,) = build_inputs(snapshot(16, slow), short).targets[0]
    assert target.target_kwh == pytest.approx(54.0 - 2 * 5 * 0.92)


def test_session_limits_with_the_floor_above_the_ceiling_are_refused() -> None:
    with pytest.raises(ValueError, match="min_soc_percent 60"):
        snapshot(4, ev_limits(min_soc_percent=60, max_soc_percent=40))
    with pytest.raises(ValueError):
        snapshot(4, ev_limits(max_discharge_power_w=-1))


def test_vehicle_missing_from_snapshot_is_left_out_of_the_plan() -> None:
    cfg = site([vehicle("a"), vehicle("b")])
    plan = Planner(cfg).plan(snapshot(96, [{"id": "a", "soc_percent": 50, "plugged_in": True}]))
    assert set(plan.vehicles) == {"a"}
    assert plan.solver_status == "optimal"


def test_modes_charge_now_and_no_discharge() -> None:
    cfg = site([vehicle("a"), vehicle("b")])
    prices = np.where(np.arange(96) < 8, 0.9, 0.1)  # expensive now, cheap later
    plan = Planner(cfg).plan(
        snapshot(
            96,
            [
                {"id": "a", "soc_percent": 40, "plugged_in": True, "mode": "charge_now"},
                {"id": "b", "soc_percent": 80, "plugged_in": True, "mode": "no_discharge"},
            ],
            import_price=prices,
            export_price=prices - 0.05,
        )
    )
    assert plan.vehicles["a"].power_w[0] == pytest.approx(11_000.0)
    assert plan.vehicles["a"].reason.startswith("charging 11.0 kW now")
    assert min(plan.vehicles["b"].power_w) >= 0.0


def test_charge_now_fills_to_the_max_soc_or_to_what_the_driver_asked() -> None:
    cfg = site([vehicle("a")])  # 60 kWh, max 90 %
    prices = np.full(96, 0.3)

    def final_soc(**extra: Any) -> float:
        car = {"id": "a", "soc_percent": 80, "plugged_in": True, "mode": "charge_now", **extra}
        plan = Planner(cfg).plan(snapshot(96, [car], import_price=prices, export_price=prices - 0.2))
        return plan.vehicles["a"].soc_percent[-1]

    assert final_soc() == pytest.approx(90.0, abs=0.1)
    assert final_soc(charge_to_percent=100) == pytest.approx(100.0, abs=0.1)


def test_site_without_vehicles_plans_the_grid_only() -> None:
    cfg = parse_config(
        {"site": {"grid": {"import_limit_kw": 10}}, "tariff": {"import": {"static_price_per_kwh": 0.3}}},
        env={},
    )
    plan = Planner(cfg).plan(snapshot(96, [], load_w=800.0, pv_w=300.0))
    assert plan.vehicles == {} and plan.solver_status == "no vehicles"
    assert plan.grid_import_w[5] == pytest.approx(500.0)
    assert plan.import_cost == pytest.approx(0.3 * 0.5 * 24)


def test_terminal_value_is_the_mean_import_or_the_upper_quartile_export_price() -> None:
    shape = SiteShape.from_config(site([vehicle()]))
    steps = shape.steps
    ramp = np.linspace(0.0, 0.4, steps)  # mean 0.2, upper quartile 0.3

    def value(import_price: Any, export_price: Any) -> float:
        inputs = build_inputs(
            snapshot(steps, [], import_price=import_price, export_price=export_price), shape
        )
        return float(inputs.terminal_value[0])

    # Export paid little: a kWh left is worth what it saves on import.
    assert value(ramp, 0.05) == pytest.approx(0.2)
    # Export paid the import price (net metering): worth what it fetches at a good hour.
    assert value(ramp, ramp) == pytest.approx(0.3, abs=0.4 / steps)
    # Never negative, and a configured value wins.
    assert value(-0.1, -0.2) == 0.0
    configured = SiteShape.from_config(site([vehicle()], terminal_value_per_kwh=0.12))
    assert build_inputs(snapshot(steps, [], import_price=ramp, export_price=ramp), configured).terminal_value[
        0
    ] == pytest.approx(0.12)


def test_a_running_v2l_session_is_served_now_not_after_an_unreachable_departure() -> None:
    # Unplugged at 30 % (6 kWh above the reserve), 2 kW of V2L with no end, 80 % wanted at a
    # departure the car cannot reach. The session ranks above the target: it runs now and is cut
    # once the reserve is reached, and nothing is budgeted after the car has left.
    cfg = site([vehicle()])
    dep = T0 + timedelta(hours=14)
    state = {
        "id": "ev",
        "soc_percent": 30,
        "plugged_in": False,
        "departure": {"at": dep, "target_soc_percent": 80},
        "v2l": {"start": T0, "end": None, "power_w": 2000},
    }
    planner = Planner(cfg)
    plan = planner.plan(snapshot(96, [state]))
    assert planner.last_inputs is not None
    k = 56  # the step the car leaves in
    assert planner.last_inputs.v2l_kw[0, :k].all() and not planner.last_inputs.v2l_kw[0, k:].any()
    vp = plan.vehicles["ev"]
    served = np.flatnonzero(np.asarray(vp.v2l_power_w) > 1.0)
    assert served[0] == 0 and served.tolist() == list(range(len(served)))  # from now on, cut at the end
    assert vp.v2l_power_w[0] == pytest.approx(2000.0)
    assert vp.reason == "not plugged in; V2L 2.0 kW"
    assert min(vp.soc_percent) == pytest.approx(20.0)
    assert vp.departure_shortfall_kwh == pytest.approx(48.0 - 12.0)


def test_v2l_cut_above_the_reserve_names_what_the_energy_is_kept_for() -> None:
    # Camping at 30 % (6 kWh above the reserve): the drive home at 19:00 local needs all of it.
    cfg = site([vehicle()])
    trip = {"depart": T0 + timedelta(hours=2), "arrive": T0 + timedelta(hours=3), "energy_kwh": 6}
    v2l = {"start": T0, "end": T0 + timedelta(hours=2), "power_w": 2000}
    planner = Planner(cfg)

    def plan_for(soc_percent: float) -> Any:
        state = {"id": "ev", "soc_percent": soc_percent, "plugged_in": False, "away": [trip], "v2l": v2l}
        return planner.plan(snapshot(96, [state])).vehicles["ev"]

    kept = plan_for(30)
    assert max(kept.v2l_power_w) == 0.0
    assert kept.reason == "not plugged in; V2L stopped to keep energy for the 19:00 trip"
    at_reserve = plan_for(20)
    assert at_reserve.reason == "not plugged in; V2L stopped at the reserve"


def test_charging_for_a_trip_names_the_trip() -> None:
    # A 20 kWh trip at 18:00 local would take the car from 30 % far below its reserve.
    cfg = site([vehicle()])
    trip: dict[str, Any] = {
        "depart": T0 + timedelta(hours=1),
        "arrive": T0 + timedelta(hours=5),
        "energy_kwh": 20,
    }
    state = {"id": "ev", "soc_percent": 30, "plugged_in": True, "away": [trip]}
    vp = Planner(cfg).plan(snapshot(96, [state])).vehicles["ev"]
    assert vp.reason == "charging 11.0 kW for the 18:00 trip (20 kWh)"
    trip["target_soc_percent"] = 80  # a trip's own target (perfect foresight)
    vp = Planner(cfg).plan(snapshot(96, [state])).vehicles["ev"]
    assert vp.reason.startswith("charging 11.0 kW for the 18:00 trip (target 80 %")


def test_a_departure_that_is_also_a_scheduled_trip_counts_its_shortfall_once() -> None:
    # The daemon sends the next departure and the weekly schedule's trip that starts with it: the
    # same step, the same target. The shortfall (the target is out of reach in 2 h) is reported once.
    cfg = site([vehicle()])
    leave = T0 + timedelta(hours=2)
    departure = {"at": leave, "target_soc_percent": 80}
    trip = {"depart": leave, "arrive": leave + timedelta(hours=8), "energy_kwh": 7, "target_soc_percent": 80}
    alone = {"id": "ev", "soc_percent": 25, "plugged_in": True, "departure": departure}
    both = {**alone, "away": [trip]}
    once = Planner(cfg).plan(snapshot(96, [alone])).vehicles["ev"]
    twice = Planner(cfg).plan(snapshot(96, [both])).vehicles["ev"]
    assert once.departure_shortfall_kwh > 1.0
    assert twice.departure_shortfall_kwh == pytest.approx(once.departure_shortfall_kwh, abs=1e-3)
    assert "departure" in twice.reason and "trip" not in twice.reason


@pytest.mark.parametrize(
    ("soc_percent", "trip_kwh", "hours_before", "import_kw", "cut_kwh"),
    [
        (70, 500, 2, 17.3, 500 - 54.0),  # more than the car holds: at most its max SoC, 54 kWh
        (30, 40, 1, 17.3, 40 - (18 + 11 * 0.92)),  # more than 1 h of charging can put in
        (30, 40, 1, 3.5, 40 - (18 + 3 * 0.92)),  # the import cap leaves 3 kW for the car
    ],
)
def test_a_trip_longer_than_the_car_can_supply_is_cut_to_an_empty_car_and_noted(
    soc_percent: float, trip_kwh: float, hours_before: int, import_kw: float, cut_kwh: float
) -> None:
    cfg = site([vehicle()], import_kw=import_kw)
    depart = T0 + timedelta(hours=hours_before)
    trip = {"depart": depart, "arrive": depart + timedelta(hours=4), "energy_kwh": trip_kwh}
    planner = Planner(cfg)
    plan = planner.plan(
        snapshot(96, [{"id": "ev", "soc_percent": soc_percent, "plugged_in": True, "away": [trip]}])
    )
    assert plan.solver_status == "optimal"
    assert planner.last_inputs is not None
    assert planner.last_inputs.trip_kwh.sum() == pytest.approx(trip_kwh - cut_kwh)
    (info,) = planner.last_inputs.trips[0]
    assert info.clipped_kwh == pytest.approx(cut_kwh) and info.energy_kwh == pytest.approx(trip_kwh - cut_kwh)
    local = depart.astimezone(ZoneInfo("Europe/Amsterdam")).strftime("%Y-%m-%d %H:%M")
    assert plan.notes == (
        f"ev: the trip at {local} needs {cut_kwh:.1f} kWh more than the car can hold or take in before it; "
        "planned with an empty car on arrival",
    )
    soc = plan.vehicles["ev"].soc_percent
    assert min(soc) == 0.0
    assert soc[hours_before * 4 + 16] == 0.0  # empty on arrival


def test_cars_sharing_an_import_cap_that_still_go_below_zero_are_noted() -> None:
    # Each car alone could take in 6 kW before its trip; together they share those 6 kW.
    cfg = site([vehicle("a"), vehicle("b")], import_kw=6.5)
    depart = T0 + timedelta(hours=1)
    trip = {"depart": depart, "arrive": depart + timedelta(hours=4), "energy_kwh": 20}
    cars = [{"id": vid, "soc_percent": 10, "plugged_in": True, "away": [trip]} for vid in ("a", "b")]
    plan = Planner(cfg).plan(snapshot(96, cars))
    below = [vid for vid, vp in plan.vehicles.items() if min(vp.soc_percent) < 0]
    assert below
    for vid in below:
        assert f"{vid}: SoC below 0 % planned: its trips take more than the plan puts in" in plan.notes
