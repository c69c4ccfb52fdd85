"""Forecasts of home load and PV from their own history. Pure: history in, per-step arrays out."""

from controller.forecast.profile import forecast_load_w, forecast_pv_w, resample_to_grid

__all__ = ["forecast_load_w", "forecast_pv_w", "resample_to_grid"]
