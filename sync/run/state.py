"""Committing a batch: every record's new state, its history, conflicts, dead letters and the run's
counters, in one database transaction, after checking the run still owns its site's lock."""

from __future__ import annotations

from collections import Counter

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from monitoring.models import CallLog

from ..bulk import insert_rows, update_rows
from ..choices import ConflictStatus, DeadLetterStatus, PendingAction, ResolutionStatus, SyncStatus
from ..models import Conflict, DeadLetter, RecordEvent, Resolution, SyncRecord, SyncRun
from .batch import Result
from .locks import LockLost, RunLock

_RECORD_FIELDS = [
    "moodle_id", "sync_status", "external_hash", "synced_at", "error_category", "error_message",
    "attempts", "pending_action", "suspended_by_hub", "last_run",
]  # fmt: skip
_OPEN_DEAD_LETTER = [DeadLetterStatus.OPEN, DeadLetterStatus.RETRYING]

# How each successful action counts on the run.
_ACTION_COUNTER = {
    "create": "created",
    "update": "updated",
    "link": "updated",
    "suspend": "suspended",
    "not_created": "skipped",  # new, but already gone from the source's point of view
}


def tally(results: dict[str, Result]) -> Counter:
    """The run counters these results add (also used by the dry run, which commits nothing)."""
    counts: Counter = Counter()
    for result in results.values():
        if result.status == SyncStatus.OK:
            counts[_ACTION_COUNTER.get(result.action, "unchanged")] += 1
        elif result.status == SyncStatus.CONFLICT:
            counts["conflicts"] += 1
        else:
            counts["errors"] += 1
            if result.dead_letter:
                counts["dead_lettered"] += 1
    return counts


def _apply(record: SyncRecord, result: Result, run: SyncRun, now) -> None:
    record.last_run = run
    record.attempts += 1
    if result.moodle_id:
        record.moodle_id = result.moodle_id
    if result.status == SyncStatus.OK:
        record.sync_status = SyncStatus.OK
        record.synced_at = now
        record.error_category = ""
        record.error_message = ""
        if record.pending_action == PendingAction.SUSPEND:
            record.suspended_by_hub = True
        else:
            record.external_hash = record.payload_hash
            record.suspended_by_hub = False
        record.pending_action = PendingAction.UPSERT
    else:
        record.sync_status = result.status
        record.error_category = result.category or (
            "conflict" if result.status == SyncStatus.CONFLICT else ""
        )
        record.error_message = result.message


def fence(run: SyncRun, lock: RunLock | None) -> None:
    """Raise LockLost unless this worker may still write for the run: it owns the site's lock and its claim
    on the run stands. Call inside the transaction that writes (the run's row stays locked until it ends)."""
    if lock is not None:
        lock.ensure_owned()
    if not run.still_claimed():
        raise LockLost(f"run #{run.pk} was handed to another worker (its heartbeat had stopped)")


def commit_batch(
    run: SyncRun, records: list[SyncRecord], results: dict[str, Result], lock: RunLock | None
) -> Counter:
    """Write the batch's outcome; records without a result stay pending for the next batch or run."""
    now = timezone.now()
    by_id = {r.external_id: r for r in records}
    touched = []
    events = []
    for external_id, result in results.items():
        record = by_id[external_id]
        _apply(record, result, run, now)
        touched.append(record)
        events.append(
            RecordEvent(
                record=record,
                run=run,
                at=now,
                action=result.action,
                outcome="dead_letter"
                if result.dead_letter
                else (result.status if result.status != "ok" else "ok"),
                function=result.function,
                message=result.message,
            )
        )
    counts = tally(results)
    ok_records = [r for r in touched if r.sync_status == SyncStatus.OK]
    with transaction.atomic():
        fence(run, lock)
        update_rows(SyncRecord, touched, _RECORD_FIELDS)
        insert_rows(RecordEvent, events)
        _save_conflicts(run, by_id, results, now)
        _save_dead_letters(run, by_id, results, now)
        if ok_records:
            DeadLetter.objects.filter(record__in=ok_records, status__in=_OPEN_DEAD_LETTER).update(
                status=DeadLetterStatus.RESOLVED, closed_at=now
            )
            closed = Conflict.objects.filter(record__in=ok_records, status=ConflictStatus.OPEN)
            Resolution.objects.filter(conflict__in=closed, status=ResolutionStatus.PROPOSED).update(
                status=ResolutionStatus.REJECTED, note="superseded: the record synced without it"
            )
            closed.update(status=ConflictStatus.RESOLVED, resolved_at=now)
        # A retried record that failed another way (a conflict, bad data) leaves its dead letter open again.
        failed_plainly = [
            r for r in touched if r.sync_status != SyncStatus.OK and not results[r.external_id].dead_letter
        ]
        DeadLetter.objects.filter(record__in=failed_plainly, status=DeadLetterStatus.RETRYING).update(
            status=DeadLetterStatus.OPEN
        )
        SyncRun.objects.filter(pk=run.pk).update(
            progress_done=F("progress_done") + len(results),
            last_progress_at=now,
            calls=CallLog.objects.filter(run=run).count(),
            **{name: F(name) + value for name, value in counts.items()},
        )
    return counts


def _save_conflicts(run: SyncRun, by_id: dict[str, SyncRecord], results: dict[str, Result], now) -> None:
    for external_id, result in results.items():
        if result.status != SyncStatus.CONFLICT:
            continue
        record = by_id[external_id]
        values = {
            "site_id": record.site_id,
            "run": run,
            "our_payload": record.payload,
            "their_users": result.their_users or [],
            "message": result.message,
        }
        Conflict.objects.update_or_create(
            record=record,
            kind=result.conflict_kind,
            status=ConflictStatus.OPEN,
            defaults=values,
            create_defaults={**values, "created_at": now},
        )


def _save_dead_letters(run: SyncRun, by_id: dict[str, SyncRecord], results: dict[str, Result], now) -> None:
    for external_id, result in results.items():
        letter = result.dead_letter
        if not letter:
            continue
        record = by_id[external_id]
        updated = DeadLetter.objects.filter(record=record, status__in=_OPEN_DEAD_LETTER).update(
            attempts=F("attempts") + 1,
            last_failed_at=now,
            status=DeadLetterStatus.OPEN,
            run=run,
            **{k: v for k, v in letter.items() if k != "http_status"},
            http_status=letter["http_status"],
        )
        if not updated:
            DeadLetter.objects.create(
                site_id=record.site_id,
                record=record,
                run=run,
                first_failed_at=now,
                last_failed_at=now,
                **letter,
            )
