"""Dated retail presets (pure data): a country's energy tax per kWh (excl. VAT, in its currency) and its
VAT rate on household electricity, for one calendar year.

Every figure, its legal basis and where it was read is in docs/tariffs.md; figures marked there as
unconfirmed are the best published value found, not checked against the tax office's own table.
Grid fees are never part of a preset: they depend on the network operator.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

__all__ = ["RETAIL_PRESETS", "RetailPreset"]


@dataclass(frozen=True, slots=True)
class RetailPreset:
    name: str
    currency: str
    energy_tax_per_kwh: float
    """Per kWh, excl. VAT: the energy tax plus the levies listed in ``includes``."""
    vat_percent: float
    valid_from: dt.date
    valid_until: dt.date
    """First day no longer covered."""
    includes: str


def _year(
    country: str, year: int, currency: str, energy_tax_per_kwh: float, vat_percent: float, includes: str
) -> RetailPreset:
    return RetailPreset(
        f"{country}-{year}",
        currency,
        energy_tax_per_kwh,
        vat_percent,
        dt.date(year, 1, 1),
        dt.date(year + 1, 1, 1),
        includes,
    )


_NL = "energiebelasting, first bracket (0-10,000 kWh a year)"
_DE = (
    "Stromsteuer 2.05 ct + Offshore-Netzumlage + KWKG-Umlage + Aufschlag für besondere Netznutzung "
    "(non-privileged consumers); not the Konzessionsabgabe, which depends on the municipality"
)
_BE = "federal special excise (bijzondere accijns), full rate"
_DK = "elafgift (general rate)"
_SE = "energiskatt, general rate (not the reduced rate in northern municipalities)"
_AT = "Elektrizitätsabgabe"

RETAIL_PRESETS: dict[str, RetailPreset] = {
    preset.name: preset
    for preset in (
        _year("NL", 2023, "EUR", 0.12599, 21.0, _NL),
        _year("NL", 2024, "EUR", 0.10880, 21.0, _NL),
        _year("NL", 2025, "EUR", 0.10154, 21.0, _NL),
        _year("NL", 2026, "EUR", 0.09160, 21.0, _NL),
        _year("DE", 2025, "EUR", 0.0205 + 0.00816 + 0.00277 + 0.01558, 19.0, _DE),
        _year("DE", 2026, "EUR", 0.0205 + 0.00941 + 0.00446 + 0.01559, 19.0, _DE),
        _year("BE", 2025, "EUR", 0.04748, 6.0, _BE),
        _year("BE", 2026, "EUR", 0.04748, 6.0, _BE),
        _year("DK", 2025, "DKK", 0.720, 25.0, _DK),
        _year("DK", 2026, "DKK", 0.008, 25.0, _DK + ", cut to the EU minimum for 2026 and 2027"),
        _year("SE", 2025, "SEK", 0.439, 25.0, _SE),
        _year("SE", 2026, "SEK", 0.360, 25.0, _SE),
        _year("AT", 2025, "EUR", 0.015, 20.0, _AT),
        _year("AT", 2026, "EUR", 0.001, 20.0, _AT + ", households' rate for 2026 (0.82 ct for others)"),
    )
}
"""By name (``NL-2026``); a name is the country's ISO code and the calendar year."""
