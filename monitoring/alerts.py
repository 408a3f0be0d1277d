"""Raising and clearing alerts: one row per problem, de-duplicated across workers."""

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from .models import Alert


def raise_alert(
    key: str,
    *,
    kind: str,
    title: str,
    detail: str = "",
    site=None,
    run=None,
    severity: str = Alert.Severity.CRITICAL,
) -> Alert:
    """Open the alert for `key`, or count a repeat of the one already open."""
    now = timezone.now()
    for _ in range(2):  # a concurrent insert of the same key loses the race once, then counts a repeat
        updated = (
            Alert.objects.filter(key=key)
            .exclude(status=Alert.Status.RESOLVED)
            .update(count=F("count") + 1, last_seen_at=now, title=title, detail=detail, run=run)
        )
        if updated:
            return Alert.objects.exclude(status=Alert.Status.RESOLVED).get(key=key)
        try:
            with transaction.atomic():
                return Alert.objects.create(
                    key=key, kind=kind, title=title, detail=detail, site=site, run=run, severity=severity
                )
        except IntegrityError:
            continue
    raise RuntimeError(f"could not raise alert {key}")


def resolve_alert(key: str) -> int:
    """Close the open alert for `key`, if any (the problem cleared)."""
    return (
        Alert.objects.filter(key=key)
        .exclude(status=Alert.Status.RESOLVED)
        .update(status=Alert.Status.RESOLVED, resolved_at=timezone.now())
    )
