"""Sending a run's task to the workers: by the task's name, once the database has the run.

Nothing in the domain imports the Celery task module: a run is queued as a row, then its task is sent by
name after the transaction commits (a worker that picked it up earlier would not find the row).
"""

from __future__ import annotations

import logging

from celery import current_app
from django.db import transaction

from .models import SyncRun

logger = logging.getLogger(__name__)

EXECUTE_RUN = "sync.execute_run"


def enqueue_run(run_id: int, *, countdown: float | None = None) -> None:
    """Send `sync.execute_run` for the run when the current transaction commits."""
    transaction.on_commit(lambda: send_run(run_id, countdown=countdown))


def send_run(run_id: int, *, countdown: float | None = None) -> str:
    """Send the task now; returns its id, recorded on the run for the admin pages."""
    result = current_app.send_task(EXECUTE_RUN, args=[run_id], countdown=countdown)
    SyncRun.objects.filter(pk=run_id).update(task_id=result.id)
    return result.id
