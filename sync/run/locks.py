"""Run locks: one run per site at a time, across every worker.

Every kind of run (bootstrap, incremental, retry, reconcile, resolution) reads or writes the same Moodle
users, so they share one lock per site: a reconciliation that read users while a sync changed them would
report drift that is not there.

The lock is a Redis key holding the run's id, with a TTL that a heartbeat thread renews. A worker that is
killed stops renewing and the key expires; until then the pages show the lock as stale (its heartbeat is
old) and an admin may break it. Before committing a batch the engine checks it still owns the lock
(fencing), so a run whose lock expired under it cannot overwrite the work of its successor.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

KEY = "hub:runlock:{site}"
META = "hub:runlock:{site}:meta"

logger = logging.getLogger(__name__)

# Compare-and-extend / compare-and-delete: only the owner may renew or release. A lock that vanished (Redis
# restarted empty under a live run) is taken back by its owner's next heartbeat, unless another run took it.
_RENEW = """
local holder = redis.call('get', KEYS[1])
if holder == false then
  redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2])
  redis.call('hset', KEYS[2], 'run_id', ARGV[1], 'host', ARGV[4], 'pid', ARGV[5], 'acquired', ARGV[3],
             'ttl', ARGV[6])
  holder = ARGV[1]
end
if holder == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  redis.call('hset', KEYS[2], 'heartbeat', ARGV[3])
  redis.call('pexpire', KEYS[2], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1], KEYS[2])
  return 1
end
return 0
"""


class LockLost(Exception):
    """The run no longer owns its site's lock (it expired or an admin broke it): stop without committing."""


@dataclass(frozen=True)
class LockInfo:
    """A held lock as the pages show it."""

    site: str
    run_id: int
    host: str
    pid: int
    acquired_at: float
    heartbeat_at: float
    ttl_s: float

    def heartbeat_age(self, now: float | None = None) -> float:
        return (now or time.time()) - self.heartbeat_at

    def is_stale(self, interval_s: float, now: float | None = None) -> bool:
        """Three missed heartbeats: the owner is most likely dead."""
        return self.heartbeat_age(now) > 3 * interval_s


class RunLock:
    """The lock of one site, taken on behalf of one run."""

    def __init__(
        self,
        client: redis.Redis,
        site: str,
        run_id: int,
        *,
        ttl_s: float = 60.0,
        on_beat: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.on_beat = on_beat  # also told of each heartbeat (the run's sign of life in the database)
        self.site = site
        self.run_id = run_id
        self.ttl_s = ttl_s
        self.key = KEY.format(site=site)
        self.meta_key = META.format(site=site)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @property
    def heartbeat_interval_s(self) -> float:
        return self.ttl_s / 4

    def acquire(self) -> bool:
        ttl_ms = int(self.ttl_s * 1000)
        if not self.client.set(self.key, str(self.run_id), nx=True, px=ttl_ms):
            return False
        now = time.time()
        pipe = self.client.pipeline()
        pipe.hset(
            self.meta_key,
            mapping={
                "run_id": self.run_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "acquired": now,
                "heartbeat": now,
                "ttl": self.ttl_s,
            },
        )
        pipe.pexpire(self.meta_key, ttl_ms)
        pipe.execute()
        self._thread = threading.Thread(target=self._beat, name=f"runlock-{self.site}", daemon=True)
        self._thread.start()
        return True

    def holder(self) -> int | None:
        value = self.client.get(self.key)
        return int(value) if value else None

    def owned(self) -> bool:
        return self.holder() == self.run_id

    def ensure_owned(self) -> None:
        if not self.owned():
            raise LockLost(f"run #{self.run_id} lost the lock of site {self.site}")

    def renew(self) -> bool:
        """Extend the lock (taking it back if it vanished); False when another run holds it."""
        args = [
            self.run_id,
            int(self.ttl_s * 1000),
            time.time(),
            socket.gethostname(),
            os.getpid(),
            self.ttl_s,
        ]
        return bool(self._renew(keys=[self.key, self.meta_key], args=args))

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._release(keys=[self.key, self.meta_key], args=[self.run_id])

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_interval_s):
            try:
                if not self.renew():
                    return  # lost: the engine's fencing check will notice before its next commit
            except redis.RedisError:
                pass  # a blip; the TTL leaves room for three missed beats, and a vanished lock is taken back
            if self.on_beat is not None:
                try:
                    self.on_beat()
                except Exception:
                    logger.warning("run #%s: its heartbeat could not be recorded", self.run_id, exc_info=True)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def lock_info(client: redis.Redis, site: str) -> LockInfo | None:
    raw = client.hgetall(META.format(site=site))
    if not raw or not client.exists(KEY.format(site=site)):
        return None
    data = {k.decode(): v.decode() for k, v in raw.items()}
    return LockInfo(
        site=site,
        run_id=int(data["run_id"]),
        host=data.get("host", "?"),
        pid=int(data.get("pid", 0)),
        acquired_at=float(data["acquired"]),
        heartbeat_at=float(data["heartbeat"]),
        ttl_s=float(data.get("ttl", 60)),
    )


def break_lock(client: redis.Redis, site: str, run_id: int) -> bool:
    """Delete the lock if `run_id` still holds it (an admin breaking a stale lock; audited by the caller)."""
    script = client.register_script(_RELEASE)
    return bool(script(keys=[KEY.format(site=site), META.format(site=site)], args=[run_id]))
