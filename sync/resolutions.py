"""Resolutions: proposing, approving and applying the changes that need a person's decision.

Operators may propose and comment; only holders of `sync.approve_resolution` (the Admins group) approve or
reject — checked here, so the page and the task that applies are both covered. With the site's four-eyes
rule on, whoever proposed a resolution cannot approve it. Approving never calls Moodle from the request:
it queues a run of kind *resolution*, which applies the approved resolutions through the throttled client
while holding the site's lock, and keeps each resolution's trail (calls made, outcome).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from .batch import BatchProcessor, Interrupted, mapped
from .choices import (
    ConflictKind,
    ConflictStatus,
    DiscrepancyKind,
    DiscrepancyStatus,
    PendingAction,
    ResolutionAction,
    ResolutionStatus,
    RunKind,
    SyncStatus,
)
from .mapping import Mapping, payload_for_create
from .models import Comment, Conflict, Discrepancy, Resolution, RunEvent, SyncRecord, SyncRun
from .moodle import errors
from .moodle.errors import MoodleError
from .state import commit_batch

if TYPE_CHECKING:
    from .engine import RunExecutor
    from .moodle.client import MoodleClient

APPROVE_PERMISSION = "sync.approve_resolution"
CONFLICT_ACTIONS = {
    ConflictKind.USERNAME_TAKEN: (ResolutionAction.LINK, ResolutionAction.RENAME, ResolutionAction.IGNORE),
    ConflictKind.EMAIL_TAKEN: (ResolutionAction.LINK, ResolutionAction.IGNORE),
    ConflictKind.DUPLICATE_MATCH: (ResolutionAction.LINK, ResolutionAction.IGNORE),
    ConflictKind.LINKED_USER_GONE: (ResolutionAction.RELINK, ResolutionAction.IGNORE),
}


class ResolutionError(Exception):
    """The resolution cannot be proposed or decided as asked; the message says why."""


# -- proposing ---------------------------------------------------------------------------------------


def _update(user_id: int, **fields: Any) -> dict[str, Any]:
    return {"function": "core_user_update_users", "params": {"users": [{"id": user_id, **fields}]}}


def planned_calls(
    action: str, *, record: SyncRecord | None, discrepancy: Discrepancy | None, params: dict
) -> list:
    """The exact Moodle calls a resolution makes, shown before anyone approves it."""
    user_id = params.get("user_id")
    if action == ResolutionAction.IGNORE:
        return []
    if action == ResolutionAction.SUSPEND:
        return [_update(int(discrepancy.moodle_user_id), suspended=1)]
    if action == ResolutionAction.UNSUSPEND:
        return [_update(int(discrepancy.moodle_user_id), suspended=0)]
    if action == ResolutionAction.UPDATE:
        return [_update(int(discrepancy.moodle_user_id), **discrepancy.source_values)]
    if action in (ResolutionAction.LINK, ResolutionAction.RELINK, ResolutionAction.CHOOSE) and user_id:
        calls = [_update(int(user_id), idnumber=record.external_id)]
        # The other accounts of the same person: idnumber cleared (it must stay unique) and suspended.
        for other in params.get("retire", []):
            calls.append(_update(int(other), idnumber="", suspended=1))
        return calls
    # create, rename, or a re-link with no user to link to: a new Moodle user
    payload = payload_for_create(mapped(record))
    payload.update(params.get("overrides", {}))
    payload["idnumber"] = record.external_id
    return [{"function": "core_user_create_users", "params": {"users": [payload]}}]


def complete_params(
    action: str,
    *,
    discrepancy: Discrepancy | None = None,
    conflict: Conflict | None = None,
    params: dict | None = None,
    client: MoodleClient | None = None,
) -> dict:
    """Check a proposal's params and add what the action implies: the other accounts a choice retires,
    the free username a rename takes. Raises ResolutionError naming what is wrong."""
    params = dict(params or {})
    target = discrepancy or conflict
    if target is None:
        raise ResolutionError("a resolution needs a discrepancy or a conflict")
    if conflict is not None and action not in CONFLICT_ACTIONS.get(conflict.kind, ()):
        raise ResolutionError(f"{action} does not resolve a {conflict.get_kind_display().lower()} conflict")
    if not is_open(target):
        raise ResolutionError("this is already settled; nothing to propose")
    if action in (ResolutionAction.LINK, ResolutionAction.CHOOSE) and not params.get("user_id"):
        raise ResolutionError("say which Moodle user to link")
    offered = discrepancy.candidates if discrepancy is not None else conflict.their_users
    if params.get("user_id"):
        # Only a user the hub found in the way may be linked, and never one linked to someone else:
        # one Moodle account for two people would have each sync overwrite the other.
        if int(params["user_id"]) not in {int(u["id"]) for u in offered or []}:
            raise ResolutionError(f"Moodle user {params['user_id']} is not one of the users offered here")
        taken = SyncRecord.objects.filter(site=target.site, moodle_id=int(params["user_id"])).exclude(
            pk=target.record_id
        )
        if taken.exists():
            raise ResolutionError(
                f"Moodle user {params['user_id']} is already linked to record {taken.first().external_id}"
            )
    if action == ResolutionAction.CHOOSE:
        params["retire"] = [int(c["id"]) for c in offered if int(c["id"]) != int(params["user_id"])]
    if action == ResolutionAction.RENAME:
        params["overrides"] = {"username": alternative_username(target.record, client)}
    return params


def is_open(target: Discrepancy | Conflict) -> bool:
    """Still waiting for a decision: a resolved conflict or a superseded discrepancy takes no more."""
    if isinstance(target, Conflict):
        return target.status == ConflictStatus.OPEN
    return target.status in DiscrepancyStatus.waiting()


def preview(action: str, **kwargs) -> list:
    """The exact calls a proposal would make, without recording anything."""
    discrepancy, conflict = kwargs.get("discrepancy"), kwargs.get("conflict")
    params = complete_params(action, **kwargs)
    return planned_calls(
        action, record=(discrepancy or conflict).record, discrepancy=discrepancy, params=params
    )


def propose(
    *,
    action: str,
    user=None,
    discrepancy: Discrepancy | None = None,
    conflict: Conflict | None = None,
    params: dict | None = None,
    client: MoodleClient | None = None,
) -> Resolution:
    """Record a proposal. `params` names the chosen Moodle user for link, re-link and choose."""
    params = complete_params(action, discrepancy=discrepancy, conflict=conflict, params=params, client=client)
    target = discrepancy or conflict
    if Resolution.objects.filter(
        discrepancy=discrepancy,
        conflict=conflict,
        status__in=[ResolutionStatus.PROPOSED, ResolutionStatus.APPROVED],
    ).exists():
        raise ResolutionError("a resolution is already proposed for this; approve or reject it first")
    return Resolution.objects.create(
        site=target.site,
        discrepancy=discrepancy,
        conflict=conflict,
        action=action,
        params=params,
        calls=planned_calls(action, record=target.record, discrepancy=discrepancy, params=params),
        proposed_by=user,
    )


def dismiss(discrepancy: Discrepancy, user, note: str) -> Resolution:
    """Decline a discrepancy's proposal without choosing anything (e.g. duplicates nobody should link):
    recorded as a rejected resolution with no calls, so the trail says who and why."""
    if not note.strip():
        raise ResolutionError("say why it is rejected")
    resolution = Resolution(
        site=discrepancy.site, discrepancy=discrepancy, action=discrepancy.proposed_action, calls=[]
    )
    check_may_decide(user, resolution)
    resolution.status = ResolutionStatus.REJECTED
    resolution.decided_by = user
    resolution.decided_at = timezone.now()
    resolution.note = note.strip()
    resolution.save()
    Discrepancy.objects.filter(pk=discrepancy.pk).update(status=DiscrepancyStatus.REJECTED)
    return resolution


def alternative_username(record: SyncRecord, client: MoodleClient | None) -> str:
    """The first username the site's rule gives that no Moodle user holds (one look-up of ten at a time)."""
    rule = record.site.rename_rule
    base = record.payload.get("username", record.external_id)
    for start in itertools.count(1, 10):
        names = [
            rule.format(username=base, external_id=record.external_id.lower(), n=n).lower()
            for n in range(start, start + 10)
        ]
        taken = {u["username"] for u in client.get_users_by_field("username", names)} if client else set()
        free = [name for name in names if name not in taken]
        if free:
            return free[0]
    raise AssertionError("unreachable")  # pragma: no cover


def comment(
    user, text: str, *, discrepancy: Discrepancy | None = None, conflict: Conflict | None = None
) -> Comment:
    text = text.strip()
    if not text:
        raise ResolutionError("a comment needs some text")
    return Comment.objects.create(author=user, text=text, discrepancy=discrepancy, conflict=conflict)


# -- deciding ----------------------------------------------------------------------------------------


def check_may_decide(user, resolution: Resolution) -> None:
    """Raises PermissionDenied with the reason; used by the pages and again by the task."""
    if user is None or not user.is_active or not user.has_perm(APPROVE_PERMISSION):
        raise PermissionDenied("only Admins approve or reject resolutions")
    if resolution.site.four_eyes and resolution.proposed_by_id == user.pk:
        raise PermissionDenied("four-eyes rule: someone other than the proposer must approve")


def approve(resolutions: list[Resolution], user, note: str = "", *, enqueue: bool = True) -> SyncRun | None:
    """Approve proposals (all of one site) and queue the run that applies them."""
    resolutions = [r for r in resolutions if r.status == ResolutionStatus.PROPOSED]
    if not resolutions:
        return None
    sites = {r.site_id for r in resolutions}
    if len(sites) != 1:
        raise ResolutionError("approve the resolutions of one site at a time")
    for resolution in resolutions:
        check_may_decide(user, resolution)
        if not is_open(resolution.discrepancy or resolution.conflict):
            raise ResolutionError("one of these is already settled; reload the page")
    from .runs import enqueue_run

    with transaction.atomic():
        run = SyncRun.objects.create(
            site=resolutions[0].site, kind=RunKind.RESOLUTION, started_by=user, planned_at=timezone.now()
        )
        Resolution.objects.filter(
            pk__in=[r.pk for r in resolutions], status=ResolutionStatus.PROPOSED
        ).update(
            status=ResolutionStatus.APPROVED, decided_by=user, decided_at=timezone.now(), note=note, run=run
        )
        RunEvent.objects.create(
            run=run, message=f"{len(resolutions)} resolution(s) approved by {user.get_username()}"
        )
        return enqueue_run(run) if enqueue else run


def reject(resolution: Resolution, user, note: str) -> None:
    check_may_decide(user, resolution)
    if not note.strip():
        raise ResolutionError("say why it is rejected")
    Resolution.objects.filter(pk=resolution.pk, status=ResolutionStatus.PROPOSED).update(
        status=ResolutionStatus.REJECTED, decided_by=user, decided_at=timezone.now(), note=note.strip()
    )
    if resolution.discrepancy_id:
        Discrepancy.objects.filter(pk=resolution.discrepancy_id).update(status=DiscrepancyStatus.REJECTED)


# -- applying (inside a run of kind resolution) ------------------------------------------------------


def apply_approved(executor: RunExecutor, client: MoodleClient) -> None:
    resolutions = list(
        Resolution.objects.filter(run=executor.run, status=ResolutionStatus.APPROVED).select_related(
            "decided_by", "site", "discrepancy__record", "conflict__record"
        )
    )
    SyncRun.objects.filter(pk=executor.run.pk).update(progress_total=len(resolutions))
    mapping = Mapping.from_config(executor.site.source.mapping)
    processor = BatchProcessor(client, match_key=mapping.match_key, auth=mapping.auth)
    for resolution in resolutions:
        executor._check_control()
        try:
            check_may_decide(resolution.decided_by, resolution)
        except PermissionDenied as refused:
            _finish(resolution, ok=False, outcome=f"refused when applying: {refused}")
            continue
        if not is_open(resolution.discrepancy or resolution.conflict):
            _finish(resolution, ok=False, outcome="not applied: settled meanwhile (a sync or a later night)")
            continue
        ok, outcome = _apply_patiently(resolution, client, processor, executor)
        _finish(resolution, ok=ok, outcome=outcome)
        SyncRun.objects.filter(pk=executor.run.pk).update(progress_done=executor.run.progress_done + 1)
        executor.run.progress_done += 1


def _apply_patiently(resolution: Resolution, client, processor: BatchProcessor, executor) -> tuple[bool, str]:
    """Apply one resolution, waiting out the breaker and maintenance like a run does; a refusal of this
    resolution's data fails it alone, an auth or configuration failure stops the run."""
    while True:
        try:
            return _apply_one(resolution, client, processor, executor)
        except Interrupted as stop:
            cause = stop.cause
        except MoodleError as error:
            cause = error
        if isinstance(cause, MoodleError) and cause.category in (errors.CLIENT_FAULT, errors.CONFLICT):
            return False, f"Moodle refused it: {cause}"
        executor._handle_interruption(cause, [])


def _apply_one(resolution: Resolution, client, processor: BatchProcessor, executor) -> tuple[bool, str]:
    action = resolution.action
    target = resolution.discrepancy or resolution.conflict
    record = target.record
    if action == ResolutionAction.IGNORE:
        return True, "ignored: no change"
    if action in (ResolutionAction.SUSPEND, ResolutionAction.UNSUSPEND, ResolutionAction.UPDATE):
        for call in resolution.calls:
            answer = executor._patiently(lambda c=call: client.update_users(c["params"]["users"]))
            if answer.failures:
                return False, "; ".join(f"{f.warningcode}: {f.message}" for f in answer.failures)
        orphan = resolution.discrepancy and resolution.discrepancy.kind == DiscrepancyKind.ORPHAN_IN_MOODLE
        if record is not None and action == ResolutionAction.SUSPEND and orphan:
            SyncRecord.objects.filter(pk=record.pk).update(suspended_by_hub=True)
        return True, f"{len(resolution.calls)} call(s) made"
    # Links, re-links, choices, creates and renames change who the record points at, then let the batch
    # logic (look-ups, conflict checks, isolation) bring the Moodle user in step with the source.
    user_id = resolution.params.get("user_id")
    for call in resolution.calls:
        if call["function"] == "core_user_update_users":
            answer = executor._patiently(lambda c=call: client.update_users(c["params"]["users"]))
            if answer.failures:
                return False, "; ".join(f"{f.warningcode}: {f.message}" for f in answer.failures)
    record.moodle_id = int(user_id) if user_id else None
    record.overrides = {**record.overrides, **resolution.params.get("overrides", {})}
    record.payload = {**record.payload, **record.overrides}
    record.sync_status = SyncStatus.PENDING
    record.pending_action = PendingAction.UPSERT
    record.save(update_fields=["moodle_id", "overrides", "payload", "sync_status", "pending_action"])
    results = processor.process([record])
    commit_batch(executor.run, [record], results, executor.lock)
    result = results[record.external_id]
    if result.status != SyncStatus.OK:
        return False, result.message or result.status
    return True, f"linked to Moodle user {result.moodle_id}; {result.action}"


def _finish(resolution: Resolution, *, ok: bool, outcome: str) -> None:
    now = timezone.now()
    Resolution.objects.filter(pk=resolution.pk).update(
        status=ResolutionStatus.APPLIED if ok else ResolutionStatus.FAILED,
        outcome=outcome[:2000],
        applied_at=now if ok else None,
    )
    if resolution.discrepancy_id:
        Discrepancy.objects.filter(pk=resolution.discrepancy_id).update(
            status=DiscrepancyStatus.APPLIED if ok else DiscrepancyStatus.FAILED
        )
    if resolution.conflict_id and ok:
        status = (
            ConflictStatus.IGNORED
            if resolution.action == ResolutionAction.IGNORE
            else ConflictStatus.RESOLVED
        )
        Conflict.objects.filter(pk=resolution.conflict_id).update(status=status, resolved_at=now)
