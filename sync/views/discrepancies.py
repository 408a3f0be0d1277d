"""Pages of the discrepancies: the night's findings by kind and site, a discrepancy's side-by-side
diff, its approval (after the exact calls and, for a destructive change, its blast radius), the bulk
approval of a filtered list (safe and destructive apart; past the guard only with an override), reject
and comment."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from web.csv_export import queryset_csv
from web.pages import list_page

from .. import resolutions
from ..choices import DiscrepancyKind, DiscrepancyStatus, OverrideStatus, ResolutionAction, ResolutionStatus
from ..forms import DESTRUCTIVE, SAFE, CommentForm, DiscrepancyFilterForm, OverrideForm, RejectForm
from ..models import Discrepancy, GuardOverride, Resolution
from ..words import counted
from .decisions import (
    APPROVE,
    BULK_PREVIEW_LIMIT,
    NEEDS_CHOICE,
    diff,
    kind_counts,
    pending_resolution,
    refusal,
    refused_page,
    sentence,
    trail,
)


def discrepancy_list(request):
    filters = DiscrepancyFilterForm(request.GET)
    active = filters.active()
    everything = Discrepancy.objects.all()
    counts = kind_counts(
        filters.filter(everything, by_kind_and_site=False),
        reverse("sync:discrepancy_list"),
        active,
        DiscrepancyKind.choices,
    )
    rows = (
        filters.filter(everything)
        .select_related("site", "record")
        .defer("record__payload", "record__create_only", "candidates")
        .order_by("kind", "-created_at", "-pk")
    )
    approvable = _approvable(filters.filter(everything))
    destructive = approvable.filter(proposed_action__in=ResolutionAction.destructive()).count()
    safe = approvable.exclude(proposed_action__in=ResolutionAction.destructive()).count()
    overrides = GuardOverride.objects.filter(status=OverrideStatus.PENDING).select_related(
        "site", "requested_by"
    )
    return list_page(
        request,
        "sync/discrepancy_list.html",
        filters,
        rows,
        counts=counts,
        approvable=destructive + safe,
        approve_links=_approve_links(active, destructive, safe),
        overrides=overrides,
        refusal="" if request.user.has_perm(APPROVE) else refusal(request.user, None),
    )


# The CSV download: column title, then the field it reads.
EXPORT_COLUMNS = (
    ("id", "pk"), ("site", "site__slug"), ("kind", "kind"), ("status", "status"),
    ("external_id", "external_id"), ("name", "record__display_name"), ("moodle_user_id", "moodle_user_id"),
    ("summary", "summary"), ("fields", "fields"), ("source_values", "source_values"),
    ("moodle_values", "moodle_values"), ("proposed_action", "proposed_action"),
    ("needs_approval", "needs_approval"), ("found_at", "created_at"), ("run", "run_id"),
)  # fmt: skip


def discrepancy_export(request):
    """The discrepancies the list shows with the same filter, as a streamed CSV (every page, not one)."""
    found = DiscrepancyFilterForm(request.GET).filter(Discrepancy.objects.all())
    return queryset_csv(
        "discrepancies", EXPORT_COLUMNS, found.order_by("kind", "-created_at", "-pk"), row=_export_row
    )


def _export_row(row: tuple) -> list:
    """JSON columns as compact JSON text: the field list and the values on both sides."""
    return [
        json.dumps(value, ensure_ascii=False, sort_keys=True) if isinstance(value, dict | list) else value
        for value in row
    ]


def _approve_links(active: dict, destructive: int, safe: int) -> list[dict]:
    """One bulk action per effect: suspensions are never approved together with safe changes."""
    base = reverse("sync:discrepancy_approve_filtered")
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


def discrepancy_detail(request, pk: int, *, reject_form=None, comment_form=None, status=200):
    discrepancy = get_object_or_404(_discrepancies(), pk=pk)
    pending = pending_resolution(discrepancy)
    context = {
        "d": discrepancy,
        "site": discrepancy.site,
        "columns": _discrepancy_columns(discrepancy),
        "diff": diff(discrepancy.source_values, _discrepancy_columns(discrepancy), discrepancy.fields),
        "pending": pending,
        "decidable": discrepancy.status in DiscrepancyStatus.waiting()
        and (pending is None or pending.status == ResolutionStatus.PROPOSED),
        "needs_choice": discrepancy.proposed_action in NEEDS_CHOICE and pending is None,
        "refusal": refusal(request.user, discrepancy.site, pending),
        "trail": trail(discrepancy.resolutions.all()),
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
    if picked == resolutions.NEW_ACCOUNT and discrepancy.proposed_action == ResolutionAction.RELINK:
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
    pending = pending_resolution(discrepancy)
    if pending is not None and pending.status == ResolutionStatus.PROPOSED:
        return redirect("sync:resolution_approve", pk=pending.pk)
    if discrepancy.status not in DiscrepancyStatus.waiting() or pending is not None:
        messages.warning(
            request,
            f"Nothing to approve: this discrepancy is {discrepancy.get_status_display().lower()}"
            + (" and its resolution is already queued." if pending is not None else "."),
        )
        return redirect("sync:discrepancy_detail", pk=discrepancy.pk)
    data = request.POST if request.method == "POST" else request.GET
    params, problem = _chosen_params(discrepancy, data)
    context = {
        "d": discrepancy,
        "site": discrepancy.site,
        "single": True,
        "params": params,
        "picked": data.get("user", ""),
        "problem": problem,
        "new_account": resolutions.NEW_ACCOUNT,
        "back": reverse("sync:discrepancy_detail", args=[discrepancy.pk]),
    }
    if params is None:
        return render(request, "sync/discrepancy_approve.html", context)
    try:
        context["calls"] = _preview(discrepancy, params)
    except resolutions.ResolutionError as exc:
        messages.error(request, f"Nothing was approved: {exc}.")
        return redirect("sync:discrepancy_detail", pk=discrepancy.pk)
    context["count"] = 1
    verdict = None
    if discrepancy.proposed_action in ResolutionAction.destructive():
        verdict = resolutions.guard_verdict(
            [
                Resolution(
                    site=discrepancy.site,
                    discrepancy=discrepancy,
                    action=discrepancy.proposed_action,
                    params=params,
                )
            ],
            discrepancy.site,
        )
        context["verdict"] = verdict
    if request.method != "POST":
        return render(request, "sync/discrepancy_approve.html", context)
    try:
        run = resolutions.approve_discrepancy(
            discrepancy, request.user, params, request.POST.get("note", "").strip()
        )
    except PermissionDenied as refused:
        return refused_page(request, "sync/discrepancy_approve.html", context, str(refused))
    except resolutions.GuardRefused as exc:
        messages.error(
            request,
            f"Nothing was approved: {sentence(str(exc))} Approve it with the others from the Discrepancies "
            "list, where an override can be given.",
        )
        return redirect("sync:discrepancy_detail", pk=discrepancy.pk)
    except resolutions.ResolutionError as exc:
        messages.error(request, f"Nothing was approved: {exc}.")
        return redirect("sync:discrepancy_detail", pk=discrepancy.pk)
    messages.success(
        request, f"Approved: resolution run #{run.pk} applies it ({counted(len(context['calls']), 'call')})."
    )
    return redirect("sync:run_detail", pk=run.pk)


@permission_required(APPROVE, raise_exception=True)
def discrepancy_approve_filtered(request):
    """GET: the exact count, the filter in words, the consequence and the calls. POST, carrying the same
    filter and the count confirmed (and past the guard: the typed count and a reason): each site's group
    joins its resolution run. Choices of Moodle user are left for one-by-one approval."""
    data = request.POST if request.method == "POST" else request.GET
    filters = DiscrepancyFilterForm(data)
    plan = resolutions.bulk_plan(filters.filter(Discrepancy.objects.all()))
    calls, cut = resolutions.bulk_preview(plan, BULK_PREVIEW_LIMIT)
    active = filters.active()
    here = reverse("sync:discrepancy_approve_filtered")
    override_form = OverrideForm(request.POST or None) if plan.over_limit else None
    context = {
        "filters": filters,
        "described": filters.describe(),
        "count": len(plan.items),
        "plan": plan,
        "by_site": plan.sites,
        "calls": calls,
        "calls_cut": cut,
        "left_out": plan.left_out,
        "hidden": active,
        "filter_query": urlencode(active),
        "safe_url": f"{here}?{urlencode({**active, 'effect': SAFE})}",
        "destructive_url": f"{here}?{urlencode({**active, 'effect': DESTRUCTIVE})}",
        "override_form": override_form,
        "back": f"{reverse('sync:discrepancy_list')}?{urlencode(active)}",
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
        return refused_page(request, "sync/discrepancy_approve.html", context, str(refused))
    except resolutions.ResolutionError as exc:
        if override_form is not None:
            override_form.add_error(None, sentence(str(exc)))
            return render(request, "sync/discrepancy_approve.html", context, status=400)
        messages.error(request, f"Nothing was approved: {exc}. Check the list and try again.")
        return redirect(context["back"])
    runs_queued = []
    for site, n, run, override in done:
        if override is not None and run is None:
            messages.warning(
                request,
                f"Override #{override.pk} on {site.name} recorded: "
                f"{counted(n, 'change waits', 'changes wait')} for a second admin to confirm it "
                "(four-eyes rule).",
            )
        else:
            messages.success(request, f"Approved {n} on {site.name}: resolution run #{run.pk} applies them.")
            runs_queued.append(run)
    if len(runs_queued) == 1 and len(done) == 1:
        return redirect("sync:run_detail", pk=runs_queued[0].pk)
    return redirect(f"{reverse('sync:discrepancy_list')}?{urlencode({**active, 'status': 'all'})}")


@permission_required(APPROVE, raise_exception=True)
@require_POST
def discrepancy_reject(request, pk: int):
    discrepancy = get_object_or_404(_discrepancies(), pk=pk)
    form = RejectForm(request.POST)
    if not form.is_valid():
        return discrepancy_detail(request, pk, reject_form=form, status=400)
    pending = pending_resolution(discrepancy)
    if discrepancy.status not in DiscrepancyStatus.waiting() or (
        pending is not None and pending.status != ResolutionStatus.PROPOSED
    ):
        messages.warning(
            request, f"Nothing to reject: this discrepancy is {discrepancy.get_status_display().lower()}."
        )
        return redirect("sync:discrepancy_detail", pk=pk)
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
        return redirect("sync:discrepancy_detail", pk=pk)
    messages.success(request, "Rejected: nothing will change in Moodle; the reason is kept in the history.")
    return redirect("sync:discrepancy_detail", pk=pk)


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
            return redirect(f"{reverse('sync:discrepancy_detail', args=[pk])}#comments")
    return discrepancy_detail(request, pk, comment_form=form, status=400)
