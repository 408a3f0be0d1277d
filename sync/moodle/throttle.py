"""One call budget per Moodle site, shared through Redis by every process and worker.

Moodle has no rate limit of its own, and Celery's ``rate_limit`` is per worker, so the budget
lives in Redis: at most N calls in flight, a minimum spacing between call starts, and a cap on
calls per minute. In-flight slots are leases with an expiry, so a process killed mid-call gives
its slot back on its own. Callers wait for their turn, up to ``max_wait_s``.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis as redis_lib

from .errors import ThrottleTimeout
from .limits import DEFAULT_LIMITS

Idle = Callable[[float], None]  # how a caller waits between tries: sleep, or do other work meanwhile

# Redis's own clock keeps every process on one timeline. Times are microseconds, formatted with
# %.0f because Lua would otherwise print large numbers in exponent form and lose precision.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local max_concurrent = tonumber(ARGV[2])
local spacing = tonumber(ARGV[3])
local per_minute = tonumber(ARGV[4])
local lease = tonumber(ARGV[5])
local poll = tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('%.0f', now - 60000000))
local wait = 0
if redis.call('ZCARD', KEYS[1]) >= max_concurrent then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  wait = math.min(tonumber(first[2]) - now, poll)
end
local last = redis.call('GET', KEYS[2])
if last then
  wait = math.max(wait, tonumber(last) + spacing - now)
end
if per_minute > 0 and redis.call('ZCARD', KEYS[3]) >= per_minute then
  local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  wait = math.max(wait, tonumber(oldest[2]) + 60000000 - now)
end
if wait > 0 then
  return {0, string.format('%.0f', wait)}
end
local stamp = string.format('%.0f', now)
redis.call('ZADD', KEYS[1], string.format('%.0f', now + lease), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.floor(lease / 1000) + 1000)
redis.call('SET', KEYS[2], stamp, 'PX', math.floor(spacing / 1000) + 60000)
redis.call('ZADD', KEYS[3], stamp, ARGV[1])
redis.call('PEXPIRE', KEYS[3], 61000)
return {1, stamp}
"""


@dataclass(frozen=True)
class Lease:
    """A granted call slot; ``granted_at`` is the start time the budget was charged with (seconds)."""

    id: str
    granted_at: float


@dataclass(frozen=True)
class ThrottleSettings:
    """The per-site budget as the throttle applies it (the defaults are the site limits')."""

    max_concurrent: int = DEFAULT_LIMITS.max_concurrent
    min_spacing_ms: float = DEFAULT_LIMITS.min_spacing_ms
    calls_per_minute: int = DEFAULT_LIMITS.calls_per_minute
    max_wait_s: float = DEFAULT_LIMITS.max_wait_s
    lease_s: float = 120  # longer than any call may take (the client's timeouts bound it)
    poll_s: float = 0.02  # how often to look again while every slot is taken


class Throttle:
    """Shared per-site throttle in Redis under ``hub:throttle:{site}:``."""

    def __init__(self, redis: redis_lib.Redis, site: str, settings: ThrottleSettings) -> None:
        self.site = site
        self.settings = settings
        self._redis = redis
        prefix = f"hub:throttle:{site}:"
        self._keys = [prefix + "slots", prefix + "last_start", prefix + "starts"]
        self._acquire = redis.register_script(_ACQUIRE)

    def _try(self, lease_id: str) -> tuple[bool, float]:
        s = self.settings
        granted, value = self._acquire(
            keys=self._keys,
            args=[
                lease_id,
                s.max_concurrent,
                int(s.min_spacing_ms * 1000),
                s.calls_per_minute,
                int(s.lease_s * 1_000_000),
                int(s.poll_s * 1_000_000),
            ],
        )
        return bool(int(granted)), int(value) / 1_000_000

    def acquire(self, idle: Idle | None = None) -> Lease:
        """Wait for a slot; raise ``ThrottleTimeout`` after ``max_wait_s``. `idle(seconds)` is how the
        caller waits between tries (by default it sleeps)."""
        lease_id = uuid.uuid4().hex
        deadline = time.monotonic() + self.settings.max_wait_s
        while True:
            granted, value = self._try(lease_id)
            if granted:
                return Lease(lease_id, value)
            wait = value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ThrottleTimeout(
                    f"no Moodle call slot for site {self.site!r} within {self.settings.max_wait_s:g} s"
                )
            # A little jitter keeps waiting processes from waking in lockstep.
            (idle or time.sleep)(min(remaining, wait + random.uniform(0, 0.002)))  # noqa: S311

    def release(self, lease: Lease) -> None:
        self._redis.zrem(self._keys[0], lease.id)

    @contextmanager
    def slot(self, idle: Idle | None = None) -> Iterator[Lease]:
        lease = self.acquire(idle)
        try:
            yield lease
        finally:
            self.release(lease)

    def in_flight(self) -> int:
        """Calls holding a live lease right now (for the pages)."""
        now = self._redis.time()
        now_us = now[0] * 1_000_000 + now[1]
        return int(self._redis.zcount(self._keys[0], now_us, "+inf"))


class LocalThrottle:
    """The same budget kept in this process only, for tools that run without Redis."""

    def __init__(self, site: str, settings: ThrottleSettings) -> None:
        self.site = site
        self.settings = settings
        self._cond = threading.Condition()
        self._in_flight = 0
        self._last_start = float("-inf")
        self._starts: deque[float] = deque()

    def _wait_needed(self, now: float) -> float:
        s = self.settings
        while self._starts and self._starts[0] <= now - 60:
            self._starts.popleft()
        wait = s.poll_s if self._in_flight >= s.max_concurrent else 0.0
        wait = max(wait, self._last_start + s.min_spacing_ms / 1000 - now)
        if s.calls_per_minute and len(self._starts) >= s.calls_per_minute:
            wait = max(wait, self._starts[0] + 60 - now)
        return wait

    @contextmanager
    def slot(self, idle: Idle | None = None) -> Iterator[Lease]:
        deadline = time.monotonic() + self.settings.max_wait_s
        while True:
            with self._cond:
                now = time.monotonic()
                wait = self._wait_needed(now)
                if wait <= 0:
                    self._in_flight += 1
                    self._last_start = now
                    self._starts.append(now)
                    break
                if now >= deadline:
                    raise ThrottleTimeout(
                        f"no Moodle call slot for site {self.site!r} within {self.settings.max_wait_s:g} s"
                    )
                if idle is None:
                    self._cond.wait(min(wait, deadline - now))
                    continue
            idle(min(wait, deadline - now, self.settings.poll_s))  # outside the lock: others go on
        try:
            yield Lease(uuid.uuid4().hex, now)
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def in_flight(self) -> int:
        return self._in_flight
