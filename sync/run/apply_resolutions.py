"""Applying approved resolutions, inside a run of kind *resolution* that holds the site's lock.

Approvals do not each get a run of their own: they wait as *approved* and the site's resolution run claims
them in batches, also those approved while it works (they join at the next batch boundary), so an
approval never fails for losing a race for the lock. For each batch:

- the blast-radius guard is asked again before the first call: destructive changes approved without an
  override (a bypassed page, a hand-edited row) are refused when they would pass the site's limit, and an
  override must be confirmed and cover exactly what it was typed for;
- suspensions, unsuspensions and field updates go out together in `core_user_update_users` calls (split
  under max_input_vars by the client); a call Moodle refuses as a whole is split in halves until the bad
  resolution is isolated, and Moodle's per-user warnings fail only their resolution;
- links, re-links, choices, creates and renames first make their update calls, then point the record at
  its Moodle user and send it through the batch logic (look-ups, conflicts, isolation) like a sync.

Counters, progress and calls land on the run after every batch, like any run.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from monitoring.alerts import raise_alert
from monitoring.kinds import AlertKind, blast_radius_key

from .. import guard
from ..choices import (
    ConflictStatus,
    DiscrepancyKind,
    DiscrepancyStatus,
    MembershipState,
    MembershipStatus,
    OverrideStatus,
    PendingAction,
    ResolutionAction,
    ResolutionStatus,
    SyncStatus,
)
from ..models import Conflict, Discrepancy, Membership, RecordEvent, Resolution, RunEvent, SyncRecord, SyncRun
from ..moodle import errors
from ..moodle.errors import MoodleError
from ..roles import check_may_decide
from ..words import counted
from .batch import BatchProcessor
from .membership_staging import settle
from .memberships import missing_for, not_in_moodle

if TYPE_CHECKING:
    from ..moodle.client import MoodleClient
    from .context import RunContext

UPDATES = (ResolutionAction.SUSPEND, ResolutionAction.UNSUSPEND, ResolutionAction.UPDATE)
# Which run counter an applied resolution adds to.
COUNTER = {
    ResolutionAction.SUSPEND: "suspended",
    ResolutionAction.UNSUSPEND: "updated",
    ResolutionAction.UPDATE: "updated",
}
UPDATE_FUNCTION = "core_user_update_users"


@dataclass
class Outcome:
    ok: bool
    text: str
    counter: str | None = None  # the run counter it adds to; None when the batch logic counted it


def apply_approved(executor: RunContext, client: MoodleClient) -> None:
    processor = executor.batch_processor(client)
    applier = Applier(executor, client, processor)
    applier.refuse_past_the_guard()
    applied_any = False
    while True:
        executor.check_control()
        batch = applier.claim()
        if not batch:
            break
        applied_any = True
        applier.apply(batch)
    if not applied_any:
        executor.event(
            "Nothing left to apply: an earlier resolution run of the site applied what was approved."
        )


class Applier:
    def __init__(self, executor: RunContext, client: MoodleClient, processor: BatchProcessor) -> None:
        self.executor = executor
        self.run: SyncRun = executor.run
        self.site = executor.site
        self.client = client
        self.processor = processor
        self.unguarded = 0  # destructive weight this run applied without an override

    # -- claiming ---------------------------------------------------------------------------------------

    def claim(self) -> list[Resolution]:
        """Take the next approved resolutions of the site (conditionally: a second run finds none)."""
        with transaction.atomic():
            ids = list(
                Resolution.objects.select_for_update(skip_locked=True)
                .filter(site=self.site, status=ResolutionStatus.APPROVED)
                .order_by("decided_at", "pk")
                .values_list("pk", flat=True)[: self.site.batch_size]
            )
            if not ids:
                return []
            Resolution.objects.filter(pk__in=ids).update(status=ResolutionStatus.APPLYING, run=self.run)
            Discrepancy.objects.filter(resolutions__pk__in=ids).update(status=DiscrepancyStatus.APPLYING)
            SyncRun.objects.filter(pk=self.run.pk).update(progress_total=F("progress_total") + len(ids))
        return list(
            Resolution.objects.filter(pk__in=ids)
            .select_related("decided_by", "site", "override", "discrepancy__record", "conflict__record")
            .order_by("decided_at", "pk")
        )

    def refuse_past_the_guard(self) -> None:
        """Before the first call: destructive approvals without an override that together pass the
        site's limit are refused, whatever let them through to here."""
        waiting = list(
            Resolution.objects.filter(
                site=self.site,
                status=ResolutionStatus.APPROVED,
                action__in=ResolutionAction.destructive() - ResolutionAction.membership_removals(),
                override__isnull=True,
            ).only("pk", "action", "params")
        )
        verdict = guard.measure(self.site, sum(guard.weight(r) for r in waiting), verb=_verb(waiting))
        if verdict.allowed:
            return
        self._refuse(waiting, verdict)

    def _refuse(self, resolutions: list[Resolution], verdict: guard.BlastRadius) -> None:
        text = (
            f"refused when applying: this {verdict.sentence()}. Nothing was sent. An admin can approve "
            "it again with an explicit override (the number of users typed out and a reason)."
        )
        ids = [r.pk for r in resolutions]
        Resolution.objects.filter(pk__in=ids).update(
            status=ResolutionStatus.FAILED, outcome=text, run=self.run
        )
        Discrepancy.objects.filter(resolutions__pk__in=ids).update(status=DiscrepancyStatus.BLOCKED)
        counter = "memberships_held" if isinstance(verdict, guard.TargetRadius) else "blocked"
        SyncRun.objects.filter(pk=self.run.pk).update(**{counter: F(counter) + verdict.count})
        self.executor.event(
            f"The blast-radius guard refused {counted(len(ids), 'approved change')}: {verdict.sentence()}.",
            RunEvent.Level.ERROR,
        )
        raise_alert(
            blast_radius_key(self.site.slug),
            kind=AlertKind.BLAST_RADIUS,
            site=self.site,
            run=self.run,
            title=f"{self.site.name}: approved changes past the blast-radius limit were refused",
            detail=f"{counted(len(ids), 'approved change')} {verdict.sentence()}; nothing was sent. "
            "Approve them again with an override if this is intended.",
        )

    def _fit_guard(self, batch: list[Resolution], outcomes: dict[int, Outcome]) -> list[Resolution]:
        """What of the batch may be applied: overrides confirmed and covering their count; unguarded
        destructive changes only while this run stays under the limit (approvals join mid-run)."""
        kept, refused = [], []
        by_override: dict[int, list[Resolution]] = defaultdict(list)
        for resolution in batch:
            if resolution.action not in ResolutionAction.destructive():
                kept.append(resolution)
            elif resolution.override_id:
                by_override[resolution.override_id].append(resolution)
            else:
                refused.append(resolution)
        for group in by_override.values():
            override = group[0].override
            covered = Resolution.objects.filter(override=override).exclude(
                status__in=[ResolutionStatus.REJECTED, ResolutionStatus.PROPOSED]
            )
            weight = sum(guard.weight(r) for r in covered.only("action", "params"))
            if override.status == OverrideStatus.CONFIRMED and weight <= override.count:
                kept.extend(group)
                continue
            text = (
                f"refused when applying: override #{override.pk} is {override.get_status_display().lower()} "
                f"and was typed for {counted(override.count, 'user')}, not {weight}"
            )
            for resolution in group:
                outcomes[resolution.pk] = Outcome(False, text, "errors")
        removals = [r for r in refused if r.action in ResolutionAction.membership_removals()]
        refused = [r for r in refused if r not in removals]
        kept.extend(self._fit_target_guard(removals))
        if refused:
            weight = sum(guard.weight(r) for r in refused)
            verdict = guard.measure(self.site, weight, already=self.unguarded, verb=_verb(refused))
            if verdict.allowed:
                self.unguarded += weight
                kept.extend(refused)
            else:
                self._refuse(refused, verdict)
        return kept

    def _fit_target_guard(self, removals: list[Resolution]) -> list[Resolution]:
        """Removals from a course or cohort, checked again per course or cohort before any is sent."""
        by_target: dict[int, list[Resolution]] = defaultdict(list)
        for resolution in removals:
            by_target[resolution.discrepancy.membership.target_id].append(resolution)
        kept = []
        for group in by_target.values():
            target = group[0].discrepancy.membership.target
            verdict = guard.measure_target(
                self.site, target, len(group), verb=guard.TARGET_VERBS.get(group[0].action, "removes")
            )
            if verdict.allowed:
                kept.extend(group)
            else:
                self._refuse(group, verdict)
        return kept

    # -- applying ---------------------------------------------------------------------------------------

    def apply(self, batch: list[Resolution]) -> None:
        outcomes: dict[int, Outcome] = {}
        for resolution in batch:
            try:
                check_may_decide(resolution.decided_by, resolution)
            except PermissionDenied as refused:
                outcomes[resolution.pk] = Outcome(False, f"refused when applying: {refused}", "errors")
                continue
            if not _still_wanted(resolution):
                outcomes[resolution.pk] = Outcome(
                    False, "not applied: settled meanwhile (a sync or a later reconciliation)", "skipped"
                )
        left = self._fit_guard([r for r in batch if r.pk not in outcomes], outcomes)
        for resolution in left:
            if resolution.action == ResolutionAction.IGNORE:
                outcomes[resolution.pk] = Outcome(True, "ignored: no change")
        left = [r for r in left if r.pk not in outcomes]
        items = [(r, users) for r in left if (users := _update_users(r))]
        self._send_updates(items, outcomes)
        self._apply_memberships([r for r in left if r.action in ResolutionAction.membership()], outcomes)
        relinks = [
            r
            for r in left
            if r.action not in UPDATES
            and r.action not in ResolutionAction.membership()
            and r.pk not in outcomes
        ]
        self._relink(relinks, outcomes)
        self._commit(batch, outcomes)

    def _send_updates(self, items: list[tuple[Resolution, list[dict]]], outcomes: dict[int, Outcome]) -> None:
        """One update call for the whole batch; a refusal of the whole call is isolated by halves."""
        if not items:
            return
        while True:
            try:
                answer = self.client.update_users([user for _, users in items for user in users])
            except MoodleError as error:
                if error.category in (errors.CLIENT_FAULT, errors.CONFLICT):
                    self._isolate(items, error, outcomes)
                    return
                self.executor.handle_interruption(error)  # waits, or stops the run
                continue  # updates are idempotent: send the batch again
            except (errors.BreakerOpen, errors.ThrottleTimeout) as cause:
                self.executor.handle_interruption(cause)
                continue
            break
        failures = {f.itemid: f for f in answer.failures}
        for resolution, users in items:
            failed = [failures[int(u["id"])] for u in users if int(u["id"]) in failures]
            if failed:
                outcomes[resolution.pk] = Outcome(
                    False,
                    "Moodle did not apply it: "
                    + "; ".join(f"user {f.itemid}: {f.message} ({f.warningcode})" for f in failed),
                    "errors",
                )
            elif resolution.action in UPDATES:
                outcomes[resolution.pk] = Outcome(
                    True, f"applied with {UPDATE_FUNCTION}", COUNTER[resolution.action]
                )

    def _apply_memberships(self, resolutions: list[Resolution], outcomes: dict[int, Outcome]) -> None:
        """Each resolution's recorded call, joined with the others of the same function into one call; a
        call Moodle refuses as a whole is isolated by halves (every one is safe to send again)."""
        by_function: dict[str, list[Resolution]] = defaultdict(list)
        for resolution in resolutions:
            by_function[resolution.calls[0]["function"]].append(resolution)
        for function, group in by_function.items():
            self._send_memberships(function, group, outcomes)

    def _send_memberships(self, function: str, group: list[Resolution], outcomes: dict[int, Outcome]) -> None:
        (param,) = group[0].calls[0]["params"]
        items = [item for r in group for item in r.calls[0]["params"][param]]
        while True:
            try:
                answer = self.client.call(function, **{param: items})
            except MoodleError as error:
                if error.category in (errors.CLIENT_FAULT, errors.CONFLICT) and len(group) > 1:
                    middle = len(group) // 2
                    self._send_memberships(function, group[:middle], outcomes)
                    self._send_memberships(function, group[middle:], outcomes)
                    return
                if error.category in (errors.CLIENT_FAULT, errors.CONFLICT):
                    outcomes[group[0].pk] = Outcome(False, f"Moodle refused it: {error}", "errors")
                    return
                self.executor.handle_interruption(error)
                continue
            except (errors.BreakerOpen, errors.ThrottleTimeout) as cause:
                self.executor.handle_interruption(cause)
                continue
            break
        warnings = answer.get("warnings", []) if isinstance(answer, dict) else []
        missing = not_in_moodle(
            str(w.get("message", "")) for w in warnings if str(w.get("warningcode")) == "2"
        )
        for resolution in group:
            membership = resolution.discrepancy.membership
            if gone := missing_for(membership, missing):
                outcomes[resolution.pk] = Outcome(
                    False, f"Moodle did not apply it: {'; '.join(gone)}", "errors"
                )
                continue
            _settle_membership(membership, resolution.action, self.run)
            outcomes[resolution.pk] = Outcome(
                True, f"applied with {function}", MEMBERSHIP_COUNTER[resolution.action]
            )

    def _isolate(self, items, error: MoodleError, outcomes: dict[int, Outcome]) -> None:
        if len(items) == 1:
            outcomes[items[0][0].pk] = Outcome(False, str(error), "errors")
            return
        middle = len(items) // 2
        self._send_updates(items[:middle], outcomes)
        self._send_updates(items[middle:], outcomes)

    def _relink(self, resolutions: list[Resolution], outcomes: dict[int, Outcome]) -> None:
        """Point each record at its Moodle user (or none, for a new account) and sync it."""
        records = []
        for resolution in resolutions:
            record = _target(resolution).record
            user_id = resolution.params.get("user_id")
            record.moodle_id = int(user_id) if user_id else None
            record.overrides = {**record.overrides, **resolution.params.get("overrides", {})}
            record.payload = {**record.payload, **record.overrides}
            record.sync_status = SyncStatus.PENDING
            record.pending_action = PendingAction.UPSERT
            record.save(update_fields=["moodle_id", "overrides", "payload", "sync_status", "pending_action"])
            records.append((resolution, record))
        if not records:
            return
        results = self.executor.run_batch(self.processor, [record for _, record in records])
        for resolution, record in records:
            result = results.get(record.external_id)
            if result is None:
                outcomes[resolution.pk] = Outcome(False, "not applied: the run stopped first", "errors")
            elif result.status != SyncStatus.OK:
                outcomes[resolution.pk] = Outcome(False, result.message or result.status)
            else:
                outcomes[resolution.pk] = Outcome(
                    True, f"linked to Moodle user {result.moodle_id}; {result.action}"
                )

    # -- recording --------------------------------------------------------------------------------------

    def _commit(self, batch: list[Resolution], outcomes: dict[int, Outcome]) -> None:
        """Each resolution's outcome, the records it suspended, and the run's counters, in one go."""
        now = timezone.now()
        counts: Counter = Counter()
        events = []
        suspended_records = []
        with transaction.atomic():
            self.executor.fence()
            for resolution in batch:
                outcome = outcomes.get(resolution.pk)
                if outcome is None:
                    continue  # refused by the guard: already recorded
                _finish(resolution, outcome, now)
                if outcome.counter:
                    counts[outcome.counter] += 1
                record = _target(resolution).record
                if record is not None and resolution.action in UPDATES:
                    events.append(
                        RecordEvent(
                            record=record,
                            run=self.run,
                            at=now,
                            action=resolution.action,
                            outcome="ok" if outcome.ok else "error",
                            function=UPDATE_FUNCTION,
                            message=f"resolution #{resolution.pk}: {outcome.text}",
                        )
                    )
                if (
                    outcome.ok
                    and record is not None
                    and resolution.action == ResolutionAction.SUSPEND
                    and resolution.discrepancy is not None
                    and resolution.discrepancy.kind
                    in (DiscrepancyKind.ORPHAN_IN_MOODLE, DiscrepancyKind.LEFT_SOURCE)
                ):
                    suspended_records.append(record.pk)
            if suspended_records:
                SyncRecord.objects.filter(pk__in=suspended_records).update(suspended_by_hub=True)
            RecordEvent.objects.bulk_create(events, batch_size=500)
            SyncRun.objects.filter(pk=self.run.pk).update(
                progress_done=F("progress_done") + len(batch),
                last_progress_at=now,
                **{name: F(name) + value for name, value in counts.items()},
            )
        self.executor.count_calls()


MEMBERSHIP_COUNTER = {
    ResolutionAction.ENROL: "enrolled",
    ResolutionAction.SUSPEND_ENROLMENT: "enrolments_suspended",
    ResolutionAction.UNENROL: "enrolments_suspended",
    ResolutionAction.COHORT_ADD: "cohort_added",
    ResolutionAction.COHORT_REMOVE: "cohort_removed",
}
MEMBERSHIP_SYNCED = {
    ResolutionAction.ENROL: MembershipState.ACTIVE,
    ResolutionAction.SUSPEND_ENROLMENT: MembershipState.SUSPENDED,
    ResolutionAction.UNENROL: MembershipState.REMOVED,
    ResolutionAction.COHORT_ADD: MembershipState.ACTIVE,
    ResolutionAction.COHORT_REMOVE: MembershipState.REMOVED,
}


def _settle_membership(membership: Membership, action: str, run: SyncRun) -> None:
    """What the applied call made Moodle hold, on the person's membership."""
    membership.synced = MEMBERSHIP_SYNCED[action]
    if action == ResolutionAction.ENROL:
        membership.synced_role, membership.synced_times = membership.role, membership.times
    if membership.status == MembershipStatus.HELD:
        membership.status = MembershipStatus.PENDING
    settle(membership)
    membership.last_run = run
    membership.save(
        update_fields=["synced", "synced_role", "synced_times", "status", "error_message", "last_run"]
    )


def _verb(resolutions: list[Resolution]) -> str:
    actions = {r.action for r in resolutions}
    return guard.VERBS.get(next(iter(actions)), "changes") if len(actions) == 1 else "changes"


def _target(resolution: Resolution) -> Discrepancy | Conflict:
    return resolution.discrepancy or resolution.conflict


def _still_wanted(resolution: Resolution) -> bool:
    """A discrepancy superseded or a conflict settled by a sync since the approval takes no change."""
    target = _target(resolution)
    if isinstance(target, Conflict):
        return target.status == ConflictStatus.OPEN
    if target.status not in (*DiscrepancyStatus.in_flight(), *DiscrepancyStatus.waiting()):
        return False
    if resolution.action in ResolutionAction.membership() and target.membership_id:
        # The source may have taken the person back (or out) since: never act against what it says now.
        wants_in = Membership.objects.filter(pk=target.membership_id, desired=MembershipState.ACTIVE).exists()
        return wants_in == (resolution.action in (ResolutionAction.ENROL, ResolutionAction.COHORT_ADD))
    return True


def _update_users(resolution: Resolution) -> list[dict[str, Any]]:
    """The users this resolution changes with core_user_update_users (its recorded, previewed calls)."""
    return [
        user
        for call in resolution.calls
        if call.get("function") == UPDATE_FUNCTION
        for user in call["params"]["users"]
    ]


def _finish(resolution: Resolution, outcome: Outcome, now) -> None:
    Resolution.objects.filter(pk=resolution.pk).update(
        status=ResolutionStatus.APPLIED if outcome.ok else ResolutionStatus.FAILED,
        outcome=outcome.text[:2000],
        applied_at=now if outcome.ok else None,
    )
    resolution.outcome = outcome.text
    if resolution.discrepancy_id:
        Discrepancy.objects.filter(pk=resolution.discrepancy_id).update(
            status=DiscrepancyStatus.APPLIED if outcome.ok else DiscrepancyStatus.FAILED
        )
    if resolution.conflict_id and outcome.ok:
        ignored = resolution.action == ResolutionAction.IGNORE
        status = ConflictStatus.IGNORED if ignored else ConflictStatus.RESOLVED
        Conflict.objects.filter(pk=resolution.conflict_id).update(status=status, resolved_at=now)
