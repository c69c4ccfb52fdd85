"""Per-phase fuses on the setpoints: every phase of the main fuse within ``site.grid.phase_fuse_a``.

The grid caps (``grid_limits``) keep the site's total within the contract; the main fuse is per
phase (e.g. 3 x 25 A), and a 1-phase charger on a busy phase can trip it while the total looks fine.
Each phase's power is predicted as the phase without the cars plus what the cars draw on it with
their new setpoints, and kept within ``phase_fuse_a`` x ``phase_voltage_v`` both ways:

* a car on three phases draws a third of its power on each, a car on one (``car.phases == 1``: a
  1-phase charger, or a switching one on one phase) all of it on its charger's ``phase``;
* with per-phase grid readings, a phase without the cars is its reading less what each car draws
  now on it (a car whose power is unknown: the setpoint last sent to it). A switching charger's
  present draw is on three phases when one phase could not carry it, on one when it is below the
  3-phase minimum, else on the phases of its new setpoint;
* a setpoint below the charger's minimum is delivered as a pulse at the minimum: it counts at the
  minimum, since every car's pulse starts with the step. Another car's discharge is no relief for
  charging (nor another car's charging for a discharge): it can stop at any instant.

Over the fuse on import, charging on that phase is cut, the car drawing most on it first; over it on
export, discharge is cut the same way. Each car's ``max_instant_w`` is lowered to its headroom on its
most loaded phase (in W of the car's total power), so that no pulse at the minimum breaks the fuse.

Without per-phase readings (``grid_phases_w`` None) only cars on one phase are limited, by a
conservative rule: the site without the cars (the grid reading less what the cars draw now) is taken
as spread evenly over the three phases, its import counted only against import and its export only
against export (a third of each on every phase, never a relief for the other direction; 0 W without
any grid reading), and the other cars on their own phases. A 1-phase car alone may so draw at most the
fuse less a third of the home's import. Cars on three phases keep their setpoints there (an even
spread adds up to the total, which the grid caps limit) but count on the 1-phase car's phase. In an
outage nothing flows through the main fuses: no check.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from controller.config import ChargerConfig, SiteConfig
from controller.dispatch.car_setpoint import CarSetpoint
from controller.dispatch.inputs import DispatchInputs
from controller.dispatch.send_policy import SentCommand
from controller.dispatch.site_power import site_without_cars_w

__all__ = ["clamp_to_phase_limits", "phase_shares"]

Phases = tuple[float, float, float]


def clamp_to_phase_limits(
    config: SiteConfig, inputs: DispatchInputs, cars: Collection[CarSetpoint], sent: Mapping[str, SentCommand]
) -> None:
    """Cut charging (or discharge) where a phase would exceed its fuse; lower ``max_instant_w``."""
    grid = config.site.grid
    if grid.phase_fuse_a is None or inputs.grid_lost or not cars:
        return
    fuse_w = grid.phase_fuse_a * grid.phase_voltage_v
    base_import, base_export = _phases_without_cars(inputs, cars, sent)
    label = f"fuse {grid.phase_fuse_a:g} A"
    # The car drawing most on one phase first: its headroom counts every other car as it is now.
    for car in sorted(cars, key=lambda c: _peak_w(c) * max(phase_shares(c.charger, c.phases)), reverse=True):
        if inputs.grid_phases_w is None and car.phases != 1:
            continue  # the even spread adds up to the total: the grid caps' job
        if car.setpoint_w > 0:
            others = [c for c in cars if c is not car and c.setpoint_w > 0]
            headroom_w, phase = _headroom_w(car, others, base_import, fuse_w)
            car.max_instant_w = min(car.max_instant_w, headroom_w)
            if car.setpoint_w > headroom_w:
                car.setpoint_w = headroom_w
                car.urgent = True
                car.reasons.append(f"phase L{phase} {label}: charging reduced")
        elif car.setpoint_w < 0:
            others = [c for c in cars if c is not car and c.setpoint_w < 0]
            export_w = (-base_export[0], -base_export[1], -base_export[2])
            headroom_w, phase = _headroom_w(car, others, export_w, fuse_w)
            car.max_instant_w = min(car.max_instant_w, headroom_w)
            if -car.setpoint_w > headroom_w:
                car.setpoint_w = -headroom_w
                car.urgent = True
                car.reasons.append(f"phase L{phase} {label}: discharge reduced")


def phase_shares(charger: ChargerConfig, phases: int) -> Phases:
    """The share of a car's power on L1-L3 when its charger runs on ``phases``."""
    if phases == 1:
        one = charger.phase - 1
        return (1.0 if one == 0 else 0.0, 1.0 if one == 1 else 0.0, 1.0 if one == 2 else 0.0)
    return (1 / 3, 1 / 3, 1 / 3)


def _headroom_w(
    car: CarSetpoint, others: list[CarSetpoint], base_w: Phases, fuse_w: float
) -> tuple[float, int]:
    """The most the car may draw (or give, with ``base_w`` as export) before its most loaded phase
    reaches the fuse, with the other cars at their peak; and that phase (1-3)."""
    shares = phase_shares(car.charger, car.phases)
    best: tuple[float, int] | None = None
    for index, share in enumerate(shares):
        if share <= 0:
            continue
        load_w = base_w[index] + sum(_peak_w(o) * phase_shares(o.charger, o.phases)[index] for o in others)
        headroom_w = max(0.0, (fuse_w - load_w) / share)
        if best is None or headroom_w < best[0]:
            best = (headroom_w, index + 1)
    assert best is not None  # every layout puts the car on at least one phase
    return best


def _peak_w(car: CarSetpoint) -> float:
    """The most the car draws or gives at any instant of the step (a magnitude): its setpoint, or
    the charger's minimum where a smaller setpoint is delivered as a pulse at the minimum."""
    setpoint_w = car.setpoint_w
    if setpoint_w == 0.0:
        return 0.0
    return max(abs(setpoint_w), car.charger.min_power_w(car.phases, discharge=setpoint_w < 0))


def _phases_without_cars(
    inputs: DispatchInputs, cars: Collection[CarSetpoint], sent: Mapping[str, SentCommand]
) -> tuple[Phases, Phases]:
    """Each phase without the cars, as counted against import and as counted against export (+ import)."""
    if inputs.grid_phases_w is not None:
        measured = list(inputs.grid_phases_w)
        for car in cars:
            power_w = _present_w(car, sent)
            shares = phase_shares(car.charger, _present_phases(car, power_w))
            for index in range(3):
                measured[index] -= power_w * shares[index]
        phases = (measured[0], measured[1], measured[2])
        return phases, phases
    total_w = site_without_cars_w(inputs, cars, sent, unknown_as_sent=True) or 0.0
    import_w, export_w = max(0.0, total_w) / 3, min(0.0, total_w) / 3
    return (import_w, import_w, import_w), (export_w, export_w, export_w)


def _present_w(car: CarSetpoint, sent: Mapping[str, SentCommand]) -> float:
    """What the car draws now: measured, else the setpoint last sent to it, else 0 W."""
    if car.live.measured_power_w is not None:
        return car.live.measured_power_w
    last = sent.get(car.charger.id)
    return last.setpoint_w if last is not None else 0.0


def _present_phases(car: CarSetpoint, power_w: float) -> int:
    """The phases the car draws ``power_w`` on now: a switching charger's power tells where it can."""
    charger = car.charger
    if not charger.phase_switching or power_w == 0.0:
        return car.phases
    discharge = power_w < 0
    if abs(power_w) > charger.max_power_w(1, discharge=discharge):
        return charger.phases
    if abs(power_w) < charger.min_power_w(charger.phases, discharge=discharge):
        return 1
    return car.phases
