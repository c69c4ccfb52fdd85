"""One fetch of one source over HTTP (httpx, async): its requests in order, each answer checked and
parsed. Failures are sorted by what helps: :class:`SourceAuthError` (fix the token),
:class:`SourceBusy` (rate limit or server trouble: retry later, ``retry_after_s`` when the server said),
:class:`SourceError` (the answer cannot be used)."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

import httpx

from controller.sources.base import HttpSource, SourceAuthError, SourceError

__all__ = ["SourceBusy", "fetch_source"]

R = TypeVar("R")
_MAX_BODY_BYTES = 8 * 1024 * 1024  # a year of 15-minute prices is well under 1 MiB


class SourceBusy(SourceError):
    """The source said to come back later (429) or failed on its side (5xx), or could not be reached."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


def _retry_after_s(response: httpx.Response) -> float | None:
    """Seconds the server asks to wait: ``Retry-After`` in seconds, or forecast.solar's
    ``X-Ratelimit-Retry-At`` (an ISO time); None when it said neither (the caller's backoff applies)."""
    value = response.headers.get("Retry-After", "").strip()
    try:
        if value:
            return max(0.0, float(value))
    except ValueError:
        pass  # an HTTP date: rare here, and the caller's backoff covers it
    retry_at = response.headers.get("X-Ratelimit-Retry-At", "").strip()
    try:
        at = dt.datetime.fromisoformat(retry_at) if retry_at else None
    except ValueError:
        return None
    if at is None or at.tzinfo is None:
        return None
    return max(0.0, (at - dt.datetime.now(dt.UTC)).total_seconds())


async def fetch_source(
    client: httpx.AsyncClient, source: HttpSource[Any, R], start: dt.datetime, end: dt.datetime
) -> list[R]:
    """Every answer of ``source`` for ``[start, end)``, parsed, in the order of its requests."""
    results: list[R] = []
    for request in source.requests(start, end):
        try:
            response = await client.request(
                request.method,
                request.url,
                params=dict(request.params),
                headers=dict(request.headers),
                content=request.body,
            )
        except httpx.HTTPError as exc:
            raise SourceBusy(f"{type(exc).__name__}: {str(exc)[:120] or 'no answer'}") from exc
        body = response.content
        if len(body) > _MAX_BODY_BYTES:
            raise SourceError(f"answer of {len(body)} bytes is too large")
        status = response.status_code
        if status == 429 or status >= 500:
            raise SourceBusy(source.error_reason(status, body), _retry_after_s(response))
        if status in (401, 403):
            raise SourceAuthError(source.error_reason(status, body))
        if not 200 <= status < 300:
            empty = source.no_data(status, body)
            if empty is None:
                raise SourceError(source.error_reason(status, body))
            results.append(empty)
            continue
        results.append(source.parse(request, body))
    return results
