"""Starting and steering runs: what the pages, the commands and beat call. Every action is audited as a
run event naming who did it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from web.templatetags.hub import format_when

from . import dispatch
from .choices import DeadLetterStatus, RunControl, RunKind, RunStatus, RunTrigger, SyncStatus
from .models import DeadLetter, MoodleSite, RunEvent, SyncRecord, SyncRun, SyncSource
from .run import watchdog
from .words import counted

logger = logging.getLogger(__name__)


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


# -- a dry run, then the same for real ------------------------------------------------------------------


@dataclass(frozen=True)
class RealRunOffer:
    """Whether a dry run's page offers "Run this for real", and if not, why not (said on the page)."""

    available: bool
    reason: str = ""
    kept_until: datetime | None = None  # an uploaded file: when it expires unless a real run reads it first
    real_run: SyncRun | None = None  # the real run already started with the dry run's uploaded file


def upload_expires_at(path: Path) -> datetime | None:
    """When an uploaded file expires (UPLOAD_KEEP_HOURS after it was saved); None when it is gone."""
    try:
        saved = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    except OSError:
        return None
    return saved + timedelta(hours=settings.UPLOAD_KEEP_HOURS)


def _real_run_with_file(site_id: int, source_file: str) -> SyncRun | None:
    """A real run that reads, or has read, this uploaded file; one cancelled or failed before reading it
    does not count (the file is still there to read)."""
    return (
        SyncRun.objects.filter(site_id=site_id, dry_run=False, source_file=source_file)
        .filter(Q(status__in=RunStatus.active()) | Q(planned_at__isnull=False))
        .order_by("-created_at")
        .first()
    )


def real_run_offer(dry: SyncRun, now: datetime | None = None) -> RealRunOffer | None:
    """What a dry run's page says about running it for real: None while that question does not arise (not a
    dry run of a sync, or still going); otherwise whether the button is there and, if not, why not."""
    if not dry.dry_run or dry.kind not in (RunKind.BOOTSTRAP, RunKind.INCREMENTAL) or dry.is_active:
        return None
    if dry.status != RunStatus.SUCCEEDED or not dry.plan:
        return RealRunOffer(
            False, "this dry run did not finish, so there is no plan to confirm: start a new dry run"
        )
    source = SyncSource.objects.filter(site_id=dry.site_id).only("updated_at").first()
    if source is None:
        return RealRunOffer(False, "the site has no source any more")
    read_at = dry.started_at or dry.created_at
    if source.updated_at > read_at:
        return RealRunOffer(
            False,
            f"the site's source settings changed at {format_when(source.updated_at)}, after this dry "
            "run read the source: its plan may no longer be what a real run would do; start a new dry run",
        )
    if not dry.source_file:
        return RealRunOffer(True)
    name = dry.upload_name or Path(dry.source_file).name
    real = _real_run_with_file(dry.site_id, dry.source_file)
    if real is not None:
        return RealRunOffer(False, f"it was already run for real as run #{real.pk}", real_run=real)
    expires = upload_expires_at(Path(dry.source_file))
    keep = f"uploaded files are kept {settings.UPLOAD_KEEP_HOURS} hours, or until a real run has read them"
    if expires is None:
        return RealRunOffer(
            False, f"the uploaded file {name} is no longer kept ({keep}): upload it again with a new dry run"
        )
    if expires <= (now or timezone.now()):
        return RealRunOffer(
            False,
            f"the uploaded file {name} expired at {format_when(expires)} ({keep}): upload it again "
            "with a new dry run",
        )
    return RealRunOffer(True, kept_until=expires)


def run_for_real(dry: SyncRun, user, *, enqueue: bool = True) -> SyncRun:
    """Queue the real run of a finished dry run: the same site, mode and uploaded file (read again, so it
    plans from what is in the hub and Moodle now). Two clicks make one run: the dry run's row is locked
    while the offer is checked, and the second finds the first's run."""
    with transaction.atomic():
        dry = SyncRun.objects.select_for_update().select_related("site").get(pk=dry.pk)
        offer = real_run_offer(dry)
        if offer is None:
            raise RunActionError(f"run #{dry.pk} is not a finished dry run of a sync")
        if not offer.available:
            raise RunActionError(offer.reason)
        run = SyncRun.objects.queue(dry.site, dry.kind, user=user, source_file=dry.source_file)
        if dry.source_file:
            run.upload_name = dry.upload_name
            run.save(update_fields=["upload_name"])
        same_file = (
            f", reading the same uploaded file {dry.upload_name or 'as it'}" if dry.source_file else ""
        )
        RunEvent.objects.create(
            run=run, message=f"Queued by {_who(user)} as the real run of dry run #{dry.pk}{same_file}"
        )
        RunEvent.objects.create(run=dry, message=f"Run for real by {_who(user)}: run #{run.pk}")
        return enqueue_run(run) if enqueue else run


def delete_spent_uploads(now: datetime | None = None) -> list[Path]:
    """Delete uploaded files a real run has read, and those past UPLOAD_KEEP_HOURS; keep, however old, a
    file that a queued, running or paused run (a dry run too) has still to read. Returns what was deleted."""
    root = Path(settings.UPLOAD_DIR)
    if not root.is_dir():
        return []
    files = {str(path): path for path in root.glob("*/*.csv")}
    if not files:
        return []
    read, needed = set(), set()
    uses = SyncRun.objects.filter(source_file__in=list(files)).values_list(
        "source_file", "dry_run", "status", "planned_at"
    )
    for source_file, dry_run, status, planned_at in uses:
        if planned_at is not None and not dry_run:
            read.add(source_file)
        elif planned_at is None and status in RunStatus.active():
            needed.add(source_file)  # (a dry run too: it reads the file until its plan is made)
    now = now or timezone.now()
    deleted = []
    for name, path in files.items():
        expires = upload_expires_at(path)
        if name in needed or expires is None or (name not in read and expires > now):
            continue
        try:
            path.unlink(missing_ok=True)
        except OSError:
            logger.exception("could not delete the spent upload %s", path)
            continue
        deleted.append(path)
    return deleted


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
        run=run,
        message=f"{verb} requested by {_who(user)}; it takes effect within seconds while the source is read, "
        "else after the batch in flight",
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
            run=run, message=f"Retry of {counted(len(letters), 'dead letter')} queued by {_who(user)}"
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
