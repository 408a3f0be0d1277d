"""Pages of the runs: the list, a run's page with its live part (status, progress, counters, buttons),
and the operator's pause, resume and cancel."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.db.models import Count, Max
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from monitoring import retention
from monitoring.models import CallLog
from web.pages import list_page

from .. import runs
from ..choices import DiscrepancyKind, MembershipStatus, RunStatus, SyncStatus
from ..forms import RunFilterForm
from ..models import RecordEvent, SyncRecord, SyncRun
from ..words import membership_counts
from .memberships import maps_memberships

TIMELINE_LIMIT = 200  # newest run events shown; a run with thousands of bad source rows stays readable
ERROR_OUTCOMES = ("error", "conflict", "dead_letter")
OUTCOME_LABELS = {"error": "Error", "conflict": "Conflict", "dead_letter": "Dead letter"}


def run_list(request):
    filters = RunFilterForm(request.GET)
    rows = filters.filter(SyncRun.objects.select_related("site").defer("plan")).order_by("-created_at", "-pk")
    return list_page(request, "sync/run_list.html", filters, rows)


def run_detail(request, pk: int):
    run = get_object_or_404(SyncRun.objects.select_related("site", "started_by"), pk=pk)
    event_count = run.events.count()
    events = list(run.events.order_by("-at", "-pk")[:TIMELINE_LIMIT])[::-1]
    call_errors = (
        CallLog.objects.filter(run=run)
        .exclude(outcome="ok")
        .values("outcome", "errorcode", "function")
        .annotate(calls=Count("pk"), last=Max("started_at"), http_status=Max("http_status"))
        .order_by("-calls", "outcome", "errorcode", "function")
    )
    record_errors = (
        RecordEvent.objects.filter(run=run, outcome__in=ERROR_OUTCOMES)
        .values("outcome")
        .annotate(records=Count("record_id", distinct=True))
        .order_by("outcome")
    )
    context = {
        **_progress_context(run),
        "events": events,
        "event_count": event_count,
        "call_errors": list(call_errors),
        # An old run's calls may be pruned: then "no failed call" is not known, and is not said.
        "calls_pruned": retention.is_pruned(run.started_at or run.created_at),
        "retention_days": settings.HISTORY_RETENTION_DAYS,
        "record_errors": [
            {
                **row,
                "label": OUTCOME_LABELS[row["outcome"]],
                "query": urlencode({"run": run.pk, "outcome": row["outcome"]}),
            }
            for row in record_errors
        ],
    }
    return render(request, "sync/run_detail.html", context)


def run_progress(request, pk: int):
    """The live part of the run page, polled by htmx while the run may still change."""
    run = get_object_or_404(SyncRun.objects.select_related("site", "started_by"), pk=pk)
    response = render(request, "sync/_run_progress.html", _progress_context(run))
    if request.headers.get("HX-Request") and not run.is_active:
        # Only an active run's block polls, so the run has just ended: reload the whole page, whose
        # errors and timeline were rendered while it was still going.
        response["HX-Refresh"] = "true"
    return response


def _progress_context(run: SyncRun) -> dict:
    per_minute = eta = None
    if run.started_at and run.last_progress_at and run.progress_done:
        minutes = (run.last_progress_at - run.started_at).total_seconds() / 60
        if minutes > 0:
            per_minute = run.progress_done / minutes
            left = max(0, run.progress_total - run.progress_done)
            if run.status == RunStatus.RUNNING and left:
                eta = timezone.now() + timedelta(minutes=left / per_minute)
    pending = None
    if run.status == RunStatus.ABORTED:
        pending = SyncRecord.objects.filter(site=run.site, sync_status=SyncStatus.PENDING).count()
    return {
        "run": run,
        "per_minute": round(per_minute) if per_minute is not None else None,
        "eta": eta,
        "counters": _counters(run),
        "membership_counters": _membership_counters(run),
        "waiting": run.is_active and run.abort_reason.startswith("waiting"),
        "plan": _plan_rows(run.plan) if run.dry_run and run.plan else None,
        "pending": pending,
        "resumable": runs.resumable(run),
        "real_run": runs.real_run_offer(run) if run.dry_run else None,
    }


def _counters(run: SyncRun) -> list[tuple[str, int, str | None]]:
    """Each counter with the list of the rows behind it, where such a list exists."""
    records, letters = reverse("sync:record_list"), reverse("sync:deadletter_list")
    held = reverse("sync:discrepancy_list")

    def rows(**params) -> str:
        return f"{records}?{urlencode({'run': run.pk, **params})}"

    return [
        ("Seen", run.seen, None),
        ("Changed", run.changed, rows()),
        ("Created", run.created, rows(outcome="created")),
        ("Updated", run.updated, rows(outcome="updated")),
        ("Suspended", run.suspended, rows(outcome="suspended")),
        ("Unchanged", run.unchanged, None),
        ("Skipped", run.skipped, None),
        ("Conflicts", run.conflicts, rows(outcome="conflict")),
        ("Errors", run.errors, rows(status=SyncStatus.ERROR)),
        ("Dead-lettered", run.dead_lettered, f"{letters}?{urlencode({'run': run.pk, 'status': 'all'})}"),
        ("Held back by the guard", run.blocked, f"{held}?{urlencode({'run': run.pk, 'status': 'all'})}"),
        ("Moodle calls", run.calls, None),
    ]


def _membership_counters(run: SyncRun) -> list[dict] | None:
    """The membership counters in words, apart from the users' (a person may have many memberships); None
    when none moved and the site's mapping names no course or cohort."""
    counts = membership_counts(run)
    if not any(value for _, value, _ in counts) and not maps_memberships(run.site):
        return None
    rows = reverse("sync:site_memberships", args=[run.site.slug])
    held = {"site": run.site.slug, "kind": DiscrepancyKind.MEMBERSHIP_LEFT, "run": run.pk, "status": "all"}
    links = {
        "membership_errors": f"{rows}?{urlencode({'run': run.pk, 'status': MembershipStatus.ERROR})}",
        "memberships_held": f"{reverse('sync:discrepancy_list')}?{urlencode(held)}",
    }
    return [
        {"name": name, "value": value, "words": words, "url": links.get(name) if value else None}
        for name, value, words in counts
    ]


# What a dry run's plan holds, in the order an operator reads it, with the example lists that go with it.
_PLAN_ROWS = (
    ("seen", "Source records read", ()),
    ("would_create", "Would create", ("create",)),
    ("would_update", "Would update", ("update", "link")),
    ("would_suspend", "Would suspend (left the source)", ("suspend",)),
    ("already_in_step", "Already in step", ("unchanged",)),
    ("conflicts", "Conflicts", ("conflict",)),
    ("invalid", "Invalid (not sent)", ("invalid", "error")),
    ("skipped", "Skipped (unresolved conflicts and errors)", ()),
    ("removal_blocked", "Suspensions blocked by the blast-radius guard", ("removal_blocked",)),
)


# The memberships a real run would change, counted apart from the people (one person may have many).
_MEMBERSHIP_PLAN_ROWS = (
    ("would_enrol", "Would enrol (or change the role or dates)", ("membership_enrol",)),
    ("would_suspend_enrolments", "Would suspend enrolments (left a course)", ("membership_suspend",)),
    ("would_add_to_cohorts", "Would add to cohorts", ("membership_add",)),
    ("would_remove_from_cohorts", "Would remove from cohorts", ("membership_remove",)),
    ("membership_problems", "Cannot be sent (in error)", ("membership_problems",)),
)


def _plan_rows(plan: dict) -> dict:
    examples = plan.get("examples", {})

    def rows(table) -> list[dict]:
        return [
            {
                "key": key,
                "label": label,
                "count": plan.get(key, 0),
                "examples": [e for k in kinds for e in examples.get(k, [])],
            }
            for key, label, kinds in table
            if key in plan
        ]

    return {
        "rows": rows(_PLAN_ROWS),
        "memberships": rows(_MEMBERSHIP_PLAN_ROWS),
        "target_problems": plan.get("target_problems") or [],
        "estimate": plan.get("estimate") or {},
    }


@permission_required("sync.operate_runs", raise_exception=True)
@require_POST
def run_pause(request, pk: int):
    run = get_object_or_404(SyncRun, pk=pk)
    return _run_action(
        request, run, runs.pause, f"Pause requested for run #{run.pk}: it stops after the batch in flight."
    )


@permission_required("sync.operate_runs", raise_exception=True)
@require_POST
def run_resume(request, pk: int):
    run = get_object_or_404(SyncRun, pk=pk)
    return _run_action(
        request, run, runs.resume, f"Run #{run.pk} queued to resume: it continues with the pending records."
    )


@permission_required("sync.operate_runs", raise_exception=True)
def run_cancel(request, pk: int):
    """GET asks for confirmation (no JavaScript needed); POST cancels."""
    run = get_object_or_404(SyncRun.objects.select_related("site"), pk=pk)
    if request.method != "POST":
        return render(request, "sync/run_cancel.html", {"run": run})
    done = (
        f"Run #{run.pk} cancelled."
        if run.status in (RunStatus.QUEUED, RunStatus.PAUSED)
        else f"Cancel requested for run #{run.pk}: it stops within seconds while it reads the source, "
        "else after the batch in flight."
    )
    return _run_action(request, run, runs.cancel, done)


@permission_required("sync.operate_runs", raise_exception=True)
@require_POST
def run_for_real(request, pk: int):
    """The dry run's "Run this for real": the same mode and the same uploaded file, as a new run."""
    dry = get_object_or_404(SyncRun, pk=pk)
    try:
        run = runs.run_for_real(dry, request.user)
    except runs.RunActionError as exc:
        messages.error(request, f"Nothing was queued: {exc}.")
        return redirect("sync:run_detail", pk=dry.pk)
    messages.success(request, f"Queued run #{run.pk}: the real run of dry run #{dry.pk}.")
    return redirect("sync:run_detail", pk=run.pk)


def _run_action(request, run: SyncRun, action, done: str) -> HttpResponse:
    try:
        action(run, request.user)
    except runs.RunActionError as exc:
        messages.error(request, f"Nothing was done: {exc}.")
    else:
        messages.success(request, done)
    return redirect("sync:run_detail", pk=run.pk)
