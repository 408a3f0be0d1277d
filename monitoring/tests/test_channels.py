"""Transports: a signed webhook checked by a receiver, retries, a permanent failure disabling the channel,
email, and schedule pings. No secret may appear in a Delivery row."""

import hashlib
import hmac
import json
import threading

import httpx
import pytest
from django.core import mail
from django.utils import timezone

from monitoring import alerts, channels, pings
from monitoring.models import Alert, AlertChannel, Delivery, SchedulePing
from simulator.server import serve
from sync.choices import RunKind, RunStatus, RunTrigger
from sync.models import SyncRun

pytestmark = pytest.mark.django_db

SECRET = "whsec-0123456789-topsecret"


class Receiver:
    """A webhook receiver that verifies the signature as a real one would, and answers with the
    statuses it is told to (then 200)."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.received: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        signature = environ.get("HTTP_X_HUB_SIGNATURE_256", "")
        with self.lock:
            self.received.append(
                {"valid": hmac.compare_digest(expected, signature),
                 "timestamp": environ.get("HTTP_X_HUB_TIMESTAMP"),
                 "body": json.loads(body)}
            )  # fmt: skip
            status = self.statuses.pop(0) if self.statuses else 200
        start_response(f"{status} X", [("Content-Type", "text/plain")])
        return [b"ok"]


def webhook(url, **extra) -> AlertChannel:
    channel = AlertChannel(name="hook", kind="webhook", target=url, **extra)
    channels.set_secret(channel, SECRET)
    channel.save()
    return channel


def raise_auth(site):
    return alerts.raise_alert(
        "auth:north", kind="auth_failure", site=site, title="North: token refused", detail="Do X."
    )


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(channels, "BACKOFF_S", (0.05, 0.1))


def test_webhook_notice_is_signed_and_the_receiver_verifies_it(site):
    receiver = Receiver()
    with serve(receiver) as server:
        channel = webhook(server.url + "/hooks/ops")
        raise_auth(site)
        alerts.notify_pending()
    [notice] = receiver.received
    assert notice["valid"] and notice["timestamp"]
    assert notice["body"]["event"] == "firing"
    sent = notice["body"]["alert"]
    assert sent["key"] == "auth:north" and sent["site"] == "north" and sent["severity"] == "critical"
    assert sent["detail"] == "Do X." and sent["url"].startswith("/alerts/")
    assert set(sent) == {"key", "kind", "severity", "status", "title", "detail", "site", "count",
                         "first_seen_at",
                         "last_seen_at", "url"}  # fmt: skip
    delivery = Delivery.objects.get()
    assert delivery.ok and delivery.channel == channel and delivery.duration_ms >= 0
    assert SECRET not in channel.secret_encrypted and channels.channel_secret(channel) == SECRET


def test_a_receiver_with_the_wrong_key_sees_a_bad_signature(site):
    receiver = Receiver()
    with serve(receiver) as server:
        channel = AlertChannel(name="hook", kind="webhook", target=server.url)
        channels.set_secret(channel, "another-key")
        channel.save()
        raise_auth(site)
        alerts.notify_pending()
    assert receiver.received[0]["valid"] is False


def test_503_then_200_is_retried_and_delivered(site):
    receiver = Receiver(statuses=[503])
    with serve(receiver) as server:
        webhook(server.url)
        raise_auth(site)
        alerts.notify_pending()
    assert len(receiver.received) == 2
    rows = list(Delivery.objects.order_by("attempt").values_list("attempt", "ok", "permanent", "error"))
    assert rows == [(1, False, False, "HTTP 503 from the receiver"), (2, True, False, "")]
    assert AlertChannel.objects.get().enabled


def test_410_disables_the_channel_with_the_reason(site):
    receiver = Receiver(statuses=[410])
    with serve(receiver) as server:
        webhook(server.url)
        raise_auth(site)
        alerts.notify_pending()
    assert len(receiver.received) == 1, "a permanent failure is not retried"
    channel = AlertChannel.objects.get()
    assert not channel.enabled and "410" in channel.disabled_reason and channel.disabled_at
    assert Delivery.objects.get().permanent


def test_connection_errors_and_timeouts_are_retried_then_given_up():
    def refuse(request):
        raise httpx.ConnectError("connection refused to http://hooks.example/secret-path")

    channel = webhook("https://hooks.example/secret-path")
    alert = Alert.objects.create(key="x", kind="x", title="t")
    transport = channels.WebhookTransport(channel, http=httpx.MockTransport(refuse))
    assert channels.deliver(channel, alert, "firing", transport=transport, backoff_s=(0,)) is False
    errors = list(Delivery.objects.values_list("error", flat=True))
    assert len(errors) == channels.ATTEMPTS
    assert all("connection refused, reset or no route" in e and "secret-path" not in e for e in errors)
    assert not any("Error" in e for e in errors)  # no class names on the channel page
    assert AlertChannel.objects.get().enabled, "transient: the channel stays on"

    def slow(request):
        raise httpx.ReadTimeout("timed out")

    transport = channels.WebhookTransport(channel, http=httpx.MockTransport(slow))
    channels.deliver(channel, alert, "firing", transport=transport, backoff_s=(0,))
    assert Delivery.objects.filter(error="the receiver did not answer in time").count() == channels.ATTEMPTS


def test_429_is_transient():
    answers = iter([429, 200])
    channel = webhook("https://hooks.example/x")
    alert = Alert.objects.create(key="x", kind="x", title="t")
    transport = channels.WebhookTransport(
        channel, http=httpx.MockTransport(lambda r: httpx.Response(next(answers)))
    )
    assert channels.deliver(channel, alert, "firing", transport=transport, backoff_s=(0,)) is True
    assert Delivery.objects.count() == 2


def test_email_goes_through_the_django_backend(site):
    AlertChannel.objects.create(name="ops", kind="email", target="ops@example.edu")
    raise_auth(site)
    alerts.notify_pending()
    [message] = mail.outbox
    assert message.to == ["ops@example.edu"] and "North: token refused" in message.subject
    assert "Alerts page: /alerts/" in message.body
    assert Delivery.objects.get().ok


def test_no_secret_in_any_delivery_row_or_alert(site):
    receiver = Receiver(statuses=[500, 500, 500, 401])
    with serve(receiver) as server:
        webhook(server.url + "/" + SECRET)  # even a secret in the URL path must stay out of the rows
        raise_auth(site)
        alerts.notify_pending()
        alerts.resolve_alert("auth:north")
        alerts.notify_pending()
    text = json.dumps(list(Delivery.objects.values()), default=str) + json.dumps(
        list(Alert.objects.values()), default=str
    )
    assert SECRET not in text and "topsecret" not in text


def test_send_test_notice(site, hub_admin):
    receiver = Receiver()
    with serve(receiver) as server:
        channel = webhook(server.url)
        assert channels.send_test(channel, hub_admin) == ""
    assert receiver.received[0]["valid"] and receiver.received[0]["body"]["alert"]["key"] == "test"
    # Saved only to carry the delivery row: resolved from the start, so nothing is open or re-notified.
    assert not Alert.objects.exclude(status=Alert.Status.RESOLVED).exists()
    assert list(Delivery.objects.values_list("channel", "ok")) == [(channel.pk, True)]


def test_a_failed_test_notice_is_recorded_as_a_delivery_of_the_channel(site, hub_admin):
    channel = webhook("http://127.0.0.1:9/hook")  # nothing listens on the discard port
    error = channels.send_test(channel, hub_admin)
    assert error
    delivery = Delivery.objects.get(channel=channel)
    assert not delivery.ok and delivery.error == error and delivery.alert.kind == "test"
    channel.refresh_from_db()
    assert channel.enabled  # a test never disables the channel


# -- schedule pings ---------------------------------------------------------------------------------------


class PingReceiver:
    def __init__(self):
        self.paths = []

    def __call__(self, environ, start_response):
        self.paths.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"OK"]


def test_scheduled_runs_ping_success_or_failure_when_they_finish(site, django_capture_on_commit_callbacks):
    receiver = PingReceiver()
    with serve(receiver) as server, django_capture_on_commit_callbacks(execute=True):
        SchedulePing.objects.create(
            task_name="Incremental sync: north",
            success_url=server.url + "/ok",
            failure_url=server.url + "/fail",
        )
        good = SyncRun.objects.create(site=site, kind=RunKind.INCREMENTAL, trigger=RunTrigger.SCHEDULE)
        good.start()
        assert receiver.paths == [], "no ping when work starts"
        good.finish(RunStatus.SUCCEEDED)
        bad = SyncRun.objects.create(site=site, kind=RunKind.INCREMENTAL, trigger=RunTrigger.SCHEDULE)
        bad.finish(RunStatus.ABORTED, "token refused")
        manual = SyncRun.objects.create(site=site, kind=RunKind.INCREMENTAL, trigger=RunTrigger.MANUAL)
        manual.finish(RunStatus.SUCCEEDED)
    assert receiver.paths == ["/ok", "/fail"]


def test_a_failing_ping_never_breaks_the_run(site):
    SchedulePing.objects.create(task_name="Incremental sync: north", success_url="http://127.0.0.1:9/nothing")
    run = SyncRun.objects.create(
        site=site, kind=RunKind.INCREMENTAL, trigger=RunTrigger.SCHEDULE, status=RunStatus.SUCCEEDED,
        finished_at=timezone.now(),
    )  # fmt: skip
    assert pings.send_ping(run) is False
    refused = httpx.MockTransport(lambda r: httpx.Response(500))
    assert pings.send_ping(run, transport=refused) is False
