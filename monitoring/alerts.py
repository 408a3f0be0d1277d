"""Raising, clearing and announcing alerts: one row per problem, de-duplicated across workers.

The Alert rows are the outbox. `raise_alert` and `resolve_alert` only change rows; `notify_pending` is the
step that finds what still has to be announced (a new alert, one still open after the cool-down, one that
cleared after its firing notice went out) and sends it through every channel that wants it. Each notice
is claimed with a conditional update first, so two workers running the step at once never send the same
notice twice.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from .channels import deliver
from .models import Alert, AlertChannel, AlertMute, AuditEntry, Delivery

logger = logging.getLogger(__name__)

# A warning goes to channels that want warnings; a critical alert to every channel.
SEVERITY_RANK = {Alert.Severity.WARNING: 1, Alert.Severity.CRITICAL: 2}
NOTIFY_BATCH = 50  # alerts per kind of notice per step: a storm is worked off over a few steps


def raise_alert(
    key: str,
    *,
    kind: str,
    title: str,
    detail: str = "",
    site=None,
    run=None,
    severity: str = Alert.Severity.CRITICAL,
    times: dict[str, datetime] | None = None,
) -> Alert:
    """Open the alert for `key`, or count a repeat of the one already open.

    A title or detail that mentions an instant says "{name}" and passes the instant in `times`: the text
    is written out in each reader's zone when shown or sent, never stored as "04:06 UTC"."""
    now = timezone.now()
    stamps = stored_times(times)
    for _ in range(2):  # a concurrent insert of the same key loses the race once, then counts a repeat
        updated = (
            Alert.objects.filter(key=key)
            .exclude(status=Alert.Status.RESOLVED)
            .update(
                count=F("count") + 1,
                last_seen_at=now,
                title=title,
                detail=detail,
                times=stamps,
                run=run,
                severity=severity,
            )
        )
        if updated:
            return Alert.objects.exclude(status=Alert.Status.RESOLVED).get(key=key)
        try:
            with transaction.atomic():
                return Alert.objects.create(
                    key=key,
                    kind=kind,
                    title=title,
                    detail=detail,
                    times=stamps,
                    site=site,
                    run=run,
                    severity=severity,
                )
        except IntegrityError:
            continue
    raise RuntimeError(f"could not raise alert {key}")


def stored_times(times: dict[str, datetime] | None) -> dict[str, str]:
    """The instants an alert's text names, as JSON: ISO 8601 in UTC."""
    return {name: at.astimezone(UTC).isoformat() for name, at in (times or {}).items() if at is not None}


def resolve_alert(key: str) -> int:
    """Close the open alert for `key`, if any (the problem cleared). The recovery notice follows from
    `notify_pending`, and only when a firing notice went out."""
    return (
        Alert.objects.filter(key=key)
        .exclude(status=Alert.Status.RESOLVED)
        .update(status=Alert.Status.RESOLVED, resolved_at=timezone.now())
    )


def supersede_alert(key: str) -> int:
    """Close the alert for `key` without a recovery notice: a newer alert about the same thing replaces
    it (a token's 14-day warning replaces its 30-day one; the token did not get better)."""
    now = timezone.now()
    return (
        Alert.objects.filter(key=key)
        .exclude(status=Alert.Status.RESOLVED)
        .update(status=Alert.Status.RESOLVED, resolved_at=now, recovery_notified_at=now)
    )


# -- operator actions ---------------------------------------------------------------------------------------


def acknowledge(alert: Alert, user) -> bool:
    """Someone is on it: stop re-notifying. False when it was already acknowledged or resolved."""
    if not user.has_perm("monitoring.change_alert"):
        raise PermissionDenied("acknowledging alerts needs the monitoring.change_alert permission")
    done = Alert.objects.filter(pk=alert.pk, status=Alert.Status.OPEN).update(
        status=Alert.Status.ACKNOWLEDGED, acknowledged_at=timezone.now(), acknowledged_by=user
    )
    if done:
        AuditEntry.objects.create(
            actor=user, action="alert_acknowledged", target=alert.key[:200], detail=alert.title
        )
        alert.refresh_from_db()
    return bool(done)


def mute(prefix: str, reason: str, until: datetime, user) -> AlertMute:
    """Silence notices for alerts whose key starts with `prefix` until `until` (alerts are still recorded)."""
    if not user.has_perm("monitoring.add_alertmute"):
        raise PermissionDenied("muting alerts needs the monitoring.add_alertmute permission")
    if not reason.strip():
        raise ValueError("a mute needs a reason")
    if until <= timezone.now():
        raise ValueError("a mute must end in the future")
    muted = AlertMute.objects.create(
        key_prefix=prefix, reason=reason.strip(), created_by=user, expires_at=until
    )
    AuditEntry.objects.create(
        actor=user,
        action="alert_muted",
        target=prefix[:200],
        detail=f"until {until.astimezone(UTC).isoformat(timespec='minutes')}: {reason}",
    )
    return muted


def active_mutes(now: datetime | None = None) -> list[AlertMute]:
    return list(AlertMute.objects.filter(expires_at__gt=now or timezone.now()).select_related("created_by"))


def muted_by(key: str, mutes: list[AlertMute]) -> AlertMute | None:
    return next((m for m in mutes if key.startswith(m.key_prefix)), None)


# -- notification -------------------------------------------------------------------------------------------


def channels_for(alert: Alert, channels: list[AlertChannel]) -> list[AlertChannel]:
    rank = SEVERITY_RANK.get(alert.severity, 2)
    return [c for c in channels if c.enabled and rank >= SEVERITY_RANK.get(c.min_severity, 1)]


def notify_pending(now: datetime | None = None) -> bool:
    """Send every notice that is due; True when at least one was claimed (so a loop can run again)."""
    now = now or timezone.now()
    channels = list(AlertChannel.objects.filter(enabled=True))
    mutes = active_mutes(now)
    found = False
    for alert, event in _due(now):
        targets = channels_for(alert, channels)
        if event != Delivery.Event.RECOVERY and (not targets or muted_by(alert.key, mutes)):
            continue  # recorded, not announced; announced once a channel exists or the mute ends
        if not _claim(alert, event, now):
            continue  # another worker has it
        found = True
        for channel in targets:
            deliver(channel, alert, event)
    return found


def _due(now: datetime):
    open_ = Alert.Status.OPEN
    repeat_before = now - timedelta(seconds=settings.ALERT_REPEAT_AFTER_S)
    for alert in Alert.objects.filter(status=open_, last_notified_at=None).select_related("site")[
        :NOTIFY_BATCH
    ]:
        yield alert, Delivery.Event.FIRING
    for alert in Alert.objects.filter(status=open_, last_notified_at__lt=repeat_before).select_related(
        "site"
    )[:NOTIFY_BATCH]:
        yield alert, Delivery.Event.REPEAT
    for alert in Alert.objects.filter(
        status=Alert.Status.RESOLVED, notifications__gt=0, recovery_notified_at=None
    ).select_related("site")[:NOTIFY_BATCH]:
        yield alert, Delivery.Event.RECOVERY


def _claim(alert: Alert, event: str, now: datetime) -> bool:
    """The conditional update that makes this worker the only sender of this notice."""
    rows = Alert.objects.filter(pk=alert.pk)
    if event == Delivery.Event.RECOVERY:
        claimed = rows.filter(recovery_notified_at=None).update(recovery_notified_at=now)
    else:
        same = (
            Q(last_notified_at=None)
            if alert.last_notified_at is None
            else Q(last_notified_at=alert.last_notified_at)
        )
        claimed = rows.filter(same, status=Alert.Status.OPEN).update(
            last_notified_at=now, notifications=F("notifications") + 1
        )
    if claimed:
        alert.refresh_from_db()
    return bool(claimed)


def open_critical_count() -> int:
    return Alert.objects.filter(status=Alert.Status.OPEN, severity=Alert.Severity.CRITICAL).count()
