"""What the API answers, as pydantic models: the OpenAPI document and the responses come from these.

Powers in W (grid + import / - export; a car or home battery + charging / - discharging), SoC in %, prices per kWh
in the site's currency, times in UTC (ISO 8601). ``None`` where a value is not known.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BatteryView",
    "ChargerView",
    "CommandAnswer",
    "ErrorAnswer",
    "EventView",
    "FlowsView",
    "HistoryView",
    "LoginAnswer",
    "LoginBody",
    "MoneyPeriod",
    "MoneyView",
    "PlanBatteryView",
    "PlanVehicleView",
    "PlanView",
    "ProfileView",
    "SessionView",
    "StatusView",
    "VehicleView",
]


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorAnswer(_View):
    error: str
    field: str | None = None
    """The body field at fault, where one is."""


class Degradation(_View):
    what: str
    why: str


class StatusView(_View):
    at: dt.datetime
    status: Literal["ok", "degraded", "unhealthy"]
    degraded: list[Degradation]
    safe_mode: bool
    safe_mode_reasons: list[str]
    grid_lost: bool
    mqtt_connected: bool
    stale_meters: list[str]
    last_plan_at: dt.datetime | None
    plan_status: str | None
    version: str
    currency: str
    timezone: str


class FlowsView(_View):
    at: dt.datetime
    grid_w: float | None
    pv_w: float | None
    home_w: float | None
    vehicles_w: float | None
    safe_mode: bool
    batteries_w: float | None = None
    """The home batteries together, + charging; None without batteries or with one unknown."""
    stale: list[str]
    """Meters whose reading is too old to trust (their value is shown as None)."""


class VehicleView(_View):
    id: str
    name: str
    capacity_kwh: float
    plugged_in: bool
    charger_id: str | None
    soc_percent: float | None
    soc_measured: bool
    soc_at: dt.datetime | None
    reserve_percent: float
    max_soc_percent: float
    target_soc_percent: float | None
    departure_at: dt.datetime | None
    departure_source: str | None
    """``override`` (a one-off departure), ``car`` (the car's own) or ``schedule``."""
    mode: Literal["auto", "charge_now", "no_discharge"]
    setpoint_w: float
    measured_power_w: float | None
    v2l_active: bool
    permissions: dict[str, bool]
    """``v2g``, ``v2h``, ``v2l``: what the car and charger may do."""
    session_limits: dict[str, float] | None
    reason: str | None
    """Why the car does what it does now, from the plan."""
    weekly: dict[str, dict[str, Any]]
    """The weekly departure schedule by weekday (``time``, ``target_soc_percent``)."""


class BatteryView(_View):
    """A home battery (``home_batteries``): what it does, what the plan wants now, its control."""

    id: str
    name: str
    capacity_kwh: float
    soc_percent: float | None
    """None when unknown or stale."""
    power_w: float | None
    """Measured, + charging / - discharging; None when unknown or stale."""
    planned_power_w: float | None
    """The plan's power for the step now (None without a plan for it)."""
    floor_percent: float
    """The lowest SoC the plan may reach: the larger of the BMS limit and the backup reserve."""
    max_soc_percent: float
    mode: Literal["charge", "discharge", "hold", "auto"]
    """What it was last told (``auto``: its own mode)."""
    setpoint_w: float
    control: Literal["observe", "mqtt", "modbus"]
    control_status: Literal["observe", "idle", "ok", "refused", "unreachable", "released"]
    control_detail: str | None


class ProfileView(_View):
    purpose: str
    status: str
    at: dt.datetime
    reason: str | None
    accepted: bool


class ChargerView(_View):
    id: str
    connected: bool
    ocpp_version: str | None
    status: str | None
    transaction_id: str | None
    last_seen: dt.datetime | None
    last_profile: ProfileView | None
    default_profile: ProfileView | None


class PlanVehicleView(_View):
    power_w: list[float]
    soc_percent: list[float]
    """At each step boundary: one more than steps."""
    v2l_power_w: list[float]
    reason: str
    reserve_percent: float
    target_soc_percent: float | None
    departure_at: dt.datetime | None


class PlanBatteryView(_View):
    power_w: list[float]
    """+ charging / - discharging per step; empty for an ``observe`` battery whose SoC is unknown."""
    soc_percent: list[float]
    """At each step boundary: one more than steps."""
    controlled: bool
    """False: an ``observe`` battery, the values the forecast of its own self-consumption rule."""
    reason: str


class PlanView(_View):
    created_at: dt.datetime
    start: dt.datetime
    step_s: int
    steps: int
    fallback: bool
    solver_status: str
    solve_time_ms: float
    import_cost: float
    export_revenue: float
    total_cost: float
    import_price_per_kwh: list[float]
    export_price_per_kwh: list[float]
    grid_import_w: list[float]
    grid_export_w: list[float]
    vehicles: dict[str, PlanVehicleView]
    batteries: dict[str, PlanBatteryView] = Field(default_factory=dict)
    """The home batteries the plan schedules (empty when it schedules none)."""


class HistoryView(_View):
    since: dt.datetime
    until: dt.datetime
    step_s: int
    times: list[dt.datetime]
    """Start of each step; every series has one value per time (None: no data)."""
    series: dict[str, list[float | None]]
    """``grid_w``, ``pv_w``, ``home_w``, ``import_price``, ``export_price``, and per car
    ``<id>.power_w`` and ``<id>.soc_percent``."""


class EventView(_View):
    at: dt.datetime
    kind: str
    body: dict[str, Any]


class MoneyPeriod(_View):
    since: dt.datetime
    until: dt.datetime
    cost: float
    """What the grid connection cost: import at the import price minus export at the export price."""
    uncontrolled_cost: float
    """The same home with every car charged at full power from plug-in, no discharge, same prices."""
    saving: float
    minutes_counted: int
    minutes_missing: int


class MoneyView(_View):
    currency: str
    today: MoneyPeriod
    month: MoneyPeriod


class SessionView(_View):
    authenticated: bool
    auth_required: bool
    login_available: bool
    csrf_token: str | None


class LoginBody(_View):
    password: str = Field(min_length=1, max_length=1024)


class LoginAnswer(_View):
    csrf_token: str


class CommandAnswer(_View):
    ok: Literal[True]
    vehicle: str
    command: str
