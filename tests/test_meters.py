"""Meter payload parsers: every preset with real device payloads, and every way a payload can be bad."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.clock import ManualClock
from controller.config import MeterConfig, MeterFormat, parse_config
from controller.domain import MeterReading
from controller.meters import (
    MAX_METER_PAYLOAD_BYTES,
    FormatParser,
    MeterParser,
    ParsedValue,
    PayloadError,
    find_meter_format,
    make_parser,
    meter_format_names,
    parse_json_path,
    register_meter_format,
    registry,
)
from controller.meters.payload import number
from controller.mqtt import SiteMqttClient

# Captured from devices (Tasmota 13 energy plug, Tasmota SML script, Shelly Pro 3EM fw 1.3, dsmr-reader 5).
TASMOTA_ENERGY = (
    b'{"Time":"2024-06-01T12:00:05","ENERGY":{"TotalStartTime":"2023-01-01T10:00:00","Total":812.345,'
    b'"Yesterday":3.210,"Today":1.234,"Period":4,"Power":245,"ApparentPower":260,"ReactivePower":87,'
    b'"Factor":0.94,"Voltage":231,"Current":1.125}}'
)
TASMOTA_SML = (
    b'{"Time":"2024-06-01T12:00:05","MT631":{"Total_in":12345.6789,"Total_out":2345.1,"Power_curr":-523}}'
)
TASMOTA_TWO_CHANNELS = b'{"Time":"2024-06-01T12:00:05","ENERGY":{"Total":1.0,"Power":[120,35],"Voltage":230}}'
# SML scripts name the phases (OBIS 36.7.0, 56.7.0, 76.7.0) as they like: the Tasmota docs' MT681
# script says Power_p1, others Power_L1 or Power_curr_p1.
TASMOTA_SML_PHASES = (
    b'{"Time":"2024-06-01T12:00:05","SML":{"Total_in":12345.678,"Total_out":4567.89,"Power_curr":1180,'
    b'"Power_p1":1410,"Power_p2":-380,"Power_p3":150,"Meter_id":"0a014954520003504c4c"}}'
)
TASMOTA_SML_PHASES_L = (
    b'{"Time":"2024-06-01T12:00:05","SML":{"Total_in":12345.678,"Total_out":4567.89,"Power_curr":1250,'
    b'"Power_L1":420,"Power_L2":380,"Power_L3":450}}'
)
TASMOTA_SML_PHASES_CURR = (
    b'{"Time":"2024-06-01T12:00:05","SML":{"Total_in":5889.9185,"Total_out":387.3726,"Power_curr":-2270,'
    b'"Volt_p1":231.2,"Volt_p2":230.8,"Volt_p3":232.0,"Amperage_p1":1.1,"Amperage_p2":10.2,"Amperage_p3":0.9,'
    b'"Power_curr_p1":180,"Power_curr_p2":-2350,"Power_curr_p3":-100,"frequency":50}}'
)
# A meter that sends the magnitude per phase: L2 exports 380 W, but the phases add up to 1940 W.
TASMOTA_SML_MAGNITUDES = (
    b'{"Time":"2024-06-01T12:00:05","SML":{"Total_in":12345.678,"Power_curr":1180,'
    b'"Power_p1":1410,"Power_p2":380,"Power_p3":150}}'
)
SHELLY_EM0 = (
    b'{"id":0,"a_current":4.029,"a_voltage":236.1,"a_act_power":951.2,"a_aprt_power":951.9,"a_pf":1.00,'
    b'"a_freq":50.0,"b_current":4.027,"b_voltage":236.201,"b_act_power":-951.1,"b_aprt_power":951.8,'
    b'"b_pf":1.00,"b_freq":50.0,"c_current":3.03,"c_voltage":236.097,"c_act_power":715.1,'
    b'"c_aprt_power":715.9,"c_pf":1.00,"c_freq":50.0,"n_current":null,"total_current":11.087,'
    b'"total_act_power":715.175,"total_aprt_power":2619.726,"user_calibrated_phase":[]}'
)
DSMR_JSON = (
    b'{"id":4711,"timestamp":"2024-06-01T10:00:05Z","electricity_delivered_1":"1234.567",'
    b'"electricity_returned_1":"345.678","electricity_delivered_2":"2345.678","electricity_returned_2":"456.789",'
    b'"electricity_currently_delivered":"0.000","electricity_currently_returned":"1.234",'
    b'"phase_currently_delivered_l1":"0.000","phase_currently_returned_l1":"1.234"}'
)
DSMR_JSON_PHASES = (
    b'{"id":4712,"timestamp":"2021-05-07T08:45:29Z","electricity_delivered_1":"3492.813",'
    b'"electricity_returned_1":"1309.776","electricity_delivered_2":"4460.509","electricity_returned_2":"1309.776",'
    b'"electricity_currently_delivered":"0.243","electricity_currently_returned":"0.000",'
    b'"phase_currently_delivered_l1":"0.209","phase_currently_delivered_l2":"0.000",'
    b'"phase_currently_delivered_l3":"0.611","extra_device_timestamp":"2021-05-07T10:45:29+02:00",'
    b'"extra_device_delivered":"3492.813","phase_currently_returned_l1":"0.000",'
    b'"phase_currently_returned_l2":"0.577","phase_currently_returned_l3":"0.000",'
    b'"phase_voltage_l1":"236.5","phase_voltage_l2":"236.7","phase_voltage_l3":"238.4",'
    b'"phase_power_current_l1":1,"phase_power_current_l2":3,"phase_power_current_l3":3}'
)
# A single-phase meter: dsmr-reader sends null for the phases it does not have.
DSMR_JSON_ONE_PHASE = (
    b'{"id":4713,"timestamp":"2020-10-24T20:00:00Z","electricity_currently_delivered":"0000.43",'
    b'"electricity_currently_returned":"0000.00","phase_currently_delivered_l1":"0000.43",'
    b'"phase_currently_delivered_l2":null,"phase_currently_delivered_l3":null,'
    b'"phase_currently_returned_l1":"0000.00","phase_currently_returned_l2":null,"phase_currently_returned_l3":null}'
)


def meter(**kw: Any) -> MeterConfig:
    base: dict[str, Any] = {"id": "m", "role": "grid", "topic": "t"}
    base.update(kw)
    return MeterConfig.model_validate(base)


def parse(m: MeterConfig, payload: bytes, topic: str | None = None) -> float:
    parsed = make_parser(m).parse(topic or m.topic, payload)
    assert parsed is not None
    return parsed.value


def test_tasmota_energy_power() -> None:
    assert parse(meter(format="tasmota", role="pv"), TASMOTA_ENERGY) == 245.0


def test_tasmota_sml_power_curr_is_signed() -> None:
    assert parse(meter(format="tasmota"), TASMOTA_SML) == -523.0


def test_tasmota_multi_channel_power_is_summed() -> None:
    assert parse(meter(format="tasmota", role="home"), TASMOTA_TWO_CHANNELS) == 155.0


def phases(m: MeterConfig, payload: bytes, topic: str | None = None) -> tuple[float, ...]:
    parsed = make_parser(m).parse(topic or m.topic, payload)
    assert parsed is not None
    return parsed.phases_w


@pytest.mark.parametrize(
    ("payload", "total", "expected"),
    [
        (TASMOTA_SML_PHASES, 1180.0, (1410.0, -380.0, 150.0)),
        (TASMOTA_SML_PHASES_L, 1250.0, (420.0, 380.0, 450.0)),
        (TASMOTA_SML_PHASES_CURR, -2270.0, (180.0, -2350.0, -100.0)),
    ],
)
def test_tasmota_sml_phases_next_to_power_curr(
    payload: bytes, total: float, expected: tuple[float, ...]
) -> None:
    parsed = make_parser(meter(format="tasmota")).parse("t", payload)
    assert parsed is not None
    assert parsed.value == total and parsed.phases_w == expected


def test_tasmota_sml_phases_follow_scale_and_sign() -> None:
    m = meter(format="tasmota", sign=-1, scale=2)
    parsed = make_parser(m).parse("t", TASMOTA_SML_PHASES)
    assert parsed is not None
    assert parsed.value == -2360.0 and parsed.phases_w == (-2820.0, 760.0, -300.0)


def test_tasmota_phases_that_are_not_signed_powers_are_not_used() -> None:
    assert parse(meter(format="tasmota"), TASMOTA_SML_MAGNITUDES) == 1180.0  # the total still counts
    assert phases(meter(format="tasmota"), TASMOTA_SML_MAGNITUDES) == ()
    two = b'{"SML":{"Power_curr":500,"Power_p1":200,"Power_p2":300}}'
    assert phases(meter(format="tasmota"), two) == ()
    twice = b'{"SML":{"Power_curr":600,"Power_p1":200,"Power_L1":200,"Power_p2":200,"Power_p3":200}}'
    assert phases(meter(format="tasmota"), twice) == ()  # two names for L1
    assert phases(meter(format="tasmota"), TASMOTA_TWO_CHANNELS) == ()  # channels, not phases
    assert phases(meter(format="tasmota", json_path="SML.Power_curr"), TASMOTA_SML_PHASES) == ()
    with pytest.raises(PayloadError, match=r"SML\.Power_p2"):
        make_parser(meter(format="tasmota")).parse(
            "t", b'{"SML":{"Power_curr":500,"Power_p1":200,"Power_p2":"n/a","Power_p3":0}}'
        )


def test_tasmota_json_path_override_and_sign() -> None:
    m = meter(format="tasmota", json_path="MT631.Total_in", sign=-1)
    assert parse(m, TASMOTA_SML) == pytest.approx(-12345.6789)


def test_shelly_total_and_phases() -> None:
    parsed = make_parser(meter(format="shelly_pro3em")).parse("t", SHELLY_EM0)
    assert parsed is not None
    assert parsed.value == pytest.approx(715.175)
    assert parsed.phases_w == pytest.approx((951.2, -951.1, 715.1))


def test_shelly_sign_flips_total_and_phases() -> None:
    parsed = make_parser(meter(format="shelly_pro3em", sign=-1)).parse("t", SHELLY_EM0)
    assert parsed is not None
    assert parsed.value == pytest.approx(-715.175)
    assert parsed.phases_w[0] == pytest.approx(-951.2)


def test_shelly_without_total_sums_phases() -> None:
    payload = json.dumps({"a_act_power": 100, "b_act_power": 200.5, "c_act_power": -50}).encode()
    assert parse(meter(format="shelly_pro3em"), payload) == pytest.approx(250.5)


# The same device with RPC notifications over MQTT (``rpc_ntf``), on ``<prefix>/events/rpc``.
SHELLY_FULL_STATUS = (
    b'{"src":"shellypro3em-c8f09e8871a4","dst":"shellypro3em-c8f09e8871a4/events","method":"NotifyFullStatus",'
    b'"params":{"ts":1718793605.21,"ble":{},"cloud":{"connected":true},"em:0":' + SHELLY_EM0 + b","
    b'"emdata:0":{"id":0,"a_total_act_energy":5210.66,"a_total_act_ret_energy":301.2,'
    b'"total_act":14110.93,"total_act_ret":1501.11},"mqtt":{"connected":true},'
    b'"sys":{"mac":"C8F09E8871A4","restart_required":false,"uptime":8123},'
    b'"temperature:0":{"id":0,"tC":44.1,"tF":111.4}}}'
)
SHELLY_NOTIFY_TOTAL = (
    b'{"src":"shellypro3em-c8f09e8871a4","dst":"shellypro3em-c8f09e8871a4/events","method":"NotifyStatus",'
    b'"params":{"ts":1718793606.05,"em:0":{"id":0,"a_act_power":-1210.4,"a_aprt_power":1234.0,'
    b'"a_current":5.3,"total_act_power":-1446.4,"total_aprt_power":2540.1,"total_current":11.2}}}'
)
SHELLY_NOTIFY_ONE_PHASE = (
    b'{"src":"shellypro3em-c8f09e8871a4","dst":"shellypro3em-c8f09e8871a4/events","method":"NotifyStatus",'
    b'"params":{"ts":1718793607.11,"em:0":{"id":0,"b_act_power":400.0,"b_current":1.8}}}'
)
SHELLY_NOTIFY_VOLTAGE_ONLY = (
    b'{"src":"shellypro3em-c8f09e8871a4","dst":"shellypro3em-c8f09e8871a4/events","method":"NotifyStatus",'
    b'"params":{"ts":1718793608.01,"em:0":{"id":0,"a_voltage":236.4}}}'
)
SHELLY_NOTIFY_SYS = (
    b'{"src":"shellypro3em-c8f09e8871a4","dst":"shellypro3em-c8f09e8871a4/events","method":"NotifyStatus",'
    b'"params":{"ts":1718793609.0,"sys":{"available_updates":{"stable":{"version":"1.4.4"}}}}}'
)
SHELLY_NOTIFY_EVENT = (
    b'{"src":"shellypro3em-c8f09e8871a4","dst":"shellypro3em-c8f09e8871a4/events","method":"NotifyEvent",'
    b'"params":{"ts":1718793610.0,"events":[{"component":"sys","event":"scheduled_restart","time_ms":900,'
    b'"ts":1718793610.0}]}}'
)
SHELLY_GET_STATUS_REPLY = (
    b'{"id":7,"src":"shellypro3em-c8f09e8871a4","dst":"v2x","result":' + SHELLY_EM0 + b"}"
)


def test_shelly_rpc_notifications_full_then_deltas() -> None:
    p = make_parser(meter(format="shelly_pro3em", topic="shellypro3em-c8f09e8871a4/events/rpc"))
    full = p.parse(p.meter.topic, SHELLY_FULL_STATUS)
    assert full is not None and full.value == pytest.approx(715.175)
    assert full.phases_w == pytest.approx((951.2, -951.1, 715.1))
    total = p.parse(p.meter.topic, SHELLY_NOTIFY_TOTAL)  # the delta's own total wins
    assert total is not None and total.value == pytest.approx(-1446.4)
    assert total.phases_w == pytest.approx((-1210.4, -951.1, 715.1))
    # Only phase b changed: the total is the merged phases.
    one = p.parse(p.meter.topic, SHELLY_NOTIFY_ONE_PHASE)
    assert one is not None and one.value == pytest.approx(-1210.4 + 400.0 + 715.1)
    # No power in the delta, another component, an event: no reading, and no error either.
    for payload in (SHELLY_NOTIFY_VOLTAGE_ONLY, SHELLY_NOTIFY_SYS, SHELLY_NOTIFY_EVENT):
        assert p.parse(p.meter.topic, payload) is None


def test_shelly_delta_before_any_full_status_needs_its_own_total() -> None:
    p = make_parser(meter(format="shelly_pro3em", topic="s/events/rpc"))
    assert p.parse("s/events/rpc", SHELLY_NOTIFY_ONE_PHASE) is None  # phases a and c unknown yet
    parsed = p.parse("s/events/rpc", SHELLY_NOTIFY_TOTAL)
    assert parsed is not None and parsed.value == pytest.approx(-1446.4)


def test_shelly_refused_delta_is_not_merged() -> None:
    p = make_parser(meter(format="shelly_pro3em", topic="s/events/rpc"))
    assert p.parse("s/events/rpc", SHELLY_FULL_STATUS) is not None
    huge = b'{"method":"NotifyStatus","params":{"em:0":{"a_act_power":5e9}}}'
    with pytest.raises(PayloadError, match="implausible"):
        p.parse("s/events/rpc", huge)
    parsed = p.parse("s/events/rpc", SHELLY_NOTIFY_ONE_PHASE)
    assert parsed is not None and parsed.value == pytest.approx(951.2 + 400.0 + 715.1)


def test_shelly_phase_beyond_the_power_bound_is_refused_and_not_merged() -> None:
    p = make_parser(meter(format="shelly_pro3em", topic="s/events/rpc"))
    assert p.parse("s/events/rpc", SHELLY_FULL_STATUS) is not None
    huge_phase = b'{"method":"NotifyStatus","params":{"em:0":{"b_act_power":1e300,"total_act_power":5}}}'
    with pytest.raises(PayloadError, match=r"b_act_power .* implausible"):
        p.parse("s/events/rpc", huge_phase)
    parsed = p.parse("s/events/rpc", SHELLY_NOTIFY_TOTAL)
    assert parsed is not None and max(abs(w) for w in parsed.phases_w) < 1e4


def test_shelly_rpc_reply_and_component_from_topic() -> None:
    assert parse(meter(format="shelly_pro3em"), SHELLY_GET_STATUS_REPLY) == pytest.approx(715.175)
    full_status = b'{"em:0":{"total_act_power":1},"em:1":{"total_act_power":2}}'  # Shelly.GetStatus
    assert parse(meter(format="shelly_pro3em", topic="x/status/em:1"), full_status) == 2.0
    assert parse(meter(format="shelly_pro3em", topic="x/status"), full_status) == 1.0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"method":"NotifyStatus","params":[1]}', "method name and params"),
        (b'{"method":5,"params":{}}', "method name and params"),
        (b'{"method":"NotifyStatus","params":{"em:0":5}}', "not an object"),
        (b'{"method":"NotifyStatus","params":{"em:0":{"total_act_power":"x"}}}', "not a number"),
        (b'{"id":1,"result":"ok"}', "result is not an object"),
        (b'{"em:0":[1]}', "not an object"),
    ],
)
def test_shelly_bad_rpc_shapes(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        make_parser(meter(format="shelly_pro3em")).parse("t", payload)


def test_dsmr_reader_split_topics_combine_into_signed_watts() -> None:
    p = make_parser(meter(format="dsmr_reader", topic="dsmr"))
    assert p.topics == (
        "dsmr/reading/electricity_currently_delivered",
        "dsmr/reading/electricity_currently_returned",
        "dsmr/json",
        *(f"dsmr/reading/phase_currently_{d}_l{n}" for d in ("delivered", "returned") for n in (1, 2, 3)),
    )
    assert (
        p.parse("dsmr/reading/electricity_currently_delivered", b"0.347") is None
    )  # waits for the other half
    parsed = p.parse("dsmr/reading/electricity_currently_returned", b"0.000")
    assert parsed is not None and parsed.value == pytest.approx(347.0)
    parsed = p.parse("dsmr/reading/electricity_currently_returned", b"1.200")
    assert parsed is not None and parsed.value == pytest.approx(347.0 - 1200.0)


def test_dsmr_reader_json_topic() -> None:
    p = make_parser(meter(format="dsmr_reader", topic="dsmr/"))
    parsed = p.parse("dsmr/json", DSMR_JSON)
    assert parsed is not None and parsed.value == pytest.approx(-1234.0)


def test_dsmr_reader_json_phases() -> None:
    m = meter(format="dsmr_reader", topic="dsmr")
    parsed = make_parser(m).parse("dsmr/json", DSMR_JSON_PHASES)
    assert parsed is not None and parsed.value == pytest.approx(243.0)
    assert parsed.phases_w == pytest.approx((209.0, -577.0, 611.0))
    assert phases(m, DSMR_JSON_ONE_PHASE, "dsmr/json") == ()
    assert phases(m, DSMR_JSON, "dsmr/json") == ()  # L1 only


def test_dsmr_reader_split_phases_are_held_until_they_change() -> None:
    p = make_parser(meter(format="dsmr_reader", topic="dsmr"))
    # dsmr-reader sends a telegram's fields in this order, each only when its value changed.
    telegram = [
        ("electricity_currently_delivered", "0.243"),
        ("electricity_currently_returned", "0.000"),
        ("phase_currently_delivered_l1", "0.209"),
        ("phase_currently_delivered_l2", "0.000"),
        ("phase_currently_delivered_l3", "0.611"),
        ("phase_currently_returned_l1", "0.000"),
        ("phase_currently_returned_l2", "0.577"),
    ]
    for field, value in telegram:
        parsed = p.parse(f"dsmr/reading/{field}", value.encode())
        assert parsed is None or parsed.phases_w == ()  # a phase still unknown
    parsed = p.parse("dsmr/reading/phase_currently_returned_l3", b"0.000")
    assert parsed is not None and parsed.value == pytest.approx(243.0)
    assert parsed.phases_w == pytest.approx((209.0, -577.0, 611.0))
    # Next telegram: only L3 and the total changed; the held phases still add up.
    parsed = p.parse("dsmr/reading/electricity_currently_delivered", b"0.543")
    assert parsed is not None and parsed.phases_w == ()  # L3's new value is still on its way
    parsed = p.parse("dsmr/reading/phase_currently_delivered_l3", b"0.911")
    assert parsed is not None and parsed.phases_w == pytest.approx((209.0, -577.0, 911.0))
    # A phase the meter no longer reports makes the phases unknown, not the total.
    parsed = p.parse("dsmr/reading/phase_currently_returned_l2", b"")
    assert parsed is not None and parsed.value == pytest.approx(543.0) and parsed.phases_w == ()
    with pytest.raises(PayloadError, match="phase_currently_delivered_l1 is negative"):
        p.parse("dsmr/reading/phase_currently_delivered_l1", b"-0.2")


def test_dsmr_reader_rejects_negative_and_foreign_topics() -> None:
    p = make_parser(meter(format="dsmr_reader", topic="dsmr"))
    with pytest.raises(PayloadError, match="negative"):
        p.parse("dsmr/reading/electricity_currently_delivered", b"-0.5")
    with pytest.raises(PayloadError, match="not a dsmr-reader topic"):
        p.parse("dsmr/reading/other", b"1")


@pytest.mark.parametrize(
    ("payload", "scale", "expected"),
    [
        (b"1234.5", 1.0, 1234.5),
        (b"  -300 ", 1.0, -300.0),
        (b"1.5", 1000.0, 1500.0),
        (b"230 W", 1.0, 230.0),
        (b"1.2kW", 1.0, 1200.0),
        (b"1.2 kW", 1000.0, 1200.0),  # an explicit unit wins over scale
        (b"2e3", 1.0, 2000.0),
    ],
)
def test_plain(payload: bytes, scale: float, expected: float) -> None:
    assert parse(meter(scale=scale), payload) == pytest.approx(expected)


def test_json_path_with_list_index_scale_and_sign() -> None:
    m = meter(format="json", json_path="data.meters.1.power_kw", scale=1000, sign=-1)
    payload = b'{"data":{"meters":[{"power_kw":9},{"power_kw":"0.75"}]}}'
    assert parse(m, payload) == pytest.approx(-750.0)


def test_vehicle_soc_percent_and_unit() -> None:
    m = meter(role="vehicle_soc", vehicle="ev")
    assert parse(m, b"57.5") == 57.5
    assert parse(m, b"57 %") == 57.0
    with pytest.raises(PayloadError, match=r"outside 0\.\.100"):
        parse(m, b"157")
    with pytest.raises(PayloadError, match="not a state of charge"):
        parse(m, b"57 kW")
    assert (
        parse(
            meter(role="vehicle_soc", vehicle="ev", format="json", json_path="soc", scale=100), b'{"soc":0.8}'
        )
        == 80.0
    )


def test_v2l_power_is_a_draw() -> None:
    m = meter(role="v2l", vehicle="ev")
    assert parse(m, b"1500") == 1500.0
    assert parse(m, b"-3") == 0.0  # standby offset
    with pytest.raises(PayloadError, match="implausible"):
        parse(m, b"-1500")


@pytest.mark.parametrize(
    ("fmt", "payload", "reason"),
    [
        ("tasmota", b'{"ENERGY":{"Power":', "invalid JSON"),
        ("tasmota", b"[1,2]", "not a JSON object"),
        ("tasmota", b'{"ENERGY":{"Power":"lots"}}', "not a number"),
        ("tasmota", b'{"ENERGY":{"Power":true}}', "not a number"),
        ("tasmota", b'{"ENERGY":{"Power":null}}', "not a number"),
        ("tasmota", b'{"ENERGY":{"Power":[]}}', "empty list"),
        ("tasmota", b'{"ENERGY":{"Power":{"a":1}}}', "not a number"),
        ("tasmota", b'{"ENERGY":{"Power":NaN}}', "not a finite"),
        ("tasmota", b'{"ENERGY":{"Power":Infinity}}', "not a finite"),
        ("tasmota", b'{"ENERGY":{"Power":1e400}}', "not a finite"),
        ("tasmota", b'{"ENERGY":{"Power":' + b"9" * 400 + b"}}", "too large"),
        ("tasmota", b'{"ENERGY":{"Power":' + b"9" * 5000 + b"}}", "invalid JSON"),
        ("tasmota", b'{"ENERGY":{"Power":1e9}}', "implausible"),
        ("tasmota", b'{"StatusSNS":{}}', "neither ENERGY.Power"),
        ("tasmota", b"[" * 5000 + b"]" * 5000, "invalid JSON"),
        ("shelly_pro3em", b'{"a_act_power":1}', "no total_act_power"),
        ("shelly_pro3em", b'{"total_act_power":"NaN"}', "not a finite"),
        ("shelly_pro3em", b"42", "not a JSON object"),
        (
            "shelly_pro3em",
            b'{"a_act_power":1e300,"b_act_power":0,"c_act_power":0,"total_act_power":5}',
            "a_act_power",
        ),
        (
            "shelly_pro3em",
            b'{"a_act_power":0,"b_act_power":0,"c_act_power":-2e7,"total_act_power":5}',
            "c_act_power",
        ),
        ("plain", b"", "not a number"),
        ("plain", b"on", "not a number"),
        ("plain", b"nan", "not a number"),
        ("plain", b"inf", "not a number"),
        ("plain", b"12 A", "not a power"),
        ("plain", b"3 kWh", "not a power"),
        ("plain", b"\xff\xfe", "not UTF-8"),
        ("plain", b"1" * 400, "not a finite"),
        ("plain", b"1" * (MAX_METER_PAYLOAD_BYTES + 1), "exceeds"),
        ("plain", b"99999999", "implausible"),
    ],
)
def test_malformed_payloads_are_refused_with_a_reason(fmt: str, payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        make_parser(meter(format=fmt)).parse("t", payload)


def test_json_path_errors() -> None:
    m = meter(format="json", json_path="a.2")
    with pytest.raises(PayloadError, match="past the end"):
        parse(m, b'{"a":[1]}')
    with pytest.raises(PayloadError, match="no 'a'"):
        parse(m, b'{"b":1}')
    with pytest.raises(ValueError, match="empty part"):
        parse_json_path("a..b")


@pytest.mark.parametrize("path", ["..", "a.", ".a", "a..b", " "])
def test_json_path_the_parser_refuses_is_refused_by_the_config(path: str) -> None:
    """Refused before the daemon starts, not when it builds the parsers."""
    with pytest.raises(ValidationError, match="has an empty part"):
        meter(format="json", json_path=path)


@pytest.mark.parametrize("fmt", ["plain", "dsmr_reader"])
def test_json_path_on_a_format_that_ignores_it_is_refused(fmt: str) -> None:
    with pytest.raises(ValidationError, match=f"format {fmt} does not read it"):
        meter(format=fmt, json_path="a.b")


@pytest.mark.parametrize("fmt", ["json", "tasmota", "shelly_pro3em"])
def test_json_path_on_a_format_that_reads_it(fmt: str) -> None:
    assert make_parser(meter(format=fmt, json_path="a.0.b")).parse("t", b'{"a":[{"b":42}]}') is not None


def _docs_example_payloads() -> list[tuple[str, bytes]]:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "mqtt.md").read_text()
    block = docs.split("Example payloads (all accepted)", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    found = []
    for line in block.splitlines():
        if line.strip() and not line.startswith("#"):
            topic, payload = re.split(r"\s+", line, maxsplit=1)
            found.append((topic, payload.strip().encode()))
    return found


def test_docs_example_payloads_are_accepted_by_the_documented_meters() -> None:
    """Every payload docs/mqtt.md lists is read by a meter of its examples (the block, or one of the
    other grid meters), and accepted."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "mqtt.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", docs, re.DOTALL)]
    meters = [
        MeterConfig.model_validate(m)
        for b in blocks
        for m in (b["meters"] if isinstance(b, dict) and "meters" in b else b if isinstance(b, list) else [])
    ]
    parsers = [make_parser(m) for m in meters]
    payloads = _docs_example_payloads()
    assert len(payloads) >= 9
    for topic, payload in payloads:
        reading = [p for p in parsers if topic in p.topics]
        assert reading, f"no documented meter reads {topic}"
        for parser in reading:
            parser.parse(topic, payload)  # a refusal raises PayloadError


PARSERS = [
    make_parser(
        meter(
            format=f, topic="dsmr" if f == "dsmr_reader" else "t", json_path="a.0.b" if f == "json" else None
        )
    )
    for f in MeterFormat  # every preset, a new one included
]
JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=True)
    | st.integers()
    | st.text(max_size=10)
    | st.sampled_from(["NotifyStatus", "NotifyFullStatus"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    *("ENERGY", "Power", "a", "b", "total_act_power", "a_act_power", "Power_curr", "SML"),
                    *("method", "params", "result", "em:0", "b_act_power", "c_act_power"),
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


def _check_never_crashes(parser: MeterParser, payload: bytes) -> None:
    for topic in parser.topics:
        try:
            parsed = parser.parse(topic, payload)
        except PayloadError:
            continue
        if parsed is not None:
            assert abs(parsed.value) <= 10_000_000.0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes_only_raise_payload_error(payload: bytes) -> None:
    for parser in PARSERS:
        _check_never_crashes(parser, payload)


@settings(max_examples=300, deadline=None)
@given(JSONISH)
def test_fuzz_json_only_raise_payload_error(data: Any) -> None:
    payload = json.dumps(data).encode()
    for parser in PARSERS:
        _check_never_crashes(parser, payload)


# ------------------------------------------------------------------ the registry of formats


def test_every_meter_format_has_a_registered_parser() -> None:
    """A ``MeterFormat`` without a registered class (or a class no config can select) fails here."""
    assert meter_format_names() == {f.value for f in MeterFormat}
    for fmt in MeterFormat:
        cls = find_meter_format(fmt)
        assert cls.format == fmt.value
        assert not inspect.isabstract(cls)
        assert "Example" in (cls.__doc__ or ""), f"{cls.__qualname__}'s docstring shows no example payload"
        parser = make_parser(meter(format=fmt, json_path="a" if fmt is MeterFormat.JSON else None))
        assert isinstance(parser.format_parser, cls)


def test_an_unknown_format_name_is_refused() -> None:
    with pytest.raises(LookupError, match="no parser for meter format 'nope'; known: dsmr_reader"):
        find_meter_format("nope")


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registering is global: the test registers into a copy that is thrown away afterwards."""
    monkeypatch.setattr(registry, "_FORMATS", dict(registry._FORMATS))


@pytest.mark.usefixtures("scratch_registry")
def test_a_newly_registered_format_is_read_through_the_clients_lookup() -> None:
    @register_meter_format("kv_watts")
    class KeyValueWatts(FormatParser):
        """``W=<number>``. Example: ``W=1500``."""

        def parse(self, topic: str, payload: bytes) -> ParsedValue:
            key, _, value = payload.decode("utf-8", "replace").partition("=")
            if key != "W":
                raise PayloadError("no W= in the payload")
            return ParsedValue(number(value, "W") * self.meter.scale)

    assert find_meter_format("kv_watts") is KeyValueWatts and "kv_watts" in meter_format_names()
    cfg = parse_config(
        {
            "site": {
                "grid": {"import_limit_kw": 17.3, "export_limit_kw": 10, "fallback_import_limit_kw": 11}
            },
            "meters": [{"id": "grid", "role": "grid", "topic": "home/grid"}],
            "tariff": {"import": {"static_price_per_kwh": 0.3}, "export": {"static_price_per_kwh": 0.07}},
        }
    )
    # A new preset's name also goes into config.MeterFormat; here it is set without validation.
    grid = cfg.meters[0].model_copy(update={"format": "kv_watts", "sign": -1, "scale": 1000.0})
    cfg = cfg.model_copy(update={"meters": [grid]})
    t0 = dt.datetime(2025, 1, 15, 12, 0, tzinfo=dt.UTC)
    readings: list[MeterReading] = []
    client = SiteMqttClient(cfg, ManualClock(t0), on_reading=readings.append, log_interval_s=0)
    with structlog.testing.capture_logs() as logs:
        client.ingest("home/grid", b"W=1.5")
        client.ingest("home/grid", b"A=3")  # the format's own refusal
        client.ingest("home/grid", b"W=2e4")  # the core's bound holds for every format
    assert [(r.meter_id, r.value) for r in readings] == [("grid", -1500.0)]
    assert client.inputs.grid_power_w(t0) == -1500.0
    rejected = [e for e in logs if e["event"] == "meter_payload_rejected"]
    assert [(e["log_level"], e["topic"], e["meter"]) for e in rejected] == [
        ("warning", "home/grid", "grid")
    ] * 2
    assert "no W=" in rejected[0]["reason"] and "implausible" in rejected[1]["reason"]
    assert (client.accepted, client.rejected) == (1, 2)


@pytest.mark.usefixtures("scratch_registry")
def test_registration_refuses_a_taken_name_and_a_class_without_parse() -> None:
    with pytest.raises(ValueError, match="already read by Tasmota"):

        @register_meter_format("tasmota")
        class Again(FormatParser):
            """Example: none."""

            def parse(self, topic: str, payload: bytes) -> None:
                return None

    with pytest.raises(TypeError, match="does not implement parse"):
        register_meter_format("incomplete")(FormatParser)
    assert meter_format_names() == {f.value for f in MeterFormat}
