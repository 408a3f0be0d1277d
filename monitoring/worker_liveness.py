"""The workers' own dead-man switch: each Celery worker keeps a Redis key alive while it runs.

The key `hub:worker:{hostname}` (value: epoch seconds) has a TTL of WORKER_HEARTBEAT_TTL_S and is
refreshed every TTL/3 by a thread started on Celery's `worker_ready` signal. A worker that is killed,
hangs its whole process or loses Redis stops refreshing, and the key expires on its own: nobody has
to notice the death for it to show. A clean shutdown deletes the key at once.

This module is imported by the Celery app before Django is set up, so it imports no models.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

KEY_PREFIX = "hub:worker:"


def worker_key(hostname: str) -> str:
    return f"{KEY_PREFIX}{hostname}"


def alive_workers(client: redis.Redis) -> list[str]:
    """Hostnames of the workers whose key has not expired."""
    return sorted(
        (key.decode() if isinstance(key, bytes) else key).removeprefix(KEY_PREFIX)
        for key in client.scan_iter(f"{KEY_PREFIX}*", count=500)
    )


class Liveness:
    """Refreshes one worker's key from a daemon thread until stopped."""

    def __init__(self, hostname: str, client: redis.Redis, ttl_s: int) -> None:
        self.hostname = hostname
        self.ttl_s = max(1, int(ttl_s))
        self._client = client
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hub-worker-liveness", daemon=True)

    def beat(self) -> None:
        self._client.set(worker_key(self.hostname), f"{time.time():.0f}", ex=self.ttl_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._client.delete(worker_key(self.hostname))
        except redis.RedisError:
            logger.warning("could not remove the liveness key of worker %s", self.hostname)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except redis.RedisError as exc:
                # Redis down means the key expires and the worker looks dead: true enough, since it
                # cannot take tasks either. Keep trying.
                logger.warning("worker liveness key not refreshed: %s", type(exc).__name__)
            self._stop.wait(self.ttl_s / 3)


_running: dict[str, Liveness] = {}


def on_worker_ready(sender=None, **kwargs) -> None:
    """`worker_ready` handler: sender is the worker's consumer. Never breaks the worker's start."""
    try:
        hostname = getattr(sender, "hostname", None) or "unknown"
        if hostname in _running:
            return
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=5, socket_timeout=5)
        liveness = Liveness(hostname, client, settings.WORKER_HEARTBEAT_TTL_S)
        liveness.beat()  # alive from the first moment, not TTL/3 later
        liveness.start()
        _running[hostname] = liveness
    except Exception:
        logger.exception("could not start the worker liveness heartbeat")


def on_worker_shutdown(sender=None, **kwargs) -> None:
    """`worker_shutdown` handler: stop refreshing and remove the key, so a stopped worker shows at once."""
    try:
        for hostname in list(_running):
            _running.pop(hostname).stop()
    except Exception:
        logger.exception("could not stop the worker liveness heartbeat")
