"""Dashboard pages and the health endpoint."""

from django.contrib.auth.decorators import login_not_required
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from sync.choices import RunStatus, TokenStatus
from sync.models import MoodleSite, SyncRun

from .health import run_checks

LATEST_RUNS_PER_SITE = 5


def _latest_runs(site_ids: list[int]) -> dict[int, list[SyncRun]]:
    """The newest runs of each site in one query (a window function, not a query per site)."""
    runs = (
        SyncRun.objects.filter(site_id__in=site_ids)
        .annotate(row=Window(RowNumber(), partition_by=[F("site_id")], order_by=F("created_at").desc()))
        .filter(row__lte=LATEST_RUNS_PER_SITE)
        .order_by("site_id", "-created_at")
    )
    by_site: dict[int, list[SyncRun]] = {site_id: [] for site_id in site_ids}
    for run in runs:
        by_site[run.site_id].append(run)
    return by_site


def _last_success(site_ids: list[int]) -> dict[int, SyncRun]:
    runs = (
        SyncRun.objects.filter(site_id__in=site_ids, status=RunStatus.SUCCEEDED)
        .order_by("site_id", "-finished_at")
        .distinct("site_id")
    )
    return {run.site_id: run for run in runs}


def overview(request):
    sites = list(MoodleSite.objects.order_by("name").prefetch_related("tokens"))
    site_ids = [site.pk for site in sites]
    latest = _latest_runs(site_ids)
    last_success = _last_success(site_ids)
    rows = [
        {
            "site": site,
            "runs": latest[site.pk],
            "last_success": last_success.get(site.pk),
            "active_runs": [run for run in latest[site.pk] if run.is_active],
            "active_token": next((t for t in site.tokens.all() if t.status == TokenStatus.ACTIVE), None),
        }
        for site in sites
    ]
    return render(request, "monitoring/overview.html", {"rows": rows})


@never_cache
@login_not_required
@require_GET
def healthz(request):
    """For load balancers and external monitors: no login, no secrets, 503 when a part is down."""
    healthy, components = run_checks()
    return JsonResponse(
        {"status": "ok" if healthy else "failing", "components": components}, status=200 if healthy else 503
    )
