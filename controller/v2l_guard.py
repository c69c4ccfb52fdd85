"""V2L sessions guard the reserve: the SoC must be known and recent, and the session stops just above
the reserve (the car powers loads directly, the controller cannot throttle it)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING

from controller.config import SiteConfig
from controller.domain import MeterRole, ensure_utc

if TYPE_CHECKING:
    from controller.site import VehicleRuntime

__all__ = ["V2L_CUTOFF_MARGIN_PERCENT", "V2L_SOC_MAX_AGE", "v2l_cutoffs", "v2l_soc"]

# V2L sessions stop this far above the reserve, so the cut-off lands before the floor.
V2L_CUTOFF_MARGIN_PERCENT = 1.0
# Without a vehicle_soc meter (SoC from the charger only), a SoC reading older than this is too old to
# protect the reserve during a V2L session (the car may be drawing kilowatts meanwhile).
V2L_SOC_MAX_AGE = dt.timedelta(minutes=15)


def v2l_soc(cfg: SiteConfig, vehicle: VehicleRuntime, now: dt.datetime) -> float | None:
    """The measured SoC (drained by the V2L meter since) if it is recent enough to guard a V2L
    session, else None.

    Recent: read within the ``stale_after_s`` of the vehicle's ``vehicle_soc`` meter, or
    ``V2L_SOC_MAX_AGE`` when its SoC comes from the charger only. Counting since the reading does
    not make it more recent.
    """
    estimate = vehicle.tracker.estimate()
    if estimate is None or not estimate.measured:
        return None
    meters = [
        m.stale_after_s
        for m in cfg.meters
        if m.role is MeterRole.VEHICLE_SOC and m.vehicle == vehicle.config.id
    ]
    max_age = dt.timedelta(seconds=max(meters)) if meters else V2L_SOC_MAX_AGE
    return estimate.soc_percent if ensure_utc(now) - estimate.read_at <= max_age else None


def v2l_cutoffs(
    cfg: SiteConfig, vehicles: Iterable[VehicleRuntime], now: dt.datetime
) -> list[VehicleRuntime]:
    """Vehicles whose running V2L session must stop now: SoC at the reserve, or unknown/stale
    (the reserve cannot be guarded without it). Each session is cut off once."""
    due = []
    for vehicle in vehicles:
        session = vehicle.v2l
        if session is None or vehicle.v2l_cut_off:
            continue
        if session.end is not None and now >= session.end:
            vehicle.v2l = None
            continue
        soc = v2l_soc(cfg, vehicle, now)
        floor = vehicle.config.reserve_percent + V2L_CUTOFF_MARGIN_PERCENT
        if soc is None or soc <= floor:
            vehicle.v2l_cut_off = True
            due.append(vehicle)
    return due
