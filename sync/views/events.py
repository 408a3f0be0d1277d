"""Pages of the webhooks' traffic: a site's events (every request, with what became of it and the last day
in figures), the hooks as the site page shows them, and the course completions Moodle reported, as a list
and a CSV download. Anyone signed in may look; the secrets are managed on their own page, by Admins."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Aggregate, CharField, Count, DurationField, ExpressionWrapper, F, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone

from monitoring.metrics import Percentile
from web.csv_export import queryset_csv
from web.pages import list_page

from .. import hook_secrets
from ..choices import EventStatus, HookDirection, HookSecretStatus
from ..forms import CompletionFilterForm, EventFilterForm
from ..models import Completion, InboundEvent, MoodleSite

SUMMARY_WINDOW = timedelta(hours=24)
HOOK_URL_NAMES = {HookDirection.SOURCE: "sync:source_hook", HookDirection.MOODLE: "sync:moodle_hook"}


class Mode(Aggregate):
    """PostgreSQL's mode(): the most frequent value (one of them, on a tie), in the query that counts."""

    function = "mode"
    template = "%(function)s() WITHIN GROUP (ORDER BY %(expressions)s)"


LATENCY = ExpressionWrapper(F("applied_at") - F("received_at"), output_field=DurationField())


def site_events(request: HttpRequest, slug: str) -> HttpResponse:
    site = get_object_or_404(MoodleSite, slug=slug)
    filters = EventFilterForm(request.GET)
    rows = filters.filter(site.inbound_events.defer("body")).order_by("-received_at", "-pk")
    return list_page(
        request,
        "sync/event_list.html",
        filters,
        rows,
        site=site,
        summary=day_summary(site),
        can_manage=request.user.has_perm(hook_secrets.MANAGE),
    )


def day_summary(site: MoodleSite) -> dict:
    """The last 24 hours of the site's hooks in one aggregate query: requests received, refused (with the
    commonest reason), redeliveries, applied, failed, waiting, and the 95th percentile of the applied
    events' latency (receipt to applied)."""

    def status(value: str) -> Count:
        return Count("pk", filter=Q(status=value))

    applied = Q(status=EventStatus.APPLIED, applied_at__isnull=False)
    return InboundEvent.objects.filter(site=site, received_at__gte=timezone.now() - SUMMARY_WINDOW).aggregate(
        received=Count("pk"),
        refused=status(EventStatus.REFUSED),
        duplicates=status(EventStatus.DUPLICATE),
        applied=status(EventStatus.APPLIED),
        failed=status(EventStatus.FAILED),
        waiting=status(EventStatus.ACCEPTED),
        commonest_reason=Mode("reason", filter=Q(status=EventStatus.REFUSED), output_field=CharField()),
        p95=Percentile(LATENCY, 0.95, filter=applied, output_field=DurationField()),
    )


def hook_overview(request: HttpRequest, site: MoodleSite) -> list[dict]:
    """What the site page says about each hook: the URL to give its sender, its active secret (by its last
    four characters) and the last request it received, in two queries."""
    active = {s.direction: s for s in site.hook_secrets.filter(status=HookSecretStatus.ACTIVE)}
    last = {
        e.direction: e
        for e in site.inbound_events.defer("body")
        .order_by("direction", "-received_at", "-pk")
        .distinct("direction")
    }
    return [
        {
            "direction": direction,
            "label": label,
            "url": hook_url(request, site, direction),
            "secret": active.get(direction),
            "last": last.get(direction),
        }
        for direction, label in HookDirection.choices
    ]


def hook_url(request: HttpRequest, site: MoodleSite, direction: str) -> str:
    """The hook's address as its sender must call it (absolute: it is typed into another system)."""
    return request.build_absolute_uri(reverse(HOOK_URL_NAMES[direction], args=[site.slug]))


# -- completions -------------------------------------------------------------------------------------------


def site_completions(request: HttpRequest, slug: str) -> HttpResponse:
    site = get_object_or_404(MoodleSite, slug=slug)
    filters = CompletionFilterForm(request.GET)
    rows = filters.filter(site.completions.all()).order_by("-completed_at", "-pk")
    return list_page(request, "sync/completion_list.html", filters, rows, site=site)


EXPORT_COLUMNS = (
    ("external_id", "external_id"), ("username", "username"), ("moodle_user_id", "moodle_user_id"),
    ("course_shortname", "course_shortname"), ("course_idnumber", "course_idnumber"),
    ("course_id", "course_id"), ("completed_at", "completed_at"), ("received_at", "received_at"),
)  # fmt: skip


def completion_export(request: HttpRequest, slug: str) -> HttpResponse:
    """The completions the list shows with the same filter, as a streamed CSV (every page)."""
    site = get_object_or_404(MoodleSite, slug=slug)
    completions = CompletionFilterForm(request.GET).filter(Completion.objects.filter(site=site))
    return queryset_csv(
        f"completions-{site.slug}", EXPORT_COLUMNS, completions.order_by("-completed_at", "-pk")
    )
