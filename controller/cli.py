"""The `v2x` command line."""

from __future__ import annotations

import argparse
import getpass
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import TextIO

from controller import __version__
from controller.config import ConfigError, SiteConfig, load_config
from controller.domain import plan_to_dict
from controller.logs import configure_logging
from controller.passwords import hash_password
from controller.snapshot import Snapshot, load_snapshot
from sim.cli import register as register_sim

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
        )
    imp = cfg.tariff.import_
    source = (
        "dynamic " + imp.dynamic_topic
        if imp.dynamic_topic
        else f"{imp.static_price_per_kwh} {s.currency}/kWh"
    )
    lines.append(f"tariff: import {source}; grid limits from {cfg.grid_signals.limit_topic or '-'}")
    lines.append(
        f"ocpp {cfg.ocpp.host}:{cfg.ocpp.port}{' (TLS)' if cfg.ocpp.tls else ''}; mqtt {cfg.mqtt.host}:{cfg.mqtt.port}"
    )
    lines.append(api_summary(cfg))
    return lines


def api_summary(cfg: SiteConfig) -> str:
    api = cfg.api
    if not api.enabled:
        return "api off"
    if api.token is not None:
        return f"api {api.host}:{api.port}, /state needs the token"
    if api.host in ("127.0.0.1", "::1", "localhost"):
        return f"api {api.host}:{api.port}, no token (this machine only)"
    return f"api {api.host}:{api.port}, no token: anyone on the network can read /state; set api.token"


def cmd_check_config(args: argparse.Namespace, out: TextIO) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print_config_error(exc, sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{args.file}: OK", file=out)
    for line in site_summary(cfg):
        print(f"  {line}", file=out)
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
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print_config_error(exc, sys.stderr)
        return EXIT_BAD_INPUT
    # Logging follows the config unless the command line asked for something explicitly.
    level = args.log_level or cfg.logging.level
    fmt = args.log_format if args.log_format != "auto" else cfg.logging.format
    configure_logging(level, fmt)
    import asyncio
    import sqlite3

    from controller.app import run_daemon

    try:
        asyncio.run(run_daemon(cfg))
    except sqlite3.Error as exc:
        print(f"error: storage.path {cfg.storage.path}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        # Port in use, unreadable certificate, database directory not writable …
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
            status, body = response.status, response.read(2048)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(2048)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"unhealthy: {url}: {reason}", file=sys.stderr)
        return EXIT_FAILURE
    detail = body.decode("utf-8", "replace").strip()
    if status == 200:
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
    register_sim(sub)

    p = sub.add_parser(
        "check-config",
        help="validate a site config and print a summary",
        description="Validate a site config. Prints a short summary of the site and exits 0; on a bad "
        "config prints every problem with its path and a fix to stderr and exits 2.",
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
        "profile and exit 0. Exit 2 on a bad config, 1 when it cannot start (port in use, storage).",
    )
    p.add_argument("--config", required=True, help="site config YAML")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser(
        "health",
        help="ask the running daemon's GET /health (for container health checks)",
        description="Ask the running daemon's HTTP API (address and port from the config) whether it is "
        "healthy. Exit 0 when it answers 200, 1 otherwise (not running, unhealthy, API disabled).",
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
