"""HTTP health and state endpoints over a real socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller.api import HealthServer

HEALTH: dict[str, Any] = {"healthy": True}


@pytest.fixture
async def server() -> AsyncIterator[HealthServer]:
    srv = HealthServer(
        "127.0.0.1",
        0,
        lambda: (HEALTH["healthy"], {"safe_mode": False}),
        lambda: {"vehicles": {"ev": {"soc_percent": 61.0}}},
        token="s3cret",
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def request(port: int, raw: bytes) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


async def test_health_ok_and_unhealthy(server: HealthServer) -> None:
    HEALTH["healthy"] = True
    assert await request(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") == (
        200,
        {"status": "ok", "safe_mode": False},
    )
    HEALTH["healthy"] = False
    status, body = await request(server.port, b"GET /health HTTP/1.1\r\n\r\n")
    assert status == 503 and body["status"] == "unhealthy"
    HEALTH["healthy"] = True


async def test_state_needs_the_token(server: HealthServer) -> None:
    assert (await request(server.port, b"GET /state HTTP/1.1\r\n\r\n"))[0] == 401
    wrong = b"GET /state HTTP/1.1\r\nAuthorization: Bearer nope\r\n\r\n"
    assert (await request(server.port, wrong))[0] == 401
    ok = b"GET /state HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n"
    assert await request(server.port, ok) == (200, {"vehicles": {"ev": {"soc_percent": 61.0}}})


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /nope HTTP/1.1\r\n\r\n", 404),
        (b"POST /health HTTP/1.1\r\n\r\n", 405),
        (b"garbage\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nno-colon-header\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nX: " + b"a" * 10_000 + b"\r\n\r\n", 400),
    ],
)
async def test_bad_requests_get_an_answer(server: HealthServer, raw: bytes, status: int) -> None:
    assert (await request(server.port, raw))[0] == status


async def test_half_a_request_times_out_without_hurting_others(server: HealthServer) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /health HTTP/1.1\r\n")  # never finished
    await writer.drain()
    assert (await request(server.port, b"GET /health HTTP/1.1\r\n\r\n"))[0] == 200
    writer.close()


async def test_a_degraded_daemon_answers_200_with_its_reasons() -> None:
    """The provider's own status and reasons are passed on; only "not alive" turns into 503."""
    degraded = [{"what": "mqtt", "why": "not connected to the broker"}]
    srv = HealthServer(
        "127.0.0.1",
        0,
        lambda: (True, {"status": "degraded", "degraded": degraded, "safe_mode": True}),
        dict,
    )
    await srv.start()
    try:
        assert await request(srv.port, b"GET /health HTTP/1.1\r\n\r\n") == (
            200,
            {"status": "degraded", "degraded": degraded, "safe_mode": True},
        )
    finally:
        await srv.stop()
