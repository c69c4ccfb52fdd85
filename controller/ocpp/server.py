"""The CSMS websocket server: charger identity from the URL, auth, subprotocol choice, one session each.

Security profiles: 1 = HTTP Basic over ``ws://`` (per-charger password hash), 2 = Basic over TLS
(``ocpp.tls``), 3 = TLS with client certificates (``ocpp.tls.client_ca_file``; the certificate's
common name must equal the charger id). A charger with ``auth`` needs its password in every profile;
repeated wrong passwords are throttled (``controller.ocpp.auth``: HTTP 429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import re
import ssl
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from controller.backoff import Backoff
from controller.clock import Clock, SystemClock
from controller.config import ChargerConfig, OcppConfig, OcppVersion, SiteConfig
from controller.domain import ChargerSchedule
from controller.ocpp.auth import Blocked, PasswordChecker
from controller.ocpp.base import Adapter
from controller.ocpp.control import ChargerControl
from controller.ocpp.events import ChargerConnected, ChargerDisconnected, EventSink, OcppEvent
from controller.ocpp.model import ChargerModel, ChargerView, ProfileRecord
from controller.ocpp.profiles import ChargerLimits
from controller.ocpp.rpc import RpcPeer
from controller.ocpp.v2 import V2Adapter
from controller.ocpp.v16 import V16Adapter

__all__ = ["OcppServer", "charger_id_from_path", "choose_version"]

_PREFERENCE = (OcppVersion.V21, OcppVersion.V201, OcppVersion.V16)
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TIMEOUT_S = 1.0
MAX_UNKNOWN_CHARGERS = 32
"""With ``accept_unknown_chargers``: most unknown chargers connected at once (HTTP 503 beyond). An
unknown charger is forgotten when it disconnects, so these never pile up."""
SILENT_RESYNC_AFTER_S = 5.0
"""A charger that connects and neither boots nor sends anything within this many seconds is
re-synced anyway: it kept running while it was away or while the controller restarted, and an idle
one may say nothing until its next heartbeat. A booting charger sends BootNotification at once."""


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


class OcppServer:
    """OCPP 1.6J / 2.0.1 / 2.1 CSMS for the chargers of one site.

    ``async with OcppServer(cfg, on_event=queue.put_nowait) as server: ...`` or ``start()``/``stop()``.
    ``host``/``port`` override the config (tests bind ``127.0.0.1:0`` and read ``server.port``).
    """

    def __init__(
        self,
        config: SiteConfig,
        *,
        clock: Clock | None = None,
        on_event: EventSink | None = None,
        host: str | None = None,
        port: int | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._site = config
        self._config: OcppConfig = config.ocpp
        self._clock = clock or SystemClock()
        self._on_event = on_event
        self._host = self._config.host if host is None else host
        self._port = self._config.port if port is None else port
        self._backoff = backoff or Backoff()
        self._fallback_import_w = config.site.grid.effective_fallback_import_kw * 1000.0
        self._controls: dict[str, ChargerControl] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Handshakes of unknown chargers let in but not yet handled: they count towards the cap, or
        # simultaneous handshakes could all pass it before the first one is handled.
        self._unknown_handshakes: dict[ServerConnection, str] = {}
        self._server: Server | None = None
        self._passwords = PasswordChecker(lambda: self._clock.now().timestamp())
        tokens = self._config.accepted_id_tokens
        self._accepted_tokens = None if tokens is None else frozenset(t.casefold() for t in tokens)
        self.log = structlog.get_logger("controller.ocpp")
        for charger in config.chargers:
            self._add_charger(charger)

    # ----------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        """The bound port (useful with port 0); the configured one before ``start``."""
        if self._server is None:
            return self._port
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def listening(self) -> bool:
        """Whether the server was started and still has a listening socket."""
        return self._server is not None and bool(self._server.sockets)

    @property
    def tls(self) -> bool:
        return self._config.tls is not None

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the OCPP server is already running")
        for control in self._controls.values():
            self._start_sender(control)
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            ssl=self._ssl_context(),
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            compression=None,  # tiny JSON frames: deflate would cost memory per charger for nothing
            ping_interval=30,
            ping_timeout=30,
            max_size=1 << 20,
            # A charger that does not answer the closing handshake must not hold up the stop.
            close_timeout=CLOSE_TIMEOUT_S,
        )
        self.log.info("ocpp_server_started", host=self._host, port=self.port, tls=self.tls)

    async def stop(self) -> None:
        """Close every charger connection (1001 going away) and stop the senders."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for control in self._controls.values():
            control.fail_waiters()
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await _cancel_and_wait(tasks)
        if server is not None:
            self.log.info("ocpp_server_stopped")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ----------------------------------------------------------------- public API

    @property
    def chargers(self) -> Mapping[str, ChargerView]:
        return {charger_id: control.model for charger_id, control in self._controls.items()}

    def charger(self, charger_id: str) -> ChargerView | None:
        control = self._controls.get(charger_id)
        return None if control is None else control.model

    async def apply_schedule(self, schedule: ChargerSchedule) -> ProfileRecord:
        """Send ``schedule`` as a TxProfile (or nothing if unchanged, or refused before with the same
        content: that refusal's record); returns the first outcome.

        Timeouts and transient errors are retried with backoff in the background (``ProfileAnswered``
        events), refusals (Rejected, NotSupported …) are not;
        without a transaction the schedule is kept and sent when one starts, without a connection
        when the charger connects.
        """
        control = self._controls.get(schedule.charger_id)
        if control is None:
            raise KeyError(f"unknown charger {schedule.charger_id!r}")
        return await control.apply(schedule)

    async def make_safe(
        self, schedules: Mapping[str, ChargerSchedule], budget_s: float
    ) -> dict[str, list[ProfileRecord]]:
        """The stop: leave every connected charger safe without us, within ``budget_s`` in all.

        From the first line on nothing that discharges is sent (a newer wanted schedule or a retry
        included): the senders and each connection's setup are stopped, abandoning a call still in
        flight. Then, for all chargers in parallel, the charger's entry in ``schedules`` (charge
        only) as its transaction's TxProfile and the safe default profile. What has not been
        answered when the budget ends is given up; returns each charger's records so far.
        """
        for control in self._controls.values():
            control.begin_stop()
        senders = list(self._tasks.values())
        self._tasks.clear()
        peers = [control.peer for control in self._controls.values() if control.peer is not None]
        await _cancel_and_wait([*senders, *(task for peer in peers for task in peer.tasks)])
        connected = [control for control in self._controls.values() if control.peer is not None]
        records: dict[str, list[ProfileRecord]] = {control.model.charger_id: [] for control in connected}

        async def make_safe(control: ChargerControl) -> None:
            charger_id = control.model.charger_id
            records[charger_id] = await control.make_safe(schedules.get(charger_id))

        try:
            # Real seconds, whatever the clock: the budget is a container's grace period.
            async with asyncio.timeout(budget_s):
                await asyncio.gather(*(make_safe(c) for c in connected), return_exceptions=True)
        except TimeoutError:
            unanswered = [cid for cid, done in records.items() if not done]
            self.log.warning("ocpp_safe_profiles_timed_out", budget_s=budget_s, chargers=unanswered)
        return records

    async def install_default_profile(self, charger_id: str) -> ProfileRecord:
        """(Re)install the safe charge-only TxDefaultProfile now, e.g. before shutting down."""
        control = self._controls.get(charger_id)
        if control is None:
            raise KeyError(f"unknown charger {charger_id!r}")
        return await control.install_default()

    # ----------------------------------------------------------------- internals

    def _emit(self, event: OcppEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            self.log.exception("ocpp_event_sink_failed", event_type=type(event).__name__)

    def _add_charger(self, charger: ChargerConfig) -> ChargerControl:
        control = ChargerControl(
            ChargerModel(charger),
            ChargerLimits.from_config(charger, self._fallback_import_w),
            self._clock,
            self._emit,
            self._config,
            self._backoff,
        )
        self._controls[charger.id] = control
        if self._server is not None:
            self._start_sender(control)
        return control

    def _is_configured(self, charger_id: str) -> bool:
        return self._site.charger(charger_id) is not None

    def _unknown_count(self) -> int:
        """Unknown chargers connected or in their handshake (a failed handshake frees its place)."""
        for connection in [c for c in self._unknown_handshakes if c.state is State.CLOSED]:
            del self._unknown_handshakes[connection]
        ids = {charger_id for charger_id in self._controls if not self._is_configured(charger_id)}
        return len(ids | set(self._unknown_handshakes.values()))

    async def _forget(self, charger_id: str) -> None:
        """Drop an unknown charger that went away: its model, its sender task, anyone waiting on it."""
        control = self._controls.pop(charger_id, None)
        task = self._tasks.pop(charger_id, None)
        if control is not None:
            control.fail_waiters()
        if task is not None:
            await _cancel_and_wait([task])
        self.log.info("ocpp_unknown_charger_forgotten", charger_id=charger_id)

    def _start_sender(self, control: ChargerControl) -> None:
        charger_id = control.model.charger_id
        self._tasks[charger_id] = asyncio.create_task(control.run(), name=f"ocpp-sender:{charger_id}")

    def _charger_config(self, charger_id: str) -> ChargerConfig | None:
        control = self._controls.get(charger_id)
        return control.model.config if control else self._site.charger(charger_id)

    def _ssl_context(self) -> ssl.SSLContext | None:
        tls = self._config.tls
        if tls is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=tls.client_ca_file)
        return context

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

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        charger_id = charger_id_from_path(request.path)
        peer = connection.remote_address
        if charger_id is None:
            return self._refuse(
                connection, HTTPStatus.NOT_FOUND, "no charger id in the path", path=request.path
            )
        charger = self._charger_config(charger_id)
        if charger is None and not self._config.accept_unknown_chargers:
            return self._refuse(connection, HTTPStatus.NOT_FOUND, "unknown charger", charger_id=charger_id)
        if charger is None and self._unknown_count() >= MAX_UNKNOWN_CHARGERS:
            return self._refuse(
                connection,
                HTTPStatus.SERVICE_UNAVAILABLE,
                "too many unknown chargers connected",
                charger_id=charger_id,
                limit=MAX_UNKNOWN_CHARGERS,
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
            outcome = await self._passwords.check(
                charger_id, address, credentials[1], charger.auth.password_hash
            )
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
        if charger is None:
            self._unknown_handshakes[connection] = charger_id
        return None

    def _select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        charger_id = charger_id_from_path(connection.request.path) if connection.request else None
        charger = self._charger_config(charger_id) if charger_id else None
        allowed = charger.ocpp_versions if charger is not None else list(_PREFERENCE)
        version = choose_version(offered, allowed)
        # None completes the handshake without a subprotocol; the handler then closes (no HTTP 400).
        return None if version is None else Subprotocol(f"ocpp{version.value}")

    async def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None  # set once the handshake is done
        charger_id = charger_id_from_path(connection.request.path)
        assert charger_id is not None  # _process_request refused everything else
        self._unknown_handshakes.pop(connection, None)  # counted as a connected charger from here
        log = self.log.bind(charger_id=charger_id)
        if connection.subprotocol is None:
            offered = connection.request.headers.get("Sec-WebSocket-Protocol")
            log.warning("ocpp_no_common_subprotocol", offered=offered)
            await connection.close(_CLOSE_PROTOCOL_ERROR, "no supported OCPP version offered")
            return
        version = OcppVersion(connection.subprotocol.removeprefix("ocpp"))
        control = self._controls.get(charger_id)
        if control is None:  # an unknown charger, accepted by config: charge-only defaults
            control = self._add_charger(ChargerConfig(id=charger_id))
            log.info("ocpp_unknown_charger_accepted")
        adapter: Adapter
        if version is OcppVersion.V16:
            adapter = V16Adapter(control.model, self._clock, self._emit, control)
        else:
            adapter = V2Adapter(version, control.model, self._clock, self._emit, control)
        adapter.heartbeat_interval_s = self._config.heartbeat_interval_s
        adapter.accepted_tokens = self._accepted_tokens
        peer = RpcPeer(
            connection,
            version,
            charger_id,
            adapter.handle,
            call_timeout_s=self._config.call_timeout_s,
            clock=self._clock,
        )
        previous = control.attach(peer, adapter)
        if previous is not None:
            log.info("ocpp_connection_replaced")
            peer.spawn(previous.close(1000, "replaced by a new connection"), "close-previous")
        log.info("ocpp_connected", ocpp_version=version.value, remote=connection.remote_address)
        self._emit(ChargerConnected(charger_id, version, self._clock.now(), previous is not None))
        # Its first message decides, once per connection: a BootNotification sets it up after the
        # boot; anything else (it kept running while it was away, or while this process restarted)
        # re-syncs it, as does silence for a few seconds. Setting up at once would set up a charger
        # that reboots twice, and speak to it before its boot was accepted.
        peer.spawn(adapter.resync_if_silent(SILENT_RESYNC_AFTER_S), "resync-if-silent")
        try:
            await peer.serve()
        finally:
            if control.detach(peer):
                log.info("ocpp_disconnected", code=connection.close_code)
                self._emit(ChargerDisconnected(charger_id, self._clock.now()))
                if not self._is_configured(charger_id) and self._controls.get(charger_id) is control:
                    await self._forget(charger_id)


async def _cancel_and_wait(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended (whatever it raised on the way out)."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
