"""A plan as JSON-ready data or as a readable table (the ``v2x plan`` output)."""

from __future__ import annotations

import zoneinfo

from controller.domain import Plan

__all__ = ["plan_table"]


def plan_table(
    plan: Plan,
    load_w: list[float],
    pv_w: list[float],
    timezone: str = "UTC",
    currency: str = "EUR",
) -> list[str]:
    """Summary lines, one line per vehicle, then one row per step (local time, kW, %)."""
    zone = zoneinfo.ZoneInfo(timezone)
    start_local = plan.start.astimezone(zone)
    minutes = plan.step.total_seconds() / 60
    lines = [
        f"plan from {start_local:%Y-%m-%d %H:%M %Z}: {plan.steps} steps of {minutes:g} min, "
        f"solver {plan.solver_status} in {plan.solve_time_ms:.1f} ms"
        + (" (FALLBACK)" if plan.fallback else ""),
        f"import cost {plan.import_cost:.2f} {currency}, export revenue {plan.export_revenue:.2f} {currency}, "
        f"battery wear {plan.degradation_cost:.2f} {currency}, total cost {plan.total_cost:.2f} {currency}",
    ]
    for note in plan.notes:
        lines.append(f"note: {note}")
    ids = list(plan.vehicles)
    for vid in ids:
        vp = plan.vehicles[vid]
        extra = (
            f", departure shortfall {vp.departure_shortfall_kwh:.1f} kWh"
            if vp.departure_shortfall_kwh > 0.05
            else ""
        )
        lines.append(
            f"{vid}: {vp.reason} (SoC {vp.soc_percent[0]:.0f} % -> {vp.soc_percent[-1]:.0f} %, "
            f"{vp.throughput_kwh:.1f} kWh through the battery{extra})"
        )
    head = f"{'time':>5} {'import':>7} {'export':>7} {'load':>6} {'pv':>6}"
    for vid in ids:
        short = vid[:12]
        head += f" {short + ' kW':>15} {'SoC %':>6}"
    head += f" {'grid kW':>8}"
    lines.append("")
    lines.append(head)
    for k in range(plan.steps):
        at = (plan.start + plan.step * k).astimezone(zone)
        grid_kw = (plan.grid_import_w[k] - plan.grid_export_w[k]) / 1000.0
        row = (
            f"{at:%H:%M} {plan.import_price_per_kwh[k]:>7.3f} {plan.export_price_per_kwh[k]:>7.3f} "
            f"{load_w[k] / 1000.0:>6.2f} {pv_w[k] / 1000.0:>6.2f}"
        )
        for vid in ids:
            vp = plan.vehicles[vid]
            row += f" {vp.power_w[k] / 1000.0:>15.2f} {vp.soc_percent[k + 1]:>6.1f}"
        row += f" {grid_kw:>8.2f}"
        lines.append(row)
    return lines
