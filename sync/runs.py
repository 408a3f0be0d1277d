"""Starting and steering runs: what the pages, the commands and beat call. Every action is audited as a
run event naming who did it."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from . import dispatch
from .choices import DeadLetterStatus, RunControl, RunKind, RunStatus, RunTrigger, SyncStatus
from .models import DeadLetter, MoodleSite, RunEvent, SyncRecord, SyncRun
from .run import watchdog


class RunActionError(Exception):
    """The action does not fit the run's state (e.g. resuming a finished run)."""


def _who(user, trigger: str = RunTrigger.MANUAL) -> str:
    if user is not None:
        return user.get_username()
    return "the scheduler" if trigger == RunTrigger.SCHEDULE else "a command"


def enqueue_run(run: SyncRun) -> SyncRun:
    """Send the run's task once the current transaction commits (so the worker finds the row)."""
    dispatch.enqueue_run(run.pk)
    return run


def start(
    site: MoodleSite,
    kind: str,
    *,
    user=None,
    trigger: str = RunTrigger.MANUAL,
    dry_run: bool = False,
    upload=None,
    enqueue: bool = True,
) -> SyncRun:
    """Queue a sync run and send its task; `upload` is a CSV file read instead of the source's path."""
    if kind not in (RunKind.BOOTSTRAP, RunKind.INCREMENTAL, RunKind.RECONCILE):
        raise RunActionError(f"{kind} runs are not started here")
    with transaction.atomic():
        run = SyncRun.objects.queue(site, kind, trigger=trigger, user=user, dry_run=dry_run)
        if upload is not None:
            run.source_file = str(save_upload(site, run, upload))
            run.upload_name = Path(upload.name or "upload.csv").name[:255]
            run.save(update_fields=["source_file", "upload_name"])
        RunEvent.objects.create(run=run, message=f"Queued by {_who(user, trigger)}")
        return enqueue_run(run) if enqueue else run


def save_upload(site: MoodleSite, run: SyncRun, upload) -> Path:
    folder = Path(settings.UPLOAD_DIR) / site.slug
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"run-{run.pk}-{timezone.now():%Y%m%d-%H%M%S}.csv"
    with path.open("wb") as target:
        for chunk in upload.chunks():
            target.write(chunk)
    return path


def pause(run: SyncRun, user) -> None:
    _request(run, RunControl.PAUSE, user)


def cancel(run: SyncRun, user) -> None:
    # Nothing works on a queued or paused run: end it now, unless a worker claimed it meanwhile (then the
    # request goes to that worker, like for any running run).
    ended = SyncRun.objects.filter(pk=run.pk, status__in=[RunStatus.QUEUED, RunStatus.PAUSED]).update(
        status=RunStatus.CANCELLED,
        finished_at=timezone.now(),
        abort_reason=f"cancelled by {_who(user)} before it ran on; unsent records stay pending",
    )
    if ended or _end_orphan(run, user):
        run.refresh_from_db()
        RunEvent.objects.create(run=run, message=f"Cancelled by {_who(user)}")
        run.release_unfinished_work(run.abort_reason)
        return
    _request(run, RunControl.CANCEL, user)


def _end_orphan(run: SyncRun, user) -> bool:
    """A running run whose worker is gone would never read a cancel request: end it here, and raise its
    claim so that nothing it left behind writes again."""
    run.refresh_from_db(fields=["status", "claim", "heartbeat_at", "started_at"])
    if run.status != RunStatus.RUNNING or not watchdog.worker_gone(run, timezone.now()):
        return False
    return bool(
        SyncRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING, claim=run.claim).update(
            status=RunStatus.CANCELLED,
            finished_at=timezone.now(),
            claim=F("claim") + 1,
            abort_reason=f"cancelled by {_who(user)}; its worker had stopped, so it ended at once; unsent "
            "records stay pending",
        )
    )


def _request(run: SyncRun, control: str, user) -> None:
    updated = SyncRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(control=control)
    if not updated:
        raise RunActionError(f"run #{run.pk} is {run.get_status_display().lower()}, not running")
    verb = {RunControl.PAUSE: "Pause", RunControl.CANCEL: "Cancel"}[control]
    RunEvent.objects.create(
        run=run, message=f"{verb} requested by {_who(user)}; it takes effect after the batch in flight"
    )


def resumable(run: SyncRun) -> bool:
    """A paused run, or one aborted by an auth or configuration failure once it is fixed; a resolution
    run also after a failure (it applies what is still approved)."""
    if run.kind in (RunKind.BOOTSTRAP, RunKind.INCREMENTAL, RunKind.RETRY):
        return run.status in (RunStatus.PAUSED, RunStatus.ABORTED)
    if run.kind == RunKind.RESOLUTION:
        return run.status in (RunStatus.PAUSED, RunStatus.ABORTED, RunStatus.FAILED)
    return False


def resume(run: SyncRun, user) -> SyncRun:
    """Queue the run again: a sync sends the records still pending (the source is read again only if it
    had not been read yet); a resolution run applies what is still approved."""
    if not resumable(run):
        raise RunActionError(
            f"run #{run.pk} is {run.get_status_display().lower()}: only paused or aborted sync runs, and "
            "stopped resolution runs, resume"
        )
    updated = SyncRun.objects.filter(pk=run.pk, status=run.status).update(
        status=RunStatus.QUEUED, finished_at=None, abort_reason="", stop_category=""
    )
    if not updated:
        raise RunActionError(f"run #{run.pk} changed meanwhile; reload the page")
    RunEvent.objects.create(run=run, message=f"Resumed by {_who(user)}")
    run.refresh_from_db()
    return enqueue_run(run)


def retry_dead_letters(site: MoodleSite, letters, user=None, *, enqueue: bool = True) -> SyncRun | None:
    """Send the records behind these dead letters again, as a run of kind retry (source not re-read)."""
    with transaction.atomic():
        letters = list(
            DeadLetter.objects.select_for_update(skip_locked=True).filter(
                pk__in=[letter.pk for letter in letters], site=site, status=DeadLetterStatus.OPEN
            )
        )
        if not letters:
            return None
        record_ids = [letter.record_id for letter in letters]
        SyncRecord.objects.filter(pk__in=record_ids).update(sync_status=SyncStatus.PENDING)
        pending = SyncRecord.objects.filter(site=site, sync_status=SyncStatus.PENDING).count()
        run = SyncRun.objects.queue(site, RunKind.RETRY, user=user)
        run.planned_at = timezone.now()
        run.progress_total = pending
        run.save(update_fields=["planned_at", "progress_total"])
        DeadLetter.objects.filter(pk__in=[letter.pk for letter in letters]).update(
            status=DeadLetterStatus.RETRYING, retry_run=run
        )
        RunEvent.objects.create(
            run=run, message=f"Retry of {len(letters)} dead letter(s) queued by {_who(user)}"
        )
        return enqueue_run(run)


def retry_dead_letters_by_site(letters, user=None) -> list[tuple[MoodleSite, SyncRun | None, int]]:
    """ "Retry all filtered": one retry run per site, with how many letters each run took (another request
    may have claimed some of them meanwhile)."""
    chosen = list(letters.select_related("site").only("pk", "site"))
    sites = {letter.site_id: letter.site for letter in chosen}
    queued = []
    for site_id, site in sites.items():
        run = retry_dead_letters(site, [letter for letter in chosen if letter.site_id == site_id], user)
        taken = DeadLetter.objects.filter(retry_run=run).count() if run else 0
        queued.append((site, run, taken))
    return queued


def discard_dead_letter(letter: DeadLetter, user, reason: str) -> None:
    reason = reason.strip()
    if not reason:
        raise RunActionError("say why the dead letter is discarded")
    DeadLetter.objects.filter(pk=letter.pk, status=DeadLetterStatus.OPEN).update(
        status=DeadLetterStatus.DISCARDED, discard_reason=reason, discarded_by=user, closed_at=timezone.now()
    )
