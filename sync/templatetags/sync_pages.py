"""Template helpers of the sync pages."""

import json
from datetime import UTC, datetime

from django import template

from sync import words
from sync.choices import ConflictStatus, DiscrepancyKind, DiscrepancyStatus
from sync.models import Conflict, Discrepancy
from web.templatetags.hub import format_when

register = template.Library()


@register.filter
def kind_labels(kinds) -> str:
    """A site's auto_apply_kinds in words."""
    labels = [DiscrepancyKind(kind).label for kind in kinds or [] if kind in DiscrepancyKind.values]
    labels = [label[:1].lower() + label[1:] for label in labels]
    return ", ".join(labels) or "nothing: every discrepancy waits for an Admin"


@register.simple_tag
def decisions_waiting(site) -> dict[str, int]:
    """What waits for a decision on one site (its page): discrepancies and open conflicts."""
    return {
        "discrepancies": Discrepancy.objects.filter(
            site=site, status__in=DiscrepancyStatus.waiting()
        ).count(),
        "conflicts": Conflict.objects.filter(site=site, status=ConflictStatus.OPEN).count(),
    }


@register.filter
def as_json(value) -> str:
    """A planned call's parameters as they are recorded, for the preview and the trail."""
    return json.dumps(value, ensure_ascii=False, sort_keys=False)


@register.filter
def counted(n, nouns: str) -> str:
    """`{{ n|counted:"person,people" }}`: "1 person", "3 people" (sync.words.counted)."""
    singular, _, plural = nouns.partition(",")
    return words.counted(n or 0, singular, plural or None)


@register.filter
def source_day(seconds) -> str:
    """A membership's start or end (Unix seconds) as the source gave it: a date (YYYY-MM-DD means midnight
    UTC, so it is shown as that day, not shifted to the viewer's zone), or an exact time in the viewer's
    zone when it is not a whole day; "" for 0 (none)."""
    if not seconds:
        return ""
    at = datetime.fromtimestamp(seconds, tz=UTC)
    return at.date().isoformat() if seconds % 86400 == 0 else format_when(at)


@register.filter
def membership_moves(run) -> list[tuple[str, str]]:
    """A run's non-zero membership counters as (counter, "3 enrolments suspended"), for the runs list."""
    return [(name, text) for name, value, text in words.membership_counts(run) if value]
