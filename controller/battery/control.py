"""The daemon's home battery controls: one per controllable battery (``control: mqtt`` or ``modbus``;
an ``observe`` battery is only read), fed each dispatch tick with the dispatcher's commands.

The stop (the batteries' counterpart of invariant 7): ``begin_stop`` first, so no command goes out
any more, then ``release_all`` hands every controllable battery back to its own mode (an ``auto``
setpoint over MQTT, SunSpec release over Modbus), all in parallel within the stop's budget, whatever
the devices answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine, Sequence
from typing import Any

import structlog

from controller.battery.modbus_control import ModbusBatteryControl, StorageFactory, sunspec_storage
from controller.battery.mqtt_control import MqttBatteryControl, Publish
from controller.clock import Clock
from controller.config.battery import ModbusControl, MqttControl
from controller.dispatch.battery_command import BatteryCommand
from controller.site import Site

__all__ = ["BatteryControl", "BatteryControls"]

log = structlog.get_logger("controller.battery")

BatteryControl = MqttBatteryControl | ModbusBatteryControl


class BatteryControls:
    def __init__(
        self,
        site: Site,
        clock: Clock,
        publish: Publish,
        storage_factory: StorageFactory = sunspec_storage,
    ) -> None:
        self.site = site
        self.controls: dict[str, BatteryControl] = {}
        for battery_id, runtime in site.batteries.items():
            control = runtime.config.control
            if isinstance(control, MqttControl):
                self.controls[battery_id] = MqttBatteryControl(runtime, control, publish, clock)
            elif isinstance(control, ModbusControl):
                self.controls[battery_id] = ModbusBatteryControl(
                    runtime, control, site.inputs, clock, storage_factory
                )
        self._stopping = False
        self._pending: dict[str, BatteryCommand] = {}
        self._busy: set[str] = set()

    def tasks(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """The long-lived tasks: each Modbus battery's poll loop."""
        return [
            (f"battery:{bid}", control.run())
            for bid, control in self.controls.items()
            if isinstance(control, ModbusBatteryControl)
        ]

    async def apply(self, commands: Sequence[BatteryCommand]) -> None:
        """Hand each command to its battery's control, all batteries in parallel; none once stopping.

        A battery still busy with an earlier command (a slow Modbus write) gets only the newest one
        when it is done, never a queue of stale ones; a change (``send``) is not lost to a
        keep-alive that follows it."""
        if self._stopping:
            return
        for command in commands:
            if command.battery_id not in self.controls:
                continue  # an observe battery: nothing to command
            waiting = self._pending.get(command.battery_id)
            if waiting is not None and waiting.send and not command.send:
                command = dataclasses.replace(command, send=True)
            self._pending[command.battery_id] = command
        ready = [bid for bid in self._pending if bid not in self._busy]
        await asyncio.gather(*(self._drain(bid) for bid in ready))

    async def _drain(self, battery_id: str) -> None:
        self._busy.add(battery_id)
        try:
            while not self._stopping and (command := self._pending.pop(battery_id, None)) is not None:
                try:
                    await self.controls[battery_id].apply(command)
                except Exception as exc:
                    log.error("battery_command_failed", battery=battery_id, error=repr(exc))
        finally:
            self._busy.discard(battery_id)

    def begin_stop(self) -> None:
        """From now on no command goes out; only the releases of ``release_all``."""
        self._stopping = True

    async def release_all(self, budget_s: float) -> dict[str, str]:
        """Every controllable battery back to its own mode, in parallel within ``budget_s`` (real time,
        like the chargers' safe profiles); battery id -> ``released`` or why not."""
        self._stopping = True
        ids = list(self.controls)
        tasks = [asyncio.ensure_future(self.controls[bid].release()) for bid in ids]
        if not tasks:
            return {}
        _done, pending = await asyncio.wait(tasks, timeout=budget_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        outcome: dict[str, str] = {}
        for bid, task in zip(ids, tasks, strict=True):
            if task in pending:
                outcome[bid] = "timeout"
            elif task.exception() is not None:
                outcome[bid] = f"failed: {task.exception()!r}"
            else:
                outcome[bid] = self.site.batteries[bid].control_status
            log.info("battery_stop", battery=bid, outcome=outcome[bid])
        await asyncio.gather(*(c.close() for c in self.controls.values()), return_exceptions=True)
        return outcome

    def problems(self) -> list[str]:
        """Controllable batteries whose control does not work now, and why (for health)."""
        return [
            f"battery {b.config.id}: {b.control_status} ({b.control_detail})"
            for b in self.site.batteries.values()
            if b.control_status in ("refused", "unreachable")
        ]

    def add_to_health(self, body: dict[str, Any]) -> dict[str, Any]:
        """``/health`` with the batteries whose control fails listed as degraded (alive all the same:
        a restart fixes neither a refusing inverter nor a lost one)."""
        problems = self.problems()
        if problems:
            body["degraded"] = [*body.get("degraded", []), {"what": "batteries", "why": "; ".join(problems)}]
            if body.get("status") == "ok":
                body["status"] = "degraded"
        return body
