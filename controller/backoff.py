"""Retry delays shared by the adapters: start small, double, cap; optionally jittered."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry ``attempt`` (1-based): ``initial_s`` doubled (``factor``) up to ``max_s``."""

    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 60.0

    def delay_s(self, attempt: int) -> float:
        # The exponent is bounded: a retry loop that runs for days must not overflow a float.
        return float(min(self.max_s, self.initial_s * self.factor ** min(max(0, attempt - 1), 64)))

    def jittered_s(self, attempt: int, rng: random.Random) -> float:
        """A random 50-100 % of :meth:`delay_s`, so many clients do not retry in step."""
        return self.delay_s(attempt) * rng.uniform(0.5, 1.0)

    def spread_s(self, attempt: int, rng: random.Random) -> float:
        """A random wait between ``initial_s`` and ``delay_s(attempt + 1)`` ("full jitter" with a floor).

        The floor bounds how often a retry loop runs (at most one attempt per ``initial_s``); the
        spread up to the cap keeps many clients that lost the same server from retrying in step.
        """
        return rng.uniform(self.initial_s, max(self.initial_s, self.delay_s(attempt + 1)))
