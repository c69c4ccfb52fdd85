"""OCPP 2.0.1 and 2.1 over real websockets, with the ``ocpp`` package as the charger."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import ocpp.v21
import ocpp.v201

from controller.clock import ManualClock
from controller.domain import ChargerSchedule, SchedulePeriod
from controller.ocpp import (
    BootNotified,
    ChargingNeedsReported,
    MeterValuesReceived,
    ProfileAnswered,
    ProfileStatus,
    StatusChanged,
    TransactionEnded,
    TransactionStarted,
)
from tests.ocpp_support import T0, iso, library_charger, running_server, site, wait_until

BIDI = {"id": "cp21", "bidirectional": True, "max_discharge_kw": 10, "max_charge_kw": 11}


def v2_schedule(charger_id: str, *rows: tuple[int, float, float, float], start: Any = T0) -> ChargerSchedule:
    return ChargerSchedule(
        charger_id,
        start,
        start + timedelta(hours=6),
        tuple(SchedulePeriod(timedelta(minutes=m), s, c, d) for m, s, c, d in rows),
    )


def started(library: Any, transaction_id: str = "tx-1", soc: float = 55) -> Any:
    return library.call.TransactionEvent(
        event_type="Started",
        seq_no=0,
        timestamp=iso(T0),
        trigger_reason="CablePluggedIn",
        transaction_info={"transaction_id": transaction_id, "charging_state": "EVConnected"},
        evse={"id": 1, "connector_id": 1},
        id_token={"id_token": "RFID-1", "type": "ISO14443"},
        meter_value=[
            {
                "timestamp": iso(T0),
                "sampled_value": [
                    {"value": 7400, "measurand": "Power.Active.Import", "unit_of_measure": {"unit": "W"}},
                    {
                        "value": 10.5,
                        "measurand": "Energy.Active.Import.Register",
                        "unit_of_measure": {"unit": "kWh"},
                    },
                    {
                        "value": soc,
                        "measurand": "SoC",
                        "location": "EV",
                        "unit_of_measure": {"unit": "Percent"},
                    },
                ],
            }
        ],
    )


async def test_21_boot_config_transaction_needs_and_v2x_profile() -> None:
    cfg = site([BIDI])
    async with (
        running_server(cfg, clock=ManualClock(T0)) as (server, events),
        library_charger(server, "cp21", "2.1") as charger,
    ):
        boot = await charger.boot()
        assert boot.status == "Accepted" and boot.current_time == "2030-06-01T12:00:00Z"
        view = server.charger("cp21")
        assert view is not None
        await wait_until(lambda: view.default_profile is not None, what="default profile")
        # After boot: sampling incl. SoC, then the safe charge-only default profile.
        variables = charger.tap.calls("SetVariables")
        assert variables[0]["setVariableData"][0]["variable"] == {"name": "TxUpdatedMeasurands"}
        assert "SoC" in variables[0]["setVariableData"][0]["attributeValue"]
        assert variables[1]["setVariableData"][0]["attributeValue"] == "10"
        default = charger.tap.calls("SetChargingProfile")[0]
        assert default["chargingProfile"]["chargingProfilePurpose"] == "TxDefaultProfile"
        assert default["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"] == [
            {"startPeriod": 0, "operationMode": "ChargingOnly", "limit": 11000}
        ]
        assert view.default_profile is not None and view.default_profile.accepted
        assert view.connected and view.ocpp_version is not None and view.ocpp_version.value == "2.1"
        assert events.of(BootNotified)[0].boot.vendor == "Acme"

        await charger.call(
            ocpp.v21.call.StatusNotification(
                timestamp=iso(T0), connector_status="Occupied", evse_id=1, connector_id=1
            )
        )
        authorized = await charger.call(
            ocpp.v21.call.Authorize(id_token={"id_token": "RFID-1", "type": "ISO14443"})
        )
        assert authorized.id_token_info == {"status": "Accepted"}
        assert (await charger.call(ocpp.v21.call.Heartbeat())).current_time == "2030-06-01T12:00:00Z"
        result = await charger.call(started(ocpp.v21))
        assert result.id_token_info == {"status": "Accepted"}
        assert view.transaction_id == "tx-1" and view.status == "Occupied"
        assert view.meter.power_w == 7400 and view.meter.energy_import_wh == 10_500
        assert view.meter.soc_percent == 55 and view.meter.soc_at == T0
        assert events.of(TransactionStarted)[0].meter_start_wh == 10_500
        assert events.of(StatusChanged)[0].status == "Occupied"

        needs = await charger.call(
            ocpp.v21.call.NotifyEVChargingNeeds(
                evse_id=1,
                timestamp=iso(T0),
                charging_needs={
                    "requested_energy_transfer": "DC_BPT",
                    "departure_time": "2030-06-02T07:30:00Z",
                    "dc_charging_parameters": {
                        "ev_max_current": 200,
                        "ev_max_voltage": 450,
                        "state_of_charge": 56,
                    },
                    "v2x_charging_parameters": {
                        "max_charge_power": 11000,
                        "max_discharge_power": 10000,
                        "min_discharge_power": 1000,
                        "ev_target_energy_request": 30000,
                        "ev_min_energy_request": 5000,
                        "target_soc": 80,
                    },
                },
            )
        )
        assert needs.status == "Accepted"
        reported = (await events.wait(ChargingNeedsReported))[0].needs
        assert (
            reported.departure_time is not None
            and reported.departure_time.isoformat() == "2030-06-02T07:30:00+00:00"
        )
        assert (reported.target_soc_percent, reported.soc_percent) == (80, 56)
        assert (reported.max_discharge_power_w, reported.max_charge_power_w) == (10000, 11000)
        assert reported.energy_request_wh == 30000 and reported.min_energy_request_wh == 5000
        assert view.charging_needs == reported and view.meter.soc_percent == 56
        # A V2X charge limit of 0 W is a limit (no charging), not "not reported".
        await charger.call(
            ocpp.v21.call.NotifyEVChargingNeeds(
                evse_id=1,
                timestamp=iso(T0),
                charging_needs={
                    "requested_energy_transfer": "DC_BPT",
                    "dc_charging_parameters": {
                        "ev_max_current": 200,
                        "ev_max_voltage": 450,
                        "ev_max_power": 50000,
                    },
                    "v2x_charging_parameters": {"max_charge_power": 0, "max_discharge_power": 10000},
                },
            )
        )
        assert view.charging_needs is not None and view.charging_needs.max_charge_power_w == 0

        # A V2X plan: discharge 6 kW now, charge 3 kW from 13:00.
        record = await server.apply_schedule(
            v2_schedule("cp21", (0, -6000, 11000, 10000), (60, 3000, 11000, 0))
        )
        assert record.status is ProfileStatus.ACCEPTED
        raw = charger.tap.received[-1]
        assert raw[0] == 2 and raw[2] == "SetChargingProfile"
        assert raw[3] == {
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
                                "setpoint": -6000,
                                "limit": 11000,
                                "dischargeLimit": -10000,
                            },
                            {
                                "startPeriod": 3600,
                                "operationMode": "CentralSetpoint",
                                "setpoint": 3000,
                                "limit": 11000,
                                "dischargeLimit": 0,
                            },
                        ],
                    }
                ],
            },
        }
        assert view.last_profile is not None and view.last_profile.accepted
        assert view.last_profile.payload == raw[3]
        assert events.of(ProfileAnswered)[-1].record.status is ProfileStatus.ACCEPTED

        # Ending the transaction reports the final register and clears the transaction.
        await charger.call(
            ocpp.v21.call.TransactionEvent(
                event_type="Ended",
                seq_no=1,
                timestamp=iso(T0 + timedelta(hours=1)),
                trigger_reason="EVCommunicationLost",
                transaction_info={"transaction_id": "tx-1", "stopped_reason": "EVDisconnected"},
                meter_value=[
                    {
                        "timestamp": iso(T0 + timedelta(hours=1)),
                        "sampled_value": [
                            {
                                "value": 12000,
                                "measurand": "Energy.Active.Import.Register",
                                "unit_of_measure": {"unit": "Wh"},
                            }
                        ],
                    }
                ],
            )
        )
        ended = (await events.wait(TransactionEnded))[0]
        assert (ended.transaction_id, ended.reason, ended.meter_stop_wh) == ("tx-1", "EVDisconnected", 12000)
        assert view.transaction_id is None and view.meter.energy_import_wh == 12000


async def test_201_charge_only_profile_and_meter_values() -> None:
    cfg = site([{"id": "cp201", "ocpp_versions": ["2.0.1"], "phases": 1}])
    async with (
        running_server(cfg, clock=ManualClock(T0)) as (server, events),
        library_charger(server, "cp201", "2.0.1") as charger,
    ):
        await charger.boot()
        await charger.call(started(ocpp.v201, "abc"))
        await charger.call(
            ocpp.v201.call.MeterValues(
                evse_id=1,
                meter_value=[
                    {
                        "timestamp": iso(T0 + timedelta(seconds=10)),
                        "sampled_value": [
                            {
                                "value": 3.2,
                                "measurand": "Power.Active.Import",
                                "unit_of_measure": {"unit": "kW"},
                            },
                            {"value": 57, "measurand": "SoC", "unit_of_measure": {"unit": "Percent"}},
                        ],
                    }
                ],
            )
        )
        view = server.charger("cp201")
        assert view is not None
        assert view.meter.power_w == 3200 and view.meter.soc_percent == 57
        meter_events = events.of(MeterValuesReceived)
        assert meter_events[-1].transaction_id == "abc" and meter_events[-1].sample.soc_percent == 57
        # 2.0.1 has no discharge: a discharge step becomes a 0 A limit, charging in A per phase.
        record = await server.apply_schedule(
            v2_schedule("cp201", (0, -3000, 7400, 3000), (30, 2300, 7400, 0))
        )
        assert record.accepted
        sent = charger.tap.calls("SetChargingProfile")[-1]
        assert sent["chargingProfile"]["transactionId"] == "abc"
        assert sent["chargingProfile"]["chargingSchedule"][0]["chargingRateUnit"] == "A"
        assert sent["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"] == [
            {"startPeriod": 0, "limit": 0.0, "numberPhases": 1},
            {"startPeriod": 1800, "limit": 10.0, "numberPhases": 1},
        ]


async def test_201_opted_in_charger_gets_negative_limit() -> None:
    charger_cfg = {
        "id": "neg",
        "ocpp_versions": ["2.0.1"],
        "bidirectional": True,
        "max_discharge_kw": 6.9,
        "negative_limit_means_discharge": True,
    }
    async with (
        running_server(site([charger_cfg]), clock=ManualClock(T0)) as (server, _),
        library_charger(server, "neg", "2.0.1") as charger,
    ):
        await charger.boot()
        await charger.call(started(ocpp.v201))
        assert (await server.apply_schedule(v2_schedule("neg", (0, -6900, 11000, 6900)))).accepted
        period = charger.tap.calls("SetChargingProfile")[-1]["chargingProfile"]["chargingSchedule"][0][
            "chargingSchedulePeriod"
        ][0]
        assert period == {"startPeriod": 0, "limit": -10.0, "numberPhases": 3}


async def test_nothing_sent_when_nothing_changed_and_deferred_until_transaction() -> None:
    clock = ManualClock(T0)
    async with (
        running_server(site([BIDI]), clock=clock) as (server, _),
        library_charger(server, "cp21", "2.1") as charger,
    ):
        await charger.boot()
        view = server.charger("cp21")
        assert view is not None
        await wait_until(lambda: view.default_profile is not None)
        plan = v2_schedule("cp21", (0, -2000, 11000, 10000), (30, 1000, 11000, 0))
        # No transaction yet: kept, and sent by itself when the transaction starts.
        assert (await server.apply_schedule(plan)).status is ProfileStatus.DEFERRED
        await charger.call(started(ocpp.v21))
        await wait_until(lambda: view.last_profile is not None and view.last_profile.accepted)
        count = len(charger.tap.calls("SetChargingProfile"))
        assert (await server.apply_schedule(plan)).status is ProfileStatus.UNCHANGED
        # Replanned 15 min later with the same values: still nothing to send.
        clock.advance(timedelta(minutes=15))
        same = v2_schedule("cp21", (0, -2000, 11000, 10000), (15, 1000, 11000, 0), start=clock.now())
        assert (await server.apply_schedule(same)).status is ProfileStatus.UNCHANGED
        assert len(charger.tap.calls("SetChargingProfile")) == count
        # A different value is sent.
        changed = v2_schedule("cp21", (0, -2500, 11000, 10000), start=clock.now())
        assert (await server.apply_schedule(changed)).status is ProfileStatus.ACCEPTED
        assert len(charger.tap.calls("SetChargingProfile")) == count + 1
        # Over half of the validity gone: refreshed although the values are the same.
        clock.advance(timedelta(hours=1, minutes=5))
        refresh = v2_schedule("cp21", (0, -2500, 11000, 10000), start=clock.now())
        assert (await server.apply_schedule(refresh)).status is ProfileStatus.ACCEPTED
        assert len(charger.tap.calls("SetChargingProfile")) == count + 2


async def test_notify_report_and_unhandled_notification_are_answered() -> None:
    async with (
        running_server(site([BIDI]), clock=ManualClock(T0)) as (server, _),
        library_charger(server, "cp21", "2.1") as charger,
    ):
        await charger.call(
            ocpp.v21.call.NotifyReport(
                request_id=1,
                generated_at=iso(T0),
                seq_no=0,
                report_data=[
                    {
                        "component": {"name": "V2XChargingCtrlr"},
                        "variable": {"name": "Enabled"},
                        "variable_attribute": [{"type": "Actual", "value": "true"}],
                    }
                ],
            )
        )
        view = server.charger("cp21")
        assert view is not None
        assert server._controls["cp21"].model.reported_variables == {"V2XChargingCtrlr.Enabled": "true"}
        # A notification we do not use is still acknowledged (never left unanswered).
        answer = await charger.call(
            ocpp.v21.call.SecurityEventNotification(type="SettingSystemTime", timestamp=iso(T0))
        )
        assert answer is not None
        call_id = next(f[1] for f in charger.tap.sent if f[0] == 2 and f[2] == "SecurityEventNotification")
        assert [f[0] for f in charger.tap.received if f[1] == call_id] == [3]


async def test_21_only_configured_id_tokens_may_charge() -> None:
    cfg = site([BIDI], accepted_id_tokens=["04A1B2C3"])
    async with (
        running_server(cfg, clock=ManualClock(T0)) as (server, _),
        library_charger(server, "cp21", "2.1") as charger,
    ):

        async def authorize(token: str, kind: str) -> Any:
            answer = await charger.call(ocpp.v21.call.Authorize(id_token={"id_token": token, "type": kind}))
            return answer.id_token_info["status"]

        assert await authorize("04a1b2c3", "ISO14443") == "Accepted"
        assert await authorize("DEADBEEF", "ISO14443") == "Unknown"
        assert await authorize("", "NoAuthorization") == "Accepted"  # free charging set on the charger
        result = await charger.call(started(ocpp.v21))  # RFID-1 is not on the list
        assert result.id_token_info == {"status": "Unknown"}


async def test_21_events_of_other_evses_are_reported_with_their_evse_and_leave_the_configured_one() -> None:
    """A station with two EVSEs and a main meter: each status and sample names its EVSE, and the
    charger's view (its configured EVSE 1) changes only with EVSE 1's own."""
    cfg = site([BIDI])
    library = ocpp.v21
    async with (
        running_server(cfg, clock=ManualClock(T0)) as (server, events),
        library_charger(server, "cp21", "2.1") as charger,
    ):
        await charger.boot()
        view = server.charger("cp21")
        assert view is not None

        def status(evse_id: int, connector_status: str) -> Any:
            return library.call.StatusNotification(
                timestamp=iso(T0), connector_status=connector_status, evse_id=evse_id, connector_id=1
            )

        def power(evse_id: int, watts: float) -> Any:
            sampled = [{"value": watts, "measurand": "Power.Active.Import", "unit_of_measure": {"unit": "W"}}]
            return library.call.MeterValues(
                evse_id=evse_id,
                meter_value=[{"timestamp": iso(T0 + timedelta(seconds=10)), "sampled_value": sampled}],
            )

        await charger.call(status(1, "Occupied"))
        await charger.call(started(library))
        await charger.call(status(2, "Available"))
        await charger.call(power(0, 9000))  # the station's main meter
        await charger.call(power(2, 4000))
        assert [(e.evse_id, e.status) for e in events.of(StatusChanged)] == [
            (1, "Occupied"),
            (2, "Available"),
        ]
        assert [(e.evse_id, e.sample.power_w) for e in events.of(MeterValuesReceived)] == [
            (1, 7400),
            (0, 9000),
            (2, 4000),
        ]
        assert view.status == "Occupied" and view.transaction_id == "tx-1" and view.meter.power_w == 7400
        assert view.evses[0].meter.power_w == 9000 and view.evses[2].transaction_id is None
