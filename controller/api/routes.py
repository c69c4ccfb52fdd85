"""The HTTP API (FastAPI): reads of the daemon's views, writes through the driver-command path,
login, live updates and the dashboard's files. The daemon behind it is an :class:`ApiBackend`.
Every handler that reads the daemon is ``async``: it runs on the daemon's event loop, never in a
worker thread beside it (only the login, which hashes the password, runs in one).

Writes take the same JSON as the MQTT commands (``controller.commands``) and go through the same
validation and handler, so an answer here means what an MQTT reply means: applied, stored (on disk)
and re-planned on. A refused body gets 422 naming the field; nothing is applied then.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from controller import __version__
from controller.api.auth import CSRF_HEADER, SESSION_COOKIE, Access, ApiAuth
from controller.api.models import (
    BatteryView,
    ChargerView,
    CommandAnswer,
    ErrorAnswer,
    EventView,
    FlowsView,
    HistoryView,
    LoginAnswer,
    LoginBody,
    MoneyView,
    PlanView,
    SessionView,
    StatusView,
    VehicleView,
)
from controller.api.server import BodyTooLarge
from controller.commands import COMMAND_NAMES, CommandError
from controller.mqtt.command_channel import CommandRejected

__all__ = ["ApiBackend", "create_app"]

STREAM_PERIOD_S = 2.0
MAX_HISTORY = dt.timedelta(days=31)
CLEARABLE = ("departure", "mode", "v2l")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorAnswer} for code in (401, 403, 404, 413, 422, 429, 503)
}


class ApiBackend(Protocol):
    """What the API reads and asks of the daemon; all calls on the event loop, all quick."""

    def health(self) -> tuple[bool, dict[str, Any]]: ...
    def state(self) -> dict[str, Any]: ...
    def status(self) -> StatusView: ...
    def flows(self) -> FlowsView: ...
    def vehicles(self) -> list[VehicleView]: ...
    def batteries(self) -> list[BatteryView]: ...
    def chargers(self) -> list[ChargerView]: ...
    def plan(self) -> PlanView | None: ...
    def history(self, since: dt.datetime, until: dt.datetime, step_s: int) -> Awaitable[HistoryView]: ...
    def events(self, limit: int) -> Awaitable[list[EventView]]: ...
    def config(self) -> dict[str, Any]: ...
    def money(self) -> Awaitable[MoneyView]: ...
    def metrics(self) -> tuple[bytes, str]: ...
    def vehicle_ids(self) -> list[str]: ...
    def command(self, vehicle_id: str, name: str, body: bytes) -> Awaitable[None]: ...


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(ErrorAnswer(error=message, field=field).model_dump(), status_code=status)


class _Guard:
    """FastAPI dependencies: may this request read, may it write."""

    HINT = "log in (POST /api/login) or send the API token: Authorization: Bearer <token>"

    def __init__(self, auth: ApiAuth) -> None:
        self.auth = auth

    def access(self, request: Request) -> Access:
        return self.auth.access(
            request.headers.get("authorization"),
            request.cookies.get(SESSION_COOKIE),
            request.headers.get(CSRF_HEADER),
        )

    async def read(self, request: Request) -> None:
        if not self.access(request).read:
            raise HTTPException(401, self.HINT)

    async def write(self, request: Request) -> None:
        granted = self.access(request)
        if not granted.read:
            raise HTTPException(401, self.HINT)
        if not granted.write:
            raise HTTPException(403, granted.why)


def create_app(
    backend: ApiBackend, auth: ApiAuth, *, secure_cookie: bool = False, metrics_public: bool = False
) -> FastAPI:
    app = FastAPI(
        title="v2x-controller",
        version=__version__,
        description="Home controller for bidirectional EV charging: state, plan, history and controls.",
        docs_url=None,
        redoc_url=None,
        responses=_ERRORS,
    )
    guard = _Guard(auth)
    read, write = [Depends(guard.read)], [Depends(guard.write)]
    _error_handlers(app)
    _status_routes(app, backend, read)
    _data_routes(app, backend, read)
    _commands(app, backend, write)
    _session_routes(app, auth, secure_cookie)
    _stream(app, backend, read)
    _files(app)

    @app.get("/metrics", tags=["status"], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if not metrics_public:
            await guard.read(request)
        body, content_type = backend.metrics()
        return Response(body, media_type=content_type)

    return app


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        response = _error(exc.status_code, str(exc.detail))
        if exc.status_code == 401:
            response.headers["www-authenticate"] = 'Bearer realm="v2x"'
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _error(422, f"{where or 'request'}: {first.get('msg', 'invalid')}", where)

    @app.exception_handler(BodyTooLarge)
    async def too_large(_request: Request, _exc: BodyTooLarge) -> JSONResponse:
        return _error(413, "request body too large")


def _status_routes(app: FastAPI, backend: ApiBackend, read: list[Any]) -> None:
    @app.get("/health", tags=["status"], summary="Liveness and what is degraded (no auth)")
    async def health() -> JSONResponse:
        alive, details = backend.health()
        body = {**details, "status": details.get("status", "ok") if alive else "unhealthy"}
        return JSONResponse(json.loads(json.dumps(body, default=str)), status_code=200 if alive else 503)

    @app.get("/state", tags=["status"], dependencies=read, summary="The site now, in one document")
    async def state() -> JSONResponse:
        return JSONResponse(json.loads(json.dumps(backend.state(), default=str)))

    @app.get("/api/status", tags=["status"], dependencies=read)
    async def status() -> StatusView:
        return backend.status()

    @app.get("/api/flows", tags=["status"], dependencies=read)
    async def flows() -> FlowsView:
        return backend.flows()

    @app.get("/api/vehicles", tags=["vehicles"], dependencies=read)
    async def vehicles() -> list[VehicleView]:
        return backend.vehicles()

    @app.get("/api/batteries", tags=["batteries"], dependencies=read, summary="The home batteries now")
    async def batteries() -> list[BatteryView]:
        return backend.batteries()

    @app.get("/api/chargers", tags=["chargers"], dependencies=read)
    async def chargers() -> list[ChargerView]:
        return backend.chargers()

    @app.get(
        "/api/config", tags=["status"], dependencies=read, summary="The running config, secrets redacted"
    )
    async def config() -> dict[str, Any]:
        return backend.config()


def _data_routes(app: FastAPI, backend: ApiBackend, read: list[Any]) -> None:
    @app.get(
        "/api/plan",
        tags=["plan"],
        dependencies=read,
        response_model=PlanView,
        responses={204: {"description": "no plan yet"}},
    )
    async def plan() -> Any:
        current = backend.plan()
        return Response(status_code=204) if current is None else current

    @app.get("/api/history", tags=["history"], dependencies=read, response_model=HistoryView)
    async def history(
        since: Annotated[dt.datetime | None, Query(description="Default: 24 h before until")] = None,
        until: Annotated[dt.datetime | None, Query(description="Default: now")] = None,
        step_s: Annotated[int, Query(ge=60, le=86400)] = 300,
    ) -> Any:
        end = _utc(until) if until is not None else dt.datetime.now(dt.UTC)
        start = _utc(since) if since is not None else end - dt.timedelta(hours=24)
        if not start < end or end - start > MAX_HISTORY:
            return _error(422, "since must be before until, at most 31 days apart", "since")
        return await backend.history(start, end, step_s)

    @app.get("/api/events", tags=["history"], dependencies=read)
    async def events(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[EventView]:
        return await backend.events(limit)

    @app.get("/api/money", tags=["history"], dependencies=read)
    async def money() -> MoneyView:
        return await backend.money()


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


_COMMAND_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [{"type": "object"}, {"type": "string"}],
                    "description": "As the MQTT command of this name: see docs/mqtt.md, Driver commands",
                }
            }
        },
    }
}


def _commands(app: FastAPI, backend: ApiBackend, write: list[Any]) -> None:
    async def run(vehicle_id: str, name: str, body: bytes) -> CommandAnswer | JSONResponse:
        if vehicle_id not in backend.vehicle_ids():
            return _error(404, f"no vehicle {vehicle_id!r}")
        try:
            await backend.command(vehicle_id, name, body)
        except CommandError as exc:
            return _error(422, str(exc), _field_of(str(exc), body))
        except CommandRejected as exc:
            return _error(409, str(exc))
        return CommandAnswer(ok=True, vehicle=vehicle_id, command=name)

    @app.post(
        "/api/vehicles/{vehicle_id}/{command}",
        tags=["vehicles"],
        dependencies=write,
        openapi_extra=_COMMAND_BODY,
        response_model=CommandAnswer,
        responses={409: {"model": ErrorAnswer}},
        summary="A driver command: departure, weekly_departure, mode or v2l",
    )
    async def command(
        request: Request,
        vehicle_id: Annotated[str, Path(max_length=64)],
        command: Annotated[str, Path(pattern="^(" + "|".join(COMMAND_NAMES) + ")$")],
    ) -> Any:
        return await run(vehicle_id, command, await request.body())

    @app.delete(
        "/api/vehicles/{vehicle_id}/overrides/{kind}",
        tags=["vehicles"],
        dependencies=write,
        response_model=CommandAnswer,
        responses={409: {"model": ErrorAnswer}},
        summary="Clear an override: departure (back to the schedule), mode (back to auto), v2l (stop)",
    )
    async def clear(
        vehicle_id: Annotated[str, Path(max_length=64)],
        kind: Annotated[str, Path(pattern="^(" + "|".join(CLEARABLE) + ")$")],
    ) -> Any:
        name, body = {
            "departure": ("departure", b'{"clear": true}'),
            "mode": ("mode", b'"auto"'),
            "v2l": ("v2l", b'"stop"'),
        }[kind]
        return await run(vehicle_id, name, body)


def _field_of(message: str, body: bytes) -> str | None:
    """The body field a command error names: its messages start with it (``at '…' is not …``)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    first = message.split(" ", 1)[0].strip(":'\"")
    return first if isinstance(data, dict) and first in data else None


def _session_routes(app: FastAPI, auth: ApiAuth, secure_cookie: bool) -> None:
    @app.get("/api/session", tags=["session"])
    async def session(request: Request) -> SessionView:
        cookie = request.cookies.get(SESSION_COOKIE)
        csrf = auth.csrf_token(cookie)
        return SessionView(
            authenticated=(csrf is not None and (auth.required or cookie is not None)) or not auth.required,
            auth_required=auth.required,
            login_available=auth.password_hash is not None,
            csrf_token=csrf,
        )

    @app.post("/api/login", tags=["session"], response_model=LoginAnswer)
    def login(request: Request, body: LoginBody) -> JSONResponse:
        client = request.client.host if request.client else "?"
        if auth.too_many_failures(client):
            return _error(429, "too many failed logins; wait a minute")
        session_id = auth.login(body.password, client)
        if session_id is None:
            return _error(401, "wrong password" if auth.password_hash else "no login configured")
        csrf = auth.csrf_token(session_id)
        assert csrf is not None
        response = JSONResponse(LoginAnswer(csrf_token=csrf).model_dump())
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            max_age=int(auth.session_s),
            httponly=True,
            samesite="strict",
            secure=secure_cookie,
            path="/",
        )
        return response

    @app.post("/api/logout", tags=["session"], status_code=204)
    async def logout(request: Request) -> Response:
        auth.logout(request.cookies.get(SESSION_COOKIE))
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response


def _stream(app: FastAPI, backend: ApiBackend, read: list[Any]) -> None:
    @app.get(
        "/api/stream",
        tags=["status"],
        dependencies=read,
        include_in_schema=False,
        summary="Server-sent events: `now` every 2 s, `plan` when a new plan is made",
    )
    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(_events(request, backend), media_type="text/event-stream")


async def _events(request: Request, backend: ApiBackend) -> AsyncIterator[str]:
    last_plan: dt.datetime | None = None
    yield "retry: 3000\n\n"
    while not await request.is_disconnected():
        now = {
            "status": backend.status().model_dump(mode="json"),
            "flows": backend.flows().model_dump(mode="json"),
            "vehicles": [v.model_dump(mode="json") for v in backend.vehicles()],
            "batteries": [b.model_dump(mode="json") for b in backend.batteries()],
        }
        yield f"event: now\ndata: {json.dumps(now)}\n\n"
        plan = backend.plan()
        if plan is not None and plan.created_at != last_plan:
            last_plan = plan.created_at
            yield f"event: plan\ndata: {plan.model_dump_json()}\n\n"
        await asyncio.sleep(STREAM_PERIOD_S)


_STATIC = resources.files("controller.api") / "static"
_STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def _files(app: FastAPI) -> None:
    def serve(name: str) -> Callable[[], Response]:
        def file() -> Response:
            target = _STATIC / name
            if not target.is_file():
                return _error(404, f"no such file {name}")
            suffix = "." + name.rsplit(".", 1)[-1]
            headers = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}
            if suffix == ".html":
                headers["content-security-policy"] = (
                    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                    "frame-ancestors 'none'"
                )
            return Response(target.read_bytes(), media_type=_STATIC_TYPES.get(suffix), headers=headers)

        return file

    app.get("/", include_in_schema=False)(serve("index.html"))
    for name in ("app.js", "style.css", "icon.svg", "api.html"):
        app.get(f"/static/{name}", include_in_schema=False)(serve(name))


_ = FileResponse  # re-exported for the static files' type checks
