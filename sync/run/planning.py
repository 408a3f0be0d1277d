"""The first half of a run: read the whole source once and decide who needs a write.

Each source person is mapped to the Moodle payload it should have, and its hash compared with the hash of
what was last synced. People who need a write are stored as pending, with their payload, so the second
half (sync/batch.py) works from the database: a crash, a pause or an aborted run leaves them pending and
the next run simply continues. Nothing here calls Moodle.

The source is streamed in chunks; memory holds one chunk plus the set of external ids seen (needed to
find the people who left the source).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.db import transaction
from django.urls import reverse

from .. import guard
from ..bulk import insert_rows, update_rows
from ..choices import (
    DiscrepancyKind,
    DiscrepancyStatus,
    ErrorCategory,
    PendingAction,
    RemovedPolicy,
    ResolutionAction,
    SyncStatus,
)
from ..mapping import MappedRecord, Mapping, RecordProblem
from ..models import Discrepancy, MoodleSite, RunEvent, SyncRecord, SyncRun
from ..sources.base import SourceRecord
from . import membership_staging
from .membership_staging import MembershipCounts

CHUNK = 1000
EXAMPLES = 5
# How often planning reports its progress and hears a pause or cancel: every this many source rows, or after
# this long, whichever comes first: a cancel is heard within about a second however big the file, and the
# run's row is written at most once a second, or once per PULSE_ROWS rows when the planner is faster.
PULSE_ROWS = 5000
PULSE_S = 1.0
STAGED_FIELDS = [
    "payload", "payload_hash", "create_only", "username", "email", "display_name", "origin",
    "sync_status", "error_category", "error_message", "pending_action", "last_run",
]  # fmt: skip


@dataclass
class PlanCounts:
    """What reading the source found; the dry run prints it, a real run copies it to its counters."""

    seen: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: int = 0
    invalid: int = 0
    removed: int = 0
    removal_blocked: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def example(self, kind: str, text: str) -> None:
        bucket = self.examples.setdefault(kind, [])
        if len(bucket) < EXAMPLES:
            bucket.append(text)


def expected_rows(source) -> int:
    """About how many rows the source holds, where that is cheap to know: a CSV file's lines less its header
    (a quoted field over several lines counts twice; the run page says "about"). 0 when unknown: an HTTP or
    SQL source, or a path that is not a regular file."""
    path = getattr(source, "path", None)
    try:
        if path is None or not path.is_file():
            return 0
        lines, last = 0, b"\n"
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
    except OSError:
        return 0
    return max(0, lines - (last == b"\n"))


def chunked(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def mark_pending(record: SyncRecord, mapped: MappedRecord, run: SyncRun) -> None:
    """Store what the person should look like in Moodle and queue them for the batch loop."""
    payload = {**mapped.payload, **record.overrides}
    record.payload = payload
    record.payload_hash = mapped.hash
    record.create_only = sorted(mapped.create_only)
    record.username = payload.get("username", "")
    record.email = payload.get("email", "")
    record.display_name = f"{payload.get('firstname', '')} {payload.get('lastname', '')}".strip()
    record.origin = mapped.origin[:100]
    record.sync_status = SyncStatus.PENDING
    record.error_category = ""
    record.error_message = ""
    record.pending_action = PendingAction.UPSERT
    record.last_run = run


def _label(record: SyncRecord | SourceRecord) -> str:
    return f"record {record.external_id or '(no id)'}" + (f" ({record.origin})" if record.origin else "")


def map_record(mapping: Mapping, source_record: SourceRecord, seen: set[str]) -> MappedRecord | RecordProblem:
    """A source row as a run maps it: refused when its external id was already seen in this read of the
    source (only the first row of an id is used), else through the mapping. Adds the id to `seen`."""
    external_id = source_record.external_id
    if external_id and external_id in seen:
        return RecordProblem(
            external_id,
            source_record.origin,
            "external id",
            f"{_label(source_record)}: the external id {external_id} appears more than once in the "
            "source; only its first row is used",
        )
    if external_id:
        seen.add(external_id)
    return mapping.apply(source_record)


class Planner:
    """Stages one site's source for one run. With `persist=False` (dry run) nothing is written and the
    pending records of each chunk are handed to the caller instead."""

    def __init__(
        self,
        run: SyncRun,
        mapping: Mapping,
        *,
        bootstrap: bool,
        persist: bool = True,
        pulse: Callable[[Planner], None] | None = None,
    ) -> None:
        self.run = run
        self.site: MoodleSite = run.site
        self.mapping = mapping
        self.bootstrap = bootstrap
        self.persist = persist
        self.counts = PlanCounts()
        self.memberships = MembershipCounts()
        # Every course and cohort the source names, as (kind, key, match, name): a dry run checks them.
        self.targets: set[tuple[str, str, str, str]] = set()
        self.seen: set[str] = set()
        self.duplicates: set[str] = set()
        # Called as rows are read (see PULSE_ROWS): the run records its progress and raises RunStopped for
        # a pause, a cancel or a spent time budget, which ends the reading mid-chunk.
        self.pulse = pulse
        self.read = 0  # source rows read so far (counts.seen lags by up to a chunk)
        self._pulse_at = (0, time.monotonic())

    def stage(self, records: Iterable[SourceRecord]) -> Iterator[list[SyncRecord]]:
        """Yield, chunk by chunk, the records that need a write (saved as pending when persisting)."""
        for chunk in chunked(self._reading(records), CHUNK):
            yield self._stage_chunk(chunk)
            self.beat()

    def _reading(self, records: Iterable[SourceRecord]) -> Iterator[SourceRecord]:
        iterator = iter(records)
        try:
            for record in iterator:
                self.read += 1
                self.beat()
                yield record
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # a stopped run lets go of the file (or the connection) at once

    def beat(self, *, force: bool = False) -> None:
        """Call the pulse if PULSE_ROWS rows or PULSE_S seconds passed since the last one (or if forced)."""
        if self.pulse is None:
            return
        rows, at = self._pulse_at
        now = time.monotonic()
        if force or self.read - rows >= PULSE_ROWS or now - at >= PULSE_S:
            self._pulse_at = (self.read, now)
            self.pulse(self)

    def _stage_chunk(self, chunk: list[SourceRecord]) -> list[SyncRecord]:
        outcomes: list[tuple[SourceRecord, MappedRecord | RecordProblem]] = []
        for source_record in chunk:
            self.counts.seen += 1
            outcomes.append((source_record, self._map(source_record)))
        ids = [r.external_id for r, _ in outcomes if r.external_id]
        existing = {r.external_id: r for r in SyncRecord.objects.filter(site=self.site, external_id__in=ids)}
        new, changed, events = [], [], []
        memberships: dict[str, MappedRecord] = {}
        for source_record, result in outcomes:
            record = existing.get(source_record.external_id)
            if isinstance(result, MappedRecord) and not self.persist:
                self.targets.update((d.kind, d.key, d.match, d.name) for d in result.memberships)
            if isinstance(result, MappedRecord) and membership_staging.needs_staging(record, result):
                memberships[result.external_id] = result
            if isinstance(result, RecordProblem):
                self.counts.invalid += 1
                self.counts.example("invalid", result.message)
                if not source_record.external_id or source_record.external_id in self.duplicates:
                    events.append(RunEvent(run=self.run, level=RunEvent.Level.ERROR, message=result.message))
                    continue
                record = record or SyncRecord(site=self.site, external_id=source_record.external_id)
                self._mark_invalid(record, source_record, result)
            elif record is not None and not self._needs_write(record, result):
                continue
            else:
                record = record or SyncRecord(site=self.site, external_id=result.external_id)
                mark_pending(record, result, self.run)
                self.counts.changed += 1
            (changed if record.pk else new).append(record)
        if self.persist:
            with transaction.atomic():
                insert_rows(SyncRecord, new)
                update_rows(SyncRecord, changed, STAGED_FIELDS)
                RunEvent.objects.bulk_create(events)
        self._merge(membership_staging.stage(self.site, self.run, memberships, persist=self.persist))
        return [r for r in new + changed if r.sync_status == SyncStatus.PENDING]

    def _merge(self, counts: MembershipCounts) -> None:
        for name in ("enrol", "suspend", "add", "remove", "problems"):
            setattr(self.memberships, name, getattr(self.memberships, name) + getattr(counts, name))
        for kind, texts in counts.examples.items():
            for text in texts:
                self.memberships.example(kind, text)

    def _map(self, source_record: SourceRecord) -> MappedRecord | RecordProblem:
        if source_record.external_id in self.seen:
            self.duplicates.add(source_record.external_id)
        return map_record(self.mapping, source_record, self.seen)

    def _needs_write(self, record: SyncRecord, mapped: MappedRecord) -> bool:
        """Incremental runs send only new or changed people; bootstrap sends everyone but conflicts."""
        if record.sync_status == SyncStatus.PENDING or record.suspended_by_hub:
            return True  # left pending by an earlier run, or back in the source after a suspension
        same_payload = record.payload_hash == mapped.hash
        if record.sync_status == SyncStatus.CONFLICT and same_payload:
            self.counts.skipped += 1  # never retried automatically; an admin resolves it
            return False
        if self.bootstrap:
            return True
        if record.sync_status == SyncStatus.OK and record.external_hash == mapped.hash:
            self.counts.unchanged += 1
            return False
        if record.sync_status == SyncStatus.ERROR and same_payload:
            self.counts.skipped += 1  # the same data would fail the same way; dead letters retry on request
            return False
        return True

    def _mark_invalid(self, record: SyncRecord, source_record: SourceRecord, problem: RecordProblem) -> None:
        record.origin = source_record.origin[:100]
        record.sync_status = SyncStatus.ERROR
        record.error_category = ErrorCategory.VALIDATION
        record.error_message = problem.message
        record.payload_hash = ""
        record.last_run = self.run
        record.pending_action = PendingAction.UPSERT
        fields = source_record.fields
        record.username = record.username or str(fields.get("username", ""))[:100]
        record.email = record.email or str(fields.get("email", ""))[:254]

    def stage_removals(self, policy: str) -> list[SyncRecord]:
        """People synced before who are no longer in the source. Suspended only when the policy says so and
        the number stays under the site's blast-radius limit; a source that lost half its rows must not
        suspend half the site. Held-back suspensions wait for an admin as "left the source" discrepancies."""
        if policy != RemovedPolicy.SUSPEND:
            return []
        gone = [
            pk
            for pk, external_id in SyncRecord.objects.filter(
                site=self.site, moodle_id__isnull=False, suspended_by_hub=False, sync_status=SyncStatus.OK
            )
            .values_list("pk", "external_id")
            .iterator(chunk_size=5000)
            if external_id not in self.seen
        ]
        verdict = guard.measure(self.site, len(gone))
        if not verdict.allowed:
            self._hold_back(gone, verdict)
            return []
        if self.persist:
            # Whoever was held back before is either suspended now or back in the source.
            waiting_left_source(self.site).update(status=DiscrepancyStatus.SUPERSEDED)
        if not gone:
            return []
        self.counts.removed = len(gone)
        records = list(SyncRecord.objects.filter(pk__in=gone))
        for record in records:
            record.sync_status = SyncStatus.PENDING
            record.pending_action = PendingAction.SUSPEND
            record.last_run = self.run
            self.counts.example("suspend", f"{_label(record)} ({record.username}) left the source")
        if self.persist:
            update_rows(SyncRecord, records, ["sync_status", "pending_action", "last_run"])
            membership_staging.leave_all(self.site, self.run, gone)
        return records

    def _hold_back(self, gone: list[int], verdict: guard.BlastRadius) -> None:
        """Suspend nobody; name the first people and leave one decision per person for an admin."""
        self.counts.removal_blocked = len(gone)
        first = SyncRecord.objects.filter(pk__in=gone).order_by("external_id")[:EXAMPLES]
        who = "; ".join(f"{r.external_id} ({r.display_name or r.username})" for r in first)
        message = (
            f"The blast-radius guard held back suspensions: {len(gone):,} people left the source, and "
            f"suspending them {verdict.sentence()}. Nobody was suspended. First of them: {who}. "
            "Check the source (a truncated export?); if they really left, an admin approves it."
        )
        self.counts.example("removal_blocked", message)
        if not self.persist:
            return
        held = waiting_left_source(self.site)
        held.exclude(record_id__in=gone).update(status=DiscrepancyStatus.SUPERSEDED)
        already = set(held.values_list("record_id", flat=True))
        held.update(run=self.run)
        new = [
            Discrepancy(
                site=self.site,
                run=self.run,
                record=record,
                kind=DiscrepancyKind.LEFT_SOURCE,
                status=DiscrepancyStatus.BLOCKED,
                external_id=record.external_id,
                moodle_user_id=record.moodle_id,
                summary=f"{record.external_id} ({record.username}) left the source; suspending them was "
                "held back by the blast-radius guard"[:500],
                source_values={},
                moodle_values={"id": record.moodle_id, "username": record.username, "email": record.email},
                proposed_action=ResolutionAction.SUSPEND,
                needs_approval=True,
            )
            for record in SyncRecord.objects.filter(pk__in=gone).exclude(pk__in=already).iterator(2000)
        ]
        Discrepancy.objects.bulk_create(new, batch_size=1000)
        RunEvent.objects.create(
            run=self.run,
            level=RunEvent.Level.ERROR,
            message=message,
            link=reverse("sync:discrepancy_list")
            + "?"
            + urlencode({"site": self.site.slug, "kind": DiscrepancyKind.LEFT_SOURCE, "run": self.run.pk}),
            link_label=f"Decide on the {len(gone):,} held-back suspensions",
        )


def waiting_left_source(site: MoodleSite):
    """The suspensions of people who left the source that the guard held back and nobody decided yet."""
    return Discrepancy.objects.filter(
        site=site, kind=DiscrepancyKind.LEFT_SOURCE, status__in=DiscrepancyStatus.waiting()
    )
