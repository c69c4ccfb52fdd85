"""Site configuration: pydantic models, YAML loading with ``${ENV}`` substitution, errors with fixes.

User-facing power is in kW (``*_kw``) as documented; everything inside uses W (see ``domain``).

One job per module; import from here, not from them:

- ``fields``: the strict base model, number/name types, single-value parsers (times, hosts, topics)
- ``site``, ``devices``, ``inputs``, ``connections``, ``runtime``: the models of the sections
- ``models``: ``SiteConfig``, the whole tree
- ``checks``: the cross-field checks, each problem with its path and a fix
- ``errors``: ``ConfigIssue``, ``ConfigError``, pydantic's errors translated into issues
- ``repair``: the pass that still runs the cross-field checks on a config with field errors
- ``loading``: file guards, strict YAML, ``${VAR}`` substitution, ``parse_config``/``load_config``
"""

from __future__ import annotations

from controller.config.battery import (
    BatteryControl,
    HomeBatteryConfig,
    ModbusControl,
    MqttControl,
    ObserveControl,
)
from controller.config.connections import ApiConfig, MqttConfig, OcppConfig, OcppTlsConfig, TlsConfig
from controller.config.devices import (
    ChargerAuth,
    ChargerConfig,
    DepartureRule,
    EarlyDepartures,
    MeterConfig,
    MeterFormat,
    OcppVersion,
    Permissions,
    Reserve,
    VehicleConfig,
    physical_power_limits_kw,
    power_limits_kw,
)
from controller.config.errors import ConfigError, ConfigIssue, Loc, issues_from_validation_error
from controller.config.fields import WEEKDAYS, Fraction, Ident, Kw, Percent

# Private, but imported by controller.commands (it reads times of day the way the config does).
from controller.config.fields import _clock_time as _clock_time
from controller.config.inputs import (
    ForecastConfig,
    GridSignalsConfig,
    PriceConfig,
    TariffConfig,
    TimeOfUseWindow,
)
from controller.config.loading import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    load_config,
    parse_config,
)
from controller.config.models import SiteConfig
from controller.config.runtime import LoggingConfig, OptimizerConfig, StorageConfig
from controller.config.site import GridConfig, SiteSettings

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "WEEKDAYS",
    "ApiConfig",
    "BatteryControl",
    "ChargerAuth",
    "ChargerConfig",
    "ConfigError",
    "ConfigIssue",
    "DepartureRule",
    "EarlyDepartures",
    "ForecastConfig",
    "Fraction",
    "GridConfig",
    "GridSignalsConfig",
    "HomeBatteryConfig",
    "Ident",
    "Kw",
    "Loc",
    "LoggingConfig",
    "MeterConfig",
    "MeterFormat",
    "ModbusControl",
    "MqttConfig",
    "MqttControl",
    "ObserveControl",
    "OcppConfig",
    "OcppTlsConfig",
    "OcppVersion",
    "OptimizerConfig",
    "Percent",
    "Permissions",
    "PriceConfig",
    "Reserve",
    "SiteConfig",
    "SiteSettings",
    "StorageConfig",
    "TariffConfig",
    "TimeOfUseWindow",
    "TlsConfig",
    "VehicleConfig",
    "issues_from_validation_error",
    "load_config",
    "parse_config",
    "physical_power_limits_kw",
    "power_limits_kw",
]
