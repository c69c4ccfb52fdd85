"""Home Assistant MQTT discovery for the main sensors (pure: topic -> retained config payload)."""

from __future__ import annotations

import re
from typing import Any

from controller import __version__
from controller.config import SiteConfig
from controller.domain import VehicleMode
from controller.mqtt.payloads import dumps
from controller.mqtt.topics import Topics

__all__ = ["discovery_messages"]


def _entity_slug(text: str) -> str:
    """A Home Assistant entity id part: lowercase ``[a-z0-9_]``, no ``__``, no leading/trailing ``_``."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]", "_", text.lower())).strip("_") or "v2x"


def _entity(
    topics: Topics, device: dict[str, Any], component: str, object_id: str, name: str, state_topic: str
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
        "state_topic": state_topic,
        "availability_topic": topics.status,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
        "origin": {"name": "v2x-controller", "sw_version": __version__},
    }
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


def discovery_messages(cfg: SiteConfig, topics: Topics) -> list[tuple[str, bytes]]:
    """Retained discovery configs: site power flows, safe mode, and per vehicle SoC/target/setpoint/mode."""
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
        ]
    return out
