"""What every meter format shares: the reading it yields, the error it raises, and payload helpers.

The helpers turn untrusted bytes into checked values and raise :class:`PayloadError` with a message
for the log; a format module uses them instead of decoding, parsing JSON or walking paths itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from controller.values import finite_number

__all__ = [
    "MAX_METER_PAYLOAD_BYTES",
    "MAX_POWER_W",
    "ParsedValue",
    "PayloadError",
    "decode_text",
    "has_path",
    "load_json",
    "number",
    "phases_adding_up",
    "walk",
]

MAX_METER_PAYLOAD_BYTES = 16 * 1024
# Larger than any grid connection this controller can serve; beyond it a reading is a unit error.
MAX_POWER_W = 10_000_000.0
# Per-phase values that miss the total by more than this are not used (see ``phases_adding_up``).
_PHASE_SUM_TOLERANCE_W = 50.0
_PHASE_SUM_TOLERANCE_SHARE = 0.05


class PayloadError(ValueError):
    """A payload that cannot be used; the message says why, for the log."""


@dataclass(frozen=True, slots=True)
class ParsedValue:
    """A normalised reading: W (+ import) for power roles, percent for ``vehicle_soc``."""

    value: float
    phases_w: tuple[float, ...] = ()


def walk(data: Any, path: tuple[str | int, ...]) -> Any:
    """The node at ``path`` (from :func:`controller.values.parse_json_path`) in decoded JSON."""
    node = data
    for part in path:
        if isinstance(part, int) and isinstance(node, list):
            if part >= len(node):
                raise PayloadError(f"index {part} is past the end of a list of {len(node)}")
            node = node[part]
        elif isinstance(node, dict) and str(part) in node:
            node = node[str(part)]
        else:
            raise PayloadError(f"no {part!r} in the payload")
    return node


def has_path(data: Any, path: tuple[str | int, ...]) -> bool:
    try:
        walk(data, path)
    except PayloadError:
        return False
    return True


def number(value: Any, what: str) -> float:
    """A JSON number (or a numeric string, which some devices send) as a finite float."""
    return finite_number(value, what, PayloadError, strings=True)


def decode_text(payload: bytes) -> str:
    """The payload as UTF-8 text, refused beyond :data:`MAX_METER_PAYLOAD_BYTES`."""
    if len(payload) > MAX_METER_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds {MAX_METER_PAYLOAD_BYTES}")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("payload is not UTF-8 text") from None


def load_json(payload: bytes) -> Any:
    text = decode_text(payload)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and Python's limit on huge integer literals.
        raise PayloadError(f"invalid JSON: {str(exc)[:80]}") from None


def phases_adding_up(phases_w: tuple[float, ...], total_w: float) -> tuple[float, ...]:
    """The per-phase values when there are three and they add up to the total (within 50 W and 5 %
    of the phases' magnitudes), else (): a meter that sends magnitudes per phase, or phase values
    held from an earlier message than the total, must not be taken for the signed phase powers."""
    if len(phases_w) != 3:
        return ()
    tolerance_w = _PHASE_SUM_TOLERANCE_W + _PHASE_SUM_TOLERANCE_SHARE * math.fsum(abs(p) for p in phases_w)
    return phases_w if abs(math.fsum(phases_w) - total_w) <= tolerance_w else ()
