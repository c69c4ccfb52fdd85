"""A home battery commanded over Modbus TCP (``control: modbus``), through a SunSpec storage client.

The control polls SoC and power every ``poll_s`` and feeds them into the site inputs (the battery's
readings come from the device, not from MQTT meters). A setpoint is written when the dispatcher says
something changed, and again before a third of the inverter's revert timeout has passed, so the
inverter keeps it while the controller lives and returns to its own mode once it does not.

A refused write or a device that disappears is logged once per change of state, shown in health
(``control_status``) and retried with backoff: the poll reconnects, the next dispatch tick writes
again. Nothing here ends the daemon.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import structlog

from controller.backoff import Backoff
from controller.battery.sunspec import SunSpecStorage
from controller.clock import Clock
from controller.config.battery import ModbusControl
from controller.dispatch.battery_command import BatteryCommand
from controller.site_batteries import BatteryRuntime
from controller.site_inputs import SiteInputs

__all__ = ["ModbusBatteryControl", "StorageDevice", "StorageFactory", "sunspec_storage"]

log = structlog.get_logger("controller.battery")

# The device's readings count as fresh for this many polls (one lost poll is not a stale battery).
FRESH_POLLS = 3
RETRY = Backoff(initial_s=2.0, max_s=120.0)


class StorageReading(Protocol):
    @property
    def soc_percent(self) -> float: ...
    @property
    def power_w(self) -> float | None:
        """+ charging; None where the device offers no battery power."""
        ...


class StorageDevice(Protocol):
    """What the control needs of a storage client (``controller.battery.sunspec.SunSpecStorage``)."""

    async def connect(self) -> object: ...
    async def read(self) -> StorageReading: ...
    async def set_power(self, power_w: float, revert_timeout_s: int) -> object:
        """Write, verify by reading back; raises when the device refuses."""
        ...

    async def release(self) -> None:
        """Back to the inverter's own mode."""
        ...

    async def close(self) -> None: ...


StorageFactory = Callable[[ModbusControl], StorageDevice]


def sunspec_storage(control: ModbusControl) -> StorageDevice:
    """The SunSpec basic storage control client for ``control``."""
    return SunSpecStorage(control.host, control.port, control.unit_id)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class ModbusBatteryControl:
    def __init__(
        self,
        runtime: BatteryRuntime,
        control: ModbusControl,
        inputs: SiteInputs,
        clock: Clock,
        factory: StorageFactory = sunspec_storage,
    ) -> None:
        self.runtime = runtime
        self.control = control
        self.inputs = inputs
        self.clock = clock
        self._factory = factory
        self._device: StorageDevice | None = None
        self._lock = asyncio.Lock()  # one Modbus transaction at a time
        self._last_write_s: float | None = None
        self._write_failures = 0
        self._retry_at_s = 0.0
        self.writes = 0

    @property
    def battery_id(self) -> str:
        return self.runtime.config.id

    # ------------------------------------------------------------------ state

    def _fail(self, status: str, exc: BaseException) -> None:
        """A refused write or a lost device: logged when the state changes, not on every retry."""
        reason = _reason(exc)
        if self.runtime.control_status != status:
            log.warning(f"battery_{status}", battery=self.battery_id, host=self.control.host, reason=reason)
        self.runtime.control_status = "refused" if status == "refused" else "unreachable"
        self.runtime.control_detail = reason

    def _recovered(self) -> None:
        if self.runtime.control_status in ("refused", "unreachable"):
            log.info("battery_control_ok", battery=self.battery_id, host=self.control.host)
            self.runtime.control_status = "ok" if self._last_write_s is not None else "idle"
            self.runtime.control_detail = ""

    # ---------------------------------------------------------------- polling

    async def run(self) -> None:
        """Poll SoC and power every ``poll_s`` until cancelled; reconnect with backoff."""
        attempt = 0
        while True:
            try:
                await self._poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._fail("unreachable", exc)
                await self._drop()
                attempt += 1
                await self.clock.sleep(RETRY.delay_s(attempt))
                continue
            if attempt:
                attempt = 0
                if self.runtime.control_status == "unreachable":
                    self._recovered()
            await self.clock.sleep(self.control.poll_s)

    async def _connected(self) -> StorageDevice:
        if self._device is None:
            device = self._factory(self.control)
            try:
                await device.connect()
            except BaseException:
                await _close_quietly(device)
                raise
            self._device = device
        return self._device

    async def _poll(self) -> None:
        async with self._lock:
            device = await self._connected()
            reading = await device.read()
        stale_after_s = FRESH_POLLS * self.control.poll_s
        self.inputs.update_battery_device(
            self.battery_id, reading.soc_percent, reading.power_w, self.clock.now(), stale_after_s
        )

    async def _drop(self) -> None:
        """Forget the connection; the next command after a reconnect is written at once (the
        device may have reverted, or be another one on the same address)."""
        device, self._device = self._device, None
        self._last_write_s = None
        if device is not None:
            await _close_quietly(device)

    # -------------------------------------------------------------- commands

    def _due(self, command: BatteryCommand) -> bool:
        now_s = self.clock.monotonic()
        if self._write_failures:
            return now_s >= self._retry_at_s
        if command.send or self._last_write_s is None:
            return True
        return now_s - self._last_write_s >= self.control.revert_timeout_s / 3

    async def apply(self, command: BatteryCommand) -> None:
        """Write the setpoint (``auto``: release) when it changed, is due again or failed before."""
        if self._device is None:
            return  # the poll reconnects; the tick after that writes
        if not self._due(command):
            return
        try:
            async with self._lock:
                device = await self._connected()
                if command.mode == "auto":
                    await device.release()
                else:
                    power_w = command.setpoint_w if command.mode in ("charge", "discharge") else 0.0
                    await device.set_power(power_w, self.control.revert_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._write_failures += 1
            self._retry_at_s = self.clock.monotonic() + RETRY.delay_s(self._write_failures)
            self._fail("refused", exc)
            return
        if self.runtime.control_status == "refused":
            log.info("battery_control_ok", battery=self.battery_id, host=self.control.host)
        self._write_failures = 0
        self._last_write_s = self.clock.monotonic()
        self.writes += 1
        self.runtime.commanded(command)

    async def release(self) -> None:
        """Back to the inverter's own mode (the stop's last word), connecting first if need be."""
        async with self._lock:
            device = await self._connected()
            await device.release()
        self.runtime.control_status = "released"
        log.info("battery_released", battery=self.battery_id, control="modbus")

    async def close(self) -> None:
        await self._drop()


async def _close_quietly(device: StorageDevice) -> None:
    try:
        await device.close()
    except Exception as exc:
        log.debug("battery_close_failed", reason=_reason(exc))
