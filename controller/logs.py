"""structlog set up once: readable console output on a terminal, JSON lines otherwise.

Secrets never reach the output: any event key that looks like a secret is redacted, and credentials
inside text (an ``Authorization`` header a library logs at debug level, ``user:password@`` in a URL)
are blanked out. Every JSON line is strict JSON: non-finite floats are written as the strings
``"inf"``, ``"-inf"`` and ``"nan"``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, Literal, TextIO

import structlog

__all__ = ["configure_logging", "is_secret_key", "redact_secrets", "scrub_credentials"]

_SECRET_MARKERS = ("password", "passwd", "secret", "token", "authorization", "credential", "api_key")
REDACTED = "***"

# websockets logs every request header at debug level, so "Authorization: Basic <id:password>"
# would reach the log; URLs may carry user:password@.
_CREDENTIAL_PATTERNS = (
    re.compile(r"(?i)((?:proxy-)?authorization\s*[:=]\s*)[^\r\n,;]+"),
    re.compile(r"\b((?:Basic|Bearer) +)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+(?=@)"),
)


def is_secret_key(key: str) -> bool:
    """Does a field or log key name a secret (``password``, ``api_token`` …)? Topics are not secrets."""
    lowered = key.lower()
    return any(marker in lowered for marker in _SECRET_MARKERS) and not lowered.endswith("_topic")


def scrub_credentials(text: str) -> str:
    """Blank out credentials written inside free text (headers, URLs)."""
    for pattern in _CREDENTIAL_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_credentials(value)
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) else _redact(v)) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redact(v) for v in value)
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: blank out values whose key names a secret, at any depth, and
    credentials inside any text (the event message included)."""
    for key in list(event_dict):
        if is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(event_dict[key])
    return event_dict


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float, at any depth (dict keys too), replaced by its text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(float(value))  # float(): no "np.float64(inf)"
    if isinstance(value, dict):
        return {(_finite(k) if isinstance(k, float) else k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _strict_json_dumps(obj: Any, **kw: Any) -> str:
    """``json.dumps`` for the JSON renderer. Plain ``json.dumps`` writes inf and NaN as the bare
    tokens ``Infinity`` / ``NaN``, which are not JSON: strict parsers reject the whole line."""
    fallback: Callable[[Any], Any] | None = kw.pop("default", None)
    if fallback is not None:
        # What the fallback returns for an unknown object is serialised too, so clean it as well.
        def default(o: Any) -> Any:
            return _finite(fallback(o))

        kw["default"] = default
    return json.dumps(_finite(obj), allow_nan=False, **kw)


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "console", "json"] = "auto",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the stdlib root logger (libraries log through it) once."""
    out = stream if stream is not None else sys.stderr
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if use_console
        else structlog.processors.JSONRenderer(serializer=_strict_json_dumps)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_secrets,  # again: a formatted traceback is new text
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Chatty libraries stay at warning unless we debug.
    for name in ("websockets", "ocpp", "aiomqtt", "cvxpy"):
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else logging.WARNING)
