"""The retail price formula (pure): what a household pays per kWh for a market price.

``retail(p, t) = (p * dynamic_multiplier + dynamic_markup_per_kwh + supplier_markup_per_kwh
+ energy_tax_per_kwh + grid_fee(t)) * (1 + vat_percent / 100)``, everything per kWh in the site
currency (a provider's prices are converted before they get here). ``grid_fee(t)`` is the fee of the
first grid fee window open at local time ``t``, else ``grid_fee_per_kwh``; on the plan grid it is the
mean over the step by the minute, as time-of-use prices are. The standing charge is not planned on (it
does not depend on when power is drawn) but :func:`fixed_per_day` gives its share of a day for bills.
"""

from __future__ import annotations

import calendar
import datetime as dt
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from controller.config import PriceConfig
from controller.config.retail import GridFeeWindow, RetailConfig
from controller.config.retail_presets import RETAIL_PRESETS
from controller.signals.resample import FloatArray, check_grid, minute_mean_on_grid

__all__ = [
    "RetailRates",
    "fixed_per_day",
    "grid_fee_at",
    "grid_fee_on_grid",
    "retail_on_grid",
    "retail_price_at",
    "retail_rates",
    "retail_table",
]


@dataclass(frozen=True, slots=True)
class RetailRates:
    """A retail config with its preset resolved: the values the formula uses."""

    energy_tax_per_kwh: float
    vat_percent: float
    supplier_markup_per_kwh: float
    grid_fee_per_kwh: float
    grid_fee_windows: tuple[GridFeeWindow, ...]
    fixed_per_month: float
    currency: str | None
    """The preset's currency; None without a preset (the values are then the site currency's)."""

    @property
    def vat_factor(self) -> float:
        return 1.0 + self.vat_percent / 100.0


def retail_rates(cfg: RetailConfig) -> RetailRates:
    """The values of ``cfg``, a value written in it winning over its preset's."""
    preset = RETAIL_PRESETS[cfg.preset] if cfg.preset is not None else None
    tax, vat = cfg.energy_tax_per_kwh, cfg.vat_percent
    if preset is not None:
        tax = preset.energy_tax_per_kwh if tax is None else tax
        vat = preset.vat_percent if vat is None else vat
    if tax is None or vat is None:  # RetailConfig refuses this; kept for configs built without validation
        raise ValueError("retail config has neither a preset nor energy_tax_per_kwh and vat_percent")
    return RetailRates(
        energy_tax_per_kwh=tax,
        vat_percent=vat,
        supplier_markup_per_kwh=cfg.supplier_markup_per_kwh,
        grid_fee_per_kwh=cfg.grid_fee_per_kwh,
        grid_fee_windows=tuple(cfg.grid_fee_windows),
        fixed_per_month=cfg.fixed_per_month,
        currency=preset.currency if preset is not None else None,
    )


def grid_fee_at(rates: RetailRates, local: dt.datetime) -> float:
    """The grid fee per kWh (excl. VAT) at local wall-clock time ``local``."""
    for window in rates.grid_fee_windows:
        if window.is_open(local):
            return window.fee_per_kwh
    return rates.grid_fee_per_kwh


def grid_fee_on_grid(
    rates: RetailRates, tz: zoneinfo.ZoneInfo, start: dt.datetime, step: dt.timedelta, n: int
) -> FloatArray:
    """The grid fee per step: the mean over the step by the minute, in local time (so DST days have
    their 23 or 25 hours)."""
    start = check_grid(start, step, n)
    if not rates.grid_fee_windows:
        return np.full(n, rates.grid_fee_per_kwh)
    return minute_mean_on_grid(lambda local: grid_fee_at(rates, local), tz, start, step, n)


def _retail_of_marked_up(
    marked_up: FloatArray | float, grid_fee: FloatArray | float, rates: RetailRates
) -> FloatArray:
    """The formula after ``p * multiplier + markup`` (``marked_up``)."""
    net = np.asarray(marked_up, dtype=np.float64) + rates.supplier_markup_per_kwh + rates.energy_tax_per_kwh
    return (net + grid_fee) * rates.vat_factor


def retail_on_grid(
    rates: RetailRates,
    marked_up: FloatArray,
    tz: zoneinfo.ZoneInfo,
    start: dt.datetime,
    step: dt.timedelta,
    n: int,
) -> FloatArray:
    """Retail prices per step of market prices already multiplied and marked up (``marked_up``)."""
    if len(marked_up) != n:
        raise ValueError(f"{len(marked_up)} prices for {n} steps")
    return _retail_of_marked_up(marked_up, grid_fee_on_grid(rates, tz, start, step, n), rates)


def retail_price_at(cfg: PriceConfig, market_per_kwh: float, at: dt.datetime, timezone: str) -> float:
    """The price per kWh a household pays at instant ``at`` for market price ``market_per_kwh``: the
    whole formula (multiplier and markup too); without ``cfg.retail``, only the multiplier and markup."""
    if at.tzinfo is None:
        raise ValueError("at must carry a UTC offset")
    marked_up = market_per_kwh * cfg.dynamic_multiplier + cfg.dynamic_markup_per_kwh
    if cfg.retail is None:
        return marked_up
    rates = retail_rates(cfg.retail)
    fee = grid_fee_at(rates, at.astimezone(zoneinfo.ZoneInfo(timezone)))
    return float(_retail_of_marked_up(marked_up, fee, rates))


def fixed_per_day(cfg: RetailConfig, day: dt.date) -> float:
    """The standing charge's share of ``day``: the month's charge over the days of that month."""
    return cfg.fixed_per_month / calendar.monthrange(day.year, day.month)[1]


def retail_table(
    cfg: PriceConfig, market: Sequence[tuple[dt.datetime, float]], timezone: str
) -> list[tuple[dt.datetime, float, float]]:
    """``(start, market, retail)`` per slot, for printing "market -> retail"."""
    return [(at, value, retail_price_at(cfg, value, at, timezone)) for at, value in market]
