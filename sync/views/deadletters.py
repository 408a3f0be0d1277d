"""Pages of the dead letters: grouped by errorcode, function and HTTP status; retry one, retry all
filtered (after confirming the exact count), discard with a reason."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.db.models import Count, Max, Min
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from web.csv_export import queryset_csv
from web.filters import EMPTY
from web.pages import back, paginate, safe_next

from .. import runs
from ..choices import DeadLetterStatus
from ..forms import DeadLetterFilterForm, DiscardForm
from ..models import DeadLetter
from ..words import counted

SUMMARY_LIMIT = 30


def deadletter_list(request):
    filters = DeadLetterFilterForm(request.GET)
    letters = filters.filter(DeadLetter.objects.all())
    active = filters.active()
    summary = (
        letters.values("errorcode", "function", "http_status")
        .annotate(letters=Count("pk"), first=Min("first_failed_at"), last=Max("last_failed_at"))
        .order_by("-letters", "errorcode", "function")[:SUMMARY_LIMIT]
    )
    groups = [
        {
            **group,
            "query": urlencode(
                {
                    **active,
                    "errorcode": group["errorcode"] or EMPTY,
                    "function": group["function"],
                    "http_status": group["http_status"] or EMPTY,
                }
            ),
        }
        for group in summary
    ]
    rows = letters.select_related("site", "record", "run", "retry_run").defer(
        "payload", "record__payload", "record__create_only", "run__plan", "retry_run__plan"
    )
    page, query = paginate(request, rows.order_by("-last_failed_at", "-pk"))
    retryable = (
        page.paginator.count if filters.chosen_status == DeadLetterStatus.OPEN else _open(letters).count()
    )
    return render(
        request,
        "sync/deadletter_list.html",
        {
            "filters": filters,
            "groups": groups,
            "page": page,
            "query": query,
            "filter_query": urlencode(active),
            "retryable": retryable,
            "here": request.get_full_path(),
        },
    )


# The CSV download: column title, then the field it reads.
EXPORT_COLUMNS = (
    ("id", "pk"), ("site", "site__slug"), ("external_id", "record__external_id"),
    ("name", "record__display_name"), ("function", "function"), ("category", "category"),
    ("errorcode", "errorcode"), ("http_status", "http_status"), ("message", "message"),
    ("attempts", "attempts"), ("first_failed_at", "first_failed_at"), ("last_failed_at", "last_failed_at"),
    ("status", "status"), ("run", "run_id"), ("retry_run", "retry_run_id"),
    ("discard_reason", "discard_reason"),
)  # fmt: skip


def deadletter_export(request):
    """The dead letters the list shows with the same filter, as a streamed CSV (every page, not one)."""
    letters = DeadLetterFilterForm(request.GET).filter(DeadLetter.objects.all())
    return queryset_csv("dead-letters", EXPORT_COLUMNS, letters.order_by("-last_failed_at", "-pk"))


def _open(letters):
    return letters.filter(status=DeadLetterStatus.OPEN)


@permission_required("sync.retry_deadletter", raise_exception=True)
@require_POST
def deadletter_retry(request, pk: int):
    letter = get_object_or_404(DeadLetter.objects.select_related("site"), pk=pk)
    run = runs.retry_dead_letters(letter.site, [letter], request.user)
    if run is None:
        messages.warning(request, f"Nothing was queued: dead letter #{letter.pk} is no longer open.")
    else:
        messages.success(request, f"Queued retry run #{run.pk} for 1 dead letter")
    return back(request, reverse("sync:deadletter_list"))


@permission_required("sync.retry_deadletter", raise_exception=True)
def deadletter_retry_filtered(request):
    """GET: the exact count and the filter in words. POST, carrying the same filter: a retry run per site."""
    data = (request.POST if request.method == "POST" else request.GET).copy()
    data["status"] = DeadLetterStatus.OPEN  # only open letters can be retried, whatever the list showed
    filters = DeadLetterFilterForm(data)
    letters = filters.filter(DeadLetter.objects.all())
    by_site = list(letters.values("site__name").annotate(letters=Count("pk")).order_by("site__name"))
    count = sum(row["letters"] for row in by_site)
    changed = None
    if request.method == "POST":
        confirmed = request.POST.get("count", "")
        if confirmed != str(count):
            changed = confirmed  # rows changed since the confirmation: confirm the new number
        else:
            return _retry_all(request, filters, letters)
    return render(
        request,
        "sync/deadletter_retry_filtered.html",
        {
            "filters": filters,
            "described": filters.describe(),
            "count": count,
            "by_site": by_site,
            "hidden": filters.active(),
            "changed": changed,
            "filter_query": urlencode(filters.active()),
        },
    )


def _retry_all(request, filters: DeadLetterFilterForm, letters) -> HttpResponse:
    queued = runs.retry_dead_letters_by_site(letters, request.user)
    for site, run, taken in queued:
        if run is None:
            messages.warning(
                request, f"Nothing was queued for {site.name}: those dead letters are no longer open."
            )
        else:
            messages.success(request, f"Queued retry run #{run.pk} for {counted(taken, 'dead letter')}")
    if not queued:
        messages.info(request, "No open dead letter matches this filter: nothing was queued.")
    # Show the same letters, whatever their status now, so each retry's outcome appears in place.
    return redirect(f"{reverse('sync:deadletter_list')}?{urlencode({**filters.active(), 'status': 'all'})}")


@permission_required("sync.retry_deadletter", raise_exception=True)
def deadletter_discard(request, pk: int):
    """GET asks for the reason; POST discards with it. The reason is required and kept on the row."""
    letter = get_object_or_404(DeadLetter.objects.select_related("site", "record"), pk=pk)
    form = DiscardForm(request.POST or None)
    target = safe_next(request, reverse("sync:deadletter_list"))
    if letter.status != DeadLetterStatus.OPEN:
        messages.warning(
            request, f"Dead letter #{letter.pk} is {letter.get_status_display().lower()}: nothing to discard."
        )
        return redirect(target)
    if request.method == "POST" and form.is_valid():
        try:
            runs.discard_dead_letter(letter, request.user, form.cleaned_data["reason"])
        except runs.RunActionError as exc:
            form.add_error("reason", str(exc))
        else:
            messages.success(request, f"Dead letter #{letter.pk} discarded; the reason is kept with it.")
            return redirect(target)
    return render(request, "sync/deadletter_discard.html", {"letter": letter, "form": form, "next": target})
