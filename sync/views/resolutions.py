"""Pages of the decisions themselves: the resolution history, approving or rejecting a proposal, and a
second admin's confirmation of an override of the blast-radius guard."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from web.pages import list_page

from .. import resolutions
from ..choices import OverrideStatus, ResolutionStatus
from ..forms import RejectForm, ResolutionFilterForm
from ..models import GuardOverride, Resolution
from ..words import counted
from .decisions import APPROVE, BULK_PREVIEW_LIMIT, refusal, refused_page


def _subject_url(resolution: Resolution) -> str:
    if resolution.discrepancy_id:
        return reverse("sync:discrepancy_detail", args=[resolution.discrepancy_id])
    return reverse("sync:conflict_detail", args=[resolution.conflict_id])


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
        return refused_page(request, "sync/discrepancy_approve.html", context, reason)
    if resolutions.is_destructive(resolution):
        context["verdict"] = resolutions.guard_verdict([resolution], resolution.site)
    if request.method != "POST":
        return render(request, "sync/discrepancy_approve.html", context)
    try:
        run = resolutions.approve([resolution], request.user, request.POST.get("note", "").strip())
    except PermissionDenied as refused:
        return refused_page(request, "sync/discrepancy_approve.html", context, str(refused))
    except resolutions.ResolutionError as exc:
        messages.error(request, f"Nothing was approved: {exc}.")
        return redirect(back)
    if run is None:
        messages.warning(request, "Nothing was approved: someone decided on this resolution meanwhile.")
        return redirect(back)
    messages.success(
        request, f"Approved: resolution run #{run.pk} applies it ({counted(len(resolution.calls), 'call')})."
    )
    return redirect("sync:run_detail", pk=run.pk)


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
    return list_page(request, "sync/resolution_list.html", filters, rows)


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
            return redirect("sync:discrepancy_list")
        run = resolutions.confirm_override(override, request.user)
    except PermissionDenied as refused:
        return refused_page(request, "sync/override_detail.html", context, str(refused))
    except resolutions.ResolutionError as exc:
        messages.error(request, f"Nothing was done: {exc}.")
        return redirect("sync:override_detail", pk=pk)
    messages.success(request, f"Override #{override.pk} confirmed: resolution run #{run.pk} applies it.")
    return redirect("sync:run_detail", pk=run.pk)


def _override_refusal(user, override: GuardOverride) -> str:
    if override.status != OverrideStatus.PENDING:
        return ""
    if override.requested_by_id == user.pk:
        return "Four-eyes rule: a second admin must confirm the override you asked for."
    return ""
