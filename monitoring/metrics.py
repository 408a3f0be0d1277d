"""Error rates, latency and throughput from the audit rows, for the errors page, the Overview and /metrics.

The errors page looks back up to 7 days: it reads the rollups of the call log as wide as its chart's buckets
(monitoring/rollups.py), never the rows themselves, so it costs the same with 1,000 calls or 10 million;
its latency percentiles come from histograms and are approximate. The Overview looks back an hour and
reads the call log itself (by its time index): the throttle bounds those rows to a few thousand a site.
Categories are the client's (sync.moodle.errors); "ok" is a successful call.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from django.conf import settings
from django.db.models import Aggregate, Count, FloatField, Func, Max, Q, QuerySet, Sum
from django.db.models.fields import DateTimeField
from django.utils import timezone

from sync.choices import RunStatus
from sync.models import MoodleSite, SyncRun
from sync.moodle import errors
from sync.moodle.audit import SENDING
from sync.moodle.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerConfig, BreakerState
from sync.run.connect import shared_redis

from . import rollups
from .models import CallLog, CallRollup

OK = "ok"
# In the order the chart stacks them (worst on top) and the tables list them.
CATEGORIES = (
    errors.TRANSIENT,
    errors.MAINTENANCE,
    errors.CLIENT_FAULT,
    errors.CONFLICT,
    errors.AUTH,
    errors.CONFIG,
)
CATEGORY_LABELS = {
    OK: "OK",
    errors.TRANSIENT: "Transient",
    errors.MAINTENANCE: "Maintenance",
    errors.CLIENT_FAULT: "Client fault",
    errors.CONFLICT: "Conflict",
    errors.AUTH: "Authorization",
    errors.CONFIG: "Configuration",
    SENDING: "No answer yet",
}
CATEGORY_MEANING = {
    errors.TRANSIENT: "Moodle or the network hiccuped; retried with backoff. Noise up to 5-10 %.",
    errors.MAINTENANCE: "The site was in maintenance mode on purpose; calls wait and retry.",
    errors.CLIENT_FAULT: "Moodle refused our data or request; not retried, the record shows why.",
    errors.CONFLICT: "A username or email already belongs to another Moodle user; see Conflicts.",
    errors.AUTH: "The token was rejected: every call fails until it is fixed.",
    errors.CONFIG: "The Moodle service lacks a function or setting the hub needs.",
    SENDING: "Sent, and no answer recorded: at Moodle now, or the hub stopped before the answer came. "
    "Moodle may have done it; the next run's look-ups find out.",
}
BREAKER_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


@dataclass(frozen=True)
class Window:
    """A rolling window for the errors page, and the width of the chart's buckets within it."""

    name: str
    label: str
    span: timedelta
    bucket_s: int

    def since(self, now: datetime | None = None) -> datetime:
        return (now or timezone.now()) - self.span

    @property
    def rollup_s(self) -> int:
        """The rollups the window reads: those as wide as its chart's buckets."""
        return self.bucket_s


WINDOWS = {
    w.name: w
    for w in (
        Window("1h", "last hour", timedelta(hours=1), 60),
        Window("6h", "last 6 hours", timedelta(hours=6), 300),
        Window("24h", "last 24 hours", timedelta(hours=24), 900),
        Window("7d", "last 7 days", timedelta(days=7), 7200),
    )
}
DEFAULT_WINDOW = "1h"
assert all(w.bucket_s in rollups.SPANS for w in WINDOWS.values()), "every window needs rollups of its width"


def window(name: str | None) -> Window:
    return WINDOWS.get(name or "", WINDOWS[DEFAULT_WINDOW])


class Percentile(Aggregate):
    """PostgreSQL's percentile_cont: the latency below which `fraction` of the calls fell."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra):
        super().__init__(expression, fraction=float(fraction), **extra)


class Bucket(Func):
    """`started_at` floored to a multiple of `width` seconds (date_trunc only knows whole units)."""

    template = "to_timestamp(floor(extract(epoch from %(expressions)s) / %(width)s) * %(width)s)"
    output_field = DateTimeField()

    def __init__(self, expression, width: int, **extra):
        super().__init__(expression, width=int(width), **extra)


def _rate(part: int, total: int) -> float:
    return part / total if total else 0.0


def _rolled_up(since: datetime, span_s: int, *, site: MoodleSite | None = None) -> QuerySet:
    """The rollup rows `span_s` wide, from the one `since` falls in."""
    rows = CallRollup.objects.filter(span_s=span_s, bucket__gte=rollups.floor(since, span_s))
    if site is not None:
        rows = rows.filter(site=site)
    return rows


def _totals(since: datetime, span_s: int, *, site: MoodleSite | None = None) -> QuerySet:
    """Rollup rows that count each call since `since` (floored to `span_s`) exactly once, read through the
    widest buckets that fit: a day's totals from twelve 2-hour rows per key and the quarter-hours at its
    edges, not from ninety-six quarter-hours. For totals only; a chart reads its own bucket width."""
    start = rollups.floor(since, span_s)
    end = rollups.floor(timezone.now(), span_s) + timedelta(seconds=span_s)
    spans = [s for s in rollups.SPANS if s >= span_s]
    rows = CallRollup.objects.filter(_cover(start, end, spans))
    if site is not None:
        rows = rows.filter(site=site)
    return rows


def _cover(start: datetime, end: datetime, spans: list[int]) -> Q:
    """[start, end) as rollup buckets: the widest span's whole buckets inside, finer ones at the edges."""
    *finer, span = spans
    if not finer:
        return Q(span_s=span, bucket__gte=start, bucket__lt=end)
    inner_start = rollups.floor(start - timedelta(microseconds=1), span) + timedelta(seconds=span)
    inner_end = rollups.floor(end, span)
    if inner_start >= inner_end:
        return _cover(start, end, finer)
    cover = Q(span_s=span, bucket__gte=inner_start, bucket__lt=inner_end)
    if start < inner_start:
        cover |= _cover(start, inner_start, finer)
    if inner_end < end:
        cover |= _cover(inner_end, end, finer)
    return cover


def category_rates(since: datetime, *, site: MoodleSite | None = None, span_s: int = rollups.MINUTE) -> dict:
    """Calls in the window by outcome: {"total", "ok", "errors", "rows": [{category, label, calls, rate}]}."""
    counts = dict(
        _totals(since, span_s, site=site).values_list("outcome").annotate(n=Sum("calls")).order_by()
    )
    total = sum(counts.values())
    known = [*CATEGORIES, *(c for c in counts if c not in CATEGORIES and c != OK)]
    rows = [
        {
            "category": category,
            "label": CATEGORY_LABELS.get(category, category),
            "meaning": CATEGORY_MEANING.get(category, ""),
            "calls": counts.get(category, 0),
            "rate": _rate(counts.get(category, 0), total),
        }
        for category in known
    ]
    return {"total": total, "ok": counts.get(OK, 0), "errors": total - counts.get(OK, 0), "rows": rows}


def by_errorcode(
    since: datetime, *, site: MoodleSite | None = None, span_s: int = rollups.MINUTE, limit: int = 20
) -> list[dict]:
    """Failed calls grouped by category, errorcode and HTTP status, most frequent first."""
    rows = (
        _totals(since, span_s, site=site)
        .exclude(outcome=OK)
        .values("outcome", "errorcode", "http_status")
        .annotate(calls=Sum("calls"), last=Max("last_at"))
        .order_by("-calls", "outcome", "errorcode")[:limit]
    )
    return [{**row, "http_status": row["http_status"] or None} for row in rows]


def by_function(
    since: datetime, *, site: MoodleSite | None = None, span_s: int = rollups.MINUTE, limit: int = 30
) -> list[dict]:
    """Per web-service function: calls, errors, error rate and (approximate) latency percentiles."""
    found: dict[str, dict] = {}
    for function, outcome, n, histogram, largest in _totals(since, span_s, site=site).values_list(
        "function", "outcome", "calls", "histogram", "duration_ms_max"
    ):
        row = found.setdefault(
            function, {"function": function, "calls": 0, "failed": 0, "transient": 0, "parts": [], "max": 0.0}
        )
        row["calls"] += n
        row["failed"] += n if outcome != OK else 0
        row["transient"] += n if outcome in (errors.TRANSIENT, errors.MAINTENANCE) else 0
        row["parts"].append(histogram)
        row["max"] = max(row["max"], largest)
    rows = sorted(found.values(), key=lambda r: (-r["failed"], -r["calls"], r["function"]))[:limit]
    for row in rows:
        histogram = rollups.merged(row.pop("parts"))
        largest = row.pop("max")
        row["p50"] = rollups.percentile(histogram, 0.5, largest)
        row["p90"] = rollups.percentile(histogram, 0.9, largest)
        row["rate"] = _rate(row["failed"], row["calls"])
    return rows


def series(win: Window, *, site: MoodleSite | None = None, now: datetime | None = None) -> list[dict]:
    """Calls per bucket by category with (approximate) p50/p90 latency, every bucket of the window present
    (empty ones with zeros and no latency), oldest first."""
    now = now or timezone.now()
    width = win.bucket_s
    start = _floor(win.since(now), width)
    found: dict[datetime, dict] = {}
    for bucket, outcome, n, histogram, largest in _rolled_up(start, win.rollup_s, site=site).values_list(
        "bucket", "outcome", "calls", "histogram", "duration_ms_max"
    ):
        point = found.setdefault(
            _floor(bucket, width), {"total": 0, "ok": 0, "categories": {}, "parts": [], "max": 0.0}
        )
        point["total"] += n
        point["ok"] += n if outcome == OK else 0
        point["categories"][outcome] = point["categories"].get(outcome, 0) + n
        point["parts"].append(histogram)
        point["max"] = max(point["max"], largest)
    points = []
    at = start
    while at <= now:
        point = found.get(at)
        histogram = rollups.merged(point["parts"]) if point else []
        points.append(
            {
                "at": at,
                "total": point["total"] if point else 0,
                "ok": point["ok"] if point else 0,
                "p50": rollups.percentile(histogram, 0.5, point["max"]) if point else None,
                "p90": rollups.percentile(histogram, 0.9, point["max"]) if point else None,
                "categories": {c: (point["categories"].get(c, 0) if point else 0) for c in CATEGORIES},
            }
        )
        at += timedelta(seconds=width)
    return points


def latency_sparklines(site_ids: Iterable[int], *, now: datetime | None = None) -> dict[int, list]:
    """p90 latency per 5 minutes over the last hour for each site, from the 5-minute rollups (approximate,
    as the errors page's): {site_id: [ms|None]}."""
    now = now or timezone.now()
    width = rollups.FIVE_MINUTES
    start = _floor(now - timedelta(hours=1), width)
    site_ids = list(site_ids)
    parts: dict[tuple[int, datetime], list] = {}
    largest: dict[tuple[int, datetime], float] = {}
    for site_id, bucket, histogram, longest in CallRollup.objects.filter(
        site_id__in=site_ids, span_s=width, bucket__gte=start
    ).values_list("site_id", "bucket", "histogram", "duration_ms_max"):
        key = (site_id, _floor(bucket, width))
        parts.setdefault(key, []).append(histogram)
        largest[key] = max(largest.get(key, 0.0), longest)
    found = {
        key: rollups.percentile(rollups.merged(histograms), 0.9, largest[key])
        for key, histograms in parts.items()
    }
    steps = int((now - start).total_seconds() // width) + 1
    buckets = [start + timedelta(seconds=width * i) for i in range(steps)]
    return {site_id: [found.get((site_id, b)) for b in buckets] for site_id in site_ids}


def transient_rates(site_ids: Iterable[int], since: datetime) -> dict[int, tuple[int, int]]:
    """(transient or maintenance calls, all calls) per site since `since`, in one query."""
    rows = (
        CallLog.objects.filter(site_id__in=list(site_ids), started_at__gte=since)
        .exclude(outcome=SENDING)
        .values("site_id")
        .annotate(
            total=Count("*"),
            transient=Count("pk", filter=Q(outcome__in=[errors.TRANSIENT, errors.MAINTENANCE])),
        )
        .order_by()
    )
    return {row["site_id"]: (row["transient"], row["total"]) for row in rows}


def run_throughput(*, site: MoodleSite | None = None, limit: int = 20) -> list[dict]:
    """Recent runs that did work: duration, records sent and records per minute, with the site's median
    rate among them, so a run twice as slow as usual stands out even without errors."""
    runs = (
        SyncRun.objects.filter(started_at__isnull=False, dry_run=False)
        .exclude(status__in=[RunStatus.QUEUED, RunStatus.SKIPPED])
        .select_related("site")
        .only(
            "pk",
            "kind",
            "status",
            "started_at",
            "finished_at",
            "progress_done",
            "progress_total",
            "calls",
            "site__slug",
            "site__name",
            "site__time_zone",
        )
        .order_by("-started_at")
    )
    if site is not None:
        runs = runs.filter(site=site)
    rows = []
    for run in runs[:limit]:
        seconds = max(0.0, ((run.finished_at or timezone.now()) - run.started_at).total_seconds())
        per_minute = run.progress_done / (seconds / 60) if seconds >= 1 and run.progress_done else None
        rows.append({"run": run, "seconds": seconds, "records": run.progress_done, "per_minute": per_minute})
    medians: dict[int, float] = {}
    for site_id in {row["run"].site_id for row in rows}:
        rates = sorted(r["per_minute"] for r in rows if r["run"].site_id == site_id and r["per_minute"])
        if rates:
            medians[site_id] = rates[len(rates) // 2]
    for row in rows:
        usual = medians.get(row["run"].site_id)
        row["usual"] = usual
        row["slow"] = bool(usual and row["per_minute"] and row["per_minute"] < usual / 2)
    return rows


def breaker_value(site: MoodleSite) -> int | None:
    """The breaker gauge, or no sample when Redis cannot be read (the other series still matter then)."""
    try:
        return BREAKER_VALUES.get(breaker_state(site).state, 2)
    except redis.RedisError:
        return None


def breaker_state(site: MoodleSite) -> BreakerState:
    """The site's breaker as every process sees it (Redis, no SQL)."""
    return Breaker(shared_redis(), site.slug, BreakerConfig(**settings.MOODLE_BREAKER)).state()


# -- /metrics ---------------------------------------------------------------------------------------------


def allowed_network(address: str | None, networks: Iterable[str]) -> bool:
    """Whether `address` lies in one of the CIDRs; a malformed entry matches nothing."""
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return False
    for network in networks:
        try:
            if ip in ipaddress.ip_network(network.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


def _floor(value: datetime, width: int) -> datetime:
    epoch = int(value.timestamp())
    return datetime.fromtimestamp(epoch - epoch % width, tz=UTC)


def category_label(category: str) -> str:
    return CATEGORY_LABELS.get(category, category)
