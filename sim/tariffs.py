"""Retail tariffs built from a day-ahead price, for generated and public-data scenarios.

* ``dynamic``: import pays ``(day_ahead + markup) x (1 + vat)``; export is paid the bare day-ahead price.
* ``net_metering``: the same import price, and export is paid the import price of the same step.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from sim.scenario import FloatArray

__all__ = ["TARIFFS", "Tariff", "apply_tariff"]

Tariff = Literal["dynamic", "net_metering"]
TARIFFS: tuple[Tariff, ...] = ("dynamic", "net_metering")

# Dutch-like grid fees and energy tax on top of the day-ahead price, and VAT.
DEFAULT_MARKUP_PER_KWH = 0.14
DEFAULT_VAT = 0.21


def apply_tariff(
    day_ahead_per_kwh: FloatArray,
    tariff: Tariff,
    markup_per_kwh: float = DEFAULT_MARKUP_PER_KWH,
    vat: float = DEFAULT_VAT,
) -> tuple[FloatArray, FloatArray]:
    """Import and export price per kWh for each step of a day-ahead series (per kWh)."""
    import_price: FloatArray = (day_ahead_per_kwh + markup_per_kwh) * (1.0 + vat)
    if tariff == "dynamic":
        export_price: FloatArray = day_ahead_per_kwh.astype(np.float64, copy=True)
    elif tariff == "net_metering":
        export_price = import_price.copy()
    else:
        raise ValueError(f"unknown tariff {tariff!r}; use one of {', '.join(TARIFFS)}")
    return import_price, export_price
