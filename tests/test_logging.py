"""Logging: JSON lines when not on a terminal, secrets never in the output."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging

import numpy as np
import pytest
import structlog

from controller.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def test_json_lines_off_terminal_with_secrets_redacted() -> None:
    stream = io.StringIO()
    configure_logging("info", "auto", stream=stream)
    log = structlog.get_logger("test")
    log.info("mqtt connecting", host="broker", password="hunter2", nested={"api_token": "abc", "port": 1883})
    log.debug("hidden below info")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1
    event = lines[0]
    assert event["event"] == "mqtt connecting" and event["level"] == "info"
    assert event["password"] == "***" and event["nested"] == {"api_token": "***", "port": 1883}
    assert "hunter2" not in stream.getvalue() and "abc" not in stream.getvalue()
    assert event["timestamp"].endswith("Z")


def test_stdlib_loggers_go_through_the_same_output() -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream=stream)
    logging.getLogger("some.library").warning("disk %s", "full")
    logging.getLogger("some.library").info("not shown")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["disk full"]


def _strict_json(line: str) -> dict[str, object]:
    def reject(token: str) -> object:
        raise ValueError(f"not JSON: {token}")

    parsed: dict[str, object] = json.loads(line, parse_constant=reject)
    return parsed


def test_non_finite_floats_are_written_as_strings_so_every_line_is_strict_json() -> None:
    """A dropped meter value of 1e308 kW becomes inf: json.dumps would write the bare token
    ``Infinity``, which is not JSON."""
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    inf, nan = float("inf"), float("nan")
    structlog.get_logger("meter").info(
        "meter value dropped",
        power_kw=1e308 * 10,
        largest=1e308,
        nested={"low": -inf, "readings": [1.5, nan, (inf, 2)], inf: "by key"},
        samples=(nan, -inf),
        array_value=np.float64("-inf"),
    )
    logging.getLogger("some.library").warning("meter %s kW, %r", inf, {"x": nan})
    lines = [_strict_json(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    event = lines[0]
    assert event["power_kw"] == "inf" and event["largest"] == 1e308
    assert event["nested"] == {"low": "-inf", "readings": [1.5, "nan", ["inf", 2]], "inf": "by key"}
    assert event["samples"] == ["nan", "-inf"] and event["array_value"] == "-inf"
    assert lines[1]["event"] == "meter inf kW, {'x': nan}"


def test_console_format_is_readable() -> None:
    stream = io.StringIO()
    configure_logging("info", "console", stream=stream)
    structlog.get_logger("x").info("plan ready", steps=96, token="t0ps3cret")
    text = stream.getvalue()
    assert "plan ready" in text and "steps=96" in text and "t0ps3cret" not in text


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("loud", "json", stream=io.StringIO())


async def test_debug_logs_of_a_real_handshake_carry_no_credentials() -> None:
    """websockets logs each request header at debug level: Basic auth must not reach the output."""
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection, serve

    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    credentials = base64.b64encode(b"wallbox:hunter2-secret").decode()

    async def echo(connection: ServerConnection) -> None:
        await connection.send(await connection.recv())

    async with serve(echo, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with (
            asyncio.timeout(10),
            connect(
                f"ws://127.0.0.1:{port}/ocpp/wallbox",
                additional_headers={"Authorization": f"Basic {credentials}"},
            ) as client,
        ):
            await client.send("ping")
            assert await client.recv() == "ping"
    output = stream.getvalue()
    assert "< Authorization: ***" in output  # the header line was logged, its value was not
    assert credentials not in output and "hunter2" not in output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("connecting to mqtts://v2x:pa55word@broker:8883", "connecting to mqtts://v2x:***@broker:8883"),
        ("header Authorization=Bearer abcdefgh1234", "header Authorization=***"),
        ("sent Bearer abcdefgh1234 upstream", "sent Bearer *** upstream"),
        ("basic auth failed for ws://gw:9000/ocpp/wb", "basic auth failed for ws://gw:9000/ocpp/wb"),
    ],
)
def test_credentials_inside_text_are_blanked(text: str, expected: str) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    structlog.get_logger("x").info(text, detail=[text])
    logging.getLogger("some.library").info("%s", text)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in events] == [expected, expected]
    assert events[0]["detail"] == [expected]
