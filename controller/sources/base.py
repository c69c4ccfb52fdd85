"""What every internet source shares (pure: no sockets here).

A source is a small class registered by its config ``type``: it says which HTTP requests cover a
time range (``requests``) and turns a response body into data (``parse``), raising
:class:`SourceError` with a short reason for anything it cannot use. The fetcher
(``controller.sources.fetcher``) does the I/O, the schedule, retries, the cache and failover.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel

__all__ = [
    "HttpRequest",
    "HttpSource",
    "SourceContext",
    "SourceError",
    "SourceKind",
    "find_source",
    "json_answer",
    "json_or_none",
    "register_source",
    "source_names",
]

SourceKind = Literal["prices", "pv"]


class SourceError(Exception):
    """A response (or a config) a source cannot use; the message says why, briefly."""


class SourceAuthError(SourceError):
    """The source refused the credentials: retrying will not help until the token is fixed."""


def json_answer(body: bytes, not_json: str = "answer is not JSON") -> Any:
    """The body as JSON, or :class:`SourceError` with ``not_json`` (nesting too deep included)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise SourceError(not_json) from None


def json_or_none(body: bytes) -> Any:
    """The body as JSON, or None (an error body need not be JSON)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


@dataclass(frozen=True, slots=True)
class HttpRequest:
    url: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    method: Literal["GET", "POST"] = "GET"
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What a source may need from the site: its currency and time zone, and the environment
    (tokens are read from it, never from the config)."""

    currency: str = "EUR"
    timezone: str = "UTC"
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def secret(self, name: str, what: str) -> str:
        value = self.env.get(name, "").strip()
        if not value:
            raise SourceAuthError(f"{what}: environment variable {name} is not set")
        return value


C = TypeVar("C", bound=BaseModel)
R = TypeVar("R")


class HttpSource(ABC, Generic[C, R]):
    """One configured source. ``R`` is what ``parse`` returns (prices or a PV forecast)."""

    kind: ClassVar[SourceKind]
    type_name: ClassVar[str]
    default_base_url: ClassVar[str]

    def __init__(self, cfg: C, ctx: SourceContext) -> None:
        self.cfg = cfg
        self.ctx = ctx

    @property
    def base_url(self) -> str:
        configured: str | None = getattr(self.cfg, "base_url", None)
        return configured or self.default_base_url

    @abstractmethod
    def requests(self, start: dt.datetime, end: dt.datetime) -> list[HttpRequest]:
        """The requests whose answers cover ``[start, end)`` (UTC)."""

    @abstractmethod
    def parse(self, request: HttpRequest, body: bytes) -> R:
        """The data in a successful (2xx) answer; raises SourceError when it cannot be used."""

    def no_data(self, status: int, body: bytes) -> R | None:
        """For a non-2xx answer that only says "nothing published for this range" (ENTSO-E answers
        400 with an acknowledgement for a day not yet published): the empty result; else None."""
        return None

    def error_reason(self, status: int, body: bytes) -> str:
        """A short reason for a non-2xx answer, from the provider's own error format where it has one."""
        text = body[:200].decode("utf-8", "replace").strip()
        return f"HTTP {status}" + (f": {text}" if text else "")


_REGISTRY: dict[tuple[SourceKind, str], type[HttpSource[Any, Any]]] = {}
_S = TypeVar("_S", bound=type[HttpSource[Any, Any]])


def register_source(kind: SourceKind, type_name: str) -> Callable[[_S], _S]:
    """Class decorator: ``@register_source("prices", "entsoe")`` makes the class the fetcher of that
    config ``type``."""

    def register(cls: _S) -> _S:
        key = (kind, type_name)
        if key in _REGISTRY:
            raise ValueError(f"{kind} source {type_name!r} is registered twice")
        cls.kind = kind
        cls.type_name = type_name
        _REGISTRY[key] = cls
        return cls

    return register


def find_source(kind: SourceKind, type_name: str) -> type[HttpSource[Any, Any]]:
    try:
        return _REGISTRY[(kind, type_name)]
    except KeyError:
        raise SourceError(f"no {kind} source {type_name!r}") from None


def source_names(kind: SourceKind) -> list[str]:
    return sorted(name for k, name in _REGISTRY if k == kind)
