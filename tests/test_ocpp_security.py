"""Security profiles 2 (TLS + Basic auth) and 3 (mutual TLS) with throwaway certificates."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.typing import Subprotocol

from controller.ocpp import ChargerConnected
from tests.ocpp_support import PASSWORD, PASSWORD_HASH, basic_auth, running_server, site
from tests.ocpp_support.certs import Authority, Issued


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "ca").mkdir()
    (tmp_path / "rogue").mkdir()
    ca = Authority(tmp_path / "ca", "site-ca")
    rogue = Authority(tmp_path / "rogue", "rogue-ca")
    return {
        "ca": ca,
        "server": ca.issue("csms", server=True),
        "cp": ca.issue("cp", server=False),
        "other": ca.issue("other-charger", server=False),
        "rogue_cp": rogue.issue("cp", server=False),
    }


def client_context(ca: Authority, client: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca.path)
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return context


async def heartbeat(connection: Any) -> Any:
    await connection.send(json.dumps([2, "hb", "Heartbeat", {}]))
    return json.loads(await asyncio.wait_for(connection.recv(), 3))


async def test_profile_2_tls_with_basic_auth(pki: dict[str, Any]) -> None:
    server_cert: Issued = pki["server"]
    cfg = site(
        [{"id": "cp", "auth": {"password_hash": PASSWORD_HASH}}],
        tls={"cert_file": str(server_cert.cert), "key_file": str(server_cert.key)},
    )
    async with running_server(cfg) as (server, events):
        url = f"wss://127.0.0.1:{server.port}/ocpp/cp"
        context = client_context(pki["ca"])
        async with connect(
            url,
            ssl=context,
            subprotocols=[Subprotocol("ocpp2.0.1")],
            additional_headers=basic_auth("cp", PASSWORD),
        ) as connection:
            assert connection.subprotocol == "ocpp2.0.1"
            assert (await heartbeat(connection))[0] == 3
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                url,
                ssl=context,
                subprotocols=[Subprotocol("ocpp2.0.1")],
                additional_headers=basic_auth("cp", "nope"),
            ):
                pass
        assert refused.value.response.status_code == 401
        # Plain ws:// to the TLS port never reaches OCPP.
        with pytest.raises(Exception):  # noqa: B017 - the exact error depends on the TLS stack
            async with connect(f"ws://127.0.0.1:{server.port}/ocpp/cp", open_timeout=3):
                pass
        assert len(events.of(ChargerConnected)) == 1


async def test_profile_3_mutual_tls(pki: dict[str, Any]) -> None:
    server_cert: Issued = pki["server"]
    ca: Authority = pki["ca"]
    cfg = site(
        [{"id": "cp"}],
        tls={
            "cert_file": str(server_cert.cert),
            "key_file": str(server_cert.key),
            "client_ca_file": str(ca.path),
        },
    )
    async with running_server(cfg) as (server, events):
        url = f"wss://127.0.0.1:{server.port}/ocpp/cp"
        async with connect(
            url, ssl=client_context(ca, pki["cp"]), subprotocols=[Subprotocol("ocpp2.1")]
        ) as connection:
            assert (await heartbeat(connection))[0] == 3
        # A valid certificate for another charger cannot be used as this one.
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                url, ssl=client_context(ca, pki["other"]), subprotocols=[Subprotocol("ocpp2.1")]
            ):
                pass
        assert refused.value.response.status_code == 403
        # No client certificate, or one from another CA: the TLS handshake itself fails.
        for context in (client_context(ca), client_context(ca, pki["rogue_cp"])):
            with pytest.raises((ssl.SSLError, OSError, InvalidMessage)):
                async with connect(
                    url, ssl=context, subprotocols=[Subprotocol("ocpp2.1")], open_timeout=3
                ) as connection:
                    await heartbeat(connection)
        assert [e.charger_id for e in events.of(ChargerConnected)] == ["cp"]
