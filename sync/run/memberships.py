"""The membership phase of a sync run: after the people, their courses and cohorts.

Pending memberships of people who have a Moodle account go out in chunks, each committed before the next:
cohort members added (`core_cohort_add_cohort_members`: warning 3 "already a member" is an outcome, not a
failure) and removed (`core_cohort_delete_cohort_members`), enrolments made, changed or suspended
(`enrol_manual_enrol_users`, idempotent, `suspend=1` for someone who left). The enrol call is one
transaction in Moodle: one unknown user fails all of it, so a refused call is halved until the bad
enrolment is alone, and only that one is in error. A course without manual enrolment, or a role the token
may not assign, is the site's set-up, not data: the run stops once, naming the course (and role).

Removals pass the blast-radius guard per course and cohort: taking more of a course's people out than
the site allows holds those changes back for an admin's decision.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from urllib.parse import urlencode

from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from monitoring.alerts import raise_alert
from monitoring.kinds import AlertKind, blast_radius_key, config_key

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
    RunStatus,
    SyncStatus,
)
from ..models import Discrepancy, Membership, MembershipTarget, RunEvent, SyncRun
from ..moodle import errors
from ..moodle.client import MoodleClient, cohort_member
from ..moodle.errors import MoodleError
from ..words import counted
from .context import RunContext, RunStopped
from .membership_staging import membership_discrepancy, settle
from .membership_targets import NO_MANUAL, NoManualEnrolment, TargetResolver

CHUNK = 2000  # memberships committed together
# Enrolments refused alone before any was accepted: past this, it is not one bad person but the data or the
# site, and halving the rest down to single calls would only hammer Moodle.
STORM_PROBES = 5
ENROL_CALL = 500  # enrolments per call (split further under max_input_vars)
SETUP_CODES = frozenset({"wsnoinstance", "wsusercannotassign"})
_ROW_FIELDS = ["synced", "synced_role", "synced_times", "status", "error_message", "last_run"]
_COURSE_ID = re.compile(r"course\s*\(\s*(?:id\s*=\s*)?(\d+)\s*\)")
_ROLE_ID = re.compile(r"role\s*\((\d+)\)")
# core_cohort_add_cohort_members' warning 2 for the "id" type: "user id=12 not exists" (or "cohort id=3").
_NOT_EXISTS = re.compile(r"(user|cohort) id=(\d+) not exists")


def enrolment_item(row: Membership, role_id: int, *, suspend: bool) -> dict:
    """One enrolment as enrol_manual_enrol_users takes it. Dates are sent only when set: Moodle sets an
    omitted date to 0, which is what "no date" means here too."""
    item = {"roleid": role_id, "userid": row.record.moodle_id, "courseid": row.target.moodle_id}
    if row.timestart:
        item["timestart"] = row.timestart
    if row.timeend:
        item["timeend"] = row.timeend
    if suspend:
        item["suspend"] = 1
    return item


def not_in_moodle(messages) -> set[tuple[str, int]]:
    """The users and cohorts core_cohort_add_cohort_members' warnings say do not exist, as ("user", id) and
    ("cohort", id); warning 3, already a member, is not among them (it is what was wanted)."""
    return {(found.group(1), int(found.group(2))) for m in messages if (found := _NOT_EXISTS.search(m))}


def missing_for(row: Membership, missing: set[tuple[str, int]]) -> list[str]:
    """What of this membership Moodle said does not exist: the person, the cohort, or neither."""
    return [
        f"{kind} {ident} does not exist in Moodle"
        for kind, ident in (("user", row.record.moodle_id), ("cohort", row.target.moodle_id))
        if (kind, ident) in missing
    ]


def membership_calls(counts, targets: set[tuple[str, str, str, str]]) -> int:
    """About how many calls the membership phase makes for what a dry run staged: one look-up per course,
    one cohort listing (and a create), the enrolments 500 to a call, cohort changes per chunk."""
    if not counts.changes:
        return 0
    courses = sum(1 for kind, *_ in targets if kind == MembershipKind.COURSE)
    cohorts = 2 if any(kind == MembershipKind.COHORT for kind, *_ in targets) else 0
    chunks = -(-counts.changes // CHUNK)
    enrolments = -(-(counts.enrol + counts.suspend) // ENROL_CALL)
    cohort_changes = chunks * ((counts.add > 0) + (counts.remove > 0))
    return courses + cohorts + enrolments + cohort_changes


def sendable(site) -> list[Membership]:
    """Pending memberships of people who have a Moodle account, oldest first."""
    return list(
        Membership.objects.filter(
            site=site,
            status__in=[MembershipStatus.PENDING, MembershipStatus.WAITING],
            record__moodle_id__isnull=False,
            record__sync_status=SyncStatus.OK,
        )
        .select_related("target", "record")
        .order_by("pk")[:CHUNK]
    )


class MembershipPhase:
    def __init__(
        self, ctx: RunContext, client: MoodleClient, *, on_leave: str, cohort_category: int | None
    ) -> None:
        self.ctx = ctx
        self.run: SyncRun = ctx.run
        self.site = ctx.site
        self.client = client
        self.on_leave = on_leave
        self.resolver = TargetResolver(client, self.run, cohort_category=cohort_category, dry_run=False)
        self.role_ids = {str(k): int(v) for k, v in (self.site.role_ids or {}).items()}
        self.accepted = 0  # memberships Moodle took in this run
        self.refused_alone: list[str] = []  # errorcodes of memberships refused on their own

    def work(self) -> None:
        self._retry_setup_errors()
        self._mark_waiting()
        done_before: set[int] = set()
        while rows := [r for r in sendable(self.site) if r.pk not in done_before]:
            self.ctx.check_control()
            done_before.update(r.pk for r in rows)
            self._chunk(rows)

    def _retry_setup_errors(self) -> None:
        """Memberships in error because of their course or cohort (not found, no manual enrolment, a role
        refused there) are tried again: the fix is made in Moodle, where the hub cannot see it happen. Their
        course is looked up again first, so one still broken costs one look-up, not a call per person."""
        Membership.objects.filter(site=self.site, status=MembershipStatus.ERROR).exclude(
            target__problem=""
        ).update(status=MembershipStatus.PENDING)

    def _mark_waiting(self) -> None:
        """Memberships of people without an account in Moodle (new and in conflict or error) wait for it."""
        waiting = Membership.objects.filter(site=self.site, status=MembershipStatus.PENDING).exclude(
            record__moodle_id__isnull=False, record__sync_status=SyncStatus.OK
        )
        waiting.update(
            status=MembershipStatus.WAITING,
            error_message="waiting for the person's Moodle account (see the record: in error or conflict)",
        )

    def _chunk(self, rows: list[Membership]) -> None:
        targets = {r.target_id: r.target for r in rows}
        self.ctx.patiently(lambda: self.resolver.resolve(targets.values()))
        for row in rows:
            row.target = targets[row.target_id]
        stopped = self.resolver.without_manual(targets.values())
        if stopped:
            self._stop_for_setup(str(NoManualEnrolment(stopped)))
        outcome: dict[int, tuple[str, str]] = {}  # membership pk -> (status, message)
        for row in rows:
            if row.target.problem:
                outcome[row.pk] = (
                    MembershipStatus.ERROR,
                    f"record {row.record.external_id}: {row.target.problem}",
                )
            elif row.target.kind == MembershipKind.COURSE and row.role not in self.role_ids:
                outcome[row.pk] = (
                    MembershipStatus.ERROR,
                    f"record {row.record.external_id}: role {row.role} is not in the site's role table",
                )
        live = [r for r in rows if r.pk not in outcome]
        live = self._guard(live, outcome)
        cohort_adds = [
            r for r in live if r.target.kind == MembershipKind.COHORT and r.desired == MembershipState.ACTIVE
        ]
        cohort_removals = [
            r for r in live if r.target.kind == MembershipKind.COHORT and r.desired != MembershipState.ACTIVE
        ]
        enrolments = [r for r in live if r.target.kind == MembershipKind.COURSE]
        try:
            self._send(lambda: self._add_to_cohorts(cohort_adds, outcome))
            self._send(lambda: self._remove_from_cohorts(cohort_removals, outcome))
            parts = [
                enrolments[start : start + ENROL_CALL] for start in range(0, len(enrolments), ENROL_CALL)
            ]
            self._send(lambda: self._enrol(parts, outcome))
        except RunStopped:
            self._commit(rows, outcome)  # what Moodle did before the stop is recorded; the rest stays pending
            raise
        self._commit(rows, outcome)

    # -- guard -----------------------------------------------------------------------------------------

    def _guard(self, rows: list[Membership], outcome: dict) -> list[Membership]:
        """Removals from one course or cohort past the site's limit are held back, with one decision per
        person for an admin; the rest goes on."""
        removals: dict[int, list[Membership]] = defaultdict(list)
        for row in rows:
            if row.desired != MembershipState.ACTIVE and row.synced == MembershipState.ACTIVE:
                removals[row.target_id].append(row)
        held: set[int] = set()
        for group in removals.values():
            target = group[0].target
            verb = guard.TARGET_VERBS[self._removal_action(target)]
            already = Membership.objects.filter(target=target, status=MembershipStatus.HELD).count()
            verdict = guard.measure_target(self.site, target, len(group) + already, verb=verb)
            if verdict.allowed:
                continue
            self._hold(group, verdict)
            held.update(r.pk for r in group)
            for row in group:
                outcome[row.pk] = (
                    MembershipStatus.HELD,
                    f"held back by the blast-radius guard: this {verdict.sentence()}",
                )
        return [r for r in rows if r.pk not in held]

    @staticmethod
    def _removal_action(target: MembershipTarget) -> str:
        if target.kind == MembershipKind.COURSE:
            return ResolutionAction.SUSPEND_ENROLMENT
        return ResolutionAction.COHORT_REMOVE

    def _hold(self, rows: list[Membership], verdict: guard.TargetRadius) -> None:
        target = rows[0].target
        action = self._removal_action(target)
        Discrepancy.objects.filter(membership__in=rows, status__in=DiscrepancyStatus.waiting()).update(
            status=DiscrepancyStatus.SUPERSEDED
        )
        what = f"left {target.label}; the change was held back by the blast-radius guard"
        Discrepancy.objects.bulk_create(
            [
                membership_discrepancy(
                    self.run, row, DiscrepancyKind.MEMBERSHIP_LEFT, action, DiscrepancyStatus.BLOCKED, what
                )
                for row in rows
            ]
        )
        link = (
            reverse("sync:discrepancy_list")
            + "?"
            + urlencode({"site": self.site.slug, "kind": DiscrepancyKind.MEMBERSHIP_LEFT, "run": self.run.pk})
        )
        self.ctx.event(
            f"The blast-radius guard held back {counted(len(rows), 'change')} in {target.label}: this "
            f"{verdict.sentence()}. Nothing was changed there; an admin decides.",
            RunEvent.Level.ERROR,
            link,
            "Decide on the held-back changes",
        )
        raise_alert(
            blast_radius_key(self.site.slug),
            kind=AlertKind.BLAST_RADIUS,
            site=self.site,
            run=self.run,
            title=f"{self.site.name}: {counted(len(rows), 'person', 'people')} left {target.label}; nothing "
            "was changed there",
            detail=f"This {verdict.sentence()}. Check the source (a truncated export?); if they really left, "
            "an admin approves it.",
        )

    # -- calls ------------------------------------------------------------------------------------------

    def _send(self, call: Callable[[], None]) -> None:
        """One step's calls, waiting out the breaker, maintenance and failures that pass (every membership
        call is safe to send again); a refused token or the site's set-up stops the run."""
        while True:
            try:
                return call()
            except MoodleError as error:
                if error.errorcode in SETUP_CODES:
                    self._stop_for_setup(self._setup_problem(error))
                self.ctx.handle_interruption(error)
            except (errors.BreakerOpen, errors.ThrottleTimeout) as cause:
                self.ctx.handle_interruption(cause)

    def _add_to_cohorts(self, rows: list[Membership], outcome: dict) -> None:
        if not rows:
            return
        failures = self.client.add_cohort_members(
            [cohort_member(r.target.moodle_id, r.record.moodle_id) for r in rows]
        )
        missing = not_in_moodle(f.message for f in failures if f.warningcode == "2")
        for row in rows:
            gone = missing_for(row, missing)
            outcome[row.pk] = (
                (
                    MembershipStatus.ERROR,
                    f"record {row.record.external_id}: Moodle did not add them to cohort {row.target.key}: "
                    + "; ".join(gone),
                )
                if gone
                else (MembershipStatus.OK, "")
            )

    def _remove_from_cohorts(self, rows: list[Membership], outcome: dict) -> None:
        if not rows:
            return
        self._halving(
            rows,
            lambda part: self.client.delete_cohort_members(
                [{"cohortid": r.target.moodle_id, "userid": r.record.moodle_id} for r in part]
            ),
            outcome,
        )

    def _enrol(self, parts: list[list[Membership]], outcome: dict) -> None:
        """The enrolment calls side by side, as many at a time as the site allows (each is idempotent, so
        after a wait the parts not settled yet are simply sent again); a part Moodle refused as a whole is
        then isolated by halves, one call at a time."""
        todo = [part for part in parts if any(r.pk not in outcome for r in part)]
        if not todo:
            return
        answers = self.client.call_side_by_side(
            "enrol_manual_enrol_users", [{"enrolments": [self._enrolment(r) for r in part]} for part in todo]
        )
        refused, stop = [], None
        for part, answer in zip(todo, answers, strict=True):
            if not isinstance(answer, Exception):
                self.accepted += len(part)
                outcome.update({r.pk: (MembershipStatus.OK, "") for r in part})
            elif isinstance(answer, MoodleError) and answer.category in (
                errors.CLIENT_FAULT,
                errors.CONFLICT,
            ):
                refused.append((part, answer))
            else:
                stop = stop or answer
        for part, answer in refused:
            if answer.errorcode in SETUP_CODES:
                raise answer
            self._halving(part, self._enrol_call, outcome, refused=answer)
        if stop is not None:
            raise stop

    def _enrol_call(self, rows: list[Membership]) -> None:
        self.client.enrol_users([self._enrolment(r) for r in rows])

    def _enrolment(self, row: Membership) -> dict:
        return enrolment_item(row, self.role_ids[row.role], suspend=row.desired != MembershipState.ACTIVE)

    def _halving(
        self,
        rows: list[Membership],
        send: Callable[[list[Membership]], None],
        outcome: dict,
        *,
        refused: MoodleError | None = None,
    ) -> None:
        """Send; a call Moodle refuses as a whole (one unknown user) is halved until the bad one is alone.
        With `refused`, Moodle already refused these together: they are halved at once."""
        try:
            if refused is not None:
                raise refused
            send(rows)
        except MoodleError as error:
            if error.errorcode in SETUP_CODES or error.category not in (errors.CLIENT_FAULT, errors.CONFLICT):
                raise
            if len(rows) == 1:
                row = rows[0]
                outcome[row.pk] = (
                    MembershipStatus.ERROR,
                    f"record {row.record.external_id}: Moodle refused it in {row.target.label}: {error}",
                )
                self._note_refusal(error)
                return
            middle = len(rows) // 2
            self._halving(rows[:middle], send, outcome)
            self._halving(rows[middle:], send, outcome)
            return
        self.accepted += len(rows)
        for row in rows:
            outcome[row.pk] = (MembershipStatus.OK, "")

    def _note_refusal(self, error: MoodleError) -> None:
        self.refused_alone.append(error.errorcode or error.category)
        if (
            not self.accepted
            and len(self.refused_alone) >= STORM_PROBES
            and len(set(self.refused_alone)) == 1
        ):
            self._stop_for_setup(
                f"Moodle refused each of the {len(self.refused_alone)} memberships sent alone "
                f"({self.refused_alone[0]}) and accepted none; the run stopped instead of sending the rest "
                "one by one. The memberships in error name what Moodle said: fix the source, the mapping "
                "or the site's role table, then resume"
            )

    # -- stops --------------------------------------------------------------------------------------------

    def _setup_problem(self, error: MoodleError) -> str:
        text = f"{error.message} {error.debuginfo or ''}"
        course = _COURSE_ID.search(text)
        target = (
            MembershipTarget.objects.filter(
                site=self.site, kind=MembershipKind.COURSE, moodle_id=int(course.group(1))
            ).first()
            if course
            else None
        )
        where = target.label if target else (f"course id {course.group(1)}" if course else "a course")
        if error.errorcode == "wsnoinstance":
            if target is not None:
                MembershipTarget.objects.filter(pk=target.pk).update(
                    problem=f"course {target.key} {NO_MANUAL}"
                )
            return (
                f'Moodle says course {where} {NO_MANUAL} (wsnoinstance); add the "Manual enrolments" method '
                "in Moodle, then resume"
            )
        role = _ROLE_ID.search(text)
        role_id = int(role.group(1)) if role else None
        name = next((n for n, i in self.role_ids.items() if i == role_id), str(role_id or "?"))
        problem = f"the hub's token may not assign the role {name} (id {role_id}) in course {where}"
        if target is not None:
            MembershipTarget.objects.filter(pk=target.pk).update(problem=problem)
        return (
            f"Moodle refused: {problem} (wsusercannotassign). Allow the service user's role to assign it "
            "(Site administration > Users > Permissions > Define roles > Allow role assignments), then resume"
        )

    def _stop_for_setup(self, problem: str) -> None:
        raise_alert(
            config_key(self.site.slug),
            kind=AlertKind.CONFIG,
            site=self.site,
            run=self.run,
            title=f"{self.site.name}: Moodle's enrolment set-up stops the sync",
            detail=problem,
        )
        raise RunStopped(RunStatus.ABORTED, problem, errors.CONFIG)

    # -- commit ---------------------------------------------------------------------------------------------

    def _commit(self, rows: list[Membership], outcome: dict) -> None:
        counts: dict[str, int] = defaultdict(int)
        proposals = []
        touched = []
        for row in rows:
            status, message = outcome.get(row.pk, (None, ""))
            if status is None:
                continue
            row.last_run = self.run
            if status == MembershipStatus.OK:
                counts[self._counter(row)] += 1
                if self._proposes_unenrol(row):
                    proposals.append(row)
                row.synced = row.desired
                row.synced_role, row.synced_times = row.role, row.times
                row.status = MembershipStatus.PENDING
                settle(row)
            else:
                row.status, row.error_message = status, message[:2000]
                counts["membership_errors" if status == MembershipStatus.ERROR else "memberships_held"] += 1
            touched.append(row)
        with transaction.atomic():
            self.ctx.fence()
            update_rows(Membership, touched, _ROW_FIELDS)
            self._propose_unenrolments(proposals)
            SyncRun.objects.filter(pk=self.run.pk).update(
                last_progress_at=timezone.now(), **{name: F(name) + n for name, n in counts.items()}
            )

    @staticmethod
    def _counter(row: Membership) -> str:
        if row.target.kind == MembershipKind.COHORT:
            return "cohort_added" if row.desired == MembershipState.ACTIVE else "cohort_removed"
        return "enrolled" if row.desired == MembershipState.ACTIVE else "enrolments_suspended"

    def _proposes_unenrol(self, row: Membership) -> bool:
        return (
            self.on_leave == LeavePolicy.UNENROL
            and row.target.kind == MembershipKind.COURSE
            and row.desired == MembershipState.SUSPENDED
            and row.synced == MembershipState.ACTIVE
        )

    def _propose_unenrolments(self, rows: list[Membership]) -> None:
        """With the unenrol policy, a suspended enrolment of someone who left is proposed for unenrolment:
        an admin approves it, within the guard, course by course."""
        if not rows:
            return
        what = "left course {key}; the enrolment is suspended, and the site's policy proposes to unenrol them"
        Discrepancy.objects.bulk_create(
            [
                membership_discrepancy(
                    self.run,
                    row,
                    DiscrepancyKind.MEMBERSHIP_LEFT,
                    ResolutionAction.UNENROL,
                    DiscrepancyStatus.OPEN,
                    what.format(key=row.target.key),
                )
                for row in rows
            ]
        )
