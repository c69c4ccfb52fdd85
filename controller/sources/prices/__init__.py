"""Market price providers, one module each, registered by their config ``type``."""

from __future__ import annotations

# Imported for their @register_source: each module registers its provider type.
from controller.sources.prices import awattar as awattar
from controller.sources.prices import energi_data_service as energi_data_service
from controller.sources.prices import entsoe as entsoe
from controller.sources.prices import nord_pool as nord_pool
from controller.sources.prices import octopus as octopus
from controller.sources.prices import tibber as tibber
from controller.sources.prices.common import FetchedPrices

__all__ = ["FetchedPrices"]
