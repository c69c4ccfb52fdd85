"""Misbehaviour on purpose, and the answers a virtual charger gives the CSMS's configuration calls."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from controller.config import OcppVersion

__all__ = ["Faults", "Verdict", "configure_answer", "rejected"]

Json = dict[str, Any]
Verdict = Literal["accept", "reject", "timeout"]


@dataclass
class Faults:
    """What goes wrong, and how often; change the fields at any time."""

    reject_probability: float = 0.0
    """SetChargingProfile (of ``purposes``) answered Rejected."""
    timeout_probability: float = 0.0
    """SetChargingProfile (of ``purposes``) never answered (and not applied)."""
    response_delay_s: float = 0.0
    """Every answer to the CSMS goes out this late (clock seconds)."""
    reboot_every_s: float | None = None
    """Reboot on this period (clock seconds)."""
    purposes: frozenset[str] = frozenset({"TxProfile"})

    def verdict(self, purpose: str, rng: random.Random) -> Verdict:
        """How a SetChargingProfile of ``purpose`` is answered (one draw of ``rng`` when it may fail)."""
        if purpose not in self.purposes:
            return "accept"
        draw = rng.random()
        if draw < self.timeout_probability:
            return "timeout"
        if draw < self.timeout_probability + self.reject_probability:
            return "reject"
        return "accept"


def rejected(version: OcppVersion, reason: str) -> Json:
    """A SetChargingProfile refusal (2.x with its reason code)."""
    if version is OcppVersion.V16:
        return {"status": "Rejected"}
    return {"status": "Rejected", "statusInfo": {"reasonCode": reason}}


def configure_answer(action: str, payload: Json) -> tuple[float | None, Json]:
    """The answer to 1.6 ChangeConfiguration / 2.x SetVariables (all Accepted) and the meter
    sampling interval it sets, if it does."""
    if action == "ChangeConfiguration":
        key = payload.get("key")
        interval = float(payload["value"]) if key == "MeterValueSampleInterval" else None
        return interval, {"status": "Accepted"}
    interval = None
    results = []
    for item in payload.get("setVariableData", []):
        if item["variable"]["name"] == "TxUpdatedInterval":
            interval = float(item["attributeValue"])
        results.append(
            {"attributeStatus": "Accepted", "component": item["component"], "variable": item["variable"]}
        )
    return interval, {"setVariableResult": results}
