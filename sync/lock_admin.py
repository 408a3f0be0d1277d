"""Held run locks and stuck runs, as an admin sees them, and breaking a stale lock.

A lock is stale when its owner missed three heartbeats (sync.run.locks.LockInfo.is_stale): the worker is most
likely dead, and every later run of the site waits until the lock expires. Breaking it early is safe
because the engine checks it still owns the lock before each commit (fencing): a worker that was only
slow stops at its next batch instead of overwriting its successor's work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from django.conf import settings
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from monitoring.models import AuditEntry

from .choices import RunStatus
from .models import MoodleSite, SyncRun
from .run import locks
from .run.connect import shared_redis


class LockError(Exception):
    """Breaking was refused; the message is for the admin."""


@dataclass
class HeldLock:
    site: MoodleSite
    info: locks.LockInfo
    run: SyncRun | None

    @property
    def acquired_at(self) -> datetime:
        return datetime.fromtimestamp(self.info.acquired_at, tz=UTC)

    @property
    def heartbeat_at(self) -> datetime:
        return datetime.fromtimestamp(self.info.heartbeat_at, tz=UTC)

    @property
    def stale(self) -> bool:
        return is_stale(self.info)


def is_stale(info: locks.LockInfo) -> bool:
    # The lock's own heartbeat interval: RunLock renews every ttl/4.
    return info.is_stale(info.ttl_s / 4)


def held_locks(client: redis.Redis | None = None) -> list[HeldLock]:
    """Every site's held lock, with its owning run. Raises redis.RedisError when Redis is down."""
    client = client or shared_redis()
    found = []
    for site in MoodleSite.objects.order_by("name"):
        info = locks.lock_info(client, site.slug)
        if info is not None:
            found.append(HeldLock(site=site, info=info, run=None))
    runs = SyncRun.objects.in_bulk([held.info.run_id for held in found])
    for held in found:
        held.run = runs.get(held.info.run_id)
    return found


def stuck_runs(now: datetime | None = None):
    """Runs in `running` whose progress (or start, before any) is older than ALERT_STUCK_RUN_S."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.ALERT_STUCK_RUN_S)
    return (
        SyncRun.objects.filter(status=RunStatus.RUNNING)
        .annotate(last_sign=Coalesce(F("last_progress_at"), F("started_at"), F("created_at")))
        .filter(last_sign__lt=cutoff)
        .select_related("site")
        .defer("plan")
        .order_by("last_sign")
    )


def break_stale_lock(
    site: MoodleSite, run_id: int, user, client: redis.Redis | None = None
) -> SyncRun | None:
    """Break `site`'s lock if `run_id` still holds it and it is stale; fail the owning run. Audited."""
    client = client or shared_redis()
    info = locks.lock_info(client, site.slug)
    if info is None:
        raise LockError(f"{site.name} holds no lock any more: nothing to break")
    if info.run_id != run_id:
        raise LockError(f"the lock of {site.name} is now held by run #{info.run_id}, not #{run_id}")
    if not is_stale(info):
        raise LockError(
            f"run #{run_id}'s worker is still heart-beating (last {info.heartbeat_age():.0f} s ago): "
            "cancel the run instead of breaking its lock"
        )
    if not locks.break_lock(client, site.slug, run_id):
        raise LockError(f"the lock of {site.name} changed hands meanwhile: nothing was broken")
    who = user.get_username() if user is not None else "an admin"
    run = SyncRun.objects.filter(pk=run_id).first()
    if run is not None and run.status in RunStatus.active():
        run.finish(RunStatus.FAILED, f"lock broken by {who}: its worker stopped heart-beating")
    AuditEntry.objects.create(
        actor=user if getattr(user, "pk", None) else None,
        action="lock.break",
        target=f"site {site.slug} run #{run_id}",
        detail=(
            f"held on {info.host} pid {info.pid}; last heartbeat {info.heartbeat_age():.0f} s ago"
            + (f"; run #{run_id} marked failed" if run is not None and run.status == RunStatus.FAILED else "")
        ),
    )
    return run
