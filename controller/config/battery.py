"""The ``home_batteries:`` section: stationary batteries beside the cars, and how each is controlled.

Power signs as everywhere (DESIGN.md): + charging the battery, - discharging it, W inside, kW here.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from controller.config.fields import Fraction, Ident, Kw, Percent, _host, _Model, _mqtt_topic, _num


class ObserveControl(_Model):
    """The battery runs its own self-consumption mode; the controller only reads it and plans around it."""

    mode: Literal["observe"]


class MqttControl(_Model):
    """Setpoints published on MQTT for Home Assistant or the inverter's integration to execute."""

    mode: Literal["mqtt"]
    setpoint_topic: str = Field(
        description='Topic the setpoint goes to: {"power_w": <+charge/-discharge>, "mode": '
        '"charge"|"discharge"|"hold"|"auto", "valid_until": <ISO time>} (retained: no).'
    )
    resend_s: float = Field(
        60.0, ge=5, le=3600, description="The setpoint is sent again this often, as a keep-alive."
    )

    @field_validator("setpoint_topic")
    @classmethod
    def _one_topic(cls, value: str) -> str:
        topic = _mqtt_topic(value, "write the one topic the setpoints go to")
        assert topic is not None
        return topic


class ModbusControl(_Model):
    """SunSpec basic storage control (model 124) over Modbus TCP."""

    mode: Literal["modbus"]
    host: str
    port: int = Field(502, ge=1, le=65535)
    unit_id: int = Field(1, ge=0, le=255)
    revert_timeout_s: int = Field(
        300,
        ge=30,
        le=3600,
        description="The inverter returns to its own mode this long after the last write: a dead controller "
        "leaves the battery in self-consumption.",
    )
    poll_s: float = Field(10.0, ge=1, le=300, description="How often SoC and power are read.")

    @field_validator("host")
    @classmethod
    def _a_host(cls, value: str) -> str:
        return _host(value, "write the inverter's host name or IP address")


BatteryControl = Annotated[ObserveControl | MqttControl | ModbusControl, Field(discriminator="mode")]


class HomeBatteryConfig(_Model):
    id: Ident
    name: str | None = None
    usable_capacity_kwh: float = Field(gt=0, le=1000)
    max_charge_kw: Kw
    max_discharge_kw: Kw
    charge_efficiency: Fraction = 0.95
    discharge_efficiency: Fraction = 0.95
    min_soc_percent: Percent = Field(5.0, description="The battery management's own lower limit.")
    max_soc_percent: Percent = Field(100.0, description="Upper limit the plan charges to.")
    backup_reserve_percent: Percent = Field(
        0.0, description="Kept for a grid outage: the plan never discharges below it."
    )
    degradation_cost_per_kwh: float = Field(
        0.02, ge=0, le=10, description="Wear per kWh discharged, in the site currency."
    )
    grid_charging: bool = Field(False, description="May charge from the grid (not only from PV surplus).")
    grid_export: bool = Field(False, description="May discharge into the grid (not only cover the home).")
    coupling: Literal["ac", "dc"] = Field(
        "ac", description="dc: a hybrid inverter whose AC limit the battery shares with the PV."
    )
    inverter_ac_kw: Kw | None = Field(
        None, description="dc coupling: the hybrid inverter's AC limit (PV + battery), kW."
    )
    cover_home_before_cars: bool = Field(
        True,
        description="V2H order: the battery covers the home load before the cars' V2H does (false: after).",
    )
    control: BatteryControl = Field(default_factory=lambda: ObserveControl(mode="observe"))

    @model_validator(mode="after")
    def _limits_make_sense(self) -> Self:
        if self.min_soc_percent >= self.max_soc_percent:
            raise PydanticCustomError(
                "battery_soc_limits",
                "min_soc_percent {low} is not below max_soc_percent {high}; lower min_soc_percent",
                {"low": _num(self.min_soc_percent), "high": _num(self.max_soc_percent)},
            )
        if self.backup_reserve_percent > self.max_soc_percent:
            raise PydanticCustomError(
                "battery_backup_above_max",
                "backup_reserve_percent {backup} is above max_soc_percent {high}; lower it",
                {"backup": _num(self.backup_reserve_percent), "high": _num(self.max_soc_percent)},
            )
        if self.coupling == "dc" and self.inverter_ac_kw is None:
            raise PydanticCustomError(
                "dc_without_inverter_limit",
                "coupling dc needs inverter_ac_kw, the hybrid inverter's AC limit shared with the PV",
            )
        return self

    @property
    def floor_percent(self) -> float:
        """The lowest SoC the plan may reach: the larger of the BMS limit and the backup reserve."""
        return max(self.min_soc_percent, self.backup_reserve_percent)
