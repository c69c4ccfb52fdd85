"""A SunSpec storage device on 127.0.0.1 for tests: a pymodbus TCP server with a real register map.

The map: ``SunS`` at ``base_address``, model 1 (common), model 802 (battery base) and/or model 103
(three-phase inverter), model 124 (basic storage controls), the end marker. Its scale factors differ
from point to point on purpose (ChaState_SF -2, SoC_SF -1, WChaMax_SF 1, InOutWRte_SF -2, 103 W_SF 1),
so a client that forgets one reads a wrong number.

Behaviours: a normal device (a write to a model 124 control point lands; the battery's power follows
the window the rates leave it, so the next read shows it; the rates revert after
``InOutWRte_RvrtTms`` by the injected clock), a device that refuses every write to model 124
(ILLEGAL_VALUE, as one with remote control switched off), one that accepts but does not keep them,
one without model 124, one that stops answering (``freeze``) and one that disappears (``stop``).

The register map is this class's own list (``registers``, by absolute address); the pymodbus device's
action hook copies it into the server's memory before every request is answered, and applies a write
to it first.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from controller.battery.sunspec_models import Battery, Storage

HOST = "127.0.0.1"
WRITABLE_STORAGE_POINTS = {
    Storage.W_CHA_MAX,
    Storage.W_CHA_GRA,
    Storage.W_DIS_CHA_GRA,
    Storage.STOR_CTL_MOD,
    Storage.VA_CHA_MAX,
    Storage.MIN_RSV_PCT,
    Storage.OUT_W_RTE,
    Storage.IN_W_RTE,
    Storage.IN_OUT_W_RTE_WIN_TMS,
    Storage.IN_OUT_W_RTE_RVRT_TMS,
    Storage.IN_OUT_W_RTE_RMP_TMS,
    Storage.CHA_GRI_SET,
}

# Scale factors of this device (see the module docstring).
CHA_STATE_SF = -2
SOC_802_SF = -1
W_CHA_MAX_SF = 1
IN_OUT_W_RTE_SF = -2
INVERTER_W_SF = 1
FULL_RATE_RAW = 10000  # 100 % at InOutWRte_SF -2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _text(value: str, registers: int) -> list[int]:
    raw = value.encode("ascii").ljust(registers * 2, b"\0")
    return list(struct.unpack(f">{registers}H", raw))


def _u16(value: int) -> int:
    return value & 0xFFFF


@dataclass
class SunSpecDeviceModel:
    """What the simulated device is; change the fields before ``start``."""

    base_address: int = 40000
    unit_id: int = 1
    with_storage: bool = True
    with_battery_model: bool = True
    inverter_model: int | None = 103
    refuse_storage_writes: bool = False
    ignore_storage_writes: bool = False
    soc_percent: float = 57.25
    w_cha_max_w: float = 5000.0
    own_mode_power_w: float = -800.0
    """What the battery does in its own (self-consumption) mode: here, covering 800 W of the home."""
    inverter_pv_w: float = 1500.0
    """PV on the same inverter: its AC output is PV and battery together."""
    clock: Callable[[], float] = field(default=time.monotonic)
    """The device's sense of time for the revert timeout; a test passes its own."""


class SunSpecServer:
    def __init__(self, model: SunSpecDeviceModel | None = None, port: int | None = None) -> None:
        self.model = model or SunSpecDeviceModel()
        self.port = port or free_port()
        self.registers: dict[int, int] = {}
        self.addresses: dict[int, int] = {}
        """Model id -> address of its first data register."""
        self.writes: list[tuple[int, list[int]]] = []
        self.refused: list[tuple[int, list[int]]] = []
        self.last_control_write_s: float | None = None
        self.battery_power_w = self.model.own_mode_power_w
        self._thaw = asyncio.Event()
        self._frozen = False
        self._server: ModbusTcpServer | None = None
        self._build()

    # ------------------------------------------------------------ the map

    def _build(self) -> None:
        m = self.model
        blocks: list[tuple[int, list[int]]] = [
            (
                1,
                _text("Example Power", 16)
                + _text("HybridStore 10", 16)
                + [0] * 16
                + _text("SN-4711", 16)
                + [1, 0],
            )
        ]
        if m.with_battery_model:
            blocks.append((802, [0] * Battery.LENGTH))
        if m.inverter_model is not None:
            blocks.append((m.inverter_model, [0] * 50))
        if m.with_storage:
            blocks.append((124, [0] * Storage.LENGTH))
        words = [0x5375, 0x6E53]
        for model_id, data in blocks:
            self.addresses[model_id] = m.base_address + len(words) + 2
            words += [model_id, len(data), *data]
        words += [0xFFFF, 0]
        self.registers = {m.base_address + i: word for i, word in enumerate(words)}
        self._initial_points()
        self._simulate()

    def _initial_points(self) -> None:
        if self.model.with_storage:
            self.set_storage(Storage.W_CHA_MAX, round(self.model.w_cha_max_w / 10.0**W_CHA_MAX_SF))
            self.set_storage(Storage.W_CHA_MAX_SF, _u16(W_CHA_MAX_SF))
            self.set_storage(Storage.CHA_STATE_SF, _u16(CHA_STATE_SF))
            self.set_storage(Storage.IN_OUT_W_RTE_SF, _u16(IN_OUT_W_RTE_SF))
            self.set_storage(Storage.IN_W_RTE, FULL_RATE_RAW)
            self.set_storage(Storage.OUT_W_RTE, FULL_RATE_RAW)
            self.set_storage(Storage.STOR_AVAL, 0xFFFF)  # not implemented
            for sf in (Storage.W_CHA_DIS_CHA_GRA_SF, Storage.VA_CHA_MAX_SF, Storage.MIN_RSV_PCT_SF):
                self.set_storage(sf, 0x8000)
        if self.model.with_battery_model:
            self._set(802, Battery.SOC_SF, _u16(SOC_802_SF))
            self._set(802, Battery.W_SF, 0)
        if self.model.inverter_model is not None:
            self._set(self.model.inverter_model, 13, _u16(INVERTER_W_SF))

    def _set(self, model_id: int, offset: int, value: int) -> None:
        self.registers[self.addresses[model_id] + offset] = value

    def set_storage(self, offset: int, value: int) -> None:
        self._set(124, offset, value)

    def storage(self, offset: int) -> int:
        """A model 124 register as the device holds it (the server side of a test)."""
        return self.registers[self.addresses[124] + offset]

    # ------------------------------------------------------------ the battery

    def _rate_w(self, offset: int) -> float:
        raw = self.storage(offset)
        signed = raw - 0x10000 if raw & 0x8000 else raw
        return signed * 10.0**IN_OUT_W_RTE_SF / 100.0 * self.model.w_cha_max_w

    def _simulate(self) -> None:
        """Revert the rates after their timeout; the battery's power in the window they leave it."""
        if not self.model.with_storage:
            self.battery_power_w = self.model.own_mode_power_w
        else:
            self._revert_when_due()
            mode = self.storage(Storage.STOR_CTL_MOD)
            upper_w = self._rate_w(Storage.IN_W_RTE) if mode & 1 else self.model.w_cha_max_w
            lower_w = -self._rate_w(Storage.OUT_W_RTE) if mode & 2 else -self.model.w_cha_max_w
            self.battery_power_w = min(max(self.model.own_mode_power_w, lower_w), upper_w)
            self.set_storage(Storage.CHA_STATE, round(self.model.soc_percent / 10.0**CHA_STATE_SF))
            status = 4 if self.battery_power_w > 0 else 3 if self.battery_power_w < 0 else 6
            self.set_storage(Storage.CHA_ST, status)
        if self.model.with_battery_model:
            self._set(802, Battery.SOC, round(self.model.soc_percent / 10.0**SOC_802_SF))
            self._set(802, Battery.W, _u16(round(-self.battery_power_w)))
        if self.model.inverter_model is not None:
            ac_out_w = self.model.inverter_pv_w - self.battery_power_w
            self._set(self.model.inverter_model, 12, _u16(round(ac_out_w / 10.0**INVERTER_W_SF)))

    def _revert_when_due(self) -> None:
        timeout_s = self.storage(Storage.IN_OUT_W_RTE_RVRT_TMS)
        if self.last_control_write_s is None or timeout_s == 0:
            return
        if self.model.clock() - self.last_control_write_s >= timeout_s:
            self.set_storage(Storage.STOR_CTL_MOD, 0)
            self.set_storage(Storage.IN_W_RTE, FULL_RATE_RAW)
            self.set_storage(Storage.OUT_W_RTE, FULL_RATE_RAW)
            self.last_control_write_s = None

    # ------------------------------------------------------------ requests

    def _write(self, address: int, values: list[int]) -> ExcCodes | None:
        if not self.model.with_storage:
            return ExcCodes.ILLEGAL_ADDRESS
        first = address - self.addresses[124]
        offsets = range(first, first + len(values))
        if not all(offset in WRITABLE_STORAGE_POINTS for offset in offsets):
            return ExcCodes.ILLEGAL_ADDRESS
        if self.model.refuse_storage_writes:
            self.refused.append((address, values))
            return ExcCodes.ILLEGAL_VALUE
        for offset, value in zip(offsets, values, strict=True):
            signed = value - 0x10000 if value & 0x8000 else value
            if offset == Storage.STOR_CTL_MOD and value > 3:
                return ExcCodes.ILLEGAL_VALUE
            if offset in (Storage.IN_W_RTE, Storage.OUT_W_RTE) and abs(signed) > FULL_RATE_RAW:
                return ExcCodes.ILLEGAL_VALUE
        self.writes.append((address, values))
        if self.model.ignore_storage_writes:
            return None
        for offset, value in zip(offsets, values, strict=True):
            self.set_storage(offset, value)
        self.last_control_write_s = self.model.clock()
        return None

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self._frozen and not self._thaw.is_set():
            await self._thaw.wait()
        if set_values is not None:
            refused = self._write(address, [int(value) for value in set_values])
            if refused is not None:
                return refused
        self._simulate()
        for absolute, value in self.registers.items():
            current_registers[absolute - start_address] = value
        return None

    def freeze(self) -> None:
        """Stop answering (requests hang) until ``stop``."""
        self._frozen = True

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> SunSpecServer:
        words = [self.registers[a] for a in sorted(self.registers)]
        device = SimDevice(
            id=self.model.unit_id,
            simdata=[SimData(self.model.base_address, values=words, datatype=DataType.REGISTERS)],
            action=self._action,
        )
        self._server = ModbusTcpServer(device, address=(HOST, self.port))
        await self._server.serve_forever(background=True)
        return self

    async def stop(self) -> None:
        self._thaw.set()
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated
            self._server = None

    async def __aenter__(self) -> SunSpecServer:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
