"""Template helpers of the sync pages."""

import json

from django import template

from sync.choices import ConflictStatus, DiscrepancyKind, DiscrepancyStatus
from sync.models import Conflict, Discrepancy

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
