"""Celery tasks of the sync app: thin wrappers around sync.run.engine and sync.runs."""

from celery import shared_task

from .choices import RunKind, RunTrigger
from .models import MoodleSite
from .run import engine, watchdog
from .runs import delete_spent_uploads, start
from .words import counted


@shared_task(name="sync.execute_run", acks_late=True, ignore_result=True)
def execute_run(run_id: int) -> str:
    """Idempotent: a redelivered task for a run that ended, or that another worker runs, does nothing."""
    run = engine.execute(run_id)
    return f"run #{run_id} {run.status if run else 'no longer exists'}"


@shared_task(name="sync.scheduled_sync", ignore_result=True)
def scheduled_sync(site_slug: str, kind: str = RunKind.INCREMENTAL) -> str:
    """What beat calls every 15 minutes per site: queue a run unless the site is disabled."""
    site = MoodleSite.objects.filter(slug=site_slug).first()
    if site is None or not site.enabled:
        return f"site {site_slug} is missing or disabled: no run"
    run = start(site, kind, trigger=RunTrigger.SCHEDULE)
    return f"queued run #{run.pk}"


@shared_task(name="sync.watch_runs", ignore_result=True)
def watch_runs() -> str:
    """Every 30 s from beat: continue runs whose worker died, send queued runs whose task was lost, and
    delete uploaded files that a real run has read or that are past UPLOAD_KEEP_HOURS (a directory listing
    and one query: cheap enough to ride along rather than need a schedule of its own)."""
    watch = watchdog.watch_runs()
    deleted = delete_spent_uploads()
    return (
        f"continued {watch.continued or 'none'}; sent again {watch.resent or 'none'}; "
        f"deleted {counted(len(deleted), 'spent upload') if deleted else 'no spent uploads'}"
        + (f"; event runs for {', '.join(watch.events_requeued)}" if watch.events_requeued else "")
        + (f"; {counted(watch.events_deleted, 'old webhook row')} deleted" if watch.events_deleted else "")
    )
