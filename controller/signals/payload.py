"""What every signal payload shares (pure): the size bound, JSON, the envelope, times, numbers, slots."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from collections.abc import Callable
from typing import Any

from controller.values import finite_number, utc_from_iso

__all__ = [
    "MAX_LIMIT_W",
    "MAX_PRICE_SLOTS",
    "MAX_SIGNAL_PAYLOAD_BYTES",
    "Segment",
    "SignalError",
    "finite",
    "issued_at_of",
    "load_json",
    "parse_slots",
    "parse_time",
    "unwrap_envelope",
]

Segment = tuple[dt.datetime, dt.datetime, float]
"""A value over ``[start, end)``."""

MAX_SIGNAL_PAYLOAD_BYTES = 256 * 1024
MAX_PRICE_SLOTS = 2000  # also bounds the slots of a PV forecast
MAX_LIMIT_W = 10_000_000.0  # the largest plausible power of any signal (caps, PV forecast)
MIN_SLOT = dt.timedelta(minutes=1)
MAX_SLOT = dt.timedelta(days=1)
_EPOCH_MIN, _EPOCH_MAX = 946_684_800, 4_102_444_800  # 2000-01-01 .. 2100-01-01


class SignalError(ValueError):
    """A signal payload that cannot be used; the message says why, for the log."""


def parse_time(value: Any, what: str) -> dt.datetime:
    """ISO 8601 with an offset (``Z`` allowed) or Unix seconds, as UTC."""
    if isinstance(value, bool):
        raise SignalError(f"{what} is not a time")
    if isinstance(value, int | float):
        if not (math.isfinite(value) and _EPOCH_MIN <= value <= _EPOCH_MAX):
            raise SignalError(f"{what} {value!r} is not a plausible Unix time")
        return dt.datetime.fromtimestamp(value, dt.UTC)
    return utc_from_iso(value, what, SignalError)


def finite(value: Any, what: str) -> float:
    return finite_number(value, what, SignalError)


def load_json(payload: bytes) -> Any:
    if len(payload) > MAX_SIGNAL_PAYLOAD_BYTES:
        raise SignalError(f"payload of {len(payload)} bytes exceeds {MAX_SIGNAL_PAYLOAD_BYTES}")
    try:
        return json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise SignalError("payload is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise SignalError(f"invalid JSON: {str(exc)[:80]}") from None


def unwrap_envelope(data: Any, list_key: str) -> tuple[list[Any], dict[str, Any]]:
    """A bare array, or an object with the array under ``list_key`` (a single window object is allowed)."""
    if isinstance(data, list):
        return data, {}
    if isinstance(data, dict):
        if list_key in data:
            items = data[list_key]
            if not isinstance(items, list):
                raise SignalError(f"{list_key} is not an array")
            return items, data
        return [data], {}
    raise SignalError(f"payload is a {type(data).__name__}, not an array or object")


def issued_at_of(envelope: dict[str, Any]) -> dt.datetime | None:
    return parse_time(envelope["issued_at"], "issued_at") if "issued_at" in envelope else None


def parse_slots(items: list[Any], factor: float, check: Callable[[int, float], None]) -> list[Segment]:
    """Slots ``{start, end, value}`` (value x ``factor``), sorted, each checked, none overlapping."""
    slots: list[Segment] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise SignalError(f"slot {i} is not an object")
        for key in ("start", "end", "value"):
            if key not in item:
                raise SignalError(f"slot {i} has no {key!r}")
        start, end = parse_time(item["start"], f"slot {i} start"), parse_time(item["end"], f"slot {i} end")
        if not MIN_SLOT <= end - start <= MAX_SLOT:
            raise SignalError(f"slot {i} lasts {end - start}; it must end 1 min to 24 h after its start")
        value = finite(item["value"], f"slot {i} value") * factor
        check(i, value)
        slots.append((start, end, value))
    slots.sort(key=lambda s: s[0])
    for a, b in itertools.pairwise(slots):
        if b[0] < a[1]:
            raise SignalError(f"slots starting {a[0].isoformat()} and {b[0].isoformat()} overlap")
    return slots
