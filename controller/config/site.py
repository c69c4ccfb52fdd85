"""The ``site:`` section: name, timezone, plan grid and the grid connection limits."""

from __future__ import annotations

import zoneinfo
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from controller.config.fields import Kw, _Model, _num


class GridConfig(_Model):
    """Grid connection limits (contract, fuse) and the fallback when a grid signal expires."""

    import_limit_kw: Kw = Field(description="Maximum import from the grid (fuse or contract), kW.")
    export_limit_kw: Kw = Field(0.0, description="Maximum export to the grid, kW. 0 forbids export.")
    fallback_import_limit_kw: Kw | None = Field(
        None,
        description="Import cap used when a grid-operator limit signal expires; defaults to import_limit_kw.",
    )
    phase_fuse_a: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="Main fuse per phase, A (e.g. 25 for 3 x 25 A). With per-phase grid readings the "
        "dispatcher keeps every phase within it, counting the cars' phases.",
    )
    phase_voltage_v: float = Field(230.0, ge=100, le=480, description="Phase-to-neutral voltage, V.")
    fallback_export_limit_kw: Kw | None = Field(
        None,
        description="Export cap used when a grid-operator limit signal expires; defaults to export_limit_kw.",
    )

    @model_validator(mode="after")
    def _fallbacks_within_limits(self) -> Self:
        if self.fallback_import_limit_kw is not None and self.fallback_import_limit_kw > self.import_limit_kw:
            raise PydanticCustomError(
                "fallback_above_limit",
                "fallback_import_limit_kw {fallback} is above import_limit_kw {limit}; lower it",
                {"fallback": _num(self.fallback_import_limit_kw), "limit": _num(self.import_limit_kw)},
            )
        if self.fallback_export_limit_kw is not None and self.fallback_export_limit_kw > self.export_limit_kw:
            raise PydanticCustomError(
                "fallback_above_limit",
                "fallback_export_limit_kw {fallback} is above export_limit_kw {limit}; lower it",
                {"fallback": _num(self.fallback_export_limit_kw), "limit": _num(self.export_limit_kw)},
            )
        return self

    @property
    def effective_fallback_import_kw(self) -> float:
        return (
            self.import_limit_kw if self.fallback_import_limit_kw is None else self.fallback_import_limit_kw
        )

    @property
    def effective_fallback_export_kw(self) -> float:
        return (
            self.export_limit_kw if self.fallback_export_limit_kw is None else self.fallback_export_limit_kw
        )


class SiteSettings(_Model):
    name: str = Field("home", min_length=1, max_length=100)
    timezone: str = Field("UTC", description="IANA timezone for user schedules, e.g. Europe/Amsterdam.")
    plan_step_minutes: Literal[5, 10, 15, 20, 30, 60] = Field(
        15, description="Plan grid step; divides the hour."
    )
    horizon_hours: int = Field(24, ge=1, le=168, description="Planning horizon.")
    replan_interval_minutes: float = Field(5, gt=0, le=60)
    dispatch_interval_s: float = Field(
        5, ge=0.5, le=60, description="How often live readings adjust setpoints."
    )
    currency: str = Field("EUR", min_length=3, max_length=3)
    grid: GridConfig

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
            raise PydanticCustomError(
                "unknown_timezone",
                "unknown timezone '{tz}'; use an IANA name such as Europe/Amsterdam",
                {"tz": value},
            ) from None
        return value

    @property
    def steps(self) -> int:
        return self.horizon_hours * 60 // self.plan_step_minutes
