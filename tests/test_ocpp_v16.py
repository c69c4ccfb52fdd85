"""OCPP 1.6J over real websockets, with the ``ocpp`` package as the charger."""

from __future__ import annotations

from datetime import timedelta

import ocpp.v16
import pytest
from ocpp.exceptions import NotSupportedError as OcppNotSupported

from controller.clock import ManualClock
from controller.domain import ChargerSchedule, SchedulePeriod
from controller.ocpp import (
    MeterValuesReceived,
    ProfileStatus,
    StatusChanged,
    TransactionEnded,
    TransactionStarted,
)
from tests.ocpp_support import T0, iso, library_charger, running_server, site, wait_until

call = ocpp.v16.call


def plan(charger_id: str, *rows: tuple[int, float, float, float]) -> ChargerSchedule:
    return ChargerSchedule(
        charger_id,
        T0,
        T0 + timedelta(hours=1),
        tuple(SchedulePeriod(timedelta(minutes=m), s, c, d) for m, s, c, d in rows),
    )


async def test_16_boot_transaction_soc_and_charge_only_profile() -> None:
    cfg = site([{"id": "cp16", "ocpp_versions": ["1.6"], "bidirectional": True, "max_discharge_kw": 7}])
    async with (
        running_server(cfg, clock=ManualClock(T0)) as (server, events),
        library_charger(server, "cp16", "1.6", path_prefix="/") as charger,
    ):  # bare /<id> path
        boot = await charger.boot()
        assert boot.status == "Accepted" and boot.interval == 300
        view = server.charger("cp16")
        assert view is not None
        await wait_until(lambda: view.default_profile is not None, what="default profile")
        config = charger.tap.calls("ChangeConfiguration")
        assert config[0]["key"] == "MeterValuesSampledData" and "SoC" in config[0]["value"]
        assert config[1] == {"key": "MeterValueSampleInterval", "value": "10"}
        assert charger.tap.calls("SetChargingProfile")[0] == {
            "connectorId": 0,
            "csChargingProfiles": {
                "chargingProfileId": 1,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Relative",
                "chargingSchedule": {
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 15.9, "numberPhases": 3}],
                },
            },
        }

        await charger.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Preparing"))
        assert (await charger.call(call.Authorize(id_tag="TAG"))).id_tag_info == {"status": "Accepted"}
        start = await charger.call(
            call.StartTransaction(connector_id=1, id_tag="TAG", meter_start=1000, timestamp=iso(T0))
        )
        transaction_id = start.transaction_id
        assert isinstance(transaction_id, int) and start.id_tag_info == {"status": "Accepted"}
        await charger.call(
            call.MeterValues(
                connector_id=1,
                transaction_id=transaction_id,
                meter_value=[
                    {
                        "timestamp": iso(T0 + timedelta(seconds=10)),
                        "sampled_value": [
                            {"value": "7360", "measurand": "Power.Active.Import", "unit": "W"},
                            {"value": "1.2", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                            {"value": "48", "measurand": "SoC", "unit": "Percent", "location": "EV"},
                        ],
                    }
                ],
            )
        )
        assert view.transaction_id == str(transaction_id) and view.status == "Preparing"
        assert (view.meter.power_w, view.meter.energy_import_wh, view.meter.soc_percent) == (7360, 1200, 48)
        assert events.of(TransactionStarted)[0].meter_start_wh == 1000
        assert events.of(MeterValuesReceived)[-1].sample.soc_percent == 48
        assert events.of(StatusChanged)[0].status == "Preparing"

        # Discharge is asked but 1.6 has none and this charger did not opt in: 0 A, then the 11 kW cap in A.
        record = await server.apply_schedule(plan("cp16", (0, -5000, 11000, 7000), (20, 11040, 11040, 0)))
        assert record.status is ProfileStatus.ACCEPTED
        raw = charger.tap.received[-1]
        assert raw[:3] == [2, raw[1], "SetChargingProfile"]
        assert raw[3] == {
            "connectorId": 1,
            "csChargingProfiles": {
                "chargingProfileId": 2,
                "transactionId": transaction_id,
                "stackLevel": 1,
                "chargingProfilePurpose": "TxProfile",
                "chargingProfileKind": "Absolute",
                "validFrom": "2030-06-01T12:00:00Z",
                "validTo": "2030-06-01T13:00:00Z",
                "chargingSchedule": {
                    "startSchedule": "2030-06-01T12:00:00Z",
                    "duration": 3600,
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [
                        {"startPeriod": 0, "limit": 0.0, "numberPhases": 3},
                        {"startPeriod": 1200, "limit": 15.9, "numberPhases": 3},  # capped at 11 kW
                    ],
                },
            },
        }

        stop = await charger.call(
            call.StopTransaction(
                meter_stop=5000,
                timestamp=iso(T0 + timedelta(minutes=30)),
                transaction_id=transaction_id,
                reason="EVDisconnected",
                id_tag="TAG",
            )
        )
        assert stop.id_tag_info == {"status": "Accepted"}
        ended = (await events.wait(TransactionEnded))[0]
        assert (ended.meter_stop_wh, ended.reason) == (5000, "EVDisconnected")
        assert view.transaction_id is None


async def test_16_opted_in_negative_limit() -> None:
    cfg = site(
        [
            {
                "id": "neg16",
                "ocpp_versions": ["1.6"],
                "bidirectional": True,
                "max_discharge_kw": 10,
                "negative_limit_means_discharge": True,
            }
        ]
    )
    async with (
        running_server(cfg, clock=ManualClock(T0)) as (server, _),
        library_charger(server, "neg16", "1.6") as charger,
    ):
        await charger.boot()
        start = await charger.call(
            call.StartTransaction(connector_id=1, id_tag="TAG", meter_start=0, timestamp=iso(T0))
        )
        assert (await server.apply_schedule(plan("neg16", (0, -4140, 11000, 10000)))).accepted
        sent = charger.tap.calls("SetChargingProfile")[-1]["csChargingProfiles"]
        assert sent["transactionId"] == start.transaction_id
        assert sent["chargingSchedule"]["chargingSchedulePeriod"] == [
            {"startPeriod": 0, "limit": -6.0, "numberPhases": 3}
        ]


async def test_16_sampling_falls_back_when_measurands_are_refused() -> None:
    async with (
        running_server(site([{"id": "old", "ocpp_versions": ["1.6"]}])) as (server, _),
        library_charger(server, "old", "1.6", answers={"ChangeConfiguration": "Rejected"}) as charger,
    ):
        await charger.boot()
        view = server.charger("old")
        assert view is not None
        await wait_until(lambda: view.default_profile is not None)
        tried = [c["value"] for c in charger.tap.calls("ChangeConfiguration")]
        assert len(tried) == 4 and tried[-1] == "10"  # three measurand lists, then the interval
        assert tried[-2] == "Power.Active.Import,Energy.Active.Import.Register"


async def test_16_data_transfer_and_unhandled_actions_are_answered() -> None:
    async with (
        running_server(site([{"id": "cp", "ocpp_versions": ["1.6"]}])) as (server, _),
        library_charger(server, "cp", "1.6") as charger,
    ):
        answer = await charger.call(call.DataTransfer(vendor_id="acme", message_id="x", data="y"))
        assert answer.status == "UnknownVendorId"
        ack = await charger.call(call.FirmwareStatusNotification(status="Idle"))
        assert ack is not None
        # A known charger-to-CSMS call whose answer needs content we do not have: NotSupported.
        with pytest.raises(OcppNotSupported):
            await charger.call(call.SignCertificate(csr="x"))
        view = server.charger("cp")
        assert view is not None and view.connected


async def test_16_only_configured_id_tags_may_charge() -> None:
    cfg = site([{"id": "cp", "ocpp_versions": ["1.6"]}], accepted_id_tokens=["04A1B2C3", "family-card"])
    async with (
        running_server(cfg, clock=ManualClock(T0)) as (server, _),
        library_charger(server, "cp", "1.6") as charger,
    ):
        assert (await charger.call(call.Authorize(id_tag="04a1b2c3"))).id_tag_info == {"status": "Accepted"}
        assert (await charger.call(call.Authorize(id_tag="stranger"))).id_tag_info == {"status": "Invalid"}
        start = await charger.call(
            call.StartTransaction(connector_id=1, id_tag="stranger", meter_start=0, timestamp=iso(T0))
        )
        # The charger gets a transaction id and the verdict; it stops the transaction itself.
        assert isinstance(start.transaction_id, int) and start.id_tag_info == {"status": "Invalid"}
        stop = await charger.call(
            call.StopTransaction(
                meter_stop=0, timestamp=iso(T0), transaction_id=start.transaction_id, id_tag="FAMILY-CARD"
            )
        )
        assert stop.id_tag_info == {"status": "Accepted"}


async def test_16_stop_of_an_unknown_transaction_is_answered_and_ends_nothing_known() -> None:
    """A StopTransaction for a transaction id this process never handed out is answered as usual and
    logged; it is reported on EVSE 0 (connector unknown), so the running transaction on connector 1
    stays, and its transaction data are no meter values of any EVSE."""
    from structlog.testing import capture_logs

    cfg = site([{"id": "cp", "ocpp_versions": ["1.6"]}])
    async with (
        running_server(cfg, clock=ManualClock(T0)) as (server, events),
        library_charger(server, "cp", "1.6") as charger,
    ):
        start = await charger.call(
            call.StartTransaction(connector_id=1, id_tag="TAG", meter_start=0, timestamp=iso(T0))
        )
        view = server.charger("cp")
        assert view is not None and view.transaction_id == str(start.transaction_id)
        with capture_logs() as logs:
            stop = await charger.call(
                call.StopTransaction(
                    meter_stop=800,
                    timestamp=iso(T0 + timedelta(minutes=5)),
                    transaction_id=start.transaction_id + 1_000_000,
                    reason="EVDisconnected",
                    id_tag="TAG",
                    transaction_data=[
                        {
                            "timestamp": iso(T0 + timedelta(minutes=5)),
                            "sampled_value": [{"value": "9000", "measurand": "Power.Active.Import"}],
                        }
                    ],
                )
            )
        assert stop.id_tag_info == {"status": "Accepted"}
        (ended,) = events.of(TransactionEnded)
        assert (ended.evse_id, ended.transaction_id) == (0, str(start.transaction_id + 1_000_000))
        assert view.transaction_id == str(start.transaction_id)  # connector 1's transaction runs on
        assert not events.of(MeterValuesReceived) and 0 not in view.evses
        assert [e["log_level"] for e in logs if e["event"] == "ocpp_stop_unknown_transaction"] == ["warning"]
        # Connector 0 is the whole charge point: its status is reported as EVSE 0, not the car's.
        await charger.call(call.StatusNotification(connector_id=0, error_code="NoError", status="Available"))
        status = (await events.wait(StatusChanged))[-1]
        assert (status.evse_id, status.status) == (0, "Available") and view.status is None
