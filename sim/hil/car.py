"""The car behind a virtual charger: a battery with efficiencies, power limits and a taper near full."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VirtualCar"]


@dataclass(slots=True)
class VirtualCar:
    """A car's battery as seen from the charger (AC side: + charging, - discharging).

    Charging moves ``ac_wh * charge_efficiency`` into the battery; discharging takes
    ``ac_wh / discharge_efficiency`` out of it (the simulator's plant does the same). Above
    ``taper_from_percent`` the car accepts less, linearly down to ``taper_floor`` of its maximum at
    100 %; a full car takes nothing and an empty one gives nothing.
    """

    capacity_kwh: float = 60.0
    soc_percent: float = 50.0
    max_charge_w: float = 11_000.0
    max_discharge_w: float = 10_000.0
    charge_efficiency: float = 0.92
    discharge_efficiency: float = 0.92
    taper_from_percent: float = 80.0
    taper_floor: float = 0.1
    reports_soc: bool = True
    """False: the car does not tell the charger its SoC (no SoC measurand is sent)."""
    target_soc_percent: float | None = None
    """Reported to the CSMS in 2.1 ``NotifyEVChargingNeeds`` (``targetSoC``) when set."""

    def __post_init__(self) -> None:
        if self.capacity_kwh <= 0:
            raise ValueError("capacity_kwh must be above 0")
        if not 0.0 < self.charge_efficiency <= 1.0 or not 0.0 < self.discharge_efficiency <= 1.0:
            raise ValueError("efficiencies must be in (0, 1]")
        if not 0.0 <= self.soc_percent <= 100.0:
            raise ValueError("soc_percent must be within 0-100")

    @property
    def energy_wh(self) -> float:
        return self.capacity_kwh * 10.0 * self.soc_percent

    def accept_charge_w(self) -> float:
        """The most the car takes now (AC side), with the taper near full."""
        if self.soc_percent >= 100.0:
            return 0.0
        if self.soc_percent <= self.taper_from_percent:
            return self.max_charge_w
        span = max(1e-9, 100.0 - self.taper_from_percent)
        fraction = 1.0 - (1.0 - self.taper_floor) * (self.soc_percent - self.taper_from_percent) / span
        return self.max_charge_w * max(self.taper_floor, fraction)

    def accept_discharge_w(self) -> float:
        """The most the car gives now (AC side, a magnitude)."""
        return 0.0 if self.soc_percent <= 0.0 else self.max_discharge_w

    def limit_w(self, power_w: float) -> float:
        """``power_w`` (vehicle sign) limited by what the car takes or gives now."""
        if power_w > 0.0:
            return min(power_w, self.accept_charge_w())
        if power_w < 0.0:
            return -min(-power_w, self.accept_discharge_w())
        return 0.0

    def move(self, ac_wh: float) -> None:
        """Charge (+) or discharge (-) ``ac_wh`` at the charger; the SoC stays within 0-100 %."""
        stored_wh = ac_wh * self.charge_efficiency if ac_wh > 0 else ac_wh / self.discharge_efficiency
        capacity_wh = self.capacity_kwh * 1000.0
        self.soc_percent = min(100.0, max(0.0, self.soc_percent + 100.0 * stored_wh / capacity_wh))
