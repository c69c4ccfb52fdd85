"""What a virtual charger sends, per OCPP version: (action, payload) pairs in camelCase, as on the wire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.config import OcppVersion

__all__ = [
    "MeterReading",
    "authorize",
    "boot",
    "charging_needs",
    "iso",
    "meter_values",
    "start_transaction",
    "status",
    "stop_transaction",
    "transaction_updated",
]

Json = dict[str, Any]
Call = tuple[str, Json]
V16 = OcppVersion.V16


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True, slots=True)
class MeterReading:
    at: datetime
    power_w: float
    import_wh: float
    export_wh: float
    soc_percent: float | None


def _sampled_16(reading: MeterReading, context: str) -> list[Json]:
    def value(number: float, measurand: str, unit: str) -> Json:
        return {"value": f"{number:.1f}", "context": context, "measurand": measurand, "unit": unit}

    rows = [
        value(max(reading.power_w, 0.0), "Power.Active.Import", "W"),
        value(max(-reading.power_w, 0.0), "Power.Active.Export", "W"),
        value(reading.import_wh, "Energy.Active.Import.Register", "Wh"),
        value(reading.export_wh, "Energy.Active.Export.Register", "Wh"),
    ]
    if reading.soc_percent is not None:
        rows.append({**value(reading.soc_percent, "SoC", "Percent"), "location": "EV"})
    return rows


def _sampled_2x(reading: MeterReading, context: str) -> list[Json]:
    def value(number: float, measurand: str, unit: str) -> Json:
        return {
            "value": round(number, 1),
            "context": context,
            "measurand": measurand,
            "unitOfMeasure": {"unit": unit},
        }

    rows = [
        value(max(reading.power_w, 0.0), "Power.Active.Import", "W"),
        value(max(-reading.power_w, 0.0), "Power.Active.Export", "W"),
        value(reading.import_wh, "Energy.Active.Import.Register", "Wh"),
        value(reading.export_wh, "Energy.Active.Export.Register", "Wh"),
    ]
    if reading.soc_percent is not None:
        rows.append({**value(reading.soc_percent, "SoC", "Percent"), "location": "EV"})
    return rows


def meter_value(version: OcppVersion, reading: MeterReading, context: str = "Sample.Periodic") -> list[Json]:
    sampled = _sampled_16 if version is V16 else _sampled_2x
    return [{"timestamp": iso(reading.at), "sampledValue": sampled(reading, context)}]


def boot(version: OcppVersion, charger_id: str, reason: str) -> Call:
    if version is V16:
        return "BootNotification", {
            "chargePointVendor": "V2X-Sim",
            "chargePointModel": "VirtualWallbox",
            "chargePointSerialNumber": charger_id,
            "firmwareVersion": "hil-1",
        }
    station = {"vendorName": "V2X-Sim", "model": "VirtualWallbox", "serialNumber": charger_id}
    return "BootNotification", {"chargingStation": {**station, "firmwareVersion": "hil-1"}, "reason": reason}


def status(version: OcppVersion, evse_id: int, name: str, at: datetime) -> Call:
    """StatusNotification; ``name`` as 1.6 says it (Available, Preparing, Charging, SuspendedEVSE,
    Finishing), on 2.x Available or Occupied."""
    if version is V16:
        return "StatusNotification", {
            "connectorId": evse_id,
            "errorCode": "NoError",
            "status": name,
            "timestamp": iso(at),
        }
    return "StatusNotification", {
        "timestamp": iso(at),
        "connectorStatus": "Available" if name == "Available" else "Occupied",
        "evseId": evse_id,
        "connectorId": 1,
    }


def _token(id_tag: str) -> Json:
    return {"idToken": id_tag, "type": "ISO14443"}


def authorize(version: OcppVersion, id_tag: str) -> Call:
    if version is V16:
        return "Authorize", {"idTag": id_tag}
    return "Authorize", {"idToken": _token(id_tag)}


def _charging_state(power_w: float) -> str:
    return "Charging" if power_w != 0.0 else "SuspendedEVSE"


def start_transaction(
    version: OcppVersion, evse_id: int, id_tag: str, transaction_id: str, seq_no: int, reading: MeterReading
) -> Call:
    """1.6 StartTransaction (``transaction_id`` unused: the CSMS numbers it) or 2.x TransactionEvent Started."""
    if version is V16:
        return "StartTransaction", {
            "connectorId": evse_id,
            "idTag": id_tag,
            "meterStart": round(reading.import_wh),
            "timestamp": iso(reading.at),
        }
    return "TransactionEvent", {
        "eventType": "Started",
        "timestamp": iso(reading.at),
        "triggerReason": "CablePluggedIn",
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": transaction_id, "chargingState": "EVConnected"},
        "evse": {"id": evse_id, "connectorId": 1},
        "idToken": _token(id_tag),
        "meterValue": meter_value(version, reading, "Transaction.Begin"),
    }


def transaction_updated(
    version: OcppVersion, transaction_id: str, seq_no: int, reading: MeterReading, trigger: str
) -> Call:
    """2.x TransactionEvent Updated with the meter values (``trigger``: MeterValuePeriodic, Trigger …)."""
    if version is V16:
        raise ValueError("OCPP 1.6 has no TransactionEvent")
    return "TransactionEvent", {
        "eventType": "Updated",
        "timestamp": iso(reading.at),
        "triggerReason": trigger,
        "seqNo": seq_no,
        "transactionInfo": {
            "transactionId": transaction_id,
            "chargingState": _charging_state(reading.power_w),
        },
        "meterValue": meter_value(version, reading),
    }


def stop_transaction(
    version: OcppVersion, transaction_id: str, seq_no: int, reading: MeterReading, reason: str
) -> Call:
    """1.6 StopTransaction or 2.x TransactionEvent Ended (``reason``: EVDisconnected, Reboot …)."""
    if version is V16:
        return "StopTransaction", {
            "transactionId": int(transaction_id),
            "meterStop": round(reading.import_wh),
            "timestamp": iso(reading.at),
            "reason": reason,
            "transactionData": meter_value(version, reading, "Transaction.End"),
        }
    return "TransactionEvent", {
        "eventType": "Ended",
        "timestamp": iso(reading.at),
        "triggerReason": "EVDeparted" if reason == "EVDisconnected" else "ResetCommand",
        "seqNo": seq_no,
        "transactionInfo": {
            "transactionId": transaction_id,
            "chargingState": "Idle",
            "stoppedReason": reason,
        },
        "meterValue": meter_value(version, reading, "Transaction.End"),
    }


def meter_values(
    version: OcppVersion, evse_id: int, transaction_id: str | None, reading: MeterReading
) -> Call:
    """MeterValues (1.6 with the transaction id, 2.x on the EVSE)."""
    if version is V16:
        payload: Json = {"connectorId": evse_id, "meterValue": meter_value(version, reading)}
        if transaction_id is not None:
            payload["transactionId"] = int(transaction_id)
        return "MeterValues", payload
    return "MeterValues", {"evseId": evse_id, "meterValue": meter_value(version, reading)}


def charging_needs(
    evse_id: int,
    at: datetime,
    departure: datetime | None,
    max_charge_w: float,
    max_discharge_w: float,
    target_soc_percent: float | None,
) -> Call:
    """2.1 NotifyEVChargingNeeds: AC_BPT with V2X parameters when the car may discharge."""
    parameters: Json = {"maxChargePower": round(max_charge_w)}
    if max_discharge_w > 0:
        parameters["maxDischargePower"] = round(max_discharge_w)
    if target_soc_percent is not None:
        parameters["targetSoC"] = round(target_soc_percent)
    needs: Json = {
        "requestedEnergyTransfer": "AC_BPT" if max_discharge_w > 0 else "AC_three_phase",
        "v2xChargingParameters": parameters,
    }
    if departure is not None:
        needs["departureTime"] = iso(departure)
    return "NotifyEVChargingNeeds", {"evseId": evse_id, "timestamp": iso(at), "chargingNeeds": needs}
