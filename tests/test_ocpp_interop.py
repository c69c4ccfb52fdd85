"""Interop with a charger that is not built on the ``ocpp`` package: ocpp-rpc on Node, strict mode.

ocpp-rpc checks every frame we send against its own copy of the OCPP JSON schemas, so a profile
that only the Python package believed valid would come back as an error here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.clock import ManualClock
from controller.domain import ChargerSchedule, SchedulePeriod
from controller.ocpp import ChargingNeedsReported, ProfileStatus, TransactionStarted
from tests.ocpp_support import PASSWORD, PASSWORD_HASH, T0, iso, running_server, site, wait_until
from tests.ocpp_support.node import node_charger


def meter_value(at: datetime, power_w: float, soc: float) -> list[dict[str, object]]:
    return [
        {
            "timestamp": iso(at),
            "sampledValue": [
                {"value": power_w, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}},
                {"value": soc, "measurand": "SoC", "unitOfMeasure": {"unit": "Percent"}},
            ],
        }
    ]


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
async def test_node_charger_full_session(version: str) -> None:
    cfg = site(
        [
            {
                "id": "node-cp",
                "bidirectional": True,
                "max_discharge_kw": 10,
                "auth": {"password_hash": PASSWORD_HASH},
            }
        ]
    )
    async with (
        running_server(cfg, clock=ManualClock(T0)) as (server, events),
        node_charger(server.port, "node-cp", [f"ocpp{version}"], password=PASSWORD) as charger,
    ):
        opened = await charger.opened()
        assert opened == {"event": "open", "protocol": f"ocpp{version}"}
        boot = await charger.call(
            "BootNotification",
            {"reason": "PowerUp", "chargingStation": {"vendorName": "Node", "model": "RPC-1"}},
        )
        assert boot == {"status": "Accepted", "currentTime": "2030-06-01T12:00:00Z", "interval": 300}
        view = server.charger("node-cp")
        assert view is not None
        await wait_until(lambda: view.default_profile is not None, what="default profile")
        assert view.default_profile is not None and view.default_profile.accepted
        assert len(charger.calls("SetVariables")) == 2
        assert charger.calls("SetChargingProfile")[0]["chargingProfile"]["chargingProfilePurpose"] == (
            "TxDefaultProfile"
        )

        await charger.call(
            "StatusNotification",
            {"timestamp": iso(T0), "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1},
        )
        answer = await charger.call(
            "TransactionEvent",
            {
                "eventType": "Started",
                "timestamp": iso(T0),
                "triggerReason": "CablePluggedIn",
                "seqNo": 0,
                "transactionInfo": {"transactionId": "node-tx"},
                "evse": {"id": 1, "connectorId": 1},
                "meterValue": meter_value(T0, 11000, 40),
            },
        )
        assert answer == {}
        await charger.call(
            "MeterValues", {"evseId": 1, "meterValue": meter_value(T0 + timedelta(seconds=10), 10900, 41)}
        )
        assert view.status == "Occupied" and view.transaction_id == "node-tx"
        assert (view.meter.power_w, view.meter.soc_percent) == (10900, 41)
        assert events.of(TransactionStarted)[0].transaction_id == "node-tx"

        if version == "2.1":
            await charger.call(
                "NotifyEVChargingNeeds",
                {
                    "evseId": 1,
                    "chargingNeeds": {
                        "requestedEnergyTransfer": "AC_BPT",
                        "departureTime": "2030-06-02T06:00:00Z",
                        "v2xChargingParameters": {
                            "maxDischargePower": 10000,
                            "targetSoC": 85,
                            "evMinV2XEnergyRequest": -20000,
                            "evMaxV2XEnergyRequest": 15000,
                        },
                    },
                },
            )
            needs = (await events.wait(ChargingNeedsReported))[0].needs
            assert needs.departure_time == datetime(2030, 6, 2, 6, tzinfo=UTC)
            assert (needs.target_soc_percent, needs.max_discharge_power_w) == (85, 10000)
            assert (needs.min_v2x_energy_request_wh, needs.max_v2x_energy_request_wh) == (-20000, 15000)

        schedule = ChargerSchedule(
            "node-cp",
            T0,
            T0 + timedelta(hours=3),
            (
                SchedulePeriod(timedelta(0), -8000, 11000, 10000),
                SchedulePeriod(timedelta(minutes=45), 6900, 11000, 10000),
            ),
        )
        record = await server.apply_schedule(schedule)
        assert record.status is ProfileStatus.ACCEPTED
        sent = charger.calls("SetChargingProfile")[-1]
        periods = sent["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]
        if version == "2.1":
            assert periods == [
                {
                    "startPeriod": 0,
                    "operationMode": "CentralSetpoint",
                    "setpoint": -8000,
                    "limit": 11000,
                    "dischargeLimit": -10000,
                },
                {
                    "startPeriod": 2700,
                    "operationMode": "CentralSetpoint",
                    "setpoint": 6900,
                    "limit": 11000,
                    "dischargeLimit": -10000,
                },
            ]
        else:  # no discharge on 2.0.1 without the opt-in
            assert periods == [
                {"startPeriod": 0, "limit": 0.0, "numberPhases": 3},
                {"startPeriod": 2700, "limit": 10.0, "numberPhases": 3},
            ]
        assert sent["chargingProfile"]["validTo"] == "2030-06-01T14:00:00Z"
        assert sent == view.last_profile.payload if view.last_profile else False


async def test_node_charger_with_wrong_password_is_refused() -> None:
    cfg = site([{"id": "node-cp", "auth": {"password_hash": PASSWORD_HASH}}])
    async with (
        running_server(cfg) as (server, _),
        node_charger(server.port, "node-cp", ["ocpp2.1"], password="wrong") as charger,
    ):
        opened = await charger.opened()
        assert opened["event"] == "connect_failed" and "Unauthorized" in opened["message"]


async def test_node_charger_rejecting_profiles_is_recorded() -> None:
    async with (
        running_server(site([{"id": "node-cp"}]), clock=ManualClock(T0)) as (server, _),
        node_charger(
            server.port, "node-cp", ["ocpp2.1"], answers={"SetChargingProfile": "Rejected"}
        ) as charger,
    ):
        await charger.opened()
        await charger.call(
            "TransactionEvent",
            {
                "eventType": "Started",
                "timestamp": iso(T0),
                "triggerReason": "Authorized",
                "seqNo": 0,
                "transactionInfo": {"transactionId": "t"},
                "evse": {"id": 1},
            },
        )
        schedule = ChargerSchedule(
            "node-cp", T0, T0 + timedelta(hours=1), (SchedulePeriod(timedelta(0), 3000, 11000),)
        )
        record = await server.apply_schedule(schedule)
        assert record.status is ProfileStatus.REJECTED
        view = server.charger("node-cp")
        assert view is not None and view.last_profile is record
        # It talked without booting, so it was re-synced; its strict schemas accept our triggers.
        await wait_until(lambda: len(charger.calls("TriggerMessage")) == 2, what="re-sync triggers")
        assert [c["requestedMessage"] for c in charger.calls("TriggerMessage")] == [
            "StatusNotification",
            "TransactionEvent",
        ]
