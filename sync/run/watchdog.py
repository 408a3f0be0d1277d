"""The watchdog: no run is left running without a worker, nor queued without a task.

A worker killed mid-run (an OOM kill, a deploy, a host lost) never says so. Its run's heartbeat stops and
its site's lock expires; the watchdog, every 30 seconds from beat, hands such a run to the next worker,
which goes on from what was committed (the batch in flight is looked up again, so nobody is created
twice). Both signs are required: a live worker whose database heartbeat is late (a database restart) still
holds its lock, and a lock that vanished with a Redis restart is taken back by its live owner's next beat.
The claim (SyncRun.claim) is raised on each hand-over, so a worker that was only thought dead writes
nothing more.

A queued run whose task never reached the broker (it was down when the run was queued) or was lost there
(a broker restarted empty) is sent again; a run's task is idempotent, so a second copy does nothing.

Accepted webhook events that no run holds (their event run stopped before applying them) get a new event
run, at most one a minute per site, so an event is never left waiting for the next one to arrive. Webhook
rows past HOOK_RETENTION_DAYS are deleted (their ids are remembered that long against redeliveries).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from ..choices import EventStatus, RunKind, RunStatus
from ..dispatch import send_run
from ..hooks import queue_event_run
from ..models import InboundEvent, MoodleSite, RunEvent, SyncRun
from .connect import shared_redis
from .locks import RunLock

logger = logging.getLogger(__name__)


@dataclass
class Watch:
    """What one round of the watchdog did."""

    continued: list[int] = field(default_factory=list)
    resent: list[int] = field(default_factory=list)
    events_requeued: list[str] = field(default_factory=list)  # sites whose waiting events got a run
    events_deleted: int = 0


def watch_runs(now: datetime | None = None) -> Watch:
    now = now or timezone.now()
    watch = Watch()
    for run in orphaned_runs(now):
        if continue_orphan(run, now):
            watch.continued.append(run.pk)
    for run in unsent_runs(now):
        if send_run(run.pk):
            watch.resent.append(run.pk)
    for site in sites_with_orphan_events(now):
        queue_event_run(site)
        watch.events_requeued.append(site.slug)
    old = now - timedelta(days=settings.HOOK_RETENTION_DAYS)
    watch.events_deleted, _ = InboundEvent.objects.filter(received_at__lt=old).delete()
    return watch


def sites_with_orphan_events(now: datetime) -> list[MoodleSite]:
    """Sites with accepted events no run holds, and no event run queued, running or made in the last minute
    (a run that keeps stopping is not restarted every 30 s)."""
    waiting = InboundEvent.objects.filter(status=EventStatus.ACCEPTED, run__isnull=True).values("site_id")
    busy = (
        SyncRun.objects.filter(kind=RunKind.EVENT)
        .filter(Q(status__in=RunStatus.active()) | Q(created_at__gte=now - timedelta(seconds=60)))
        .values("site_id")
    )
    return list(MoodleSite.objects.filter(pk__in=waiting).exclude(pk__in=busy))


def worker_gone(run: SyncRun, now: datetime) -> bool:
    """No sign of life for RUN_STALE_S, and its site's lock is free: the worker executing it is dead."""
    last_sign = run.heartbeat_at or run.started_at
    if last_sign is None or now - last_sign < timedelta(seconds=settings.RUN_STALE_S):
        return False
    return RunLock(shared_redis(), run.site.slug, run.pk).holder() is None


def orphaned_runs(now: datetime) -> list[SyncRun]:
    stale = now - timedelta(seconds=settings.RUN_STALE_S)
    candidates = SyncRun.objects.filter(status=RunStatus.RUNNING).filter(
        Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, started_at__lt=stale)
    )
    return [run for run in candidates.select_related("site") if worker_gone(run, now)]


def continue_orphan(run: SyncRun, now: datetime) -> bool:
    last_sign = run.heartbeat_at or run.started_at
    silent_s = (now - last_sign).total_seconds()
    why = f"its worker stopped (no sign of life for {silent_s:.0f} s)"
    handed = SyncRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING, claim=run.claim).update(
        status=RunStatus.QUEUED, claim=F("claim") + 1, abort_reason=f"{why}; continuing on another worker"
    )
    if not handed:
        return False
    RunEvent.objects.create(
        run=run,
        level=RunEvent.Level.WARNING,
        message=f"Continued automatically: {why}. It goes on from what was committed; the batch that was in "
        "flight is looked up again, so nobody is created twice.",
    )
    logger.warning("run %s continued: %s", run.pk, why)
    send_run(run.pk)
    return True


def unsent_runs(now: datetime) -> list[SyncRun]:
    """Queued runs whose task never reached the broker, or reached it long ago and was never picked up."""
    settle = now - timedelta(seconds=settings.RUN_STALE_S)  # a run queued a moment ago is being sent
    lost = now - timedelta(seconds=settings.RUN_RESEND_S)
    return list(
        SyncRun.objects.filter(status=RunStatus.QUEUED).filter(
            Q(sent_at__isnull=True, created_at__lt=settle) | Q(sent_at__lt=lost)
        )
    )
