"""Home Assistant MQTT discovery for the main sensors (pure: topic -> retained config payload)."""

from __future__ import annotations

import re
from typing import Any

from controller import __version__
from controller.config import SiteConfig
from controller.mqtt.payloads import dumps
from controller.mqtt.topics import Topics

__all__ = ["discovery_messages"]


def _sensor(
    topics: Topics,
    device: dict[str, Any],
    object_id: str,
    name: str,
    state_topic: str,
    field: str,
    unit: str | None,
    device_class: str | None,
) -> tuple[str, bytes]:
    object_id = re.sub(r"[^A-Za-z0-9_-]", "_", object_id)  # vehicle ids may hold . and :
    config: dict[str, Any] = {
        "name": name,
        "unique_id": f"{topics.node_id}_{object_id}",
        "object_id": f"{topics.node_id}_{object_id}",
        "state_topic": state_topic,
        "value_template": f"{{{{ value_json.{field} }}}}",
        "availability_topic": topics.status,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
    }
    if unit is not None:
        config["unit_of_measurement"] = unit
        config["state_class"] = "measurement"
    if device_class is not None:
        config["device_class"] = device_class
    return topics.discovery("sensor", object_id), dumps(config)


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
    safe_mode: dict[str, Any] = {
        "name": "Safe mode",
        "unique_id": f"{topics.node_id}_safe_mode",
        "object_id": f"{topics.node_id}_safe_mode",
        "state_topic": topics.controller,
        "value_template": "{{ 'ON' if value_json.safe_mode else 'OFF' }}",
        "device_class": "problem",
        "availability_topic": topics.status,
        "device": device,
    }
    out.append((topics.discovery("binary_sensor", "safe_mode"), dumps(safe_mode)))
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
            _sensor(topics, device, f"{v.id}_mode", f"{label} mode", state, "mode", None, None),
        ]
    return out
