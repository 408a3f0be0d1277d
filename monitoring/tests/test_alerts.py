"""The outbox: de-duplication, notices claimed once, re-notification, acknowledgement, mutes, recovery."""

from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from monitoring import alerts
from monitoring.models import Alert, AlertChannel, AlertMute, AuditEntry, Delivery

pytestmark = pytest.mark.django_db


@pytest.fixture
def email_channel(db):
    return AlertChannel.objects.create(name="ops", kind="email", target="ops@example.edu, oncall@example.edu")


def raise_auth(site, severity=Alert.Severity.CRITICAL):
    return alerts.raise_alert(
        "auth:north", kind="auth_failure", site=site, title="North: token refused", detail="Check it.",
        severity=severity,
    )  # fmt: skip


def test_repeats_count_on_one_row_and_notify_once(site, email_channel):
    for _ in range(3):
        raise_auth(site)
    assert alerts.notify_pending() is True
    assert alerts.notify_pending() is False, "nothing left: a second step finds no work"
    alert = Alert.objects.get()
    assert alert.count == 3 and alert.notifications == 1
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["ops@example.edu", "oncall@example.edu"]
    assert "Check it." in mail.outbox[0].body


def test_a_notice_is_claimed_by_one_worker_only(site, email_channel):
    raise_auth(site)
    seen_by_both = Alert.objects.get()  # both workers read the row before either claimed it
    assert alerts._claim(seen_by_both, Delivery.Event.FIRING, timezone.now()) is True
    stale = Alert.objects.get()
    stale.last_notified_at = None
    assert alerts._claim(stale, Delivery.Event.FIRING, timezone.now()) is False


def test_still_open_alert_is_renotified_after_the_cool_down_unless_acknowledged(
    site, email_channel, operator, settings
):
    settings.ALERT_REPEAT_AFTER_S = 3600
    raise_auth(site)
    alerts.notify_pending()
    alerts.notify_pending(now=timezone.now() + timedelta(minutes=30))
    assert len(mail.outbox) == 1, "within the cool-down: quiet"
    assert alerts.notify_pending(now=timezone.now() + timedelta(minutes=61)) is True
    assert len(mail.outbox) == 2 and "STILL FIRING" in mail.outbox[1].subject
    assert Alert.objects.get().notifications == 2

    assert alerts.acknowledge(Alert.objects.get(), operator) is True
    assert alerts.notify_pending(now=timezone.now() + timedelta(hours=5)) is False
    assert len(mail.outbox) == 2
    entry = AuditEntry.objects.get(action="alert_acknowledged")
    assert entry.actor == operator and entry.target == "auth:north"
    assert alerts.acknowledge(Alert.objects.get(), operator) is False, "acknowledging twice changes nothing"


def test_recovery_notice_only_after_a_firing_notice(site, email_channel):
    raise_auth(site)
    alerts.resolve_alert("auth:north")
    assert alerts.notify_pending() is False and not mail.outbox  # never announced: nothing to take back

    raise_auth(site)
    alerts.notify_pending()
    alerts.resolve_alert("auth:north")
    alerts.notify_pending()
    alerts.notify_pending()
    assert [m.subject.split("]")[0] for m in mail.outbox] == ["[ALERT", "[RECOVERED"]
    assert "cleared" in mail.outbox[1].body


def test_mutes_suppress_notices_until_they_expire(site, email_channel, operator):
    until = timezone.now() + timedelta(hours=1)
    alerts.mute("auth:", "Token rotation in progress", until, operator)
    raise_auth(site)
    assert alerts.notify_pending() is False and not mail.outbox
    alert = Alert.objects.get()
    assert alert.status == Alert.Status.OPEN and alert.notifications == 0, "recorded, not announced"
    assert alerts.notify_pending(now=until + timedelta(seconds=1)) is True
    assert len(mail.outbox) == 1
    entry = AuditEntry.objects.get(action="alert_muted")
    assert entry.target == "auth:" and "Token rotation" in entry.detail


def test_a_mute_needs_a_reason_and_a_future_end(operator):
    with pytest.raises(ValueError):
        alerts.mute("auth:", "  ", timezone.now() + timedelta(hours=1), operator)
    with pytest.raises(ValueError):
        alerts.mute("auth:", "why", timezone.now() - timedelta(hours=1), operator)
    assert not AlertMute.objects.exists()


def test_channels_get_the_severities_they_asked_for(site):
    AlertChannel.objects.create(
        name="pager", kind="email", target="pager@example.edu", min_severity="critical"
    )
    AlertChannel.objects.create(name="team", kind="email", target="team@example.edu", min_severity="warning")
    alerts.raise_alert(
        "token_expiry:1:30", kind="token_expiry", site=site, title="expires", severity="warning"
    )
    alerts.notify_pending()
    assert [m.to for m in mail.outbox] == [["team@example.edu"]]


def test_disabled_channels_and_no_channels_send_nothing(site, email_channel):
    AlertChannel.objects.update(enabled=False)
    raise_auth(site)
    assert alerts.notify_pending() is False
    assert not mail.outbox and Alert.objects.get().notifications == 0
    AlertChannel.objects.update(enabled=True)
    assert alerts.notify_pending() is True, "announced once a channel can take it"
    assert len(mail.outbox) == 1


def test_acknowledging_and_muting_check_the_permission_again(site, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="x")
    alert = raise_auth(site)
    with pytest.raises(PermissionDenied):
        alerts.acknowledge(alert, viewer)
    with pytest.raises(PermissionDenied):
        alerts.mute("auth:", "why", timezone.now() + timedelta(hours=1), viewer)
    assert Alert.objects.get().status == Alert.Status.OPEN and not AuditEntry.objects.exists()
