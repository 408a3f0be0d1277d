"""Receiving webhooks: the source's changed people (`/hooks/source/<site>/`) and Moodle's own changes from the
local_integrationhub plugin (`/hooks/moodle/<site>/`).

Every request becomes an InboundEvent row, whatever becomes of it. A request is accepted only when:
- its body is not larger than HOOK_MAX_BYTES (checked before it is read);
- `X-Hub-Timestamp` is within HOOK_TIMESTAMP_WINDOW_S of the hub's clock (an old request replayed later is
  refused even with a good signature);
- `X-Hub-Signature-256` is `sha256=` + HMAC-SHA256(secret, timestamp + "." + body) for one of the site's
  secrets of that hook (the active one, or a retiring one before its end), compared in constant time;
- `X-Hub-Event-Id` names it, and no event with that id was accepted in the last HOOK_RETENTION_DAYS (a
  redelivery is answered 200 and does nothing);
- the body is JSON of the expected shape.
An accepted event is answered 202 at once and joins the site's queued run of kind event (sync/run/events.py),
which sends it through the same engine as any run, a moment later (EVENT_COALESCE_S) so events arriving
together go together. The body of a refused request is never kept: it was not verified.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .choices import (
    EventStatus,
    HookDirection,
    HookSecretStatus,
    MembershipKind,
    MembershipState,
    MembershipStatus,
    RunKind,
    RunStatus,
    RunTrigger,
)
from .dispatch import enqueue_run
from .models import HookSecret, InboundEvent, Membership, MoodleSite, SyncRun

MOODLE_EVENTS = (
    "user_updated", "user_deleted", "user_enrolment_created", "user_enrolment_updated",
    "user_enrolment_deleted", "course_completed",
)  # fmt: skip
ACCEPTED_STATES = (EventStatus.ACCEPTED, EventStatus.APPLIED, EventStatus.FAILED)


@dataclass(frozen=True)
class Answer:
    """What the hook answers, and the row that records the request."""

    status: int
    body: dict
    event: InboundEvent


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The value of X-Hub-Signature-256 for this body at this timestamp."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def receive(
    direction: str,
    slug: str,
    headers: Mapping[str, str],
    read_body: Callable[[int], bytes],
    content_length: int | None,
) -> Answer:
    """Check one request and record it; `read_body(n)` reads at most n bytes of the body."""
    now = timezone.now()
    event = InboundEvent(
        site_slug=slug[:50], direction=direction, received_at=now, status=EventStatus.REFUSED
    )
    try:
        event.site = MoodleSite.objects.filter(slug=slug).first()
        if event.site is None:
            raise Refused(404, f"no site {slug!r} on this hub")
        body = _read(read_body, content_length, event)
        event.event_id = (headers.get("X-Hub-Event-Id") or "").strip()[:100]
        _verify(event.site, direction, headers, body, now)
        if not event.event_id:
            raise Refused(400, "X-Hub-Event-Id is missing: every event needs an id, so a redelivery is known")
        data = _parse(event.site, direction, body, event)
    except Refused as refused:
        event.reason = refused.reason
        event.save()
        return Answer(refused.status, {"status": "refused", "reason": refused.reason}, event)
    return _accept(event, data)


def _read(read_body: Callable[[int], bytes], content_length: int | None, event: InboundEvent) -> bytes:
    limit = settings.HOOK_MAX_BYTES
    if content_length is not None and content_length > limit:
        event.size = content_length
        raise Refused(413, f"the body is {content_length:,} bytes; the limit is {limit:,}")
    body = read_body(limit + 1)
    event.size = len(body)
    if len(body) > limit:
        raise Refused(413, f"the body is over the limit of {limit:,} bytes")
    return body


def _verify(site: MoodleSite, direction: str, headers: Mapping[str, str], body: bytes, now) -> None:
    stamp = (headers.get("X-Hub-Timestamp") or "").strip()
    if not stamp.isdigit():
        raise Refused(400, "X-Hub-Timestamp is missing or not a number of seconds")
    skew = abs(now.timestamp() - int(stamp))
    window = settings.HOOK_TIMESTAMP_WINDOW_S
    if skew > window:
        raise Refused(
            401,
            f"the timestamp is {skew:,.0f} s from the hub's clock (more than ±{window} s): a replay or "
            "a wrong clock on the sender",
        )
    given = (headers.get("X-Hub-Signature-256") or "").strip()
    if not given.startswith("sha256="):
        raise Refused(401, "X-Hub-Signature-256 is missing (sha256=<hex HMAC of timestamp.body>)")
    candidates = [s for s in site.hook_secrets.filter(direction=direction) if s.accepts_at(now)]
    if not candidates:
        raise Refused(
            403, f"the site has no secret for its {direction} hook: an admin makes one on the site page"
        )
    if not any(hmac.compare_digest(signature(s.reveal(), stamp, body), given) for s in candidates):
        raise Refused(401, "the signature does not match the site's secret for this hook")


def _parse(site: MoodleSite, direction: str, body: bytes, event: InboundEvent) -> dict:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(400, f"the body is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise Refused(400, "the body must be a JSON object")
    if direction == HookDirection.SOURCE:
        people = data.get("people")
        if not isinstance(people, list) or not people or not all(isinstance(p, dict) for p in people):
            raise Refused(400, 'the body needs "people": a non-empty list of objects in the source\'s fields')
        id_field = source_id_field(site)
        missing = next((n for n, p in enumerate(people, 1) if not str(p.get(id_field) or "").strip()), None)
        if missing is not None:
            raise Refused(400, f"person {missing} has no {id_field!r}, the source's id field")
        event.kind, event.people = "people", len(people)
        return data
    name = data.get("event")
    if name not in MOODLE_EVENTS:
        raise Refused(400, f"unknown event {name!r} (known: {', '.join(MOODLE_EVENTS)})")
    user = data.get("user")
    if not isinstance(user, dict) or not str(user.get("id", "")).isdigit():
        raise Refused(400, 'the event needs "user" with its Moodle "id"')
    event.kind, event.people = name, 1
    return data


def source_id_field(site: MoodleSite) -> str:
    """The field of a source record that holds the person's external id (as the source's own config says)."""
    config = site.source.config if hasattr(site, "source") else {}
    return str(config.get("id_column") or config.get("id_field") or "id")


def _accept(event: InboundEvent, data: dict) -> Answer:
    since = event.received_at - timedelta(days=settings.HOOK_RETENTION_DAYS)
    seen = InboundEvent.objects.filter(
        site=event.site,
        direction=event.direction,
        event_id=event.event_id,
        status__in=ACCEPTED_STATES,
        received_at__gte=since,
    ).first()
    if seen is None:
        try:
            with transaction.atomic():
                if echoes_the_hub(event.site, data):
                    # The hub's own enrolments come back from Moodle as events: nothing to check, no run.
                    event.status, event.body, event.applied_at = EventStatus.APPLIED, data, timezone.now()
                    event.reason = (
                        "reports what the hub holds for this person in this course: nothing to check"
                    )
                    event.save()
                    return Answer(202, {"status": "accepted", "event": event.event_id, "people": 1}, event)
                # One queued event run per site: two events at once must not each make one.
                MoodleSite.objects.select_for_update().filter(pk=event.site.pk).first()
                event.status, event.body = EventStatus.ACCEPTED, data
                event.save()
                queue_event_run(event.site)
            return Answer(202, {"status": "accepted", "event": event.event_id, "people": event.people}, event)
        except IntegrityError:  # the same id accepted a moment ago by another request
            seen = InboundEvent.objects.filter(
                site=event.site,
                direction=event.direction,
                event_id=event.event_id,
                status__in=ACCEPTED_STATES,
            ).first()
    event.pk, event.status, event.body = None, EventStatus.DUPLICATE, None
    event.reason = (
        f"already received at {seen.received_at.isoformat()} (event #{seen.pk}); nothing done again"
    )
    event.save()
    return Answer(200, {"status": "duplicate", "event": event.event_id}, event)


def echoes_the_hub(site: MoodleSite, data: dict) -> bool:
    """An enrolment event that reports exactly what the hub holds as in step for that person and course
    (its own enrolment, coming back): the comparison a run would make could find nothing. One query."""
    if data.get("event") not in ("user_enrolment_created", "user_enrolment_updated"):
        return False
    enrolment, course = data.get("enrolment"), data.get("course") or {}
    if not isinstance(enrolment, dict) or not str(course.get("id", "")).isdigit():
        return False
    row = (
        Membership.objects.filter(
            site=site,
            target__kind=MembershipKind.COURSE,
            target__moodle_id=int(course["id"]),
            record__moodle_id=int(data["user"]["id"]),
            status=MembershipStatus.OK,
        )
        .select_related("target")
        .first()
    )
    if row is None:
        return False
    active = int(enrolment.get("status", 0)) == 0
    wanted_active = row.desired == MembershipState.ACTIVE
    return active == wanted_active and (not wanted_active or row.role in (enrolment.get("roles") or []))


def queue_event_run(site: MoodleSite) -> SyncRun:
    """The site's queued run of kind event (an accepted event joins it), or a new one sent after the
    coalescing window. The run takes every accepted event when it starts, so none is left behind."""
    queued = SyncRun.objects.filter(site=site, kind=RunKind.EVENT, status=RunStatus.QUEUED).first()
    if queued is not None:
        return queued
    run = SyncRun.objects.create(site=site, kind=RunKind.EVENT, trigger=RunTrigger.EVENT)
    enqueue_run(run.pk, countdown=settings.EVENT_COALESCE_S)
    return run


def make_secret(site: MoodleSite, direction: str, user) -> str:
    """A new active secret for the hook (the current one, if any, retires with an overlap); returns the
    plaintext, which is shown once and never again."""
    plaintext = new_secret()
    with transaction.atomic():
        until = timezone.now() + timedelta(hours=settings.HOOK_SECRET_OVERLAP_HOURS)
        site.hook_secrets.filter(direction=direction, status=HookSecretStatus.ACTIVE).update(
            status=HookSecretStatus.RETIRING, valid_until=until
        )
        secret = HookSecret(site=site, direction=direction, created_by=user)
        secret.set_secret(plaintext)
        secret.save()
    return plaintext
