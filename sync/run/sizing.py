"""How many people go into one write call."""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable
from statistics import median_low
from typing import Any

import redis

from ..moodle.encoding import count_variables, request_budget

logger = logging.getLogger(__name__)

# What a run has seen of Moodle's pace outlives its worker: a run continued after its worker died sizes its
# calls as the run did, not from the first guess again. A day is longer than any run's time budget.
PACE_TTL_S = 24 * 3600


class CallSizer:
    """How many users go into one write call: under the site's max_input_vars, and about `target_ms` of
    Moodle's time at the time per user it has shown lately, in groups a multiple of the site's concurrency so
    that side-by-side calls finish together.

    Moodle's time per user is the lower median of the last three rounds (the first guess until a round has
    been seen): one slow round is an accident (a stall, a lock wait) and must not make the rest of the run
    send more, smaller calls; two slow rounds are the site's pace. The guess is not one of the three: a run
    of a few batches would otherwise fall back to it after one stall."""

    def __init__(self, max_input_vars: int, target_ms: float, concurrency: int, ms_per_user: float = 6.0):
        self.max_input_vars = max_input_vars
        self.target_ms = target_ms
        self.concurrency = max(1, concurrency)
        self._guess = ms_per_user
        self._seen: deque[float] = deque(maxlen=3)

    @property
    def seen(self) -> list[float]:
        """Moodle's time per user in the last rounds, oldest first (to carry over with `resume`)."""
        return list(self._seen)

    def resume(self, seen: Iterable[float]) -> None:
        self._seen.extend(float(ms) for ms in seen if ms > 0)

    @property
    def ms_per_user(self) -> float:
        return median_low(self._seen) if self._seen else self._guess

    def groups(self, items: list, sample: dict[str, Any]) -> list[list]:
        if not items:
            return []
        by_vars = max(1, (request_budget(self.max_input_vars) - 10) // max(1, count_variables(sample)))
        by_time = max(1, int(self.target_ms / max(self.ms_per_user, 0.1)))
        size = min(by_vars, by_time)
        count = -(-len(items) // size)
        if count > 1 and count % self.concurrency:
            count += self.concurrency - count % self.concurrency
        count = min(count, len(items))
        step = -(-len(items) // count)
        return [items[start : start + step] for start in range(0, len(items), step)]

    def observe(self, users: int, elapsed_ms: float, side_by_side: int) -> None:
        """What a round of calls showed: the time per user, each call having run beside the others."""
        if users:
            self._seen.append(elapsed_ms * max(1, side_by_side) / users)


def _pace_key(run_id: int) -> str:
    return f"hub:run:{run_id}:pace"


def remembered_pace(client: redis.Redis, run_id: int) -> list[float]:
    """The pace a run saw before its worker stopped; nothing if unknown (the sizer then guesses)."""
    try:
        raw = client.get(_pace_key(run_id))
        return [float(ms) for ms in json.loads(raw)] if raw else []
    except (redis.RedisError, ValueError, TypeError):
        return []


def remember_pace(client: redis.Redis, run_id: int, seen: list[float]) -> None:
    """Best effort: a Redis that fails here costs at most a few smaller calls in a continued run."""
    if not seen:
        return
    try:
        client.set(_pace_key(run_id), json.dumps(seen), ex=PACE_TTL_S)
    except redis.RedisError:
        logger.warning("could not remember run %s's pace in Redis", run_id)
