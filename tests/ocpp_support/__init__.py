"""Test chargers for the CSMS: the ``ocpp`` package's ChargePoint on a tapped socket, and a raw one.

``WireTap`` sits between the library and the websocket, so tests assert the exact frames on the
wire (not what the library turned them into) and can make the charger ignore chosen CALLs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, cast

import ocpp.v16
import ocpp.v21
import ocpp.v201
from ocpp.routing import on as untyped_on
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from controller.config import SiteConfig, parse_config
from controller.ocpp import OcppEvent, OcppServer
from controller.passwords import hash_password

_Handler = Callable[..., Any]
on = cast(Callable[[str], Callable[[_Handler], _Handler]], untyped_on)

PASSWORD = "charger-secret"
PASSWORD_HASH = hash_password(PASSWORD, iterations=1000)  # fast on purpose: tests only
T0 = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def site(chargers: list[dict[str, Any]], **ocpp_settings: Any) -> SiteConfig:
    tree: dict[str, Any] = {
        "site": {"grid": {"import_limit_kw": 17.3, "export_limit_kw": 10}},
        "chargers": chargers,
        "tariff": {"import": {"static_price_per_kwh": 0.3}},
        "ocpp": {"host": "127.0.0.1", "port": 9000, "call_timeout_s": 2, **ocpp_settings},
    }
    return parse_config(tree, env={})


async def wait_until(
    predicate: Callable[[], Any], timeout_s: float = 5.0, what: str = "condition", interval_s: float = 0.01
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(interval_s)


class Events:
    """Collects what the server emits; ``of(Type)`` filters."""

    def __init__(self) -> None:
        self.items: list[OcppEvent] = []

    def __call__(self, event: OcppEvent) -> None:
        self.items.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.items if isinstance(e, kind)]

    async def wait(self, kind: type[Any], count: int = 1, timeout_s: float = 5.0) -> list[Any]:
        await wait_until(lambda: len(self.of(kind)) >= count, timeout_s, f"{count} x {kind.__name__}")
        return self.of(kind)


@contextlib.asynccontextmanager
async def running_server(cfg: SiteConfig, **kwargs: Any) -> AsyncIterator[tuple[OcppServer, Events]]:
    events = Events()
    server = OcppServer(cfg, on_event=events, host="127.0.0.1", port=0, **kwargs)
    async with server:
        yield server, events


class WireTap:
    """A websocket as the ``ocpp`` library sees it; records raw frames and can swallow CALLs."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.sent: list[Any] = []
        self.received: list[Any] = []
        self.ignore_actions: set[str] = set()

    async def recv(self) -> str:
        while True:
            raw = await self.connection.recv()
            assert isinstance(raw, str)
            frame = json.loads(raw)
            self.received.append(frame)
            if frame[0] == 2 and frame[2] in self.ignore_actions:
                continue  # the charger "never answers" this one
            return raw

    async def send(self, raw: str) -> None:
        self.sent.append(json.loads(raw))
        await self.connection.send(raw)

    def calls(self, action: str) -> list[dict[str, Any]]:
        """Payloads of CALLs the server sent us for ``action``, in order."""
        return [f[3] for f in self.received if f[0] == 2 and f[2] == action]

    def profiles(self, purpose: str = "TxProfile") -> list[dict[str, Any]]:
        """SetChargingProfile payloads (any version) for ``purpose``, in order."""
        found = []
        for payload in self.calls("SetChargingProfile"):
            profile = payload.get("chargingProfile") or payload.get("csChargingProfiles") or {}
            if profile.get("chargingProfilePurpose") == purpose:
                found.append(payload)
        return found


def basic_auth(charger_id: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{charger_id}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


_LIBRARIES = {"1.6": ocpp.v16, "2.0.1": ocpp.v201, "2.1": ocpp.v21}


def _make_charge_point(version: str, charger_id: str, tap: WireTap, answers: dict[str, str]) -> Any:
    library = _LIBRARIES[version]
    base = library.ChargePoint
    call_result = library.call_result

    class TestChargePoint(base):  # type: ignore[misc, valid-type]
        @on("SetChargingProfile")
        def set_profile(self, **_: Any) -> Any:
            return call_result.SetChargingProfile(status=answers.get("SetChargingProfile", "Accepted"))

        @on("TriggerMessage")
        def trigger(self, **_: Any) -> Any:
            return call_result.TriggerMessage(status="Accepted")

        if version == "1.6":

            @on("ChangeConfiguration")
            def change_configuration(self, **_: Any) -> Any:
                return call_result.ChangeConfiguration(status=answers.get("ChangeConfiguration", "Accepted"))

        else:

            @on("SetVariables")
            def set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
                status = answers.get("SetVariables", "Accepted")
                return call_result.SetVariables(
                    set_variable_result=[
                        {
                            "attribute_status": status,
                            "component": item["component"],
                            "variable": item["variable"],
                        }
                        for item in set_variable_data
                    ]
                )

    return TestChargePoint(charger_id, tap, response_timeout=5)


class LibraryCharger:
    """A charger built on the ``ocpp`` package (its client side), over a real websocket."""

    def __init__(self, cp: Any, tap: WireTap, version: str, answers: dict[str, str]) -> None:
        self.cp = cp
        self.tap = tap
        self.version = version
        self.answers = answers  # action -> status this charger answers with (mutable)
        self.library = _LIBRARIES[version]

    async def call(self, payload: Any) -> Any:
        return await self.cp.call(payload, suppress=False)

    async def boot(self) -> Any:
        call = self.library.call
        if self.version == "1.6":
            return await self.call(
                call.BootNotification(charge_point_vendor="Acme", charge_point_model="Wall-1")
            )
        return await self.call(
            call.BootNotification(
                charging_station={"vendor_name": "Acme", "model": "Wall-2", "serial_number": "SN-1"},
                reason="PowerUp",
            )
        )

    async def close(self) -> None:
        await self.tap.connection.close()


@contextlib.asynccontextmanager
async def library_charger(
    server: OcppServer,
    charger_id: str,
    version: str,
    *,
    password: str | None = None,
    path_prefix: str = "/ocpp/",
    answers: dict[str, str] | None = None,
) -> AsyncIterator[LibraryCharger]:
    headers = basic_auth(charger_id, password) if password else None
    url = f"ws://127.0.0.1:{server.port}{path_prefix}{charger_id}"
    async with connect(
        url, subprotocols=[Subprotocol(f"ocpp{version}")], additional_headers=headers
    ) as connection:
        assert connection.subprotocol == f"ocpp{version}"
        tap = WireTap(connection)
        answers = {} if answers is None else answers
        cp = _make_charge_point(version, charger_id, tap, answers)
        task = asyncio.create_task(cp.start())
        try:
            yield LibraryCharger(cp, tap, version, answers)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
