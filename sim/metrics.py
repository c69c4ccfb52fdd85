"""Metrics of one run: cost, energy flows, V2H/V2G split, battery wear, safety, solver times.

Conventions: energy over a step = power x step length; costs in the site currency. Flows are
counted inside the step, minute by minute as the plant ran them (``SimResult.power_1min_w``,
``grid_1min_w``), not from the netted step average: a car discharging at 4.14 kW for the first quarter
of a 15-minute step against a 1 kW home exports 0.196 kWh and imports 0.1875 kWh in that step,
where the netted average (-0.035 kW) shows an export of 9 Wh and no import.

* ``import_kwh`` / ``export_kwh``: the sums over the minutes of the grid meter's positive and
  negative parts; ``peak_import_kw`` / ``peak_export_kw`` the largest minute, and a step exceeds a
  grid limit when any of its minutes does.
* ``energy_cost`` = import cost - export revenue, each step's import and export at that step's
  prices.
* ``stored_energy_value``: the change of energy stored in the cars from start to end, valued at the
  optimiser's terminal value over the whole scenario (``optimizer.terminal_value_per_kwh`` when
  configured, else the larger of the mean import price and the upper-quartile export price, at least
  0: ``controller.optimizer.inputs.terminal_value_per_kwh``), exactly what the ``perfect`` solve
  values it at, so ``perfect`` is the lowest total cost under this metric. Strategies that end with
  fuller or emptier cars are compared fairly with it.
* ``total_cost`` = energy cost + degradation cost - stored energy value: what strategies are ranked by.
* ``throughput_kwh``: energy through the batteries on the battery side (charged in + discharged out);
  ``degradation_cost`` = throughput x each car's ``degradation_cost_per_kwh``.
* ``charge_kwh`` / ``discharge_kwh`` (AC) and ``throughput_kwh`` sum the minutes' positive and
  negative parts of each car's power.
* V2H is discharge that covers the home's net load (load - PV) in the same minute, V2G is discharge
  that leaves through the grid meter in that minute; discharge into another car's charging is
  neither.
* A reserve breach is a step where a car discharged (in any minute) and ended below its reserve
  floor (a car that arrives from a trip below the floor is no breach; it must then not be
  discharged).
* A ceiling breach is a step where a car charged (in any minute) and ended above its maximum SoC
  (``max_soc_percent``) by more than a float tolerance; a car that arrives above it is no breach.
  ``ceiling_excess_kwh_max`` is the largest such excess (0 without breaches).
* With a capacity tariff (``tariff.capacity``): ``monthly_peak_import_kw`` is each month's (local
  time, ``YYYY-MM``) highest average import over the tariff's windows (15 minutes, aligned to the
  wall clock), from the minutes' positive parts; ``capacity_cost`` is the sum over the months of
  ``price_per_kw_month x max(peak, minimum_peak_kw)`` (a month the run only touches is billed in
  full), and it is part of ``total_cost``.
* A departure shortfall is a departure below the target; it is avoidable when charging at full power
  since plug-in would have reached the target (or more of it).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from controller.dispatch.peak_window import month_key
from controller.optimizer.inputs import terminal_value_per_kwh
from controller.optimizer.shape import SiteShape
from sim.engine import SimResult
from sim.scenario import FloatArray

__all__ = ["Metrics", "compute_metrics", "monthly_cost", "monthly_peaks", "saving_share", "step_cost"]

# Tolerances against float noise, not slack for the controller.
RESERVE_TOLERANCE_KWH = 0.01
CEILING_TOLERANCE_KWH = 0.01
SHORTFALL_TOLERANCE_KWH = 0.05


@dataclass(frozen=True, slots=True)
class Metrics:
    strategy: str
    scenario: str
    currency: str
    days: float
    steps: int
    total_cost: float
    """Energy cost + degradation cost - stored energy value."""
    energy_cost: float
    import_cost: float
    export_revenue: float
    degradation_cost: float
    stored_energy_value: float
    terminal_price_per_kwh: float
    import_kwh: float
    export_kwh: float
    charge_kwh: float
    discharge_kwh: float
    v2h_kwh: float
    v2g_kwh: float
    throughput_kwh: float
    losses_kwh: float
    drive_kwh: float
    unmet_drive_kwh: float
    initial_energy_kwh: float
    final_energy_kwh: float
    reserve_breaches: int
    ceiling_breaches: int
    """Steps where a car charged and ended above its maximum SoC."""
    ceiling_excess_kwh_max: float
    lowest_soc_percent: float | None
    """Lowest end-of-step SoC of any car while plugged in."""
    lowest_breach_soc_percent: float | None
    departures: int
    departure_shortfalls: int
    shortfall_kwh: float
    avoidable_shortfalls: int
    avoidable_shortfall_kwh: float
    peak_import_kw: float
    peak_export_kw: float
    import_limit_exceeded_steps: int
    export_limit_exceeded_steps: int
    solves: int
    solve_ms_median: float | None
    solve_ms_p95: float | None
    solve_ms_max: float | None
    solve_ms_mean: float | None
    solver_ms_median: float | None
    """The solver's own time (the rest of solve_ms is building inputs and the plan)."""
    fallbacks: int
    wall_time_s: float
    capacity_cost: float = 0.0
    """With a capacity tariff: what the months' peaks cost (part of ``total_cost``), else 0."""
    monthly_peak_import_kw: dict[str, float] = field(default_factory=dict)
    """With a capacity tariff: each month's highest window-average import, kW (``YYYY-MM``, local)."""
    battery_charge_kwh: float = 0.0
    """Home batteries (``home_batteries``): AC energy charged, summed over the batteries."""
    battery_discharge_kwh: float = 0.0
    battery_cycles: float = 0.0
    """Energy discharged out of the cells over the usable capacity, summed over the batteries."""
    battery_degradation_cost: float = 0.0
    """Their wear (part of ``degradation_cost``): per kWh discharged out of the cells."""
    battery_floor_breaches: int = 0
    """Steps a home battery discharged and ended below its ``floor_percent``."""
    storage_to_storage_kwh: float = 0.0
    """Energy one storage (a car, a home battery) charged from the other's discharge, both ways,
    after PV surplus and home load (``storage_transfer_kwh``)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def terminal_price_per_kwh(result: SimResult) -> float:
    """The value of a kWh left in the cars, as the optimiser's perfect-foresight solve sees it: its
    terminal value over the whole series."""
    scenario = result.scenario
    series = scenario.series
    configured = scenario.config.optimizer.terminal_value_per_kwh
    if configured is not None or series.steps == 0:
        return configured or 0.0
    shape = SiteShape.from_config(scenario.config, series.steps)
    return terminal_value_per_kwh(shape, series.import_price_per_kwh, series.export_price_per_kwh)


def step_cost(result: SimResult) -> FloatArray:
    """Energy cost per step (import cost - export revenue), from the flows inside each step."""
    series = result.scenario.series
    out: FloatArray = (
        result.import_kwh * series.import_price_per_kwh - result.export_kwh * series.export_price_per_kwh
    )
    return out


def _minute_hours(result: SimResult) -> float:
    return result.scenario.series.step_hours / result.minutes_per_step


def _by_step(result: SimResult, per_minute: FloatArray) -> FloatArray:
    """(vehicles, steps x minutes) -> (vehicles, steps, minutes)."""
    return per_minute.reshape(per_minute.shape[0], -1, result.minutes_per_step)


def _battery_side_kwh(result: SimResult) -> FloatArray:
    """Per vehicle and step, energy through the battery (charged in + discharged out), kWh."""
    to_kwh = _minute_hours(result) / 1000.0
    eta_c = np.array([s.charge_efficiency for s in result.specs])[:, None]
    eta_d = np.array([s.discharge_efficiency for s in result.specs])[:, None]
    minutes = _by_step(result, result.power_1min_w)
    charge = np.maximum(minutes, 0.0).sum(axis=2) * to_kwh * eta_c
    discharge = np.maximum(-minutes, 0.0).sum(axis=2) * to_kwh / eta_d
    out: FloatArray = charge + discharge
    return out


def degradation_per_step(result: SimResult) -> FloatArray:
    rates = np.array(
        [
            v.degradation_cost_per_kwh
            for spec in result.specs
            for v in result.scenario.config.vehicles
            if v.id == spec.vehicle_id
        ]
    )[:, None]
    out: FloatArray = (_battery_side_kwh(result) * rates).sum(axis=0)
    return out


def monthly_cost(result: SimResult) -> dict[str, float]:
    """Energy + degradation cost per calendar month (UTC), keyed ``YYYY-MM``.

    Not the total cost: the stored-energy value is a single figure for the whole run and is left out,
    so the months add up to ``energy_cost + degradation_cost``. ``sim run`` writes it to
    ``metrics.json`` as ``monthly_energy_and_degradation_cost``.
    """
    series = result.scenario.series
    cost = step_cost(result) + degradation_per_step(result)
    out: dict[str, float] = {}
    month_of_step = [series.time_at(k).strftime("%Y-%m") for k in range(series.steps)]
    for key in dict.fromkeys(month_of_step):
        out[key] = 0.0
    for k, key in enumerate(month_of_step):
        out[key] += float(cost[k])
    return out


def monthly_peaks(result: SimResult, window_minutes: int = 15) -> dict[str, float]:
    """Per month (local time, ``YYYY-MM``): the highest average import over windows of
    ``window_minutes`` aligned to the wall clock, kW, from the grid meter's minutes."""
    series = result.scenario.series
    minute = series.step / result.minutes_per_step
    imported_w = np.maximum(result.grid_1min_w, 0.0)
    if imported_w.size == 0:
        return {}
    window = dt.timedelta(minutes=window_minutes)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    offset_s = (series.start - epoch).total_seconds()
    minute_s = minute.total_seconds()
    slot = ((offset_s + np.arange(imported_w.size) * minute_s) // window.total_seconds()).astype(np.int64)
    slots, first = np.unique(slot, return_index=True)
    sums = np.add.reduceat(imported_w, first)
    # A window the run cuts short counts its missing minutes as 0.
    average_kw = sums * minute_s / window.total_seconds() / 1000.0
    timezone = result.scenario.config.site.timezone
    out: dict[str, float] = {}
    for start_slot, kw in zip(slots.tolist(), average_kw.tolist(), strict=True):
        year, month = month_key(epoch + start_slot * window, timezone)
        key = f"{year:04d}-{month:02d}"
        out[key] = max(out.get(key, 0.0), kw)
    return out


def _capacity(result: SimResult) -> tuple[float, dict[str, float]]:
    """(capacity cost, monthly peaks) under the config's capacity tariff; (0, {}) without one."""
    tariff = result.scenario.config.tariff.capacity
    if tariff is None:
        return 0.0, {}
    peaks = monthly_peaks(result, tariff.window_minutes)
    cost = sum(tariff.price_per_kw_month * max(kw, tariff.minimum_peak_kw) for kw in peaks.values())
    return cost, peaks


def _moving(result: SimResult) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Per vehicle and step: (charged in some minute, discharged in some minute)."""
    minutes = _by_step(result, result.power_1min_w)
    charged: npt.NDArray[np.bool_] = np.asarray((minutes > 0.0).any(axis=2))
    discharged: npt.NDArray[np.bool_] = np.asarray((minutes < 0.0).any(axis=2))
    return charged, discharged


def _flows(result: SimResult) -> dict[str, float]:
    """AC energy charged and discharged, and the discharge's V2H / V2G split, minute by minute, kWh."""
    to_kwh = _minute_hours(result) / 1000.0
    power = result.power_1min_w
    grid = result.grid_1min_w
    charge_w = np.maximum(power, 0.0).sum(axis=0)
    discharge_w = np.maximum(-power, 0.0).sum(axis=0)
    net_home_w = grid - power.sum(axis=0)  # load - PV, as the meter closes the balance
    if result.battery_1min_w.size:
        net_home_w = net_home_w - result.battery_1min_w.sum(axis=0)
    v2h_w = np.minimum(discharge_w, np.maximum(net_home_w, 0.0))
    v2g_w = np.minimum(discharge_w - v2h_w, np.maximum(-grid, 0.0))
    return {
        "charge": float(charge_w.sum() * to_kwh),
        "discharge": float(discharge_w.sum() * to_kwh),
        "v2h": float(v2h_w.sum() * to_kwh),
        "v2g": float(v2g_w.sum() * to_kwh),
    }


def storage_transfer_kwh(result: SimResult) -> tuple[float, float]:
    """Per minute, the part of one storage's charging that the other's discharging supplied, after
    the PV surplus and the home load are accounted (docs/simulator.md)::

        S = max(0, PV - load), H = max(0, load - PV)
        battery -> cars = min(max(0, battery discharge - H), max(0, cars' charge - S))
        cars -> battery = min(max(0, cars' discharge - H), max(0, battery charge - S))

    Returns (battery -> cars, cars -> battery) in kWh; (0, 0) without a home battery.
    """
    if not result.battery_1min_w.size or result.load_w is None or result.pv_w is None:
        return 0.0, 0.0
    per = result.minutes_per_step
    load = np.repeat(result.load_w, per)
    pv = np.repeat(result.pv_w, per)
    surplus = np.maximum(pv - load, 0.0)
    home = np.maximum(load - pv, 0.0)
    cars, batteries = result.power_1min_w, result.battery_1min_w
    cars_in, cars_out = np.maximum(cars, 0.0).sum(axis=0), np.maximum(-cars, 0.0).sum(axis=0)
    bat_in, bat_out = np.maximum(batteries, 0.0).sum(axis=0), np.maximum(-batteries, 0.0).sum(axis=0)
    to_cars = np.minimum(np.maximum(bat_out - home, 0.0), np.maximum(cars_in - surplus, 0.0))
    to_battery = np.minimum(np.maximum(cars_out - home, 0.0), np.maximum(bat_in - surplus, 0.0))
    to_kwh = _minute_hours(result) / 1000.0
    return float(to_cars.sum() * to_kwh), float(to_battery.sum() * to_kwh)


def battery_figures(result: SimResult) -> dict[str, float]:
    """The home batteries' energy, cycles, wear, floor breaches and stored-energy change."""
    if not result.battery_specs:
        return {}
    to_kwh = _minute_hours(result) / 1000.0
    power = result.battery_1min_w
    specs = result.battery_specs
    charged = np.maximum(power, 0.0).sum(axis=1) * to_kwh
    out_ac = np.maximum(-power, 0.0).sum(axis=1) * to_kwh
    cells_out = out_ac / np.array([s.discharge_efficiency for s in specs])
    wear = cells_out * np.array([s.degradation_cost_per_kwh for s in specs])
    floor = np.array([s.floor_kwh for s in specs])[:, None]
    discharged = np.asarray((_by_step(result, power) < 0.0).any(axis=2))
    breaches = (result.battery_energy_kwh < floor - RESERVE_TOLERANCE_KWH) & discharged
    final = float(result.battery_energy_kwh[:, -1].sum()) if result.battery_energy_kwh.size else 0.0
    to_cars, to_battery = storage_transfer_kwh(result)
    return {
        "battery_charge_kwh": float(charged.sum()),
        "battery_discharge_kwh": float(out_ac.sum()),
        "battery_cycles": float((cells_out / np.array([s.capacity_kwh for s in specs])).sum()),
        "battery_degradation_cost": float(wear.sum()),
        "battery_floor_breaches": int(breaches.sum()),
        "storage_to_storage_kwh": to_cars + to_battery,
        "battery_energy_change_kwh": final - float(sum(result.battery_initial_kwh)),
    }


def _stats(values: FloatArray) -> tuple[float | None, float | None, float | None, float | None]:
    if len(values) == 0:
        return None, None, None, None
    return (
        float(np.median(values)),
        float(np.percentile(values, 95)),
        float(values.max()),
        float(values.mean()),
    )


def compute_metrics(result: SimResult) -> Metrics:
    scenario = result.scenario
    series = scenario.series
    hours = series.step_hours
    import_cost = float((result.import_kwh * series.import_price_per_kwh).sum())
    export_revenue = float((result.export_kwh * series.export_price_per_kwh).sum())
    degradation = float(degradation_per_step(result).sum())
    flows = _flows(result)

    charged, discharged = _moving(result)
    reserve = np.array([s.reserve_kwh for s in result.specs])[:, None]
    breaches = (result.energy_kwh < reserve - RESERVE_TOLERANCE_KWH) & discharged
    ceiling = np.array([s.max_soc_kwh for s in result.specs])[:, None]
    excess = result.energy_kwh - ceiling
    over = (excess > CEILING_TOLERANCE_KWH) & charged
    soc = result.soc_percent
    plugged_soc = soc[result.plugged_in]
    lowest = float(plugged_soc.min()) if plugged_soc.size else None
    breach_soc = soc[breaches]

    shortfalls = [d for d in result.departures if d.shortfall_kwh > SHORTFALL_TOLERANCE_KWH]
    avoidable = [d for d in result.departures if d.avoidable_shortfall_kwh > SHORTFALL_TOLERANCE_KWH]

    grid_cfg = scenario.config.site.grid
    grid = result.grid_1min_w
    by_step = grid.reshape(-1, result.minutes_per_step)
    step_max = by_step.max(axis=1, initial=-math.inf)
    step_min = by_step.min(axis=1, initial=math.inf)
    solves = result.solve_ms[~np.isnan(result.solve_ms)]
    median, p95, worst, mean = _stats(solves)
    final = float(result.energy_kwh[:, -1].sum()) if series.steps else float(sum(result.initial_energy_kwh))
    initial = float(sum(result.initial_energy_kwh))
    terminal_price = terminal_price_per_kwh(result)
    stored_value = (final - initial) * terminal_price
    capacity_cost, peaks = _capacity(result)
    battery = battery_figures(result)
    degradation += battery.get("battery_degradation_cost", 0.0)
    # A home battery left fuller or emptier than it started is worth that energy at the same price.
    stored_value += battery.pop("battery_energy_change_kwh", 0.0) * terminal_price
    return Metrics(
        strategy=result.strategy,
        scenario=scenario.name,
        currency=scenario.config.site.currency,
        days=series.steps * hours / 24.0,
        steps=series.steps,
        total_cost=import_cost - export_revenue + degradation + capacity_cost - stored_value,
        energy_cost=import_cost - export_revenue,
        import_cost=import_cost,
        export_revenue=export_revenue,
        degradation_cost=degradation,
        stored_energy_value=stored_value,
        terminal_price_per_kwh=terminal_price,
        import_kwh=float(result.import_kwh.sum()),
        export_kwh=float(result.export_kwh.sum()),
        charge_kwh=flows["charge"],
        discharge_kwh=flows["discharge"],
        v2h_kwh=flows["v2h"],
        v2g_kwh=flows["v2g"],
        throughput_kwh=float(_battery_side_kwh(result).sum()),
        losses_kwh=result.losses_kwh,
        drive_kwh=result.drive_kwh,
        unmet_drive_kwh=result.unmet_drive_kwh,
        initial_energy_kwh=initial,
        final_energy_kwh=final,
        reserve_breaches=int(breaches.sum()),
        ceiling_breaches=int(over.sum()),
        ceiling_excess_kwh_max=float(excess[over].max()) if over.any() else 0.0,
        lowest_soc_percent=lowest,
        lowest_breach_soc_percent=float(breach_soc.min()) if breach_soc.size else None,
        departures=len(result.departures),
        departure_shortfalls=len(shortfalls),
        shortfall_kwh=float(sum(d.shortfall_kwh for d in shortfalls)),
        avoidable_shortfalls=len(avoidable),
        avoidable_shortfall_kwh=float(sum(d.avoidable_shortfall_kwh for d in avoidable)),
        peak_import_kw=float(max(grid.max(initial=0.0), 0.0) / 1000.0),
        peak_export_kw=float(max(-grid.min(initial=0.0), 0.0) / 1000.0),
        import_limit_exceeded_steps=int((step_max > 1000.0 * grid_cfg.import_limit_kw + 1e-6).sum()),
        export_limit_exceeded_steps=int((-step_min > 1000.0 * grid_cfg.export_limit_kw + 1e-6).sum()),
        solves=len(solves),
        solve_ms_median=median,
        solve_ms_p95=p95,
        solve_ms_max=worst,
        solve_ms_mean=mean,
        solver_ms_median=_stats(result.solver_ms[~np.isnan(result.solver_ms)])[0],
        fallbacks=int(result.fallback.sum()),
        wall_time_s=result.wall_time_s,
        capacity_cost=capacity_cost,
        monthly_peak_import_kw=peaks,
        battery_charge_kwh=battery.get("battery_charge_kwh", 0.0),
        battery_discharge_kwh=battery.get("battery_discharge_kwh", 0.0),
        battery_cycles=battery.get("battery_cycles", 0.0),
        battery_degradation_cost=battery.get("battery_degradation_cost", 0.0),
        battery_floor_breaches=int(battery.get("battery_floor_breaches", 0)),
        storage_to_storage_kwh=battery.get("storage_to_storage_kwh", 0.0),
    )


def saving_share(cost: float, uncontrolled_cost: float, perfect_cost: float) -> float | None:
    """Share of the perfect-foresight saving over uncontrolled that ``cost`` achieves."""
    bound = uncontrolled_cost - perfect_cost
    if not math.isfinite(bound) or abs(bound) < 1e-9:
        return None
    return (uncontrolled_cost - cost) / bound
