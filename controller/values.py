"""Untrusted values from the wire (MQTT payloads, OCPP meter values, signals) to checked numbers and times.

Each caller passes its own error type (a ``ValueError`` subclass), so the message lands in its log
or reply with the context it knows.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from controller.domain import ensure_utc

__all__ = ["finite_number", "parse_json_path", "utc_from_iso"]


def parse_json_path(path: str) -> tuple[str | int, ...]:
    """``"a.0.b"`` -> ``("a", 0, "b")``; a purely numeric part indexes a list.

    The site config checks ``meters[].json_path`` with it, so a path a meter cannot use is refused
    before the daemon starts."""
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise ValueError(f"json path {path!r} has an empty part")
    return tuple(int(p) if p.isdigit() else p for p in parts)


def finite_number(
    value: Any, what: str, error: type[ValueError] = ValueError, *, strings: bool = False
) -> float:
    """A JSON number as a finite float; with ``strings`` also a numeric string (OCPP 1.6, some meters).

    ``bool`` is an ``int`` to Python but never a reading, so it is refused like ``None``. A string
    must be plain ASCII: ``float()`` also reads full-width and other Unicode digits (``"８０"``),
    which no device sends and a reading must not be taken from.
    """
    if isinstance(value, bool) or value is None:
        raise error(f"{what} is {str(value).lower() if value is not None else 'null'}, not a number")
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            raise error(f"{what} is too large") from None
    elif strings and isinstance(value, str):
        if not value.isascii():
            raise error(f"{what} {value[:40]!r} is not a plain ASCII number")
        try:
            number = float(value)
        except ValueError:
            raise error(f"{what} {value[:40]!r} is not a number") from None
    else:
        raise error(f"{what} is a {type(value).__name__}, not a number")
    if not math.isfinite(number):
        raise error(f"{what} is not a finite number")
    return number


def utc_from_iso(value: Any, what: str, error: type[ValueError] = ValueError) -> datetime:
    """ISO 8601 with an offset (``Z`` allowed) as UTC; a time without an offset is refused, not guessed.

    A time whose UTC equivalent falls outside years 1-9999 (``0001-01-01T00:30:00+01:00``) is
    refused as out of range.
    """
    if not isinstance(value, str):
        raise error(f"{what} is not a time string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise error(f"{what} {value[:40]!r} is not an ISO 8601 time") from None
    try:
        return ensure_utc(moment)
    except OverflowError:
        raise error(f"{what} {value[:40]!r} is out of range") from None
    except ValueError:
        raise error(f"{what} {value[:40]!r} has no timezone offset") from None
