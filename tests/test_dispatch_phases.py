"""Per-phase fuses: an unbalanced home and 1-phase chargers on its busy and free phases, 3-phase cars
limited by their most loaded phase, export, unknown car power, and the rule without per-phase readings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.config import SiteConfig, parse_config
from controller.dispatch import Dispatcher, DispatchInputs, VehicleLive
from controller.dispatch.car_setpoint import CarSetpoint, car_setpoint
from controller.dispatch.phase_limits import clamp_to_phase_limits, phase_shares
from controller.dispatch.send_policy import SentCommand
from controller.domain import MeterReading, MeterRole, Plan, VehiclePlan
from controller.site import Site
from controller.site_events import SiteEvents

T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=1)
V = 230.0
FUSE_A = 25.0
FUSE_W = FUSE_A * V  # 5750 W on one phase


def amps(a: float) -> float:
    return a * V


def site(*chargers: dict[str, Any], fuse_a: float | None = FUSE_A) -> SiteConfig:
    """One car per charger (``car-<charger id>``); 3 x 25 A main fuse, a 17.3 kW import cap."""
    vehicles = [
        {
            "id": f"car-{c['id']}",
            "usable_capacity_kwh": 60,
            "max_charge_kw": c.get("max_charge_kw", 11),
            "max_discharge_kw": c.get("max_discharge_kw", 0),
            "home_charger": c["id"],
            "permissions": {"v2g": True, "v2h": True} if c.get("max_discharge_kw") else {},
        }
        for c in chargers
    ]
    grid: dict[str, Any] = {"import_limit_kw": 17.3, "export_limit_kw": 10}
    if fuse_a is not None:
        grid["phase_fuse_a"] = fuse_a
    return parse_config(
        {
            "site": {"grid": grid},
            "chargers": [{"min_current_a": 0, "ocpp_versions": ["2.1"], **c} for c in chargers],
            "vehicles": vehicles,
            "tariff": {"import": {"static_price_per_kwh": 0.3}},
        },
        env={},
    )


def one_phase(charger_id: str, phase: int, **kw: Any) -> dict[str, Any]:
    """A 32 A 1-phase wallbox (7.4 kW) on ``phase``."""
    return {"id": charger_id, "phases": 1, "phase": phase, "max_charge_kw": 7.4, **kw}


def plan(export_w: float = 0.0, **power_w: float) -> Plan:
    """Each car's planned power (by charger id) for 8 steps from T0."""
    n = 8
    cars = {
        f"car-{cid}": VehiclePlan(f"car-{cid}", (w,) * n, (50.0,) * (n + 1), "planned")
        for cid, w in power_w.items()
    }
    return Plan(
        created_at=T0,
        start=T0,
        step=timedelta(minutes=15),
        vehicles=cars,
        grid_import_w=(max(0.0, sum(power_w.values())) + 1000.0,) * n,
        grid_export_w=(export_w,) * n,
        import_price_per_kwh=(0.3,) * n,
        export_price_per_kwh=(0.1,) * n,
        solver_status="optimal",
        solve_time_ms=1.0,
    )


def inputs(
    p: Plan,
    phases_w: tuple[float, float, float] | None,
    car_w: dict[str, float | None],
    grid_w: float | None = None,
    **kw: Any,
) -> DispatchInputs:
    """The grid total is the phases' sum unless given; ``car_w``: each car's measured power by charger."""
    lives = tuple(VehicleLive(f"car-{cid}", True, cid, 60.0, w) for cid, w in car_w.items())
    total = grid_w if grid_w is not None or phases_w is None else sum(phases_w)
    return DispatchInputs(NOW, p, lives, total, 17300.0, 10000.0, grid_phases_w=phases_w, **kw)


def dispatch(d: Dispatcher, i: DispatchInputs) -> dict[str, Any]:
    return {c.charger_id: c for c in d.dispatch(i)}


def predicted_phases_w(
    cfg: SiteConfig, home_w: tuple[float, float, float], setpoints: dict[str, float]
) -> list[float]:
    """Each phase with the cars at their new setpoints, for a home measured without them."""
    loads = list(home_w)
    for cid, w in setpoints.items():
        charger = cfg.charger(cid)
        assert charger is not None
        for index, share in enumerate(phase_shares(charger, charger.phases)):
            loads[index] += w * share
    return loads


# An unbalanced home: cooking on L1 (22 A), a 1-phase PV inverter exporting 10 A on L2, 3 A on L3.
HOME = (amps(22), amps(-10), amps(3))
# A 1-phase PV inverter exporting 13 A on L1.
EXPORTING = (amps(-13), amps(2), amps(2))


def test_a_one_phase_charger_on_the_busy_phase_is_cut_to_its_headroom() -> None:
    cfg = site(one_phase("wbL1", 1), one_phase("wbL3", 3, max_charge_kw=3.7))
    d = Dispatcher(cfg)
    cmds = dispatch(d, inputs(plan(wbL1=7400.0, wbL3=3680.0), HOME, {"wbL1": 0.0, "wbL3": 0.0}))
    l1, l3 = cmds["wbL1"], cmds["wbL3"]
    assert l1.setpoint_w == pytest.approx(FUSE_W - amps(22))  # 3 A left on L1: 690 W
    assert "phase L1 fuse 25 A: charging reduced" in l1.reasons and l1.send
    assert l3.setpoint_w == pytest.approx(3680.0)  # L3 untouched
    assert not any("phase" in r for r in l3.reasons)
    loads = predicted_phases_w(cfg, HOME, {"wbL1": l1.setpoint_w, "wbL3": l3.setpoint_w})
    assert loads[0] == pytest.approx(FUSE_W)
    assert loads[1] == pytest.approx(HOME[1]) and loads[2] == pytest.approx(HOME[2] + 3680.0)


def test_the_same_charger_on_the_free_phase_gets_its_full_power() -> None:
    d = Dispatcher(site(one_phase("wb", 2)))
    cmd = dispatch(d, inputs(plan(wb=7400.0), HOME, {"wb": 0.0}))["wb"]
    # L2 exports 10 A: with 32 A of charging it imports 22 A, within the fuse.
    assert cmd.setpoint_w == pytest.approx(7400.0)
    assert not any("phase" in r for r in cmd.reasons)


def test_a_three_phase_car_is_limited_by_its_most_loaded_phase() -> None:
    d = Dispatcher(site({"id": "wb", "phases": 3, "max_charge_kw": 11}))
    home = (amps(22), amps(2), amps(3))
    car_now_w = 11000.0
    # The meter sees the car's 11 kW too, a third on each phase.
    measured = (home[0] + car_now_w / 3, home[1] + car_now_w / 3, home[2] + car_now_w / 3)
    cmd = dispatch(d, inputs(plan(wb=11000.0), measured, {"wb": car_now_w}))["wb"]
    # 3 A left on L1, a third of the car's power there: 3 x 690 W; the total cap (17.3 kW) would allow it all.
    assert cmd.setpoint_w == pytest.approx(3 * (FUSE_W - home[0]))
    assert "phase L1 fuse 25 A: charging reduced" in cmd.reasons


def test_export_over_a_phase_fuse_reduces_discharge() -> None:
    d = Dispatcher(site(one_phase("wb", 1, bidirectional=True, max_discharge_kw=7.4)))
    # A 1-phase PV inverter exporting 13 A on L1.
    cmd = dispatch(d, inputs(plan(export_w=5000.0, wb=-7400.0), EXPORTING, {"wb": 0.0}))["wb"]
    # 12 A of export left on L1 before the 25 A fuse; the 10 kW export cap would allow more.
    assert cmd.setpoint_w == pytest.approx(-(FUSE_W - amps(13)))
    assert "phase L1 fuse 25 A: discharge reduced" in cmd.reasons and cmd.send


def test_a_car_of_unknown_power_counts_at_its_last_setpoint() -> None:
    d = Dispatcher(site(one_phase("wb", 1)))
    home = (amps(10), amps(1), amps(1))
    first = dispatch(d, inputs(plan(wb=7400.0), (home[0] + 3000.0, home[1], home[2]), {"wb": 3000.0}))["wb"]
    assert first.setpoint_w == pytest.approx(FUSE_W - home[0]) and first.send
    # The charger stops reporting; the car draws what it was sent, and the meter shows it on L1.
    drawn = first.setpoint_w
    later = inputs(plan(wb=7400.0), (home[0] + drawn, home[1], home[2]), {"wb": None})
    again = dispatch(d, later)["wb"]
    # Counted as 0 W, L1 would look full and the car would be stopped.
    assert again.setpoint_w == pytest.approx(drawn)


def test_without_per_phase_readings_the_home_is_spread_evenly_and_counts_one_way() -> None:
    cfg = site(one_phase("wb", 1), {"id": "wb3", "phases": 3, "max_charge_kw": 11})
    # The home draws 6 kW in all (the meter has no phases): 2 kW assumed on each phase.
    cmds = dispatch(Dispatcher(cfg), inputs(plan(wb=7400.0), None, {"wb": 0.0}, grid_w=6000.0))
    assert cmds["wb"].setpoint_w == pytest.approx(FUSE_W - 2000.0)
    assert "phase L1 fuse 25 A: charging reduced" in cmds["wb"].reasons
    # With a 3-phase car at 6 kW next to it (2 kW on L1) and the home at 3 kW (1 kW on L1):
    both = dispatch(
        Dispatcher(cfg), inputs(plan(wb=7400.0, wb3=6000.0), None, {"wb": 0.0, "wb3": 0.0}, grid_w=3000.0)
    )
    assert both["wb"].setpoint_w == pytest.approx(FUSE_W - 1000.0 - 2000.0)
    assert both["wb3"].setpoint_w == pytest.approx(6000.0)
    # PV exporting 6 kW is no relief on the car's phase (it may be on another one).
    sunny = dispatch(Dispatcher(cfg), inputs(plan(wb=7400.0), None, {"wb": 0.0}, grid_w=-6000.0))["wb"]
    assert sunny.setpoint_w == pytest.approx(FUSE_W)
    # No grid reading at all: the car alone stays within its phase's fuse.
    blind = dispatch(Dispatcher(cfg), inputs(plan(wb=7400.0), None, {"wb": 0.0}, grid_w=None))["wb"]
    assert blind.setpoint_w == pytest.approx(FUSE_W)
    # Cars on three phases are left to the grid caps there: an even spread adds up to the total.
    three = car(cfg, "wb3", 11000.0, 0.0, 3)
    clamp_to_phase_limits(cfg, inputs(plan(), None, {}, grid_w=15000.0), [three], {})
    assert three.setpoint_w == 11000.0 and three.max_instant_w == float("inf")


def test_no_phase_fuse_and_an_outage_change_nothing() -> None:
    unfused = dispatch(
        Dispatcher(site(one_phase("wb", 1), fuse_a=None)), inputs(plan(wb=7400.0), HOME, {"wb": 0.0})
    )
    assert unfused["wb"].setpoint_w == pytest.approx(7400.0)
    # In an outage the home is an island: no current through the main fuses.
    cfg = site(one_phase("wb", 1, bidirectional=True, max_discharge_kw=7.4))
    islanded = car(cfg, "wb", -7400.0, 0.0, 1)
    clamp_to_phase_limits(cfg, inputs(plan(), HOME, {}, grid_lost=True), [islanded], {})
    assert islanded.setpoint_w == -7400.0 and islanded.max_instant_w == float("inf")
    on_grid = car(cfg, "wb", -7400.0, 0.0, 1)
    clamp_to_phase_limits(cfg, inputs(plan(), EXPORTING, {}), [on_grid], {})
    assert on_grid.setpoint_w > -7400.0


def car(
    cfg: SiteConfig, charger_id: str, setpoint_w: float, measured_w: float | None, phases: int
) -> CarSetpoint:
    live = VehicleLive(f"car-{charger_id}", True, charger_id, 60.0, measured_w)
    made = car_setpoint(cfg, inputs(plan(), None, {}), NOW, live)
    assert made is not None
    made.setpoint_w, made.phases = setpoint_w, phases
    return made


def test_max_instant_w_is_the_headroom_on_the_cars_most_loaded_phase() -> None:
    cfg = site(one_phase("wb", 1), {"id": "wb3", "phases": 3, "max_charge_kw": 11})
    one, three = car(cfg, "wb", 1000.0, 0.0, 1), car(cfg, "wb3", 3000.0, 0.0, 3)
    home = (amps(15), amps(5), amps(5))
    clamp_to_phase_limits(cfg, inputs(plan(), home, {}), [one, three], {})
    # Neither average breaks a fuse, but both limits are known for the pulses below the minimum.
    assert (one.setpoint_w, three.setpoint_w) == (1000.0, 3000.0) and not one.urgent
    assert one.max_instant_w == pytest.approx(FUSE_W - home[0] - 1000.0)
    assert three.max_instant_w == pytest.approx(3 * (FUSE_W - home[0] - 1000.0))


def test_a_pulse_at_the_minimum_must_fit_under_the_fuse() -> None:
    cfg = site(one_phase("wb", 1, min_current_a=6))  # 1380 W minimum
    # 3 A (690 W) left on L1: the average fits, a pulse at 6 A would not.
    tight = dispatch(Dispatcher(cfg), inputs(plan(wb=600.0), HOME, {"wb": 0.0}))["wb"]
    assert tight.setpoint_w == 0.0
    assert any("would break a limit" in r for r in tight.reasons)
    # 7 A left: the same average is delivered as a pulse at 6 A.
    roomy = (amps(18), HOME[1], HOME[2])
    pulsed = dispatch(Dispatcher(cfg), inputs(plan(wb=600.0), roomy, {"wb": 0.0}))["wb"]
    assert pulsed.setpoint_w == pytest.approx(600.0)
    assert any("pulsed at 1380 W" in r for r in pulsed.reasons)


def test_another_cars_pulse_counts_at_its_minimum() -> None:
    cfg = site(one_phase("a", 1, min_current_a=6), one_phase("b", 1))
    home = (amps(5), amps(1), amps(1))
    cmds = dispatch(Dispatcher(cfg), inputs(plan(a=700.0, b=7400.0), home, {"a": 0.0, "b": 0.0}))
    # Car a pulses at 1380 W; car b gets what is left on L1 at that instant.
    assert cmds["a"].setpoint_w == pytest.approx(700.0)
    assert cmds["b"].setpoint_w == pytest.approx(FUSE_W - home[0] - 1380.0)


def test_a_switching_chargers_present_draw_is_placed_by_its_size() -> None:
    cfg = site({"id": "wb", "phases": 3, "max_charge_kw": 11, "phase_switching": True, "phase": 1})
    home = (amps(20), amps(2), amps(2))
    # 6 kW now cannot be on one 16 A phase: it is on three, though the new setpoint is on one.
    now_w = 6000.0
    measured = (home[0] + now_w / 3, home[1] + now_w / 3, home[2] + now_w / 3)
    switching = car(cfg, "wb", 3600.0, now_w, 1)
    clamp_to_phase_limits(cfg, inputs(plan(), measured, {}), [switching], {})
    assert switching.setpoint_w == pytest.approx(FUSE_W - home[0])
    # A sent setpoint stands in for an unknown power the same way.
    unknown = car(cfg, "wb", 3600.0, None, 1)
    sent = {"wb": SentCommand(now_w, NOW - timedelta(seconds=5), T0)}
    clamp_to_phase_limits(cfg, inputs(plan(), measured, {}), [unknown], sent)
    assert unknown.setpoint_w == pytest.approx(FUSE_W - home[0])


def test_a_grid_reading_with_a_phase_over_its_fuse_dispatches_at_once() -> None:
    data = site(one_phase("wb", 1)).model_dump(mode="json", exclude_none=True)
    data["meters"] = [{"id": "grid", "role": "grid", "topic": "grid/power", "format": "plain"}]
    config = parse_config(data, env={})
    live = Site(config)
    events = SiteEvents(live)

    def reading(phases_w: tuple[float, float, float]) -> bool:
        value = sum(phases_w)
        live.inputs.update_meter(MeterReading("grid", MeterRole.GRID, value, NOW), phases_w)
        return events.reading(MeterReading("grid", MeterRole.GRID, value, NOW)).dispatch_now

    assert not reading((amps(20), amps(5), amps(5)))  # within every fuse and the total cap
    assert reading((amps(26), amps(1), amps(1)))  # L1 over 25 A while the total is far below 17.3 kW
