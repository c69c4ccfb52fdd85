"""A small HTTP/1.1 server on asyncio streams: ``GET /health`` and ``GET /state``.

No framework: two read-only endpoints do not justify one. Requests are bounded in size and time;
anything malformed gets a 400 and the connection is closed. ``/state`` needs the configured bearer
token when one is set; ``/health`` never does (container and load-balancer probes).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable
from typing import Any

import structlog

__all__ = ["HealthServer", "StatusProvider"]

log = structlog.get_logger("controller.api")

StatusProvider = Callable[[], tuple[bool, dict[str, Any]]]
"""Returns (alive, details): 200 when alive, else 503. The body is ``{"status": "ok"|"unhealthy",
**details}``; details may carry their own ``status`` (``degraded``: alive, but not as configured) and
its reasons. Called on the event loop; must be quick."""

MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        health: StatusProvider,
        state: Callable[[], dict[str, Any]],
        token: str | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._health = health
        self._state = state
        self._token = token
        self._server: asyncio.Server | None = None

    @property
    def listening(self) -> bool:
        """Whether the server was started and still has a listening socket."""
        return self._server is not None and bool(self._server.sockets)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the HTTP server is not running")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=MAX_REQUEST_BYTES
        )
        log.info("http_started", host=self._host, port=self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await asyncio.wait_for(self._handle(reader), REQUEST_TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            status, body = 400, {"error": "malformed request"}
        except ConnectionError:
            writer.close()
            return
        payload = json.dumps(body, default=str).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        try:
            writer.write(head.encode() + payload)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, {"error": "malformed request line"}
        method, target, _ = parts
        headers = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                return 400, {"error": "malformed header"}
            headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        if path not in ("/health", "/state"):
            return 404, {"error": f"no such endpoint {path[:100]}"}
        if method != "GET":
            return 405, {"error": "only GET"}
        if path == "/health":
            healthy, details = self._health()
            return (200 if healthy else 503), {"status": "ok" if healthy else "unhealthy", **details}
        if self._token is not None:
            offered = headers.get("authorization", "")
            if not hmac.compare_digest(offered.encode(), f"Bearer {self._token}".encode()):
                return 401, {"error": "bearer token required"}
        return 200, self._state()
