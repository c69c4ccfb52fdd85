"""Who may use the API: a bearer token for programs, a login session for the browser.

* **Token** (``api.token``): ``Authorization: Bearer <token>``, the scheme in any case. A request with
  the token needs nothing else: a browser never sends it on its own, so it cannot be forged across
  sites.
* **Login** (``api.password_hash``): ``POST /api/login`` with the password sets an HttpOnly,
  SameSite=Strict session cookie and returns the session's CSRF token. A write with the cookie must
  carry that token in ``X-CSRF-Token``: another site can make the browser send the cookie, but
  cannot read the token (same-origin policy) or set the header without a CORS pre-flight we never
  grant.
* **Neither configured**: the API listens on localhost only (the config refuses anything else), every
  read is open, and writes still need the anonymous CSRF token from ``GET /api/session`` (so a web
  page open on the gateway's own browser cannot post to it).

Sessions live in memory: a restart logs the browser out. Failed logins are slowed down per client.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from controller.passwords import verify_password

__all__ = [
    "CSRF_HEADER",
    "LOGIN_FAILURES_PER_MINUTE",
    "SESSION_COOKIE",
    "Access",
    "ApiAuth",
]

SESSION_COOKIE = "v2x_session"
CSRF_HEADER = "x-csrf-token"
LOGIN_FAILURES_PER_MINUTE = 5
MAX_SESSIONS = 64


@dataclass(frozen=True, slots=True)
class Access:
    """What a request may do."""

    read: bool
    write: bool
    """Writes need a token, or a session (or no auth at all) with the matching CSRF header."""
    why: str = ""
    """Why not, when it may not."""


@dataclass(slots=True)
class _Session:
    csrf_token: str
    last_used_s: float


class ApiAuth:
    def __init__(self, token: str | None, password_hash: str | None, session_s: float) -> None:
        self.token = token
        self.password_hash = password_hash
        self.session_s = session_s
        self._sessions: dict[str, _Session] = {}
        self._anonymous_csrf = secrets.token_urlsafe(32)
        self._failures: dict[str, list[float]] = {}

    @property
    def required(self) -> bool:
        """Whether anything is configured: without it, reads are open (localhost only)."""
        return self.token is not None or self.password_hash is not None

    def access(self, authorization: str | None, cookie: str | None, csrf: str | None) -> Access:
        if self._token_ok(authorization):
            return Access(read=True, write=True)
        session = self._session(cookie)
        if session is not None:
            return Access(read=True, write=_same(csrf, session.csrf_token), why="CSRF token missing or wrong")
        if not self.required:
            return Access(
                read=True, write=_same(csrf, self._anonymous_csrf), why="CSRF token missing or wrong"
            )
        return Access(read=False, write=False, why="log in, or send the API token as a bearer token")

    def csrf_token(self, cookie: str | None) -> str | None:
        """The CSRF token of the cookie's session (the anonymous one without auth); None: log in."""
        session = self._session(cookie)
        if session is not None:
            return session.csrf_token
        return None if self.required else self._anonymous_csrf

    def login(self, password: str, client: str) -> str | None:
        """A new session id for the right password; None when wrong or too many recent failures."""
        now = time.monotonic()
        recent = [t for t in self._failures.get(client, []) if now - t < 60.0]
        if len(recent) >= LOGIN_FAILURES_PER_MINUTE or self.password_hash is None:
            self._failures[client] = recent
            return None
        if not verify_password(password, self.password_hash):
            self._failures[client] = [*recent, now]
            return None
        self._failures.pop(client, None)
        self._expire(now)
        if len(self._sessions) >= MAX_SESSIONS:  # the oldest goes: a bounded table
            oldest = min(self._sessions, key=lambda sid: self._sessions[sid].last_used_s)
            del self._sessions[oldest]
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = _Session(secrets.token_urlsafe(32), now)
        return session_id

    def too_many_failures(self, client: str) -> bool:
        now = time.monotonic()
        return len([t for t in self._failures.get(client, []) if now - t < 60.0]) >= LOGIN_FAILURES_PER_MINUTE

    def logout(self, cookie: str | None) -> None:
        if cookie is not None:
            self._sessions.pop(cookie, None)

    def _token_ok(self, authorization: str | None) -> bool:
        if self.token is None or not authorization:
            return False
        scheme, _, offered = authorization.strip().partition(" ")
        return scheme.lower() == "bearer" and _same(offered.strip(), self.token)

    def _session(self, cookie: str | None) -> _Session | None:
        if not cookie:
            return None
        session = self._sessions.get(cookie)
        now = time.monotonic()
        if session is None or now - session.last_used_s > self.session_s:
            self._sessions.pop(cookie, None)
            return None
        session.last_used_s = now
        return session

    def _expire(self, now: float) -> None:
        for sid in [sid for sid, s in self._sessions.items() if now - s.last_used_s > self.session_s]:
            del self._sessions[sid]


def _same(offered: str | None, expected: str) -> bool:
    return offered is not None and hmac.compare_digest(offered.encode(), expected.encode())
