"""Dashboard pages, the errors pages, and the health and metrics endpoints."""

import hmac
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_not_required, permission_required
from django.core.paginator import Paginator
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from sync.choices import TokenStatus
from sync.models import MoodleSite, SyncRun

from . import charts, metrics, prometheus
from .forms import ERRORS, CallFilterForm
from .health import run_checks
from .models import CallLog
from .site_state import site_states

CALLS_PAGE_SIZE = 50

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


@never_cache
@login_not_required
@require_GET
def healthz(request):
    """For load balancers and external monitors: no login, no secrets, 503 when a part is down."""
    healthy, components = run_checks()
    return JsonResponse(
        {"status": "ok" if healthy else "failing", "components": components}, status=200 if healthy else 503
    )


def _metrics_refusal(request) -> HttpResponse | None:
    """None when the scraper may read /metrics: the right bearer token, or an address in an allowed
    network. The token is compared in constant time; a refusal carries no data."""
    expected = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    scheme, _, offered = header.partition(" ")
    if (
        expected
        and scheme.lower() == "bearer"
        and hmac.compare_digest(offered.strip().encode(), expected.encode())
    ):
        return None
    if metrics.allowed_network(request.META.get("REMOTE_ADDR"), settings.METRICS_ALLOWED_NETWORKS):
        return None
    if expected:
        response = HttpResponse("Unauthorized: send Authorization: Bearer <token>.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    else:
        response = HttpResponse("Forbidden: this address is not in METRICS_ALLOWED_NETWORKS.\n", status=403)
    response["Content-Type"] = "text/plain; charset=utf-8"
    return response


@never_cache
@login_not_required
@require_GET
def metrics_view(request):
    """Prometheus text for a scraper: protected by a bearer token or an allowed network, no login."""
    if (refusal := _metrics_refusal(request)) is not None:
        return refusal
    return HttpResponse(prometheus.prometheus_text(), content_type="text/plain; version=0.0.4; charset=utf-8")


@permission_required("monitoring.view_calllog", raise_exception=True)
def errors(request):
    """Error rates by category, errorcode and function over a window, with the chart and run throughput."""
    win = metrics.window(request.GET.get("window"))
    site = MoodleSite.objects.filter(slug=request.GET.get("site") or "").first()
    since = win.since()
    rates = metrics.category_rates(since, site=site)
    base = {"window": win.name, **({"site": site.slug} if site else {})}
    for row in rates["rows"]:
        row["query"] = urlencode({**base, "category": row["category"]})
    codes = metrics.by_errorcode(since, site=site)
    for row in codes:
        row["query"] = urlencode(
            {
                **base,
                "category": row["outcome"],
                **({"errorcode": row["errorcode"]} if row["errorcode"] else {}),
            }
        )
    functions = metrics.by_function(since, site=site)
    for row in functions:
        row["query"] = urlencode({**base, "category": ERRORS, "function": row["function"]})
    tz = _zone(site.time_zone) if site else None
    context = {
        "window": win,
        "windows": metrics.WINDOWS.values(),
        "site": site,
        "sites": MoodleSite.objects.order_by("name").only("slug", "name"),
        "rates": rates,
        "errors_query": urlencode({**base, "category": ERRORS}),
        "codes": codes,
        "functions": functions,
        "chart": charts.calls_chart(metrics.series(win, site=site), bucket_s=win.bucket_s, tz=tz),
        "legend": charts.legend(),
        "throughput": metrics.run_throughput(site=site),
    }
    return render(request, "monitoring/errors.html", context)


@permission_required("monitoring.view_calllog", raise_exception=True)
def error_calls(request):
    """The calls behind a rate: filtered, paginated, each linking its run and the records it touched."""
    filters = CallFilterForm(request.GET)
    rows = filters.filter(CallLog.objects.select_related("site", "run")).defer("params", "run__plan")
    page = Paginator(rows.order_by("-started_at", "-pk"), CALLS_PAGE_SIZE).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    return render(
        request,
        "monitoring/calls.html",
        {
            "filters": filters,
            "page": page,
            "query": params.urlencode(),
            "described": filters.described(),
            "filtered": bool(filters.active()),
        },
    )


def _zone(name: str):
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None
