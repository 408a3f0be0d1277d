"""Pages of the conflicts: by kind and site, a conflict's side-by-side view and the operator's proposal
(link, rename, re-link, ignore) that an Admin then decides."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from web.pages import list_page, safe_next

from .. import resolutions
from ..choices import ConflictKind, ResolutionStatus
from ..forms import CommentForm, ConflictFilterForm, RejectForm
from ..models import Conflict
from .decisions import conflict_choices, diff, kind_counts, refusal, trail


def conflict_list(request):
    filters = ConflictFilterForm(request.GET)
    active = filters.active()
    everything = Conflict.objects.all()
    counts = kind_counts(
        filters.filter(everything, by_kind_and_site=False),
        reverse("sync:conflict_list"),
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
    return list_page(request, "sync/conflict_list.html", filters, rows, counts=counts)


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
        "diff": diff(conflict.our_payload or {}, columns, ("username", "email", "idnumber")),
        "refusal": refusal(request.user, conflict.site, conflict.pending),
        "trail": trail(conflict.resolutions.all()),
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
    target = safe_next(request, reverse("sync:conflict_detail", args=[pk]))
    try:
        proposal = resolutions.propose_for_conflict(
            conflict, request.POST.get("action", ""), request.user, request.POST.get("user", "")
        )
    except resolutions.ResolutionError as exc:
        messages.error(request, f"Nothing proposed: {exc}.")
    else:
        messages.success(
            request,
            f"Proposed: {proposal.get_action_display().lower()}"
            + (f" as {proposal.params['overrides']['username']}" if "overrides" in proposal.params else "")
            + ". An Admin approves or rejects it on the conflict's page.",
        )
    return redirect(target)


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
            return redirect(f"{reverse('sync:conflict_detail', args=[pk])}#comments")
    return conflict_detail(request, pk, comment_form=form, status=400)
