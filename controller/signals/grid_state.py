"""Grid outage messages (pure): is the grid down?"""

from __future__ import annotations

import json

from controller.signals.payload import SignalError

__all__ = ["parse_grid_state"]

_GRID_DOWN = {"true", "1", "lost", "down", "off", "outage"}
_GRID_UP = {"false", "0", "ok", "up", "on", "restored"}
MAX_GRID_STATE_BYTES = 1024


def parse_grid_state(payload: bytes) -> bool:
    """An outage message: True when the grid is down. Plain words/numbers or JSON {"grid_lost": bool}."""
    if len(payload) > MAX_GRID_STATE_BYTES:
        raise SignalError("grid state payload is larger than 1 KiB")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SignalError("grid state payload is not UTF-8 text") from None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise SignalError("grid state payload is not valid JSON") from None
        value = data.get("grid_lost") if isinstance(data, dict) else None
        if not isinstance(value, bool):
            raise SignalError('grid state JSON needs "grid_lost": true or false')
        return value
    word = text.lower()
    if word in _GRID_DOWN:
        return True
    if word in _GRID_UP:
        return False
    raise SignalError(f"grid state {text[:40]!r} is not one of true/false, 1/0, lost/ok")
