"""The Overview: each site's state with the reason and the way to fix it, its latest runs and what
waits for a person; the scheduler's heartbeat."""

from __future__ import annotations

from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.shortcuts import render

from sync.choices import TokenStatus
from sync.models import MoodleSite, SyncRun

from ..site_state import site_states

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


def overview(request):
    sites = list(MoodleSite.objects.order_by("name").prefetch_related("tokens"))
    site_ids = [site.pk for site in sites]
    latest = _latest_runs(site_ids)
    states = site_states(sites)
    rows = [
        {
            "site": site,
            "runs": latest[site.pk],
            "active_runs": [run for run in latest[site.pk] if run.is_active],
            "active_token": next((t for t in site.tokens.all() if t.status == TokenStatus.ACTIVE), None),
            "state": states[site.pk],
        }
        for site in sites
    ]
    return render(request, "monitoring/overview.html", {"rows": rows})
