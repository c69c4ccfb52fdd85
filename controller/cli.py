"""The `v2x` command line."""

from __future__ import annotations

import argparse
import errno
import getpass
import http.client
import json
import os
import re
import socket
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from controller import __version__
from controller.config import ConfigError, ConfigIssue, MeterConfig, MeterFormat, SiteConfig, load_config
from controller.config.checks import unauthenticated_charger_warnings
from controller.domain import MeterRole
from controller.logs import configure_logging
from controller.passwords import hash_password
from controller.prices_cli import register as register_prices
from controller.shutdown import StopSignals
from controller.snapshot import Snapshot, load_snapshot

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

Handler = Callable[[argparse.Namespace, TextIO], int]


def print_config_error(error: ConfigError, out: TextIO) -> None:
    print(f"{error.source}: {len(error.issues)} problem(s)", file=out)
    for issue in error.issues:
        print(f"  {issue}", file=out)


def site_summary(cfg: SiteConfig) -> list[str]:
    s = cfg.site
    lines = [
        f"site {s.name!r} ({s.timezone}): {s.plan_step_minutes}-min steps over {s.horizon_hours} h, "
        f"grid import <= {s.grid.import_limit_kw:g} kW, export <= {s.grid.export_limit_kw:g} kW",
    ]
    for c in cfg.chargers:
        versions = "/".join(v.value for v in c.ocpp_versions)
        direction = f"charge {c.max_charge_kw:g} kW" + (
            f", discharge {c.max_discharge_kw:g} kW" if c.bidirectional else ", charge only"
        )
        auth = "basic auth" if c.auth else "no auth"
        lines.append(f"charger {c.id}: OCPP {versions}, {c.phases}-phase, {direction}, {auth}")
    for v in cfg.vehicles:
        allowed = [name for name in ("v2g", "v2h", "v2l") if getattr(v.permissions, name)] or ["no discharge"]
        days = ", ".join(
            f"{d[:3]} {r.time:%H:%M}->{r.target_soc_percent:g}%" for d, r in v.departures.items()
        )
        lines.append(
            f"vehicle {v.id}: {v.usable_capacity_kwh:g} kWh, reserve {v.reserve_percent:.0f} %, "
            f"{'/'.join(allowed)}, home charger {v.home_charger or '-'}"
            + (f", departures {days}" if days else "")
        )
    for m in cfg.meters:
        lines.append(
            f"meter {m.id}: {m.role.value} from {m.topic} ({m.format.value}), stale after {m.stale_after_s:g} s"
            + _tasmota_period_warning(m)
        )
    lines += _grid_meter_warning(cfg)
    imp = cfg.tariff.import_
    source = (
        "dynamic " + imp.dynamic_topic
        if imp.dynamic_topic
        else f"from {imp.provider.type} (check: v2x prices)"
        if imp.provider
        else f"{imp.static_price_per_kwh} {s.currency}/kWh"
    )
    lines.append(f"tariff: import {source}; grid limits from {cfg.grid_signals.limit_topic or '-'}")
    lines.append(
        f"ocpp {cfg.ocpp.host}:{cfg.ocpp.port}{' (TLS)' if cfg.ocpp.tls else ''}; {mqtt_summary(cfg)}"
    )
    lines.append(api_summary(cfg))
    return lines


TASMOTA_TELE_PERIOD_S = 300
"""How often stock Tasmota publishes tele/<topic>/SENSOR (its TelePeriod setting)."""


def _tasmota_period_warning(meter: MeterConfig) -> str:
    if meter.format is not MeterFormat.TASMOTA or meter.stale_after_s >= TASMOTA_TELE_PERIOD_S:
        return ""
    return (
        f" (make sure the device's TelePeriod is below {meter.stale_after_s:g} s: stock Tasmota reports "
        f"only every {TASMOTA_TELE_PERIOD_S} s; run `TelePeriod 10` in its console)"
    )


def _grid_meter_warning(cfg: SiteConfig) -> list[str]:
    """A car may discharge but nothing measures the grid: the daemon's safe mode forbids discharge
    without a grid reading. Not an error: the simulator and `v2x plan` need no meters."""
    if any(m.role is MeterRole.GRID for m in cfg.meters):
        return []
    discharging = [v.id for v in cfg.vehicles if v.permissions.v2g or v.permissions.v2h]
    if not discharging:
        return []
    return [
        f"no grid meter: the daemon stays in safe mode (no discharge), so V2G/V2H of {', '.join(discharging)} "
        "never happens; add a meter with role: grid under meters (see docs/mqtt.md)"
    ]


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def mqtt_summary(cfg: SiteConfig) -> str:
    mqtt = cfg.mqtt
    text = f"mqtt {mqtt.host}:{mqtt.port}"
    if mqtt.tls.enabled:
        return text + " (TLS)"
    if mqtt.password is not None and mqtt.host not in _LOOPBACK:
        return text + ", no TLS: the password crosses the network in plain text; set mqtt.tls.enabled"
    return text


def api_summary(cfg: SiteConfig) -> str:
    api = cfg.api
    if not api.enabled:
        return "api off"
    scheme = "https" if api.tls_cert_file is not None else "http"
    guards = [g for g, on in (("dashboard login", api.password_hash), ("bearer token", api.token)) if on]
    if not guards:
        return f"api {scheme}://{api.host}:{api.port}, no login (this machine only)"
    return f"api {scheme}://{api.host}:{api.port}, needs the {' or the '.join(guards)}"


# ------------------------------------------------------------------ files and start-up

_FILE_FIX = "check the path and the file's permissions; a relative path starts at the working directory"


def _unreadable(where: str, path: Path) -> ConfigIssue | None:
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as exc:
        return ConfigIssue(where, f"{str(path)!r} cannot be read: {exc.strerror or exc}", _FILE_FIX)
    return None


def _certificates(where: str, path: Path) -> ConfigIssue | None:
    """None when ``path`` is a readable PEM file with at least one certificate."""
    problem = _unreadable(where, path)
    if problem is not None:
        return problem
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except (ssl.SSLError, ValueError):
        return ConfigIssue(
            where,
            f"{str(path)!r} holds no PEM certificate",
            "give a certificate in PEM format: text starting with -----BEGIN CERTIFICATE-----",
        )
    return None


def _no_passphrase() -> bytes:
    return b""  # an encrypted key fails to load instead of prompting on the terminal


def _key_pair(where: str, cert: Path, key: Path | None) -> list[ConfigIssue]:
    """Problems of a certificate and its private key (``key`` None: the key is in the cert file)."""
    problem = _certificates(f"{where}.cert_file", cert)
    if problem is not None:
        return [problem]
    key_field = f"{where}.key_file" if key is not None else f"{where}.cert_file"
    if key is not None and (problem := _unreadable(key_field, key)) is not None:
        return [problem]
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), None if key is None else str(key), password=_no_passphrase)
    except ssl.SSLError as exc:
        shown = str(key if key is not None else cert)
        if exc.reason == "KEY_VALUES_MISMATCH":
            return [
                ConfigIssue(
                    key_field,
                    f"{shown!r} is not the key of the certificate in {str(cert)!r}",
                    "give the private key the certificate was issued for",
                )
            ]
        return [
            ConfigIssue(
                key_field,
                f"{shown!r} holds no private key that loads",
                "give the certificate's private key in PEM format, -----BEGIN PRIVATE KEY-----, "
                "without a passphrase",
            )
        ]
    except OSError as exc:
        return [ConfigIssue(key_field, f"cannot be loaded: {exc.strerror or exc}", _FILE_FIX)]
    return []


def tls_file_issues(cfg: SiteConfig) -> list[ConfigIssue]:
    """The TLS files the config names (ocpp.tls, and mqtt.tls when enabled) that are missing,
    unreadable or not PEM certificates and keys that load. The HTTP API has no TLS settings."""
    issues: list[ConfigIssue] = []
    ocpp = cfg.ocpp.tls
    if ocpp is not None:
        issues += _key_pair("ocpp.tls", ocpp.cert_file, ocpp.key_file)
        if ocpp.client_ca_file is not None and (
            problem := _certificates("ocpp.tls.client_ca_file", ocpp.client_ca_file)
        ):
            issues.append(problem)
    mqtt = cfg.mqtt.tls
    if mqtt.enabled:
        if mqtt.ca_file is not None and (problem := _certificates("mqtt.tls.ca_file", mqtt.ca_file)):
            issues.append(problem)
        if mqtt.cert_file is not None:
            issues += _key_pair("mqtt.tls", mqtt.cert_file, mqtt.key_file)
    return issues


def _listeners(cfg: SiteConfig) -> list[tuple[str, str, int]]:
    """(config section, host, port) of every server the daemon starts."""
    found = [("ocpp", cfg.ocpp.host, cfg.ocpp.port)]
    if cfg.api.enabled:
        found.append(("api", cfg.api.host, cfg.api.port))
    return found


_BIND_ADDRESS = re.compile(r"\('([^']*)', (\d+)")
"""asyncio names the address it failed on: "error while attempting to bind on address ('::1', 9000, 0, 0): ..."."""


def startup_issues(cfg: SiteConfig, exc: OSError) -> list[ConfigIssue]:
    """What a start-up error of the daemon says about the config: the field and a fix. Empty when
    the error is not about a configured address, port or TLS file."""
    listeners = _listeners(cfg)
    if isinstance(exc, socket.gaierror):
        return _unresolved_hosts(listeners)
    bound = _BIND_ADDRESS.search(str(exc))
    if bound is not None and exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
        matching = [item for item in listeners if item[2] == int(bound[2])]
        if len(matching) > 1:
            matching = [item for item in matching if item[1] == bound[1]] or matching
        return [_bind_issue(exc.errno, *item) for item in matching]
    if isinstance(exc, ssl.SSLError | FileNotFoundError | IsADirectoryError | PermissionError):
        issues = tls_file_issues(cfg)
        if issues or not isinstance(exc, ssl.SSLError):
            return issues
        section = "ocpp.tls" if cfg.ocpp.tls is not None else "mqtt.tls"
        return [
            ConfigIssue(
                section, f"the TLS files do not load: {exc.reason or exc}", "check cert_file and key_file"
            )
        ]
    return []


def _unresolved_hosts(listeners: list[tuple[str, str, int]]) -> list[ConfigIssue]:
    issues = []
    for section, host, _ in listeners:
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (socket.gaierror, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
            issues.append(
                ConfigIssue(
                    f"{section}.host",
                    f"{host!r} does not resolve to an address: {reason}",
                    "write an address of this machine: 0.0.0.0 for every interface, 127.0.0.1 for this "
                    "machine only",
                )
            )
    return issues


def _bind_issue(code: int, section: str, host: str, port: int) -> ConfigIssue:
    if code == errno.EADDRINUSE:
        return ConfigIssue(
            f"{section}.port",
            f"{port} is already in use on {host}",
            "stop the program that listens there or choose another port",
        )
    if code == errno.EADDRNOTAVAIL:
        return ConfigIssue(
            f"{section}.host",
            f"{host!r} is not an address of this machine",
            "use one of its addresses, or 0.0.0.0 for every interface",
        )
    return ConfigIssue(
        f"{section}.port",
        f"{port} may not be used by this process (permission denied)",
        "use a port above 1023, or allow the process to bind it with CAP_NET_BIND_SERVICE",
    )


def cmd_check_config(args: argparse.Namespace, out: TextIO) -> int:
    try:
        cfg = load_config(args.file)
        issues = tls_file_issues(cfg)
        if issues:
            raise ConfigError(args.file, issues)
    except ConfigError as exc:
        print_config_error(exc, sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{args.file}: OK", file=out)
    for line in site_summary(cfg):
        print(f"  {line}", file=out)
    for warning in unauthenticated_charger_warnings(cfg):
        print(f"WARNING: {warning}", file=out)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace, out: TextIO) -> int:
    if args.kind == "snapshot":
        schema = Snapshot.model_json_schema()
    else:
        schema = SiteConfig.model_json_schema(by_alias=True)
    json.dump(schema, out, indent=2)
    print(file=out)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    try:
        cfg = load_config(args.config)
        snapshot = load_snapshot(args.snapshot)
    except ConfigError as exc:
        print_config_error(exc, sys.stderr)
        return EXIT_BAD_INPUT
    # The solver stack is heavy to import; only this command needs it.
    from controller.optimizer import Planner, SnapshotError
    from controller.optimizer.report import plan_table
    from controller.plan_record import plan_to_dict

    try:
        planner = Planner(cfg)
        plan = planner.plan(snapshot)
    except SnapshotError as exc:
        print_config_error(ConfigError(args.snapshot, exc.issues), sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        json.dump(plan_to_dict(plan), out, indent=2)
        print(file=out)
    else:
        for line in plan_table(plan, snapshot.load_w, snapshot.pv_w, cfg.site.timezone, cfg.site.currency):
            print(line, file=out)
    return EXIT_FAILURE if plan.fallback else EXIT_OK


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    # First of all: a stop signal during start-up stops the daemon cleanly instead of killing it.
    stop_signals = StopSignals()
    stop_signals.install()
    code = _run(args, stop_signals)
    if code != EXIT_OK:
        stop_signals.uninstall()
    return code


def _run(args: argparse.Namespace, stop_signals: StopSignals) -> int:
    try:
        cfg = load_config(args.config)
        issues = tls_file_issues(
            cfg
        )  # before anything starts; also keeps OpenSSL from asking for a passphrase
        if issues:
            raise ConfigError(args.config, issues)
    except ConfigError as exc:
        print_config_error(exc, sys.stderr)
        return EXIT_BAD_INPUT
    for warning in unauthenticated_charger_warnings(cfg):
        print(f"WARNING: {warning}", file=sys.stderr)
    # Logging follows the config unless the command line asked for something explicitly.
    level = args.log_level or cfg.logging.level
    fmt = args.log_format if args.log_format != "auto" else cfg.logging.format
    configure_logging(level, fmt)
    import asyncio
    import sqlite3

    from controller.app import run_daemon

    try:
        asyncio.run(run_daemon(cfg, stop_signals))
    except sqlite3.Error as exc:
        print(f"error: storage.path {cfg.storage.path}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        # A taken port, an address that is not this machine's, a certificate that does not load:
        # a config problem, said with the field and a fix. Anything else: as it is.
        issues = startup_issues(cfg, exc)
        for issue in issues:
            print(f"error: {issue}", file=sys.stderr)
        if issues:
            return EXIT_BAD_INPUT
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def health_url(host: str, port: int) -> str:
    """Where a probe on this machine reaches the API bound to ``host``."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/health"


def _degraded_reasons(body: str) -> list[str]:
    """``what: why`` for each entry of a ``/health`` answer's ``degraded`` list (none if unreadable)."""
    try:
        answer = json.loads(body)
    except ValueError:
        return []
    entries = answer.get("degraded") if isinstance(answer, dict) else None
    if not isinstance(entries, list):
        return []
    return [f"{e.get('what')}: {e.get('why')}" for e in entries if isinstance(e, dict)]


def cmd_health(args: argparse.Namespace, out: TextIO) -> int:
    # A container probe knows two answers: 0 healthy, 1 not; a bad config is "not".
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print_config_error(exc, sys.stderr)
        return EXIT_FAILURE
    if not cfg.api.enabled:
        print("unhealthy: api.enabled is false, so there is no health endpoint to ask", file=sys.stderr)
        return EXIT_FAILURE
    url = health_url(cfg.api.host, cfg.api.port)
    # No proxy: an HTTP(S)_PROXY in the environment must not route a local probe elsewhere.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=args.timeout) as response:
            status, body = response.status, response.read(65536)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(65536)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"unhealthy: {url}: {reason}", file=sys.stderr)
        return EXIT_FAILURE
    detail = body.decode("utf-8", "replace").strip()
    if status == 200:
        reasons = _degraded_reasons(detail)
        if reasons:
            # Running, so exit 0 (a restart would not help); but say what is wrong.
            print(f"degraded: {url}: {'; '.join(reasons)}", file=out)
        else:
            print(f"healthy: {url}: {detail}", file=out)
        return EXIT_OK
    print(f"unhealthy: {url}: HTTP {status} {detail}", file=sys.stderr)
    return EXIT_FAILURE


def cmd_hash_password(args: argparse.Namespace, out: TextIO) -> int:
    password = sys.stdin.readline().rstrip("\n") if args.stdin else getpass.getpass("charger password: ")
    if not password:
        print("error: empty password", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(hash_password(password), file=out)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="v2x",
        description="Home controller for bidirectional EV charging (V2G / V2H / V2L).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: warning; for `run`, the config's logging.level)",
    )
    parser.add_argument(
        "--log-format",
        default="auto",
        choices=["auto", "console", "json"],
        help="console on a terminal, else JSON",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # The simulator sits above the daemon (it runs the daemon's code), so ``controller`` imports it
    # only here, to add ``v2x sim``, never at module level.
    from sim.cli import register as register_sim
    from sim.hil.demo import register as register_demo

    register_sim(sub)
    register_demo(sub)
    register_prices(sub)

    p = sub.add_parser(
        "check-config",
        help="validate a site config and print a summary",
        description="Validate a site config, and that the TLS certificate and key files it names load. "
        "Prints a short summary of the site and exits 0; on a bad config prints every problem with its "
        "path and a fix to stderr and exits 2.",
    )
    p.add_argument("file", help="site config YAML (${VAR} is read from the environment)")
    p.set_defaults(handler=cmd_check_config)

    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of the site config or of a planner snapshot",
        description="Print the JSON Schema of the site config (default) or of a planner snapshot, "
        "for editors and validators.",
    )
    p.add_argument(
        "kind",
        nargs="?",
        default="config",
        choices=["config", "snapshot"],
        help="which schema (default: config)",
    )
    p.set_defaults(handler=cmd_schema)

    p = sub.add_parser(
        "plan",
        help="run one optimisation on a snapshot and print the plan",
        description="Run one optimisation on a snapshot of the world and print the plan per step with "
        "the reason for each car. Exit 0 with a plan, 1 when only the safe fallback plan was possible, "
        "2 on a bad config or snapshot.",
    )
    p.add_argument("--config", required=True, help="site config YAML")
    p.add_argument("--snapshot", required=True, help="snapshot JSON (see `v2x schema snapshot`)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON instead of a table")
    p.set_defaults(handler=cmd_plan)

    p = sub.add_parser(
        "run",
        help="run the daemon: OCPP server, MQTT, planner, dispatcher, store",
        description="Run the daemon until SIGTERM/SIGINT, then leave every charger on its safe default "
        "profile and exit 0. Exit 2 on a bad config, also when a configured port is taken, an address "
        "is not this machine's or a TLS file does not load (the field is named); 1 when it cannot "
        "start otherwise (storage).",
    )
    p.add_argument("--config", required=True, help="site config YAML")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser(
        "health",
        help="ask the running daemon's GET /health (for container health checks)",
        description="Ask the running daemon's HTTP API (address and port from the config) whether it is "
        "healthy. Exit 0 when it answers 200: prints 'healthy', or 'degraded' with what is degraded and why "
        "(MQTT down, safe mode, a charger offline, an old plan, stale meters) while it still runs. "
        "Exit 1 otherwise (not running, unhealthy, API disabled).",
    )
    p.add_argument("--config", required=True, help="site config YAML (for api.host and api.port)")
    p.add_argument("--timeout", type=float, default=4.0, help="seconds to wait for the answer (default: 4)")
    p.set_defaults(handler=cmd_health)

    p = sub.add_parser(
        "hash-password",
        help="hash a charger password for chargers[].auth.password_hash",
        description="Hash a charger's OCPP Basic-auth password (PBKDF2-SHA256) and print the line to "
        "paste as chargers[].auth.password_hash. The password is asked for without echo.",
    )
    p.add_argument("--stdin", action="store_true", help="read the password from the first line of stdin")
    p.set_defaults(handler=cmd_hash_password)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level or "warning", args.log_format)
    handler: Handler = args.handler
    try:
        return handler(args, out if out is not None else sys.stdout)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`v2x plan ... | head`): stop quietly, without a traceback at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
