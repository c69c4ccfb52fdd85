"""The power stage of a virtual charger: ramps to what is wanted, counts energy, moves the car's SoC."""

from __future__ import annotations

from collections.abc import Callable

from controller.clock import Clock
from sim.hil.car import VirtualCar
from sim.hil.link import ProtocolStats

__all__ = ["Drive"]

RETARGET_W = 50.0
"""A new target this far from the current one starts a new ramp (smaller drifts, e.g. the taper, are
followed without one)."""
REACHED_W = 1.0


class Drive:
    """Power (+ charging, - discharging) moving linearly to its target over ``ramp_s`` clock seconds."""

    def __init__(self, clock: Clock, ramp_s: float, stats: ProtocolStats) -> None:
        self.clock = clock
        self.ramp_s = ramp_s
        self.stats = stats
        self.energy_import_wh = 0.0
        self.energy_export_wh = 0.0
        self._last_m = clock.monotonic()
        self._ramp = (0.0, 0.0, self._last_m)  # from W, to W, start (clock monotonic)
        self._pending: list[float] = []
        self._unchecked = False

    def power_at(self, moment: float) -> float:
        start_w, end_w, start_m = self._ramp
        if self.ramp_s <= 0:
            return end_w
        return start_w + (end_w - start_w) * min(1.0, max(0.0, (moment - start_m) / self.ramp_s))

    @property
    def power_w(self) -> float:
        return self.power_at(self.clock.monotonic())

    @property
    def target_w(self) -> float:
        return self._ramp[1]

    def expect(self, arrival_m: float) -> None:
        """A profile that arrived at ``arrival_m`` was applied: time until its power is reached (only
        for a profile that changes the power: a renewal at the same power has no latency to show)."""
        self._pending.append(arrival_m)
        self._unchecked = True

    def advance(self, car: VirtualCar | None, wanted: Callable[[], float]) -> None:
        """Move energy (and the car's SoC) up to now, then head for ``wanted()``."""
        now_m = self.clock.monotonic()
        before_w, after_w = self.power_at(self._last_m), self.power_at(now_m)
        # Exact for a linear ramp inside the interval; the kink where a ramp ends is a tick's rounding.
        ac_wh = 0.5 * (before_w + after_w) * max(0.0, now_m - self._last_m) / 3600.0
        self._last_m = now_m
        if ac_wh > 0:
            self.energy_import_wh += ac_wh
        else:
            self.energy_export_wh -= ac_wh
        if car is not None:
            car.move(ac_wh)
        start_w, end_w, start_m = self._ramp
        target = wanted()
        if abs(target - end_w) > RETARGET_W or (target == 0.0) != (end_w == 0.0):
            self._ramp = (after_w, target, now_m)
        elif target != end_w:
            self._ramp = (start_w, target, start_m)
        if self._pending and abs(self.power_at(now_m) - target) < REACHED_W:
            if not self._unchecked:
                self.stats.latencies_s.extend(now_m - arrival for arrival in self._pending)
            self._pending.clear()
        self._unchecked = False

    def cut(self, car: VirtualCar | None) -> None:
        """Cable out or power cut: 0 W at once (energy counted up to now first)."""
        self.advance(car, lambda: 0.0)
        self._ramp = (0.0, 0.0, self.clock.monotonic())
