"""What price providers return, and the helpers their parsers share."""

from __future__ import annotations

from dataclasses import dataclass

from controller.signals import PriceSlot

__all__ = ["FetchedPrices"]


@dataclass(frozen=True, slots=True)
class FetchedPrices:
    """Prices per kWh in ``currency``, slots sorted and non-overlapping. ``retail`` is True when the
    provider's price already includes taxes and fees (Tibber, Octopus): no retail formula goes on top."""

    slots: tuple[PriceSlot, ...]
    currency: str
    retail: bool = False
