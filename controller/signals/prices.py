"""Prices (pure): parse price forecasts, and lay the tariff onto the plan grid.

On the grid a dynamic price (x multiplier + markup, then the retail formula of ``retail`` when set:
``controller.signals.retail``) wins over time-of-use, which wins over a static price; where a
dynamic-only tariff has no forecast the price persists (same time yesterday, else the last known price,
else the next) and the step is flagged as not known. Configured static and time-of-use prices are what
the household pays already: the retail formula never applies to them.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.config import PriceConfig
from controller.signals.payload import (
    MAX_PRICE_SLOTS,
    SignalError,
    issued_at_of,
    load_json,
    parse_slots,
    unwrap_envelope,
)
from controller.signals.resample import BoolArray, FloatArray, check_grid, minute_mean_on_grid
from controller.signals.retail import retail_on_grid, retail_rates
from controller.signals.timeline import Timeline

__all__ = [
    "MAX_PRICE_PER_KWH",
    "PriceSignal",
    "PriceSlot",
    "PricesOnGrid",
    "parse_price_signal",
    "prices_on_grid",
    "tariff_configured_on_grid",
]

MAX_PRICE_PER_KWH = 10.0  # the config's own bound; a larger value is almost always per MWh
_UNIT_FACTORS = {"kwh": 1.0, "mwh": 0.001, "wh": 1000.0}


# ----------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class PriceSlot:
    start: dt.datetime
    end: dt.datetime
    value_per_kwh: float


@dataclass(frozen=True, slots=True)
class PriceSignal:
    """One accepted price message, slots sorted and non-overlapping, values per kWh as sent."""

    slots: tuple[PriceSlot, ...]
    issued_at: dt.datetime | None = None


def _unit_factor(unit: Any, currency: str) -> float:
    if not isinstance(unit, str) or "/" not in unit:
        raise SignalError(f"unit {str(unit)[:20]!r} is not like {currency}/kWh")
    money, energy = (part.strip() for part in unit.split("/", 1))
    factor = _UNIT_FACTORS.get(energy.lower())
    if factor is None:
        raise SignalError(f"unit {unit[:20]!r} is not per kWh, MWh or Wh")
    if money.lower() in ("ct", "cent", "cents"):
        return factor / 100.0
    if money.upper() != currency.upper():
        raise SignalError(f"unit {unit[:20]!r} is not in the site currency {currency}")
    return factor


def _plausible_price(i: int, value: float) -> None:
    if abs(value) > MAX_PRICE_PER_KWH:
        raise SignalError(
            f"slot {i} value {value:g} per kWh is implausible; send per kWh or set unit (e.g. EUR/MWh)"
        )


def parse_price_signal(payload: bytes, currency: str = "EUR") -> PriceSignal:
    """Parse a price forecast; raises SignalError for anything unusable (the whole message is refused)."""
    items, envelope = unwrap_envelope(load_json(payload), "prices")
    if not items:
        raise SignalError("no price slots")
    if len(items) > MAX_PRICE_SLOTS:
        raise SignalError(f"{len(items)} slots exceed {MAX_PRICE_SLOTS}")
    factor = _unit_factor(envelope["unit"], currency) if "unit" in envelope else 1.0
    issued_at = issued_at_of(envelope)
    slots = parse_slots(items, factor, _plausible_price)
    return PriceSignal(tuple(PriceSlot(*slot) for slot in slots), issued_at)


# ------------------------------------------------------------------- on the grid


@dataclass(frozen=True, slots=True)
class PricesOnGrid:
    """Per-step prices per kWh after the tariff; ``*_known`` is False where a value was filled in."""

    start: dt.datetime
    step: dt.timedelta
    import_per_kwh: FloatArray
    export_per_kwh: FloatArray
    import_known: BoolArray
    export_known: BoolArray


def _tou_price(cfg: PriceConfig, local: dt.datetime) -> float:
    base = cfg.static_price_per_kwh if cfg.static_price_per_kwh is not None else 0.0
    return next((w.price_per_kwh for w in cfg.time_of_use if w.opened_on(local) is not None), base)


def tariff_configured_on_grid(
    cfg: PriceConfig, tz: zoneinfo.ZoneInfo, start: dt.datetime, step: dt.timedelta, n: int
) -> FloatArray | None:
    """Static or time-of-use prices per step (mean over the step by the minute), None if not configured."""
    start = check_grid(start, step, n)
    if cfg.static_price_per_kwh is None:
        return None
    if not cfg.time_of_use:
        return np.full(n, cfg.static_price_per_kwh)
    return minute_mean_on_grid(lambda local: _tou_price(cfg, local), tz, start, step, n)


def _fill(values: FloatArray, known: BoolArray, yesterday: FloatArray, yesterday_known: BoolArray) -> None:
    """Fill unknown steps: same time yesterday, else hold the last known step, else the next known."""
    use_yesterday = ~known & yesterday_known
    values[use_yesterday] = yesterday[use_yesterday]
    have = known | use_yesterday
    if not have.any():
        return
    # Each step takes the value of the last step that has one (steps before the first: the first).
    first = int(np.argmax(have))
    source = np.maximum.accumulate(np.where(have, np.arange(len(values)), first))
    values[:] = values[source]


def _one_price_on_grid(
    cfg: PriceConfig,
    dynamic: Timeline,
    tz: zoneinfo.ZoneInfo,
    start: dt.datetime,
    step: dt.timedelta,
    n: int,
) -> tuple[FloatArray, BoolArray]:
    configured = tariff_configured_on_grid(cfg, tz, start, step, n)
    if not cfg.is_dynamic:
        assert configured is not None  # PriceConfig guarantees a source
        return configured, np.ones(n, dtype=np.bool_)
    values, known = dynamic.mean_on_grid(start, step, n)
    values[known] = values[known] * cfg.dynamic_multiplier + cfg.dynamic_markup_per_kwh
    if configured is not None:  # configured prices fill the gaps of the forecast
        values = np.where(known, _retail(cfg, values, tz, start, step, n), configured)
        return values, np.ones(n, dtype=np.bool_)
    yesterday, yesterday_known = dynamic.mean_on_grid(start - dt.timedelta(days=1), step, n)
    yesterday = yesterday * cfg.dynamic_multiplier + cfg.dynamic_markup_per_kwh
    _fill(values, known, yesterday, yesterday_known)
    # After the fill: a market price taken from yesterday pays today's grid fee at this step.
    return _retail(cfg, values, tz, start, step, n), known


def _retail(
    cfg: PriceConfig,
    marked_up: FloatArray,
    tz: zoneinfo.ZoneInfo,
    start: dt.datetime,
    step: dt.timedelta,
    n: int,
) -> FloatArray:
    """Market prices (after multiplier and markup) with the retail formula applied, if configured."""
    if cfg.retail is None:
        return marked_up
    return retail_on_grid(retail_rates(cfg.retail), marked_up, tz, start, step, n)


def prices_on_grid(
    import_cfg: PriceConfig,
    export_cfg: PriceConfig,
    import_dynamic: Timeline,
    export_dynamic: Timeline,
    timezone: str,
    start: dt.datetime,
    step: dt.timedelta,
    n: int,
) -> PricesOnGrid:
    """Import/export prices per step: dynamic (x multiplier + markup) over time-of-use over static.

    Steps a dynamic-only tariff has no forecast for are filled (same time yesterday, else the last
    known price, else the next) and flagged in ``*_known``; with no data at all the market price is 0
    (the retail price then is the taxes and fees alone).
    """
    start = check_grid(start, step, n)
    tz = zoneinfo.ZoneInfo(timezone)
    imp, imp_known = _one_price_on_grid(import_cfg, import_dynamic, tz, start, step, n)
    exp, exp_known = _one_price_on_grid(export_cfg, export_dynamic, tz, start, step, n)
    return PricesOnGrid(start, step, imp, exp, imp_known, exp_known)
