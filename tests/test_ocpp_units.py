"""Pure parts of the CSMS: meter parsing, profile building, version choice, schema errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocpp.charge_point import snake_to_camel_case

from controller.backoff import Backoff
from controller.config import ChargerConfig, OcppVersion
from controller.domain import ChargerSchedule, SchedulePeriod
from controller.ocpp.meter import (
    MAX_PLAUSIBLE_POWER_W,
    DroppedReading,
    MeterValueError,
    parse_meter_values,
    parse_timestamp,
)
from controller.ocpp.profiles import (
    ChargerLimits,
    default_profile_payload,
    same_schedule,
    tx_profile_payload,
)
from controller.ocpp.rpc import known_actions, schema_error
from controller.ocpp.server import charger_id_from_path, choose_version

T0 = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
H2 = timedelta(hours=2)


def limits(**overrides: Any) -> ChargerLimits:
    cfg = ChargerConfig(id="cp", **overrides)
    return ChargerLimits.from_config(cfg, site_fallback_import_w=17_300)


def schedule(
    *periods: tuple[int, float, float, float], hours: float = 4, start: datetime = T0
) -> ChargerSchedule:
    return ChargerSchedule(
        "cp",
        start,
        start + timedelta(hours=hours),
        tuple(SchedulePeriod(timedelta(minutes=m), s, c, d) for m, s, c, d in periods),
    )


# ------------------------------------------------------------------ meter values


def test_meter_values_16_strings_with_soc() -> None:
    sample = parse_meter_values(
        [
            {
                "timestamp": "2030-06-01T12:00:00Z",
                "sampledValue": [
                    {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"},
                    {"value": "12345", "unit": "Wh"},  # default measurand: import register
                    {"value": "61", "measurand": "SoC", "unit": "Percent", "location": "EV"},
                ],
            }
        ]
    )
    assert sample is not None
    assert sample.power_w == pytest.approx(7400)
    assert sample.energy_import_wh == 12345
    assert sample.soc_percent == 61
    assert sample.at == T0


def test_meter_values_2x_numbers_multiplier_phases_and_export_sign() -> None:
    sample = parse_meter_values(
        [
            {
                "timestamp": "2030-06-01T12:00:00+02:00",
                "sampledValue": [
                    {
                        "value": 1.5,
                        "measurand": "Power.Active.Export",
                        "phase": "L1",
                        "unitOfMeasure": {"unit": "kW"},
                    },
                    {
                        "value": 1.5,
                        "measurand": "Power.Active.Export",
                        "phase": "L2",
                        "unitOfMeasure": {"unit": "kW"},
                    },
                    {
                        "value": 2,
                        "measurand": "Power.Active.Export",
                        "phase": "L3",
                        "unitOfMeasure": {"unit": "kW"},
                    },
                    {"value": 230, "measurand": "Voltage", "phase": "L1-N"},
                    {
                        "value": 3,
                        "measurand": "Energy.Active.Export.Register",
                        "unitOfMeasure": {"unit": "Wh", "multiplier": 3},
                    },
                ],
            }
        ]
    )
    assert sample is not None
    assert sample.power_w == pytest.approx(-5000)  # discharging: negative by the domain convention
    assert sample.energy_export_wh == 3000
    assert sample.at == datetime(2030, 6, 1, 10, 0, tzinfo=UTC)


def test_meter_values_newest_entry_wins() -> None:
    older = {"timestamp": "2030-06-01T12:00:00Z", "sampledValue": [{"value": 10, "measurand": "SoC"}]}
    newer = {"timestamp": "2030-06-01T12:00:10Z", "sampledValue": [{"value": 11, "measurand": "SoC"}]}
    sample = parse_meter_values([newer, older])
    assert sample is not None and sample.soc_percent == 11


@pytest.mark.parametrize(
    "sampled",
    [
        {"value": "abc", "measurand": "SoC"},
        {"value": "nan", "measurand": "Power.Active.Import"},
        {"value": 120, "measurand": "SoC"},
        {"value": 5, "measurand": "SoC", "unitOfMeasure": {"unit": "kWh"}},
        {"value": 5, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "A"}},
        {"value": 5, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W", "multiplier": 99}},
        {"value": True, "measurand": "Power.Active.Import"},
    ],
)
def test_meter_values_unreadable_raise(sampled: dict[str, Any]) -> None:
    with pytest.raises(MeterValueError):
        parse_meter_values([{"timestamp": "2030-06-01T12:00:00Z", "sampledValue": [sampled]}])


@pytest.mark.parametrize("raw", ["yesterday", "2030-06-01T12:00:00", 17, None])
def test_timestamps_need_iso_and_a_zone(raw: Any) -> None:
    with pytest.raises(MeterValueError):
        parse_timestamp(raw)


def test_meter_values_implausible_readings_are_dropped_and_reported() -> None:
    def entry(stamp: str, *sampled: dict[str, Any]) -> dict[str, Any]:
        return {"timestamp": f"2030-06-01T12:00:{stamp}Z", "sampledValue": list(sampled)}

    kw = {"unit": "kW"}
    dropped: list[DroppedReading] = []
    sample = parse_meter_values(
        [
            entry(
                "00",
                {"value": 4, "measurand": "Power.Active.Import", "unitOfMeasure": kw},
                {"value": 900, "measurand": "Energy.Active.Export.Register"},
            ),
            entry(
                "10",
                *(
                    {"value": 20, "measurand": "Power.Active.Import", "phase": p, "unitOfMeasure": kw}
                    for p in ("L1", "L2", "L3")
                ),  # each phase plausible, together 60 kW
                {"value": 1e300, "measurand": "SoC", "unitOfMeasure": {"unit": "Percent", "multiplier": 9}},
                {"value": -1, "measurand": "Energy.Active.Export.Register"},
                {"value": 100, "measurand": "Energy.Active.Import.Register"},
                {"value": -1e9, "measurand": "Voltage", "phase": "L1-N"},  # not read at all
                {"value": 9e9, "measurand": "Power.Active.Import", "phase": "N"},  # ignored phase
            ),
        ],
        max_power_w=50_000,
        on_dropped=dropped.append,
    )
    assert sample is not None
    # The older entry's readings stand where the newer ones were dropped.
    assert sample.power_w == 4000 and sample.energy_export_wh == 900
    assert sample.energy_import_wh == 100 and sample.soc_percent is None
    assert [(d.measurand, d.phase, d.reason) for d in dropped] == [
        ("SoC", None, "not finite after unit scaling"),
        ("Energy.Active.Export.Register", None, "an energy register is never negative"),
        ("Power.Active.Import", None, "phase sum above the plausible 50000 W"),
    ]
    assert dropped[2].value == 60_000


def test_meter_values_fixed_power_bound_without_a_better_one() -> None:
    over = {"value": MAX_PLAUSIBLE_POWER_W + 1, "measurand": "Power.Active.Export"}
    sample = parse_meter_values([{"timestamp": "2030-06-01T12:00:00Z", "sampledValue": [over]}])
    assert sample is not None and sample.power_w is None  # no callback: dropped silently
    assert MAX_PLAUSIBLE_POWER_W == 1_000_000


def test_empty_meter_values() -> None:
    assert parse_meter_values([]) is None


# ------------------------------------------------------------------ profiles

V21_DISCHARGE = {
    "evseId": 1,
    "chargingProfile": {
        "id": 2,
        "stackLevel": 1,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Absolute",
        "validFrom": "2030-06-01T12:00:00Z",
        "validTo": "2030-06-01T14:00:00Z",
        "transactionId": "tx-1",
        "chargingSchedule": [
            {
                "id": 2,
                "startSchedule": "2030-06-01T12:00:00Z",
                "duration": 7200,
                "chargingRateUnit": "W",
                "chargingSchedulePeriod": [
                    {
                        "startPeriod": 0,
                        "operationMode": "CentralSetpoint",
                        "setpoint": -7000,
                        "limit": 11000,
                        "dischargeLimit": -7000,
                    },
                    {
                        "startPeriod": 3600,
                        "operationMode": "CentralSetpoint",
                        "setpoint": 2500,
                        "limit": 11000,
                        "dischargeLimit": 0,
                    },
                ],
            }
        ],
    },
}


def test_v21_discharge_profile_exact_and_clamped() -> None:
    lim = limits(bidirectional=True, max_discharge_kw=7)
    # -9 kW asked but the charger can give 7 kW; 3 h period falls outside the 2 h validity.
    sched = schedule((0, -9000, 22000, 9000), (60, 2500, 11000, 0), (180, 1000, 11000, 0))
    payload = tx_profile_payload(OcppVersion.V21, sched, lim, transaction_id="tx-1", max_validity=H2)
    assert payload == V21_DISCHARGE
    assert schema_error(OcppVersion.V21, "SetChargingProfile", payload) is None


def test_v21_charge_only_charger_never_discharges() -> None:
    payload = tx_profile_payload(
        OcppVersion.V21, schedule((0, -5000, 11000, 5000)), limits(), transaction_id="t", max_validity=H2
    )
    period = payload["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"][0]
    assert period["setpoint"] == 0 and period["dischargeLimit"] == 0


def test_library_snake_to_camel_breaks_multi_phase_fields() -> None:
    """Why profiles are written in camelCase by hand: the library mangles the _L2/_L3 names."""
    converted = snake_to_camel_case({"setpoint_l2": 1, "discharge_limit_l3": -1})
    assert "setpoint_L2" not in converted and "dischargeLimit_L3" not in converted
    broken = {"startPeriod": 0, **converted}
    sched = {"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [broken]}
    payload = {
        "evseId": 1,
        "chargingProfile": {
            "id": 1,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": [sched],
        },
    }
    assert schema_error(OcppVersion.V21, "SetChargingProfile", payload) is not None


def test_v16_charge_only_limits_in_amps() -> None:
    sched = schedule((0, 7360, 11000, 0), (15, -5000, 11000, 5000), (30, 3000, 11000, 0))
    payload = tx_profile_payload(OcppVersion.V16, sched, limits(), transaction_id="42", max_validity=H2)
    assert payload == {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 2,
            "transactionId": 42,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute",
            "validFrom": "2030-06-01T12:00:00Z",
            "validTo": "2030-06-01T14:00:00Z",
            "chargingSchedule": {
                "startSchedule": "2030-06-01T12:00:00Z",
                "duration": 7200,
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": 10.6, "numberPhases": 3},
                    {"startPeriod": 900, "limit": 0.0, "numberPhases": 3},  # discharge -> pause
                    {"startPeriod": 1800, "limit": 0.0, "numberPhases": 3},  # 4.3 A < 6 A minimum
                ],
            },
        },
    }
    assert schema_error(OcppVersion.V16, "SetChargingProfile", payload) is None


def test_negative_limit_only_for_opted_in_bidirectional_chargers() -> None:
    sched = schedule((0, -6900, 11000, 10000))
    opted = limits(bidirectional=True, max_discharge_kw=10, negative_limit_means_discharge=True)
    not_opted = limits(bidirectional=True, max_discharge_kw=10)
    for version in (OcppVersion.V16, OcppVersion.V201):
        payload = tx_profile_payload(version, sched, opted, transaction_id="7", max_validity=H2)
        body = payload.get("chargingProfile") or payload["csChargingProfiles"]
        schedule_body = body["chargingSchedule"]
        rows = (schedule_body[0] if isinstance(schedule_body, list) else schedule_body)[
            "chargingSchedulePeriod"
        ]
        assert rows[0]["limit"] == -10.0
        plain = tx_profile_payload(version, sched, not_opted, transaction_id="7", max_validity=H2)
        assert "-" not in str(plain).replace("-06-01", "")
        assert schema_error(version, "SetChargingProfile", payload) is None


def test_default_profiles_are_charge_only_and_open_ended() -> None:
    lim = limits(max_charge_kw=22, bidirectional=True, max_discharge_kw=10)  # fallback caps at 17.3 kW
    v21 = default_profile_payload(OcppVersion.V21, lim)
    assert v21 == {
        "evseId": 0,
        "chargingProfile": {
            "id": 1,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": [
                {
                    "id": 1,
                    "chargingRateUnit": "W",
                    "chargingSchedulePeriod": [
                        {"startPeriod": 0, "operationMode": "ChargingOnly", "limit": 17300}
                    ],
                }
            ],
        },
    }
    v16 = default_profile_payload(OcppVersion.V16, lim)
    assert v16["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 25.0, "numberPhases": 3}
    ]
    for version, payload in ((OcppVersion.V21, v21), (OcppVersion.V16, v16)):
        assert schema_error(version, "SetChargingProfile", payload) is None
    assert (
        schema_error(OcppVersion.V201, "SetChargingProfile", default_profile_payload(OcppVersion.V201, lim))
        is None
    )


def test_16_needs_integer_transaction_ids() -> None:
    with pytest.raises(ValueError, match="integer"):
        tx_profile_payload(
            OcppVersion.V16, schedule((0, 1, 1, 0)), limits(), transaction_id="abc", max_validity=H2
        )


@settings(max_examples=60, deadline=None)
@given(
    version=st.sampled_from(list(OcppVersion)),
    rows=st.lists(
        st.tuples(
            st.floats(-30_000, 30_000, allow_nan=False),
            st.floats(0, 30_000, allow_nan=False),
            st.floats(0, 30_000, allow_nan=False),
        ),
        min_size=1,
        max_size=12,
    ),
    bidirectional=st.booleans(),
    opt_in=st.booleans(),
)
def test_every_profile_is_schema_valid_bounded_and_within_limits(
    version: OcppVersion, rows: list[tuple[float, float, float]], bidirectional: bool, opt_in: bool
) -> None:
    lim = limits(
        bidirectional=bidirectional,
        max_discharge_kw=8 if bidirectional else 0,
        negative_limit_means_discharge=opt_in,
    )
    sched = schedule(*((15 * i, s, c, d) for i, (s, c, d) in enumerate(rows)), hours=6)
    payload = tx_profile_payload(version, sched, lim, transaction_id="12", max_validity=H2)
    assert schema_error(version, "SetChargingProfile", payload) is None
    body = payload.get("chargingProfile") or payload["csChargingProfiles"]
    assert body["validTo"] == "2030-06-01T14:00:00Z"
    schedule_body = body["chargingSchedule"]
    periods = (schedule_body[0] if isinstance(schedule_body, list) else schedule_body)[
        "chargingSchedulePeriod"
    ]
    max_amps = 11_000 / (3 * 230)
    for period in periods:
        assert period["startPeriod"] < 7200
        if version is OcppVersion.V21:
            assert -lim.max_discharge_w <= period["setpoint"] <= 11_000
            assert period["dischargeLimit"] <= 0 <= period["limit"] <= 11_000
        else:
            low = -8000 / (3 * 230) if (bidirectional and opt_in) else 0.0
            assert low - 1e-9 <= period["limit"] <= max_amps


def test_same_schedule_in_absolute_time() -> None:
    old = schedule((0, 1000, 11000, 0), (30, 2000, 11000, 0))
    shifted = schedule((0, 1000, 11000, 0), (15, 2000, 11000, 0), start=T0 + timedelta(minutes=15))
    assert same_schedule(old, shifted, T0 + H2)
    changed = schedule((0, 1000, 11000, 0), (15, 2500, 11000, 0), start=T0 + timedelta(minutes=15))
    assert not same_schedule(old, changed, T0 + H2)
    assert not same_schedule(shifted, old, T0 + H2)  # older start: not covered


def test_backoff_doubles_and_caps() -> None:
    backoff = Backoff(initial_s=0.5, factor=2, max_s=3)
    assert [backoff.delay_s(n) for n in range(1, 6)] == [0.5, 1, 2, 3, 3]


# ------------------------------------------------------------------ connection details


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/ocpp/cp-1", "cp-1"),
        ("/cp-1", "cp-1"),
        ("/ocpp/cp%3A1", "cp:1"),
        ("/ocpp/cp-1?x=1", "cp-1"),
        ("/", None),
        ("/a/b/c", None),
        ("/ocpp/../etc", None),
        ("/ocpp/bad id", None),
    ],
)
def test_charger_id_from_path(path: str, expected: str | None) -> None:
    assert charger_id_from_path(path) == expected


def test_version_preference_within_allowed() -> None:
    every = list(OcppVersion)
    assert choose_version(["ocpp1.6", "ocpp2.0.1", "ocpp2.1"], every) is OcppVersion.V21
    assert choose_version(["ocpp1.6", "ocpp2.0.1"], every) is OcppVersion.V201
    assert choose_version(["ocpp2.1", "ocpp1.6"], [OcppVersion.V16]) is OcppVersion.V16
    assert choose_version(["ocpp2.0"], every) is None


def test_schema_errors_use_version_codes() -> None:
    missing = schema_error(OcppVersion.V201, "BootNotification", {"reason": "PowerUp"})
    assert missing is not None and missing.code == "OccurrenceConstraintViolation"
    missing16 = schema_error(OcppVersion.V16, "BootNotification", {"chargePointVendor": "x"})
    assert missing16 is not None and missing16.code == "OccurenceConstraintViolation"
    wrong_type = schema_error(
        OcppVersion.V16,
        "StatusNotification",
        {"connectorId": "1", "errorCode": "NoError", "status": "Available"},
    )
    assert wrong_type is not None and wrong_type.code == "TypeConstraintViolation"
    extra = schema_error(OcppVersion.V16, "Heartbeat", {"x": 1})
    assert extra is not None and extra.code == "FormationViolation"
    assert "NotifyEVChargingNeeds" in known_actions(OcppVersion.V21)
    assert "TransactionEvent" not in known_actions(OcppVersion.V16)


def test_schedule_may_ask_for_fewer_phases_never_more() -> None:
    one_phase = ChargerSchedule("cp", T0, T0 + H2, (SchedulePeriod(timedelta(0), 3680, 11000),), phases=1)
    payload = tx_profile_payload(OcppVersion.V201, one_phase, limits(), transaction_id="t", max_validity=H2)
    period = payload["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"][0]
    assert period == {"startPeriod": 0, "limit": 16.0, "numberPhases": 1}
    single_phase_charger = limits(phases=1)
    three = ChargerSchedule("cp", T0, T0 + H2, (SchedulePeriod(timedelta(0), 3680, 11000),), phases=3)
    payload = tx_profile_payload(
        OcppVersion.V16, three, single_phase_charger, transaction_id="1", max_validity=H2
    )
    assert payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["numberPhases"] == 1


def test_float_noise_is_not_a_change() -> None:
    old = schedule((0, 7000.0, 11000, 0))
    noisy = schedule((0, 7000.0000001, 10999.9999999, 0))
    assert same_schedule(old, noisy, T0 + H2)
    assert not same_schedule(old, schedule((0, 7002, 11000, 0)), T0 + H2)


def test_backoff_never_overflows_on_a_long_retry_loop() -> None:
    assert Backoff(initial_s=1, factor=2, max_s=60).delay_s(5000) == 60
