"""One monotonic time budget for a whole plugin run.

Every socket operation and DNS lookup asks the deadline how long it may take,
so that `-t` bounds the run as a whole rather than each step separately.
"""

from __future__ import annotations

import math
import time


class DeadlineExceeded(Exception):
    """The run's time budget is spent; `phase` names what was going on."""

    def __init__(self, phase: str, budget: float):
        super().__init__(f"timeout after {budget:g}s during {phase}")
        self.phase = phase
        self.budget = budget


class Deadline:
    """A point in monotonic time by which the run must be over."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.budget = float(seconds)
        self._clock = clock
        self.ends = clock() + self.budget

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.ends - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def share(self, seconds: float) -> Deadline:
        """A budget of its own for one part of the run (one endpoint of several).

        It ends `seconds` from now, or with this deadline if that is sooner; its
        `budget` is what timeout messages quote, so a tarpitting endpoint is
        reported against its share, not against the whole `-t`.
        """
        share = math.floor(max(0.0, min(seconds, self.remaining())) * 100) / 100
        return Deadline(share, clock=self._clock)

    def timeout(self, phase: str, cap: float | None = None) -> float:
        """Seconds an operation in `phase` may block; raises when none are left.

        `cap` bounds a single operation below the remaining budget (a
        per-endpoint or per-query limit, say).
        """
        left = self.remaining()
        if left <= 0.0:
            raise DeadlineExceeded(phase, self.budget)
        return min(left, cap) if cap is not None else left
