"""Market price providers, one module each, registered by their config ``type``."""

from __future__ import annotations

from controller.sources.prices.common import FetchedPrices

__all__ = ["FetchedPrices"]
