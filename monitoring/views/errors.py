"""The errors pages: rates by category, errorcode and function over a window, with the chart and run
throughput; and the calls behind a rate, each with its run, its records and (for an answer that was not
Moodle's JSON) the raw first bytes behind a toggle."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import permission_required
from django.shortcuts import render

from sync.models import MoodleSite
from web.pages import list_page

from .. import charts, metrics
from ..forms import ERRORS, CallFilterForm
from ..models import CallLog


@permission_required("monitoring.view_calllog", raise_exception=True)
def errors(request):
    """Error rates by category, errorcode and function over a window, with the chart and run throughput."""
    win = metrics.window(request.GET.get("window"))
    site = MoodleSite.objects.filter(slug=request.GET.get("site") or "").first()
    since = win.since()
    rates = metrics.category_rates(since, site=site, span_s=win.rollup_s)
    base = {"window": win.name, **({"site": site.slug} if site else {})}
    for row in rates["rows"]:
        row["query"] = urlencode({**base, "category": row["category"]})
    codes = metrics.by_errorcode(since, site=site, span_s=win.rollup_s)
    for row in codes:
        row["query"] = urlencode(
            {
                **base,
                "category": row["outcome"],
                **({"errorcode": row["errorcode"]} if row["errorcode"] else {}),
            }
        )
    functions = metrics.by_function(since, site=site, span_s=win.rollup_s)
    for row in functions:
        row["query"] = urlencode({**base, "category": ERRORS, "function": row["function"]})
    context = {
        "window": win,
        "windows": metrics.WINDOWS.values(),
        "site": site,
        "sites": MoodleSite.objects.order_by("name").only("slug", "name"),
        "rates": rates,
        "errors_query": urlencode({**base, "category": ERRORS}),
        "codes": codes,
        "functions": functions,
        "chart": charts.calls_chart(metrics.series(win, site=site), bucket_s=win.bucket_s),
        "legend": charts.legend(),
        "throughput": metrics.run_throughput(site=site),
    }
    return render(request, "monitoring/errors.html", context)


@permission_required("monitoring.view_calllog", raise_exception=True)
def error_calls(request):
    """The calls behind a rate: filtered, paginated, each linking its run and the records it touched."""
    filters = CallFilterForm(request.GET)
    rows = filters.filter(CallLog.objects.select_related("site", "run")).defer("params", "run__plan")
    return list_page(
        request,
        "monitoring/calls.html",
        filters,
        rows.order_by("-started_at", "-pk"),
        described=filters.described(),
    )
