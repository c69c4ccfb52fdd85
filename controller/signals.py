"""Grid-operator signals: price forecasts and import/export caps (pure, no I/O).

Parsing turns a payload into typed windows; a :class:`Timeline` keeps the accepted messages (within a
bound on windows that never drops a live one silently) and resolves overlaps deterministically (the newest message wins where windows overlap: newest by its
``issued_at`` when it has one (never later than its arrival), else by arrival; ties by arrival
order); the ``*_on_grid`` functions
resample the resolved windows to the plan grid.

Price payload (value per kWh, ``start`` inclusive, ``end`` exclusive)::

    [{"start": "2025-01-15T00:00:00+01:00", "end": "2025-01-15T01:00:00+01:00", "value": 0.2531}, ...]
    {"issued_at": "...", "unit": "EUR/MWh", "prices": [...]}

Limit payload (caps in W or kW; ``end`` or ``duration_s``; ``start`` defaults to arrival)::

    {"import_kw": 4.2, "start": "2025-01-15T17:00:00Z", "end": "2025-01-15T19:00:00Z"}
    {"issued_at": "...", "limits": [{"export_w": 0, "duration_s": 3600}, ...]}
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import json
import math
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from controller.config import GridConfig, GridSignalsConfig, PriceConfig
from controller.domain import ensure_utc
from controller.values import finite_number, utc_from_iso

__all__ = [
    "MAX_LIMIT_W",
    "MAX_PRICE_PER_KWH",
    "MAX_SIGNAL_PAYLOAD_BYTES",
    "LimitSignal",
    "LimitWindow",
    "LimitsOnGrid",
    "PowerForecast",
    "PriceSignal",
    "PriceSlot",
    "PricesOnGrid",
    "SignalError",
    "Timeline",
    "limits_on_grid",
    "mean_on_grid",
    "parse_grid_state",
    "parse_limit_signal",
    "parse_price_signal",
    "parse_pv_forecast",
    "parse_time",
    "prices_on_grid",
    "tariff_configured_on_grid",
]

FloatArray = npt.NDArray[np.float64]
Segment = tuple[dt.datetime, dt.datetime, float]
"""A value over ``[start, end)``."""
BoolArray = npt.NDArray[np.bool_]

MAX_SIGNAL_PAYLOAD_BYTES = 256 * 1024
MAX_PRICE_SLOTS = 2000
MAX_LIMIT_WINDOWS = 200
MAX_PRICE_PER_KWH = 10.0  # the config's own bound; a larger value is almost always per MWh
MAX_LIMIT_W = 10_000_000.0
MIN_SLOT = dt.timedelta(minutes=1)
MAX_SLOT = dt.timedelta(days=1)
MAX_LIMIT_DURATION = dt.timedelta(days=7)
_FAR_FUTURE = dt.datetime.max.replace(tzinfo=dt.UTC)
_EPOCH_MIN, _EPOCH_MAX = 946_684_800, 4_102_444_800  # 2000-01-01 .. 2100-01-01
_UNIT_FACTORS = {"kwh": 1.0, "mwh": 0.001, "wh": 1000.0}

log = structlog.get_logger("controller.signals")


class SignalError(ValueError):
    """A signal payload that cannot be used; the message says why, for the log."""


# ----------------------------------------------------------------------- parsing


def parse_time(value: Any, what: str) -> dt.datetime:
    """ISO 8601 with an offset (``Z`` allowed) or Unix seconds, as UTC."""
    if isinstance(value, bool):
        raise SignalError(f"{what} is not a time")
    if isinstance(value, int | float):
        if not (math.isfinite(value) and _EPOCH_MIN <= value <= _EPOCH_MAX):
            raise SignalError(f"{what} {value!r} is not a plausible Unix time")
        return dt.datetime.fromtimestamp(value, dt.UTC)
    return utc_from_iso(value, what, SignalError)


def _finite(value: Any, what: str) -> float:
    return finite_number(value, what, SignalError)


def _load(payload: bytes) -> Any:
    if len(payload) > MAX_SIGNAL_PAYLOAD_BYTES:
        raise SignalError(f"payload of {len(payload)} bytes exceeds {MAX_SIGNAL_PAYLOAD_BYTES}")
    try:
        return json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise SignalError("payload is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise SignalError(f"invalid JSON: {str(exc)[:80]}") from None


def _envelope(data: Any, list_key: str) -> tuple[list[Any], dict[str, Any]]:
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


@dataclass(frozen=True, slots=True)
class PriceSlot:
    start: dt.datetime
    end: dt.datetime
    value_per_kwh: float


@dataclass(frozen=True, slots=True)
class PriceSignal:
    """One accepted price message, slots sorted and non-overlapping, values per kWh as sent."""

    slots: tuple[PriceSlot, ...]
    issued_at: dt.datetime | None = None


def _unit_factor(unit: Any, currency: str) -> float:
    if not isinstance(unit, str) or "/" not in unit:
        raise SignalError(f"unit {str(unit)[:20]!r} is not like {currency}/kWh")
    money, energy = (part.strip() for part in unit.split("/", 1))
    factor = _UNIT_FACTORS.get(energy.lower())
    if factor is None:
        raise SignalError(f"unit {unit[:20]!r} is not per kWh, MWh or Wh")
    if money.lower() in ("ct", "cent", "cents"):
        return factor / 100.0
    if money.upper() != currency.upper():
        raise SignalError(f"unit {unit[:20]!r} is not in the site currency {currency}")
    return factor


def _parse_slots(items: list[Any], factor: float, check: Callable[[int, float], None]) -> list[Segment]:
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
        value = _finite(item["value"], f"slot {i} value") * factor
        check(i, value)
        slots.append((start, end, value))
    slots.sort(key=lambda s: s[0])
    for a, b in itertools.pairwise(slots):
        if b[0] < a[1]:
            raise SignalError(f"slots starting {a[0].isoformat()} and {b[0].isoformat()} overlap")
    return slots


def _plausible_price(i: int, value: float) -> None:
    if abs(value) > MAX_PRICE_PER_KWH:
        raise SignalError(
            f"slot {i} value {value:g} per kWh is implausible; send per kWh or set unit (e.g. EUR/MWh)"
        )


def parse_price_signal(payload: bytes, currency: str = "EUR") -> PriceSignal:
    """Parse a price forecast; raises SignalError for anything unusable (the whole message is refused)."""
    items, envelope = _envelope(_load(payload), "prices")
    if not items:
        raise SignalError("no price slots")
    if len(items) > MAX_PRICE_SLOTS:
        raise SignalError(f"{len(items)} slots exceed {MAX_PRICE_SLOTS}")
    factor = _unit_factor(envelope["unit"], currency) if "unit" in envelope else 1.0
    issued_at = parse_time(envelope["issued_at"], "issued_at") if "issued_at" in envelope else None
    slots = _parse_slots(items, factor, _plausible_price)
    return PriceSignal(tuple(PriceSlot(*slot) for slot in slots), issued_at)


_POWER_UNITS = {"w": 1.0, "kw": 1000.0}


def _plausible_pv(i: int, value: float) -> None:
    if not 0 <= value <= MAX_LIMIT_W:
        raise SignalError(f"slot {i} PV power {value:g} W is not between 0 and {MAX_LIMIT_W:g} W")


@dataclass(frozen=True, slots=True)
class PowerForecast:
    """A forecast of power in W over time windows, e.g. PV production from a forecast service."""

    segments: tuple[Segment, ...]
    issued_at: dt.datetime | None = None


def parse_pv_forecast(payload: bytes) -> PowerForecast:
    """A PV production forecast in the price-slot format; ``value`` in W (or kW with ``"unit": "kW"``)."""
    items, envelope = _envelope(_load(payload), "forecast")
    if not items:
        raise SignalError("no forecast slots")
    if len(items) > MAX_PRICE_SLOTS:
        raise SignalError(f"{len(items)} slots exceed {MAX_PRICE_SLOTS}")
    unit = envelope.get("unit", "W")
    factor = _POWER_UNITS.get(unit.lower()) if isinstance(unit, str) else None
    if factor is None:
        raise SignalError(f"unit {str(unit)[:20]!r} is not W or kW")
    issued_at = parse_time(envelope["issued_at"], "issued_at") if "issued_at" in envelope else None
    return PowerForecast(tuple(_parse_slots(items, factor, _plausible_pv)), issued_at)


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
    value = _finite(item[key], f"window {i} {key}") * (1000.0 if key.endswith("_kw") else 1.0)
    if value < 0:
        raise SignalError(f"window {i} {key} is negative; caps are magnitudes")
    if value > MAX_LIMIT_W:
        raise SignalError(f"window {i} {key} of {value:g} W is implausible (check the unit)")
    return value


def parse_limit_signal(payload: bytes, received_at: dt.datetime) -> LimitSignal:
    """Parse a limit signal; a window without ``start`` starts at ``received_at``."""
    received_at = ensure_utc(received_at)
    items, envelope = _envelope(_load(payload), "limits")
    if not items:
        raise SignalError("no limit windows")
    if len(items) > MAX_LIMIT_WINDOWS:
        raise SignalError(f"{len(items)} windows exceed {MAX_LIMIT_WINDOWS}")
    issued_at = parse_time(envelope["issued_at"], "issued_at") if "issued_at" in envelope else None
    windows: list[LimitWindow] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise SignalError(f"window {i} is not an object")
        start = parse_time(item["start"], f"window {i} start") if "start" in item else received_at
        if ("end" in item) == ("duration_s" in item):
            raise SignalError(f"window {i} needs exactly one of end or duration_s")
        if "end" in item:
            end = parse_time(item["end"], f"window {i} end")
        else:
            seconds = _finite(item["duration_s"], f"window {i} duration_s")
            if not 0 < seconds <= MAX_LIMIT_DURATION.total_seconds():
                raise SignalError(f"window {i} duration_s must be above 0 and at most 7 days")
            try:
                end = start + dt.timedelta(seconds=seconds)
            except OverflowError:  # a start near the end of year 9999
                raise SignalError(f"window {i} end is out of range (after year 9999)") from None
        if not dt.timedelta(0) < end - start <= MAX_LIMIT_DURATION:
            raise SignalError(f"window {i} must end after its start and last at most 7 days")
        import_w, export_w = _cap_w(item, "import", i), _cap_w(item, "export", i)
        if import_w is None and export_w is None:
            raise SignalError(f"window {i} sets no cap (import_w/import_kw or export_w/export_kw)")
        windows.append(LimitWindow(start, end, import_w, export_w))
    return LimitSignal(tuple(windows), issued_at)


# -------------------------------------------------------------------- resolution


class Timeline:
    """Piecewise-constant values from many messages; where windows overlap the newest message wins.

    A message's version is ``(issued_at or received_at, arrival number)``, ``issued_at`` capped at
    the arrival time, so the outcome depends only on the messages and their arrival order, never on
    timing inside the process.

    Memory: windows that ended more than ``keep_history`` ago are forgotten. Beyond ``max_segments``
    windows, those hidden for their whole span by newer ones go first (they cannot change the
    outcome), then ended ones (kept only to fill price gaps from yesterday), oldest message first. A
    window still running or yet to come is dropped only as a last resort, oldest message first and
    never the newest, with a warning: a grid-operator cap still in force must not vanish silently.
    """

    def __init__(
        self,
        max_segments: int = 10_000,
        keep_history: dt.timedelta = dt.timedelta(days=2),
        name: str = "signal",
    ) -> None:
        self._messages: list[tuple[tuple[dt.datetime, int], tuple[Segment, ...]]] = []
        self._arrivals = 0
        self._max_segments = max_segments
        self._keep_history = keep_history
        self._name = name
        self._resolved: list[Segment] | None = []
        self._earliest_end = _FAR_FUTURE

    def add(
        self, segments: Iterable[Segment], received_at: dt.datetime, issued_at: dt.datetime | None
    ) -> None:
        received_at = ensure_utc(received_at)
        kept = tuple(s for s in segments if s[1] > s[0])
        self._arrivals += 1
        # A message cannot be issued after it arrived: a sender clock ahead (or a bogus issued_at in
        # the far future) would otherwise outrank every later message for its windows.
        issued = received_at if issued_at is None else min(ensure_utc(issued_at), received_at)
        version = (issued, self._arrivals)
        bisect.insort(self._messages, (version, kept), key=lambda m: m[0])
        self._earliest_end = min([self._earliest_end, *(s[1] for s in kept)])
        self.prune(received_at)

    def prune(self, now: dt.datetime) -> None:
        """Forget windows long past; beyond ``max_segments`` windows, shed the least useful ones."""
        now = ensure_utc(now)
        horizon = now - self._keep_history
        if self._earliest_end <= horizon:  # skip the walk over every window when nothing is due
            pruned = [(v, tuple(s for s in segs if s[1] > horizon)) for v, segs in self._messages]
            self._messages = [m for m in pruned if m[1]]
            self._earliest_end = min((s[1] for _, segs in self._messages for s in segs), default=_FAR_FUTURE)
        if sum(len(segs) for _, segs in self._messages) > self._max_segments:
            self._shed(now)
        self._resolved = None

    def _shed(self, now: dt.datetime) -> None:
        """Windows hidden by newer ones, then ended ones (oldest message first) down to 3/4 of
        ``max_segments``, so that this full pass runs rarely; live windows only down to the bound."""
        low_water = self._max_segments * 3 // 4
        visible = set(self._owners()[1])
        self._messages = [
            (v, kept)
            for m, (v, segs) in enumerate(self._messages)
            if (kept := tuple(s for j, s in enumerate(segs) if (m, j) in visible))
        ]
        excess = sum(len(segs) for _, segs in self._messages) - low_water
        for m, (version, segs) in enumerate(self._messages):
            if excess <= 0:
                break
            live = tuple(s for s in segs if s[1] > now)
            excess -= len(segs) - len(live)
            self._messages[m] = (version, live)
        self._messages = [m for m in self._messages if m[1]]
        self._earliest_end = min((s[1] for _, segs in self._messages for s in segs), default=_FAR_FUTURE)
        excess = sum(len(segs) for _, segs in self._messages) - self._max_segments
        shed: list[Segment] = []
        while excess > 0 and len(self._messages) > 1:  # the newest message always stays
            segs = self._messages.pop(0)[1]
            shed.extend(segs)
            excess -= len(segs)
        if shed:
            log.warning(
                "signal windows still in force dropped: too many windows",
                timeline=self._name,
                max_segments=self._max_segments,
                windows=len(shed),
                dropped=[(s[0].isoformat(), s[1].isoformat(), s[2]) for s in shed[:10]],
            )

    def __len__(self) -> int:
        return len(self._messages)

    def segments(self) -> list[Segment]:
        """Disjoint, sorted segments after resolving overlaps; adjacent equal values merged."""
        if self._resolved is None:
            self._resolved = self._resolve()
        return self._resolved

    def _owners(self) -> tuple[list[dt.datetime], list[tuple[int, int] | None]]:
        """The window boundaries, and per interval between them the ``(message, window)`` owning it."""
        bounds = sorted({t for _, segs in self._messages for s in segs for t in (s[0], s[1])})
        n = max(len(bounds) - 1, 0)
        owner: list[tuple[int, int] | None] = [None] * n
        # next_free[k]: the first unowned interval at or after k (n: none), path-compressed so that
        # a long window under many short newer ones is not walked interval by interval every time.
        next_free = list(range(n + 1))

        def free_from(k: int) -> int:
            root = k
            while next_free[root] != root:
                root = next_free[root]
            while next_free[k] != root:
                next_free[k], k = root, next_free[k]
            return root

        for m in reversed(range(len(self._messages))):  # newest first: the first to claim wins
            segs = self._messages[m][1]
            for j in reversed(range(len(segs))):  # within a message, a later window wins too
                hi = bisect.bisect_left(bounds, segs[j][1])
                k = free_from(bisect.bisect_left(bounds, segs[j][0]))
                while k < hi:
                    owner[k] = (m, j)
                    next_free[k] = k + 1
                    k = free_from(k + 1)
        return bounds, owner

    def _resolve(self) -> list[Segment]:
        bounds, owner = self._owners()
        out: list[Segment] = []
        for k, owned in enumerate(owner):
            if owned is None:
                continue
            value = self._messages[owned[0]][1][owned[1]][2]
            if out and out[-1][1] == bounds[k] and out[-1][2] == value:
                out[-1] = (out[-1][0], bounds[k + 1], value)
            else:
                out.append((bounds[k], bounds[k + 1], value))
        return out


def _overlaps(
    segments: Sequence[Segment], start: dt.datetime, step: dt.timedelta, n: int
) -> list[list[tuple[float, float]]]:
    """Per step, the (seconds covered, value) pieces of the segments that overlap it."""
    pieces: list[list[tuple[float, float]]] = [[] for _ in range(n)]
    step_s = step.total_seconds()
    end = start + step * n
    for seg_start, seg_end, value in segments:
        if seg_end <= start or seg_start >= end:
            continue
        first = max(0, int((seg_start - start) // step))
        last = min(n - 1, math.ceil((seg_end - start) / step) - 1)
        for k in range(first, last + 1):
            k_start = (seg_start - start).total_seconds() - k * step_s
            k_end = (seg_end - start).total_seconds() - k * step_s
            covered = min(k_end, step_s) - max(k_start, 0.0)
            if covered > 0:
                pieces[k].append((covered, value))
    return pieces


def _check_grid(start: dt.datetime, step: dt.timedelta, n: int) -> dt.datetime:
    if step <= dt.timedelta(0):
        raise ValueError("step must be positive")
    if n < 0:
        raise ValueError("n must be >= 0")
    return ensure_utc(start)


def mean_on_grid(
    segments: Sequence[Segment], start: dt.datetime, step: dt.timedelta, n: int
) -> tuple[FloatArray, BoolArray]:
    """Time-weighted mean over the covered part of each step; ``known`` where any part is covered."""
    values = np.zeros(n)
    known = np.zeros(n, dtype=np.bool_)
    for k, pieces in enumerate(_overlaps(segments, start, step, n)):
        covered = math.fsum(c for c, _ in pieces)
        if covered > 0:
            values[k] = math.fsum(c * v for c, v in pieces) / covered
            known[k] = True
    return values, known


# ------------------------------------------------------------------------ prices


@dataclass(frozen=True, slots=True)
class PricesOnGrid:
    """Per-step prices per kWh after the tariff; ``*_known`` is False where a value was filled in."""

    start: dt.datetime
    step: dt.timedelta
    import_per_kwh: FloatArray
    export_per_kwh: FloatArray
    import_known: BoolArray
    export_known: BoolArray


def _tou_price(cfg: PriceConfig, local: dt.datetime) -> float:
    base = cfg.static_price_per_kwh if cfg.static_price_per_kwh is not None else 0.0
    t = local.time()
    day = local.strftime("%A").lower()
    previous_day = (local - dt.timedelta(days=1)).strftime("%A").lower()
    for window in cfg.time_of_use:
        if window.start < window.end:
            inside = window.start <= t < window.end and day in window.days
        elif window.start == window.end:
            inside = day in window.days
        else:  # crosses midnight: the part after midnight belongs to the day the window started
            inside = (t >= window.start and day in window.days) or (
                t < window.end and previous_day in window.days
            )
        if inside:
            return window.price_per_kwh
    return base


def tariff_configured_on_grid(
    cfg: PriceConfig, tz: zoneinfo.ZoneInfo, start: dt.datetime, step: dt.timedelta, n: int
) -> FloatArray | None:
    """Static or time-of-use prices per step (mean over the step by the minute), None if not configured."""
    start = _check_grid(start, step, n)
    if cfg.static_price_per_kwh is None:
        return None
    if not cfg.time_of_use:
        return np.full(n, cfg.static_price_per_kwh)
    minutes = max(1, int(step.total_seconds() // 60))
    out = np.empty(n)
    for k in range(n):
        t0 = start + step * k
        samples = [_tou_price(cfg, (t0 + dt.timedelta(minutes=m)).astimezone(tz)) for m in range(minutes)]
        out[k] = math.fsum(samples) / len(samples)
    return out


def _fill(values: FloatArray, known: BoolArray, yesterday: FloatArray, yesterday_known: BoolArray) -> None:
    """Fill unknown steps: same time yesterday, else hold the last known step, else the next known."""
    use_yesterday = ~known & yesterday_known
    values[use_yesterday] = yesterday[use_yesterday]
    have = known | use_yesterday
    if not have.any():
        return
    last: float | None = None
    for k in range(len(values)):
        if have[k]:
            last = float(values[k])
        elif last is not None:
            values[k] = last
    first = int(np.argmax(have))
    values[:first] = values[first]


def _one_price_on_grid(
    cfg: PriceConfig,
    dynamic: Timeline,
    tz: zoneinfo.ZoneInfo,
    start: dt.datetime,
    step: dt.timedelta,
    n: int,
) -> tuple[FloatArray, BoolArray]:
    configured = tariff_configured_on_grid(cfg, tz, start, step, n)
    if not cfg.dynamic_topic:
        assert configured is not None  # PriceConfig guarantees a source
        return configured, np.ones(n, dtype=np.bool_)
    segments = dynamic.segments()
    values, known = mean_on_grid(segments, start, step, n)
    values[known] = values[known] * cfg.dynamic_multiplier + cfg.dynamic_markup_per_kwh
    if configured is not None:  # configured prices fill the gaps of the forecast
        values = np.where(known, values, configured)
        return values, np.ones(n, dtype=np.bool_)
    yesterday, yesterday_known = mean_on_grid(segments, start - dt.timedelta(days=1), step, n)
    yesterday = yesterday * cfg.dynamic_multiplier + cfg.dynamic_markup_per_kwh
    _fill(values, known, yesterday, yesterday_known)
    return values, known


def prices_on_grid(
    import_cfg: PriceConfig,
    export_cfg: PriceConfig,
    import_dynamic: Timeline,
    export_dynamic: Timeline,
    timezone: str,
    start: dt.datetime,
    step: dt.timedelta,
    n: int,
) -> PricesOnGrid:
    """Import/export prices per step: dynamic (x multiplier + markup) over time-of-use over static.

    Steps a dynamic-only tariff has no forecast for are filled (same time yesterday, else the last
    known price, else the next) and flagged in ``*_known``; with no data at all they are 0.
    """
    start = _check_grid(start, step, n)
    tz = zoneinfo.ZoneInfo(timezone)
    imp, imp_known = _one_price_on_grid(import_cfg, import_dynamic, tz, start, step, n)
    exp, exp_known = _one_price_on_grid(export_cfg, export_dynamic, tz, start, step, n)
    return PricesOnGrid(start, step, imp, exp, imp_known, exp_known)


# ------------------------------------------------------------------------ limits


@dataclass(frozen=True, slots=True)
class LimitsOnGrid:
    """Per-step caps in W (>= 0); ``from_signal`` marks steps where a grid-operator signal applies."""

    start: dt.datetime
    step: dt.timedelta
    import_limit_w: FloatArray
    export_limit_w: FloatArray
    from_signal: BoolArray


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
    start = _check_grid(start, step, n)
    contract_import_w = grid.import_limit_kw * 1000.0
    contract_export_w = grid.export_limit_kw * 1000.0
    uses_signals = signals_cfg.limit_topic is not None
    default_import_w = grid.effective_fallback_import_kw * 1000.0 if uses_signals else contract_import_w
    default_export_w = grid.effective_fallback_export_kw * 1000.0 if uses_signals else contract_export_w
    step_s = step.total_seconds()

    def tightest(timeline: Timeline, default_w: float) -> tuple[FloatArray, BoolArray]:
        caps = np.full(n, default_w)
        signalled = np.zeros(n, dtype=np.bool_)
        for k, pieces in enumerate(_overlaps(timeline.segments(), start, step, n)):
            if not pieces:
                continue
            signalled[k] = True
            covered = math.fsum(c for c, _ in pieces)
            tight = min(v for _, v in pieces)
            # A partly covered step also lives under the default for the rest of it.
            caps[k] = tight if covered >= step_s - 1e-6 else min(tight, default_w)
        return caps, signalled

    import_w, import_signalled = tightest(import_caps, default_import_w)
    export_w, export_signalled = tightest(export_caps, default_export_w)
    floor_w = min(signals_cfg.guaranteed_import_kw * 1000.0, contract_import_w)
    import_w = np.clip(import_w, floor_w, contract_import_w)
    export_w = np.clip(export_w, 0.0, contract_export_w)
    return LimitsOnGrid(start, step, import_w, export_w, import_signalled | export_signalled)


_GRID_DOWN = {"true", "1", "lost", "down", "off", "outage"}
_GRID_UP = {"false", "0", "ok", "up", "on", "restored"}


def parse_grid_state(payload: bytes) -> bool:
    """An outage message: True when the grid is down. Plain words/numbers or JSON {"grid_lost": bool}."""
    if len(payload) > 1024:
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
