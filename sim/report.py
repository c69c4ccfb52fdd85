"""Reports: summary tables, ``metrics.json``, the time-series CSVs (per step, and each car's power
per minute) and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import csv
import json
import math
import zoneinfo
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from sim.engine import SimResult
from sim.metrics import Metrics, saving_share
from sim.scenario import ScenarioError

__all__ = [
    "comparison_rows",
    "format_comparison",
    "format_summary",
    "monthly_cost_figure",
    "plot_monthly_cost",
    "plot_sample_week",
    "sample_week_start",
    "write_metrics_json",
    "write_power_1min_csv",
    "write_timeseries_csv",
]


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{round(value, digits) + 0.0:,.{digits}f}"  # + 0.0: no "-0.00"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for index, row in enumerate([header, *rows]):
        cells = [
            str(cell).ljust(widths[i]) if i == 0 else str(cell).rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_summary(metrics: Metrics) -> str:
    """One run, one line per figure; every amount is printed with its own sign, as in ``metrics.json``."""
    m = metrics
    cur = m.currency
    shortfall = f"{m.departure_shortfalls} ({_fmt(m.shortfall_kwh)} kWh), avoidable {m.avoidable_shortfalls}"
    rows = [
        ("strategy", m.strategy),
        ("scenario", f"{m.scenario}: {m.days:g} days, {m.steps} steps"),
        (
            "total cost",
            f"{_fmt(m.total_cost)} {cur} (energy + degradation"
            + (" + capacity" if m.monthly_peak_import_kw else "")
            + " - stored energy value)",
        ),
        (
            "  energy cost",
            f"{_fmt(m.energy_cost)} {cur} (import cost {_fmt(m.import_cost)} - export revenue "
            f"{_fmt(m.export_revenue)})",
        ),
        ("  degradation cost", f"{_fmt(m.degradation_cost)} {cur}"),
        (
            "  stored energy value",
            f"{_fmt(m.stored_energy_value)} {cur} ({_fmt(m.final_energy_kwh - m.initial_energy_kwh, 1)} kWh "
            f"at {_fmt(m.terminal_price_per_kwh, 3)} {cur}/kWh)",
        ),
        ("import / export", f"{_fmt(m.import_kwh, 1)} / {_fmt(m.export_kwh, 1)} kWh"),
        ("charged / discharged (AC)", f"{_fmt(m.charge_kwh, 1)} / {_fmt(m.discharge_kwh, 1)} kWh"),
        ("  V2H / V2G", f"{_fmt(m.v2h_kwh, 1)} / {_fmt(m.v2g_kwh, 1)} kWh"),
        ("battery throughput", f"{_fmt(m.throughput_kwh, 1)} kWh"),
        ("driven", f"{_fmt(m.drive_kwh, 1)} kWh (stranded {_fmt(m.unmet_drive_kwh, 1)} kWh)"),
        ("stored start / end", f"{_fmt(m.initial_energy_kwh, 1)} / {_fmt(m.final_energy_kwh, 1)} kWh"),
        (
            "reserve breaches",
            f"{m.reserve_breaches} (lowest SoC plugged in {_fmt(m.lowest_soc_percent, 1)} %)",
        ),
        (
            "ceiling breaches",
            f"{m.ceiling_breaches} (largest excess {_fmt(m.ceiling_excess_kwh_max, 3)} kWh)",
        ),
        ("departures", f"{m.departures}, shortfalls {shortfall}"),
        ("peak import / export", f"{_fmt(m.peak_import_kw)} / {_fmt(m.peak_export_kw)} kW"),
        *(
            [
                (
                    "capacity tariff",
                    f"{_fmt(m.capacity_cost)} {cur}; monthly peak "
                    + ", ".join(f"{month} {_fmt(kw)} kW" for month, kw in m.monthly_peak_import_kw.items()),
                )
            ]
            if m.monthly_peak_import_kw
            else []
        ),
        (
            "grid limit exceeded",
            f"import {m.import_limit_exceeded_steps} steps, export {m.export_limit_exceeded_steps} steps",
        ),
        (
            "solves",
            f"{m.solves}, median {_fmt(m.solve_ms_median)} ms, p95 {_fmt(m.solve_ms_p95)} ms, "
            f"max {_fmt(m.solve_ms_max)} ms, fallbacks {m.fallbacks}",
        ),
        ("wall time (closed loop)", f"{_fmt(m.wall_time_s, 1)} s"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def comparison_rows(results: Mapping[str, Metrics]) -> list[dict[str, Any]]:
    """One dict per strategy, with its share of the perfect-foresight saving over uncontrolled."""
    base = results.get("uncontrolled")
    bound = results.get("perfect")
    rows = []
    for name, m in results.items():
        share = (
            saving_share(m.total_cost, base.total_cost, bound.total_cost)
            if base is not None and bound is not None
            else None
        )
        rows.append({"strategy": name, "share_of_perfect_saving": share, **m.to_dict()})
    return rows


def format_comparison(results: Mapping[str, Metrics]) -> str:
    header = (
        "strategy",
        "total cost",
        "energy",
        "degradation",
        "stored value",
        "import kWh",
        "export kWh",
        "V2H kWh",
        "V2G kWh",
        "reserve/ceiling breaches",
        "shortfalls (avoidable)",
        "solves",
        "median ms",
        "share of perfect saving",
    )
    rows = []
    for row in comparison_rows(results):
        share = row["share_of_perfect_saving"]
        rows.append(
            (
                row["strategy"],
                _fmt(row["total_cost"]),
                _fmt(row["energy_cost"]),
                _fmt(row["degradation_cost"]),
                _fmt(row["stored_energy_value"]),
                _fmt(row["import_kwh"], 1),
                _fmt(row["export_kwh"], 1),
                _fmt(row["v2h_kwh"], 1),
                _fmt(row["v2g_kwh"], 1),
                f"{row['reserve_breaches']} / {row['ceiling_breaches']}",
                f"{row['departure_shortfalls']} ({row['avoidable_shortfalls']})",
                str(row["solves"]),
                _fmt(row["solve_ms_median"]),
                "-" if share is None else f"{100.0 * share:.1f} %",
            )
        )
    currency = next(iter(results.values())).currency if results else ""
    unit = f"costs in {currency}; " if currency else ""
    footer = (
        f"({unit}total cost = energy + degradation - stored value; stored value = change of the energy "
        "in the cars x its terminal value, positive when they end fuller)"
    )
    return format_table(header, rows) + "\n" + footer


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_metrics_json(path: Path, payload: Mapping[str, Any]) -> None:
    """JSON with NaN/inf written as null, so every JSON reader accepts it."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    path.write_text(
        json.dumps(clean(dict(payload)), indent=2, default=_json_default) + "\n", encoding="utf-8"
    )


def _exact(value: float) -> str:
    """The shortest text that reads back as the same float. Rounded columns (1 W) add up to an
    energy several Wh off over a year, enough to show reserve breaches that never happened."""
    return repr(float(value))  # float(): numpy's repr is "np.float64(...)"


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_timeseries_csv(path: Path, result: SimResult) -> None:
    """Per step: time, prices, load, PV, grid (the step's average, and its import and export kWh
    counted minute by minute inside it), and per vehicle power, SoC and plug state.

    Every number is written in full precision: each cell reads back as exactly the float the run
    used (powers in kW are the run's watts / 1000)."""
    series = result.scenario.series
    soc = result.soc_percent
    ids = result.vehicle_ids
    header = [
        "timestamp",
        "import_price_eur_per_kwh",
        "export_price_eur_per_kwh",
        "load_kw",
        "pv_kw",
        "grid_kw",
        "import_kwh",
        "export_kwh",
    ]
    for vid in ids:
        header += [f"{vid}_power_kw", f"{vid}_requested_kw", f"{vid}_soc_percent", f"{vid}_plugged_in"]
    header.append("solve_ms")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for k in range(series.steps):
            row: list[str] = [
                _utc(series.time_at(k)),
                _exact(series.import_price_per_kwh[k]),
                _exact(series.export_price_per_kwh[k]),
                _exact(series.load_w[k] / 1000.0),
                _exact(series.pv_w[k] / 1000.0),
                _exact(result.grid_w[k] / 1000.0),
                _exact(result.import_kwh[k]),
                _exact(result.export_kwh[k]),
            ]
            for i in range(len(ids)):
                row += [
                    _exact(result.power_w[i, k] / 1000.0),
                    _exact(result.requested_w[i, k] / 1000.0),
                    _exact(soc[i, k]),
                    "1" if result.plugged_in[i, k] else "0",
                ]
            solve = result.solve_ms[k]
            row.append("" if math.isnan(solve) else _exact(solve))
            writer.writerow(row)


def write_power_1min_csv(path: Path, result: SimResult) -> None:
    """Each car's power per minute as the plant ran it (W, + charging): a ``time`` column (UTC, the
    minute's start) and one column per vehicle, ``steps x minutes per step`` rows, in full precision."""
    series = result.scenario.series
    minutes = result.minutes_per_step
    per_minute = series.step / minutes
    columns = [[_exact(v) for v in row] for row in result.power_1min_w.tolist()]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", *result.vehicle_ids])
        for k in range(series.steps):
            start = series.time_at(k)
            for m in range(minutes):
                index = k * minutes + m
                writer.writerow([_utc(start + m * per_minute), *(column[index] for column in columns)])


def sample_week_start(result: SimResult) -> int:
    """The first local Monday 00:00 with a whole week after it, else the start."""
    series = result.scenario.series
    week = round(timedelta(days=7) / series.step)
    if series.steps <= week:
        return 0
    zone = zoneinfo.ZoneInfo(result.scenario.config.site.timezone)
    for k in range(series.steps - week + 1):
        local = series.time_at(k).astimezone(zone)
        if local.weekday() == 0 and local.hour == 0 and local.minute == 0:
            return k
    return 0


SIM_EXTRA_HINT = "pip install 'v2x-controller[sim]'"


class PlotsUnavailable(ScenarioError):
    """matplotlib, which only the plots need, is not installed (the daemon's install has no plots)."""

    def __init__(self) -> None:
        super().__init__(
            "plots", f"matplotlib is not installed: {SIM_EXTRA_HINT}, or pass --no-plots to skip them"
        )


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable() from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sample_week(path: Path, result: SimResult, first: int | None = None) -> None:
    """Prices, power flows and SoC (with reserve and departure targets) over one week."""
    plt = _pyplot()
    series = result.scenario.series
    week = round(timedelta(days=7) / series.step)
    first = sample_week_start(result) if first is None else first
    last = min(series.steps, first + week)
    zone = zoneinfo.ZoneInfo(result.scenario.config.site.timezone)
    times = [series.time_at(k).astimezone(zone).replace(tzinfo=None) for k in range(first, last)]
    fig, axes = plt.subplots(3, 1, figsize=(12, 9), sharex=True)
    ax = axes[0]
    ax.step(times, series.import_price_per_kwh[first:last], where="post", label="import")
    ax.step(times, series.export_price_per_kwh[first:last], where="post", label="export")
    ax.set_ylabel(f"price ({result.scenario.config.site.currency}/kWh)")
    ax.legend(loc="upper right")
    ax.set_title(f"{result.scenario.name}: {result.strategy}")
    ax = axes[1]
    ax.step(times, series.load_w[first:last] / 1000.0, where="post", label="home load", lw=0.8)
    ax.step(times, -series.pv_w[first:last] / 1000.0, where="post", label="PV (negative)", lw=0.8)
    for i, vid in enumerate(result.vehicle_ids):
        ax.step(times, result.power_w[i, first:last] / 1000.0, where="post", label=f"{vid} (+ charge)")
    ax.step(
        times, result.grid_w[first:last] / 1000.0, where="post", label="grid (+ import)", color="k", lw=0.8
    )
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_ylabel("power (kW)")
    ax.legend(loc="upper right", fontsize="small")
    ax = axes[2]
    soc = result.soc_percent
    for i, spec in enumerate(result.specs):
        ax.plot(times, soc[i, first:last], label=f"{spec.vehicle_id} SoC")
        ax.axhline(
            100.0 * spec.reserve_kwh / spec.capacity_kwh, color="red", ls="--", lw=0.8, label="reserve"
        )
        departures = [
            d for d in result.departures if d.vehicle_id == spec.vehicle_id and first <= d.step < last
        ]
        if departures:
            ax.scatter(
                [times[d.step - first] for d in departures],
                [100.0 * d.target_kwh / spec.capacity_kwh for d in departures],
                marker="v",
                color="green",
                zorder=3,
                label="departure target",
            )
    ax.set_ylim(0, 100)
    ax.set_ylabel("SoC (%)")
    ax.legend(loc="upper right", fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_monthly_cost(path: Path, monthly: Mapping[str, Mapping[str, float]], currency: str) -> None:
    """Grouped bars per month and strategy: energy + degradation cost (``monthly_cost``), without the
    stored-energy value, so the bars do not add up to ``total_cost``."""
    plt = _pyplot()
    fig = monthly_cost_figure(monthly, currency)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def monthly_cost_figure(monthly: Mapping[str, Mapping[str, float]], currency: str) -> Any:
    """The figure of :func:`plot_monthly_cost`, laid out (title and legend inside it), not saved."""
    plt = _pyplot()
    months = sorted({m for costs in monthly.values() for m in costs})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(months) + 2), 4.5))
    count = max(1, len(monthly))
    width = 0.8 / count
    x = np.arange(len(months))
    for i, (name, costs) in enumerate(monthly.items()):
        ax.bar(x + (i - (count - 1) / 2) * width, [costs.get(m, 0.0) for m in months], width, label=name)
    ax.set_xticks(x, months)
    ax.set_ylabel(f"energy + degradation cost ({currency})")
    # Two lines: in one the title is wider than a figure of a month or two and is cut off.
    ax.set_title("monthly energy + degradation cost per strategy\n(stored-energy value not included)")
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig
