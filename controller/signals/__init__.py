"""Grid-operator signals: price forecasts and import/export caps (pure, no I/O).

Parsing turns a payload into typed windows; a :class:`Timeline` keeps the accepted messages (within a
bound on windows that never drops a live one silently) and resolves overlaps deterministically (the
newest message wins where windows overlap: newest by its ``issued_at`` when it has one (never later
than its arrival), else by arrival; ties by arrival order); the ``*_on_grid`` functions resample the
resolved windows to the plan grid.

One module per job: ``payload`` (what every payload shares), ``prices``, ``retail`` (taxes, fees and
VAT on a market price; dated presets in ``retail_presets``), ``limits``,
``pv_forecast``, ``grid_state``, ``timeline`` (newest-wins resolution) and ``resample`` (onto the
plan grid).

Price payload (value per kWh, ``start`` inclusive, ``end`` exclusive)::

    [{"start": "2025-01-15T00:00:00+01:00", "end": "2025-01-15T01:00:00+01:00", "value": 0.2531}, ...]
    {"issued_at": "...", "unit": "EUR/MWh", "prices": [...]}

Limit payload (caps in W or kW; ``end`` or ``duration_s``; ``start`` defaults to arrival)::

    {"import_kw": 4.2, "start": "2025-01-15T17:00:00Z", "end": "2025-01-15T19:00:00Z"}
    {"issued_at": "...", "limits": [{"export_w": 0, "duration_s": 3600}, ...]}
"""

from controller.config.retail_presets import RETAIL_PRESETS, RetailPreset
from controller.signals.grid_state import parse_grid_state
from controller.signals.limits import (
    LimitSignal,
    LimitsOnGrid,
    LimitWindow,
    limits_on_grid,
    parse_limit_signal,
)
from controller.signals.payload import MAX_LIMIT_W, MAX_SIGNAL_PAYLOAD_BYTES, SignalError, parse_time
from controller.signals.prices import (
    MAX_PRICE_PER_KWH,
    PriceSignal,
    PriceSlot,
    PricesOnGrid,
    parse_price_signal,
    prices_on_grid,
    tariff_configured_on_grid,
)
from controller.signals.pv_forecast import PowerForecast, parse_pv_forecast
from controller.signals.resample import mean_on_grid
from controller.signals.retail import (
    RetailRates,
    fixed_per_day,
    grid_fee_on_grid,
    retail_price_at,
    retail_rates,
    retail_table,
)
from controller.signals.timeline import Timeline

__all__ = [
    "MAX_LIMIT_W",
    "MAX_PRICE_PER_KWH",
    "MAX_SIGNAL_PAYLOAD_BYTES",
    "RETAIL_PRESETS",
    "LimitSignal",
    "LimitWindow",
    "LimitsOnGrid",
    "PowerForecast",
    "PriceSignal",
    "PriceSlot",
    "PricesOnGrid",
    "RetailPreset",
    "RetailRates",
    "SignalError",
    "Timeline",
    "fixed_per_day",
    "grid_fee_on_grid",
    "limits_on_grid",
    "mean_on_grid",
    "parse_grid_state",
    "parse_limit_signal",
    "parse_price_signal",
    "parse_pv_forecast",
    "parse_time",
    "prices_on_grid",
    "retail_price_at",
    "retail_rates",
    "retail_table",
    "tariff_configured_on_grid",
]
