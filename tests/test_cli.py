"""The `v2x` command line: help everywhere, the health probe against the real HTTP API, hash-password,
TLS files checked by check-config, start-up errors of `run` that name the field."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controller.api import ApiServer
from controller.cli import build_parser, health_url, main
from tests.ocpp_support.certs import Authority, Issued

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


def test_check_config_refuses_an_open_api_beyond_localhost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    assert main(["check-config", str(_config(tmp_path, host="0.0.0.0"))], out=out) == 2
    err = capsys.readouterr().err
    assert "api.host 0.0.0.0 is reachable from the network" in err and "v2x hash-password" in err
    out = io.StringIO()
    assert main(["check-config", str(_config(tmp_path, host="0.0.0.0", token="t0ken"))], out=out) == 0
    assert (
        "api http://0.0.0.0:8080, needs the bearer token" in out.getvalue() and "t0ken" not in out.getvalue()
    )


def _discharging_site(tmp_path: Path, meters: list[dict[str, Any]]) -> Path:
    data = yaml.safe_load(MINIMAL.read_text())
    data["site"]["grid"]["export_limit_kw"] = 5
    data["chargers"][0].update(bidirectional=True, max_discharge_kw=7)
    data["vehicles"][0].update(max_discharge_kw=7, permissions={"v2h": True})
    data["meters"] = meters
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


NO_GRID_METER = (
    "  no grid meter: the daemon stays in safe mode (no discharge), so V2G/V2H of car never happens; "
    "add a meter with role: grid under meters (see docs/mqtt.md)\n"
)


def test_check_config_warns_when_a_car_may_discharge_without_a_grid_meter(tmp_path: Path) -> None:
    """Not refused (the simulator and `v2x plan` need no meters), but said: nothing would discharge."""
    out = io.StringIO()
    assert main(["check-config", str(_discharging_site(tmp_path, []))], out=out) == 0
    assert NO_GRID_METER in out.getvalue()
    pv_only = [{"id": "pv", "role": "pv", "topic": "pv/w"}]
    out = io.StringIO()
    assert main(["check-config", str(_discharging_site(tmp_path, pv_only))], out=out) == 0
    assert NO_GRID_METER in out.getvalue()
    grid = [{"id": "grid", "role": "grid", "topic": "grid/w"}]
    out = io.StringIO()
    assert main(["check-config", str(_discharging_site(tmp_path, grid))], out=out) == 0
    assert "no grid meter" not in out.getvalue()
    out = io.StringIO()
    assert main(["check-config", str(MINIMAL)], out=out) == 0  # charge only: nothing to warn about
    assert "no grid meter" not in out.getvalue()


@pytest.mark.parametrize(("stale_after_s", "warned"), [(120, True), (299, True), (300, False), (900, False)])
def test_check_config_warns_about_tasmota_stale_before_its_report_period(
    tmp_path: Path, stale_after_s: float, warned: bool
) -> None:
    tasmota: dict[str, Any] = {"id": "pv", "role": "pv", "topic": "tele/pv/SENSOR", "format": "tasmota"}
    meters = [{"id": "grid", "role": "grid", "topic": "grid/w"}, {**tasmota, "stale_after_s": stale_after_s}]
    out = io.StringIO()
    assert main(["check-config", str(_discharging_site(tmp_path, meters))], out=out) == 0
    line = next(line for line in out.getvalue().splitlines() if line.startswith("  meter pv:"))
    hint = (
        f" (make sure the device's TelePeriod is below {stale_after_s:g} s: stock Tasmota reports only "
        "every 300 s; run `TelePeriod 10` in its console)"
    )
    assert line.endswith(hint) == warned, line
    assert "TelePeriod" not in next(line for line in out.getvalue().splitlines() if "meter grid:" in line)


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
    async def health_app(scope: Any, receive: Any, send: Any) -> None:
        """What the daemon's /health answers: 200 alive, 503 not, with its details."""
        body = json.dumps({"status": "ok" if healthy else "unhealthy", "loops": 4}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200 if healthy else 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    server = ApiServer(health_app, "127.0.0.1", 0)
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


# ------------------------------------------------------------------ TLS files and start-up errors


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _site(tmp_path: Path, **sections: Any) -> Path:
    data = yaml.safe_load(MINIMAL.read_text())
    data["storage"] = {"path": str(tmp_path / "v2x.sqlite")}
    data["ocpp"] = {"host": "127.0.0.1", "port": _free_port()}
    data["api"] = {"host": "127.0.0.1", "port": _free_port()}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Issued
    client: Issued
    garbage: Path
    encrypted_key: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = Authority(tmp_path, "site-ca")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not PEM\n")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return Pki(ca.path, ca.issue("server", server=True), ca.issue("client", server=False), garbage, encrypted)


TLS_CASES: list[tuple[str, Callable[[Pki, Path], dict[str, Any]], str]] = [
    (
        "cert_missing",
        lambda p, d: {"ocpp": {"tls": {"cert_file": str(d / "absent.crt"), "key_file": str(p.server.key)}}},
        "ocpp.tls.cert_file: '{d}/absent.crt' cannot be read: No such file or directory (check the path",
    ),
    (
        "key_is_a_directory",
        lambda p, d: {"ocpp": {"tls": {"cert_file": str(p.server.cert), "key_file": str(d)}}},
        "ocpp.tls.key_file: '{d}' cannot be read: Is a directory",
    ),
    (
        "cert_not_pem",
        lambda p, d: {"ocpp": {"tls": {"cert_file": str(p.garbage), "key_file": str(p.server.key)}}},
        "ocpp.tls.cert_file: '{d}/garbage.pem' holds no PEM certificate (give a certificate in PEM format",
    ),
    (
        "key_of_another_certificate",
        lambda p, d: {"ocpp": {"tls": {"cert_file": str(p.server.cert), "key_file": str(p.client.key)}}},
        "ocpp.tls.key_file: '{d}/client.key' is not the key of the certificate in '{d}/server.crt'",
    ),
    (
        "key_with_a_passphrase",
        lambda p, d: {"ocpp": {"tls": {"cert_file": str(p.server.cert), "key_file": str(p.encrypted_key)}}},
        "ocpp.tls.key_file: '{d}/encrypted.key' holds no private key that loads (give the certificate's "
        "private key in PEM format, -----BEGIN PRIVATE KEY-----, without a passphrase)",
    ),
    (
        "client_ca_not_pem",
        lambda p, d: {
            "ocpp": {
                "tls": {
                    "cert_file": str(p.server.cert),
                    "key_file": str(p.server.key),
                    "client_ca_file": str(p.garbage),
                }
            }
        },
        "ocpp.tls.client_ca_file: '{d}/garbage.pem' holds no PEM certificate",
    ),
    (
        "mqtt_ca_missing",
        lambda p, d: {"mqtt": {"tls": {"enabled": True, "ca_file": str(d / "absent-ca.pem")}}},
        "mqtt.tls.ca_file: '{d}/absent-ca.pem' cannot be read",
    ),
    (
        "mqtt_client_key_mismatch",
        lambda p, d: {
            "mqtt": {
                "tls": {
                    "enabled": True,
                    "ca_file": str(p.ca),
                    "cert_file": str(p.client.cert),
                    "key_file": str(p.server.key),
                }
            }
        },
        "mqtt.tls.key_file: '{d}/server.key' is not the key of the certificate",
    ),
]


@pytest.mark.parametrize(("name", "sections", "expected"), TLS_CASES, ids=[c[0] for c in TLS_CASES])
def test_check_config_checks_the_tls_files(
    name: str,
    sections: Callable[[Pki, Path], dict[str, Any]],
    expected: str,
    pki: Pki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _site(tmp_path, **sections(pki, tmp_path))
    assert main(["check-config", str(config)]) == 2
    captured = capsys.readouterr()
    assert f"{config}: 1 problem(s)\n  " + expected.format(d=tmp_path) in captured.err, captured.err
    assert "OK" not in captured.out


def test_check_config_accepts_tls_files_that_load(pki: Pki, tmp_path: Path) -> None:
    config = _site(
        tmp_path,
        ocpp={
            "tls": {
                "cert_file": str(pki.server.cert),
                "key_file": str(pki.server.key),
                "client_ca_file": str(pki.ca),
            }
        },
        mqtt={
            "host": "broker.lan",
            "password": "s3cret",
            "tls": {
                "enabled": True,
                "ca_file": str(pki.ca),
                "cert_file": str(pki.client.cert),
                "key_file": str(pki.client.key),
            },
        },
    )
    out = io.StringIO()
    assert main(["check-config", str(config)], out=out) == 0
    assert "(TLS); mqtt broker.lan:1883 (TLS)" in out.getvalue()


def test_check_config_warns_about_a_password_sent_in_plain_text(tmp_path: Path) -> None:
    out = io.StringIO()
    assert (
        main(["check-config", str(_site(tmp_path, mqtt={"host": "broker.lan", "password": "pw"}))], out=out)
        == 0
    )
    assert "mqtt broker.lan:1883, no TLS: the password crosses the network in plain text" in out.getvalue()
    out = io.StringIO()
    assert main(["check-config", str(_site(tmp_path, mqtt={"password": "pw"}))], out=out) == 0
    assert "mqtt 127.0.0.1:1883\n" in out.getvalue()  # this machine: nothing crosses the network


def test_run_refuses_tls_files_that_do_not_load_before_starting(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _site(tmp_path, ocpp={"tls": {"cert_file": str(pki.garbage), "key_file": str(pki.server.key)}})
    assert main(["run", "--config", str(config)]) == 2
    assert f"ocpp.tls.cert_file: '{pki.garbage}' holds no PEM certificate" in capsys.readouterr().err
    assert not (tmp_path / "v2x.sqlite").exists()  # nothing was started


@pytest.mark.parametrize("section", ["ocpp", "api"])
def test_run_with_a_taken_port_names_the_field(
    section: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _site(tmp_path, **{section: {"port": port}})
        assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert (
        f"error: {section}.port: {port} is already in use on 127.0.0.1 "
        "(stop the program that listens there or choose another port)" in err
    ), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("no-such-host.invalid", "error: ocpp.host: 'no-such-host.invalid' does not resolve to an address: "),
        ("192.0.2.1", "error: ocpp.host: '192.0.2.1' is not an address of this machine (use one of its"),
    ],
    ids=["unknown_name", "not_this_machine"],
)
def test_run_with_an_unusable_host_names_the_field(
    host: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--config", str(_site(tmp_path, ocpp={"host": host}))]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err


def test_check_config_warns_about_a_charger_without_a_password_on_an_open_listener(tmp_path: Path) -> None:
    out = io.StringIO()
    assert main(["check-config", str(MINIMAL)], out=out) == 0  # ocpp.host defaults to 0.0.0.0
    warnings = [line for line in out.getvalue().splitlines() if line.startswith("WARNING: ")]
    assert warnings == [
        "WARNING: charger 'wallbox' has no password and the OCPP listener ws://0.0.0.0:9000 is reachable "
        "from other machines: anyone on that network can connect as 'wallbox'; set "
        "chargers[0].auth.password_hash (from `v2x hash-password`), or ocpp.host: 127.0.0.1, or, on a "
        "network you trust, chargers[0].allow_unauthenticated: true"
    ]
    data = yaml.safe_load(MINIMAL.read_text())
    data["chargers"][0]["allow_unauthenticated"] = True
    trusted = tmp_path / "trusted.yaml"
    trusted.write_text(yaml.safe_dump(data))
    out = io.StringIO()
    assert main(["check-config", str(trusted)], out=out) == 0
    assert "WARNING" not in out.getvalue()
    out = io.StringIO()
    assert main(["check-config", str(_site(tmp_path))], out=out) == 0  # ocpp.host 127.0.0.1
    assert "WARNING" not in out.getvalue()


@pytest.mark.parametrize("allowed", [False, True])
def test_run_warns_about_a_charger_without_a_password_before_it_listens(
    allowed: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _site(tmp_path, ocpp={"host": "192.0.2.1"})  # not this machine's: run stops at the bind
    data = yaml.safe_load(config.read_text())
    data["chargers"][0]["allow_unauthenticated"] = allowed
    config.write_text(yaml.safe_dump(data))
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    port = data["ocpp"]["port"]
    warned = f"WARNING: charger 'wallbox' has no password and the OCPP listener ws://192.0.2.1:{port}"
    assert (warned in err) is not allowed, err
