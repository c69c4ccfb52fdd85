"""The ``storage:``, ``logging:`` and ``optimizer:`` sections: how the daemon itself runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from controller.config.fields import _Model


class StorageConfig(_Model):
    path: Path = Field(Path("v2x.sqlite"), description="SQLite file; relative to the working directory.")
    history_retention_days: int = Field(400, ge=1, le=3650)
    history_flush_s: float = Field(
        60.0,
        ge=1.0,
        le=600.0,
        description="Meter history is written this often; a crash loses at most this much of it. "
        "Each write rewrites a page or two: on a flash card, shorter means more wear.",
    )

    @field_validator("path", mode="before")
    @classmethod
    def _a_file_name(cls, value: Any) -> Any:
        if isinstance(value, str) and (value.strip() in ("", ".", "..") or value.strip().endswith("/")):
            raise PydanticCustomError("storage_path", "is not a file name")
        return value


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = "auto"


class OptimizerConfig(_Model):
    """Tuning of the schedule optimiser (see docs/optimizer.md)."""

    terminal_value_per_kwh: float | None = Field(
        None,
        ge=0,
        le=10,
        description="Value of a kWh left in a battery at the horizon end; default: the larger of the mean "
        "import price and the upper-quartile export price over the horizon (at least 0). Without it a "
        "receding-horizon plan empties the car at the edge.",
    )
    churn_cost_per_kw: float = Field(
        0.0005, ge=0, le=1, description="Small cost per kW of setpoint change between steps (less churn)."
    )
    churn_horizon_hours: float = Field(
        4.0,
        gt=0,
        le=8760,
        description="Setpoint changes are priced over the first hours of the plan only: what the chargers "
        "receive before later re-plans. Longer is slower to solve.",
    )
    solver_time_limit_s: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="Time budget of one plan (s): snapshot translation, the first model build and every "
        "solver pass together; when it is used up the safe fallback plan is used.",
    )
