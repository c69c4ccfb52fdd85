"""The accepted messages of one signal, resolved into disjoint segments: the newest message wins (pure).

A message's version is its ``issued_at`` (never later than its arrival) or else its arrival time, ties
broken by arrival order, so the outcome depends only on the messages and the order they came in.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable

import numpy as np
import structlog

from controller.domain import ensure_utc
from controller.signals.payload import Segment
from controller.signals.resample import BoolArray, FloatArray, check_grid, mean_on_grid

__all__ = ["Timeline"]

_FAR_FUTURE = dt.datetime.max.replace(tzinfo=dt.UTC)

log = structlog.get_logger("controller.signals")


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
        # Per-step means of the current segments, by step length (see mean_on_grid).
        self._means_of: list[Segment] | None = None
        self._means: dict[dt.timedelta, _StepMeans] = {}

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

    def mean_on_grid(self, start: dt.datetime, step: dt.timedelta, n: int) -> tuple[FloatArray, BoolArray]:
        """:func:`~controller.signals.resample.mean_on_grid` of :meth:`segments`, each step worked
        out once while the segments stay the same: a plan grid that slides by a step at a time (every
        re-plan, and every step of a simulation) asks mostly for steps it asked for before."""
        start = check_grid(start, step, n)
        segments = self.segments()
        if self._means_of is not segments:
            self._means_of, self._means = segments, {}
        grid = self._means.get(step)
        if grid is None or (start - grid.anchor) % step:
            grid = self._means[step] = _StepMeans(start, step)
        return grid.get(segments, start, n)

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


class _StepMeans:
    """Means of one set of segments on one step grid (steps ``anchor + k * step``), worked out as
    they are first asked for; ``k`` may be negative (the arrays grow both ways)."""

    def __init__(self, anchor: dt.datetime, step: dt.timedelta) -> None:
        self.anchor = anchor
        self.step = step
        self._first = 0  # the k of index 0
        self._values = np.zeros(0)
        self._known = np.zeros(0, dtype=np.bool_)
        self._done = np.zeros(0, dtype=np.bool_)

    def get(self, segments: list[Segment], start: dt.datetime, n: int) -> tuple[FloatArray, BoolArray]:
        k0 = (start - self.anchor) // self.step
        self._cover(k0, k0 + n)
        lo = k0 - self._first
        missing = np.flatnonzero(~self._done[lo : lo + n])
        if missing.size:  # runs of consecutive steps not seen yet
            breaks = np.flatnonzero(np.diff(missing) > 1)
            for run in np.split(missing, breaks + 1):
                first, count = int(run[0]), len(run)
                values, known = mean_on_grid(segments, start + self.step * first, self.step, count)
                at = lo + first
                self._values[at : at + count] = values
                self._known[at : at + count] = known
                self._done[at : at + count] = True
        return self._values[lo : lo + n].copy(), self._known[lo : lo + n].copy()

    def _cover(self, k_from: int, k_to: int) -> None:
        """Grow the arrays to hold steps ``[k_from, k_to)``."""
        size = len(self._values)
        first = min(self._first, k_from) if size else k_from
        last = max(self._first + size, k_to) if size else k_to
        if first == self._first and last == self._first + size:
            return
        values, known, done = (
            np.zeros(last - first),
            np.zeros(last - first, dtype=np.bool_),
            np.zeros(last - first, dtype=np.bool_),
        )
        at = self._first - first
        values[at : at + size], known[at : at + size], done[at : at + size] = (
            self._values,
            self._known,
            self._done,
        )
        self._first, self._values, self._known, self._done = first, values, known, done
