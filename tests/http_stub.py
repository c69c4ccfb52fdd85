"""A real HTTP server on 127.0.0.1 for the internet-source tests: canned answers per path, every
request recorded. Runs on its own thread, so async and sync code under test both reach it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


Route = Answer | Callable[[Seen], Answer]


class HttpStub:
    """``routes`` maps a path to an answer (or a function of the request); unknown paths get 404.
    ``url`` is the server's base address; ``seen`` lists the requests in order."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.url = ""

    def answer(self, seen: Seen) -> Answer:
        self.seen.append(seen)
        route = self.routes.get(seen.path)
        if route is None:
            return Answer(404, b'{"error": "not found"}')
        return route(seen) if callable(route) else route


def _handler(stub: HttpStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(
                self.command,
                parts.path,
                {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length) if length else b"",
            )
            reply = stub.answer(seen)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def http_stub() -> Iterator[HttpStub]:
    """A started :class:`HttpStub` on a free port of 127.0.0.1, stopped on exit."""
    stub = HttpStub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="http_stub", daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
