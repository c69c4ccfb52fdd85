"""Forecasts of home load and PV from their own history. Pure: history in, per-step arrays out."""

from controller.forecast.profile import (
    forecast_load_w,
    forecast_pv_w,
    history_grid,
    load_from_grid,
    load_history_steps,
    pv_from_grid,
    pv_history_steps,
    resample_to_grid,
)

__all__ = [
    "forecast_load_w",
    "forecast_pv_w",
    "history_grid",
    "load_from_grid",
    "load_history_steps",
    "pv_from_grid",
    "pv_history_steps",
    "resample_to_grid",
]
