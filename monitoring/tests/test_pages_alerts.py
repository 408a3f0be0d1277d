"""The alerts and channels pages: what each role sees and may do, and that no secret is ever rendered."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from monitoring import alerts, channels
from monitoring.models import Alert, AlertChannel, AlertMute, AuditEntry, Delivery
from sync.choices import TokenStatus
from sync.models import ServiceToken

pytestmark = pytest.mark.django_db

SECRET = "whsec-page-secret-9876"
TOKEN = "moodle-token-page-abcdef1234"


@pytest.fixture
def open_alert(site):
    return alerts.raise_alert(
        "auth:north", kind="auth_failure", site=site, title="North Campus: Moodle refused the token",
        detail="Check the token in Moodle, then resume.",
    )  # fmt: skip


def test_alerts_page_lists_open_then_resolved_with_what_to_do(client, operator, site, open_alert):
    alerts.raise_alert(
        "auth:north", kind="auth_failure", site=site, title=open_alert.title, detail=open_alert.detail
    )
    old = alerts.raise_alert("stale_lock:north", kind="stale_lock", site=site, title="Stale lock on North")
    alerts.resolve_alert(old.key)
    client.force_login(operator)
    body = client.get(reverse("monitoring:alert_list")).content.decode()
    assert body.index("Moodle refused the token") < body.index("Stale lock on North")
    assert "Check the token in Moodle, then resume." in body
    assert 'class="num">2<' in body, "the repeat count"
    assert "Acknowledge" in body and "Mute…" in body


def test_filters_live_in_the_url(client, operator, site, open_alert):
    alerts.raise_alert("worker_silent", kind="worker_silent", title="No hub worker is alive")
    client.force_login(operator)
    body = client.get(reverse("monitoring:alert_list"), {"kind": "worker_silent"}).content.decode()
    assert "No hub worker is alive" in body and "Moodle refused the token" not in body
    body = client.get(reverse("monitoring:alert_list"), {"site": "north", "status": "open"}).content.decode()
    assert "Moodle refused the token" in body and "No hub worker is alive" not in body


def test_operator_acknowledges_an_alert(client, operator, open_alert):
    client.force_login(operator)
    response = client.post(
        reverse("monitoring:alert_acknowledge", args=[open_alert.pk]), {"next": "/alerts/"}, follow=True
    )
    open_alert.refresh_from_db()
    assert open_alert.status == Alert.Status.ACKNOWLEDGED and open_alert.acknowledged_by == operator
    assert "Acknowledged:" in response.content.decode()
    assert AuditEntry.objects.filter(action="alert_acknowledged", actor=operator).exists()


def test_acknowledging_needs_the_permission(client, open_alert):
    client.force_login(User.objects.create_user("viewer", password="x"))
    assert client.get(reverse("monitoring:alert_list")).status_code == 403
    assert client.post(reverse("monitoring:alert_acknowledge", args=[open_alert.pk])).status_code == 403
    assert client.get(reverse("monitoring:alert_acknowledge", args=[open_alert.pk])).status_code in (403, 405)
    open_alert.refresh_from_db()
    assert open_alert.status == Alert.Status.OPEN


def test_mute_form_prefills_the_key_and_needs_a_reason(client, operator, open_alert):
    client.force_login(operator)
    body = client.get(reverse("monitoring:alert_mute"), {"prefix": "auth:north"}).content.decode()
    assert 'value="auth:north"' in body
    response = client.post(
        reverse("monitoring:alert_mute"), {"key_prefix": "auth:north", "reason": "", "duration": "1h"}
    )
    assert response.status_code == 200 and not AlertMute.objects.exists()
    client.post(
        reverse("monitoring:alert_mute"),
        {"key_prefix": "auth:north", "reason": "Rotating the token", "duration": "1h"},
    )
    mute = AlertMute.objects.get()
    assert mute.created_by == operator and mute.expires_at > timezone.now() + timedelta(minutes=59)
    body = client.get(reverse("monitoring:alert_list")).content.decode()
    assert "Active mutes" in body and "Rotating the token" in body and "operator" in body


def test_critical_banner_on_every_page_until_acknowledged(client, operator, open_alert):
    client.force_login(operator)
    for name in ("monitoring:overview", "sync:run_list", "monitoring:alert_list"):
        body = client.get(reverse(name)).content.decode()
        assert "1 critical alert open" in body, name
    alerts.acknowledge(open_alert, operator)
    assert "critical alert" not in client.get(reverse("sync:run_list")).content.decode()


def test_channels_page_is_for_admins(client, operator, hub_admin):
    client.force_login(operator)
    assert client.get(reverse("monitoring:channel_list")).status_code == 403
    assert (
        "Channels"
        not in client.get(reverse("monitoring:alert_list"))
        .content.decode()
        .split("<main")[1]
        .split("</h1>")[1][:300]
    )


def test_admin_adds_a_webhook_whose_secret_is_never_shown(client, hub_admin):
    client.force_login(hub_admin)
    data = {
        "name": "chat",
        "kind": "webhook",
        "target": f"https://hooks.example/{SECRET}",
        "min_severity": "warning",
    }
    response = client.post(reverse("monitoring:channel_list"), data)
    assert response.status_code == 200 and "needs a secret" in response.content.decode()
    response = client.post(reverse("monitoring:channel_list"), {**data, "secret": SECRET}, follow=True)
    channel = AlertChannel.objects.get()
    assert channels.channel_secret(channel) == SECRET and SECRET not in channel.secret_encrypted
    body = response.content.decode()
    assert "chat" in body and "https://hooks.example/…" in body and "signed (secret set)" in body
    assert SECRET not in body
    assert AuditEntry.objects.filter(action="channel_added", target="chat").exists()


def test_disabled_channel_shows_why_and_can_be_enabled_again(client, hub_admin, open_alert):
    channel = AlertChannel.objects.create(name="hook", kind="webhook", target="https://hooks.example/x")
    Delivery.objects.create(alert=open_alert, channel=channel, event="firing", ok=False, permanent=True,
                            error="HTTP 410 from the receiver", duration_ms=12)  # fmt: skip
    channels.disable(channel, "HTTP 410 from the receiver")
    client.force_login(hub_admin)
    body = client.get(reverse("monitoring:channel_list")).content.decode()
    assert "Disabled" in body and "HTTP 410 from the receiver" in body and "refused" in body
    client.post(reverse("monitoring:channel_enable", args=[channel.pk]))
    channel.refresh_from_db()
    assert channel.enabled and not channel.disabled_reason
    alerts_body = client.get(reverse("monitoring:alert_list")).content.decode()
    assert "failed via hook" in alerts_body and "No alert channel is enabled" not in alerts_body


def test_alerts_page_says_when_nobody_is_notified(client, operator, open_alert):
    client.force_login(operator)
    assert "nobody is notified" in client.get(reverse("monitoring:alert_list")).content.decode()
    AlertChannel.objects.create(name="hook", kind="webhook", target="https://h.example/x", enabled=False)
    AlertChannel.objects.create(name="ops", kind="email", target="ops@example.edu")
    body = client.get(reverse("monitoring:alert_list")).content.decode()
    assert "1 alert channel disabled" in body and "nobody is notified" not in body


def test_admin_sends_a_test_notice_by_email(client, hub_admin, mailoutbox):
    channel = AlertChannel.objects.create(name="ops", kind="email", target="ops@example.edu")
    client.force_login(hub_admin)
    response = client.post(reverse("monitoring:channel_test", args=[channel.pk]), follow=True)
    assert "A test notice was delivered" in response.content.decode()
    assert len(mailoutbox) == 1 and "Test notice" in mailoutbox[0].subject


def test_no_token_or_secret_on_the_pages(client, hub_admin, site, open_alert):
    token = ServiceToken(site=site, label="main", status=TokenStatus.ACTIVE)
    token.set_token(TOKEN)
    token.save()
    channel = AlertChannel(name="hook", kind="webhook", target="https://hooks.example/x")
    channels.set_secret(channel, SECRET)
    channel.save()
    client.force_login(hub_admin)
    for url in (
        reverse("monitoring:alert_list"),
        reverse("monitoring:channel_list"),
        reverse("monitoring:alert_mute"),
    ):
        body = client.get(url).content.decode()
        assert TOKEN not in body and SECRET not in body and channel.secret_encrypted not in body
