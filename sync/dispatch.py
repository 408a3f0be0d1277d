"""Sending a run's task to the workers: by the task's name, once the database has the run.

Nothing in the domain imports the Celery task module: a run is queued as a row, then its task is sent by
name after the transaction commits (a worker that picked it up earlier would not find the row).
"""

from __future__ import annotations

import logging

from celery import current_app
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from .choices import RunStatus
from .models import SyncRun

logger = logging.getLogger(__name__)

EXECUTE_RUN = "sync.execute_run"


def enqueue_run(run_id: int, *, countdown: float | None = None) -> None:
    """Send `sync.execute_run` for the run when the current transaction commits."""
    transaction.on_commit(lambda: send_run(run_id, countdown=countdown))


def send_run(run_id: int, *, countdown: float | None = None) -> str | None:
    """Send the task now; returns its id, recorded on the run for the admin pages. If the broker does not
    take it, the run stays queued and says why, and the watchdog (sync/run/watchdog.py) sends it once the
    broker answers: never a queued run without a task."""
    try:
        result = current_app.send_task(EXECUTE_RUN, args=[run_id], countdown=countdown)
    except (KombuError, OSError, RedisError) as exc:
        logger.warning("run %s: the task queue did not take its task: %s", run_id, exc)
        SyncRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
            abort_reason="waiting for the task queue (Redis), which did not answer; the run is sent as soon "
            "as it does"
        )
        return None
    SyncRun.objects.filter(pk=run_id).update(task_id=result.id, sent_at=timezone.now())
    return result.id
