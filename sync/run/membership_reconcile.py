"""Nightly reconciliation of memberships: each course and cohort the hub manages, read back from Moodle and
compared with what the source wants for the people the hub links.

A course is read twice with `core_enrol_get_enrolled_users`, in pages (`limitfrom` and `limitnumber`;
Moodle ignores `limitnum`): everyone enrolled with their roles, then only the active ones; the difference
is the suspended enrolments. A cohort is read with `core_cohort_get_cohort_members`, which has no paging:
one cohort per call, every member in one answer (a very large cohort is a large answer).

The differences become discrepancies like the users' ones: missing (enrol or add), wrong role (enrol with
the role), suspended mismatch (re-activate, or suspend), extra (suspend the enrolment, or remove from the
cohort). People Moodle has in a course whom the hub does not link (teachers enrolled by hand) are not the
hub's: they are counted, never touched. Safe kinds the site applies automatically are sent by the
membership phase in the same run; removals wait for an admin, and past the guard they are blocked.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from django.utils import timezone

from monitoring.alerts import raise_alert
from monitoring.kinds import AlertKind, blast_radius_key

from .. import guard
from ..bulk import update_rows
from ..choices import (
    DiscrepancyKind,
    DiscrepancyStatus,
    LeavePolicy,
    MembershipKind,
    MembershipState,
    MembershipStatus,
    ResolutionAction,
)
from ..models import Discrepancy, Membership, MembershipTarget, Resolution, RunEvent, SyncRecord, SyncRun
from ..moodle.client import MoodleClient
from ..words import counted
from .context import RunContext
from .membership_staging import membership_discrepancy, settle
from .membership_targets import TargetResolver
from .memberships import MembershipPhase
from .reconcile import applied_by_policy

PAGE = 1000  # enrolled users per core_enrol_get_enrolled_users call
_ROW_FIELDS = ["desired", "synced", "synced_role", "synced_times", "status", "error_message", "last_run"]


@dataclass(frozen=True)
class Seat:
    """One person's place in a course or cohort as Moodle has it."""

    roles: frozenset[int] = frozenset()
    active: bool = True


def read_course(client: MoodleClient, courseid: int, page: int | None = None) -> dict[int, Seat]:
    """Everyone enrolled in the course, by user id, with their roles and whether the enrolment is active."""
    page = page or PAGE
    everyone = client.get_enrolled_users(courseid, page_size=page, userfields=["id", "roles"])
    active = {
        int(u["id"])
        for u in client.get_enrolled_users(courseid, page_size=page, onlyactive=True, userfields=["id"])
    }
    return {
        int(u["id"]): Seat(frozenset(int(r["roleid"]) for r in u.get("roles") or []), int(u["id"]) in active)
        for u in everyone
    }


def read_cohort(client: MoodleClient, cohortid: int) -> dict[int, Seat]:
    answer = client.get_cohort_members([cohortid])
    return {int(uid): Seat() for entry in answer for uid in entry.get("userids", [])}


class MembershipReconciler:
    def __init__(
        self, ctx: RunContext, client: MoodleClient, *, cohort_category: int | None, on_leave: str = "suspend"
    ) -> None:
        self.on_leave = on_leave
        self.ctx = ctx
        self.client = client
        self.run: SyncRun = ctx.run
        self.site = ctx.site
        self.role_ids = {str(k): int(v) for k, v in (self.site.role_ids or {}).items()}
        self.resolver = TargetResolver(client, self.run, cohort_category=cohort_category, dry_run=True)
        self.counts: dict[str, int] = defaultdict(int)
        self.automatic: list[Discrepancy] = []

    def reconcile(self) -> None:
        targets = list(MembershipTarget.objects.filter(site=self.site, memberships__isnull=False).distinct())
        if not targets:
            return
        self.ctx.patiently(lambda: self.resolver.resolve(targets))
        MembershipTarget.objects.bulk_update(targets, ["moodle_id", "name", "problem", "resolved_at"])
        linked = dict(
            SyncRecord.objects.filter(site=self.site, moodle_id__isnull=False).values_list("moodle_id", "pk")
        )
        for target in targets:
            if target.moodle_id is None:
                continue
            self.ctx.check_control()
            seats = self.ctx.patiently(lambda t=target: self._read(t))
            MembershipTarget.objects.filter(pk=target.pk).update(
                moodle_count=len(seats), moodle_counted_at=timezone.now()
            )
            self.compare(target, seats, linked)
        parts = [f"{n} {DiscrepancyKind(kind).label.lower()}" for kind, n in sorted(self.counts.items())]
        self.ctx.event(
            f"Compared {counted(len(targets), 'course or cohort', 'courses and cohorts')} with Moodle: "
            + (", ".join(parts) or "no membership discrepancies")
        )
        self.apply_automatic()

    def _read(self, target: MembershipTarget) -> dict[int, Seat]:
        if target.kind == MembershipKind.COURSE:
            return read_course(self.client, target.moodle_id)
        return read_cohort(self.client, target.moodle_id)

    # -- comparing ------------------------------------------------------------------------------------

    def compare(
        self,
        target: MembershipTarget,
        seats: dict[int, Seat],
        linked: dict[int, int],
        *,
        only: set[int] | None = None,
    ) -> None:
        """Moodle's seats in one course or cohort against the hub's memberships (of the Moodle users `only`,
        when given: an event speaks of one person, and the others' absence from it means nothing)."""
        people = Membership.objects.filter(target=target, record__moodle_id__isnull=False)
        if only is not None:
            people = people.filter(record__moodle_id__in=only)
            Discrepancy.objects.filter(membership__in=people, status__in=DiscrepancyStatus.waiting()).update(
                status=DiscrepancyStatus.SUPERSEDED
            )
        rows = {m.record.moodle_id: m for m in people.select_related("record")}
        found: list[Discrepancy] = []
        observed: list[Membership] = []
        for user_id, row in rows.items():
            row.target = target
            problem = self._difference(row, seats.get(user_id))
            if problem is None:
                if not row.in_step and row.status not in (MembershipStatus.ERROR, MembershipStatus.HELD):
                    self._observe(row, seats.get(user_id))
                    observed.append(row)
                continue
            found.append(self._discrepancy(row, *problem))
        extras = [uid for uid in seats if uid not in rows and uid in linked]
        for user_id in extras:
            row = self._extra_row(target, linked[user_id], seats[user_id])
            found.append(
                self._discrepancy(
                    row,
                    DiscrepancyKind.MEMBERSHIP_EXTRA,
                    self._removal(target),
                    "is in it in Moodle, not in the source",
                )
            )
        update_rows(Membership, observed, _ROW_FIELDS)
        self._guard(target, found)
        Discrepancy.objects.bulk_create(found, batch_size=500)
        for item in found:
            self.counts[item.kind] += 1
            if item.status == DiscrepancyStatus.AUTO:
                self.automatic.append(item)

    def _difference(self, row: Membership, seat: Seat | None) -> tuple[str, str, str] | None:
        course = row.target.kind == MembershipKind.COURSE
        if row.desired == MembershipState.ACTIVE:
            if seat is None:
                return (
                    DiscrepancyKind.MEMBERSHIP_MISSING,
                    self._addition(row.target),
                    "is not in it in Moodle",
                )
            if not course:
                return None
            role = self.role_ids.get(row.role)
            if role is not None and role not in seat.roles:
                return (
                    DiscrepancyKind.MEMBERSHIP_ROLE,
                    ResolutionAction.ENROL,
                    f"lacks the role {row.role} in Moodle",
                )
            if not seat.active and self._should_be_active(row):
                return (
                    DiscrepancyKind.MEMBERSHIP_SUSPENDED,
                    ResolutionAction.ENROL,
                    "is suspended in Moodle, active in the source",
                )
            return None
        if seat is None:
            return None
        if course and not seat.active and self.on_leave == LeavePolicy.UNENROL:
            return (
                DiscrepancyKind.MEMBERSHIP_LEFT,
                ResolutionAction.UNENROL,
                "left the course (the enrolment is suspended) and the site's policy proposes to unenrol them",
            )
        if course and seat.active:
            return (
                DiscrepancyKind.MEMBERSHIP_SUSPENDED,
                ResolutionAction.SUSPEND_ENROLMENT,
                "is active in Moodle, left in the source",
            )
        if not course:
            return (
                DiscrepancyKind.MEMBERSHIP_EXTRA,
                ResolutionAction.COHORT_REMOVE,
                "is in it in Moodle, left in the source",
            )
        return None

    @staticmethod
    def _should_be_active(row: Membership) -> bool:
        """Moodle's onlyactive also leaves out enrolments outside their dates and suspended accounts."""
        now = time.time()
        in_dates = row.timestart <= now and (not row.timeend or row.timeend > now)
        return in_dates and not row.record.suspended_by_hub and row.record.payload.get("suspended") != 1

    @staticmethod
    def _observe(row: Membership, seat: Seat | None) -> None:
        """Moodle already holds what the source wants (made by hand, or an answer was lost): in step."""
        row.synced = row.desired if seat is not None else MembershipState.NONE
        row.synced_role, row.synced_times = row.role, row.times
        settle(row)

    @staticmethod
    def _addition(target: MembershipTarget) -> str:
        return ResolutionAction.ENROL if target.kind == MembershipKind.COURSE else ResolutionAction.COHORT_ADD

    @staticmethod
    def _removal(target: MembershipTarget) -> str:
        if target.kind == MembershipKind.COURSE:
            return ResolutionAction.SUSPEND_ENROLMENT
        return ResolutionAction.COHORT_REMOVE

    def _extra_row(self, target: MembershipTarget, record_id: int, seat: Seat) -> Membership:
        """A linked person Moodle has in a managed course or cohort the source does not put them in (with a
        role they hold there, which a suspension must name)."""
        left = MembershipState.SUSPENDED if target.kind == MembershipKind.COURSE else MembershipState.REMOVED
        names = {role_id: name for name, role_id in self.role_ids.items()}
        held = [names[r] for r in sorted(seat.roles) if r in names]
        row, _ = Membership.objects.get_or_create(
            record_id=record_id,
            target=target,
            defaults={
                "site": self.site,
                "role": held[0] if held else "",
                "desired": left,
                "synced": MembershipState.ACTIVE,
                "status": MembershipStatus.HELD,
                "error_message": "in Moodle but not in the source: waiting for an admin's decision",
                "last_run": self.run,
            },
        )
        row.target = target
        return row

    def _discrepancy(self, row: Membership, kind: str, action: str, what: str) -> Discrepancy:
        safe = action not in ResolutionAction.destructive()
        automatic = safe and kind in (self.site.auto_apply_kinds or [])
        status = DiscrepancyStatus.AUTO if automatic else DiscrepancyStatus.OPEN
        where = f"{row.target.get_kind_display().lower()} {row.target.label}"
        return membership_discrepancy(self.run, row, kind, action, status, f"{what}: {where}")

    def _guard(self, target: MembershipTarget, found: list[Discrepancy]) -> None:
        removals = [d for d in found if d.proposed_action in ResolutionAction.membership_removals()]
        if not removals:
            return
        verdict = guard.measure_target(
            self.site, target, len(removals), verb=guard.TARGET_VERBS[removals[0].proposed_action]
        )
        if verdict.allowed:
            return
        for item in removals:
            item.status = DiscrepancyStatus.BLOCKED
        self.ctx.event(
            f"The blast-radius guard blocked {counted(len(removals), 'proposed removal')} from "
            f"{target.label}: this {verdict.sentence()}.",
            RunEvent.Level.ERROR,
        )
        raise_alert(
            blast_radius_key(self.site.slug),
            kind=AlertKind.BLAST_RADIUS,
            site=self.site,
            run=self.run,
            title=f"{self.site.name}: reconciliation would take "
            f"{counted(len(removals), 'person', 'people')} out of {target.label}",
            detail=f"This {verdict.sentence()}; nothing was changed. Check the source; if it is right, "
            "an admin approves them.",
        )

    # -- applying what the policy allows ------------------------------------------------------------------

    def apply_automatic(self) -> None:
        """Safe differences the site applies by itself: the memberships go pending and the membership phase
        sends them in this run."""
        if not self.automatic:
            return
        rows = [d.membership for d in self.automatic]
        for row in rows:  # only additions and re-activations are automatic: Moodle lacks what is wanted
            row.synced, row.synced_role, row.status = MembershipState.NONE, "", MembershipStatus.PENDING
        update_rows(Membership, rows, _ROW_FIELDS)

        rules = self.site.mapping().memberships
        MembershipPhase(
            self.ctx, self.client, on_leave=rules.on_leave, cohort_category=rules.cohort_category
        ).work()
        now = timezone.now()
        states = dict(Membership.objects.filter(pk__in=[r.pk for r in rows]).values_list("pk", "status"))
        resolutions = []
        for item in self.automatic:
            ok = states.get(item.membership_id) == MembershipStatus.OK
            failure = "not applied: see the membership's error"
            resolutions.append(applied_by_policy(self.run, item, ok, failure, now))
        Discrepancy.objects.bulk_update(self.automatic, ["status"])
        Resolution.objects.bulk_create(resolutions, batch_size=500)
