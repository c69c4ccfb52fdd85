"""Home Assistant MQTT discovery for the main sensors and the per-vehicle controls (pure: topic ->
retained config payload).

The controls publish on the daemon's own command topics (``<base>/cmd/<vehicle>/<command>``), so
they go through the same validation and replies as any other command:

* ``select`` mode: the option as a bare string (``auto``, ``charge_now``, ``no_discharge``);
* ``number`` departure target SoC and ``text`` departure time (``HH:MM``): a ``departure`` command
  needs both ``at`` and ``target_soc_percent``, but an MQTT command template only gets ``value``.
  Each entity therefore also reads the vehicle state as its JSON attributes (``departure_at`` and
  ``target_soc_percent``), and its command template fills the other field from ``this.attributes``
  (Home Assistant passes the entity's own state object to command templates as ``this``), rather
  than from ``states('<other entity>')``, which would break when the user renames an entity. The
  number sends the planned departure's exact time (so a departure days ahead keeps its day), the
  text the ``HH:MM`` typed (the next one, site-local) with the planned target, or the configured
  default target when none is planned (or the planned one is not a valid departure target);
* ``button`` clear departure: ``{"clear": true}`` on ``departure``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from controller import __version__
from controller.config import HomeBatteryConfig, SiteConfig, VehicleConfig
from controller.domain import VehicleMode
from controller.mqtt.payloads import dumps
from controller.mqtt.topics import Topics

__all__ = ["discovery_messages"]


def _entity_slug(text: str) -> str:
    """A Home Assistant entity id part: lowercase ``[a-z0-9_]``, no ``__``, no leading/trailing ``_``."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]", "_", text.lower())).strip("_") or "v2x"


def _entity(
    topics: Topics, device: dict[str, Any], component: str, object_id: str, name: str, state_topic: str | None
) -> tuple[str, dict[str, Any]]:
    """The options every entity shares; ``object_id`` made safe (vehicle ids may hold . and :)."""
    object_id = re.sub(r"[^A-Za-z0-9_-]", "_", object_id)
    entity_id = f"{topics.node_id}_{object_id}"
    config: dict[str, Any] = {
        "name": name,
        "unique_id": entity_id,
        # default_entity_id replaces object_id from Home Assistant 2025.10; older versions read object_id.
        "default_entity_id": f"{component}.{_entity_slug(entity_id)}",
        "object_id": entity_id,
        "availability_topic": topics.status,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
        "origin": {"name": "v2x-controller", "sw_version": __version__},
    }
    if state_topic is not None:  # a button has no state
        config["state_topic"] = state_topic
    return topics.discovery(component, object_id), config


def _sensor(
    topics: Topics,
    device: dict[str, Any],
    object_id: str,
    name: str,
    state_topic: str,
    field: str,
    unit: str | None,
    device_class: str | None,
    options: list[str] | None = None,
) -> tuple[str, bytes]:
    topic, config = _entity(topics, device, "sensor", object_id, name, state_topic)
    # A null field renders as "None", which Home Assistant shows as unknown.
    config["value_template"] = f"{{{{ value_json.{field} }}}}"
    if unit is not None:
        config["unit_of_measurement"] = unit
        config["state_class"] = "measurement"
    if device_class is not None:
        config["device_class"] = device_class
    if options is not None:
        config["options"] = options
    return topic, dumps(config)


# The vehicle state fields the departure controls keep as attributes, for their command templates.
_DEPARTURE_ATTRIBUTES = (
    "{{ {'departure_at': value_json.departure_at, "
    "'target_soc_percent': value_json.target_soc_percent} | tojson }}"
)
# Home Assistant's own template functions: the planned departure (UTC) as HH:MM in Home Assistant's
# timezone (the site's, normally); empty when none is planned.
_DEPARTURE_TIME = "{{ as_local(as_datetime(value_json.departure_at)).strftime('%H:%M') if value_json.departure_at else '' }}"
_TIME_PATTERN = r"^([01]?[0-9]|2[0-3]):[0-5][0-9]$"


def _target_range(v: VehicleConfig) -> tuple[int, int]:
    """Whole percents a departure target may take: above the reserve, at most ``max_soc_percent``."""
    high = math.floor(v.max_soc_percent)
    return min(math.floor(v.reserve_percent) + 1, high), high


def _command_entity(
    topics: Topics,
    device: dict[str, Any],
    component: str,
    object_id: str,
    name: str,
    state_topic: str | None,
    command_topic: str,
) -> tuple[str, dict[str, Any]]:
    topic, config = _entity(topics, device, component, object_id, name, state_topic)
    config["command_topic"] = command_topic
    config["retain"] = False  # retained commands are ignored by the controller
    return topic, config


def _mode_select(topics: Topics, device: dict[str, Any], v: VehicleConfig, label: str) -> tuple[str, bytes]:
    topic, config = _command_entity(
        topics,
        device,
        "select",
        f"{v.id}_mode_select",
        f"{label} charging mode",
        topics.vehicle(v.id),
        topics.command(v.id, "mode"),
    )
    config["value_template"] = "{{ value_json.mode }}"
    config["options"] = [m.value for m in VehicleMode]  # published as the bare option: a valid mode command
    return topic, dumps(config)


def _target_number(topics: Topics, device: dict[str, Any], v: VehicleConfig, label: str) -> tuple[str, bytes]:
    """Target SoC of the planned departure; sent with that departure's time (refused: "missing at",
    when no departure is planned)."""
    state = topics.vehicle(v.id)
    topic, config = _command_entity(
        topics,
        device,
        "number",
        f"{v.id}_departure_target",
        f"{label} departure target SoC",
        state,
        topics.command(v.id, "departure"),
    )
    low, high = _target_range(v)
    config.update(
        {
            "value_template": "{{ value_json.target_soc_percent }}",  # "None": unknown (payload_reset)
            "json_attributes_topic": state,
            "json_attributes_template": _DEPARTURE_ATTRIBUTES,
            "command_template": (
                "{% set at = this.attributes.get('departure_at') %}"
                '{% if at %}{"at": "{{ at }}", "target_soc_percent": {{ value }}}'
                '{% else %}{"target_soc_percent": {{ value }}}{% endif %}'
            ),
            "min": low,
            "max": high,
            "step": 1,
            "mode": "slider",
            "unit_of_measurement": "%",
            "device_class": "battery",
        }
    )
    return topic, dumps(config)


def _departure_text(
    topics: Topics, device: dict[str, Any], v: VehicleConfig, label: str
) -> tuple[str, bytes]:
    """Time of the next departure (HH:MM, site-local); sent with the planned target when that is a
    valid one, else with the configured default target."""
    state = topics.vehicle(v.id)
    topic, config = _command_entity(
        topics,
        device,
        "text",
        f"{v.id}_departure_time",
        f"{label} departure time",
        state,
        topics.command(v.id, "departure"),
    )
    low, high = _target_range(v)
    fallback = min(max(v.default_target_soc_percent, low), high)
    config.update(
        {
            "value_template": _DEPARTURE_TIME,
            "json_attributes_topic": state,
            "json_attributes_template": _DEPARTURE_ATTRIBUTES,
            "command_template": (
                "{% set t = this.attributes.get('target_soc_percent') %}"
                '{"at": "{{ value }}", "target_soc_percent": '
                f"{{{{ t if t is number and {v.reserve_percent!r} < t <= {v.max_soc_percent!r} "
                f"else {fallback!r} }}}}}}"
            ),
            "min": 0,
            "max": 5,
            "pattern": _TIME_PATTERN,
            "mode": "text",
        }
    )
    return topic, dumps(config)


def _clear_button(topics: Topics, device: dict[str, Any], v: VehicleConfig, label: str) -> tuple[str, bytes]:
    topic, config = _command_entity(
        topics,
        device,
        "button",
        f"{v.id}_clear_departure",
        f"{label} clear departure override",
        None,
        topics.command(v.id, "departure"),
    )
    config["payload_press"] = dumps({"clear": True}).decode()
    return topic, dumps(config)


def _vehicle_controls(topics: Topics, device: dict[str, Any], v: VehicleConfig) -> list[tuple[str, bytes]]:
    label = v.name or v.id
    return [
        _mode_select(topics, device, v, label),
        _target_number(topics, device, v, label),
        _departure_text(topics, device, v, label),
        _clear_button(topics, device, v, label),
    ]


_BATTERY_MODES = ["charge", "discharge", "hold", "auto"]
_CONTROL_STATUSES = ["observe", "idle", "ok", "refused", "unreachable", "released"]


def _battery_sensors(topics: Topics, device: dict[str, Any], b: HomeBatteryConfig) -> list[tuple[str, bytes]]:
    """Per home battery: SoC, power, the plan's power now, the mode it was told, its control status."""
    state = topics.battery(b.id)
    label = b.name or b.id
    oid = f"battery_{b.id}"
    return [
        _sensor(topics, device, f"{oid}_soc", f"{label} SoC", state, "soc_percent", "%", "battery"),
        _sensor(topics, device, f"{oid}_power", f"{label} power", state, "power_w", "W", "power"),
        _sensor(
            topics, device, f"{oid}_planned", f"{label} planned power", state, "planned_power_w", "W", "power"
        ),
        _sensor(topics, device, f"{oid}_mode", f"{label} mode", state, "mode", None, "enum", _BATTERY_MODES),
        _sensor(
            topics,
            device,
            f"{oid}_control",
            f"{label} control",
            state,
            "control_status",
            None,
            "enum",
            _CONTROL_STATUSES,
        ),
    ]


def discovery_messages(cfg: SiteConfig, topics: Topics) -> list[tuple[str, bytes]]:
    """Retained discovery configs: site power flows, safe mode, per vehicle SoC/target/setpoint/mode
    sensors and the mode, departure target/time and clear-departure controls, per home battery SoC,
    power, planned power, mode and control status sensors."""
    device = {
        "identifiers": [topics.node_id],
        "name": f"v2x {cfg.site.name}",
        "manufacturer": "v2x-controller",
        "model": "V2X home controller",
        "sw_version": __version__,
    }
    out = [
        _sensor(topics, device, "grid_power", "Grid power", topics.site, "grid_w", "W", "power"),
        _sensor(topics, device, "pv_power", "PV power", topics.site, "pv_w", "W", "power"),
        _sensor(topics, device, "home_power", "Home power", topics.site, "home_w", "W", "power"),
        _sensor(topics, device, "vehicles_power", "Vehicles power", topics.site, "vehicles_w", "W", "power"),
    ]
    if cfg.home_batteries:
        out.append(
            _sensor(
                topics, device, "batteries_power", "Batteries power", topics.site, "batteries_w", "W", "power"
            )
        )
    topic, safe_mode = _entity(topics, device, "binary_sensor", "safe_mode", "Safe mode", topics.controller)
    safe_mode["value_template"] = "{{ 'ON' if value_json.safe_mode else 'OFF' }}"
    safe_mode["device_class"] = "problem"
    out.append((topic, dumps(safe_mode)))
    modes = [m.value for m in VehicleMode]
    for v in cfg.vehicles:
        state = topics.vehicle(v.id)
        label = v.name or v.id
        out += [
            _sensor(topics, device, f"{v.id}_soc", f"{label} SoC", state, "soc_percent", "%", "battery"),
            _sensor(
                topics,
                device,
                f"{v.id}_target",
                f"{label} target SoC",
                state,
                "target_soc_percent",
                "%",
                None,
            ),
            _sensor(
                topics, device, f"{v.id}_setpoint", f"{label} setpoint", state, "setpoint_w", "W", "power"
            ),
            _sensor(topics, device, f"{v.id}_mode", f"{label} mode", state, "mode", None, "enum", modes),
            *_vehicle_controls(topics, device, v),
        ]
    for battery in cfg.home_batteries:
        out += _battery_sensors(topics, device, battery)
    return out
