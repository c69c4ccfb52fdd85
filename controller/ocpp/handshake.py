"""The HTTP side of a charger's connection: who it is, whether it may connect, which OCPP version.

Security profiles: 1 = HTTP Basic over ``ws://`` (per-charger password hash), 2 = Basic over TLS
(``ocpp.tls``), 3 = TLS with client certificates (``ocpp.tls.client_ca_file``; the certificate's
common name must equal the charger id). A charger with ``auth`` needs its password in every profile;
repeated wrong passwords are throttled (``controller.ocpp.auth``: HTTP 429 with Retry-After).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import ssl
from collections.abc import Callable, Sequence, Set
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from controller.clock import Clock
from controller.config import ChargerConfig, OcppConfig, OcppTlsConfig, OcppVersion
from controller.ocpp.auth import Blocked, PasswordChecker

__all__ = ["HandshakeGate", "charger_id_from_path", "choose_version", "server_ssl_context"]

_PREFERENCE = (OcppVersion.V21, OcppVersion.V201, OcppVersion.V16)
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def charger_id_from_path(path: str) -> str | None:
    """``/ocpp/<id>`` or ``/<id>`` (percent-decoded) -> id; None for anything else."""
    parts = [unquote(p) for p in urlsplit(path).path.split("/") if p]
    if len(parts) == 2 and parts[0] == "ocpp":
        candidate = parts[1]
    elif len(parts) == 1:
        candidate = parts[0]
    else:
        return None
    return candidate if _ID_PATTERN.match(candidate) else None


def choose_version(offered: Sequence[str], allowed: Sequence[OcppVersion]) -> OcppVersion | None:
    """Our preference (2.1, 2.0.1, 1.6) among what the charger offers and its config allows."""
    for version in _PREFERENCE:
        if version in allowed and f"ocpp{version.value}" in offered:
            return version
    return None


def server_ssl_context(tls: OcppTlsConfig | None) -> ssl.SSLContext | None:
    """TLS 1.2+ with the server certificate; client certificates required when a client CA is set."""
    if tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=tls.client_ca_file)
    return context


def _basic_credentials(headers: Headers) -> tuple[str, str] | None:
    value = headers.get("Authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def _common_name(peercert: Any) -> str | None:
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class HandshakeGate:
    """Decides every websocket handshake before a session starts.

    ``process_request``: the charger id from the path, unknown ids (HTTP 404, or 503 beyond
    ``max_unknown_chargers`` when they are accepted), the TLS client certificate, Basic auth.
    ``select_subprotocol``: the OCPP version. ``charger_config`` finds a charger's config (a connected
    unknown charger's included), ``unknown_connected`` names the unknown chargers the server holds.
    """

    def __init__(
        self,
        config: OcppConfig,
        clock: Clock,
        *,
        charger_config: Callable[[str], ChargerConfig | None],
        unknown_connected: Callable[[], Set[str]],
        max_unknown_chargers: int,
    ) -> None:
        self._config = config
        self._charger_config = charger_config
        self._unknown_connected = unknown_connected
        self._max_unknown_chargers = max_unknown_chargers
        self.passwords = PasswordChecker(lambda: clock.now().timestamp())
        # Handshakes of unknown chargers let in but not yet handled: they count towards the cap, or
        # simultaneous handshakes could all pass it before the first one is handled.
        self._unknown_handshakes: dict[ServerConnection, str] = {}
        self.log = structlog.get_logger("controller.ocpp")

    def handled(self, connection: ServerConnection) -> None:
        """The session for ``connection`` has begun: the server counts its charger from here."""
        self._unknown_handshakes.pop(connection, None)

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """None lets the handshake go on; a Response refuses it."""
        charger_id = charger_id_from_path(request.path)
        if charger_id is None:
            return self._refuse(
                connection, HTTPStatus.NOT_FOUND, "no charger id in the path", path=request.path
            )
        charger = self._charger_config(charger_id)
        if charger is None and not self._config.accept_unknown_chargers:
            return self._refuse(connection, HTTPStatus.NOT_FOUND, "unknown charger", charger_id=charger_id)
        if charger is None and self._unknown_count() >= self._max_unknown_chargers:
            return self._refuse(
                connection,
                HTTPStatus.SERVICE_UNAVAILABLE,
                "too many unknown chargers connected",
                charger_id=charger_id,
                limit=self._max_unknown_chargers,
            )
        tls = self._config.tls
        if tls is not None and tls.client_ca_file is not None:
            cert = connection.transport.get_extra_info("peercert")
            if _common_name(cert) != charger_id:
                return self._refuse(
                    connection,
                    HTTPStatus.FORBIDDEN,
                    "client certificate does not name this charger",
                    charger_id=charger_id,
                    common_name=_common_name(cert),
                )
        if charger is not None and charger.auth is not None:
            refusal = await self._check_password(connection, request, charger_id, charger.auth.password_hash)
            if refusal is not None:
                return refusal
        if charger is None:
            self._unknown_handshakes[connection] = charger_id
        return None

    def select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        charger_id = charger_id_from_path(connection.request.path) if connection.request else None
        charger = self._charger_config(charger_id) if charger_id else None
        allowed = charger.ocpp_versions if charger is not None else list(_PREFERENCE)
        version = choose_version(offered, allowed)
        # None completes the handshake without a subprotocol; the handler then closes (no HTTP 400).
        return None if version is None else Subprotocol(f"ocpp{version.value}")

    async def _check_password(
        self, connection: ServerConnection, request: Request, charger_id: str, password_hash: str
    ) -> Response | None:
        """Security profile 1: Basic auth with the charger id as user name; None if it may connect."""
        peer = connection.remote_address
        credentials = _basic_credentials(request.headers)
        if credentials is None or credentials[0] != charger_id:
            return self._refuse(
                connection,
                HTTPStatus.UNAUTHORIZED,
                "missing or malformed credentials",
                charger_id=charger_id,
                remote=peer,
            )
        address = str(peer[0]) if isinstance(peer, tuple) and peer else None
        outcome = await self.passwords.check(charger_id, address, credentials[1], password_hash)
        if isinstance(outcome, Blocked):
            return self._refuse(
                connection,
                HTTPStatus.TOO_MANY_REQUESTS,
                "too many failed logins, try again later",
                retry_after_s=outcome.retry_after_s,
                charger_id=charger_id,
                remote=peer,
            )
        if not outcome:
            return self._refuse(
                connection, HTTPStatus.UNAUTHORIZED, "wrong password", charger_id=charger_id, remote=peer
            )
        return None

    def _unknown_count(self) -> int:
        """Unknown chargers connected or in their handshake (a failed handshake frees its place)."""
        for connection in [c for c in self._unknown_handshakes if c.state is State.CLOSED]:
            del self._unknown_handshakes[connection]
        return len(self._unknown_connected() | set(self._unknown_handshakes.values()))

    def _refuse(
        self,
        connection: ServerConnection,
        status: HTTPStatus,
        why: str,
        *,
        retry_after_s: float | None = None,
        **context: Any,
    ) -> Response:
        self.log.warning("ocpp_connection_refused", status=int(status), reason=why, **context)
        response = connection.respond(status, f"{why}\n")
        if status is HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = 'Basic realm="ocpp", charset="UTF-8"'
        if retry_after_s is not None:
            response.headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
        return response
