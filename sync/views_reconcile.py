"""Pages of reconciliation and approvals: discrepancies, conflicts, the resolution history.

Everyone signed in sees them; operators may propose and comment; only Admins approve or reject. The
permission decorators keep operators out of the deciding views, and sync.resolutions checks again (with
the four-eyes rule) so a refusal from the domain also ends as a 403 page that says why. Approving never
calls Moodle from the request: it queues a resolution run and sends the admin to its progress page.
"""

from __future__ import annotations

from urllib.parse import urlencode

import redis
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from . import resolutions, runs
from .choices import (
    ConflictKind,
    ConflictStatus,
    DiscrepancyKind,
    DiscrepancyStatus,
    OverrideStatus,
    ResolutionAction,
    ResolutionStatus,
    RunKind,
)
from .connect import NoActiveToken, client_for
from .forms import (
    DESTRUCTIVE,
    SAFE,
    CommentForm,
    ConflictFilterForm,
    DiscrepancyFilterForm,
    OverrideForm,
    RejectForm,
    ResolutionFilterForm,
)
from .models import Conflict, Discrepancy, GuardOverride, MoodleSite, Resolution
from .moodle.errors import SeamError
from .views import _next, _paginate, _same

APPROVE = "sync.approve_resolution"
IN_FLIGHT = ResolutionStatus.in_flight()
NEEDS_CHOICE = resolutions.NEEDS_CHOICE
NEW_ACCOUNT = "new"
BULK_PREVIEW_LIMIT = 200  # calls listed on a bulk confirmation; the count above them is always exact


# -- shared helpers -----------------------------------------------------------------------------------------


def refusal(user, site: MoodleSite | None, resolution: Resolution | None = None) -> str:
    """Why `user` may not approve here, in words for the disabled button ("" when they may). Asks the
    domain's own check, so the page and the task agree."""
    try:
        resolutions.check_may_decide(user, resolution or (Resolution(site=site) if site else Resolution()))
    except PermissionDenied as refused:
        return _sentence(str(refused))
    return ""


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:].rstrip(".") + "."


def _diff(source: dict, columns: list[dict], first: list[str] | tuple = ()) -> list[dict]:
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
                    "differs": known and name in source and not _same(source[name], value),
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


def _counts(queryset, base_url: str, active: dict, choices) -> dict:
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


def _trail(queryset):
    return (
        queryset.select_related("proposed_by", "decided_by", "run")
        .defer("run__plan")
        .order_by("-proposed_at", "-pk")
    )


def _refused(request: HttpRequest, template: str, context: dict, reason: str) -> HttpResponse:
    """The page the admin was on, as a 403, with the domain's reason in a banner."""
    return render(request, template, {**context, "refused": _sentence(reason)}, status=403)


# -- discrepancies ------------------------------------------------------------------------------------------


def discrepancy_list(request):
    filters = DiscrepancyFilterForm(request.GET)
    active = filters.active()
    everything = Discrepancy.objects.all()
    counts = _counts(
        filters.filter(everything, by_kind_and_site=False),
        reverse("discrepancy_list"),
        active,
        DiscrepancyKind.choices,
    )
    rows = (
        filters.filter(everything)
        .select_related("site", "record")
        .defer("record__payload", "record__create_only", "candidates")
        .order_by("kind", "-created_at", "-pk")
    )
    page, query = _paginate(request, rows)
    approvable = _approvable(filters.filter(everything))
    destructive = approvable.filter(proposed_action__in=ResolutionAction.destructive()).count()
    safe = approvable.exclude(proposed_action__in=ResolutionAction.destructive()).count()
    overrides = GuardOverride.objects.filter(status=OverrideStatus.PENDING).select_related(
        "site", "requested_by"
    )
    return render(
        request,
        "sync/discrepancy_list.html",
        {
            "filters": filters,
            "counts": counts,
            "page": page,
            "query": query,
            "filter_query": urlencode(active),
            "approvable": destructive + safe,
            "approve_links": _approve_links(active, destructive, safe),
            "overrides": overrides,
            "refusal": "" if request.user.has_perm(APPROVE) else refusal(request.user, None),
            "filtered": bool(request.GET),
        },
    )


def _approve_links(active: dict, destructive: int, safe: int) -> list[dict]:
    """One bulk action per effect: suspensions are never approved together with safe changes."""
    base = reverse("discrepancy_approve_filtered")
    if destructive and safe:
        return [
            {
                "n": safe,
                "label": f"Approve the {safe} safe changes…",
                "url": f"{base}?{urlencode({**active, 'effect': SAFE})}",
            },
            {
                "n": destructive,
                "label": f"Review the {destructive} that take access away…",
                "url": f"{base}?{urlencode({**active, 'effect': DESTRUCTIVE})}",
            },
        ]
    n = destructive or safe
    if not n:
        return []
    label = f"Review the {n} that take access away…" if destructive else f"Approve these {n}…"
    return [{"n": n, "label": label, "url": f"{base}?{urlencode(active)}"}]


def _approvable(discrepancies):
    """What a bulk approval takes: waiting, needing no choice of Moodle user, not already approved."""
    return (
        discrepancies.filter(status__in=DiscrepancyStatus.waiting())
        .exclude(proposed_action__in=NEEDS_CHOICE)
        .exclude(resolutions__status__in=[ResolutionStatus.APPROVED, ResolutionStatus.APPLYING])
    )


def _discrepancies():
    return Discrepancy.objects.select_related("site", "record", "run")


def _discrepancy_columns(discrepancy: Discrepancy) -> list[dict]:
    columns = []
    if discrepancy.moodle_values or discrepancy.kind in (
        DiscrepancyKind.FIELD_DRIFT,
        DiscrepancyKind.SUSPENDED_MISMATCH,
        DiscrepancyKind.ORPHAN_IN_MOODLE,
    ):
        label = f"Moodle user {discrepancy.moodle_user_id}" if discrepancy.moodle_user_id else "Moodle"
        if discrepancy.kind == DiscrepancyKind.IDENTITY_MISMATCH:
            label += " (linked now)"
        columns.append({"label": label, "values": discrepancy.moodle_values})
    for candidate in discrepancy.candidates:
        columns.append({"label": f"Moodle user {candidate.get('id')} (candidate)", "values": candidate})
    return columns


def _pending(target) -> Resolution | None:
    return target.resolutions.filter(status__in=IN_FLIGHT).select_related("proposed_by").first()


def discrepancy_detail(request, pk: int, *, reject_form=None, comment_form=None, status=200):
    discrepancy = get_object_or_404(_discrepancies(), pk=pk)
    pending = _pending(discrepancy)
    context = {
        "d": discrepancy,
        "site": discrepancy.site,
        "columns": _discrepancy_columns(discrepancy),
        "diff": _diff(discrepancy.source_values, _discrepancy_columns(discrepancy), discrepancy.fields),
        "pending": pending,
        "decidable": discrepancy.status in DiscrepancyStatus.waiting()
        and (pending is None or pending.status == ResolutionStatus.PROPOSED),
        "needs_choice": discrepancy.proposed_action in NEEDS_CHOICE and pending is None,
        "refusal": refusal(request.user, discrepancy.site, pending),
        "trail": _trail(discrepancy.resolutions.all()),
        "comments": discrepancy.comments.select_related("author"),
        "reject_form": reject_form or RejectForm(),
        "comment_form": comment_form or CommentForm(),
    }
    return render(request, "sync/discrepancy_detail.html", context, status=status)


def _chosen_params(discrepancy: Discrepancy, data) -> tuple[dict | None, str]:
    """The Moodle user an admin picked for choose / re-link, as propose() params; None while unpicked."""
    if discrepancy.proposed_action not in NEEDS_CHOICE:
        return {}, ""
    picked = (data.get("user") or "").strip()
    ids = {str(c.get("id")) for c in discrepancy.candidates}
    if picked == NEW_ACCOUNT and discrepancy.proposed_action == ResolutionAction.RELINK:
        return {}, ""
    if picked in ids:
        return {"user_id": int(picked)}, ""
    return None, "Choose the Moodle user to link first." if picked else ""


def _preview(discrepancy: Discrepancy, params: dict) -> list:
    """Exactly the calls approving would record."""
    return resolutions.preview(discrepancy.proposed_action, discrepancy=discrepancy, params=params)


@permission_required(APPROVE, raise_exception=True)
def discrepancy_approve(request, pk: int):
    """GET: the exact Moodle calls (after the choice of user where one is needed). POST: approve them."""
    discrepancy = get_object_or_404(_discrepancies(), pk=pk)
    pending = _pending(discrepancy)
    if pending is not None and pending.status == ResolutionStatus.PROPOSED:
        return redirect("resolution_approve", pk=pending.pk)
    if discrepancy.status not in DiscrepancyStatus.waiting() or pending is not None:
        messages.warning(
            request,
            f"Nothing to approve: this discrepancy is {discrepancy.get_status_display().lower()}"
            + (" and its resolution is already queued." if pending is not None else "."),
        )
        return redirect("discrepancy_detail", pk=discrepancy.pk)
    data = request.POST if request.method == "POST" else request.GET
    params, problem = _chosen_params(discrepancy, data)
    context = {
        "d": discrepancy,
        "site": discrepancy.site,
        "single": True,
        "params": params,
        "picked": data.get("user", ""),
        "problem": problem,
        "new_account": NEW_ACCOUNT,
        "back": reverse("discrepancy_detail", args=[discrepancy.pk]),
    }
    if params is None:
        return render(request, "sync/discrepancy_approve.html", context)
    try:
        context["calls"] = _preview(discrepancy, params)
    except resolutions.ResolutionError as exc:
        messages.error(request, f"Nothing was approved: {exc}.")
        return redirect("discrepancy_detail", pk=discrepancy.pk)
    context["count"] = 1
    verdict = None
    if discrepancy.proposed_action in ResolutionAction.destructive():
        verdict = resolutions.blast_radius(
            [Resolution(site=discrepancy.site, action=discrepancy.proposed_action, params=params)],
            discrepancy.site,
        )
        context["verdict"] = verdict
    if request.method != "POST":
        return render(request, "sync/discrepancy_approve.html", context)
    note = request.POST.get("note", "").strip()
    try:
        with transaction.atomic():
            # Proposed by the reconciliation (no person): the four-eyes rule leaves the admin free to approve.
            proposal = resolutions.propose(
                action=discrepancy.proposed_action, discrepancy=discrepancy, params=params
            )
            run = resolutions.approve([proposal], request.user, note)
    except PermissionDenied as refused:
        return _refused(request, "sync/discrepancy_approve.html", context, str(refused))
    except resolutions.GuardRefused as exc:
        messages.error(
            request,
            f"Nothing was approved: {_sentence(str(exc))} Approve it with the others from the Discrepancies "
            "list, where an override can be given.",
        )
        return redirect("discrepancy_detail", pk=discrepancy.pk)
    except resolutions.ResolutionError as exc:
        messages.error(request, f"Nothing was approved: {exc}.")
        return redirect("discrepancy_detail", pk=discrepancy.pk)
    messages.success(
        request, f"Approved: resolution run #{run.pk} applies it ({len(context['calls'])} call(s))."
    )
    return redirect("run_detail", pk=run.pk)


@permission_required(APPROVE, raise_exception=True)
def discrepancy_approve_filtered(request):
    """GET: the exact count, the filter in words, the consequence and the calls. POST, carrying the same
    filter and the count confirmed (and past the guard: the typed count and a reason): each site's group
    joins its resolution run. Choices of Moodle user are left for one-by-one approval."""
    data = request.POST if request.method == "POST" else request.GET
    filters = DiscrepancyFilterForm(data)
    plan = resolutions.bulk_plan(filters.filter(Discrepancy.objects.all()))
    calls = []
    for item in plan.items:
        if len(calls) >= BULK_PREVIEW_LIMIT:
            break
        planned = (
            item.proposals[0].calls
            if item.proposals
            else resolutions.planned_calls(
                item.proposed_action, record=item.record, discrepancy=item, params={}
            )
        )
        calls.extend({"d": item, **call} for call in planned)
    active = filters.active()
    here = reverse("discrepancy_approve_filtered")
    override_form = OverrideForm(request.POST or None) if plan.over_limit else None
    context = {
        "filters": filters,
        "described": filters.describe(),
        "count": len(plan.items),
        "plan": plan,
        "by_site": plan.sites,
        "calls": calls[:BULK_PREVIEW_LIMIT],
        "calls_cut": len(calls) > BULK_PREVIEW_LIMIT,
        "left_out": plan.left_out,
        "hidden": active,
        "filter_query": urlencode(active),
        "safe_url": f"{here}?{urlencode({**active, 'effect': SAFE})}",
        "destructive_url": f"{here}?{urlencode({**active, 'effect': DESTRUCTIVE})}",
        "override_form": override_form,
        "back": f"{reverse('discrepancy_list')}?{urlencode(active)}",
    }
    if request.method != "POST" or not plan.items or plan.mixed:
        return render(request, "sync/discrepancy_approve.html", context)
    confirmed = request.POST.get("count", "")
    if confirmed != str(len(plan.items)):
        return render(request, "sync/discrepancy_approve.html", {**context, "changed": confirmed})
    if override_form is not None and not override_form.is_valid():
        return render(request, "sync/discrepancy_approve.html", context, status=400)
    extra = override_form.cleaned_data if override_form is not None else {}
    try:
        done = resolutions.approve_discrepancies(
            plan,
            request.user,
            request.POST.get("note", "").strip(),
            typed_count=extra.get("typed_count"),
            reason=extra.get("reason", ""),
        )
    except PermissionDenied as refused:
        return _refused(request, "sync/discrepancy_approve.html", context, str(refused))
    except resolutions.ResolutionError as exc:
        if override_form is not None:
            override_form.add_error(None, _sentence(str(exc)))
            return render(request, "sync/discrepancy_approve.html", context, status=400)
        messages.error(request, f"Nothing was approved: {exc}. Check the list and try again.")
        return redirect(context["back"])
    runs_queued = []
    for site, n, run, override in done:
        if override is not None and run is None:
            messages.warning(
                request,
                f"Override #{override.pk} on {site.name} recorded: {n} changes wait for a second admin to "
                "confirm it (four-eyes rule).",
            )
        else:
            messages.success(request, f"Approved {n} on {site.name}: resolution run #{run.pk} applies them.")
            runs_queued.append(run)
    if len(runs_queued) == 1 and len(done) == 1:
        return redirect("run_detail", pk=runs_queued[0].pk)
    return redirect(f"{reverse('discrepancy_list')}?{urlencode({**active, 'status': 'all'})}")


@permission_required(APPROVE, raise_exception=True)
@require_POST
def discrepancy_reject(request, pk: int):
    discrepancy = get_object_or_404(_discrepancies(), pk=pk)
    form = RejectForm(request.POST)
    if not form.is_valid():
        return discrepancy_detail(request, pk, reject_form=form, status=400)
    pending = _pending(discrepancy)
    if discrepancy.status not in DiscrepancyStatus.waiting() or (
        pending is not None and pending.status != ResolutionStatus.PROPOSED
    ):
        messages.warning(
            request, f"Nothing to reject: this discrepancy is {discrepancy.get_status_display().lower()}."
        )
        return redirect("discrepancy_detail", pk=pk)
    try:
        if pending is not None:
            resolutions.reject(pending, request.user, form.cleaned_data["note"])
        else:  # the reconciliation's own proposal, declined: kept in the trail with who and why
            resolutions.dismiss(discrepancy, request.user, form.cleaned_data["note"])
    except PermissionDenied as refused:
        messages.error(request, f"Not rejected: {refused}.")
        return discrepancy_detail(request, pk, reject_form=form, status=403)
    except resolutions.ResolutionError as exc:
        messages.error(request, f"Not rejected: {exc}.")
        return redirect("discrepancy_detail", pk=pk)
    messages.success(request, "Rejected: nothing will change in Moodle; the reason is kept in the history.")
    return redirect("discrepancy_detail", pk=pk)


@permission_required("sync.add_comment", raise_exception=True)
@require_POST
def discrepancy_comment(request, pk: int):
    discrepancy = get_object_or_404(Discrepancy, pk=pk)
    form = CommentForm(request.POST)
    if form.is_valid():
        try:
            resolutions.comment(request.user, form.cleaned_data["text"], discrepancy=discrepancy)
        except resolutions.ResolutionError as exc:
            form.add_error("text", str(exc))
        else:
            messages.success(request, "Comment added.")
            return redirect(f"{reverse('discrepancy_detail', args=[pk])}#comments")
    return discrepancy_detail(request, pk, comment_form=form, status=400)


# -- conflicts ----------------------------------------------------------------------------------------------


def conflict_list(request):
    filters = ConflictFilterForm(request.GET)
    active = filters.active()
    everything = Conflict.objects.all()
    counts = _counts(
        filters.filter(everything, by_kind_and_site=False),
        reverse("conflict_list"),
        active,
        ConflictKind.choices,
    )
    rows = (
        filters.filter(everything)
        .select_related("site", "record")
        .defer("record__payload", "record__create_only", "our_payload")
        .annotate(proposals=Count("resolutions", filter=Q(resolutions__status=ResolutionStatus.PROPOSED)))
        .order_by("-created_at", "-pk")
    )
    page, query = _paginate(request, rows)
    return render(
        request,
        "sync/conflict_list.html",
        {"filters": filters, "counts": counts, "page": page, "query": query, "filtered": bool(request.GET)},
    )


def conflict_choices(conflict: Conflict) -> Conflict:
    """Decorate a conflict with what its action buttons need: the actions that resolve its kind, the Moodle
    users one may link, and the proposal waiting for a decision (the record page and the conflict page)."""
    conflict.actions = [
        (action, ResolutionAction(action).label)
        for action in resolutions.CONFLICT_ACTIONS.get(conflict.kind, ())
    ]
    conflict.linkable = [user for user in conflict.their_users if user.get("id") and not user.get("deleted")]
    conflict.pending = _pending(conflict)
    return conflict


def _conflicts():
    return Conflict.objects.select_related("site", "record", "run")


def conflict_detail(request, pk: int, *, reject_form=None, comment_form=None, status=200):
    conflict = conflict_choices(get_object_or_404(_conflicts(), pk=pk))
    columns = [
        {"label": f"Moodle user {user.get('id', '?')}", "values": user} for user in conflict.their_users
    ]
    context = {
        "conflict": conflict,
        "site": conflict.site,
        "record": conflict.record,
        "columns": columns,
        "diff": _diff(conflict.our_payload or {}, columns, ("username", "email", "idnumber")),
        "refusal": refusal(request.user, conflict.site, conflict.pending),
        "trail": _trail(conflict.resolutions.all()),
        "comments": conflict.comments.select_related("author"),
        "reject_form": reject_form or RejectForm(),
        "comment_form": comment_form or CommentForm(),
        "here": request.get_full_path(),
    }
    return render(request, "sync/conflict_detail.html", context, status=status)


@permission_required("sync.add_resolution", raise_exception=True)
@require_POST
def conflict_propose(request, pk: int):
    """Propose link / rename / ignore / re-link; anyone with the Operators' role may, an Admin decides."""
    conflict = get_object_or_404(_conflicts(), pk=pk)
    back = _next(request, reverse("conflict_detail", args=[pk]))
    action = request.POST.get("action", "")
    if conflict.status != ConflictStatus.OPEN:
        messages.warning(
            request, f"Nothing proposed: this conflict is {conflict.get_status_display().lower()}."
        )
        return redirect(back)
    params: dict = {}
    picked = request.POST.get("user", "").strip()
    if picked and picked != NEW_ACCOUNT:
        if not picked.isdigit():
            messages.error(request, "Nothing proposed: a Moodle user id is a number.")
            return redirect(back)
        params["user_id"] = int(picked)
    try:
        if action == ResolutionAction.RENAME and action in resolutions.CONFLICT_ACTIONS.get(
            conflict.kind, ()
        ):
            # The alternative username must be free in Moodle: ask it now, through the throttled client.
            with client_for(conflict.site) as client:
                proposal = resolutions.propose(
                    action=action, conflict=conflict, user=request.user, params=params, client=client
                )
        else:
            proposal = resolutions.propose(action=action, conflict=conflict, user=request.user, params=params)
    except resolutions.ResolutionError as exc:
        messages.error(request, f"Nothing proposed: {exc}.")
    except NoActiveToken:
        messages.error(
            request,
            f"Nothing proposed: a free username is looked up in Moodle, and {conflict.site.name} has no "
            "active service token. An administrator adds or promotes one on the site page.",
        )
    except SeamError as exc:
        messages.error(request, f"Nothing proposed: Moodle did not answer the username look-up ({exc}).")
    except redis.RedisError as exc:
        messages.error(
            request,
            f"Nothing proposed: Redis, which paces calls to Moodle, did not answer ({type(exc).__name__}).",
        )
    else:
        messages.success(
            request,
            f"Proposed: {proposal.get_action_display().lower()}"
            + (f" as {proposal.params['overrides']['username']}" if "overrides" in proposal.params else "")
            + ". An Admin approves or rejects it on the conflict's page.",
        )
    return redirect(back)


@permission_required("sync.add_comment", raise_exception=True)
@require_POST
def conflict_comment(request, pk: int):
    conflict = get_object_or_404(Conflict, pk=pk)
    form = CommentForm(request.POST)
    if form.is_valid():
        try:
            resolutions.comment(request.user, form.cleaned_data["text"], conflict=conflict)
        except resolutions.ResolutionError as exc:
            form.add_error("text", str(exc))
        else:
            messages.success(request, "Comment added.")
            return redirect(f"{reverse('conflict_detail', args=[pk])}#comments")
    return conflict_detail(request, pk, comment_form=form, status=400)


# -- resolutions --------------------------------------------------------------------------------------------


def _subject_url(resolution: Resolution) -> str:
    if resolution.discrepancy_id:
        return reverse("discrepancy_detail", args=[resolution.discrepancy_id])
    return reverse("conflict_detail", args=[resolution.conflict_id])


@permission_required(APPROVE, raise_exception=True)
def resolution_approve(request, pk: int):
    """GET: the exact calls of an existing proposal. POST: approve it and go to the run that applies it."""
    resolution = get_object_or_404(
        Resolution.objects.select_related(
            "site",
            "proposed_by",
            "discrepancy__record",
            "conflict__record",
            "discrepancy__site",
            "conflict__site",
        ),
        pk=pk,
    )
    back = _subject_url(resolution)
    if resolution.status != ResolutionStatus.PROPOSED:
        messages.warning(
            request, f"Nothing to approve: this resolution is {resolution.get_status_display().lower()}."
        )
        return redirect(back)
    context = {
        "resolution": resolution,
        "d": resolution.discrepancy,
        "conflict": resolution.conflict,
        "site": resolution.site,
        "single": True,
        "params": resolution.params,
        "calls": resolution.calls,
        "count": 1,
        "back": back,
    }
    reason = refusal(request.user, resolution.site, resolution)
    if reason:
        return _refused(request, "sync/discrepancy_approve.html", context, reason)
    if resolutions.is_destructive(resolution):
        context["verdict"] = resolutions.blast_radius([resolution], resolution.site)
    if request.method != "POST":
        return render(request, "sync/discrepancy_approve.html", context)
    try:
        run = resolutions.approve([resolution], request.user, request.POST.get("note", "").strip())
    except PermissionDenied as refused:
        return _refused(request, "sync/discrepancy_approve.html", context, str(refused))
    except resolutions.ResolutionError as exc:
        messages.error(request, f"Nothing was approved: {exc}.")
        return redirect(back)
    if run is None:
        messages.warning(request, "Nothing was approved: someone decided on this resolution meanwhile.")
        return redirect(back)
    messages.success(
        request, f"Approved: resolution run #{run.pk} applies it ({len(resolution.calls)} call(s))."
    )
    return redirect("run_detail", pk=run.pk)


@permission_required(APPROVE, raise_exception=True)
@require_POST
def resolution_reject(request, pk: int):
    resolution = get_object_or_404(Resolution.objects.select_related("site"), pk=pk)
    back = _subject_url(resolution)
    form = RejectForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Not rejected: say why (the reason is kept in the history).")
        return redirect(back)
    if resolution.status != ResolutionStatus.PROPOSED:
        messages.warning(
            request, f"Nothing to reject: this resolution is {resolution.get_status_display().lower()}."
        )
        return redirect(back)
    try:
        resolutions.reject(resolution, request.user, form.cleaned_data["note"])
    except resolutions.ResolutionError as exc:
        messages.error(request, f"Not rejected: {exc}.")
        return redirect(back)
    messages.success(request, "Rejected: nothing will change in Moodle; the reason is kept in the history.")
    return redirect(back)


def resolution_list(request):
    filters = ResolutionFilterForm(request.GET)
    rows = (
        filters.filter(Resolution.objects.all())
        .select_related(
            "site", "proposed_by", "decided_by", "run", "discrepancy", "conflict", "conflict__record"
        )
        .defer(
            "run__plan",
            "discrepancy__source_values",
            "discrepancy__moodle_values",
            "discrepancy__candidates",
            "conflict__our_payload",
            "conflict__their_users",
            "conflict__record__payload",
            "conflict__record__create_only",
        )
        .order_by("-proposed_at", "-pk")
    )
    page, query = _paginate(request, rows)
    return render(
        request,
        "sync/resolution_list.html",
        {"filters": filters, "page": page, "query": query, "filtered": bool(request.GET)},
    )


# -- overrides of the blast-radius guard ---------------------------------------------------------------------


@permission_required(APPROVE, raise_exception=True)
def override_detail(request, pk: int):
    """A second admin's decision on an override (four-eyes): GET shows it with its consequence; POST
    confirms (the changes join the site's resolution run) or rejects with a reason."""
    override = get_object_or_404(
        GuardOverride.objects.select_related("site", "requested_by", "decided_by"), pk=pk
    )
    covered = override.resolutions.select_related("discrepancy").order_by("pk")
    reject_form = RejectForm(request.POST if request.POST.get("decision") == "reject" else None)
    context = {
        "override": override,
        "site": override.site,
        "covered": covered[:BULK_PREVIEW_LIMIT],
        "covered_count": covered.count(),
        "reject_form": reject_form,
        "refusal": _override_refusal(request.user, override),
    }
    if request.method != "POST":
        return render(request, "sync/override_detail.html", context)
    try:
        if request.POST.get("decision") == "reject":
            if not reject_form.is_valid():
                return render(request, "sync/override_detail.html", context, status=400)
            resolutions.reject_override(override, request.user, reject_form.cleaned_data["note"])
            messages.success(request, f"Override #{override.pk} rejected: nothing past the limit is applied.")
            return redirect("discrepancy_list")
        run = resolutions.confirm_override(override, request.user)
    except PermissionDenied as refused:
        return _refused(request, "sync/override_detail.html", context, str(refused))
    except resolutions.ResolutionError as exc:
        messages.error(request, f"Nothing was done: {exc}.")
        return redirect("override_detail", pk=pk)
    messages.success(request, f"Override #{override.pk} confirmed: resolution run #{run.pk} applies it.")
    return redirect("run_detail", pk=run.pk)


def _override_refusal(user, override: GuardOverride) -> str:
    if override.status != OverrideStatus.PENDING:
        return ""
    if override.requested_by_id == user.pk:
        return "Four-eyes rule: a second admin must confirm the override you asked for."
    return ""


# -- starting a reconciliation ------------------------------------------------------------------------------


@permission_required("sync.operate_runs", raise_exception=True)
@require_POST
def site_reconcile(request, slug: str):
    site = get_object_or_404(MoodleSite, slug=slug)
    try:
        run = runs.start(site, RunKind.RECONCILE, user=request.user)
    except runs.RunActionError as exc:
        messages.error(request, f"Nothing was queued: {exc}.")
        return redirect("site_detail", slug=slug)
    messages.success(
        request,
        f"Queued reconciliation run #{run.pk}: its discrepancies are listed under Discrepancies.",
    )
    return redirect("run_detail", pk=run.pk)
