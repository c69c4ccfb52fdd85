"""What a household pays per kWh on top of a market price (``tariff.import.retail``) and the capacity
tariff (``tariff.capacity``).

The retail price of a market price ``p`` per kWh is
``(p + supplier_markup + energy_tax + grid_fee(t)) * (1 + vat_percent / 100)``; ``preset`` fills the
energy tax and VAT of a country for a date range, a value written here wins over it.
"""

from __future__ import annotations

from pydantic import Field

from controller.config.fields import _Model


class GridFeeWindow(_Model):
    """A time-of-use grid fee (e.g. Germany's §14a module 3 windows): this fee per kWh inside the window."""

    start: str = Field(description="Local time the window opens, HH:MM.")
    end: str = Field(description="Local time it closes, HH:MM (24:00 = midnight).")
    fee_per_kwh: float = Field(ge=-10, le=10)


class RetailConfig(_Model):
    preset: str | None = Field(
        None, description="Country and year of the taxes, e.g. NL-2026 (see docs/tariffs.md)."
    )
    energy_tax_per_kwh: float | None = Field(None, ge=-10, le=10, description="Overrides the preset's.")
    vat_percent: float | None = Field(None, ge=0, le=100, description="Overrides the preset's.")
    grid_fee_per_kwh: float = Field(0.0, ge=-10, le=10, description="Your network operator's fee per kWh.")
    grid_fee_windows: list[GridFeeWindow] = Field(default_factory=list)
    supplier_markup_per_kwh: float = Field(0.0, ge=-10, le=10)
    fixed_per_month: float = Field(0.0, ge=0, le=10_000, description="Standing charge; not planned on.")


class CapacityTariffConfig(_Model):
    """A price on the month's highest 15-minute average import (Flanders' capaciteitstarief)."""

    price_per_kw_month: float = Field(gt=0, le=1000, description="Price per kW of the monthly peak.")
    minimum_peak_kw: float = Field(
        2.5, ge=0, le=1000, description="Peak billed at least (2.5 kW in Flanders)."
    )
    window_minutes: int = Field(15, ge=5, le=60, description="Averaging window of the peak.")
