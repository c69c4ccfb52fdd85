"""The CSMS websocket server: its lifecycle, one session per connected charger, the public API.

Whether a charger may connect, and in which OCPP version, is the ``HandshakeGate``'s call
(``controller.ocpp.handshake``); this module runs what comes after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Set
from types import TracebackType
from typing import Self

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve

from controller.backoff import Backoff
from controller.clock import Clock, SystemClock
from controller.config import ChargerConfig, OcppConfig, OcppVersion, SiteConfig
from controller.domain import ChargerSchedule
from controller.ocpp.base import Adapter
from controller.ocpp.control import ChargerControl
from controller.ocpp.events import ChargerConnected, ChargerDisconnected, EventSink, OcppEvent
from controller.ocpp.handshake import HandshakeGate, charger_id_from_path, choose_version, server_ssl_context
from controller.ocpp.model import ChargerModel, ChargerView, ProfileRecord
from controller.ocpp.profiles import ChargerLimits
from controller.ocpp.rpc import FrameCounts, RpcPeer
from controller.ocpp.v2 import V2Adapter
from controller.ocpp.v16 import V16Adapter
from controller.tasks import cancel_and_wait

__all__ = ["OcppServer", "charger_id_from_path", "choose_version"]

_CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TIMEOUT_S = 1.0
MAX_UNKNOWN_CHARGERS = 32
"""With ``accept_unknown_chargers``: most unknown chargers connected at once (HTTP 503 beyond); read
when a server is created. An unknown charger is forgotten when it disconnects, so these never pile
up."""
SILENT_RESYNC_AFTER_S = 5.0
"""A charger that connects and neither boots nor sends anything within this many seconds is
re-synced anyway: it kept running while it was away or while the controller restarted, and an idle
one may say nothing until its next heartbeat. A booting charger sends BootNotification at once."""


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
        self.frame_counts: dict[str, FrameCounts] = {}
        """Frames per charger since start (bounded: configured chargers and at most
        MAX_UNKNOWN_CHARGERS others are ever accepted)."""
        self._server: Server | None = None
        self._handshakes = HandshakeGate(
            self._config,
            self._clock,
            charger_config=self._charger_config,
            unknown_connected=self._unknown_ids,
            max_unknown_chargers=MAX_UNKNOWN_CHARGERS,
        )
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
            ssl=server_ssl_context(self._config.tls),
            process_request=self._handshakes.process_request,
            select_subprotocol=self._handshakes.select_subprotocol,
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
            control.profiles.fail_waiters()
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await cancel_and_wait(tasks)
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
        return await control.profiles.apply(schedule)

    def begin_stop(self) -> None:
        """From now on nothing that discharges is sent to any charger (a newer wanted schedule or a
        retry included); what was waiting to be sent is dropped. Call it first when stopping."""
        for control in self._controls.values():
            control.begin_stop()

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
        self.begin_stop()
        senders = list(self._tasks.values())
        self._tasks.clear()
        peers = [control.peer for control in self._controls.values() if control.peer is not None]
        await cancel_and_wait([*senders, *(task for peer in peers for task in peer.tasks)])
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
        return await control.profiles.install_default()

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

    def _unknown_ids(self) -> Set[str]:
        """The unknown chargers connected now (each is forgotten when it disconnects)."""
        return {charger_id for charger_id in self._controls if not self._is_configured(charger_id)}

    async def _forget(self, charger_id: str) -> None:
        """Drop an unknown charger that went away: its model, its sender task, anyone waiting on it."""
        control = self._controls.pop(charger_id, None)
        task = self._tasks.pop(charger_id, None)
        if control is not None:
            control.profiles.fail_waiters()
        if task is not None:
            await cancel_and_wait([task])
        self.log.info("ocpp_unknown_charger_forgotten", charger_id=charger_id)

    def _start_sender(self, control: ChargerControl) -> None:
        charger_id = control.model.charger_id
        self._tasks[charger_id] = asyncio.create_task(
            control.profiles.run(), name=f"ocpp-sender:{charger_id}"
        )

    def _charger_config(self, charger_id: str) -> ChargerConfig | None:
        control = self._controls.get(charger_id)
        return control.model.config if control else self._site.charger(charger_id)

    async def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None  # set once the handshake is done
        charger_id = charger_id_from_path(connection.request.path)
        assert charger_id is not None  # the handshake gate refused everything else
        self._handshakes.handled(connection)  # counted as a connected charger from here
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
        adapter = self._adapter(version, control)
        peer = RpcPeer(
            connection,
            version,
            charger_id,
            adapter.handle,
            call_timeout_s=self._config.call_timeout_s,
            clock=self._clock,
            counts=self.frame_counts.setdefault(charger_id, FrameCounts()),
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

    def _adapter(self, version: OcppVersion, control: ChargerControl) -> Adapter:
        adapter: Adapter
        if version is OcppVersion.V16:
            adapter = V16Adapter(control.model, self._clock, self._emit, control)
        else:
            adapter = V2Adapter(version, control.model, self._clock, self._emit, control)
        adapter.heartbeat_interval_s = self._config.heartbeat_interval_s
        adapter.accepted_tokens = self._accepted_tokens
        return adapter
