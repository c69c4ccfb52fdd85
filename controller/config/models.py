"""SiteConfig: the whole site config, one field per section; its validator runs the cross-field
checks."""

from __future__ import annotations

from typing import Self

from pydantic import Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from controller.config.battery import HomeBatteryConfig
from controller.config.checks import _PARTIAL, _cross_field_issues
from controller.config.connections import ApiConfig, MqttConfig, OcppConfig
from controller.config.devices import ChargerConfig, MeterConfig, VehicleConfig
from controller.config.fields import _Model
from controller.config.inputs import ForecastConfig, GridSignalsConfig, TariffConfig
from controller.config.runtime import LoggingConfig, OptimizerConfig, StorageConfig
from controller.config.site import SiteSettings


class SiteConfig(_Model):
    site: SiteSettings
    chargers: list[ChargerConfig] = Field(default_factory=list)
    vehicles: list[VehicleConfig] = Field(default_factory=list)
    meters: list[MeterConfig] = Field(default_factory=list)
    home_batteries: list[HomeBatteryConfig] = Field(default_factory=list, max_length=8)
    tariff: TariffConfig
    grid_signals: GridSignalsConfig = Field(default_factory=GridSignalsConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    ocpp: OcppConfig = Field(default_factory=OcppConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    forecast: ForecastConfig = Field(default_factory=ForecastConfig)

    @model_validator(mode="after")
    def _cross_field(self, info: ValidationInfo) -> Self:
        if isinstance(info.context, dict) and info.context.get(_PARTIAL):
            return self  # parse_config runs the checks itself, on the parts that parsed
        issues = _cross_field_issues(self)
        if issues:
            raise PydanticCustomError(
                "cross_field", "{count} cross-field problem(s)", {"count": len(issues), "issues": issues}
            )
        return self

    def charger(self, charger_id: str) -> ChargerConfig | None:
        return next((c for c in self.chargers if c.id == charger_id), None)

    def vehicle(self, vehicle_id: str) -> VehicleConfig | None:
        return next((v for v in self.vehicles if v.id == vehicle_id), None)

    def home_battery(self, battery_id: str) -> HomeBatteryConfig | None:
        return next((b for b in self.home_batteries if b.id == battery_id), None)
