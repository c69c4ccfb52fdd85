"""The `v2x` command line: help everywhere, the health probe against the real HTTP API, hash-password."""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.api import HealthServer
from controller.cli import build_parser, health_url, main

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = ROOT / "configs" / "minimal.yaml"


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*prefix, name))
    return found


COMMANDS = _commands(build_parser())


def test_every_command_is_listed() -> None:
    names = {" ".join(c) for c in COMMANDS}
    assert {
        "check-config",
        "schema",
        "plan",
        "run",
        "health",
        "hash-password",
        "sim run",
        "sim compare",
    } <= names


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "v2x")
def test_help_on_every_command(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: v2x" + "".join(f" {c}" for c in command))
    assert "-h, --help" in text


# Every command that does something (not the bare `v2x` or a group such as `v2x sim`).
LEAF_COMMANDS = [c for c in COMMANDS if c and not any(o[: len(c)] == c and o != c for o in COMMANDS)]


@pytest.mark.parametrize("command", LEAF_COMMANDS, ids=" ".join)
def test_help_says_what_the_command_does(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    _, _, rest = capsys.readouterr().out.partition("\n\n")
    description = rest.split("\n\n")[0]
    assert not description.startswith(("positional arguments", "options")), description


def test_unknown_command_and_missing_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["no-such-command"], ["check-config"], ["run"], []):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2
    assert "usage: v2x" in capsys.readouterr().err


def test_hash_password_refuses_an_empty_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    out = io.StringIO()
    assert main(["hash-password", "--stdin"], out=out) == 2
    assert out.getvalue() == "" and "empty password" in capsys.readouterr().err


def _config(tmp_path: Path, **api: Any) -> Path:
    data = yaml.safe_load(MINIMAL.read_text())
    data["api"] = api
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_check_config_warns_about_an_open_api(tmp_path: Path) -> None:
    out = io.StringIO()
    assert main(["check-config", str(_config(tmp_path, host="0.0.0.0"))], out=out) == 0
    assert "api 0.0.0.0:8080, no token: anyone on the network can read /state" in out.getvalue()
    out = io.StringIO()
    assert main(["check-config", str(_config(tmp_path, host="0.0.0.0", token="t0ken"))], out=out) == 0
    assert "/state needs the token" in out.getvalue() and "t0ken" not in out.getvalue()


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8080/health"),
        ("::", "http://[::1]:8080/health"),
        ("192.168.1.5", "http://192.168.1.5:8080/health"),
        ("fd00::5", "http://[fd00::5]:8080/health"),
    ],
)
def test_health_url_follows_the_bind_address(host: str, url: str) -> None:
    assert health_url(host, 8080) == url


async def _probe_against(
    healthy: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    server = HealthServer("127.0.0.1", 0, lambda: (healthy, {"loops": 4}), dict, token="t0ken")
    await server.start()
    try:
        config = _config(tmp_path, host="0.0.0.0", port=server.port, token="t0ken")
        code = await asyncio.wait_for(asyncio.to_thread(main, ["health", "--config", str(config)]), 30)
    finally:
        await server.stop()
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def test_health_probe_healthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = await _probe_against(True, tmp_path, capsys)
    assert code == 0 and text.startswith("healthy: http://127.0.0.1:") and '"loops": 4' in text


async def test_health_probe_unhealthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = await _probe_against(False, tmp_path, capsys)
    assert code == 1 and "unhealthy" in text and "HTTP 503" in text


def test_health_probe_nothing_listening(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["health", "--config", str(_config(tmp_path, port=port)), "--timeout", "2"]) == 1
    assert f"unhealthy: http://127.0.0.1:{port}/health" in capsys.readouterr().err


def test_health_probe_api_disabled_or_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "--config", str(_config(tmp_path, enabled=False))]) == 1
    assert "api.enabled is false" in capsys.readouterr().err
    # A probe only knows healthy (0) and unhealthy (1): a broken config is unhealthy, not "bad input".
    assert main(["health", "--config", str(tmp_path / "absent.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_health_probe_garbage_answer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Something else on the port answering nonsense: unhealthy, not a traceback."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def answer_garbage() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(4096)
                connection.sendall(b"garbage\r\n\r\n")

        thread = threading.Thread(target=answer_garbage, daemon=True)
        thread.start()
        code = main(["health", "--config", str(_config(tmp_path, port=port)), "--timeout", "5"])
        thread.join(10)
    assert code == 1 and "unhealthy" in capsys.readouterr().err
