"""Pages of a site's courses and cohorts: one row per course (or cohort) with its people counted by where
they stand, one course's (or cohort's) people, and every membership of the site, filtered."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet
from django.shortcuts import get_object_or_404

from web.pages import list_page

from ..choices import MembershipKind, MembershipState, MembershipStatus
from ..forms import UNSENT, MembershipFilterForm, SiteMembershipFilterForm, TargetFilterForm
from ..membership_rules import MembershipConfigError, MembershipRules
from ..models import MembershipTarget, MoodleSite, SyncSource

# A membership's record without the columns no list shows (the payload can be large).
_RECORD_UNUSED = ("record__payload", "record__create_only")


def target_list(request, slug: str, kind: str):
    site = get_object_or_404(MoodleSite, slug=slug)
    filters = TargetFilterForm(request.GET)
    rows = filters.filter(site.membership_targets.filter(kind=kind)).order_by("key", "pk")
    return list_page(
        request,
        "sync/target_list.html",
        filters,
        rows,
        expand=_with_counts,
        site=site,
        rules=_rules_for(site, kind),
        **_kind_words(kind),
    )


def target_detail(request, slug: str, kind: str, pk: int):
    site = get_object_or_404(MoodleSite, slug=slug)
    target = get_object_or_404(counted_targets(site.membership_targets.filter(kind=kind)), pk=pk)
    filters = MembershipFilterForm(request.GET)
    rows = filters.filter(target.memberships.select_related("record").defer(*_RECORD_UNUSED)).order_by(
        "record__external_id", "pk"
    )
    return list_page(
        request, "sync/target_detail.html", filters, rows, site=site, target=target, **_kind_words(kind)
    )


def site_memberships(request, slug: str):
    """Every membership of a site with the filters in the URL: the rows behind a run's counters."""
    site = get_object_or_404(MoodleSite, slug=slug)
    filters = SiteMembershipFilterForm(request.GET)
    rows = filters.filter(
        site.memberships.select_related("record", "target").defer(*_RECORD_UNUSED)
    ).order_by("target__kind", "target__key", "record__external_id", "pk")
    return list_page(request, "sync/membership_list.html", filters, rows, site=site)


def _with_counts(page: QuerySet) -> QuerySet:
    """One page of targets, counted: the paginator counts the targets alone, and the counts join only the
    memberships of this page's targets (through the (target, status) index), however large the site."""
    return counted_targets(MembershipTarget.objects.filter(pk__in=page.values("pk"))).order_by("key", "pk")


def counted_targets(targets: QuerySet) -> QuerySet:
    """Each course or cohort with its people counted by where they stand, in the one query that reads the
    targets: a page of 30 courses costs what a page of 3 does."""

    def people(**where) -> Count:
        return Count("memberships", filter=Q(**{f"memberships__{k}": v for k, v in where.items()}))

    return targets.annotate(
        in_source=people(desired=MembershipState.ACTIVE),
        in_moodle=people(synced=MembershipState.ACTIVE),
        suspended_in_moodle=people(synced=MembershipState.SUSPENDED),
        pending=people(status__in=UNSENT),
        errors=people(status=MembershipStatus.ERROR),
        held=people(status=MembershipStatus.HELD),
    )


def membership_overview(site: MoodleSite) -> dict:
    """What the site page says about courses and cohorts: how many of each (with a problem), and the
    memberships not in step, in two queries."""
    targets = {
        row["kind"]: row
        for row in site.membership_targets.values("kind")
        .annotate(n=Count("pk"), problems=Count("pk", filter=~Q(problem="")))
        .order_by()
    }
    statuses = dict(site.memberships.values_list("status").annotate(n=Count("pk")).order_by())
    return {
        "kinds": [
            {
                "kind": kind,
                "label": f"{label}s",
                "count": targets.get(kind, {}).get("n", 0),
                "problems": targets.get(kind, {}).get("problems", 0),
            }
            for kind, label in MembershipKind.choices
        ],
        "pending": sum(statuses.get(status, 0) for status in UNSENT),
        "errors": statuses.get(MembershipStatus.ERROR, 0),
        "held": statuses.get(MembershipStatus.HELD, 0),
        "rules": mapped_rules(site),
    }


def mapped_rules(site: MoodleSite) -> MembershipRules | None:
    """The courses and cohorts the site's mapping names; None without a source or a valid mapping."""
    try:
        mapping = site.source.mapping or {}
    except SyncSource.DoesNotExist:
        return None
    try:
        return MembershipRules.from_config(mapping.get("memberships"))
    except MembershipConfigError:
        return None


def maps_memberships(site: MoodleSite) -> bool:
    rules = mapped_rules(site)
    return rules is not None and not rules.empty


def _rules_for(site: MoodleSite, kind: str) -> list:
    rules = mapped_rules(site)
    if rules is None:
        return []
    return list(rules.courses if kind == MembershipKind.COURSE else rules.cohorts)


def _kind_words(kind: str) -> dict:
    noun = MembershipKind(kind).label.lower()
    return {"kind": kind, "noun": noun, "nouns": f"{noun}s"}
