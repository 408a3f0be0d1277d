"""Staging memberships while the source is read: each person's courses and cohorts against what the hub
last made Moodle hold, so a run sends only the difference.

A person whose membership hash did not change costs nothing here. For the others, every course or cohort
the source names becomes (or updates) a Membership row, and every one it no longer names is marked as
left: a course enrolment is then suspended (never unenrolled by a run: that deletes grades), a cohort
membership removed. Rows that need a call are pending; sync/run/memberships.py sends them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from django.db import transaction

from ..bulk import update_rows
from ..choices import DiscrepancyStatus, MembershipKind, MembershipState, MembershipStatus
from ..mapping import MappedRecord
from ..membership_rules import Desired
from ..models import Discrepancy, Membership, MembershipTarget, MoodleSite, SyncRecord, SyncRun

EXAMPLES = 5
_ROW_FIELDS = [
    "role", "timestart", "timeend", "desired", "status", "error_message", "last_run",
]  # fmt: skip


@dataclass
class MembershipCounts:
    """What staging found to send; the dry run shows it, the run's timeline names it."""

    enrol: int = 0
    suspend: int = 0
    add: int = 0
    remove: int = 0
    problems: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def example(self, kind: str, text: str) -> None:
        bucket = self.examples.setdefault(kind, [])
        if len(bucket) < EXAMPLES:
            bucket.append(text)

    @property
    def changes(self) -> int:
        return self.enrol + self.suspend + self.add + self.remove

    def as_plan(self) -> dict:
        return {
            "would_enrol": self.enrol,
            "would_suspend_enrolments": self.suspend,
            "would_add_to_cohorts": self.add,
            "would_remove_from_cohorts": self.remove,
            "membership_problems": self.problems,
        }


def membership_discrepancy(
    run: SyncRun, row: Membership, kind: str, action: str, status: str, what: str
) -> Discrepancy:
    """A difference about one person's place in one course or cohort, with the change it proposes."""
    record, target = row.record, row.target
    return Discrepancy(
        site=run.site,
        run=run,
        record=record,
        membership=row,
        kind=kind,
        status=status,
        external_id=record.external_id,
        moodle_user_id=record.moodle_id,
        summary=f"{record.external_id} ({record.username}) {what}"[:500],
        source_values={"target": target.key, "kind": target.kind, "desired": row.desired, "role": row.role},
        moodle_values={"id": target.moodle_id},
        proposed_action=action,
        needs_approval=status != DiscrepancyStatus.AUTO,
    )


def needs_staging(record: SyncRecord | None, mapped: MappedRecord) -> bool:
    return bool(mapped.membership_hash) and (
        record is None or record.membership_hash != mapped.membership_hash
    )


def settle(row: Membership, problem: str = "") -> None:
    """The row's status from its desired and synced states (a change the guard held stays held)."""
    if problem:
        row.status, row.error_message = MembershipStatus.ERROR, problem[:2000]
        return
    row.error_message = ""
    if row.in_step:
        row.status = MembershipStatus.OK
    elif row.status != MembershipStatus.HELD:
        row.status = MembershipStatus.PENDING


def left(row: Membership) -> None:
    """The source no longer puts the person there."""
    row.desired = (
        MembershipState.SUSPENDED if row.target.kind == MembershipKind.COURSE else MembershipState.REMOVED
    )
    settle(row)


def count_change(row: Membership, counts: MembershipCounts, who: str) -> None:
    if row.status == MembershipStatus.ERROR:
        counts.problems += 1
        counts.example("membership_problems", row.error_message)
        return
    if row.status != MembershipStatus.PENDING:
        return
    course = row.target.kind == MembershipKind.COURSE
    if row.desired == MembershipState.ACTIVE:
        kind = "enrol" if course else "add"
        text = f"{who}: {'enrol in' if course else 'add to'} {row.target.key}" + (
            f" as {row.role}" if course else ""
        )
    else:
        kind = "suspend" if course else "remove"
        text = f"{who}: {'suspend the enrolment in' if course else 'remove from'} {row.target.key}"
    setattr(counts, kind, getattr(counts, kind) + 1)
    counts.example(f"membership_{kind}", text)


def targets_for(site: MoodleSite, wanted: set[tuple[str, str, str, str]], *, persist: bool) -> dict:
    """The site's MembershipTarget for each (kind, key), made when new (unsaved in a dry run)."""
    keys = {(kind, key) for kind, key, _, _ in wanted}
    found = {
        (t.kind, t.key): t
        for t in MembershipTarget.objects.filter(site=site, key__in={key for _, key in keys})
        if (t.kind, t.key) in keys
    }
    missing = [
        MembershipTarget(site=site, kind=kind, key=key, match=match, name=name)
        for kind, key, match, name in sorted(wanted)
        if (kind, key) not in found
    ]
    if missing and persist:
        MembershipTarget.objects.bulk_create(missing, ignore_conflicts=True)
        return {
            (t.kind, t.key): t
            for t in MembershipTarget.objects.filter(site=site, key__in={key for _, key in keys})
            if (t.kind, t.key) in keys
        }
    return {**found, **{(t.kind, t.key): t for t in missing}}


def stage(
    site: MoodleSite, run: SyncRun, items: dict[str, MappedRecord], *, persist: bool = True
) -> MembershipCounts:
    """Diff the memberships of these people (their hash changed) against their rows; write the rows and
    the new hashes unless `persist` is False (dry run)."""
    counts = MembershipCounts()
    if not items:
        return counts
    records = {
        r.external_id: r
        for r in SyncRecord.objects.filter(site=site, external_id__in=list(items)).only(
            "pk", "external_id", "moodle_id", "membership_hash"
        )
    }
    wanted = {(d.kind, d.key, d.match, d.name) for m in items.values() for d in m.memberships}
    targets = targets_for(site, wanted, persist=persist)
    existing: dict[int, dict[int, Membership]] = defaultdict(dict)
    for row in Membership.objects.filter(record__in=[r.pk for r in records.values()]).select_related(
        "target"
    ):
        existing[row.record_id][row.target_id] = row
    new, changed, hashed = [], [], []
    was_held = {
        row.pk for rows in existing.values() for row in rows.values() if row.status == MembershipStatus.HELD
    }
    for external_id, mapped in items.items():
        record = records.get(external_id)
        rows = existing.get(record.pk, {}) if record is not None else {}
        named: set[int] = set()
        for desired in mapped.memberships:
            target = targets[(desired.kind, desired.key)]
            row = rows.get(target.pk) if target.pk else None
            if row is None:
                # A person new in a dry run has no record yet: their rows are counted, never saved.
                row = Membership(site=site, record=record, target=target, status=MembershipStatus.PENDING)
                if record is not None:
                    new.append(row)
            elif row not in changed:
                changed.append(row)
            _want(row, desired, run)
            named.add(target.pk)
            count_change(row, counts, f"record {external_id}")
        for target_id, row in rows.items():
            if target_id not in named and row.desired == MembershipState.ACTIVE:
                left(row)
                row.last_run = run
                changed.append(row)
                count_change(row, counts, f"record {external_id}")
        if record is not None:
            record.membership_hash = mapped.membership_hash
            hashed.append(record)
    if persist:
        released = [row.pk for row in changed if row.pk in was_held and row.status != MembershipStatus.HELD]
        with transaction.atomic():
            Membership.objects.bulk_create(new, batch_size=2000)
            update_rows(Membership, changed, _ROW_FIELDS)
            update_rows(SyncRecord, hashed, ["membership_hash"])
            # A held-back removal the source took back is no longer anyone's decision.
            Discrepancy.objects.filter(
                membership_id__in=released, status__in=DiscrepancyStatus.waiting()
            ).update(status=DiscrepancyStatus.SUPERSEDED)
    return counts


def _want(row: Membership, desired: Desired, run: SyncRun) -> None:
    if row.status == MembershipStatus.HELD and desired.state != row.desired:
        row.status = MembershipStatus.PENDING  # the source took it back: the held removal is moot
    # (the same removal the guard held back stays held: it waits for an admin, not for this run)
    row.role, row.timestart, row.timeend, row.desired = (
        desired.role,
        desired.timestart,
        desired.timeend,
        desired.state,
    )
    row.last_run = run
    settle(row, desired.problem)


def leave_all(site: MoodleSite, run: SyncRun, record_ids: list[int]) -> None:
    """People who left the source and are suspended: their enrolments are suspended too (cohorts are kept:
    removing someone from a cohort can unenrol them through cohort sync, which deletes grades)."""
    rows = list(
        Membership.objects.filter(
            site=site,
            record_id__in=record_ids,
            target__kind=MembershipKind.COURSE,
            desired=MembershipState.ACTIVE,
        ).select_related("target")
    )
    for row in rows:
        left(row)
        row.last_run = run
    update_rows(Membership, rows, _ROW_FIELDS)
