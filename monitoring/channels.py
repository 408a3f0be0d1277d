"""Where alert notices leave the hub: one Transport class per channel kind.

A transport sends one notice once and raises TransportError on failure; `permanent=True` means retrying
cannot help (a 4xx from the webhook, an address the mail server refuses), so the channel is disabled with
the reason and the alerts page shows it. `deliver` retries the rest with backoff and records every attempt
as a Delivery row. Nothing here may put the channel's secret, or a token, into a row, a log line or an
exception message: errors carry the status or the exception's class, never the request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import time
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse
from django.utils import timezone

from sync.crypto import decrypt, encrypt
from sync.words import counted
from web.models import zone_or_default
from web.templatetags.hub import fill_times, format_when

from .kinds import AlertKind
from .models import Alert, AlertChannel, AuditEntry, Delivery

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
TIMESTAMP_HEADER = "X-Hub-Timestamp"
EVENT_WORDS = {
    Delivery.Event.FIRING: "ALERT",
    Delivery.Event.REPEAT: "STILL FIRING",
    Delivery.Event.RECOVERY: "RECOVERED",
}


class TransportError(Exception):
    """A notice was not delivered. `permanent` failures disable the channel instead of being retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


# -- secrets ------------------------------------------------------------------------------------------------


def set_secret(channel: AlertChannel, plaintext: str) -> None:
    """Store the webhook's HMAC key encrypted (saved by the caller); it is never shown again."""
    channel.secret_encrypted = encrypt(plaintext) if plaintext else ""


def channel_secret(channel: AlertChannel) -> str:
    return decrypt(channel.secret_encrypted) if channel.secret_encrypted else ""


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# -- the notice ---------------------------------------------------------------------------------------------


def alert_url(alert: Alert) -> str:
    """Where the notice points: the alerts page filtered to this kind of alert. Absolute when
    HUB_BASE_URL is configured (workers have no request to build it from)."""
    path = reverse("monitoring:alert_list") + f"?kind={alert.kind}"
    return getattr(settings, "HUB_BASE_URL", "").rstrip("/") + path


def notice_zone():
    """The zone notices write times in: a channel reaches many people, so the hub's TIME_ZONE, and every
    time it writes names the zone. Webhooks also carry the instants as ISO 8601 for machines."""
    return zone_or_default(settings.TIME_ZONE)


def notice_text(alert: Alert, field: str, tz=None) -> str:
    """The alert's title or detail with the instants it names written in `tz` (the notice zone)."""
    return fill_times(
        getattr(alert, field) or "", alert.times, tz=tz or notice_zone(), anchor=alert.last_seen_at
    )


def payload(alert: Alert, event: str) -> dict:
    return {
        "event": event,
        "alert": {
            "key": alert.key,
            "kind": alert.kind,
            "severity": alert.severity,
            "status": alert.status,
            "title": notice_text(alert, "title"),
            "detail": notice_text(alert, "detail"),
            "site": alert.site.slug if alert.site_id else None,
            "count": alert.count,
            "first_seen_at": alert.first_seen_at.isoformat(),
            "last_seen_at": alert.last_seen_at.isoformat(),
            "url": alert_url(alert),
        },
    }


def subject(alert: Alert, event: str) -> str:
    return f"[{EVENT_WORDS.get(event, event)}] [{alert.severity}] {notice_text(alert, 'title')}"[:250]


def text_body(alert: Alert, event: str) -> str:
    tz = notice_zone()
    lines = [subject(alert, event), ""]
    if event == Delivery.Event.RECOVERY:
        lines.append(f"This problem cleared at {format_when(alert.resolved_at or timezone.now(), tz)}.")
    else:
        lines.append(notice_text(alert, "detail", tz))
    lines += [
        "",
        f"Site: {alert.site.name if alert.site_id else '(the hub)'}",
        f"Seen {counted(alert.count, 'time')}, first {format_when(alert.first_seen_at, tz)}, "
        f"last {format_when(alert.last_seen_at, tz)}.",
        f"Times are in {tz.key}.",
        f"Alerts page: {alert_url(alert)}",
    ]
    return "\n".join(lines)


# -- transports ---------------------------------------------------------------------------------------------


class Transport:
    def __init__(self, channel: AlertChannel) -> None:
        self.channel = channel

    def notify(self, alert: Alert, event: str) -> None:
        raise NotImplementedError


class EmailTransport(Transport):
    """Through Django's email backend (SMTP in production, locmem in tests)."""

    def addresses(self) -> list[str]:
        return [a.strip() for a in self.channel.target.replace(";", ",").split(",") if a.strip()]

    def notify(self, alert: Alert, event: str) -> None:
        recipients = self.addresses()
        if not recipients:
            raise TransportError("the channel has no email address", permanent=True)
        try:
            send_mail(subject(alert, event), text_body(alert, event), settings.DEFAULT_FROM_EMAIL, recipients)
        except smtplib.SMTPRecipientsRefused:
            raise TransportError("the mail server refused every address", permanent=True) from None
        except (smtplib.SMTPException, OSError):
            host = getattr(settings, "EMAIL_HOST", "") or "configured"
            raise TransportError(f"the mail server ({host}) refused the message or did not answer") from None


class WebhookTransport(Transport):
    """A JSON POST signed with HMAC-SHA256 over the raw body, like GitHub's webhooks, so the receiver
    can check the notice came from the hub (and, with the timestamp, reject old replays)."""

    def __init__(self, channel: AlertChannel, http: httpx.BaseTransport | None = None) -> None:
        super().__init__(channel)
        self.http = http

    def notify(self, alert: Alert, event: str) -> None:
        body = json.dumps(payload(alert, event), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(int(time.time()))}
        secret = channel_secret(self.channel)
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        try:
            with httpx.Client(transport=self.http, timeout=settings.WEBHOOK_TIMEOUT_S) as client:
                response = client.post(self.channel.target, content=body, headers=headers)
        except httpx.InvalidURL:
            raise TransportError("the webhook URL is not valid", permanent=True) from None
        except httpx.TimeoutException:
            raise TransportError("the receiver did not answer in time") from None
        except httpx.HTTPError:
            # The exception's text may quote the URL, which can hold a secret path: the host only.
            raise TransportError(
                f"could not reach {_host(self.channel.target)} (connection refused, reset or no route)"
            ) from None
        if response.status_code == 429 or response.status_code >= 500:
            raise TransportError(f"HTTP {response.status_code} from the receiver")
        if response.status_code >= 400:
            raise TransportError(f"HTTP {response.status_code} from the receiver", permanent=True)


TRANSPORTS: dict[str, type[Transport]] = {
    AlertChannel.Kind.EMAIL: EmailTransport,
    AlertChannel.Kind.WEBHOOK: WebhookTransport,
}


def _host(url: str) -> str:
    return urlsplit(url).hostname or "the receiver"


def transport_for(channel: AlertChannel, http: httpx.BaseTransport | None = None) -> Transport:
    if channel.kind == AlertChannel.Kind.WEBHOOK:
        return WebhookTransport(channel, http=http)
    return TRANSPORTS[channel.kind](channel)


# -- delivery -----------------------------------------------------------------------------------------------

ATTEMPTS = 3
BACKOFF_S = (0.5, 2.0)  # waits between attempts; a still-failing channel is tried again at the next notice


def deliver(
    channel: AlertChannel,
    alert: Alert,
    event: str,
    *,
    transport: Transport | None = None,
    backoff_s: tuple[float, ...] | None = None,
) -> bool:
    """Send one notice through one channel, retrying transient failures; every attempt is a row."""
    transport = transport or transport_for(channel)
    backoff_s = backoff_s or BACKOFF_S
    for attempt in range(1, ATTEMPTS + 1):
        started = time.monotonic()
        error, permanent = "", False
        try:
            transport.notify(alert, event)
        except TransportError as exc:
            error, permanent = exc.message[:500], exc.permanent
        except Exception:  # a bug in a transport must not stop the other channels
            logger.exception("delivery through channel %s failed unexpectedly", channel.pk)
            error = "an unexpected problem inside the hub (the worker's log has the details)"
        Delivery.objects.create(
            alert=alert,
            channel=channel,
            event=event,
            attempt=attempt,
            ok=not error,
            permanent=permanent,
            error=error,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        if not error:
            return True
        if permanent:
            disable(channel, error)
            return False
        if attempt < ATTEMPTS:
            time.sleep(backoff_s[min(attempt - 1, len(backoff_s) - 1)])
    return False


def disable(channel: AlertChannel, reason: str) -> bool:
    done = AlertChannel.objects.filter(pk=channel.pk, enabled=True).update(
        enabled=False, disabled_reason=reason, disabled_at=timezone.now()
    )
    channel.refresh_from_db()
    return bool(done)


def enable(channel: AlertChannel, user) -> bool:
    done = AlertChannel.objects.filter(pk=channel.pk, enabled=False).update(
        enabled=True, disabled_reason="", disabled_at=None
    )
    if done:
        AuditEntry.objects.create(actor=user, action="channel_enabled", target=channel.name[:200])
    channel.refresh_from_db()
    return bool(done)


def send_test(channel: AlertChannel, user, http: httpx.BaseTransport | None = None) -> str:
    """Send a made-up notice so an admin can check the channel; returns "" or why it failed.

    The attempt is a Delivery row like any other, so a failed test shows under the channel's last
    deliveries with its error. A Delivery needs an alert: the test notice is saved as an alert of kind
    "test" that is resolved from the start (no problem is open, nothing re-notifies it) and the alerts page
    leaves out. A failure does not disable the channel: the admin is looking at it already.
    """
    now = timezone.now()
    alert = Alert.objects.create(
        key="test", kind=AlertKind.TEST, severity=Alert.Severity.WARNING,
        status=Alert.Status.RESOLVED, resolved_at=now,
        title="Test notice from the Integration Hub",
        detail="An administrator sent this to check the channel. Nothing is wrong.",
        first_seen_at=now, last_seen_at=now,
    )  # fmt: skip
    started = time.monotonic()
    try:
        transport_for(channel, http=http).notify(alert, Delivery.Event.FIRING)
        error = ""
    except TransportError as exc:
        error = exc.message[:500]
    except Exception:  # a bug in a transport: say so on the page instead of a server error
        logger.exception("test notice through channel %s failed unexpectedly", channel.pk)
        error = "an unexpected problem inside the hub (the log has the details)"
    Delivery.objects.create(
        alert=alert,
        channel=channel,
        event=Delivery.Event.FIRING,
        ok=not error,
        error=error,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
    )
    AuditEntry.objects.create(
        actor=user, action="channel_tested", target=channel.name[:200], detail=error or "delivered"
    )
    return error
