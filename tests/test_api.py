"""The HTTP API over a real socket (uvicorn on port 0) in front of a real daemon (not started: no
OCPP or MQTT sockets): every endpoint, auth by token, cookie and CSRF, bad bodies, limits."""

from __future__ import annotations

import asyncio
import sqlite3
import ssl
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.api import ApiAuth, ApiServer, create_app
from controller.api.auth import LOGIN_FAILURES_PER_MINUTE, SESSION_COOKIE
from controller.api.server import MAX_BODY_BYTES, RequestLimits
from controller.daemon_api import DaemonApi
from controller.domain import MeterReading, MeterRole
from controller.passwords import hash_password
from tests.conftest import stored
from tests.test_site import example_daemon

TOKEN = "s3cret-token"
PASSWORD = "correct horse battery"
PASSWORD_HASH = hash_password(PASSWORD, iterations=1000)
CAR = "family-ev"
READS = [
    "/state",
    "/api/status",
    "/api/flows",
    "/api/vehicles",
    "/api/chargers",
    "/api/plan",
    "/api/history",
    "/api/events",
    "/api/money",
    "/api/config",
    "/metrics",
]


@dataclass
class Api:
    daemon: Any
    server: ApiServer
    client: httpx.AsyncClient

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    daemon = example_daemon(tmp_path)
    now = datetime.now(UTC)
    daemon.inputs.update_meter(MeterReading("grid", MeterRole.GRID, 850.0, now))
    app = create_app(DaemonApi(daemon), ApiAuth(TOKEN, PASSWORD_HASH, 3600.0))
    server = ApiServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
            yield Api(daemon, server, client)
    finally:
        await server.stop()
        daemon.persistence.close()


async def test_health_needs_no_auth_and_tells_why_it_is_not_alive(api: Api) -> None:
    answer = await api.client.get("/health")
    assert answer.status_code == 503  # not started: no loops run
    assert answer.json()["status"] == "unhealthy" and "degraded" in answer.json()


@pytest.mark.parametrize("path", READS)
async def test_every_read_needs_auth_and_answers_with_the_token(api: Api, path: str) -> None:
    refused = await api.client.get(path)
    assert refused.status_code == 401 and refused.json()["error"]
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert (await api.client.get(path, headers={"Authorization": "Bearer nope"})).status_code == 401
    answer = await api.client.get(path, headers={"Authorization": f"bEaReR {TOKEN}"})  # any case
    assert answer.status_code in (200, 204), answer.text


async def test_reads_show_the_site(api: Api) -> None:
    h = api.bearer
    flows = (await api.client.get("/api/flows", headers=h)).json()
    assert flows["grid_w"] == 850.0
    (car,) = (await api.client.get("/api/vehicles", headers=h)).json()
    assert car["id"] == CAR and car["mode"] == "auto" and car["permissions"]["v2g"] in (True, False)
    assert car["reserve_percent"] > 0 and car["capacity_kwh"] > 0
    chargers = (await api.client.get("/api/chargers", headers=h)).json()
    assert chargers and chargers[0]["connected"] is False
    status = (await api.client.get("/api/status", headers=h)).json()
    assert status["currency"] == "EUR" and status["mqtt_connected"] is False
    assert (await api.client.get("/api/plan", headers=h)).status_code == 204  # no plan yet
    config = (await api.client.get("/api/config", headers=h)).json()
    assert "example-charger-password" not in str(config)
    hashes = [c["auth"]["password_hash"] for c in config["chargers"] if c.get("auth")]
    assert hashes and all(value == "[redacted]" or "*" in value for value in hashes)
    money = (await api.client.get("/api/money", headers=h)).json()
    assert money["currency"] == "EUR" and money["today"]["minutes_counted"] == 0


async def test_a_plan_is_shown_per_step_with_prices_and_each_car(api: Api) -> None:
    daemon = api.daemon
    now = datetime.now(UTC)
    load, pv = daemon.forecasts.forecasts(now)
    daemon.plan = daemon.planner.plan(daemon.site.planner_snapshot(now, load, pv))
    plan = (await api.client.get("/api/plan", headers=api.bearer)).json()
    assert plan["steps"] == len(plan["import_price_per_kwh"]) == len(plan["grid_import_w"]) > 0
    car = plan["vehicles"][CAR]
    assert len(car["soc_percent"]) == plan["steps"] + 1 and car["reason"]


async def test_history_returns_recorded_series_on_a_step_grid(api: Api) -> None:
    daemon = api.daemon
    start = datetime(2026, 12, 1, 10, tzinfo=UTC)
    for minute in range(30):
        daemon.store.record_reading("grid", start + timedelta(minutes=minute), 1000.0 + minute)
    stored(daemon).flush_history()
    answer = await api.client.get(
        "/api/history",
        headers=api.bearer,
        params={"since": start.isoformat(), "until": (start + timedelta(hours=1)).isoformat(), "step_s": 600},
    )
    body = answer.json()
    assert len(body["times"]) == 6 and body["series"]["grid_w"][:3] == [1004.5, 1014.5, 1024.5]
    assert body["series"]["grid_w"][3:] == [None, None, None]
    assert f"{CAR}.soc_percent" in body["series"] and "import_price" in body["series"]
    bad = await api.client.get(
        "/api/history", headers=api.bearer, params={"since": start.isoformat(), "until": start.isoformat()}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "since"


async def test_a_command_with_the_token_is_applied_and_on_disk(api: Api) -> None:
    answer = await api.client.post(
        f"/api/vehicles/{CAR}/mode", headers=api.bearer, json={"mode": "no_discharge"}
    )
    assert answer.status_code == 200 and answer.json() == {"ok": True, "vehicle": CAR, "command": "mode"}
    assert api.daemon.site.vehicles[CAR].mode.value == "no_discharge"
    with sqlite3.connect(api.daemon.store.path) as db:
        assert db.execute("SELECT body FROM overrides WHERE kind = 'mode'").fetchone() == (
            '{"mode": "no_discharge"}',
        )
    cleared = await api.client.delete(f"/api/vehicles/{CAR}/overrides/mode", headers=api.bearer)
    assert cleared.status_code == 200 and api.daemon.site.vehicles[CAR].mode.value == "auto"


async def test_a_departure_set_and_cleared(api: Api) -> None:
    at = (datetime.now(UTC) + timedelta(hours=10)).replace(microsecond=0)
    body = {"at": at.isoformat(), "target_soc_percent": 85}
    assert (
        await api.client.post(f"/api/vehicles/{CAR}/departure", headers=api.bearer, json=body)
    ).status_code == 200
    car = (await api.client.get("/api/vehicles", headers=api.bearer)).json()[0]
    assert (
        car["departure_at"] == at.isoformat().replace("+00:00", "Z") and car["departure_source"] == "override"
    )
    assert car["target_soc_percent"] == 85
    cleared = await api.client.delete(f"/api/vehicles/{CAR}/overrides/departure", headers=api.bearer)
    assert cleared.status_code == 200 and api.daemon.site.vehicles[CAR].one_off is None


@pytest.mark.parametrize(
    ("command", "body", "field"),
    [
        ("departure", {"at": "tomorrow", "target_soc_percent": 80}, "at"),
        ("departure", {"at": "07:30", "target_soc_percent": 180}, "target_soc_percent"),
        ("mode", {"mode": "warp"}, None),
        ("mode", {"mode": "auto", "extra": 1}, None),
        ("v2l", {"action": "start", "power_w": -5}, None),
        ("weekly_departure", {"weekday": "caturday", "time": "07:00", "target_soc_percent": 80}, None),
    ],
)
async def test_a_bad_body_gets_422_naming_the_problem_and_changes_nothing(
    api: Api, command: str, body: dict[str, Any], field: str | None
) -> None:
    before = api.daemon.site.overrides(api.daemon.site.vehicles[CAR])
    answer = await api.client.post(f"/api/vehicles/{CAR}/{command}", headers=api.bearer, json=body)
    assert answer.status_code == 422 and answer.json()["error"]
    if field is not None:
        assert answer.json()["field"] == field, answer.json()
    assert api.daemon.site.overrides(api.daemon.site.vehicles[CAR]) == before


async def test_not_json_unknown_vehicle_unknown_command_and_a_huge_body(api: Api) -> None:
    h = api.bearer
    assert (
        await api.client.post(f"/api/vehicles/{CAR}/mode", headers=h, content=b"{nope")
    ).status_code == 422
    assert (await api.client.post("/api/vehicles/nobody/mode", headers=h, json="auto")).status_code == 404
    assert (await api.client.post(f"/api/vehicles/{CAR}/fly", headers=h, json="auto")).status_code == 422
    huge = b'"' + b"a" * (MAX_BODY_BYTES + 10) + b'"'
    assert (await api.client.post(f"/api/vehicles/{CAR}/mode", headers=h, content=huge)).status_code == 413


async def test_browser_login_gives_an_httponly_strict_cookie_and_writes_need_the_csrf_token(api: Api) -> None:
    assert (await api.client.post("/api/login", json={"password": "wrong"})).status_code == 401
    login = await api.client.post("/api/login", json={"password": PASSWORD})
    assert login.status_code == 200
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    csrf = login.json()["csrf_token"]
    assert (await api.client.get("/api/vehicles")).status_code == 200  # the cookie reads
    session = (await api.client.get("/api/session")).json()
    assert session["authenticated"] and session["csrf_token"] == csrf
    url = f"/api/vehicles/{CAR}/mode"
    assert (await api.client.post(url, json="charge_now")).status_code == 403  # no CSRF header
    assert (
        await api.client.post(url, json="charge_now", headers={"X-CSRF-Token": "forged"})
    ).status_code == 403
    assert (await api.client.post(url, json="charge_now", headers={"X-CSRF-Token": csrf})).status_code == 200
    assert (await api.client.post("/api/logout")).status_code == 204
    api.client.cookies.clear()
    assert (await api.client.get("/api/vehicles")).status_code == 401


async def test_failed_logins_are_throttled(api: Api) -> None:
    for _ in range(LOGIN_FAILURES_PER_MINUTE):
        assert (await api.client.post("/api/login", json={"password": "guess"})).status_code == 401
    assert (await api.client.post("/api/login", json={"password": PASSWORD})).status_code == 429
    assert (await api.client.post("/api/login", json={})).status_code == 422


async def test_the_dashboard_and_the_openapi_document_are_served(api: Api) -> None:
    page = await api.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        assert (await api.client.get(f"/static/{name}")).status_code == 200
    assert (await api.client.get("/static/secrets.txt")).status_code == 404
    spec = (await api.client.get("/openapi.json")).json()
    assert {"/api/vehicles/{vehicle_id}/{command}", "/api/plan", "/api/history"} <= set(spec["paths"])


async def test_without_any_auth_reads_are_open_and_writes_still_need_the_csrf_token(tmp_path: Path) -> None:
    daemon = example_daemon(tmp_path)
    server = ApiServer(create_app(DaemonApi(daemon), ApiAuth(None, None, 60.0)), "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/api/vehicles")).status_code == 200
            assert (await client.post(f"/api/vehicles/{CAR}/mode", json="auto")).status_code == 403
            csrf = (await client.get("/api/session")).json()["csrf_token"]
            answer = await client.post(
                f"/api/vehicles/{CAR}/mode", json="auto", headers={"X-CSRF-Token": csrf}
            )
            assert answer.status_code == 200
    finally:
        await server.stop()
        daemon.persistence.close()


async def test_metrics_open_to_a_local_prometheus_when_configured(tmp_path: Path) -> None:
    daemon = example_daemon(tmp_path)
    app = create_app(DaemonApi(daemon), ApiAuth(TOKEN, None, 60.0), metrics_public=True)
    server = ApiServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            text = (await client.get("/metrics")).text
            assert "v2x_safe_mode" in text and "v2x_plans_total" in text
            assert (await client.get("/api/vehicles")).status_code == 401
    finally:
        await server.stop()
        daemon.persistence.close()


async def test_health_gets_through_when_every_request_slot_is_taken() -> None:
    release = asyncio.Event()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] != "/health":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limits = RequestLimits(slow_app, max_concurrent=2)
    sent: list[int] = []

    async def call(path: str) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                sent.append(message["status"])

        await limits({"type": "http", "path": path, "headers": []}, receive, send)

    busy = [asyncio.create_task(call("/api/plan")) for _ in range(2)]
    await asyncio.sleep(0.01)
    await call("/api/plan")
    await call("/health")
    assert sent == [503, 200]
    release.set()
    await asyncio.gather(*busy)
    assert sent == [503, 200, 200, 200]


async def test_a_cookie_is_refused_after_the_session_expired() -> None:
    auth = ApiAuth(None, PASSWORD_HASH, session_s=0.05)
    session = auth.login(PASSWORD, "127.0.0.1")
    assert session is not None and auth.access(None, session, None).read
    await asyncio.sleep(0.1)
    assert not auth.access(None, session, None).read
    assert SESSION_COOKIE == "v2x_session"


async def test_https_from_the_configured_certificate_with_a_secure_cookie(tmp_path: Path) -> None:
    from tests.ocpp_support.certs import Authority

    ca = Authority(tmp_path, "api-ca")
    issued = ca.issue("localhost", server=True)
    daemon = example_daemon(tmp_path)
    app = create_app(DaemonApi(daemon), ApiAuth(None, PASSWORD_HASH, 60.0), secure_cookie=True)
    server = ApiServer(app, "127.0.0.1", 0, tls_cert_file=issued.cert, tls_key_file=issued.key)
    await server.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{server.port}",
            verify=ssl.create_default_context(cafile=str(ca.path)),
        ) as client:
            login = await client.post("/api/login", json={"password": PASSWORD})
            assert login.status_code == 200 and "secure" in login.headers["set-cookie"].lower()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get("/health")  # no plain HTTP on a TLS listener
    finally:
        await server.stop()
        daemon.persistence.close()
