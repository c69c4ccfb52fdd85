"""A virtual wallbox with a car for hardware-in-the-loop runs against the real daemon.

:class:`VirtualCharger` is an OCPP 1.6, 2.0.1 or 2.1 charge point on a real websocket: it boots,
reports its status, authorises and runs a transaction when a :class:`~sim.hil.car.VirtualCar` is
plugged in, samples its meter (power, energy registers, the car's SoC when the car tells it) and
follows the charging profiles it is sent — the current period of the transaction's TxProfile, else
the TxDefaultProfile, else the car's maximum — through :class:`sim.charger_model.ChargerModel`
(below the minimum it pauses, above the maximum it caps, phases, no discharge unless
bidirectional), the car's own limits (taper near full, empty, full) and a ramp of ``ramp_s``.
Energy moves the car's SoC with its efficiencies. :class:`Faults` makes it answer profiles Rejected
or not at all, answer late, or reboot every so often. Every wait and timestamp uses its ``Clock``.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import uuid
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

from websockets.exceptions import WebSocketException

from controller.clock import Clock, SystemClock
from controller.config import ChargerConfig, OcppVersion, SiteConfig
from sim.charger_model import ChargerModel
from sim.hil import frames
from sim.hil.car import VirtualCar
from sim.hil.connection import ChargePoint
from sim.hil.drive import Drive
from sim.hil.faults import Faults, configure_answer, rejected
from sim.hil.link import LinkClosed, ProtocolStats
from sim.hil.profiles import StoredProfile, in_force, parse_profile

__all__ = ["Faults", "ProtocolStats", "VirtualCharger"]

Json = dict[str, Any]


class VirtualCharger(ChargePoint):
    """One charge point with one EVSE (the configured ``evse_id``) and at most one car."""

    def __init__(
        self,
        charger_id: str,
        version: OcppVersion,
        url: str,
        config: ChargerConfig,
        *,
        site: SiteConfig | None = None,
        car: VirtualCar | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        faults: Faults | None = None,
        ramp_s: float = 3.0,
        tick_s: float = 0.25,
        meter_interval_s: float | None = None,
        call_timeout_s: float = 10.0,
        id_tag: str = "HIL0001",
        password: str | None = None,
    ) -> None:
        super().__init__(charger_id, version, url, clock or SystemClock(), call_timeout_s, password)
        self.config = config
        self.site = site
        self.car = car
        self.rng = rng or random.Random(0)
        self.faults = faults or Faults()
        self.tick_s = tick_s
        self.meter_interval_s = meter_interval_s
        """Fixed sampling period; None: what the CSMS configures (default 10 s)."""
        self.configured_interval_s = 10.0
        self.id_tag = id_tag
        self.departure: datetime | None = None
        self.received: list[tuple[float, str, Json]] = []
        """Every CSMS CALL: (clock monotonic, action, payload)."""
        self.transaction_id: str | None = None
        self.transaction_start: datetime | None = None
        self.profiles: dict[str, StoredProfile] = {}
        """The profiles in force by purpose (TxProfile, TxDefaultProfile)."""
        self.drive = Drive(self.clock, ramp_s, self.stats)
        self._seq = itertools.count()

    @classmethod
    def from_site(
        cls, site: SiteConfig, charger_id: str, version: OcppVersion, url: str, **kw: Any
    ) -> VirtualCharger:
        charger = site.charger(charger_id)
        if charger is None:
            raise KeyError(f"no charger {charger_id!r} in the site config")
        return cls(charger_id, version, url, charger, site=site, **kw)

    # ------------------------------------------------------------------ what it does now

    @property
    def power_w(self) -> float:
        """Power now at the charger (+ charging the car, - discharging)."""
        return self.drive.power_w

    @property
    def target_w(self) -> float:
        """The power the charger is heading for (after the ramp)."""
        return self.drive.target_w

    @property
    def in_transaction(self) -> bool:
        return self.transaction_id is not None

    @property
    def energy_import_wh(self) -> float:
        return self.drive.energy_import_wh

    @property
    def energy_export_wh(self) -> float:
        return self.drive.energy_export_wh

    def model(self) -> ChargerModel:
        car = self.car
        return ChargerModel(
            self.config, car.max_charge_w if car else 0.0, car.max_discharge_w if car else 0.0
        )

    def _wanted_w(self) -> float:
        car = self.car
        if car is None or self.transaction_id is None:
            return 0.0
        model = self.model()
        asked = in_force(self.profiles, self.clock.now(), self.transaction_start)
        power, phases = asked if asked is not None else (car.max_charge_w, model.phases)
        return car.limit_w(model.delivered_w(power, phases))

    def advance(self) -> None:
        """Bring the power stage, its energy counters and the car's SoC up to now."""
        self.drive.advance(self.car, self._wanted_w)

    def reading(self) -> frames.MeterReading:
        self.advance()
        car = self.car
        soc = round(car.soc_percent, 1) if car is not None and car.reports_soc else None
        return frames.MeterReading(
            self.clock.now(), self.power_w, self.energy_import_wh, self.energy_export_wh, soc
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, boot, report status; then sample, heartbeat and (with faults) reboot in the background."""
        try:
            await self.open()
            await self.boot("PowerUp")
            await self.send_status()
        except BaseException:
            await self.close()
            raise
        for work in (self._physics(), self._meter_loop(), self.heartbeat_loop(), self._fault_loop()):
            self.spawn(work, self.tasks)

    async def send_status(self) -> None:
        if self.car is None:
            name = "Available"
        else:
            name = "Charging" if self.transaction_id and self.target_w != 0 else "SuspendedEVSE"
        await self.call(*frames.status(self.version, self.config.evse_id, name, self.clock.now()))

    # ------------------------------------------------------------------ the car

    async def plug_in(self, car: VirtualCar | None = None, departure: datetime | None = None) -> str:
        """Cable in: status, Authorize, start a transaction (2.1: NotifyEVChargingNeeds). Its id."""
        if car is not None:
            self.car = car
        if self.car is None:
            raise ValueError("plug_in needs a car")
        self.departure = departure
        await self.call(*frames.status(self.version, self.config.evse_id, "Preparing", self.clock.now()))
        await self.call(*frames.authorize(self.version, self.id_tag))
        await self._start_transaction()
        return str(self.transaction_id)

    async def _start_transaction(self) -> None:
        evse = self.config.evse_id
        proposed = f"{self.charger_id}-{uuid.uuid4().hex[:8]}"
        action, payload = frames.start_transaction(
            self.version, evse, self.id_tag, proposed, next(self._seq), self.reading()
        )
        answer = await self.call(action, payload)
        self.transaction_id = str(answer["transactionId"]) if self.version is OcppVersion.V16 else proposed
        self.transaction_start = self.clock.now()
        self.advance()
        car = self.car
        if self.version is OcppVersion.V21 and car is not None:
            discharge_w = car.max_discharge_w if self.config.bidirectional else 0.0
            needs = frames.charging_needs(
                evse, self.clock.now(), self.departure, car.max_charge_w, discharge_w, car.target_soc_percent
            )
            await self.call(*needs)
        await self.send_status()
        await self.send_meter_values()

    async def unplug(self) -> None:
        """Cable out: the transaction ends (EVDisconnected), the EVSE is Available again."""
        ended, reading = self._forget_transaction()
        self.car = None
        self.departure = None
        if ended is not None:
            await self.call(
                *frames.stop_transaction(self.version, ended, next(self._seq), reading, "EVDisconnected")
            )
        await self.send_status()

    def _forget_transaction(self) -> tuple[str | None, frames.MeterReading]:
        """Power off at once, the transaction and its profile gone; (its id, the last reading)."""
        ended, self.transaction_id, self.transaction_start = self.transaction_id, None, None
        self.profiles.pop("TxProfile", None)
        self.drive.cut(self.car)
        return ended, self.reading()

    # ------------------------------------------------------------------ faults

    async def reboot(self, offline_s: float = 1.0) -> None:
        """Power-cycle: the socket closes, the power drops, the transaction ends (Reboot, reported after
        the new boot), its TxProfile is lost; a car still plugged in starts a new transaction."""
        async with self.connection_lock:
            ended, reading = self._forget_transaction()
            await self.drop()
            await self.clock.sleep(offline_s)
            await self.open()
            await self.boot("PowerUp" if self.version is OcppVersion.V16 else "LocalReset")
            self.stats.reconnects += 1
            await self.send_status()
            if ended is not None:
                await self.call(
                    *frames.stop_transaction(self.version, ended, next(self._seq), reading, "Reboot")
                )
            if self.car is not None:
                await self.call(*frames.authorize(self.version, self.id_tag))
                await self._start_transaction()

    async def _fault_loop(self) -> None:
        """Reboots on ``faults.reboot_every_s``; a connection the CSMS closed is opened again."""
        while True:
            period = self.faults.reboot_every_s
            await self.clock.sleep(period if period else 1.0)
            if period:
                with contextlib.suppress(LinkClosed, OSError, TimeoutError, WebSocketException):
                    await self.reboot()
            else:
                await self.keep_connected()

    # ------------------------------------------------------------------ background

    async def _physics(self) -> None:
        while True:
            self.advance()
            await self.clock.sleep(self.tick_s)

    async def _meter_loop(self) -> None:
        while True:
            await self.clock.sleep(self.meter_interval_s or self.configured_interval_s)
            if self.transaction_id is not None and self.connected and not self.connection_lock.locked():
                await self.quietly(self.send_meter_values())

    async def send_meter_values(self, trigger: str = "MeterValuePeriodic") -> None:
        reading = self.reading()
        transaction = self.transaction_id
        if self.version is OcppVersion.V16 or transaction is None:
            await self.call(*frames.meter_values(self.version, self.config.evse_id, transaction, reading))
        else:
            await self.call(
                *frames.transaction_updated(self.version, transaction, next(self._seq), reading, trigger)
            )

    # ------------------------------------------------------------------ CALLs from the CSMS

    async def on_call(self, message_id: str, action: str, payload: Json) -> None:
        link = self.link
        if link is None:
            return
        arrival = self.clock.monotonic()
        self.received.append((arrival, action, payload))
        then: Coroutine[Any, Any, Any] | None = None
        if action == "SetChargingProfile":
            answer = self._set_profile(payload, arrival)
            if answer is None:
                return  # no answer: the CSMS times out
        elif action == "TriggerMessage":
            answer, then = self.trigger(payload)
        elif action in ("ChangeConfiguration", "SetVariables"):
            answer = self._configure(action, payload)
        elif action == "ClearChargingProfile":
            answer = {"status": "Accepted"}
            criteria = payload.get("chargingProfileCriteria") or payload
            self.profiles.pop(criteria.get("chargingProfilePurpose", "TxProfile"), None)
        elif action == "Reset":
            answer, then = {"status": "Accepted"}, self.reboot()
        else:
            await link.reply_error(message_id, "NotSupported", f"{action} is not supported by this charger")
            return
        # Follow-ups (a triggered message, a reset) go out only once the answer is on the wire.
        self.spawn(self.answer(link, message_id, answer, then, self.faults.response_delay_s))

    def _set_profile(self, payload: Json, arrival: float) -> Json | None:
        self.stats.profiles_received += 1
        try:
            profile = parse_profile(self.version, payload, self.config)
        except (KeyError, ValueError, TypeError, IndexError):
            return self._rejected("InvalidValue")
        verdict = self.faults.verdict(profile.purpose, self.rng)
        if verdict == "timeout":
            self.stats.timeouts += 1
            return None
        if verdict == "reject":
            return self._rejected("InjectedFault")
        running = self.transaction_id
        if profile.purpose == "TxProfile" and (
            running is None or profile.transaction_id not in (None, running)
        ):
            return self._rejected("TxNotFound")
        self.profiles[profile.purpose] = profile
        self.stats.profiles_accepted += 1
        self.drive.expect(arrival)
        self.advance()
        return {"status": "Accepted"}

    def _rejected(self, reason: str) -> Json:
        self.stats.rejections += 1
        return rejected(self.version, reason)

    def _configure(self, action: str, payload: Json) -> Json:
        interval, answer = configure_answer(action, payload)
        if interval is not None:
            self.configured_interval_s = max(1.0, interval)
        return answer
