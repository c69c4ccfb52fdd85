"""Hardware-in-the-loop against the in-process simulator: the real daemon over real sockets and a
real broker in simulated time agrees with ``v2x sim run`` on the same day, and the virtual home
counts every joule its chargers move however late its ticks wake."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from controller.config import OcppVersion
from controller.domain import ensure_utc
from sim.engine import SimResult
from sim.hil.command import run_hil, stall_line
from sim.hil.home import VirtualHome
from sim.hil.meters import HomeMeters
from sim.hil.record import HilRecorder
from sim.metrics import compute_metrics
from sim.runner import run_strategy
from sim.scenario import Scenario, load_scenario

EXAMPLES = Path(__file__).resolve().parents[1] / "sim" / "examples"


def example_day() -> Scenario:
    loaded = load_scenario(EXAMPLES / "home.yaml", EXAMPLES / "series.csv", EXAMPLES / "trips.csv")
    return loaded.window(0, int(timedelta(days=1) / loaded.series.step))


class SteppedClock:
    """Simulated time moved by hand; its monotonic scale is that time (the chargers' ramps use it)."""

    def __init__(self, start: datetime) -> None:
        self.origin = self._now = ensure_utc(start)

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return (self._now - self.origin).total_seconds()

    def move(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        return self._now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)

    def timeout(self, seconds: float | None) -> asyncio.Timeout:
        return asyncio.timeout(None)


def test_late_ticks_lose_no_energy_and_split_at_steps_and_minutes() -> None:
    scenario = example_day()
    start = scenario.series.time_at(40)  # 10:00 UTC: home load and PV differ from step to step
    clock = SteppedClock(start)
    recorder = HilRecorder(scenario)
    home = VirtualHome(
        scenario,
        clock,
        ocpp_url="ws://127.0.0.1:1/none",
        broker_port=1,
        meters=HomeMeters.under("t", pv=True),
        versions={"wallbox": OcppVersion.V21},
        recorder=recorder,
    )
    (vid, charger), car = next(iter(home.chargers.items())), next(iter(home.cars.values()))
    charger.car, charger.transaction_id, charger.transaction_start = car, "1", start
    car.soc_percent = 30.0  # far from the taper: the car takes what the charger gives
    home._step(clock.now())
    rng = random.Random(3)
    moved_s = 0.0
    while moved_s < 1800:  # half an hour of ticks 1-97 s apart (a loaded machine wakes late)
        seconds = min(rng.choice([1.0, 10.0, 10.0, 37.0, 97.0]), 1800 - moved_s)
        moved_s += seconds
        home._step(clock.move(seconds))
    charged_kwh = home.totals.cars_charged_kwh[vid]
    assert charged_kwh == pytest.approx(charger.energy_import_wh / 1000.0, rel=1e-9)
    assert charged_kwh == pytest.approx(11.0 * moved_s / 3600.0, rel=0.01)  # 11 kW after a 3 s ramp
    series, first = scenario.series, 40
    expected_net_kwh = charged_kwh + sum(
        (float(series.load_w[k]) - float(series.pv_w[k])) / 1000.0 * 0.25 for k in (first, first + 1)
    )
    assert home.totals.import_kwh - home.totals.export_kwh == pytest.approx(expected_net_kwh, rel=1e-6)
    minutes = recorder.minute_car_ws[vid]
    assert sum(minutes) / 3.6e6 == pytest.approx(charged_kwh, rel=1e-9)
    assert all(w <= 11_000.0 * 60.0 + 1e-6 for w in minutes)  # no minute holds more than a minute


@pytest.mark.timeout(420)
def test_one_hil_day_agrees_with_the_in_process_simulation() -> None:
    scenario = example_day()
    simulated_run = run_strategy(scenario, "mpc")
    simulated = compute_metrics(simulated_run)
    uncontrolled = compute_metrics(run_strategy(scenario, "uncontrolled"))
    run = asyncio.run(
        run_hil(EXAMPLES / "home.yaml", EXAMPLES / "series.csv", EXAMPLES / "trips.csv", 1000.0, 1.0)
    )
    hil = compute_metrics(run.result)
    diverged = "\n".join(["", stall_line(run), *_steps_that_differ(simulated_run, run.result)])
    cost_tolerance = max(0.03 * abs(uncontrolled.total_cost), 0.10)
    figures = (
        f"hil {hil.total_cost:.3f} / {hil.import_kwh:.2f} / {hil.export_kwh:.2f}, "
        f"sim {simulated.total_cost:.3f} / {simulated.import_kwh:.2f} / {simulated.export_kwh:.2f}"
    )
    assert abs(hil.total_cost - simulated.total_cost) <= cost_tolerance, figures + diverged
    # The day ends at midnight while the plans run on to the next departure, so the two runs leave the
    # car with slightly different energy (a real charger also starts at full power before the daemon's
    # first profile). The import is compared as if the HIL car ended where the simulated one did.
    (spec,) = run.result.specs
    level_kwh = (simulated.final_energy_kwh - hil.final_energy_kwh) / spec.charge_efficiency
    figures += f", HIL car {-level_kwh:+.2f} kWh at the end" + diverged
    assert hil.import_kwh + level_kwh == pytest.approx(simulated.import_kwh, rel=0.03), figures
    assert hil.export_kwh == pytest.approx(simulated.export_kwh, rel=0.03), figures
    assert hil.reserve_breaches == 0 and simulated.reserve_breaches == 0
    assert hil.avoidable_shortfalls == 0 and simulated.avoidable_shortfalls == 0
    assert hil.departures == simulated.departures >= 1
    assert hil.charge_kwh > 1.0  # the day did charge: the comparison is not of two idle homes


def _steps_that_differ(simulated: SimResult, hil: SimResult) -> list[str]:
    """The steps where the HIL day's import or a car's power left the simulated day's, so a failed
    comparison says where and how far (the plans' timing, or a step's physics)."""
    lines = []
    for k in range(len(simulated.import_kwh)):
        car_w = [
            (float(s), float(h)) for s, h in zip(simulated.power_w[:, k], hil.power_w[:, k], strict=True)
        ]
        if abs(simulated.import_kwh[k] - hil.import_kwh[k]) > 0.02 or any(abs(s - h) > 100 for s, h in car_w):
            cars = ", ".join(f"{s:.0f} / {h:.0f} W" for s, h in car_w)
            lines.append(
                f"step {k}: import sim {simulated.import_kwh[k]:.3f} / hil {hil.import_kwh[k]:.3f} kWh, "
                f"cars {cars}"
            )
    return lines
