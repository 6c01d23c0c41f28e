"""Pacing for delivery: a token bucket for the backlog lane, a budget for log lines."""

from __future__ import annotations

import time
from collections.abc import Callable


class LogBudget:
    """At most `burst` log lines per `window_s`; lines held back are counted and the next line
    says how many (a flood of bad messages cannot fill the disk with logs)."""

    def __init__(
        self, burst: int = 20, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.window_s = window_s
        self._clock = clock
        self._start = clock()
        self._used = 0
        self.held_back = 0

    def take(self) -> int | None:
        """None: do not log now; else the number of lines held back since the last one."""
        now = self._clock()
        if now - self._start >= self.window_s:
            self._start, self._used = now, 0
        if self._used >= self.burst:
            self.held_back += 1
            return None
        self._used += 1
        held, self.held_back = self.held_back, 0
        return held


class TokenBucket:
    """`rate` tokens per second, at most one second's worth saved up; rate 0: unlimited."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = max(1.0, rate)
        self._at = clock()

    def available(self, cap: int) -> int:
        if self.rate == 0:
            return cap
        now = self._clock()
        self._tokens = min(max(1.0, self.rate), self._tokens + (now - self._at) * self.rate)
        self._at = now
        return min(cap, int(self._tokens))

    def take(self, n: int) -> None:
        if self.rate:
            self._tokens -= n
