"""Per-site circuit breaker in Redis, shared by every process that calls the site.

A Moodle under load answers slowly for 30-60 s before it starts failing, so the breaker opens on
either a high transient/maintenance error rate or a high p90 latency over a rolling window.
While open, calls fail fast. After a cool-down exactly one process (``SET NX``) probes the site
with ``core_webservice_get_site_info``; success closes the breaker, failure opens it again.

Latency is judged against the work a call carries: a create of 300 users takes seconds on a healthy
Moodle by design, a site info taking seconds does not. Each call's latency evidence is what it took
beyond ``per_item_ms`` for each item it sent, so only slowness the size of the call does not explain
counts. Evidence is dated by when the call *started*: a call stuck for a minute that finishes after
Moodle recovered says nothing about the present, and has already left the window. And one slow call
is not a sick site: at least ``min_slow_calls`` slow ones are needed.

Slow answers tell how Moodle was when they were asked, not how it is now: the calls stuck in a stall
all finish together when the stall ends. So a breaker opened on latency probes at once instead of after
the cool-down: a probe that answers fast (the stall is over) closes it with a fresh window, a slow one
keeps it open for the cool-down. Errors are evidence of the present and wait the cool-down out.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis as redis_lib

from .errors import BreakerOpen

logger = logging.getLogger(__name__)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

PROBE_FUNCTION = "core_webservice_get_site_info"

# Opens only from closed, so among many processes seeing the same window only one reports it.
_OPEN_IF_CLOSED = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'open' or state == 'half_open' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[1], 'reason', ARGV[2],
           'next_probe_at', ARGV[3])
return 1
"""

ChangeCallback = Callable[[str, str, str, str], None]


@dataclass(frozen=True)
class BreakerConfig:
    """When the breaker opens and how long it stays open. ``latency_p90_ms=None`` ignores latency."""

    window_s: float = 60.0
    min_calls: int = 10  # calls in the window before the error rate may open it
    error_rate: float = 0.5
    latency_p90_ms: float | None = 3000.0
    min_latency_calls: int = 5
    min_slow_calls: int = 3  # slow samples in the window before latency may open it
    per_item_ms: float = 25.0  # what each item a call carries may add to its latency
    cooldown_s: float = 30.0
    probe_lease_s: float = 60.0  # a probing process that dies frees the probe after this
    enabled: bool = True


@dataclass(frozen=True)
class BreakerState:
    """What the pages show about a site's breaker."""

    site: str
    state: str
    opened_at: float | None
    reason: str
    next_probe_at: float | None
    window_calls: int
    window_errors: int
    error_rate: float
    p90_ms: float | None


def p90(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


class Breaker:
    """Redis keys under ``hub:breaker:{site}:``; ``clock`` is wall time so processes agree."""

    def __init__(
        self,
        redis: redis_lib.Redis,
        site: str,
        config: BreakerConfig,
        *,
        on_change: ChangeCallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.site = site
        self.config = config
        self._redis = redis
        self._on_change = on_change
        self._clock = clock
        prefix = f"hub:breaker:{site}:"
        self._state_key = prefix + "state"
        self._calls_key = prefix + "calls"
        self._probe_key = prefix + "probe"
        self._open_if_closed = redis.register_script(_OPEN_IF_CLOSED)

    def _notify(self, old: str, new: str, reason: str) -> None:
        if new == OPEN:
            logger.warning("Moodle breaker for %s: %s -> %s (%s)", self.site, old, new, reason)
        else:
            logger.info("Moodle breaker for %s: %s -> %s (%s)", self.site, old, new, reason)
        if self._on_change is None:
            return
        try:
            self._on_change(self.site, old, new, reason)
        except Exception:
            # Reporting must never break a call.
            logger.exception("breaker change callback failed for site %s", self.site)

    def _read_state(self) -> dict[str, str]:
        raw = self._redis.hgetall(self._state_key)
        return {_text(k): _text(v) for k, v in raw.items()}

    def before_call(self) -> bool:
        """Let a call through, or raise ``BreakerOpen``.

        Returns True when the caller has won the half-open probe and must probe the site first
        (then report with ``probe_finished``).
        """
        if not self.config.enabled:
            return False
        current = self._read_state()
        state = current.get("state", CLOSED)
        if state == CLOSED:
            return False
        next_probe_at = _float(current.get("next_probe_at"))
        reason = current.get("reason", "")
        if state == OPEN and next_probe_at is not None and self._clock() < next_probe_at:
            raise BreakerOpen(self.site, reason, next_probe_at)
        # Cool-down over (or a prober died and its lease ran out): one process wins the probe.
        if not self._redis.set(
            self._probe_key, uuid.uuid4().hex, nx=True, px=int(self.config.probe_lease_s * 1000)
        ):
            raise BreakerOpen(self.site, f"probe in progress; {reason}", next_probe_at)
        self._redis.hset(self._state_key, "state", HALF_OPEN)
        self._notify(state, HALF_OPEN, "cool-down over; probing with " + PROBE_FUNCTION)
        return True

    def probe_finished(self, ok: bool, reason: str = "") -> None:
        """Close after a good probe (with a fresh window), or open again for another cool-down."""
        now = self._clock()
        if ok:
            pipe = self._redis.pipeline()
            pipe.hset(
                self._state_key,
                mapping={"state": CLOSED, "opened_at": "", "reason": "", "next_probe_at": ""},
            )
            # The old window holds the slow or failed calls that opened the breaker.
            pipe.delete(self._calls_key)
            pipe.delete(self._probe_key)
            pipe.execute()
            self._notify(HALF_OPEN, CLOSED, reason or "probe succeeded")
        else:
            pipe = self._redis.pipeline()
            pipe.hset(
                self._state_key,
                mapping={
                    "state": OPEN,
                    "opened_at": repr(now),
                    "reason": reason or "probe failed",
                    "next_probe_at": repr(now + self.config.cooldown_s),
                },
            )
            pipe.delete(self._probe_key)
            pipe.execute()
            self._notify(HALF_OPEN, OPEN, reason or "probe failed")

    def record(
        self, *, failed: bool, duration_ms: float, items: int = 0, started_at: float | None = None
    ) -> None:
        """Add one finished call to the window; open the breaker if the window says so.

        ``failed`` is True only for transient and maintenance outcomes: an answer that says our
        request was wrong proves the site is up. ``items`` is the call's size of work; ``started_at``
        dates the evidence (default: now).
        """
        if not self.config.enabled:
            return
        now = self._clock()
        started = now - duration_ms / 1000 if started_at is None else started_at
        excess = duration_ms - self.config.per_item_ms * items
        member = f"{started:.6f}:{uuid.uuid4().hex[:8]}:{excess:.1f}:{int(failed)}"
        pipe = self._redis.pipeline()
        pipe.zadd(self._calls_key, {member: started})
        pipe.zremrangebyscore(self._calls_key, "-inf", now - self.config.window_s)
        pipe.pexpire(self._calls_key, int(self.config.window_s * 1000) + 1000)
        pipe.zrange(self._calls_key, 0, -1)
        pipe.hget(self._state_key, "state")
        *_, members, state = pipe.execute()
        if state is not None and _text(state) != CLOSED:
            return
        calls, errors, durations = _window(members)
        trip = self._trip_reason(calls, errors, durations)
        if trip is None:
            return
        reason, on_latency = trip
        next_probe_at = now if on_latency else now + self.config.cooldown_s
        opened = self._open_if_closed(keys=[self._state_key], args=[repr(now), reason, repr(next_probe_at)])
        if int(opened):
            self._notify(CLOSED, OPEN, reason)

    def _trip_reason(self, calls: int, errors: int, durations: list[float]) -> tuple[str, bool] | None:
        """Why the window opens the breaker, and whether it is latency (see the module's docstring)."""
        c = self.config
        if calls >= c.min_calls and errors / calls >= c.error_rate:
            return f"error rate {errors}/{calls} ({errors / calls:.0%}) in {c.window_s:g} s", False
        if c.latency_p90_ms is not None and calls >= c.min_latency_calls:
            slow = p90(durations)
            how_many = sum(1 for d in durations if d > c.latency_p90_ms)
            if slow is not None and slow > c.latency_p90_ms and how_many >= c.min_slow_calls:
                beyond = f" (after {c.per_item_ms:g} ms per item sent)" if c.per_item_ms else ""
                reason = f"p90 latency {slow:.0f} ms > {c.latency_p90_ms:g} ms over {calls} calls{beyond}"
                return reason, True
        return None

    def state(self) -> BreakerState:
        now = self._clock()
        current = self._read_state()
        members = self._redis.zrangebyscore(self._calls_key, now - self.config.window_s, "+inf")
        calls, errors, durations = _window(members)
        return BreakerState(
            site=self.site,
            state=current.get("state") or CLOSED,
            opened_at=_float(current.get("opened_at")),
            reason=current.get("reason", ""),
            next_probe_at=_float(current.get("next_probe_at")),
            window_calls=calls,
            window_errors=errors,
            error_rate=errors / calls if calls else 0.0,
            p90_ms=p90(durations),
        )

    def reset(self) -> None:
        """Forget everything (an operator's "close now")."""
        self._redis.delete(self._state_key, self._calls_key, self._probe_key)


def _window(members: list) -> tuple[int, int, list[float]]:
    durations: list[float] = []
    errors = 0
    for member in members:
        _, _, duration, failed = _text(member).split(":")
        durations.append(float(duration))
        errors += failed == "1"
    return len(durations), errors, durations


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _float(value: str | None) -> float | None:
    return float(value) if value else None
