"""The blast-radius guard: one rule for every change that takes access away from people.

A source that lost half its rows must not suspend half the site, and neither may one click on a long
list. Whatever proposes or applies such a change — a sync suspending people who left the source, the
nightly reconciliation proposing to suspend orphans, an admin approving suspensions, the task applying
them — asks `measure()` and gets the same verdict with the same words. Going past the limit is possible
only through an explicit override (sync.resolutions), which this module does not grant.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Q

from .choices import ResolutionAction, ResolutionStatus
from .models import MoodleSite, Resolution, SyncRecord

VERBS = {
    ResolutionAction.SUSPEND: "suspends",
    ResolutionAction.RELINK: "re-links",
    ResolutionAction.CHOOSE: "suspends the other accounts of",
}


@dataclass(frozen=True)
class BlastRadius:
    """How many users a change touches against what the site allows, with the verdict in words."""

    count: int
    linked: int
    limit: int
    percent: Decimal
    max_count: int
    site_name: str
    verb: str = "suspends"
    already: int = 0  # approved and not applied yet: counted with this change

    @property
    def total(self) -> int:
        return self.count + self.already

    @property
    def allowed(self) -> bool:
        return self.total <= self.limit

    @property
    def share(self) -> float:
        return 100 * self.total / max(self.linked, 1)

    def sentence(self) -> str:
        """e.g. "suspends 2,038 users = 51 % of the 3,990 linked users on Demo University; the site's
        limit is 2 % (79)"."""
        queued = f" (with {self.already:,} already approved and not applied yet)" if self.already else ""
        users = "user" if self.total == 1 else "users"
        return (
            f"{self.verb} {self.total:,} {users}{queued} = {self.share:.0f} % of the {self.linked:,} linked "
            f"users on {self.site_name}; the site's limit is {_percent(self.percent)} % ({self.limit:,})"
            + (f", never more than {self.max_count:,}" if self.limit == self.max_count else "")
        )


def _percent(value: Decimal) -> str:
    return f"{value.normalize():f}"


def linked_users(site: MoodleSite) -> int:
    """The users the hub has linked on the site: the base the limit's share is taken of."""
    return SyncRecord.objects.filter(site=site, moodle_id__isnull=False).count()


def measure(
    site: MoodleSite,
    count: int,
    *,
    linked: int | None = None,
    verb: str = "suspends",
    already: int = 0,
) -> BlastRadius:
    linked = linked_users(site) if linked is None else linked
    return BlastRadius(
        count=count,
        linked=linked,
        limit=site.destructive_limit(linked),
        percent=site.max_removal_percent,
        max_count=site.max_removal_count,
        site_name=site.name,
        verb=verb,
        already=already,
    )


def weight(resolution: Resolution) -> int:
    """Users a resolution takes access from or moves to another person: a suspension or a re-link is one;
    a choice among duplicates suspends every other matching account."""
    if resolution.action == ResolutionAction.CHOOSE:
        return len(resolution.params.get("retire", []))
    return 1 if resolution.action in ResolutionAction.destructive() else 0


def takes_accounts(action: str) -> bool:
    """Destructive for the user's account (counted against the site's users), not for one course or cohort
    (counted against its people: measure_target)."""
    return action in ResolutionAction.destructive() and action not in ResolutionAction.membership_removals()


def in_flight(site: MoodleSite, *, exclude: list[int] | None = None) -> int:
    """Destructive changes approved on the site without an override and not applied yet: a second
    approval is counted together with them, so two admins at once cannot double the limit."""
    rows = Resolution.objects.filter(
        site=site,
        status__in=[ResolutionStatus.APPROVED, ResolutionStatus.APPLYING],
        action__in=ResolutionAction.destructive() - ResolutionAction.membership_removals(),
    ).filter(Q(override__isnull=True))
    if exclude:
        rows = rows.exclude(pk__in=exclude)
    return sum(weight(r) for r in rows.only("action", "params"))


@dataclass(frozen=True)
class TargetRadius:
    """How many people a change takes out of one course or cohort, against the site's limit for it."""

    count: int
    members: int
    limit: int
    percent: Decimal
    label: str
    verb: str = "suspends the enrolments of"
    already: int = 0

    @property
    def total(self) -> int:
        return self.count + self.already

    @property
    def allowed(self) -> bool:
        return self.total <= self.limit

    @property
    def linked(self) -> int:
        """The base of the share (a GuardOverride keeps it as its linked users)."""
        return self.members

    def sentence(self) -> str:
        """e.g. "unenrols 212 of the 240 people in course CHEM101 (88 %); the site's limit is 2 % (4)"."""
        share = 100 * self.total / max(self.members, 1)
        queued = f" (with {self.already:,} already approved and not applied yet)" if self.already else ""
        return (
            f"{self.verb} {self.total:,} of the {self.members:,} people in {self.label}{queued} "
            f"({share:.0f} %); "
            f"the site's limit is {_percent(self.percent)} % ({self.limit:,})"
        )


TARGET_VERBS = {
    ResolutionAction.SUSPEND_ENROLMENT: "suspends the enrolments of",
    ResolutionAction.UNENROL: "unenrols",
    ResolutionAction.COHORT_REMOVE: "removes",
}


def measure_target(site: MoodleSite, target, count: int, *, verb: str, already: int = 0) -> TargetRadius:
    """The guard's verdict for taking `count` people out of one course or cohort; the base is everyone the
    hub has in it (active or suspended in Moodle, as far as the hub knows)."""
    members = target.memberships.filter(synced__in=["active", "suspended"]).count()
    return TargetRadius(
        count=count,
        members=members,
        limit=site.destructive_limit(members),
        percent=site.max_removal_percent,
        label=f"{target.get_kind_display().lower()} {target.key}",
        verb=verb,
        already=already,
    )


def target_in_flight(target, *, exclude: list[int] | None = None) -> int:
    """Removals from this course or cohort approved without an override and not applied yet."""
    rows = Resolution.objects.filter(
        discrepancy__membership__target=target,
        status__in=[ResolutionStatus.APPROVED, ResolutionStatus.APPLYING],
        action__in=ResolutionAction.membership_removals(),
        override__isnull=True,
    )
    if exclude:
        rows = rows.exclude(pk__in=exclude)
    return rows.count()
