"""A home battery commanded over MQTT (``control: mqtt``): Home Assistant or the inverter's own
integration executes the setpoints published on ``setpoint_topic``.

Each setpoint is JSON ``{"power_w": <+charge/-discharge>, "mode": "charge"|"discharge"|"hold"|"auto",
"valid_until": <ISO time>}``, QoS 1, not retained (a retained setpoint would outlive the controller).
It goes out when the dispatcher says something changed and again every ``resend_s`` as a keep-alive
while the dispatcher keeps asking for it; a controller that dies stops the keep-alive, and the
executing side returns to the battery's own mode after ``valid_until``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from controller.clock import Clock
from controller.config.battery import MqttControl
from controller.dispatch.battery_command import BatteryCommand
from controller.domain import utc_text
from controller.mqtt.payloads import dumps
from controller.site_batteries import BatteryRuntime

__all__ = ["MqttBatteryControl", "Publish", "setpoint_payload"]

log = structlog.get_logger("controller.battery")

Publish = Callable[[str, bytes], Awaitable[bool]]
"""Publish a payload at QoS 1, not retained; False when it did not go out (no broker, refused)."""


def setpoint_payload(command: BatteryCommand) -> bytes:
    """The setpoint as published: ``power_w`` is 0 with ``hold`` and ``auto``."""
    power_w = command.setpoint_w if command.mode in ("charge", "discharge") else 0.0
    return dumps(
        {
            "power_w": round(power_w) + 0,
            "mode": command.mode,
            "valid_until": utc_text(command.valid_until),
        }
    )


class MqttBatteryControl:
    def __init__(self, runtime: BatteryRuntime, control: MqttControl, publish: Publish, clock: Clock) -> None:
        self.runtime = runtime
        self.control = control
        self.clock = clock
        self._publish = publish
        self._last_sent_s: float | None = None
        """Monotonic time of the last setpoint that went out."""
        self.sent = 0

    @property
    def battery_id(self) -> str:
        return self.runtime.config.id

    async def run(self) -> None:
        """Nothing runs between commands: the keep-alive rides on the dispatcher's ticks, so a
        dispatcher that stopped stops it too."""

    def _due(self, command: BatteryCommand) -> bool:
        if command.send or self._last_sent_s is None or self.runtime.control_status != "ok":
            return True
        return self.clock.monotonic() - self._last_sent_s >= self.control.resend_s

    async def apply(self, command: BatteryCommand) -> None:
        """Publish the setpoint when it changed or the keep-alive is due."""
        if self._due(command):
            await self._send(command)

    async def _send(self, command: BatteryCommand) -> bool:
        topic = self.control.setpoint_topic
        if not await self._publish(topic, setpoint_payload(command)):
            if self.runtime.control_status != "unreachable":
                log.warning("battery_setpoint_not_sent", battery=self.battery_id, topic=topic)
            self.runtime.control_status = "unreachable"
            self.runtime.control_detail = "MQTT broker not connected or the setpoint was refused"
            return False
        if self.runtime.control_status == "unreachable":
            log.info("battery_setpoint_sent_again", battery=self.battery_id, topic=topic)
        self.runtime.commanded(command)
        self._last_sent_s = self.clock.monotonic()
        self.sent += 1
        log.debug(
            "battery_setpoint", battery=self.battery_id, mode=command.mode, setpoint_w=command.setpoint_w
        )
        return True

    async def release(self) -> None:
        """Back to the battery's own mode: an ``auto`` setpoint (the stop's last word)."""
        now = self.clock.now()
        auto = BatteryCommand(self.battery_id, 0.0, "auto", now, send=True, reasons=("stop",))
        if await self._send(auto):
            self.runtime.control_status = "released"
            log.info("battery_released", battery=self.battery_id, control="mqtt")

    async def close(self) -> None:
        """Nothing to close: the site's MQTT connection carries the setpoints."""
