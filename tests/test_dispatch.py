"""Dispatcher: plan step + live readings -> setpoints, with the safety clamps applied at once."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.config import OcppVersion, SiteConfig, parse_config
from controller.dispatch import Dispatcher, DispatchInputs, VehicleLive, VehicleMode
from controller.domain import Plan, VehiclePlan
from controller.ocpp.profiles import ChargerLimits, tx_profile_payload
from tests.conftest import EXAMPLE_ENV

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
STEP = timedelta(minutes=15)


def site(**vehicle_overrides: Any) -> SiteConfig:
    data = yaml.safe_load((ROOT / "configs" / "home.example.yaml").read_text())
    data = copy.deepcopy(data)
    data["chargers"][0]["min_current_a"] = 0  # exact numbers in most tests; snapping is tested on its own
    data["vehicles"][0].update(vehicle_overrides)
    return parse_config(data, env=EXAMPLE_ENV)


def plan(
    power_w: list[float],
    export_w: list[float] | None = None,
    created: datetime = T0,
    import_w: list[float] | None = None,
) -> Plan:
    """A plan whose charging comes from the grid unless ``import_w`` says otherwise."""
    n = len(power_w)
    export = export_w or [0.0] * n
    imports = import_w if import_w is not None else [max(0.0, p) for p in power_w]
    return Plan(
        created_at=created,
        start=T0,
        step=STEP,
        vehicles={"family-ev": VehiclePlan("family-ev", tuple(power_w), tuple([50.0] * (n + 1)), "planned")},
        grid_import_w=tuple(imports),
        grid_export_w=tuple(export),
        import_price_per_kwh=tuple([0.3] * n),
        export_price_per_kwh=tuple([0.1] * n),
        solver_status="optimal",
        solve_time_ms=1.0,
    )


def inputs(
    p: Plan | None,
    grid_w: float | None,
    car_w: float | None = 0.0,
    soc: float | None = 60.0,
    now: datetime = T0 + timedelta(minutes=1),
    **kw: Any,
) -> DispatchInputs:
    live = VehicleLive(
        "family-ev",
        True,
        "wallbox-garage",
        soc,
        car_w,
        kw.pop("mode", VehicleMode.AUTO),
        departure_at=kw.pop("departure_at", None),
        ev_max_charge_w=kw.pop("ev_max_charge_w", None),
        ev_max_discharge_w=kw.pop("ev_max_discharge_w", None),
        ev_min_soc_percent=kw.pop("ev_min_soc_percent", None),
    )
    return DispatchInputs(
        now, p, (live,), grid_w, kw.pop("import_w", 17300.0), kw.pop("export_w", 10000.0), **kw
    )


def one(dispatcher: Dispatcher, i: DispatchInputs) -> Any:
    commands = dispatcher.dispatch(i)
    assert len(commands) == 1
    return commands[0]


def test_follows_planned_charging_and_schedules_the_plan() -> None:
    d = Dispatcher(site())
    cmd = one(d, inputs(plan([7000.0, 7000.0, 3000.0, 0.0] + [0.0] * 12), grid_w=800.0))
    assert cmd.setpoint_w == 7000.0 and cmd.send
    offsets = [(p.start_offset, p.setpoint_w) for p in cmd.schedule.periods]
    assert offsets == [(timedelta(0), 7000.0), (timedelta(minutes=29), 3000.0), (timedelta(minutes=44), 0.0)]
    assert cmd.schedule.valid_until - cmd.schedule.start == timedelta(hours=2)


def test_v2h_follows_measured_home_load() -> None:
    d = Dispatcher(site())
    # The car discharges 3 kW, the grid still imports 1.5 kW: the home needs 4.5 kW.
    cmd = one(d, inputs(plan([-3000.0] * 8), grid_w=1500.0, car_w=-3000.0))
    assert cmd.setpoint_w == pytest.approx(-4500.0)
    # Load drops to 1 kW net: never export by accident.
    cmd = one(d, inputs(plan([-3000.0] * 8), grid_w=-2000.0, car_w=-3000.0))
    assert cmd.setpoint_w == pytest.approx(-1000.0)
    # PV covers the home: the car stops.
    cmd = one(d, inputs(plan([-3000.0] * 8), grid_w=-2500.0, car_w=-1000.0))
    assert cmd.setpoint_w == 0.0


def test_v2g_export_kept_but_clamped_to_export_limit() -> None:
    d = Dispatcher(site())
    p = plan([-10000.0] * 8, export_w=[9000.0] * 8)
    cmd = one(d, inputs(p, grid_w=-2000.0, car_w=0.0))  # PV already exports 2 kW
    assert cmd.setpoint_w == pytest.approx(-8000.0)
    assert any("export limit" in r for r in cmd.reasons)


def test_without_v2g_the_car_never_exports_even_if_the_plan_says_so() -> None:
    d = Dispatcher(site(permissions={"v2g": False, "v2h": True, "v2l": False}))
    cmd = one(d, inputs(plan([-10000.0] * 8, export_w=[9000.0] * 8), grid_w=600.0, car_w=0.0))
    assert cmd.setpoint_w == pytest.approx(-600.0)
    assert all(p.setpoint_w >= 0 for p in cmd.schedule.periods[1:])


def test_import_limit_reduces_charging_at_once() -> None:
    d = Dispatcher(site())
    p = plan([11000.0] * 8)
    assert one(d, inputs(p, grid_w=1000.0)).setpoint_w == 11000.0
    cmd = one(d, inputs(p, grid_w=15000.0 + 11000.0, car_w=11000.0, now=T0 + timedelta(minutes=1, seconds=2)))
    assert cmd.setpoint_w == pytest.approx(2300.0)
    assert cmd.send, "a fuse clamp must not wait for the rate limit"


def test_export_limit_absorbs_into_the_car() -> None:
    d = Dispatcher(site())
    cmd = one(d, inputs(plan([0.0] * 8), grid_w=-13000.0))
    assert cmd.setpoint_w == pytest.approx(3000.0)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"safe_mode": True}, "safe mode"),
        ({"soc": None}, "SoC unknown"),
        ({"soc": 18.0}, "at reserve"),
        ({"mode": VehicleMode.NO_DISCHARGE}, "no_discharge"),
    ],
)
def test_no_discharge_when_unsafe(kwargs: dict[str, Any], reason: str) -> None:
    d = Dispatcher(site())
    cmd = one(d, inputs(plan([-5000.0] * 8, export_w=[1000.0] * 8), grid_w=5000.0, **kwargs))
    assert cmd.setpoint_w == 0.0
    assert any(reason in r for r in cmd.reasons)
    assert all(p.setpoint_w >= 0 for p in cmd.schedule.periods)


def test_the_evs_own_power_caps_bound_setpoints_and_every_period_of_the_schedule() -> None:
    p = plan([-10000.0] * 4 + [11000.0] * 4, export_w=[9000.0] * 4 + [0.0] * 4)
    capped = one(Dispatcher(site()), inputs(p, grid_w=0.0, ev_max_charge_w=7400.0, ev_max_discharge_w=3000.0))
    assert capped.setpoint_w == pytest.approx(-3000.0)
    assert any("EV discharge limit 3000 W" in r for r in capped.reasons)
    periods = capped.schedule.periods
    assert {(q.max_charge_w, q.max_discharge_w) for q in periods} == {(7400.0, 3000.0)}
    assert [q.setpoint_w for q in periods] == [-3000.0, 7400.0]  # the later charging is capped too
    # Load following shares the home's load within the EV's cap.
    v2h = one(Dispatcher(site()), inputs(plan([-3000.0] * 8), grid_w=4500.0, ev_max_discharge_w=2000.0))
    assert v2h.setpoint_w == pytest.approx(-2000.0)
    # A cap above the config's never raises it.
    loose = one(
        Dispatcher(site()), inputs(p, grid_w=0.0, ev_max_charge_w=50_000.0, ev_max_discharge_w=50_000.0)
    )
    assert loose.setpoint_w == pytest.approx(-10000.0)
    assert loose.schedule.periods[0].max_discharge_w == 10000.0
    assert loose.schedule.periods[0].max_charge_w == 11000.0
    # An EV that allows no discharge now gets a charge-only schedule.
    none = one(Dispatcher(site()), inputs(p, grid_w=0.0, ev_max_discharge_w=0.0))
    assert none.setpoint_w == 0.0 and all(q.max_discharge_w == 0.0 for q in none.schedule.periods)


def test_a_lower_ev_cap_goes_out_at_once() -> None:
    d = Dispatcher(site())
    p = plan([-8000.0] * 8, export_w=[8000.0] * 8)
    assert one(d, inputs(p, grid_w=0.0)).setpoint_w == pytest.approx(-8000.0)
    later = T0 + timedelta(minutes=1, seconds=1)  # within the rate limit
    cmd = one(d, inputs(p, grid_w=0.0, car_w=-8000.0, now=later, ev_max_discharge_w=4000.0))
    assert cmd.setpoint_w == pytest.approx(-4000.0) and cmd.send


def test_no_discharge_at_the_evs_own_v2x_floor() -> None:
    p = plan([-5000.0] * 8, export_w=[5000.0] * 8)
    blocked = one(Dispatcher(site()), inputs(p, grid_w=0.0, soc=40.0, ev_min_soc_percent=40.0))
    assert blocked.setpoint_w == 0.0 and any("V2X floor" in r for r in blocked.reasons)
    assert all(q.max_discharge_w == 0.0 for q in blocked.schedule.periods)
    above = one(Dispatcher(site()), inputs(p, grid_w=0.0, soc=41.0, ev_min_soc_percent=40.0))
    assert above.setpoint_w == pytest.approx(-5000.0)


def test_silent_grid_meter_stops_load_following() -> None:
    d = Dispatcher(site())
    cmd = one(d, inputs(plan([-3000.0] * 8), grid_w=None))
    assert cmd.setpoint_w == 0.0


def test_charge_now_ignores_the_plan_but_not_the_fuse() -> None:
    d = Dispatcher(site())
    cmd = one(d, inputs(plan([-3000.0] * 8), grid_w=10000.0, mode=VehicleMode.CHARGE_NOW))
    assert cmd.setpoint_w == pytest.approx(7300.0)


def test_outage_covers_the_home_down_to_the_reserve() -> None:
    d = Dispatcher(site())
    cmd = one(d, inputs(plan([5000.0] * 8), grid_w=2200.0, grid_lost=True, safe_mode=True))
    assert cmd.setpoint_w == pytest.approx(-2200.0)
    cmd = one(d, inputs(plan([5000.0] * 8), grid_w=2200.0, grid_lost=True, soc=18.0))
    assert cmd.setpoint_w == 0.0


def test_deadband_and_rate_limit() -> None:
    d = Dispatcher(site())
    p = plan([-3000.0] * 8)
    assert one(d, inputs(p, grid_w=3000.0, car_w=0.0)).send
    # 200 W more load a few seconds later: inside the deadband.
    cmd = one(d, inputs(p, grid_w=200.0, car_w=-3000.0, now=T0 + timedelta(minutes=1, seconds=5)))
    assert cmd.setpoint_w == pytest.approx(-3200.0) and not cmd.send
    # 1 kW more, but only 5 s after the last send: rate limited.
    cmd = one(d, inputs(p, grid_w=1000.0, car_w=-3000.0, now=T0 + timedelta(minutes=1, seconds=5)))
    assert not cmd.send
    cmd = one(d, inputs(p, grid_w=1000.0, car_w=-3000.0, now=T0 + timedelta(minutes=1, seconds=20)))
    assert cmd.send and cmd.setpoint_w == pytest.approx(-4000.0)
    # A new plan always goes out (its later periods differ).
    newer = plan([-3000.0] * 8, created=T0 + timedelta(minutes=1))
    assert one(d, inputs(newer, grid_w=0.0, car_w=-4000.0, now=T0 + timedelta(minutes=1, seconds=21))).send


def test_unplugged_car_gets_its_charger_stopped_once() -> None:
    d = Dispatcher(site())
    assert one(d, inputs(plan([7000.0] * 8), grid_w=0.0)).setpoint_w == 7000.0
    gone = DispatchInputs(T0 + timedelta(minutes=2), plan([7000.0] * 8), (), 0.0, 17300.0, 10000.0)
    commands = d.dispatch(gone)
    assert [(c.charger_id, c.setpoint_w, c.send) for c in commands] == [("wallbox-garage", 0.0, True)]
    assert d.dispatch(gone) == []


def test_no_plan_means_idle() -> None:
    d = Dispatcher(site())
    cmd = one(d, inputs(None, grid_w=0.0))
    assert cmd.setpoint_w == 0.0 and "no plan yet: idle" in cmd.reasons


def test_v2h_off_means_no_discharge_at_all_even_with_v2g() -> None:
    d = Dispatcher(site(permissions={"v2g": True, "v2h": False, "v2l": False}))
    cmd = one(d, inputs(plan([-10000.0] * 8, export_w=[9000.0] * 8), grid_w=3000.0))
    assert cmd.setpoint_w == 0.0
    assert all(p.setpoint_w >= 0 and p.max_discharge_w == 0 for p in cmd.schedule.periods)


def test_charging_from_pv_follows_the_measured_surplus() -> None:
    d = Dispatcher(site())
    solar = plan([4000.0] * 8, import_w=[0.0] * 8)  # the plan expects 4 kW of surplus for the car
    # Less sun than forecast: 2.5 kW surplus (grid -2500 W with the car idle) -> charge 2.5 kW, no import.
    cmd = one(d, inputs(solar, grid_w=-2500.0, car_w=0.0))
    assert cmd.setpoint_w == pytest.approx(2500.0)
    assert any("PV surplus" in r for r in cmd.reasons)
    # More sun: 6 kW surplus while the car draws 4 kW (grid -2000 W) -> the car takes all 6 kW.
    cmd = one(d, inputs(solar, grid_w=-2000.0, car_w=4000.0, now=T0 + timedelta(minutes=2)))
    assert cmd.setpoint_w == pytest.approx(6000.0)
    # The planned export stays: plan exports 1 kW, surplus 5 kW -> the car takes 4 kW.
    exporting = plan(
        [4000.0] * 8, export_w=[1000.0] * 8, import_w=[0.0] * 8, created=T0 + timedelta(minutes=1)
    )
    cmd = one(d, inputs(exporting, grid_w=-5000.0, car_w=0.0, now=T0 + timedelta(minutes=3)))
    assert cmd.setpoint_w == pytest.approx(4000.0)


def test_less_sun_than_forecast_does_not_cut_the_charge_a_departure_within_the_hour_needs() -> None:
    solar = plan([4000.0] * 8, import_w=[0.0] * 8)
    now = T0 + timedelta(minutes=1)
    leaving_soon = one(
        Dispatcher(site()), inputs(solar, grid_w=-2500.0, departure_at=now + timedelta(minutes=40))
    )
    assert leaving_soon.setpoint_w == pytest.approx(4000.0)
    assert any("departure within the hour" in r for r in leaving_soon.reasons)
    # More sun than forecast still goes into the car.
    more_sun = one(
        Dispatcher(site()), inputs(solar, grid_w=-6000.0, departure_at=now + timedelta(minutes=40))
    )
    assert more_sun.setpoint_w == pytest.approx(6000.0)
    # With the departure hours away, a later plan makes up the difference: follow the surplus.
    later = one(Dispatcher(site()), inputs(solar, grid_w=-2500.0, departure_at=now + timedelta(hours=3)))
    assert later.setpoint_w == pytest.approx(2500.0)


def test_grid_charging_is_not_cut_by_a_small_surplus() -> None:
    d = Dispatcher(site())
    cmd = one(d, inputs(plan([7000.0] * 8), grid_w=-1000.0, car_w=0.0))
    assert cmd.setpoint_w == 7000.0 and not any("PV surplus" in r for r in cmd.reasons)


def test_extra_surplus_is_exported_when_storing_it_does_not_pay() -> None:
    d = Dispatcher(site())
    net_metering = Plan(
        created_at=T0,
        start=T0,
        step=STEP,
        vehicles={"family-ev": VehiclePlan("family-ev", (4000.0,) * 8, (50.0,) * 9, "solar")},
        grid_import_w=(0.0,) * 8,
        grid_export_w=(0.0,) * 8,
        import_price_per_kwh=(0.30,) * 8,
        export_price_per_kwh=(0.30,) * 8,  # export pays the import price: storing only adds losses
        solver_status="optimal",
        solve_time_ms=1.0,
    )
    assert one(d, inputs(net_metering, grid_w=-6000.0, car_w=0.0)).setpoint_w == pytest.approx(4000.0)
    less_sun = one(d, inputs(net_metering, grid_w=-2500.0, car_w=0.0, now=T0 + timedelta(minutes=2)))
    assert less_sun.setpoint_w == pytest.approx(2500.0)  # still never imports to charge from "PV"


def test_solver_noise_in_the_plan_is_no_discharge() -> None:
    # A plan power of -0.4 W is rounding, not V2H: the car must not start covering the home.
    cmd = one(Dispatcher(site()), inputs(plan([-0.4] * 8), grid_w=600.0))
    assert cmd.setpoint_w == 0.0 and not any("home load" in r for r in cmd.reasons)


def test_no_more_discharge_than_planned_within_the_hour_before_a_departure() -> None:
    now = T0 + timedelta(minutes=1)
    v2h = plan([-1000.0] * 8)  # the plan covers 1 kW of the home; the home draws 3 kW
    later = one(
        Dispatcher(site()), inputs(v2h, grid_w=2000.0, car_w=-1000.0, departure_at=now + timedelta(hours=3))
    )
    assert later.setpoint_w == pytest.approx(-3000.0)
    soon = one(
        Dispatcher(site()),
        inputs(v2h, grid_w=2000.0, car_w=-1000.0, departure_at=now + timedelta(minutes=30)),
    )
    assert soon.setpoint_w == pytest.approx(-1000.0)
    assert any("no more discharge than planned" in r for r in soon.reasons)


def test_an_outage_discharge_ends_at_a_step_boundary_and_is_renewed_before_it() -> None:
    d = Dispatcher(site())
    idle = plan([0.0] * 8)
    outage: dict[str, Any] = {"grid_lost": True, "home_power_w": 6000.0, "car_w": -6000.0}
    cmd = one(d, inputs(idle, grid_w=0.0, **outage))
    assert cmd.setpoint_w == pytest.approx(-6000.0) and cmd.send
    # Renewal margin 2 x 5 s + 10 s: the next step boundary (17:15) is far enough ahead.
    periods = [(p.start_offset, p.setpoint_w, p.max_discharge_w) for p in cmd.schedule.periods]
    assert periods == [(timedelta(0), -6000.0, 10000.0), (timedelta(minutes=14), 0.0, 0.0)]
    # What a charger gets on the wire: no discharge after 17:15 if the controller dies now.
    payload = tx_profile_payload(
        OcppVersion.V21,
        cmd.schedule,
        ChargerLimits.from_config(site().chargers[0], 17300.0),
        transaction_id="tx-1",
        max_validity=timedelta(hours=2),
    )
    wire = payload["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]
    assert [(p["startPeriod"], p["setpoint"], p["dischargeLimit"]) for p in wire] == [
        (0, -6000, -10000),
        (840, 0, 0),
    ]
    # Unchanged load well before the end: nothing to send.
    assert not one(d, inputs(idle, grid_w=0.0, now=T0 + timedelta(minutes=14, seconds=30), **outage)).send
    # Within the margin: renewed, now running to the following boundary.
    renewed = one(d, inputs(idle, grid_w=0.0, now=T0 + timedelta(minutes=14, seconds=45), **outage))
    assert renewed.send and renewed.setpoint_w == pytest.approx(-6000.0)
    ends = renewed.schedule.start + renewed.schedule.periods[1].start_offset
    assert ends == T0 + timedelta(minutes=30)
    # Renewed once, not at every tick until the old end.
    assert not one(d, inputs(idle, grid_w=0.0, now=T0 + timedelta(minutes=14, seconds=50), **outage)).send


def test_an_outage_discharge_just_before_a_boundary_runs_to_the_next_one() -> None:
    # 10 s before 17:15 the renewal could not land in time: the discharge holds until 17:30.
    cmd = one(
        Dispatcher(site()),
        inputs(
            plan([0.0] * 8),
            grid_w=0.0,
            now=T0 + timedelta(minutes=14, seconds=50),
            grid_lost=True,
            home_power_w=6000.0,
        ),
    )
    assert cmd.schedule.start + cmd.schedule.periods[1].start_offset == T0 + timedelta(minutes=30)
    assert cmd.schedule.periods[1].setpoint_w == 0.0


def test_v2h_is_renewed_at_a_step_boundary_without_waiting_for_a_new_plan() -> None:
    d = Dispatcher(site(permissions={"v2g": False, "v2h": True, "v2l": False}))
    v2h = plan([-3000.0] * 8)
    cmd = one(d, inputs(v2h, grid_w=4500.0, car_w=0.0))
    assert [(p.start_offset, p.setpoint_w) for p in cmd.schedule.periods] == [
        (timedelta(0), -4500.0),
        (timedelta(minutes=14), 0.0),
    ]
    # While the daemon runs the schedule is renewed before 17:15 (the same plan): the charger
    # never stops the discharge at the boundary on its own.
    held_until = T0 + timedelta(minutes=15)
    for seconds in range(60, 16 * 60, 5):
        now = T0 + timedelta(seconds=seconds)
        assert now < held_until, f"the discharge dropped at {held_until:%H:%M:%S}"
        tick = one(d, inputs(v2h, grid_w=4500.0, car_w=0.0, now=now))
        assert tick.setpoint_w == pytest.approx(-4500.0)
        if tick.send:
            periods = tick.schedule.periods
            assert periods[1].setpoint_w == 0.0
            held_until = tick.schedule.start + periods[1].start_offset
    assert held_until == T0 + timedelta(minutes=30)


def test_an_attended_discharge_holds_over_plan_steps_the_renewal_cannot_reach() -> None:
    # 10 s before 17:15 with the plan's next step also V2H: the live setpoint holds until 17:30.
    d = Dispatcher(site(permissions={"v2g": False, "v2h": True, "v2l": False}))
    cmd = one(d, inputs(plan([-3000.0] * 8), grid_w=4500.0, now=T0 + timedelta(minutes=14, seconds=50)))
    assert [(p.start_offset, p.setpoint_w) for p in cmd.schedule.periods] == [
        (timedelta(0), -4500.0),
        (timedelta(minutes=15, seconds=10), 0.0),
    ]


def two_cars() -> SiteConfig:
    """Car A on a bidirectional charger, car B on a charge-only one, a 17 kW import cap."""
    return parse_config(
        {
            "site": {"grid": {"import_limit_kw": 17, "export_limit_kw": 10}},
            "chargers": [
                {
                    "id": "wbA",
                    "ocpp_versions": ["2.1", "2.0.1"],
                    "bidirectional": True,
                    "max_discharge_kw": 10,
                    "max_charge_kw": 11,
                    "min_current_a": 0,
                },
                {"id": "wbB", "max_charge_kw": 11, "min_current_a": 0},
            ],
            "vehicles": [
                {
                    "id": "carA",
                    "usable_capacity_kwh": 60,
                    "max_charge_kw": 11,
                    "max_discharge_kw": 10,
                    "home_charger": "wbA",
                    "permissions": {"v2g": True, "v2h": True},
                },
                {"id": "carB", "usable_capacity_kwh": 60, "max_charge_kw": 11, "home_charger": "wbB"},
            ],
            "tariff": {"import": {"static_price_per_kwh": 0.3}},
        },
        env={},
    )


def two_car_plan(car_b_w: float, grid_import_w: float, n: int = 8) -> Plan:
    """Car A planned to cover the home (5 kW), car B to charge at ``car_b_w``."""
    return Plan(
        created_at=T0,
        start=T0,
        step=STEP,
        vehicles={
            "carA": VehiclePlan("carA", (-5000.0,) * n, (60.0,) * (n + 1), "covering home"),
            "carB": VehiclePlan("carB", (car_b_w,) * n, (40.0,) * (n + 1), "charging"),
        },
        grid_import_w=(grid_import_w,) * n,
        grid_export_w=(0.0,) * n,
        import_price_per_kwh=(0.3,) * n,
        export_price_per_kwh=(0.1,) * n,
        solver_status="optimal",
        solve_time_ms=1.0,
    )


def test_a_charger_whose_ocpp_version_cannot_discharge_is_charge_only_for_the_fuse_too() -> None:
    p = two_car_plan(car_b_w=11000.0, grid_import_w=14000.0)

    def dispatch(a_can_discharge: bool) -> dict[str, Any]:
        # Home 8 kW, car B charging 11 kW, car A idle: 19 kW against the 17 kW cap.
        lives = (
            VehicleLive("carA", True, "wbA", 60.0, 0.0, charger_can_discharge=a_can_discharge),
            VehicleLive("carB", True, "wbB", 40.0, 11000.0),
        )
        now = T0 + timedelta(minutes=1)
        commands = Dispatcher(two_cars()).dispatch(DispatchInputs(now, p, lives, 19000.0, 17000.0, 10000.0))
        return {c.charger_id: c for c in commands}

    able = dispatch(True)
    assert able["wbA"].setpoint_w < 0  # 2.1: it covers the home, so B may keep charging
    on_201 = dispatch(False)
    a, b = on_201["wbA"], on_201["wbB"]
    assert a.setpoint_w == 0.0 and all(q.max_discharge_w == 0.0 for q in a.schedule.periods)
    assert any("cannot discharge" in r for r in a.reasons)
    assert b.setpoint_w == pytest.approx(9000.0) and any("import limit" in r for r in b.reasons)


def test_v2h_stops_while_another_cars_power_is_unknown() -> None:
    cfg = two_cars()
    no_v2g = cfg.vehicles[0].permissions.model_copy(update={"v2g": False})
    cfg.vehicles[0] = cfg.vehicles[0].model_copy(update={"permissions": no_v2g})
    p = two_car_plan(car_b_w=7000.0, grid_import_w=4000.0)
    now = T0 + timedelta(minutes=1)
    # Home 2 kW, car B charging 7 kW, car A idle: the grid imports 9 kW. B's power went stale.
    lives = (VehicleLive("carA", True, "wbA", 60.0, 0.0), VehicleLive("carB", True, "wbB", 40.0, None))
    commands = Dispatcher(cfg).dispatch(DispatchInputs(now, p, lives, 9000.0, 17000.0, 10000.0))
    a = next(c for c in commands if c.charger_id == "wbA")
    assert a.setpoint_w == 0.0 and a.send
    assert any("carB unknown" in r for r in a.reasons)


def test_the_import_cap_counts_a_car_of_unknown_power_at_its_last_setpoint() -> None:
    # Home 4 kW, the car charging 11 kW, 17.3 kW cap: fine, also once its power ages out.
    d = Dispatcher(site())
    p = plan([11000.0] * 8)
    assert one(d, inputs(p, grid_w=15000.0, car_w=11000.0)).setpoint_w == 11000.0
    aged = one(d, inputs(p, grid_w=15000.0, car_w=None, now=T0 + timedelta(minutes=4)))
    assert aged.setpoint_w == 11000.0 and not aged.send
    # Really over the cap: still cut at once.
    over = one(d, inputs(p, grid_w=20000.0, car_w=None, now=T0 + timedelta(minutes=5)))
    assert over.setpoint_w == pytest.approx(8300.0) and over.send
