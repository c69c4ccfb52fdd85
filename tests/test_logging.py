"""Logging: JSON lines when not on a terminal, secrets never in the output."""

from __future__ import annotations

import io
import json
import logging

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


def test_console_format_is_readable() -> None:
    stream = io.StringIO()
    configure_logging("info", "console", stream=stream)
    structlog.get_logger("x").info("plan ready", steps=96, token="t0ps3cret")
    text = stream.getvalue()
    assert "plan ready" in text and "steps=96" in text and "t0ps3cret" not in text


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("loud", "json", stream=io.StringIO())
