"""Where the plan's outside inputs come from: the ``tariff:``, ``grid_signals:`` and ``forecast:``
sections."""

from __future__ import annotations

from typing import Self

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from controller.config.fields import Kw, LocalWindow, _Model, _mqtt_topic
from controller.config.retail import CapacityTariffConfig, RetailConfig
from controller.config.sources import PriceSource, PvSource

# ------------------------------------------------------------------------- tariffs


class TimeOfUseWindow(LocalWindow):
    price_per_kwh: float = Field(ge=-10, le=10)


class PriceConfig(_Model):
    """One price: static, time-of-use windows over a base price, or dynamic from an MQTT topic."""

    static_price_per_kwh: float | None = Field(None, ge=-10, le=10)
    time_of_use: list[TimeOfUseWindow] = Field(default_factory=list)
    dynamic_topic: str | None = Field(
        None, description="MQTT topic carrying a JSON array of {start,end,value}."
    )
    dynamic_markup_per_kwh: float = Field(
        0.0, ge=-10, le=10, description="Added to dynamic prices (fees, taxes)."
    )
    dynamic_multiplier: float = Field(
        1.0, ge=0, le=10, description="Applied to dynamic prices before the markup."
    )
    provider: PriceSource | None = Field(None, description="A market price source the daemon fetches.")
    backup_provider: PriceSource | None = Field(
        None, description="Asked when the provider fails or has no prices for a day."
    )
    retail: RetailConfig | None = Field(
        None, description="Taxes, fees and VAT added to market prices (dynamic_topic or provider)."
    )

    @property
    def is_dynamic(self) -> bool:
        """Whether prices arrive over time (MQTT or a provider) rather than only from this config."""
        return self.dynamic_topic is not None or self.provider is not None

    @field_validator("dynamic_topic")
    @classmethod
    def _one_topic(cls, value: str | None) -> str | None:
        return _mqtt_topic(value, "write the one topic the prices are published on")

    @model_validator(mode="after")
    def _has_a_source(self) -> Self:
        if self.static_price_per_kwh is None and not self.time_of_use and not self.is_dynamic:
            raise PydanticCustomError(
                "price_without_source",
                "has no price; set static_price_per_kwh, time_of_use windows, dynamic_topic or provider",
            )
        if self.retail is not None and not self.is_dynamic:
            raise PydanticCustomError(
                "retail_without_market_price",
                "retail applies to market prices only; set dynamic_topic or provider, or remove retail "
                "(static and time-of-use prices are already what you pay)",
            )
        if self.backup_provider is not None and self.provider is None:
            raise PydanticCustomError(
                "backup_without_provider", "backup_provider is set without provider; set provider first"
            )
        if self.time_of_use and self.static_price_per_kwh is None:
            raise PydanticCustomError(
                "tou_without_base",
                "time_of_use has no price outside its windows; set static_price_per_kwh as that price",
            )
        return self


class TariffConfig(_Model):
    import_: PriceConfig = Field(alias="import")
    export: PriceConfig = Field(default_factory=lambda: PriceConfig(static_price_per_kwh=0.0))
    capacity: CapacityTariffConfig | None = Field(
        None, description="A price on the monthly peak of 15-minute import (capacity tariff)."
    )
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class GridSignalsConfig(_Model):
    limit_topic: str | None = Field(None, description="MQTT topic of grid-operator import/export caps.")
    outage_topic: str | None = Field(
        None,
        description="MQTT topic reporting grid loss: true/1/lost/off = grid down, false/0/ok/on = grid back "
        '(or JSON {"grid_lost": true}). While down, V2H cars keep the home up to their reserve.',
    )
    outage_max_age_s: float | None = Field(
        900.0,
        gt=0,
        le=604_800,
        description="An outage state not repeated on outage_topic for this long (s) counts as over: the "
        "grid is taken as back (logged as grid_state_expired), so a lost 'ok' cannot stop charging for "
        "good. The source must repeat 'lost' more often than this during a long outage. null: never expires.",
    )
    guaranteed_import_kw: Kw = Field(
        0.0, description="A cap never goes below this (e.g. 4.2 kW under Germany's §14a)."
    )

    @field_validator("limit_topic", "outage_topic")
    @classmethod
    def _one_topic(cls, value: str | None) -> str | None:
        return _mqtt_topic(value, "write the one topic the signal is published on")


class ForecastConfig(_Model):
    """Home load and PV forecasts (see docs/daemon.md)."""

    pv_forecast_topic: str | None = Field(
        None,
        description='MQTT topic with a PV forecast: [{"start", "end", "value"}] in W (or {"unit": "kW", '
        '"forecast": [...]}); steps it covers replace the forecast from PV history.',
    )
    load_history_weeks: int = Field(
        4, ge=1, le=12, description="Weeks of same-weekday history for home load."
    )
    pv_sources: list[PvSource] = Field(
        default_factory=list,
        max_length=4,
        description="PV forecast services the daemon fetches; blended with the measured PV.",
    )
    pv_history_days: int = Field(7, ge=1, le=60, description="Days of history for the PV profile.")
    default_home_load_w: float = Field(
        400.0, ge=0, le=100_000, description="Home load assumed without history."
    )

    @field_validator("pv_forecast_topic")
    @classmethod
    def _one_topic(cls, value: str | None) -> str | None:
        return _mqtt_topic(value, "write the one topic the forecast is published on")
