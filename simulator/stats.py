"""Counters a test reads to see what the simulated site went through (``GET /_sim/stats``)."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

# Enough for any test; a long-running demo keeps only the most recent call starts.
MAX_CALL_STARTS = 20000


class Stats:
    """Calls per function, injected errors and real concurrency, guarded by their own lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.calls: Counter[str] = Counter()
            self.injected: Counter[str] = Counter()
            self.total_calls = 0
            self.max_in_flight = self.in_flight
            self.call_starts: deque[list] = deque(maxlen=MAX_CALL_STARTS)
            self.variables_dropped = 0
            self.server_ms_total = 0.0

    def enter(self, function: str, dropped: int) -> list:
        """Count a call's start; the returned entry (start, function, server ms) gets its server time."""
        entry = [time.time(), function, 0.0]
        with self._lock:
            self.calls[function] += 1
            self.total_calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.call_starts.append(entry)
            self.variables_dropped += dropped
        return entry

    def served(self, entry: list, seconds: float) -> None:
        """The time the simulated server spent on the call on purpose (latency, cost per user): what a
        test can assert on, instead of a wall clock that a busy machine stretches."""
        with self._lock:
            entry[2] = round(entry[2] + seconds * 1000, 3)
            self.server_ms_total += seconds * 1000

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def injected_error(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "calls": dict(self.calls),
                "total_calls": self.total_calls,
                "injected_errors": dict(self.injected),
                "max_in_flight": self.max_in_flight,
                "in_flight": self.in_flight,
                "call_starts": [list(item) for item in self.call_starts],
                "variables_dropped": self.variables_dropped,
                "server_ms_total": round(self.server_ms_total, 1),
            }
