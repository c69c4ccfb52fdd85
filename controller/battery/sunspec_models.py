"""SunSpec register maps and arithmetic for home batteries: pure, no I/O.

A SunSpec device starts its map with the marker ``SunS`` (two registers) at one of a few base
addresses, then a chain of models, each ``ID, L`` (two registers) followed by ``L`` data registers,
ended by the ID ``0xFFFF``. The offsets below count from the first data register of a model (the one
after ``L``), as in the SunSpec model definitions (``sunspec/models``, ``json/model_<id>.json``).

Values: ``value = raw * 10 ** sf`` with a scale factor register (``sunssf``, -10..10). A point a device
does not implement reads as ``0x8000`` (int16, sunssf), ``0xFFFF`` (uint16, enum16, bitfield16),
``0`` (acc16/acc32) or NaN (float32); those decode to ``None``.

Signs: the project's battery power is + charging / - discharging (DESIGN.md). Model 802's ``W`` and an
inverter's AC ``W`` count power out of the battery (the inverter) as positive, so both are negated.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "BASE_ADDRESSES",
    "BATTERY_MODEL",
    "CHARGE_STATUS",
    "COMMON_MODEL",
    "END_MODEL_ID",
    "INVERTER_FLOAT_MODELS",
    "INVERTER_INT_MODELS",
    "MAX_MODELS",
    "STORAGE_MODEL",
    "STORAGE_POINT_NAMES",
    "STOR_CTL_BOTH",
    "SUNS_MARKER",
    "Battery",
    "CommonInfo",
    "ModelEntry",
    "Storage",
    "StorageControls",
    "StorageSetpoint",
    "decode_battery_power_w",
    "decode_battery_soc_percent",
    "decode_common",
    "decode_float32",
    "decode_int16",
    "decode_inverter_ac_power_w",
    "decode_storage",
    "decode_string",
    "decode_sunssf",
    "decode_uint16",
    "encode_int16",
    "inverter_power_span",
    "is_suns_marker",
    "release_registers",
    "scaled",
    "storage_setpoint",
    "to_raw",
]

SUNS_MARKER: Final = (0x5375, 0x6E53)
"""``SunS`` in two big-endian registers."""
BASE_ADDRESSES: Final = (40000, 0, 50000)
"""Where devices put the marker, the usual first (holding registers, 0-based protocol addresses)."""
END_MODEL_ID: Final = 0xFFFF
MAX_MODELS: Final = 64
"""A model chain longer than this is a broken map, not a device."""

COMMON_MODEL: Final = 1
STORAGE_MODEL: Final = 124
BATTERY_MODEL: Final = 802
INVERTER_INT_MODELS: Final = (101, 102, 103)
"""Single-, split- and three-phase inverter, integer + scale factor: the same layout."""
INVERTER_FLOAT_MODELS: Final = (111, 112, 113)
"""The same three with float32 points."""

NOT_IMPLEMENTED_INT16: Final = 0x8000
NOT_IMPLEMENTED_UINT16: Final = 0xFFFF
SUNSSF_RANGE: Final = range(-10, 11)

CHARGE_STATUS: Final = {
    1: "off",
    2: "empty",
    3: "discharging",
    4: "charging",
    5: "full",
    6: "holding",
    7: "testing",
}
"""``ChaSt`` of models 124 and 802."""


# ---------------------------------------------------------------- register arithmetic


def decode_uint16(raw: int) -> int | None:
    return None if raw == NOT_IMPLEMENTED_UINT16 else raw


def decode_int16(raw: int) -> int | None:
    if raw == NOT_IMPLEMENTED_INT16:
        return None
    return raw - 0x10000 if raw & 0x8000 else raw


def encode_int16(value: int) -> int:
    """A signed value as the register the device expects (two's complement)."""
    if not -0x7FFF <= value <= 0x7FFF:
        raise ValueError(f"{value} does not fit an int16 register (0x8000 means 'not implemented')")
    return value & 0xFFFF


def decode_sunssf(raw: int) -> int | None:
    """A scale factor; ``None`` when not implemented or outside the range SunSpec allows."""
    factor = decode_int16(raw)
    return factor if factor is not None and factor in SUNSSF_RANGE else None


def scaled(raw_value: int | None, scale_factor: int | None) -> float | None:
    """``raw * 10 ** sf``; a missing scale factor counts as 0 (the point has no scaling)."""
    if raw_value is None:
        return None
    return raw_value * 10.0 ** (scale_factor or 0)


def to_raw(value: float, scale_factor: int | None) -> int:
    """The register count for ``value`` under ``scale_factor`` (rounded to the nearest step)."""
    return round(value / 10.0 ** (scale_factor or 0))


def decode_float32(high: int, low: int) -> float | None:
    value: float = struct.unpack(">f", struct.pack(">HH", high, low))[0]
    return None if math.isnan(value) else value


def decode_string(registers: Sequence[int]) -> str:
    """Two ASCII characters per register, padded with NUL (or spaces)."""
    text = b"".join(struct.pack(">H", register) for register in registers)
    return text.split(b"\0", 1)[0].decode("ascii", errors="replace").strip()


def is_suns_marker(registers: Sequence[int]) -> bool:
    return tuple(registers[:2]) == SUNS_MARKER


# ---------------------------------------------------------------- the model list


@dataclass(frozen=True, slots=True)
class ModelEntry:
    model_id: int
    address: int
    """Address of the model's ``ID`` register."""
    length: int
    """``L``: data registers after ``ID`` and ``L``."""

    @property
    def data_address(self) -> int:
        """Address of offset 0, the first data register."""
        return self.address + 2

    @property
    def next_address(self) -> int:
        """Where the next model's ``ID`` sits."""
        return self.address + 2 + self.length

    def covers(self, offset: int, count: int = 1) -> bool:
        return offset >= 0 and offset + count <= self.length


# ---------------------------------------------------------------- model 1: common


@dataclass(frozen=True, slots=True)
class CommonInfo:
    manufacturer: str
    model: str
    serial: str


COMMON_MN: Final = 0
COMMON_MD: Final = 16
COMMON_SN: Final = 48
COMMON_LENGTH: Final = 66
"""Mn, Md (16 registers each), Opt, Vr (8 each), SN (16), DA, Pad."""


def decode_common(data: Sequence[int]) -> CommonInfo:
    return CommonInfo(
        manufacturer=decode_string(data[COMMON_MN : COMMON_MN + 16]),
        model=decode_string(data[COMMON_MD : COMMON_MD + 16]),
        serial=decode_string(data[COMMON_SN : COMMON_SN + 16]) if len(data) >= COMMON_SN + 16 else "",
    )


# ---------------------------------------------------------------- model 124: basic storage controls


class Storage:
    """Offsets of model 124's points (``json/model_124.json``)."""

    W_CHA_MAX: Final = 0  # uint16, W, WChaMax_SF: the reference of InWRte and OutWRte
    W_CHA_GRA: Final = 1
    W_DIS_CHA_GRA: Final = 2
    STOR_CTL_MOD: Final = 3  # bitfield16: bit 0 charge limit active, bit 1 discharge limit active
    VA_CHA_MAX: Final = 4
    MIN_RSV_PCT: Final = 5
    CHA_STATE: Final = 6  # uint16, % of capacity, ChaState_SF
    STOR_AVAL: Final = 7
    IN_BAT_V: Final = 8
    CHA_ST: Final = 9  # enum16
    OUT_W_RTE: Final = 10  # int16, % of the maximum discharge rate, InOutWRte_SF
    IN_W_RTE: Final = 11  # int16, % of WChaMax, InOutWRte_SF
    IN_OUT_W_RTE_WIN_TMS: Final = 12
    IN_OUT_W_RTE_RVRT_TMS: Final = 13  # uint16, s: the rates revert this long after the last write
    IN_OUT_W_RTE_RMP_TMS: Final = 14
    CHA_GRI_SET: Final = 15  # enum16: 0 PV only, 1 grid charging allowed
    W_CHA_MAX_SF: Final = 16
    W_CHA_DIS_CHA_GRA_SF: Final = 17
    VA_CHA_MAX_SF: Final = 18
    MIN_RSV_PCT_SF: Final = 19
    CHA_STATE_SF: Final = 20
    STOR_AVAL_SF: Final = 21
    IN_BAT_V_SF: Final = 22
    IN_OUT_W_RTE_SF: Final = 23
    LENGTH: Final = 24


STORAGE_POINT_NAMES: Final = {
    Storage.STOR_CTL_MOD: "StorCtl_Mod",
    Storage.OUT_W_RTE: "OutWRte",
    Storage.IN_W_RTE: "InWRte",
    Storage.IN_OUT_W_RTE_RVRT_TMS: "InOutWRte_RvrtTms",
    Storage.CHA_GRI_SET: "ChaGriSet",
}
"""The model 124 points this client writes, by offset (for messages)."""

STOR_CTL_CHARGE: Final = 0b01
STOR_CTL_DISCHARGE: Final = 0b10
STOR_CTL_BOTH: Final = STOR_CTL_CHARGE | STOR_CTL_DISCHARGE
CHA_GRI_PV: Final = 0
CHA_GRI_GRID: Final = 1


@dataclass(frozen=True, slots=True)
class StorageControls:
    """Model 124 as read, scaled; ``None`` where the device does not implement a point."""

    w_cha_max_w: float | None
    stor_ctl_mod: int | None
    soc_percent: float | None
    charge_status: str | None
    in_w_rte_percent: float | None
    out_w_rte_percent: float | None
    revert_timeout_s: int | None
    grid_charging: bool | None
    in_out_w_rte_sf: int | None
    """Kept raw: the setpoint is written in this scale."""


def decode_storage(data: Sequence[int]) -> StorageControls:
    if len(data) < Storage.LENGTH:
        raise ValueError(f"model 124 needs {Storage.LENGTH} registers, got {len(data)}")
    rate_sf = decode_sunssf(data[Storage.IN_OUT_W_RTE_SF])
    grid = decode_uint16(data[Storage.CHA_GRI_SET])
    status = decode_uint16(data[Storage.CHA_ST])
    return StorageControls(
        w_cha_max_w=scaled(decode_uint16(data[Storage.W_CHA_MAX]), decode_sunssf(data[Storage.W_CHA_MAX_SF])),
        stor_ctl_mod=decode_uint16(data[Storage.STOR_CTL_MOD]),
        soc_percent=scaled(decode_uint16(data[Storage.CHA_STATE]), decode_sunssf(data[Storage.CHA_STATE_SF])),
        charge_status=None if status is None else CHARGE_STATUS.get(status, f"code {status}"),
        in_w_rte_percent=scaled(decode_int16(data[Storage.IN_W_RTE]), rate_sf),
        out_w_rte_percent=scaled(decode_int16(data[Storage.OUT_W_RTE]), rate_sf),
        revert_timeout_s=decode_uint16(data[Storage.IN_OUT_W_RTE_RVRT_TMS]),
        grid_charging=None if grid is None else grid == CHA_GRI_GRID,
        in_out_w_rte_sf=rate_sf,
    )


@dataclass(frozen=True, slots=True)
class StorageSetpoint:
    """What ``set_power`` writes into model 124, as register values by offset, and what it means."""

    registers: dict[int, int]
    """Offset -> raw register, in the order to write them (the control mode last)."""
    power_w: float
    """The power the written rates ask for (after rounding to the rate's scale and clamping)."""
    clamped: bool
    """The request was beyond ``WChaMax`` and was limited to it."""


def storage_setpoint(
    power_w: float,
    *,
    w_cha_max_w: float,
    in_out_w_rte_sf: int | None,
    revert_timeout_s: int,
    grid_charging: bool | None = None,
) -> StorageSetpoint:
    """Model 124 registers that hold the battery at ``power_w`` (+ charge / - discharge).

    Both limits active (``StorCtl_Mod`` = 3) with ``InWRte`` = x and ``OutWRte`` = -x, x = the power in
    percent of ``WChaMax``: the charge limit and the (negated) discharge limit meet at one point, so
    the battery runs at that power whatever its own mode would do. A negative ``OutWRte`` is a minimum
    charge and a negative ``InWRte`` a minimum discharge; hold is both 0. ``WChaMax`` is the
    reference of both rates: model 124 has no separate maximum discharge power (``WDisChaMax``).
    """
    if not w_cha_max_w > 0:
        raise ValueError(f"WChaMax {w_cha_max_w} W cannot be the reference of a rate")
    if not 1 <= revert_timeout_s <= 0xFFFE:
        raise ValueError(f"revert timeout {revert_timeout_s} s is outside 1..65534")
    percent = 100.0 * power_w / w_cha_max_w
    clamped = abs(percent) > 100.0
    percent = max(-100.0, min(100.0, percent))
    raw_rate = to_raw(percent, in_out_w_rte_sf)
    registers = {
        Storage.IN_OUT_W_RTE_RVRT_TMS: revert_timeout_s,
        Storage.OUT_W_RTE: encode_int16(-raw_rate),
        Storage.IN_W_RTE: encode_int16(raw_rate),
    }
    if grid_charging is not None:
        registers[Storage.CHA_GRI_SET] = CHA_GRI_GRID if grid_charging else CHA_GRI_PV
    registers[Storage.STOR_CTL_MOD] = STOR_CTL_BOTH
    achieved = scaled(raw_rate, in_out_w_rte_sf)
    assert achieved is not None
    return StorageSetpoint(registers=registers, power_w=achieved * w_cha_max_w / 100.0, clamped=clamped)


def release_registers() -> dict[int, int]:
    """Back to the device's own mode: no limit active."""
    return {Storage.STOR_CTL_MOD: 0}


# ---------------------------------------------------------------- model 802: battery base


class Battery:
    """Offsets of model 802's points used here (``json/model_802.json``)."""

    SOC: Final = 9  # uint16, %, SoC_SF
    CHA_ST: Final = 14
    W: Final = 45  # int16, W, W_SF: power out of the battery is positive
    SOC_SF: Final = 54
    W_SF: Final = 61
    LENGTH: Final = 62


def decode_battery_power_w(data: Sequence[int]) -> float | None:
    """Model 802 ``W`` in the project's sign (+ charging)."""
    if len(data) < Battery.LENGTH:
        return None
    out_w = scaled(decode_int16(data[Battery.W]), decode_sunssf(data[Battery.W_SF]))
    return None if out_w is None else -out_w


def decode_battery_soc_percent(data: Sequence[int]) -> float | None:
    if len(data) < Battery.LENGTH:
        return None
    return scaled(decode_uint16(data[Battery.SOC]), decode_sunssf(data[Battery.SOC_SF]))


# ---------------------------------------------------------------- models 101-103, 111-113: inverter

INVERTER_INT_W: Final = 12  # int16, W_SF at 13
INVERTER_INT_W_SF: Final = 13
INVERTER_FLOAT_W: Final = 20  # float32, two registers


def inverter_power_span(model_id: int) -> tuple[int, int]:
    """(offset, count) of the registers that carry the inverter's AC power."""
    if model_id in INVERTER_INT_MODELS:
        return INVERTER_INT_W, 2
    if model_id in INVERTER_FLOAT_MODELS:
        return INVERTER_FLOAT_W, 2
    raise ValueError(f"model {model_id} is not an inverter model")


def decode_inverter_ac_power_w(model_id: int, span: Sequence[int]) -> float | None:
    """The inverter's AC output (+ out of the inverter), from the registers of ``inverter_power_span``."""
    if model_id in INVERTER_INT_MODELS:
        return scaled(decode_int16(span[0]), decode_sunssf(span[1]))
    return decode_float32(span[0], span[1])
