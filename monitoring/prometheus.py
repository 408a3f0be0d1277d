"""/metrics: the hub's state as Prometheus text, for a scraper. Labels name sites and token labels, never a
token. Each site's state is the one the Overview shows (monitoring.site_state)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from sync.choices import DeadLetterStatus, RunStatus, TokenStatus
from sync.models import DeadLetter, MoodleSite, ServiceToken, SyncRun
from sync.moodle.audit import SENDING
from sync.run.connect import shared_redis

from .metrics import Percentile, breaker_value
from .models import Alert, CallLog, Heartbeat, ProbeResult
from .site_state import LABEL, RANK, site_states
from .worker_liveness import alive_workers


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return repr(round(float(value), 3))


class Exposition:
    """Prometheus text exposition (format 0.0.4), written by hand: HELP and TYPE once per family."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict, float]]) -> None:
        self._lines.append(f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            rendered = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
            self._lines.append(
                f"{name}{{{rendered}}} {_number(value)}" if rendered else f"{name} {_number(value)}"
            )

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def prometheus_text(now: datetime | None = None) -> str:
    """The hub's state for a Prometheus scraper. Labels name sites and token labels, never a token."""
    now = now or timezone.now()
    out = Exposition()
    sites = list(MoodleSite.objects.order_by("slug").prefetch_related("tokens"))
    slug = {site.pk: site.slug for site in sites}
    states = site_states(sites, now=now)
    out.family(
        "hub_site_state",
        "gauge",
        "Each site's state as the Overview shows it: "
        + ", ".join(f"{rank} {LABEL[state]}" for state, rank in sorted(RANK.items(), key=lambda i: i[1]))
        + ".",
        (({"site": site.slug, "state": states[site.pk].state}, states[site.pk].rank) for site in sites),
    )

    runs = dict(SyncRun.objects.values_list("status").annotate(n=Count("pk")).order_by())
    out.family(
        "hub_runs",
        "gauge",
        "Sync runs by status (all kept runs).",
        (({"status": status}, runs.get(status, 0)) for status in RunStatus.values),
    )

    since = now - timedelta(seconds=settings.ALERT_WINDOW_S)
    recent = (
        CallLog.objects.filter(started_at__gte=since)
        .values_list("site_id", "outcome")
        .annotate(n=Count("pk"))
        .order_by("site_id", "outcome")
    )
    out.family(
        "hub_moodle_calls_recent",
        "gauge",
        f"Moodle calls in the last {settings.ALERT_WINDOW_S} s by site and outcome (ok or error category).",
        (
            ({"site": slug.get(site_id, str(site_id)), "category": outcome}, n)
            for site_id, outcome, n in recent
        ),
    )
    latency = (
        CallLog.objects.filter(started_at__gte=since)
        .exclude(outcome=SENDING)
        .values_list("site_id")
        .annotate(p90=Percentile("duration_ms", 0.9))
        .order_by("site_id")
    )
    out.family(
        "hub_moodle_call_p90_ms",
        "gauge",
        f"p90 latency of Moodle calls in the last {settings.ALERT_WINDOW_S} s, in milliseconds.",
        (({"site": slug.get(site_id, str(site_id))}, p90) for site_id, p90 in latency if p90 is not None),
    )

    out.family(
        "hub_breaker_state",
        "gauge",
        "Circuit breaker per site: 0 closed, 1 half-open, 2 open.",
        (({"site": site.slug}, value) for site in sites if (value := breaker_value(site)) is not None),
    )

    probes = list(
        ProbeResult.objects.filter(site_id__in=list(slug))
        .order_by("site_id", "-at")
        .distinct("site_id")
        .values_list("site_id", "ok", "latency_ms")
    )
    out.family(
        "hub_probe_ok",
        "gauge",
        "Whether the last heartbeat probe (core_webservice_get_site_info) of the site succeeded.",
        (({"site": slug[site_id]}, int(ok)) for site_id, ok, _ in probes),
    )
    out.family(
        "hub_probe_latency_ms",
        "gauge",
        "Latency of the last heartbeat probe, in milliseconds.",
        (({"site": slug[site_id]}, ms) for site_id, _, ms in probes if ms is not None),
    )

    tokens = ServiceToken.objects.filter(
        status__in=[TokenStatus.ACTIVE, TokenStatus.STANDBY], valid_until__isnull=False
    ).values_list("site_id", "label", "status", "valid_until")
    out.family(
        "hub_token_days_left",
        "gauge",
        "Days until a service token expires (tokens without expiry are not listed).",
        (
            ({"site": slug.get(site_id, str(site_id)), "token": label, "status": status}, (until - now).days)
            for site_id, label, status, until in tokens.order_by("site_id", "label")
        ),
    )

    letters = dict(
        DeadLetter.objects.filter(status=DeadLetterStatus.OPEN)
        .values_list("site_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    out.family(
        "hub_dead_letters_open",
        "gauge",
        "Open dead letters per site.",
        (({"site": site.slug}, letters.get(site.pk, 0)) for site in sites),
    )

    alerts = dict(
        Alert.objects.exclude(status=Alert.Status.RESOLVED)
        .values_list("severity")
        .annotate(n=Count("pk"))
        .order_by()
    )
    out.family(
        "hub_alerts_open",
        "gauge",
        "Unresolved alerts (open or acknowledged) by severity.",
        (({"severity": severity}, alerts.get(severity, 0)) for severity in Alert.Severity.values),
    )

    out.family(
        "hub_workers_alive", "gauge", "Celery workers whose liveness key is fresh.", [({}, _workers())]
    )

    beat = Heartbeat.objects.filter(name=Heartbeat.SCHEDULER).first()
    if beat is not None:
        out.family(
            "hub_scheduler_heartbeat_age_seconds",
            "gauge",
            "Seconds since the scheduler's heartbeat task last finished.",
            [({}, round(beat.age_seconds(now), 1))],
        )
    return out.text()


def _workers() -> int:
    try:
        return len(alive_workers(shared_redis()))
    except Exception:  # Redis down: no worker can take tasks either
        return 0
