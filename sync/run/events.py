"""A run of kind event: what the webhooks accepted (sync/hooks.py), sent through the same engine as any run.

The run takes every accepted event of its site that no run has taken yet, in the order received:
- from the source: the people they name, coalesced (the last event about a person wins), read by the
  planner as a source of those people only (nobody is taken to have left), then sent like any sync —
  look-ups, conflicts, isolation, the throttle and breaker, memberships;
- from Moodle's plugin: `user_updated` and `user_deleted` re-check that person against what the hub holds
  from the source now (drift, or an identity discrepancy for a deleted user), handled by the site's policy
  like the nightly reconciliation's findings; enrolment events are compared with the person's memberships
  in that course; `course_completed` is kept as a Completion for the HR side.
Events a run took but did not finish (it stopped) are handed back for the next event run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import transaction
from django.utils import timezone

from ..choices import DiscrepancyStatus, EventStatus, HookDirection, MembershipKind
from ..hooks import source_id_field
from ..mapping import MappedRecord
from ..models import Completion, Discrepancy, InboundEvent, MembershipTarget, SyncRecord, SyncRun
from ..moodle.client import MoodleClient
from ..sources.base import SourceRecord, scalar_to_str
from ..words import counted
from .context import RunContext
from .membership_reconcile import MembershipReconciler, Seat
from .reconcile import Reconciler

USER_EVENTS = ("user_updated", "user_deleted")
ENROLMENT_EVENTS = ("user_enrolment_created", "user_enrolment_updated", "user_enrolment_deleted")


def claim(run: SyncRun) -> list[InboundEvent]:
    """The site's accepted events no run has taken, now this run's (in the order received)."""
    with transaction.atomic():
        ids = list(
            InboundEvent.objects.select_for_update(skip_locked=True)
            .filter(site=run.site, status=EventStatus.ACCEPTED, run__isnull=True)
            .order_by("received_at", "pk")
            .values_list("pk", flat=True)
        )
        InboundEvent.objects.filter(pk__in=ids).update(run=run)
    return list(InboundEvent.objects.filter(pk__in=ids).order_by("received_at", "pk"))


def hand_back(run: SyncRun) -> None:
    """Events a stopped run took but did not apply wait for the next event run."""
    InboundEvent.objects.filter(run=run, status=EventStatus.ACCEPTED).update(run=None)


@dataclass
class EventSource:
    """The people the source's events name, the last event about each winning: a source for the planner."""

    events: list[InboundEvent]
    id_field: str

    def records(self) -> Iterator[SourceRecord]:
        people: dict[str, SourceRecord] = {}
        for event in self.events:
            for n, person in enumerate(event.body.get("people", []), start=1):
                fields = {str(k): scalar_to_str(v) for k, v in person.items()}
                external_id = fields.get(self.id_field, "").strip()
                people.pop(external_id, None)  # re-inserted: people keep the order of their last event
                people[external_id] = SourceRecord(external_id, fields, f"event #{event.pk}, person {n}")
        yield from people.values()

    def describe(self) -> str:
        return f"{len(self.events)} source events"


class EventPhase:
    def __init__(self, executor, client: MoodleClient) -> None:
        self.executor = executor
        self.ctx: RunContext = executor
        self.client = client
        self.run: SyncRun = executor.run
        self.site = executor.site
        self.outcomes: dict[int, str] = {}  # event pk -> what applying it did

    def work(self) -> None:
        events = claim(self.run)
        if not events:
            self.ctx.event("No event was waiting: an earlier event run took them.")
            return
        from_source = [e for e in events if e.direction == HookDirection.SOURCE]
        from_moodle = [e for e in events if e.direction == HookDirection.MOODLE]
        people = len({p for e in from_source for p in self._ids(e)})
        self.ctx.event(
            f"Took {counted(len(events), 'event')}: {len(from_source)} from the source "
            f"({counted(people, 'person', 'people')} once coalesced), {len(from_moodle)} from Moodle."
        )
        if from_source:
            self.executor.plan_from(EventSource(from_source, source_id_field(self.site)))
            self.executor.work(self.client)
            self.executor.send_memberships(self.client)
        if from_moodle:
            self._from_moodle(from_moodle)
        self._applied(events)

    def _ids(self, event: InboundEvent) -> set[str]:
        field = source_id_field(self.site)
        return {str(p.get(field, "")).strip() for p in event.body.get("people", [])}

    # -- Moodle's own changes -------------------------------------------------------------------------

    def _from_moodle(self, events: list[InboundEvent]) -> None:
        user_ids = {int(e.body["user"]["id"]) for e in events}
        records = {r.moodle_id: r for r in SyncRecord.objects.filter(site=self.site, moodle_id__in=user_ids)}
        recheck = {
            int(e.body["user"]["id"])
            for e in events
            if e.kind in USER_EVENTS and int(e.body["user"]["id"]) in records
        }
        if recheck:
            self._recheck_users([records[uid] for uid in sorted(recheck)])
        deleted = {int(e.body["user"]["id"]) for e in events if e.kind == "user_deleted"}
        enrolments = [
            e for e in events if e.kind in ENROLMENT_EVENTS and int(e.body["user"]["id"]) not in deleted
        ]
        self._enrolments(enrolments, records)
        for event in events:
            uid = int(event.body["user"]["id"])
            record = records.get(uid)
            if event.kind in ENROLMENT_EVENTS and uid in deleted:
                # Moodle unenrols a user it deletes: part of the deletion, already a discrepancy.
                self.outcomes[event.pk] = "part of the user's deletion in Moodle"
            elif event.kind in USER_EVENTS:
                self.outcomes[event.pk] = (
                    "re-checked against the source"
                    if record
                    else "not a user the hub links: nothing to check"
                )
            elif event.kind == "course_completed":
                self.outcomes[event.pk] = self._completion(event, record)

    def _recheck_users(self, records: list[SyncRecord]) -> None:
        """Compare these people, as the hub last had them from the source, with Moodle now."""
        Discrepancy.objects.filter(
            record__in=records, membership__isnull=True, status__in=DiscrepancyStatus.waiting()
        ).update(status=DiscrepancyStatus.SUPERSEDED)
        reconciler = Reconciler(self.ctx, self.client, None)
        reconciler.compare_people([MappedRecord.staged(r) for r in records if r.payload])
        reconciler.apply_automatic()

    def _enrolments(self, events: list[InboundEvent], records: dict[int, SyncRecord]) -> None:
        """Enrolment events, course by course: each person's enrolment as the last event about it reports,
        compared with their membership there (one comparison per course, however many events: the hub's
        own enrolments come back as events too)."""
        by_course: dict[int, dict[int, InboundEvent]] = {}
        for event in events:
            course_id = int((event.body.get("course") or {}).get("id") or 0)
            by_course.setdefault(course_id, {})[int(event.body["user"]["id"])] = event
        targets = {
            t.moodle_id: t
            for t in MembershipTarget.objects.filter(
                site=self.site, kind=MembershipKind.COURSE, moodle_id__in=list(by_course)
            )
        }
        role_ids = {str(k): int(v) for k, v in (self.site.role_ids or {}).items()}
        reconciler = MembershipReconciler(self.ctx, self.client, cohort_category=None)
        for course_id, latest in by_course.items():
            target = targets.get(course_id)
            linked = {uid: records[uid].pk for uid in latest if uid in records}
            seats = {}
            for uid, event in latest.items():
                enrolment = event.body.get("enrolment")
                if uid in linked and enrolment:
                    roles = frozenset(role_ids[r] for r in enrolment.get("roles", []) if r in role_ids)
                    seats[uid] = Seat(roles, int(enrolment.get("status", 0)) == 0)
            if target is not None and linked:
                reconciler.compare(target, seats, linked, only=set(linked))
            course = next(iter(latest.values())).body.get("course") or {}
            for event in events:
                if int((event.body.get("course") or {}).get("id") or 0) != course_id:
                    continue
                uid = int(event.body["user"]["id"])
                self.outcomes[event.pk] = (
                    f"course {course.get('shortname') or course_id} is not one the hub manages"
                    if target is None
                    else f"compared with the source's memberships in {target.label}"
                    if uid in linked
                    else "not a user the hub links: not the hub's to check"
                )
        if reconciler.automatic:
            reconciler.apply_automatic()

    def _completion(self, event: InboundEvent, record: SyncRecord | None) -> str:
        body = event.body
        course = body.get("course") or {}
        done = (body.get("completion") or {}).get("timecompleted") or body.get("time")
        user = body["user"]
        Completion.objects.update_or_create(
            site=self.site,
            moodle_user_id=int(user["id"]),
            course_id=int(course.get("id") or 0),
            defaults={
                "record": record,
                "external_id": record.external_id if record else str(user.get("idnumber") or ""),
                "username": str(user.get("username") or "")[:100],
                "course_shortname": str(course.get("shortname") or "")[:255],
                "course_idnumber": str(course.get("idnumber") or "")[:100],
                "completed_at": datetime.fromtimestamp(int(done), tz=UTC),
                "event": event,
            },
        )
        return f"completion of {course.get('shortname') or course.get('id')} kept"

    # -- the end ----------------------------------------------------------------------------------------

    def _applied(self, events: list[InboundEvent]) -> None:
        now = timezone.now()
        for event in events:
            InboundEvent.objects.filter(pk=event.pk).update(
                status=EventStatus.APPLIED,
                applied_at=now,
                reason=self.outcomes.get(event.pk, f"its people were planned and sent by run #{self.run.pk}")[
                    :500
                ],
            )
