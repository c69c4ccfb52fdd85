"""SunSpec storage control: the register arithmetic (pure) and the Modbus TCP client against a pymodbus
server on 127.0.0.1 (``tests/sunspec_server.py``): discovery, scale factors, write-verify-read, a device
that refuses, one without model 124, one that stops answering and one that disappears."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.battery.sunspec import (
    SunSpecNotSupported,
    SunSpecStorage,
    SunSpecUnavailable,
    SunSpecWriteRefused,
)
from controller.battery.sunspec_models import (
    Battery,
    ModelEntry,
    Storage,
    decode_battery_power_w,
    decode_common,
    decode_float32,
    decode_int16,
    decode_inverter_ac_power_w,
    decode_storage,
    decode_string,
    decode_sunssf,
    decode_uint16,
    encode_int16,
    is_suns_marker,
    release_registers,
    scaled,
    storage_setpoint,
    to_raw,
)
from tests.sunspec_server import FULL_RATE_RAW, SunSpecDeviceModel, SunSpecServer, free_port

TIMEOUT_S = 1.0

# ====================================================================== register arithmetic (pure)


def test_not_implemented_markers_decode_to_none() -> None:
    assert decode_int16(0x8000) is None
    assert decode_uint16(0xFFFF) is None
    assert decode_sunssf(0x8000) is None
    assert decode_float32(0x7FC0, 0x0000) is None  # NaN


def test_int16_is_twos_complement_both_ways() -> None:
    assert decode_int16(0xFFFE) == -2
    assert decode_int16(0x7FFF) == 32767
    assert encode_int16(-5000) == 0xEC78
    assert decode_int16(encode_int16(-5000)) == -5000
    with pytest.raises(ValueError, match="not implemented"):
        encode_int16(-0x8000)  # would read as 'not implemented'


def test_scale_factors_outside_the_sunspec_range_are_not_scale_factors() -> None:
    assert decode_sunssf(0xFFFE) == -2
    assert decode_sunssf(10) == 10
    assert decode_sunssf(11) is None
    assert decode_sunssf(encode_int16(-11)) is None


def test_scaling_and_its_inverse() -> None:
    assert scaled(5725, -2) == pytest.approx(57.25)
    assert scaled(500, 1) == pytest.approx(5000.0)
    assert scaled(42, None) == 42.0  # a missing scale factor means unscaled
    assert scaled(None, -2) is None
    assert to_raw(57.25, -2) == 5725
    assert to_raw(-50.0, -2) == -5000
    assert to_raw(1234.0, 1) == 123


def test_strings_and_the_marker() -> None:
    assert decode_string([0x4162, 0x6300, 0x0000]) == "Abc"
    assert decode_string([0x2020, 0x4142]) == "AB"
    assert is_suns_marker([0x5375, 0x6E53])
    assert not is_suns_marker([0x5375, 0x6E54])
    info = decode_common([0x4D66, 0x7200, *[0] * 14, 0x4D64, *[0] * 15, *[0] * 16, 0x534E, *[0] * 17])
    assert (info.manufacturer, info.model, info.serial) == ("Mfr", "Md", "SN")


def test_model_entry_offsets() -> None:
    entry = ModelEntry(model_id=124, address=40186, length=24)
    assert entry.data_address == 40188
    assert entry.next_address == 40212
    assert entry.covers(23) and not entry.covers(23, 2) and not entry.covers(-1)


def _storage_block(**points: int) -> list[int]:
    data = [0] * Storage.LENGTH
    for name, value in points.items():
        data[getattr(Storage, name)] = value
    return data


def test_decode_storage_scales_and_marks_missing_points() -> None:
    data = _storage_block(
        W_CHA_MAX=500,
        W_CHA_MAX_SF=1,
        STOR_CTL_MOD=3,
        CHA_STATE=4210,
        CHA_STATE_SF=encode_int16(-2),
        CHA_ST=6,
        IN_W_RTE=encode_int16(-2500),
        OUT_W_RTE=2500,
        IN_OUT_W_RTE_SF=encode_int16(-2),
        IN_OUT_W_RTE_RVRT_TMS=300,
        CHA_GRI_SET=0xFFFF,
    )
    controls = decode_storage(data)
    assert controls.w_cha_max_w == pytest.approx(5000.0)
    assert controls.soc_percent == pytest.approx(42.10)
    assert controls.charge_status == "holding"
    assert controls.in_w_rte_percent == pytest.approx(-25.0)
    assert controls.out_w_rte_percent == pytest.approx(25.0)
    assert controls.revert_timeout_s == 300
    assert controls.grid_charging is None  # 0xFFFF: not implemented
    assert controls.stor_ctl_mod == 3
    missing = decode_storage(_storage_block(W_CHA_MAX=0xFFFF, CHA_STATE=0xFFFF))
    assert missing.w_cha_max_w is None and missing.soc_percent is None
    with pytest.raises(ValueError, match="24 registers"):
        decode_storage([0] * 10)


def test_setpoint_charge_is_a_window_closed_on_one_power() -> None:
    setpoint = storage_setpoint(2500.0, w_cha_max_w=5000.0, in_out_w_rte_sf=-2, revert_timeout_s=300)
    assert setpoint.registers == {
        Storage.IN_OUT_W_RTE_RVRT_TMS: 300,
        Storage.OUT_W_RTE: encode_int16(-5000),  # a minimum charge of 50 %
        Storage.IN_W_RTE: 5000,  # a maximum charge of 50 %
        Storage.STOR_CTL_MOD: 3,
    }
    assert list(setpoint.registers)[-1] == Storage.STOR_CTL_MOD  # the mode goes last
    assert setpoint.power_w == pytest.approx(2500.0)
    assert not setpoint.clamped


def test_setpoint_discharge_hold_clamp_and_grid_charging() -> None:
    discharge = storage_setpoint(-1000.0, w_cha_max_w=4000.0, in_out_w_rte_sf=0, revert_timeout_s=60)
    assert discharge.registers[Storage.IN_W_RTE] == encode_int16(-25)
    assert discharge.registers[Storage.OUT_W_RTE] == 25
    hold = storage_setpoint(0.0, w_cha_max_w=4000.0, in_out_w_rte_sf=-2, revert_timeout_s=60)
    assert hold.registers[Storage.IN_W_RTE] == 0 and hold.registers[Storage.OUT_W_RTE] == 0
    assert hold.registers[Storage.STOR_CTL_MOD] == 3
    clamped = storage_setpoint(9000.0, w_cha_max_w=4000.0, in_out_w_rte_sf=-2, revert_timeout_s=60)
    assert clamped.clamped and clamped.power_w == pytest.approx(4000.0)
    assert clamped.registers[Storage.IN_W_RTE] == FULL_RATE_RAW
    grid = storage_setpoint(
        100.0, w_cha_max_w=4000.0, in_out_w_rte_sf=-2, revert_timeout_s=60, grid_charging=True
    )
    assert grid.registers[Storage.CHA_GRI_SET] == 1
    pv_only = storage_setpoint(
        100.0, w_cha_max_w=4000.0, in_out_w_rte_sf=-2, revert_timeout_s=60, grid_charging=False
    )
    assert pv_only.registers[Storage.CHA_GRI_SET] == 0
    assert release_registers() == {Storage.STOR_CTL_MOD: 0}


def test_setpoint_rejects_what_cannot_be_written() -> None:
    with pytest.raises(ValueError, match="WChaMax"):
        storage_setpoint(100.0, w_cha_max_w=0.0, in_out_w_rte_sf=0, revert_timeout_s=60)
    with pytest.raises(ValueError, match="revert timeout"):
        storage_setpoint(100.0, w_cha_max_w=5000.0, in_out_w_rte_sf=0, revert_timeout_s=0)


@given(
    power_w=st.floats(min_value=-6000, max_value=6000),
    w_cha_max_w=st.floats(min_value=500, max_value=30000),
    sf=st.sampled_from([None, -2, -1, 0]),
)
def test_setpoint_asks_for_the_power_within_one_rate_step(
    power_w: float, w_cha_max_w: float, sf: int | None
) -> None:
    setpoint = storage_setpoint(power_w, w_cha_max_w=w_cha_max_w, in_out_w_rte_sf=sf, revert_timeout_s=120)
    wanted_w = max(-w_cha_max_w, min(w_cha_max_w, power_w))
    step_w = 10.0 ** (sf or 0) / 100.0 * w_cha_max_w
    assert abs(setpoint.power_w - wanted_w) <= step_w / 2 + 1e-6
    in_raw = decode_int16(setpoint.registers[Storage.IN_W_RTE])
    out_raw = decode_int16(setpoint.registers[Storage.OUT_W_RTE])
    assert in_raw is not None and out_raw is not None and in_raw == -out_raw


def test_battery_and_inverter_power_signs() -> None:
    data = [0] * Battery.LENGTH
    data[Battery.W] = 800  # 802: out of the battery is positive
    assert decode_battery_power_w(data) == pytest.approx(-800.0)
    data[Battery.W] = encode_int16(-120)
    data[Battery.W_SF] = 1
    assert decode_battery_power_w(data) == pytest.approx(1200.0)
    data[Battery.W] = 0x8000
    assert decode_battery_power_w(data) is None
    assert decode_inverter_ac_power_w(103, [230, 1]) == pytest.approx(2300.0)
    assert decode_inverter_ac_power_w(113, [0x44FA, 0x0000]) == pytest.approx(2000.0)
    assert math.isclose(decode_inverter_ac_power_w(103, [encode_int16(-5), 0]) or 0.0, -5.0)


# ====================================================================== the client against a device


async def _connected(server: SunSpecServer, *, ac_power_is_battery: bool = False) -> SunSpecStorage:
    storage = SunSpecStorage(
        "127.0.0.1",
        server.port,
        server.model.unit_id,
        timeout_s=TIMEOUT_S,
        ac_power_is_battery=ac_power_is_battery,
    )
    await storage.connect()
    return storage


async def test_discovery_finds_the_models_and_their_addresses() -> None:
    async with SunSpecServer() as server:
        storage = await _connected(server)
        device = storage.device
        assert device is not None
        assert device.base_address == 40000
        assert [entry.model_id for entry in device.models] == [1, 802, 103, 124]
        assert device.storage.data_address == server.addresses[124]
        battery = device.model(802)
        assert battery is not None and battery.data_address == server.addresses[802]
        assert device.model(113) is None
        assert (device.info.manufacturer, device.info.model, device.info.serial) == (
            "Example Power",
            "HybridStore 10",
            "SN-4711",
        )
        assert device.power_source == "model 802 W"
        await storage.close()


@pytest.mark.parametrize("base_address", [0, 50000])
async def test_discovery_tries_the_other_base_addresses(base_address: int) -> None:
    async with SunSpecServer(SunSpecDeviceModel(base_address=base_address)) as server:
        storage = await _connected(server)
        assert storage.device is not None and storage.device.base_address == base_address
        assert (await storage.read()).soc_percent == pytest.approx(57.25)
        await storage.close()


async def test_a_device_without_a_sunspec_map_is_not_supported() -> None:
    async with SunSpecServer(SunSpecDeviceModel(base_address=30000)) as server:
        with pytest.raises(SunSpecNotSupported, match="'SunS' not found at 40000, 0, 50000"):
            await _connected(server)


async def test_read_applies_the_scale_factors_and_the_sign() -> None:
    async with SunSpecServer() as server:
        storage = await _connected(server)
        reading = await storage.read()
        assert reading.soc_percent == pytest.approx(57.25)  # ChaState 5725, ChaState_SF -2
        assert reading.power_w == pytest.approx(-800.0)  # 802 W +800 out of the battery: discharging
        assert reading.inverter_ac_power_w == pytest.approx(2300.0)  # 103 W 230, W_SF 1: PV 1500 + 800
        assert reading.charge_status == "discharging"
        assert not reading.controlled
        await storage.close()


async def test_without_model_802_the_power_is_none_and_the_reading_says_what_it_read() -> None:
    async with SunSpecServer(SunSpecDeviceModel(with_battery_model=False)) as server:
        storage = await _connected(server)
        reading = await storage.read()
        assert reading.power_w is None
        assert reading.power_source == "none"
        assert reading.inverter_ac_power_w == pytest.approx(2300.0)  # PV and battery: not the battery's
        assert reading.soc_percent == pytest.approx(57.25)
        await storage.close()


async def test_a_storage_inverters_ac_power_is_the_battery_power_when_the_caller_says_so() -> None:
    model = SunSpecDeviceModel(with_battery_model=False, inverter_pv_w=0.0)
    async with SunSpecServer(model) as server:
        storage = await _connected(server, ac_power_is_battery=True)
        reading = await storage.read()
        assert reading.power_source == "model 103 W (AC of a storage inverter)"
        assert reading.power_w == pytest.approx(-800.0)
        await storage.close()


async def test_set_power_writes_verifies_and_the_battery_follows() -> None:
    async with SunSpecServer() as server:
        storage = await _connected(server)
        setpoint = await storage.set_power(2500.0, 300, grid_charging=True)
        assert setpoint.power_w == pytest.approx(2500.0)
        # the device's own registers
        assert server.storage(Storage.STOR_CTL_MOD) == 3
        assert server.storage(Storage.IN_W_RTE) == 5000  # 50.00 % of WChaMax 5000 W
        assert server.storage(Storage.OUT_W_RTE) == encode_int16(-5000)
        assert server.storage(Storage.IN_OUT_W_RTE_RVRT_TMS) == 300
        assert server.storage(Storage.CHA_GRI_SET) == 1
        # the mode was the last write: the rates and the timeout were in place when it took effect
        assert server.writes[-1] == (server.addresses[124] + Storage.STOR_CTL_MOD, [3])
        reading = await storage.read()
        assert reading.power_w == pytest.approx(2500.0)
        assert reading.controlled and reading.charge_status == "charging"

        await storage.set_power(-1500.0, 300)
        assert server.storage(Storage.IN_W_RTE) == encode_int16(-3000)
        assert server.storage(Storage.CHA_GRI_SET) == 1  # not asked: left as it was
        assert (await storage.read()).power_w == pytest.approx(-1500.0)

        await storage.set_power(0.0, 300)  # hold
        assert server.storage(Storage.IN_W_RTE) == 0 and server.storage(Storage.OUT_W_RTE) == 0
        assert server.storage(Storage.STOR_CTL_MOD) == 3
        hold = await storage.read()
        assert hold.power_w == pytest.approx(0.0) and hold.charge_status == "holding"
        await storage.close()


async def test_a_setpoint_beyond_wchamax_is_clamped_to_it() -> None:
    async with SunSpecServer() as server:
        storage = await _connected(server)
        setpoint = await storage.set_power(8000.0, 300)
        assert setpoint.clamped and setpoint.power_w == pytest.approx(5000.0)
        assert server.storage(Storage.IN_W_RTE) == FULL_RATE_RAW
        assert (await storage.read()).power_w == pytest.approx(5000.0)
        await storage.close()


async def test_release_clears_the_control_mode() -> None:
    async with SunSpecServer() as server:
        storage = await _connected(server)
        await storage.set_power(2000.0, 300)
        assert server.storage(Storage.STOR_CTL_MOD) == 3
        await storage.release()
        assert server.storage(Storage.STOR_CTL_MOD) == 0
        reading = await storage.read()
        assert not reading.controlled
        assert reading.power_w == pytest.approx(-800.0)  # back to its own self-consumption
        await storage.close()


async def test_the_revert_timeout_is_written_and_the_device_reverts_after_it() -> None:
    now_s = [1000.0]
    async with SunSpecServer(SunSpecDeviceModel(clock=lambda: now_s[0])) as server:
        storage = await _connected(server)
        await storage.set_power(2000.0, 60)
        assert server.storage(Storage.IN_OUT_W_RTE_RVRT_TMS) == 60
        now_s[0] += 59.0
        reading = await storage.read()
        assert reading.controlled and reading.power_w == pytest.approx(2000.0)
        assert reading.revert_timeout_s == 60
        now_s[0] += 2.0  # no new write for 61 s: the controller is gone as far as the device knows
        reverted = await storage.read()
        assert not reverted.controlled
        assert reverted.power_w == pytest.approx(-800.0)
        await storage.close()


async def test_a_refused_write_raises_with_what_was_refused() -> None:
    async with SunSpecServer(SunSpecDeviceModel(refuse_storage_writes=True)) as server:
        storage = await _connected(server)
        with pytest.raises(SunSpecWriteRefused, match=r"InOutWRte_RvrtTms = \[300\]: ILLEGAL_VALUE"):
            await storage.set_power(1000.0, 300)
        assert server.refused
        assert server.storage(Storage.STOR_CTL_MOD) == 0  # nothing took effect
        with pytest.raises(SunSpecWriteRefused, match="StorCtl_Mod"):
            await storage.release()
        # a refusal is an answer: the connection stays usable
        assert (await storage.read()).soc_percent == pytest.approx(57.25)
        await storage.close()


async def test_a_write_the_device_does_not_keep_is_refused_on_read_back() -> None:
    async with SunSpecServer(SunSpecDeviceModel(ignore_storage_writes=True)) as server:
        storage = await _connected(server)
        with pytest.raises(SunSpecWriteRefused, match="reads back"):
            await storage.set_power(1000.0, 300)
        assert server.writes  # the writes were acknowledged
        assert server.storage(Storage.STOR_CTL_MOD) == 0
        await storage.close()


async def test_a_device_without_model_124_is_not_supported() -> None:
    async with SunSpecServer(SunSpecDeviceModel(with_storage=False)) as server:
        storage = SunSpecStorage("127.0.0.1", server.port, 1, timeout_s=TIMEOUT_S)
        with pytest.raises(
            SunSpecNotSupported,
            match=r"no SunSpec storage control \(model 124\) on this device; use control: mqtt or observe",
        ):
            await storage.connect()
        assert storage.device is None
        with pytest.raises(SunSpecUnavailable, match="not connected"):
            await storage.read()


async def test_a_device_that_disappears_raises_unavailable_within_the_timeout() -> None:
    server = await SunSpecServer().start()
    storage = await _connected(server)
    await storage.read()
    await server.stop()
    started = time.monotonic()
    with pytest.raises(SunSpecUnavailable):
        await storage.read()
    with pytest.raises(SunSpecUnavailable):
        await storage.set_power(1000.0, 300)
    with pytest.raises(SunSpecUnavailable, match="no Modbus TCP connection"):
        await storage.connect()
    assert time.monotonic() - started < 3 * TIMEOUT_S + 0.5

    # the same device back on the same port: connect again and carry on
    async with SunSpecServer(port=server.port) as back:
        await storage.connect()
        await storage.set_power(1000.0, 300)
        assert back.storage(Storage.STOR_CTL_MOD) == 3
        await storage.close()


async def test_a_device_that_stops_answering_raises_unavailable_after_the_timeout() -> None:
    async with SunSpecServer() as server:
        storage = await _connected(server)
        server.freeze()
        started = time.monotonic()
        with pytest.raises(SunSpecUnavailable, match="no answer within 1 s"):
            await storage.set_power(1000.0, 300)
        elapsed_s = time.monotonic() - started
        assert TIMEOUT_S * 0.9 <= elapsed_s < TIMEOUT_S + 0.5
        with pytest.raises(SunSpecUnavailable, match="not connected"):
            await storage.read()  # the client dropped the silent connection: no second wait
        await storage.close()


async def test_no_device_at_all_is_unavailable_at_connect() -> None:
    storage = SunSpecStorage("127.0.0.1", free_port(), 1, timeout_s=TIMEOUT_S)
    started = time.monotonic()
    with pytest.raises(SunSpecUnavailable, match="no Modbus TCP connection"):
        await storage.connect()
    assert time.monotonic() - started < TIMEOUT_S + 0.5


async def test_set_power_rejects_a_non_finite_power_before_writing() -> None:
    async with SunSpecServer() as server:
        storage = await _connected(server)
        with pytest.raises(ValueError, match="finite"):
            await storage.set_power(math.nan, 300)
        assert not server.writes
        await storage.close()
