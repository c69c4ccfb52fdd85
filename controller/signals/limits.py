"""Grid-operator caps on import and export (pure): parse limit signals, and the cap in force per step.

A cap has a validity; time no valid signal covers falls back to the configured limits, and no signal
raises a cap above the contract limit or an import cap below the guaranteed minimum.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.config import GridConfig, GridSignalsConfig
from controller.domain import ensure_utc
from controller.signals.payload import (
    MAX_LIMIT_W,
    SignalError,
    finite,
    issued_at_of,
    load_json,
    parse_time,
    unwrap_envelope,
)
from controller.signals.resample import BoolArray, FloatArray, check_grid, overlaps
from controller.signals.timeline import Timeline

__all__ = ["LimitSignal", "LimitWindow", "LimitsOnGrid", "limits_on_grid", "parse_limit_signal"]

MAX_LIMIT_WINDOWS = 200
MAX_LIMIT_DURATION = dt.timedelta(days=7)


# ----------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class LimitWindow:
    """Caps in W (>= 0) over ``[start, end)``; None leaves that direction to other signals/defaults."""

    start: dt.datetime
    end: dt.datetime
    import_limit_w: float | None
    export_limit_w: float | None


@dataclass(frozen=True, slots=True)
class LimitSignal:
    windows: tuple[LimitWindow, ...]
    issued_at: dt.datetime | None = None


def _cap_w(item: dict[str, Any], direction: str, i: int) -> float | None:
    keys = [k for k in (f"{direction}_w", f"{direction}_kw") if k in item]
    if len(keys) > 1:
        raise SignalError(f"window {i} sets both {direction}_w and {direction}_kw")
    if not keys:
        return None
    key = keys[0]
    if item[key] is None:
        return None
    value = finite(item[key], f"window {i} {key}") * (1000.0 if key.endswith("_kw") else 1.0)
    if value < 0:
        raise SignalError(f"window {i} {key} is negative; caps are magnitudes")
    if value > MAX_LIMIT_W:
        raise SignalError(f"window {i} {key} of {value:g} W is implausible (check the unit)")
    return value


def _window_end(item: dict[str, Any], start: dt.datetime, i: int) -> dt.datetime:
    """From ``end`` or ``duration_s`` (exactly one of them)."""
    if ("end" in item) == ("duration_s" in item):
        raise SignalError(f"window {i} needs exactly one of end or duration_s")
    if "end" in item:
        return parse_time(item["end"], f"window {i} end")
    seconds = finite(item["duration_s"], f"window {i} duration_s")
    if not 0 < seconds <= MAX_LIMIT_DURATION.total_seconds():
        raise SignalError(f"window {i} duration_s must be above 0 and at most 7 days")
    try:
        return start + dt.timedelta(seconds=seconds)
    except OverflowError:  # a start near the end of year 9999
        raise SignalError(f"window {i} end is out of range (after year 9999)") from None


def _limit_window(item: Any, i: int, received_at: dt.datetime) -> LimitWindow:
    if not isinstance(item, dict):
        raise SignalError(f"window {i} is not an object")
    start = parse_time(item["start"], f"window {i} start") if "start" in item else received_at
    end = _window_end(item, start, i)
    if not dt.timedelta(0) < end - start <= MAX_LIMIT_DURATION:
        raise SignalError(f"window {i} must end after its start and last at most 7 days")
    import_w, export_w = _cap_w(item, "import", i), _cap_w(item, "export", i)
    if import_w is None and export_w is None:
        raise SignalError(f"window {i} sets no cap (import_w/import_kw or export_w/export_kw)")
    return LimitWindow(start, end, import_w, export_w)


def parse_limit_signal(payload: bytes, received_at: dt.datetime) -> LimitSignal:
    """Parse a limit signal; a window without ``start`` starts at ``received_at``."""
    received_at = ensure_utc(received_at)
    items, envelope = unwrap_envelope(load_json(payload), "limits")
    if not items:
        raise SignalError("no limit windows")
    if len(items) > MAX_LIMIT_WINDOWS:
        raise SignalError(f"{len(items)} windows exceed {MAX_LIMIT_WINDOWS}")
    issued_at = issued_at_of(envelope)
    windows = tuple(_limit_window(item, i, received_at) for i, item in enumerate(items))
    return LimitSignal(windows, issued_at)


# ------------------------------------------------------------------- on the grid


@dataclass(frozen=True, slots=True)
class LimitsOnGrid:
    """Per-step caps in W (>= 0); ``from_signal`` marks steps where a grid-operator signal applies."""

    start: dt.datetime
    step: dt.timedelta
    import_limit_w: FloatArray
    export_limit_w: FloatArray
    from_signal: BoolArray


def _tightest_caps_w(
    timeline: Timeline, default_w: float, start: dt.datetime, step: dt.timedelta, n: int
) -> tuple[FloatArray, BoolArray]:
    """Per step the tightest cap in W in force, and whether any signal covers part of the step."""
    step_s = step.total_seconds()
    caps = np.full(n, default_w)
    signalled = np.zeros(n, dtype=np.bool_)
    segments = timeline.segments()
    if not segments:  # no signal in force (most homes, most of the time)
        return caps, signalled
    for k, pieces in enumerate(overlaps(segments, start, step, n)):
        if not pieces:
            continue
        signalled[k] = True
        covered = math.fsum(c for c, _ in pieces)
        tight = min(v for _, v in pieces)
        # A partly covered step also lives under the default for the rest of it.
        caps[k] = tight if covered >= step_s - 1e-6 else min(tight, default_w)
    return caps, signalled


def limits_on_grid(
    grid: GridConfig,
    signals_cfg: GridSignalsConfig,
    import_caps: Timeline,
    export_caps: Timeline,
    start: dt.datetime,
    step: dt.timedelta,
    n: int,
) -> LimitsOnGrid:
    """The tightest cap in force during each step.

    Without a ``limit_topic`` the contract limits hold. With one, time no valid signal covers uses
    the fallback limits (a signal that expired or never came). Signals never raise a cap above the
    contract limit, and an import cap never goes below ``guaranteed_import_kw``.
    """
    start = check_grid(start, step, n)
    contract_import_w = grid.import_limit_kw * 1000.0
    contract_export_w = grid.export_limit_kw * 1000.0
    uses_signals = signals_cfg.limit_topic is not None
    default_import_w = grid.effective_fallback_import_kw * 1000.0 if uses_signals else contract_import_w
    default_export_w = grid.effective_fallback_export_kw * 1000.0 if uses_signals else contract_export_w
    import_w, import_signalled = _tightest_caps_w(import_caps, default_import_w, start, step, n)
    export_w, export_signalled = _tightest_caps_w(export_caps, default_export_w, start, step, n)
    floor_w = min(signals_cfg.guaranteed_import_kw * 1000.0, contract_import_w)
    import_w = np.clip(import_w, floor_w, contract_import_w)
    export_w = np.clip(export_w, 0.0, contract_export_w)
    return LimitsOnGrid(start, step, import_w, export_w, import_signalled | export_signalled)
