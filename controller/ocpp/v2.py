"""OCPP 2.0.1 and 2.1 adapter: TransactionEvent, device-model variables, EV charging needs (V2X on 2.1)."""

from __future__ import annotations

from typing import Any

from controller.clock import Clock
from controller.config import OcppVersion
from controller.ocpp.base import SAMPLED_MEASURANDS, Adapter, SessionHooks
from controller.ocpp.events import BootNotified, ChargingNeedsReported, EventSink
from controller.ocpp.meter import MeterSample
from controller.ocpp.model import BootInfo, ChargerModel, ChargingNeeds
from controller.ocpp.rpc import OcppCallError, Reply, RpcPeer

__all__ = ["V2Adapter"]


def _float(container: dict[str, Any] | None, key: str) -> float | None:
    if not container or key not in container:
        return None
    return float(container[key])


def _magnitude(container: dict[str, Any] | None, key: str) -> float | None:
    # Discharge powers appear with either sign in the wild; the domain wants magnitudes.
    value = _float(container, key)
    return None if value is None else abs(value)


class V2Adapter(Adapter):
    def __init__(
        self,
        version: OcppVersion,
        model: ChargerModel,
        clock: Clock,
        emit: EventSink,
        hooks: SessionHooks,
    ) -> None:
        if version is OcppVersion.V16:
            raise ValueError("V2Adapter speaks OCPP 2.0.1 and 2.1 only")
        self.version = version
        super().__init__(model, clock, emit, hooks)
        self._routes = {
            "BootNotification": self._boot,
            "Heartbeat": lambda _: Reply({"currentTime": self.now_text()}),
            "StatusNotification": self._status,
            "Authorize": lambda payload: Reply(self._id_token_info(payload["idToken"])),
            "TransactionEvent": self._transaction_event,
            "MeterValues": self._meter_values,
            "NotifyEVChargingNeeds": self._charging_needs,
            "NotifyReport": self._report,
            "DataTransfer": lambda _: Reply({"status": "UnknownVendorId"}),
        }

    def _id_token_info(self, token: dict[str, Any]) -> dict[str, Any]:
        accepted = self.token_accepted(token.get("idToken"), token.get("type"))
        return {"idTokenInfo": {"status": "Accepted" if accepted else "Unknown"}}

    def _boot(self, payload: dict[str, Any]) -> Reply:
        station = payload["chargingStation"]
        boot = BootInfo(
            vendor=station["vendorName"],
            model=station["model"],
            serial_number=station.get("serialNumber"),
            firmware_version=station.get("firmwareVersion"),
            at=self.clock.now(),
        )
        self.model.boot = boot
        self.log.info("ocpp_boot", vendor=boot.vendor, model=boot.model, reason=payload.get("reason"))
        self.emit(BootNotified(self.model.charger_id, boot))
        return Reply(
            {"status": "Accepted", "currentTime": self.now_text(), "interval": self.heartbeat_interval_s},
            then=self.hooks.after_boot,
        )

    def _status(self, payload: dict[str, Any]) -> Reply:
        at = self.timestamp(payload["timestamp"])
        self.record_status(payload["evseId"], payload["connectorId"], payload["connectorStatus"], at)
        return Reply({})

    def _transaction_event(self, payload: dict[str, Any]) -> Reply:
        info = payload["transactionInfo"]
        transaction_id: str = info["transactionId"]
        at = self.timestamp(payload["timestamp"])
        sample = self.meter_sample(payload.get("meterValue"))
        evse_field = payload.get("evse")
        known = self.model.find_transaction(transaction_id)
        if evse_field is not None:
            evse_id: int = evse_field["id"]
        elif known is not None:
            evse_id = known.evse_id
        else:
            evse_id = self.model.config.evse_id
        token = payload.get("idToken")
        id_token = token.get("idToken") if token else None
        event_type = payload["eventType"]
        if event_type != "Ended" and (known is None or known.evse_id != evse_id):
            # Started, or Updated for a transaction we missed (e.g. the controller restarted).
            meter_start = sample.energy_import_wh if sample else None
            self.start_transaction(evse_id, transaction_id, at, id_token, meter_start)
        self.record_meter(evse_id, transaction_id, sample)
        if event_type == "Ended":
            meter_stop = sample.energy_import_wh if sample else None
            self.end_transaction(evse_id, transaction_id, at, info.get("stoppedReason"), meter_stop)
        return Reply(self._id_token_info(token) if token else {})

    def _meter_values(self, payload: dict[str, Any]) -> Reply:
        evse_id = payload["evseId"]  # 0 is the station's main meter
        sample = self.meter_sample(payload["meterValue"])
        evse = self.model.evses.get(evse_id)
        self.record_meter(evse_id, evse.transaction_id if evse else None, sample)
        return Reply({})

    def _charging_needs(self, payload: dict[str, Any]) -> Reply:
        evse_id = payload["evseId"]
        needs = payload["chargingNeeds"]
        at = self.timestamp(payload.get("timestamp"))
        departure = needs.get("departureTime")
        ac = needs.get("acChargingParameters")
        dc = needs.get("dcChargingParameters")
        v2x = needs.get("v2xChargingParameters")
        energy = _float(ac, "energyAmount")
        if energy is None:
            energy = _float(dc, "energyAmount")
        if energy is None:
            energy = _float(v2x, "evTargetEnergyRequest")
        soc_percent = _float(dc, "stateOfCharge")
        target_soc = _float(v2x, "targetSoC")
        for name, value in (("stateOfCharge", soc_percent), ("targetSoC", target_soc)):
            if value is not None and not 0 <= value <= 100:
                raise OcppCallError("PropertyConstraintViolation", f"{name} {value} is outside 0-100 %")
        # A reported 0 W is a limit, not "not reported": only a missing V2X value falls back to DC.
        max_charge_w = _float(v2x, "maxChargePower")
        if max_charge_w is None:
            max_charge_w = _float(dc, "evMaxPower")
        parsed = ChargingNeeds(
            evse_id=evse_id,
            at=at,
            requested_energy_transfer=needs["requestedEnergyTransfer"],
            departure_time=None if departure is None else self.timestamp(departure),
            target_soc_percent=target_soc,
            soc_percent=soc_percent,
            energy_request_wh=energy,
            min_energy_request_wh=_float(v2x, "evMinEnergyRequest"),
            max_energy_request_wh=_float(v2x, "evMaxEnergyRequest"),
            min_v2x_energy_request_wh=_float(v2x, "evMinV2XEnergyRequest"),
            max_v2x_energy_request_wh=_float(v2x, "evMaxV2XEnergyRequest"),
            max_charge_power_w=max_charge_w,
            min_charge_power_w=_float(v2x, "minChargePower"),
            max_discharge_power_w=_magnitude(v2x, "maxDischargePower"),
            min_discharge_power_w=_magnitude(v2x, "minDischargePower"),
            ev_capacity_wh=_float(dc, "evEnergyCapacity"),
        )
        evse = self.evse(evse_id, "charging needs")
        if evse is None:
            return Reply({"status": "Rejected"})
        evse.charging_needs = parsed
        if soc_percent is not None:
            self.record_meter(evse_id, evse.transaction_id, MeterSample(at=at, soc_percent=soc_percent))
        self.log.info(
            "ocpp_charging_needs",
            evse_id=evse_id,
            departure=departure,
            target_soc_percent=target_soc,
            max_discharge_power_w=parsed.max_discharge_power_w,
        )
        self.emit(ChargingNeedsReported(self.model.charger_id, parsed))
        return Reply({"status": "Accepted"})

    def _report(self, payload: dict[str, Any]) -> Reply:
        for item in payload.get("reportData", []):
            name = f"{item['component']['name']}.{item['variable']['name']}"
            for attribute in item["variableAttribute"]:
                if attribute.get("type", "Actual") == "Actual" and "value" in attribute:
                    self.model.reported_variables[name] = attribute["value"]
        return Reply({})

    def resync_triggers(self, evse_id: int) -> list[dict[str, Any]]:
        # A triggered TransactionEvent (Updated, triggerReason Trigger) names the running transaction.
        return [
            {"requestedMessage": "StatusNotification", "evse": {"id": evse_id, "connectorId": 1}},
            {"requestedMessage": "TransactionEvent", "evse": {"id": evse_id}},
        ]

    async def _set_variable(self, peer: RpcPeer, component: str, variable: str, value: str) -> str:
        result = await peer.call(
            "SetVariables",
            {
                "setVariableData": [
                    {
                        "component": {"name": component},
                        "variable": {"name": variable},
                        "attributeValue": value,
                    }
                ]
            },
        )
        status: str = result["setVariableResult"][0]["attributeStatus"]
        return status

    async def configure_sampling(self, peer: RpcPeer, interval_s: int) -> None:
        for measurands in SAMPLED_MEASURANDS:
            status = await self._set_variable(peer, "SampledDataCtrlr", "TxUpdatedMeasurands", measurands)
            if status in ("Accepted", "RebootRequired"):
                break
            self.log.info("ocpp_measurands_refused", measurands=measurands, status=status)
        status = await self._set_variable(peer, "SampledDataCtrlr", "TxUpdatedInterval", str(interval_s))
        if status not in ("Accepted", "RebootRequired"):
            self.log.warning("ocpp_sample_interval_refused", status=status)
