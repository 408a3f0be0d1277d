"""What the pages of decisions share (discrepancies, conflicts, resolutions): who may decide, the
side-by-side diff, the counts per kind and site, the trail of a decision.

Everyone signed in sees those pages; operators may propose and comment; only Admins approve or reject.
The permission decorators keep operators out of the deciding views, and sync.resolutions checks again
(with the four-eyes rule), so a refusal from the domain also ends as a 403 page that says why.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .. import resolutions
from ..choices import ConflictKind, ResolutionAction, ResolutionStatus
from ..models import Conflict, MoodleSite, Resolution

APPROVE = "sync.approve_resolution"
IN_FLIGHT = ResolutionStatus.in_flight()
NEEDS_CHOICE = resolutions.NEEDS_CHOICE
BULK_PREVIEW_LIMIT = 200  # calls listed on a bulk confirmation; the count above them is always exact


def refusal(user, site: MoodleSite | None, resolution: Resolution | None = None) -> str:
    """Why `user` may not approve here, in words for the disabled button ("" when they may). Asks the
    domain's own check, so the page and the task agree."""
    try:
        resolutions.check_may_decide(user, resolution or (Resolution(site=site) if site else Resolution()))
    except PermissionDenied as refused:
        return sentence(str(refused))
    return ""


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:].rstrip(".") + "."


def diff(source: dict, columns: list[dict], first: list[str] | tuple = ()) -> list[dict]:
    """Rows of field | source | each Moodle column, with the cells that differ from the source marked."""
    names = [*first, *source, *(name for column in columns for name in column["values"])]
    rows = []
    for name in dict.fromkeys(names):
        cells = []
        for column in columns:
            known = name in column["values"]
            value = column["values"].get(name)
            cells.append(
                {
                    "value": value,
                    "known": known,
                    "differs": known and name in source and not same_value(source[name], value),
                }
            )
        rows.append(
            {
                "field": name,
                "source": source.get(name),
                "has_source": name in source,
                "cells": cells,
                "changed": any(cell["differs"] for cell in cells),
            }
        )
    return rows


def same_value(ours, theirs) -> bool:
    def norm(value) -> str:
        if isinstance(value, bool):
            return "1" if value else "0"
        return "" if value is None else str(value).strip()

    return norm(ours) == norm(theirs)


def kind_counts(queryset, base_url: str, active: dict, choices) -> dict:
    """Counts per kind and site in one grouped query, each linking to the list filtered to it."""
    grouped = (
        queryset.values("kind", "site__slug", "site__name").annotate(n=Count("pk")).order_by("site__name")
    )
    sites: dict[str, str] = {}
    cells: dict[tuple[str, str], int] = {}
    for row in grouped:
        sites[row["site__slug"]] = row["site__name"]
        cells[(row["kind"], row["site__slug"])] = row["n"]
    keep = {k: v for k, v in active.items() if k not in ("kind", "site")}

    def link(**params) -> str:
        return f"{base_url}?{urlencode({**keep, **params})}"

    rows = []
    for kind, label in choices:
        counts = [{"n": cells.get((kind, slug), 0), "url": link(kind=kind, site=slug)} for slug in sites]
        total = sum(c["n"] for c in counts)
        if total:
            rows.append(
                {"kind": kind, "label": label, "counts": counts, "total": total, "url": link(kind=kind)}
            )
    totals = [
        {"name": name, "n": sum(n for (_, s), n in cells.items() if s == slug), "url": link(site=slug)}
        for slug, name in sites.items()
    ]
    return {"rows": rows, "sites": totals, "total": sum(cells.values()), "url": link()}


def trail(queryset):
    return (
        queryset.select_related("proposed_by", "decided_by", "run")
        .defer("run__plan")
        .order_by("-proposed_at", "-pk")
    )


def refused_page(request: HttpRequest, template: str, context: dict, reason: str) -> HttpResponse:
    """The page the admin was on, as a 403, with the domain's reason in a banner."""
    return render(request, template, {**context, "refused": sentence(reason)}, status=403)


def pending_resolution(target) -> Resolution | None:
    return target.resolutions.filter(status__in=IN_FLIGHT).select_related("proposed_by").first()


# What says a Moodle user is this person. The value a conflict is about (the taken username or email) is
# no evidence: it is only why the two met.
IDENTITY_FIELDS = {"idnumber": ("idnumber",), "email": ("email",), "name": ("firstname", "lastname")}
CONFLICT_CAUSE = {ConflictKind.USERNAME_TAKEN: "username", ConflictKind.EMAIL_TAKEN: "email"}


def identity_matches(conflict: Conflict, user: dict) -> list[str]:
    """The identity fields (idnumber, email, name) on which a Moodle user in the way agrees with the person,
    both sides filled in, compared without case."""

    def agree(key: str) -> bool:
        values = ((conflict.our_payload or {}).get(key), user.get(key))
        ours, theirs = (str(value or "").strip().casefold() for value in values)
        return bool(ours) and ours == theirs

    cause = CONFLICT_CAUSE.get(conflict.kind)
    return [
        field for field, keys in IDENTITY_FIELDS.items() if field != cause and all(agree(key) for key in keys)
    ]


def conflict_choices(conflict: Conflict) -> Conflict:
    """Decorate a conflict with what its action buttons need: the actions that resolve its kind, the Moodle
    users one may link, and the proposal waiting for a decision (the record page and the conflict page).

    The first action is the one the page highlights, so it follows the evidence: linking joins two
    accounts for good, and comes first only when a Moodle user in the way agrees with the person on an
    identity field. Otherwise the action that joins nobody (another username, or ignore) comes first."""
    linkable = [user for user in conflict.their_users if user.get("id") and not user.get("deleted")]
    evidence = {user["id"]: identity_matches(conflict, user) for user in linkable}
    # The best-supported user first: the one a single "Propose link" button offers.
    conflict.linkable = sorted(linkable, key=lambda user: -len(evidence[user["id"]]))
    conflict.link_evidence = evidence[conflict.linkable[0]["id"]] if linkable else []
    actions = list(resolutions.CONFLICT_ACTIONS.get(conflict.kind, ()))
    if ResolutionAction.LINK in actions and not conflict.link_evidence:
        actions.remove(ResolutionAction.LINK)
        actions.append(ResolutionAction.LINK)
    conflict.actions = [(action, ResolutionAction(action).label) for action in actions]
    conflict.offers_link = bool(linkable) and ResolutionAction.LINK in actions
    conflict.pending = pending_resolution(conflict)
    return conflict
