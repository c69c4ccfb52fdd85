"""What a charger delivers when it follows a power schedule: its minimum, its maximum, minute by minute.

Over an interval (a plan step) a charger is told *pieces*: ``(offset_s, power_w, phases)``, each in
force from its offset (seconds from the interval's start) until the next piece's offset or the
interval's end; a piece at an offset at or before 0 is in force from the start, and before the first
piece the charger idles. Powers follow the vehicle sign (+ charge, - discharge), measured at the
charger (AC side). What the charger does with each piece:

* a request whose magnitude is above 0 and below the charger's minimum on those phases
  (``ChargerConfig.min_power_w(phases, discharge=...)``: 6 A per phase on AC, IEC 61851, or the
  configured minimum in W) pauses: 0 W;
* a magnitude above the charger's maximum on those phases (``ChargerConfig.max_power_w``) or the
  car's own limit is capped; a charger that is not bidirectional never discharges;
* a charger that cannot switch phases runs on all of its phases whatever it is told; a switching
  one on the phases told (at most its own);
* a NaN request is refused as 0.

:meth:`ChargerModel.follow` returns the delivered power per minute (any whole-second resolution):
each value is the exact energy average of the pieces inside it, so a pulse ending at 7 min 15 s
gives the eighth minute a quarter of its power. The plant then limits it by what the battery can
take or give; that is not the charger's business.

:func:`pulse_pieces` turns a step's :class:`~controller.dispatch.duty_cycle.Pulse` into the pieces
a charger is told, and :func:`delivery_phases` picks the phases a step's average runs on.

Pure: the configuration only, no state; the same model can drive a virtual charger.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from controller.config import ChargerConfig, SiteConfig, VehicleConfig
from controller.dispatch.duty_cycle import Pulse

__all__ = ["ChargerModel", "Piece", "Pieces", "delivery_phases", "pulse_pieces"]

Piece = tuple[float, float, int]
"""(offset from the interval's start in s, requested power W with the vehicle sign, phases)."""
Pieces = tuple[Piece, ...]
FloatArray = npt.NDArray[np.float64]

# A request this close to the minimum runs at it: float noise, not a request below it.
MIN_TOLERANCE_W = 1e-6


class ChargerModel:
    """One car on one charger (or on none: then only the car's own limits apply)."""

    __slots__ = ("_limits", "charger", "phases")

    def __init__(
        self, charger: ChargerConfig | None, car_max_charge_w: float, car_max_discharge_w: float
    ) -> None:
        self.charger = charger
        self.phases = charger.phases if charger is not None else 3
        """The phases a request without its own runs on."""
        self._limits: dict[tuple[int, bool], tuple[float, float]] = {}
        for phases in range(1, self.phases + 1):
            for discharge in (False, True):
                car_max = car_max_discharge_w if discharge else car_max_charge_w
                if charger is None:
                    self._limits[phases, discharge] = (0.0, max(0.0, car_max))
                    continue
                most = charger.max_power_w(phases, discharge=discharge)
                if discharge and not charger.bidirectional:
                    most = 0.0
                least = charger.min_power_w(phases, discharge=discharge)
                self._limits[phases, discharge] = (least, max(0.0, min(most, car_max)))

    @classmethod
    def for_vehicle(cls, vehicle: VehicleConfig, config: SiteConfig) -> ChargerModel:
        charger = config.charger(vehicle.home_charger) if vehicle.home_charger else None
        return cls(charger, 1000.0 * vehicle.max_charge_kw, 1000.0 * vehicle.max_discharge_kw)

    def run_phases(self, phases: int | None) -> int:
        """The phases the charger actually runs on when told ``phases`` (None: its own)."""
        charger = self.charger
        if phases is None or charger is None or not charger.phase_switching:
            return self.phases
        return min(max(1, int(phases)), self.phases)

    def limits_w(self, phases: int | None, *, discharge: bool) -> tuple[float, float]:
        """(minimum, maximum) magnitude on ``phases`` in that direction, W."""
        return self._limits[self.run_phases(phases), discharge]

    def delivered_w(self, power_w: float, phases: int | None = None) -> float:
        """What the charger delivers while told ``power_w`` on ``phases``."""
        if power_w == 0.0 or power_w != power_w:  # NaN is refused as 0
            return 0.0
        discharge = power_w < 0.0
        least, most = self.limits_w(phases, discharge=discharge)
        magnitude = abs(power_w)
        if magnitude < least - MIN_TOLERANCE_W:
            return 0.0
        return -min(magnitude, most) if discharge else min(magnitude, most)

    def constant_w(self, pieces: Sequence[Piece], duration_s: float) -> float | None:
        """The delivered power when it is one value over the whole interval, else None."""
        if not pieces:
            return 0.0
        value = 0.0  # idle before the first piece
        for offset, power_w, phases in pieces:
            if offset >= duration_s:
                break
            delivered = self.delivered_w(power_w, phases)
            if offset > 0.0 and delivered != value:
                return None
            value = delivered  # a piece at or before the start replaces the one before it
        return value

    def follow(self, pieces: Sequence[Piece], duration_s: int, resolution_s: int = 60) -> FloatArray:
        """Delivered power per ``resolution_s`` over ``duration_s``: the exact energy average of the
        pieces in each interval (``duration_s`` a whole multiple of ``resolution_s``)."""
        if resolution_s <= 0 or duration_s <= 0 or duration_s % resolution_s:
            raise ValueError(f"{duration_s} s is not a whole number of {resolution_s} s intervals")
        count = duration_s // resolution_s
        offsets = [min(max(0.0, float(p[0])), float(duration_s)) for p in pieces]
        if any(b < a for a, b in itertools.pairwise(offsets)):
            raise ValueError("pieces must be in order of their offsets")
        constant = self.constant_w(pieces, duration_s)
        if constant is not None:
            return np.full(count, constant)
        # Delivered energy (W s) is piecewise linear in time: its value at every piece's start,
        # interpolated at the interval edges, gives each interval's energy exactly.
        knots = [0.0, *offsets, float(duration_s)]
        powers = [0.0, *(self.delivered_w(p[1], p[2]) for p in pieces)]
        energy = np.concatenate(([0.0], np.cumsum(np.array(powers) * np.diff(knots))))
        edges = np.arange(count + 1, dtype=np.float64) * resolution_s
        out: FloatArray = np.diff(np.interp(edges, knots, energy)) / resolution_s
        return out


def pulse_pieces(pulse: Pulse, phases: int) -> Pieces:
    """The pieces a charger is told for one step's pulse: its power from the start, then 0."""
    if pulse.continuous:
        return ((0.0, pulse.power_w, phases),)
    return ((0.0, pulse.power_w, phases), (float(pulse.on_s), 0.0, phases))


def delivery_phases(charger: ChargerConfig, average_w: float) -> int:
    """The phases a step's average runs on: one on a switching charger where one phase carries it
    and the full phases' minimum is above it, else all of the charger's."""
    if not charger.phase_switching or average_w == 0.0 or math.isnan(average_w):
        return charger.phases
    discharge = average_w < 0.0
    magnitude = abs(average_w)
    if magnitude <= charger.max_power_w(1, discharge=discharge) and magnitude < charger.min_power_w(
        charger.phases, discharge=discharge
    ):
        return 1
    return charger.phases
