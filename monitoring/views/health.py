"""Endpoints for machines, without a login: /healthz for load balancers and external monitors, /metrics
for a Prometheus scraper (behind a bearer token or an allowed network)."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .. import metrics, prometheus
from ..health import run_checks


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
