"""What a household pays per kWh on top of a market price (``tariff.import.retail``) and the capacity
tariff (``tariff.capacity``).

The retail price of a market price ``p`` per kWh (site currency) is
``(p * dynamic_multiplier + dynamic_markup_per_kwh + supplier_markup_per_kwh + energy_tax_per_kwh
+ grid_fee(t)) * (1 + vat_percent / 100)``; ``preset`` fills the energy tax and VAT of a country for a
year (``controller/config/retail_presets.py``, sources in docs/tariffs.md), a value written here wins
over it. ``grid_fee(t)`` is the fee of the first ``grid_fee_windows`` entry open at local time ``t``,
else ``grid_fee_per_kwh``.
"""

from __future__ import annotations

import datetime as dt
from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from controller.config.fields import LocalWindow, _Model
from controller.config.retail_presets import RETAIL_PRESETS

MONTHS = tuple(range(1, 13))


def _preset_names() -> tuple[str, ...]:
    return tuple(RETAIL_PRESETS)


class GridFeeWindow(LocalWindow):
    """A time-of-use grid fee (e.g. Germany's §14a module 3 HT/ST/NT windows): this fee per kWh
    (excl. VAT) inside the window."""

    fee_per_kwh: float = Field(ge=-10, le=10)
    months: list[int] = Field(
        default_factory=lambda: list(MONTHS),
        min_length=1,
        description="Months (1-12) the window opens in, e.g. [1, 2, 3, 10, 11, 12] for two quarters.",
    )

    @field_validator("months")
    @classmethod
    def _month_numbers(cls, value: list[int]) -> list[int]:
        for month in value:
            if month not in MONTHS:
                raise PydanticCustomError(
                    "unknown_month",
                    "{month} is not a month; use 1 (January) to 12 (December)",
                    {"month": month},
                )
        return sorted(set(value))

    def is_open(self, local: dt.datetime) -> bool:
        """Whether the window is open at ``local``, in a month it opens in (the month it opened in,
        past midnight)."""
        opened = self.opened_on(local)
        return opened is not None and opened.month in self.months


class RetailConfig(_Model):
    """Taxes, fees and VAT on top of a market price, in the site currency."""

    preset: str | None = Field(
        None, description="Country and year of the taxes, e.g. NL-2026 (see docs/tariffs.md)."
    )
    energy_tax_per_kwh: float | None = Field(
        None, ge=-10, le=10, description="Energy tax and levies per kWh, excl. VAT; overrides the preset's."
    )
    vat_percent: float | None = Field(None, ge=0, le=100, description="Overrides the preset's.")
    grid_fee_per_kwh: float = Field(
        0.0,
        ge=-10,
        le=10,
        description="Your network operator's fee per kWh, excl. VAT (outside every window).",
    )
    grid_fee_windows: list[GridFeeWindow] = Field(
        default_factory=list, max_length=48, description="Time-of-use grid fees; the first open window wins."
    )
    supplier_markup_per_kwh: float = Field(
        0.0, ge=-10, le=10, description="The supplier's fee per kWh, excl. VAT."
    )
    fixed_per_month: float = Field(
        0.0, ge=0, le=10_000, description="Standing charge per month, incl. VAT; reported, not planned on."
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is None:
            return None
        names = _preset_names()
        wanted = value.upper()
        if wanted not in names:
            raise PydanticCustomError(
                "unknown_preset",
                "'{preset}' is not a known preset; use one of {names}, or set energy_tax_per_kwh and vat_percent",
                {"preset": value, "names": ", ".join(names)},
            )
        return wanted

    @model_validator(mode="after")
    def _taxes_known(self) -> Self:
        if self.preset is None and (self.energy_tax_per_kwh is None or self.vat_percent is None):
            missing = " and ".join(
                name for name in ("energy_tax_per_kwh", "vat_percent") if getattr(self, name) is None
            )
            raise PydanticCustomError(
                "retail_without_taxes",
                "has no preset and no {missing}; set preset (e.g. NL-2026) or write {missing} (0 if none)",
                {"missing": missing},
            )
        return self


class CapacityTariffConfig(_Model):
    """A price on the month's highest 15-minute average import (Flanders' capaciteitstarief)."""

    price_per_kw_month: float = Field(gt=0, le=1000, description="Price per kW of the monthly peak.")
    minimum_peak_kw: float = Field(
        2.5, ge=0, le=1000, description="Peak billed at least (2.5 kW in Flanders)."
    )
    window_minutes: int = Field(15, ge=5, le=60, description="Averaging window of the peak.")
