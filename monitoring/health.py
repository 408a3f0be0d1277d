"""Health of the hub's own parts: database, Redis, the workers and the scheduler's heartbeat.

One function serves /healthz and `manage.py healthcheck`, so the load balancer and the container
health checks judge the same way.
"""

from dataclasses import asdict, dataclass
from functools import cache

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from .models import Heartbeat
from .worker_liveness import alive_workers


@dataclass
class Component:
    name: str
    ok: bool
    detail: str


def check_database() -> Component:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return Component("database", True, "reachable")
    except Exception as exc:  # any driver error means "down" here
        return Component("database", False, type(exc).__name__)


@cache
def _redis(url: str) -> redis.Redis:
    """One connection pool per process for the checks, which run on every page (the worker banner): short
    timeouts, so a Redis that stopped answering makes a check fail fast instead of hanging the page."""
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)


def check_redis() -> Component:
    try:
        _redis(settings.REDIS_URL).ping()
        return Component("redis", True, "reachable")
    except redis.RedisError as exc:
        return Component("redis", False, type(exc).__name__)


def check_worker() -> Component:
    """Workers whose liveness key (refreshed by a thread in each worker) has not expired."""
    try:
        names = alive_workers(_redis(settings.REDIS_URL))
    except redis.RedisError as exc:
        return Component("worker", False, f"cannot read worker liveness: {type(exc).__name__}")
    if not names:
        return Component(
            "worker",
            False,
            f"no worker alive (none refreshed its key in {settings.WORKER_HEARTBEAT_TTL_S} s)",
        )
    return Component("worker", True, f"{len(names)} worker{'s' if len(names) != 1 else ''} alive")


def check_scheduler(now=None) -> Component:
    try:
        beat = Heartbeat.objects.filter(name=Heartbeat.SCHEDULER).first()
    except Exception as exc:
        return Component("scheduler", False, f"cannot read heartbeat: {type(exc).__name__}")
    if beat is None:
        return Component("scheduler", False, "no heartbeat recorded yet")
    age = beat.age_seconds(now or timezone.now())
    return Component(
        "scheduler", age <= settings.SCHEDULER_STALE_AFTER_S, f"last heartbeat {round(age)} s ago"
    )


CHECKS = {
    "database": check_database,
    "redis": check_redis,
    "worker": check_worker,
    "scheduler": check_scheduler,
}


def run_checks(names: list[str] | None = None) -> tuple[bool, list[dict]]:
    components = [CHECKS[name]() for name in (names or CHECKS)]
    return all(c.ok for c in components), [asdict(c) for c in components]
