"""The controller's own topic layout under ``mqtt.base_topic`` (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from controller.config import MqttConfig

__all__ = ["Topics"]


@dataclass(frozen=True, slots=True)
class Topics:
    """``<base>/status`` online/offline, ``<base>/state/...`` published state, ``<base>/cmd/<vehicle>/<command>``
    commands answered on ``<base>/reply/<vehicle>/<command>``."""

    base: str
    discovery_prefix: str

    @classmethod
    def from_config(cls, cfg: MqttConfig) -> Topics:
        return cls(cfg.base_topic.strip("/"), cfg.discovery_prefix.strip("/"))

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def controller(self) -> str:
        return f"{self.base}/state/controller"

    @property
    def site(self) -> str:
        return f"{self.base}/state/site"

    @property
    def plan(self) -> str:
        return f"{self.base}/state/plan"

    def vehicle(self, vehicle_id: str) -> str:
        return f"{self.base}/state/vehicle/{vehicle_id}"

    def battery(self, battery_id: str) -> str:
        return f"{self.base}/state/battery/{battery_id}"

    def charger(self, charger_id: str) -> str:
        return f"{self.base}/state/charger/{charger_id}"

    @property
    def command_filter(self) -> str:
        """Every topic under ``cmd/``, so one with too many or too few levels is seen (and answered)."""
        return f"{self.base}/cmd/#"

    def command(self, vehicle_id: str, name: str) -> str:
        return f"{self.base}/cmd/{vehicle_id}/{name}"

    def reply(self, vehicle_id: str, name: str) -> str:
        return f"{self.base}/reply/{vehicle_id}/{name}"

    def command_levels(self, topic: str) -> tuple[str, ...] | None:
        """The levels after ``<base>/cmd/`` of any topic under it (``()`` for ``<base>/cmd`` itself),
        None for a topic outside it."""
        root = f"{self.base}/cmd"
        if topic == root:
            return ()
        if not topic.startswith(f"{root}/"):
            return None
        return tuple(topic[len(root) + 1 :].split("/"))

    def parse_command(self, topic: str) -> tuple[str, str] | None:
        """``(vehicle_id, command)`` of a command topic, None for any other topic."""
        levels = self.command_levels(topic)
        if levels is None or len(levels) != 2:
            return None
        return levels[0], levels[1]

    @property
    def node_id(self) -> str:
        """Home Assistant node id: the base topic with anything but ``[A-Za-z0-9_-]`` replaced."""
        return re.sub(r"[^A-Za-z0-9_-]", "_", self.base)

    def discovery(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node_id}/{object_id}/config"
