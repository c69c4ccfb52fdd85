"""OCPP 1.6J adapter: connectors are EVSEs, the CSMS numbers transactions, SoC arrives as a string."""

from __future__ import annotations

import itertools
import time
from typing import Any

from controller.clock import Clock
from controller.config import OcppVersion
from controller.ocpp.base import SAMPLED_MEASURANDS, Adapter, SessionHooks
from controller.ocpp.events import BootNotified, EventSink, TransactionEnded
from controller.ocpp.model import BootInfo, ChargerModel
from controller.ocpp.rpc import Reply, RpcPeer

__all__ = ["V16Adapter"]

# 1.6 transaction ids are integers chosen by the CSMS; start from the wall clock so a restarted
# controller does not hand out ids a charger still remembers.
_TRANSACTION_IDS = itertools.count(int(time.time()) % 1_000_000_000)


class V16Adapter(Adapter):
    version = OcppVersion.V16

    def __init__(self, model: ChargerModel, clock: Clock, emit: EventSink, hooks: SessionHooks) -> None:
        super().__init__(model, clock, emit, hooks)
        self._routes = {
            "BootNotification": self._boot,
            "Heartbeat": lambda _: Reply({"currentTime": self.now_text()}),
            "StatusNotification": self._status,
            "Authorize": lambda payload: Reply(self._id_tag_info(payload["idTag"])),
            "StartTransaction": self._start,
            "StopTransaction": self._stop,
            "MeterValues": self._meter_values,
            "DataTransfer": lambda _: Reply({"status": "UnknownVendorId"}),
        }

    def _id_tag_info(self, id_tag: str) -> dict[str, Any]:
        return {"idTagInfo": {"status": "Accepted" if self.token_accepted(id_tag) else "Invalid"}}

    def _boot(self, payload: dict[str, Any]) -> Reply:
        boot = BootInfo(
            vendor=payload["chargePointVendor"],
            model=payload["chargePointModel"],
            serial_number=payload.get("chargePointSerialNumber") or payload.get("chargeBoxSerialNumber"),
            firmware_version=payload.get("firmwareVersion"),
            at=self.clock.now(),
        )
        self.model.boot = boot
        self.log.info("ocpp_boot", vendor=boot.vendor, model=boot.model)
        self.emit(BootNotified(self.model.charger_id, boot))
        return Reply(
            {"status": "Accepted", "currentTime": self.now_text(), "interval": self.heartbeat_interval_s},
            then=self.hooks.after_boot,
        )

    def _status(self, payload: dict[str, Any]) -> Reply:
        connector_id = payload["connectorId"]
        at = self.timestamp(payload.get("timestamp"))
        self.record_status(connector_id, connector_id, payload["status"], at)
        return Reply({})

    def _start(self, payload: dict[str, Any]) -> Reply:
        connector_id = payload["connectorId"]
        at = self.timestamp(payload["timestamp"])
        transaction_id = str(next(_TRANSACTION_IDS))
        self.start_transaction(
            connector_id, transaction_id, at, payload["idTag"], float(payload["meterStart"])
        )
        # An Invalid idTag still gets its transaction id; the charger then stops the transaction.
        return Reply({"transactionId": int(transaction_id), **self._id_tag_info(payload["idTag"])})

    def _stop(self, payload: dict[str, Any]) -> Reply:
        transaction_id = str(payload["transactionId"])
        at = self.timestamp(payload["timestamp"])
        sample = self.meter_sample(payload.get("transactionData"))
        reason = payload.get("reason")
        meter_stop_wh = float(payload["meterStop"])
        evse = self.model.find_transaction(transaction_id)
        if evse is None:
            # Not a transaction of this process (a stale retry, another CSMS's, or one started before
            # a restart and not re-synced): its connector is unknown, so its meter values and its
            # end belong to no EVSE. Reported with EVSE 0; the app only ends the car's session if
            # the store has this very transaction open.
            self.log.warning("ocpp_stop_unknown_transaction", transaction_id=transaction_id, reason=reason)
            self.emit(TransactionEnded(self.model.charger_id, 0, transaction_id, at, reason, meter_stop_wh))
        else:
            self.record_meter(evse.evse_id, transaction_id, sample)
            self.end_transaction(evse.evse_id, transaction_id, at, reason, meter_stop_wh)
        id_tag = payload.get("idTag")
        return Reply(self._id_tag_info(id_tag) if id_tag else {})

    def _meter_values(self, payload: dict[str, Any]) -> Reply:
        connector_id = payload["connectorId"]
        sample = self.meter_sample(payload["meterValue"])
        transaction = payload.get("transactionId")
        transaction_id = None if transaction is None else str(transaction)
        evse = self.model.evses.get(connector_id)
        if transaction_id is not None and connector_id > 0 and (evse is None or evse.transaction_id is None):
            # A transaction this process did not see start (the controller restarted, or a re-sync
            # trigger): adopt it, so that profiles can target it.
            at = sample.at if sample else self.clock.now()
            self.start_transaction(connector_id, transaction_id, at, None, None)
        self.record_meter(connector_id, transaction_id, sample)
        return Reply({})

    def resync_triggers(self, evse_id: int) -> list[dict[str, Any]]:
        # MeterValues on the connector carry the running transaction's id, if there is one.
        return [
            {"requestedMessage": "StatusNotification"},
            {"requestedMessage": "MeterValues", "connectorId": evse_id},
        ]

    async def configure_sampling(self, peer: RpcPeer, interval_s: int) -> None:
        for measurands in SAMPLED_MEASURANDS:
            result = await peer.call(
                "ChangeConfiguration", {"key": "MeterValuesSampledData", "value": measurands}
            )
            if result["status"] in ("Accepted", "RebootRequired"):
                break
            self.log.info("ocpp_measurands_refused", measurands=measurands, status=result["status"])
        result = await peer.call(
            "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": str(interval_s)}
        )
        if result["status"] not in ("Accepted", "RebootRequired"):
            self.log.warning("ocpp_sample_interval_refused", status=result["status"])
