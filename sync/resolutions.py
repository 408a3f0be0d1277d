"""Resolutions: proposing, approving and rejecting the changes that need a person's decision.

Operators may propose and comment; only holders of `sync.approve_resolution` (the Admins group) approve or
reject — checked here, so the page and the task that applies are both covered. With the site's four-eyes
rule on, whoever proposed a resolution cannot approve it. Destructive changes (suspensions, re-links) are
approved on their own and within the blast-radius limit (sync.guard), or under an explicit override: the
number of users typed out, a reason, and with four-eyes a second admin's confirmation.

Approving never calls Moodle from the request: approved resolutions join the site's queued resolution
run (sync.run.apply_resolutions applies them while holding the site's lock), so approvals made one after the
other are all applied, in order, and each keeps its trail (calls, outcome).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Prefetch
from django.utils import timezone

from monitoring.alerts import raise_alert, resolve_alert
from monitoring.kinds import AlertKind, guard_override_key
from monitoring.models import AuditEntry

from . import guard
from .choices import (
    ConflictKind,
    ConflictStatus,
    DiscrepancyStatus,
    MembershipKind,
    OverrideStatus,
    ResolutionAction,
    ResolutionStatus,
    RunKind,
    RunStatus,
)
from .dispatch import enqueue_run
from .mapping import MappedRecord, payload_for_create
from .models import (
    Comment,
    Conflict,
    Discrepancy,
    GuardOverride,
    MoodleSite,
    Resolution,
    RunEvent,
    SyncRecord,
    SyncRun,
)
from .moodle.client import cohort_member
from .moodle.errors import SeamError
from .roles import APPROVE_PERMISSION, check_may_decide
from .run.connect import NoActiveToken, client_for
from .run.memberships import enrolment_item
from .words import counted

if TYPE_CHECKING:
    from .moodle.client import MoodleClient

# Actions that need an admin to pick the Moodle user first: never part of a bulk approval.
NEEDS_CHOICE = (ResolutionAction.CHOOSE, ResolutionAction.RELINK)
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
    if action in ResolutionAction.membership():
        return membership_calls(action, discrepancy)
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
    payload = payload_for_create(MappedRecord.staged(record))
    payload.update(params.get("overrides", {}))
    payload["idnumber"] = record.external_id
    return [{"function": "core_user_create_users", "params": {"users": [payload]}}]


def membership_calls(action: str, discrepancy: Discrepancy) -> list:
    """The one call that changes a person's place in a course or cohort."""
    membership = discrepancy.membership
    target, user_id = membership.target, membership.record.moodle_id
    if target.kind == MembershipKind.COHORT:
        if action == ResolutionAction.COHORT_ADD:
            return [
                {"function": "core_cohort_add_cohort_members",
                 "params": {"members": [cohort_member(target.moodle_id, user_id)]}}
            ]  # fmt: skip
        return [
            {"function": "core_cohort_delete_cohort_members",
             "params": {"members": [{"cohortid": target.moodle_id, "userid": user_id}]}}
        ]  # fmt: skip
    if action == ResolutionAction.UNENROL:
        item = {"userid": user_id, "courseid": target.moodle_id}
        return [{"function": "enrol_manual_unenrol_users", "params": {"enrolments": [item]}}]
    role_id = int(target.site.role_ids.get(membership.role, 0))
    item = enrolment_item(membership, role_id, suspend=action == ResolutionAction.SUSPEND_ENROLMENT)
    return [{"function": "enrol_manual_enrol_users", "params": {"enrolments": [item]}}]


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
        discrepancy=discrepancy, conflict=conflict, status__in=ResolutionStatus.in_flight()
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


NEW_ACCOUNT = "new"  # the choice "create a new Moodle account" where a Moodle user is picked


def propose_for_conflict(conflict: Conflict, action: str, user, picked: str = "") -> Resolution:
    """An operator's proposal on a conflict's page: link (to the Moodle user `picked`), rename (to the
    first free username, asked of Moodle now), re-link, or ignore. Refusals are ResolutionErrors in words."""
    if conflict.status != ConflictStatus.OPEN:
        raise ResolutionError(f"this conflict is {conflict.get_status_display().lower()}")
    params: dict = {}
    picked = (picked or "").strip()
    if picked and picked != NEW_ACCOUNT:
        if not picked.isdigit():
            raise ResolutionError("a Moodle user id is a number")
        params["user_id"] = int(picked)
    if action != ResolutionAction.RENAME or action not in CONFLICT_ACTIONS.get(conflict.kind, ()):
        return propose(action=action, conflict=conflict, user=user, params=params)
    # The alternative username must be free in Moodle: ask it now, through the throttled client.
    try:
        with client_for(conflict.site) as client:
            return propose(action=action, conflict=conflict, user=user, params=params, client=client)
    except NoActiveToken:
        raise ResolutionError(
            f"a free username is looked up in Moodle, and {conflict.site.name} has no active service token; "
            "an administrator adds or promotes one on the site page"
        ) from None
    except SeamError as exc:
        raise ResolutionError(f"Moodle did not answer the username look-up: {exc}") from None
    except redis.RedisError:
        raise ResolutionError(
            "Redis, which paces calls to Moodle, did not answer; try again shortly"
        ) from None


def approve_discrepancy(discrepancy: Discrepancy, user, params: dict, note: str = "") -> SyncRun | None:
    """An admin approves the reconciliation's own proposal for one discrepancy (with the Moodle user they
    picked, where one is needed): recorded as a proposal and its approval, together or not at all."""
    with transaction.atomic():
        # Proposed by the reconciliation (no person): the four-eyes rule leaves the admin free to approve.
        proposal = propose(action=discrepancy.proposed_action, discrepancy=discrepancy, params=params)
        return approve([proposal], user, note)


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


class GuardRefused(ResolutionError):
    """The approval would pass the site's blast-radius limit: only an explicit override may go on."""

    def __init__(self, verdict: guard.BlastRadius) -> None:
        self.verdict = verdict
        super().__init__(
            f"this {verdict.sentence()}. Going past the limit needs an explicit override: type the number "
            "of users and give a reason"
        )


def is_destructive(resolution: Resolution) -> bool:
    return resolution.action in ResolutionAction.destructive()


def blast_radius(resolutions: list[Resolution], site: MoodleSite) -> guard.BlastRadius:
    """What approving these would do to the site, counted with what is approved and not applied yet."""
    destructive = [r for r in resolutions if guard.takes_accounts(r.action)]
    actions = {r.action for r in destructive}
    verb = guard.VERBS.get(next(iter(actions)), "changes") if len(actions) == 1 else "changes"
    return guard.measure(
        site,
        sum(guard.weight(r) for r in destructive),
        verb=verb,
        already=guard.in_flight(site, exclude=[r.pk for r in resolutions if r.pk]),
    )


def approve(
    resolutions: list[Resolution],
    user,
    note: str = "",
    *,
    override: GuardOverride | None = None,
    enqueue: bool = True,
) -> SyncRun | None:
    """Approve proposals (all of one site) for the site's resolution run, which applies everything approved,
    in the order approved. Destructive and safe changes are never approved together, and destructive ones
    only within the blast-radius limit or under a confirmed override that covers exactly them."""
    resolutions = [r for r in resolutions if r.status == ResolutionStatus.PROPOSED]
    if not resolutions:
        return None
    sites = {r.site_id for r in resolutions}
    if len(sites) != 1:
        raise ResolutionError("approve the resolutions of one site at a time")
    site = resolutions[0].site
    for resolution in resolutions:
        check_may_decide(user, resolution)
        if not is_open(resolution.discrepancy or resolution.conflict):
            raise ResolutionError("one of these is already settled; reload the page")
    destructive = [r for r in resolutions if is_destructive(r)]
    if destructive and len(destructive) != len(resolutions):
        raise ResolutionError(
            "destructive changes (suspensions, re-links) are approved on their own, never together with "
            "safe ones"
        )
    if override is not None:
        _check_override_covers(override, resolutions)
    elif destructive:
        verdict = blast_radius(resolutions, site)
        if not verdict.allowed:
            raise GuardRefused(verdict)
        for verdict in target_radii(resolutions, site):
            if not verdict.allowed:
                raise GuardRefused(verdict)
    with transaction.atomic():
        # One approval at a time per site: two admins at once must not both miss the queued run.
        MoodleSite.objects.select_for_update().filter(pk=site.pk).first()
        run, created = _resolution_run(site, user)
        ids = [r.pk for r in resolutions]
        approved = Resolution.objects.filter(pk__in=ids, status=ResolutionStatus.PROPOSED).update(
            status=ResolutionStatus.APPROVED,
            decided_by=user,
            decided_at=timezone.now(),
            note=note,
            run=run,
            override=override,
            outcome="",
        )
        Discrepancy.objects.filter(resolutions__pk__in=ids).update(status=DiscrepancyStatus.APPROVED)
        RunEvent.objects.create(
            run=run,
            message=f"{counted(approved, 'resolution')} approved by {user.get_username()}"
            + (f" under override #{override.pk}" if override else ""),
        )
        if created and enqueue:
            enqueue_run(run.pk)
    return run


def guard_verdict(resolutions: list[Resolution], site: MoodleSite) -> guard.BlastRadius | guard.TargetRadius:
    """The guard's verdict a person sees before approving these: per course or cohort for membership removals,
    against the site's users for the rest; the first one past its limit, else the largest."""
    radii = target_radii(resolutions, site)
    accounts = blast_radius(resolutions, site)
    candidates = [*([accounts] if accounts.count or not radii else []), *radii]
    over = [v for v in candidates if not v.allowed]
    return over[0] if over else max(candidates, key=lambda v: v.total)


def target_radii(resolutions: list[Resolution], site: MoodleSite) -> list[guard.TargetRadius]:
    """The guard's verdict per course and cohort that these resolutions take people out of."""
    by_target: dict[int, list[Resolution]] = defaultdict(list)
    for resolution in resolutions:
        if resolution.action in ResolutionAction.membership_removals() and resolution.discrepancy_id:
            by_target[resolution.discrepancy.membership.target_id].append(resolution)
    verdicts = []
    for group in by_target.values():
        target = group[0].discrepancy.membership.target
        verb = guard.TARGET_VERBS.get(group[0].action, "removes")
        already = guard.target_in_flight(target, exclude=[r.pk for r in resolutions if r.pk])
        verdicts.append(guard.measure_target(site, target, len(group), verb=verb, already=already))
    return verdicts


def _resolution_run(site: MoodleSite, user) -> tuple[SyncRun, bool]:
    """The site's queued resolution run (approvals join it), or a new one."""
    queued = SyncRun.objects.filter(site=site, kind=RunKind.RESOLUTION, status=RunStatus.QUEUED).first()
    if queued is not None:
        return queued, False
    run = SyncRun.objects.create(
        site=site, kind=RunKind.RESOLUTION, started_by=user, planned_at=timezone.now()
    )
    return run, True


def _check_override_covers(override: GuardOverride, resolutions: list[Resolution]) -> None:
    if override.status != OverrideStatus.CONFIRMED:
        raise ResolutionError(f"override #{override.pk} is {override.get_status_display().lower()}")
    weight = sum(guard.weight(r) for r in resolutions if is_destructive(r))
    if weight != override.count:
        raise ResolutionError(
            f"override #{override.pk} was typed for {counted(override.count, 'user', grouped=True)}; "
            f"these are {weight:,}"
        )


def reject(resolution: Resolution, user, note: str) -> None:
    check_may_decide(user, resolution)
    if not note.strip():
        raise ResolutionError("say why it is rejected")
    Resolution.objects.filter(pk=resolution.pk, status=ResolutionStatus.PROPOSED).update(
        status=ResolutionStatus.REJECTED, decided_by=user, decided_at=timezone.now(), note=note.strip()
    )
    if resolution.discrepancy_id:
        Discrepancy.objects.filter(pk=resolution.discrepancy_id).update(status=DiscrepancyStatus.REJECTED)


# -- going past the guard -----------------------------------------------------------------------------


def request_override(
    resolutions: list[Resolution], user, *, typed_count: int | None, reason: str
) -> tuple[GuardOverride, SyncRun | None]:
    """An admin's explicit decision to pass the limit: the exact number of users typed out and a reason.
    With four-eyes on it waits for a second admin (confirm_override); otherwise it is approved at once.
    Either way it is an audit entry and one alert."""
    resolutions = [r for r in resolutions if r.status == ResolutionStatus.PROPOSED]
    if not resolutions:
        raise ResolutionError("nothing is waiting to be approved here")
    site = resolutions[0].site
    if any(r.site_id != site.pk for r in resolutions) or not all(is_destructive(r) for r in resolutions):
        raise ResolutionError("an override covers destructive changes of one site only")
    for resolution in resolutions:
        check_may_decide(user, resolution)
    verdict = blast_radius(resolutions, site)
    radii = target_radii(resolutions, site)
    if radii and len(radii) + (verdict.count > 0) > 1:
        raise ResolutionError("go past the guard for one course or cohort at a time")
    if radii:
        verdict = radii[0]
    if verdict.allowed:
        raise ResolutionError("these are within the site's limit: approve them without an override")
    if typed_count != verdict.count:
        raise ResolutionError(f"type the number of users exactly as shown ({verdict.count}) to confirm")
    if not (reason or "").strip():
        raise ResolutionError("give the reason for going past the limit")
    four_eyes = site.four_eyes
    with transaction.atomic():
        override = GuardOverride.objects.create(
            site=site,
            action=resolutions[0].action if len({r.action for r in resolutions}) == 1 else "",
            count=verdict.count,
            linked_users=verdict.linked,
            limit=verdict.limit,
            reason=reason.strip(),
            status=OverrideStatus.PENDING if four_eyes else OverrideStatus.CONFIRMED,
            requested_by=user,
            decided_by=None if four_eyes else user,
            decided_at=None if four_eyes else timezone.now(),
        )
        Resolution.objects.filter(pk__in=[r.pk for r in resolutions]).update(override=override)
        AuditEntry.objects.create(
            actor=user,
            action="guard.override_requested" if four_eyes else "guard.override",
            target=f"site {site.slug} override #{override.pk}",
            detail=f"{verdict.sentence()}; reason: {override.reason}",
        )
        raise_alert(
            guard_override_key(override.pk),
            kind=AlertKind.GUARD_OVERRIDE,
            site=site,
            title=f"{site.name}: {user.get_username()} "
            + ("asks to go" if four_eyes else "went")
            + f" past the blast-radius guard: {verdict.verb} {counted(verdict.count, 'user', grouped=True)}",
            detail=f"This {verdict.sentence()}. Reason given: {override.reason}."
            + (" A second admin must confirm it on the override's page." if four_eyes else ""),
        )
        run = None if four_eyes else approve(resolutions, user, override.reason, override=override)
    return override, run


def confirm_override(override: GuardOverride, user) -> SyncRun | None:
    """The second admin's confirmation (four-eyes): the override's approvals are queued."""
    if user is None or not user.has_perm(APPROVE_PERMISSION):
        raise PermissionDenied("only Admins confirm an override")
    if override.requested_by_id == user.pk:
        raise PermissionDenied("four-eyes rule: a second admin must confirm the override")
    with transaction.atomic():
        claimed = GuardOverride.objects.filter(pk=override.pk, status=OverrideStatus.PENDING).update(
            status=OverrideStatus.CONFIRMED, decided_by=user, decided_at=timezone.now()
        )
        if not claimed:
            raise ResolutionError(f"override #{override.pk} was already decided")
        override.refresh_from_db()
        AuditEntry.objects.create(
            actor=user,
            action="guard.override_confirmed",
            target=f"site {override.site.slug} override #{override.pk}",
            detail=f"{counted(override.count, 'user')}; requested by "
            f"{override.requested_by.get_username() if override.requested_by else 'someone'}",
        )
        resolutions = list(override.resolutions.select_related("site", "discrepancy", "conflict"))
        return approve(resolutions, user, override.reason, override=override)


def reject_override(override: GuardOverride, user, note: str) -> None:
    if user is None or not user.has_perm(APPROVE_PERMISSION):
        raise PermissionDenied("only Admins decide on an override")
    if not (note or "").strip():
        raise ResolutionError("say why the override is rejected")
    with transaction.atomic():
        claimed = GuardOverride.objects.filter(pk=override.pk, status=OverrideStatus.PENDING).update(
            status=OverrideStatus.REJECTED, decided_by=user, decided_at=timezone.now(), note=note.strip()
        )
        if not claimed:
            raise ResolutionError(f"override #{override.pk} was already decided")
        Resolution.objects.filter(override=override, status=ResolutionStatus.PROPOSED).update(override=None)
        AuditEntry.objects.create(
            actor=user,
            action="guard.override_rejected",
            target=f"site {override.site.slug} override #{override.pk}",
            detail=note.strip(),
        )
    resolve_alert(guard_override_key(override.pk))


# -- bulk approval of discrepancies -------------------------------------------------------------------


@dataclass
class BulkPlan:
    """What approving a filtered list of discrepancies would do, per site, before anything is decided."""

    items: list[Discrepancy]
    left_out: int  # choices of Moodle user: approved one by one
    destructive: list[Discrepancy] = field(default_factory=list)
    safe: list[Discrepancy] = field(default_factory=list)
    verdicts: dict[int, guard.BlastRadius] = field(default_factory=dict)

    @property
    def mixed(self) -> bool:
        return bool(self.destructive) and bool(self.safe)

    @property
    def sites(self) -> list[tuple[MoodleSite, int]]:
        counts: dict[int, list[Discrepancy]] = defaultdict(list)
        for item in self.items:
            counts[item.site_id].append(item)
        return [(group[0].site, len(group)) for group in counts.values()]

    @property
    def over_limit(self) -> list[guard.BlastRadius]:
        return [v for v in self.verdicts.values() if not v.allowed]


def bulk_plan(discrepancies) -> BulkPlan:
    """Split the approvable discrepancies into destructive and safe, with each site's blast radius."""
    approvable = (
        discrepancies.filter(status__in=DiscrepancyStatus.waiting())
        .exclude(proposed_action__in=NEEDS_CHOICE)
        .exclude(resolutions__status__in=[ResolutionStatus.APPROVED, ResolutionStatus.APPLYING])
    )
    left_out = discrepancies.filter(
        status__in=DiscrepancyStatus.waiting(), proposed_action__in=NEEDS_CHOICE
    ).count()
    items = list(
        approvable.select_related("site", "record")
        .prefetch_related(
            Prefetch(
                "resolutions",
                queryset=Resolution.objects.filter(status=ResolutionStatus.PROPOSED),
                to_attr="proposals",
            )
        )
        .order_by("site__name", "kind", "pk")
    )
    plan = BulkPlan(items=items, left_out=left_out)
    for item in items:
        (plan.destructive if item.proposed_action in ResolutionAction.destructive() else plan.safe).append(
            item
        )
    by_site: dict[int, list[Discrepancy]] = defaultdict(list)
    for item in plan.destructive:
        by_site[item.site_id].append(item)
    for site_id, group in by_site.items():
        site = group[0].site
        plan.verdicts[site_id] = guard_verdict(
            [Resolution(site=site, discrepancy=item, action=item.proposed_action) for item in group], site
        )
    return plan


def bulk_preview(plan: BulkPlan, limit: int) -> tuple[list[dict], bool]:
    """The first `limit` calls a bulk approval makes (each with its discrepancy), and whether there are
    more: the count above them on the page is always exact."""
    calls: list[dict] = []
    for item in plan.items:
        if len(calls) > limit:
            break
        planned = (
            item.proposals[0].calls
            if item.proposals
            else planned_calls(item.proposed_action, record=item.record, discrepancy=item, params={})
        )
        calls.extend({"d": item, **call} for call in planned)
    return calls[:limit], len(calls) > limit


def approve_discrepancies(
    plan: BulkPlan, user, note: str = "", *, typed_count: int | None = None, reason: str = ""
) -> list[tuple[MoodleSite, int, SyncRun | None, GuardOverride | None]]:
    """Approve a bulk plan: one group per site, each joining the site's resolution run. A site past its
    limit goes through an override (the typed count and the reason), or is refused."""
    if plan.mixed:
        raise ResolutionError(
            "this list mixes destructive changes with safe ones: approve the suspensions and the other "
            "changes separately"
        )
    groups: dict[int, list[Discrepancy]] = defaultdict(list)
    for item in plan.items:
        groups[item.site_id].append(item)
    done = []
    with transaction.atomic():
        for group in groups.values():
            site = group[0].site
            proposals = [
                item.proposals[0]
                if item.proposals
                else propose(action=item.proposed_action, discrepancy=item)
                for item in group
            ]
            verdict = plan.verdicts.get(site.pk)
            if verdict is not None and not verdict.allowed:
                override, run = request_override(proposals, user, typed_count=typed_count, reason=reason)
                done.append((site, len(group), run, override))
            else:
                done.append((site, len(group), approve(proposals, user, note), None))
    return done
