"""The API's HTTP server: uvicorn on the daemon's event loop, bounded, never owning signals.

The daemon binds the socket itself (a taken port is a clean start error, port 0 works for tests),
starts uvicorn on it inside its own loop and stops it in its own shutdown order. uvicorn's signal
capture is switched off: SIGTERM and SIGINT belong to the daemon (``controller.shutdown``).

Bounds: at most ``MAX_CONCURRENT_REQUESTS`` requests are served at once (a live stream counts while it
is open up to ``MAX_STREAMS``); beyond that 503 with ``Retry-After``, except ``/health``, which
always gets through, so a probe is never starved by a busy dashboard. Request bodies above
``MAX_BODY_BYTES`` get 413; request heads above 16 KiB are refused by the HTTP parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_BODY_BYTES", "MAX_CONCURRENT_REQUESTS", "ApiServer", "RequestLimits"]

log = structlog.get_logger("controller.api")

MAX_BODY_BYTES = 64 * 1024
MAX_CONCURRENT_REQUESTS = 32
MAX_STREAMS = 8
UNLIMITED_PATHS = frozenset({"/health"})


class RequestLimits:
    """ASGI middleware: concurrency and body-size bounds (``/health`` exempt from the first)."""

    def __init__(self, app: ASGIApp, *, max_concurrent: int = MAX_CONCURRENT_REQUESTS) -> None:
        self.app = app
        self.max_concurrent = max_concurrent
        self.active = 0
        self.streams = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        stream = path.endswith("/stream")
        if path not in UNLIMITED_PATHS and (
            self.active >= self.max_concurrent or (stream and self.streams >= MAX_STREAMS)
        ):
            await _answer(send, 503, {"error": "busy: too many requests at once; retry shortly"}, retry=True)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            await _answer(send, 413, {"error": f"request body above {MAX_BODY_BYTES} bytes"})
            return
        with self._counted(path not in UNLIMITED_PATHS, stream):
            await self.app(scope, _bounded(receive), send)

    @contextlib.contextmanager
    def _counted(self, counted: bool, stream: bool) -> Iterator[None]:
        self.active += counted
        self.streams += stream
        try:
            yield
        finally:
            self.active -= counted
            self.streams -= stream


class BodyTooLarge(Exception):
    """A chunked body grew beyond ``MAX_BODY_BYTES`` (the app answers 413)."""


def _bounded(receive: Receive) -> Receive:
    seen = 0

    async def bounded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise BodyTooLarge
        return message

    return bounded


async def _answer(send: Send, status: int, body: dict[str, Any], *, retry: bool = False) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if retry:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the daemon owns SIGTERM/SIGINT and its shutdown order


class ApiServer:
    """uvicorn serving ``app`` on ``host``:``port`` (HTTPS with a certificate), on this loop."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
    ) -> None:
        self._app = RequestLimits(app)
        self._host = host
        self._port = port
        self._tls = (tls_cert_file, tls_key_file) if tls_cert_file and tls_key_file else None
        self._server: _Server | None = None
        self._socket: socket.socket | None = None
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def tls(self) -> bool:
        return self._tls is not None

    @property
    def listening(self) -> bool:
        server = self._server
        return (
            server is not None
            and server.started
            and not server.should_exit
            and all(s.is_serving() for s in server.servers)
        )

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the HTTP server is not running")
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=1,
            h11_max_incomplete_event_size=16 * 1024,
            ssl_certfile=str(self._tls[0]) if self._tls else None,
            ssl_keyfile=str(self._tls[1]) if self._tls else None,
            ssl_version=ssl.PROTOCOL_TLS_SERVER,
        )
        config.load()  # reads the certificate: a bad file is a start error, not a silent HTTP server
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            # Worded as asyncio words it, so the CLI names the field (controller.cli.startup_issues).
            address = (self._host, self._port)
            raise OSError(
                exc.errno, f"error while attempting to bind on address {address!r}: {exc.strerror}"
            ) from exc
        self._socket = sock
        self._server = _Server(config)
        self._server.lifespan = config.lifespan_class(config)  # what serve() sets up before startup()
        await self._server.startup(sockets=[sock])
        self._loop_task = asyncio.get_running_loop().create_task(self._server.main_loop(), name="http-main")
        log.info("http_started", host=self._host, port=self.port, tls=self.tls)

    async def stop(self) -> None:
        server, task = self._server, self._loop_task
        if server is None:
            return
        server.should_exit = True
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.shutdown(sockets=[self._socket] if self._socket else None)
        self._server = None
        self._socket = None
