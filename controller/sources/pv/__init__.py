"""PV forecast services, one module each, registered by their config ``type``; they return a
``controller.signals.PowerForecast`` (W per window), one per request (one request per array
orientation): :func:`sum_forecasts` adds them up into the site's forecast."""

from __future__ import annotations

from controller.sources.pv.common import sum_forecasts
from controller.sources.pv.forecast_solar import ForecastSolarPv
from controller.sources.pv.open_meteo import OpenMeteoPv

__all__ = ["ForecastSolarPv", "OpenMeteoPv", "sum_forecasts"]
