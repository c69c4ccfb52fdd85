"""SunSpec storage control over Modbus TCP: read a home battery's SoC and power, hold it at a power.

The device's model list is read at ``connect``: model 1 (common: who it is, for the logs) and model 124
(basic storage controls) are required; the battery's power comes from model 802 (battery base) when
present, or from the AC power of an inverter model (101-103, 111-113) when the caller says that
inverter carries nothing but the battery (an AC-coupled storage inverter). Otherwise the power is
``None`` and the reading says what was read instead.

Every request is bounded by ``timeout_s``; a lost or silent connection raises ``SunSpecUnavailable``
and closes the client, so the caller reconnects with ``connect``. A setpoint is written, then read
back: a refused write (a Modbus exception) or a value the device did not keep raises
``SunSpecWriteRefused``. The revert timeout (``InOutWRte_RvrtTms``) goes with every setpoint, so a
controller that stops writing leaves the battery in its own mode once it runs out.

Signs as everywhere (DESIGN.md): + charging the battery, - discharging it, W.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import structlog
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from controller.battery.sunspec_models import (
    BASE_ADDRESSES,
    BATTERY_MODEL,
    COMMON_MODEL,
    END_MODEL_ID,
    INVERTER_FLOAT_MODELS,
    INVERTER_INT_MODELS,
    MAX_MODELS,
    STORAGE_MODEL,
    STORAGE_POINT_NAMES,
    Battery,
    CommonInfo,
    ModelEntry,
    Storage,
    StorageControls,
    StorageSetpoint,
    decode_battery_power_w,
    decode_battery_soc_percent,
    decode_common,
    decode_inverter_ac_power_w,
    decode_storage,
    inverter_power_span,
    is_suns_marker,
    release_registers,
    storage_setpoint,
)

__all__ = [
    "StorageReading",
    "SunSpecDevice",
    "SunSpecError",
    "SunSpecNotSupported",
    "SunSpecStorage",
    "SunSpecUnavailable",
    "SunSpecWriteRefused",
]

log = structlog.get_logger("controller.battery")

MAX_READ_REGISTERS: Final = 125
"""Modbus allows at most this many registers in one read."""
NO_STORAGE_CONTROL: Final = (
    "no SunSpec storage control (model 124) on this device; use control: mqtt or observe"
)


class SunSpecError(Exception):
    """Anything that keeps the controller from reading or commanding the battery over SunSpec."""


class SunSpecUnavailable(SunSpecError):
    """The device cannot be reached, stopped answering, or refused a read: reconnect later."""


class SunSpecWriteRefused(SunSpecError):
    """The device refused a write (Modbus exception) or did not keep the value written."""


class SunSpecNotSupported(SunSpecError):
    """The device answers but lacks what storage control needs (a model, a point)."""


@dataclass(frozen=True, slots=True)
class SunSpecDevice:
    """What ``connect`` found: who the device is and where its models are."""

    info: CommonInfo
    base_address: int
    models: tuple[ModelEntry, ...]
    storage: ModelEntry
    power_model: ModelEntry | None
    """Where the battery's power is read: model 802, or an inverter model of a storage inverter."""
    inverter: ModelEntry | None
    """The first inverter model, read for information when it is not the battery's power."""

    @property
    def power_source(self) -> str:
        if self.power_model is None:
            return "none"
        if self.power_model.model_id == BATTERY_MODEL:
            return "model 802 W"
        return f"model {self.power_model.model_id} W (AC of a storage inverter)"

    @property
    def battery_model(self) -> ModelEntry | None:
        """Model 802 when the power is read from it."""
        power_model = self.power_model
        return power_model if power_model is not None and power_model.model_id == BATTERY_MODEL else None

    def model(self, model_id: int) -> ModelEntry | None:
        return next((entry for entry in self.models if entry.model_id == model_id), None)


@dataclass(frozen=True, slots=True)
class StorageReading:
    soc_percent: float
    """``ChaState`` of model 124 (or ``SoC`` of model 802 where the device leaves ChaState out)."""
    power_w: float | None
    """+ charging / - discharging; ``None`` where the device offers no battery power (see ``power_source``)."""
    power_source: str
    """Where ``power_w`` came from: ``model 802 W``, ``model 103 W (AC of a storage inverter)``, ``none``."""
    inverter_ac_power_w: float | None
    """The inverter's AC output (+ out of the inverter) where one is present: with PV on the same
    inverter this is PV and battery together, so it is never taken for the battery's power."""
    charge_status: str | None
    """``ChaSt``: off, empty, discharging, charging, full, holding, testing."""
    controlled: bool
    """``StorCtl_Mod`` has a limit active: the battery follows a setpoint, not its own mode."""
    revert_timeout_s: int | None


class _ModbusLink:
    """The Modbus TCP connection: every request bounded by ``timeout_s``, a lost or silent connection
    closed and reported as ``SunSpecUnavailable``; an exception response is returned, not raised."""

    def __init__(self, host: str, port: int, unit_id: int, timeout_s: float) -> None:
        self.unit_id = unit_id
        self.timeout_s = timeout_s
        self.where = f"{host}:{port} unit {unit_id}"
        self._host = host
        self._port = port
        self._client: AsyncModbusTcpClient | None = None

    @property
    def is_open(self) -> bool:
        return self._client is not None

    async def open(self) -> None:
        self.close()
        client = AsyncModbusTcpClient(
            self._host,
            port=self._port,
            timeout=self.timeout_s,
            retries=0,
            reconnect_delay=0,  # no reconnecting in the background: the caller decides when
            name=f"sunspec {self._host}",
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                connected = await client.connect()
        except (TimeoutError, OSError, ModbusException):
            connected = False
        if not connected:
            client.close()
            raise SunSpecUnavailable(f"{self.where}: no Modbus TCP connection within {self.timeout_s:g} s")
        self._client = client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def probe(self, address: int, count: int, what: str) -> list[int] | None:
        """The registers, or ``None`` where the device answers with an exception (nothing there)."""
        unit_id = self.unit_id
        response = await self._request(
            f"read {what}",
            lambda client: client.read_holding_registers(address, count=count, device_id=unit_id),
        )
        if response.isError():
            return None
        if len(response.registers) != count:
            raise SunSpecUnavailable(
                f"{self.where}: read of {what} gave {len(response.registers)} registers, asked for {count}"
            )
        return list(response.registers)

    async def read(self, address: int, count: int, what: str) -> list[int]:
        registers = await self.probe(address, count, what)
        if registers is None:
            raise SunSpecUnavailable(f"{self.where}: read of {what} ({count} registers at {address}) refused")
        return registers

    async def read_model(self, entry: ModelEntry, count: int | None = None) -> list[int]:
        wanted = entry.length if count is None else min(count, entry.length)
        registers: list[int] = []
        while len(registers) < wanted:
            chunk = min(MAX_READ_REGISTERS, wanted - len(registers))
            registers += await self.read(
                entry.data_address + len(registers), chunk, f"model {entry.model_id}"
            )
        return registers

    async def write(self, address: int, values: list[int], what: str) -> str | None:
        """Write (function 16); the exception's name when the device refuses, else ``None``."""
        unit_id = self.unit_id
        response = await self._request(
            what, lambda client: client.write_registers(address, values, device_id=unit_id)
        )
        return _exception_name(response) if response.isError() else None

    async def _request(
        self, what: str, call: Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]]
    ) -> ModbusPDU:
        client = self._client
        if client is None or not client.connected:
            self.close()
            raise SunSpecUnavailable(f"{self.where}: not connected ({what}); connect again")
        try:
            async with asyncio.timeout(self.timeout_s):
                return await call(client)
        except TimeoutError as error:
            self.close()
            raise SunSpecUnavailable(
                f"{self.where}: no answer within {self.timeout_s:g} s ({what})"
            ) from error
        except (ModbusException, OSError) as error:
            self.close()
            raise SunSpecUnavailable(f"{self.where}: connection lost ({what}): {error}") from error


class SunSpecStorage:
    """One SunSpec storage device (a hybrid or battery inverter) over Modbus TCP."""

    def __init__(
        self,
        host: str,
        port: int,
        unit_id: int,
        *,
        timeout_s: float = 3.0,
        ac_power_is_battery: bool = False,
    ) -> None:
        """``ac_power_is_battery``: the device is an AC-coupled battery inverter with nothing else on it,
        so its inverter model's AC power is the battery's (used when model 802 is missing)."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.timeout_s = timeout_s
        self.ac_power_is_battery = ac_power_is_battery
        self._link = _ModbusLink(host, port, unit_id, timeout_s)
        self._device: SunSpecDevice | None = None
        self._lock = asyncio.Lock()

    @property
    def device(self) -> SunSpecDevice | None:
        return self._device

    @property
    def where(self) -> str:
        return self._link.where

    async def __aenter__(self) -> SunSpecStorage:
        await self.connect()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ public operations

    async def connect(self) -> SunSpecDevice:
        """Open the connection and read the model list (again, after a ``SunSpecUnavailable``)."""
        async with self._lock:
            self._device = None
            await self._link.open()
            try:
                device = await self._discover()
            except SunSpecError:
                self._link.close()
                raise
            self._device = device
        log.info(
            "sunspec_device",
            where=self.where,
            manufacturer=device.info.manufacturer,
            model=device.info.model,
            serial=device.info.serial,
            base_address=device.base_address,
            models=[entry.model_id for entry in device.models],
            power_source=device.power_source,
        )
        if device.power_model is None:
            log.warning(
                "sunspec_no_battery_power",
                where=self.where,
                reading_instead=(
                    f"model {device.inverter.model_id} AC power (PV and battery together), for information"
                    if device.inverter is not None
                    else "SoC and the control state only"
                ),
                fix="model 802 is missing; with an AC-coupled battery inverter, its AC power is the battery's",
            )
        return device

    async def read(self) -> StorageReading:
        async with self._lock:
            device = self._require_device()
            controls = await self._read_storage(device)
            battery_model = device.battery_model
            battery = None if battery_model is None else await self._link.read_model(battery_model)
            soc_percent = controls.soc_percent
            if soc_percent is None and battery is not None:
                soc_percent = decode_battery_soc_percent(battery)
            if soc_percent is None:
                raise SunSpecNotSupported(
                    f"{self.where}: neither ChaState (124) nor SoC (802) is implemented"
                )
            inverter_ac_w = await self._read_inverter_ac_w(device.inverter)
            return StorageReading(
                soc_percent=soc_percent,
                power_w=self._battery_power_w(device, battery, inverter_ac_w),
                power_source=device.power_source,
                inverter_ac_power_w=inverter_ac_w,
                charge_status=controls.charge_status,
                controlled=bool(controls.stor_ctl_mod),
                revert_timeout_s=controls.revert_timeout_s,
            )

    async def set_power(
        self, power_w: float, revert_timeout_s: int, *, grid_charging: bool | None = None
    ) -> StorageSetpoint:
        """Hold the battery at ``power_w`` (0: hold) until the next call, ``release`` or the revert timeout.

        ``grid_charging`` writes ``ChaGriSet`` (True: may charge from the grid, False: PV only); ``None``
        leaves it as it is. Returns what was written, with the power it asks for after rounding.
        """
        if not math.isfinite(power_w):
            raise ValueError(f"power_w must be a finite number, got {power_w}")
        async with self._lock:
            device = self._require_device()
            controls = await self._read_storage(device)
            if controls.w_cha_max_w is None or controls.w_cha_max_w <= 0:
                raise SunSpecNotSupported(
                    f"{self.where}: WChaMax is {controls.w_cha_max_w}, so no rate can be set as a percent of it"
                )
            setpoint = storage_setpoint(
                power_w,
                w_cha_max_w=controls.w_cha_max_w,
                in_out_w_rte_sf=controls.in_out_w_rte_sf,
                revert_timeout_s=revert_timeout_s,
                grid_charging=grid_charging,
            )
            await self._write_verified(device.storage, setpoint.registers, f"set_power {power_w:.0f} W")
        if setpoint.clamped:
            log.warning(
                "sunspec_setpoint_clamped", where=self.where, asked_w=power_w, limit_w=controls.w_cha_max_w
            )
        return setpoint

    async def release(self) -> None:
        """Clear ``StorCtl_Mod``: the battery goes back to its own mode now."""
        async with self._lock:
            device = self._require_device()
            await self._write_verified(device.storage, release_registers(), "release")

    async def close(self) -> None:
        async with self._lock:
            self._device = None
            self._link.close()

    # ------------------------------------------------------------ discovery

    async def _discover(self) -> SunSpecDevice:
        base = await self._find_base()
        models = await self._walk_models(base)
        ids = {entry.model_id for entry in models}
        if COMMON_MODEL not in ids:
            raise SunSpecNotSupported(f"{self.where}: no SunSpec common model (1); models {sorted(ids)}")
        storage = next((entry for entry in models if entry.model_id == STORAGE_MODEL), None)
        if storage is None:
            raise SunSpecNotSupported(f"{self.where}: {NO_STORAGE_CONTROL}")
        if storage.length < Storage.LENGTH:
            raise SunSpecNotSupported(
                f"{self.where}: model 124 is {storage.length} registers long, expected {Storage.LENGTH}"
            )
        common = next(entry for entry in models if entry.model_id == COMMON_MODEL)
        info = decode_common(await self._link.read_model(common))
        battery = next(
            (e for e in models if e.model_id == BATTERY_MODEL and e.length >= Battery.LENGTH), None
        )
        inverter = next(
            (e for e in models if e.model_id in INVERTER_INT_MODELS + INVERTER_FLOAT_MODELS), None
        )
        power_model = battery or (inverter if self.ac_power_is_battery else None)
        return SunSpecDevice(
            info=info,
            base_address=base,
            models=tuple(models),
            storage=storage,
            power_model=power_model,
            inverter=inverter,
        )

    async def _find_base(self) -> int:
        for base in BASE_ADDRESSES:
            marker = await self._link.probe(base, 2, f"the SunS marker at {base}")
            if marker is not None and is_suns_marker(marker):
                return base
        bases = ", ".join(str(base) for base in BASE_ADDRESSES)
        raise SunSpecNotSupported(f"{self.where}: no SunSpec map ('SunS' not found at {bases})")

    async def _walk_models(self, base: int) -> list[ModelEntry]:
        models: list[ModelEntry] = []
        address = base + 2
        for _ in range(MAX_MODELS):
            header = await self._link.probe(address, 2, f"the model header at {address}")
            if header is None:
                # Some devices leave out the end marker: the map ends where reading does.
                log.info("sunspec_map_ends_without_marker", where=self.where, address=address)
                return models
            model_id, length = header
            if model_id == END_MODEL_ID:
                return models
            entry = ModelEntry(model_id=model_id, address=address, length=length)
            models.append(entry)
            address = entry.next_address
            if address > 0xFFFF - 2:
                break
        raise SunSpecNotSupported(f"{self.where}: the model list has no end marker (0xFFFF)")

    # ------------------------------------------------------------ reading

    def _battery_power_w(
        self, device: SunSpecDevice, battery: Sequence[int] | None, inverter_ac_w: float | None
    ) -> float | None:
        if battery is not None:
            return decode_battery_power_w(battery)
        if device.power_model is not None and inverter_ac_w is not None:
            return -inverter_ac_w  # a storage inverter's AC output is the battery discharging
        return None

    async def _read_storage(self, device: SunSpecDevice) -> StorageControls:
        return decode_storage(await self._link.read_model(device.storage, Storage.LENGTH))

    async def _read_inverter_ac_w(self, inverter: ModelEntry | None) -> float | None:
        if inverter is None:
            return None
        offset, count = inverter_power_span(inverter.model_id)
        if not inverter.covers(offset, count):
            return None
        span = await self._link.read(inverter.data_address + offset, count, f"model {inverter.model_id} W")
        return decode_inverter_ac_power_w(inverter.model_id, span)

    # ------------------------------------------------------------ writing

    async def _write_verified(self, storage: ModelEntry, registers: dict[int, int], what: str) -> None:
        for offset, values in _runs(registers):
            names = ", ".join(_point_name(offset + i) for i in range(len(values)))
            refusal = await self._link.write(storage.data_address + offset, values, f"{what}: write {names}")
            if refusal is not None:
                raise SunSpecWriteRefused(
                    f"{self.where}: {what}: the device refused {names} = {values}: {refusal}"
                )
        kept = await self._link.read_model(storage, Storage.LENGTH)
        for offset, value in registers.items():
            if kept[offset] != value:
                raise SunSpecWriteRefused(
                    f"{self.where}: {what}: {_point_name(offset)} reads back {kept[offset]} after writing {value}"
                )

    def _require_device(self) -> SunSpecDevice:
        if self._device is None or not self._link.is_open:
            self._device = None
            raise SunSpecUnavailable(f"{self.where}: not connected; call connect()")
        return self._device


def _runs(registers: dict[int, int]) -> list[tuple[int, list[int]]]:
    """Consecutive offsets (in the given order) as one write each; the order of writes is kept."""
    runs: list[tuple[int, list[int]]] = []
    for offset, value in registers.items():
        if runs and runs[-1][0] + len(runs[-1][1]) == offset:
            runs[-1][1].append(value)
        else:
            runs.append((offset, [value]))
    return runs


def _point_name(offset: int) -> str:
    return STORAGE_POINT_NAMES.get(offset, f"model 124 offset {offset}")


def _exception_name(response: ModbusPDU) -> str:
    try:
        return ExcCodes(response.exception_code).name
    except ValueError:
        return f"exception code {response.exception_code}"
