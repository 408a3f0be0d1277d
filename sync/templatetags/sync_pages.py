"""Template helpers of the sync pages."""

from datetime import timedelta

from django import template
from django.db.models import Count

from sync.choices import ConflictStatus, DeadLetterStatus, SyncStatus
from sync.models import Conflict, DeadLetter, SyncRecord

register = template.Library()


@register.filter
def duration(value: timedelta | None) -> str:
    """'45 s', '12 min 5 s', '3 h 20 min': a run's length at a glance."""
    if value is None:
        return "—"
    seconds = max(0, int(value.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


@register.filter
def item(mapping: dict, key):
    return mapping.get(key) if mapping else None


@register.simple_tag
def problem_counts(rows) -> dict[int, dict[str, int]]:
    """Open conflicts, open dead letters and records in error per site, for the overview: three grouped
    queries for all sites, not three per site."""
    site_ids = [row["site"].pk for row in rows]
    counts: dict[int, dict[str, int]] = {
        site_id: {"conflicts": 0, "dead_letters": 0, "errors": 0} for site_id in site_ids
    }
    sources = (
        ("conflicts", Conflict.objects.filter(status=ConflictStatus.OPEN)),
        ("dead_letters", DeadLetter.objects.filter(status=DeadLetterStatus.OPEN)),
        ("errors", SyncRecord.objects.filter(sync_status=SyncStatus.ERROR)),
    )
    for name, queryset in sources:
        grouped = (
            queryset.filter(site_id__in=site_ids).values_list("site_id").annotate(n=Count("pk")).order_by()
        )
        for site_id, n in grouped:
            counts[site_id][name] = n
    return counts
