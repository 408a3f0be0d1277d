"""The service-token lifecycle: add, verify, promote, confirm revoked.

Rotation without downtime: the new token is added as standby, verified against the functions the hub
needs, then promoted in one transaction (the old one turns standby with a reminder to revoke it in
Moodle); the admin confirms once Moodle no longer knows it. The hub never switches tokens on its own: a
token that suddenly fails is an alert for a person, who knows whether it was revoked on purpose.

Every action writes an AuditEntry naming the token by its last four characters only. A plaintext token
lives in this module only between the form and the encrypted column, and in the client's POST body.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime

import httpx
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from monitoring.audit import CallLogWriter
from monitoring.models import AuditEntry

from .choices import TokenStatus
from .models import MoodleSite, ServiceToken
from .moodle import errors
from .moodle.breaker import BreakerConfig
from .moodle.client import SYNC_FUNCTIONS, MoodleClient, RetryPolicy, Timeouts
from .moodle.errors import SeamError
from .run.connect import shared_redis, site_limits

logger = logging.getLogger(__name__)

# An admin waits at the page while the hub verifies: a short retry, not a run's patience.
VERIFY_RETRY_ATTEMPTS = 2


class TokenError(Exception):
    """An action that was refused; the message is for the admin and never holds a token."""


def target(token: ServiceToken) -> str:
    return f"site {token.site.slug} token {token.masked}"


def add_token(
    site: MoodleSite,
    label: str,
    plaintext: str,
    *,
    valid_until: datetime | None = None,
    ip_restriction: str = "",
    user=None,
    transport: httpx.BaseTransport | None = None,
) -> ServiceToken:
    """Verify `plaintext` against `site` and store it encrypted, active if the site has none, else standby.

    A token Moodle rejects outright (unknown, expired, wrong IP, service disabled) is refused: storing
    it would only add a row nobody can use. A token Moodle accepts but that lacks functions or cannot
    see users is stored with its verification error, because the fix is in Moodle's service set-up and
    the admin re-verifies afterwards without typing the token again. A site that does not answer now
    is refused too: nothing is known about the token yet.
    """
    plaintext = (plaintext or "").strip()
    if not plaintext:
        raise TokenError("the token is empty")
    if any(plaintext == t.reveal() for t in site.tokens.exclude(status=TokenStatus.REVOKED)):
        raise TokenError("this site already has that token")
    token = ServiceToken(
        site=site,
        label=label,
        valid_until=valid_until,
        ip_restriction=ip_restriction,
        status=TokenStatus.STANDBY,
        created_by=user if getattr(user, "pk", None) else None,
    )
    token.set_token(plaintext)
    problems, category = _check(token, transport=transport)
    if category == errors.AUTH:
        raise TokenError(f"Moodle rejected the token: {'; '.join(problems)}")
    _apply_check(token, problems)
    try:
        with transaction.atomic():
            has_active = ServiceToken.objects.filter(site=site, status=TokenStatus.ACTIVE).exists()
            token.status = TokenStatus.ACTIVE if not has_active and not problems else TokenStatus.STANDBY
            token.save()  # two admins adding a first token at once: the unique constraint stops the second
    except IntegrityError:
        token.pk = None
        token.status = TokenStatus.STANDBY
        token.save()
    _audit(
        user,
        "token.add",
        token,
        f"added as {token.status}; "
        + (f"verification failed: {token.verify_error}" if problems else "verified"),
    )
    return token


def verify(token: ServiceToken, user=None, *, transport: httpx.BaseTransport | None = None) -> bool:
    """Check the token again; records last_verified_at or verify_error. True when it is fit for runs."""
    if token.status == TokenStatus.REVOKED:
        raise TokenError(f"{token.masked} is revoked: add a new token instead")
    problems, _category = _check(token, transport=transport)
    _apply_check(token, problems)
    token.save(update_fields=["last_verified_at", "verify_error"])
    _audit(user, "token.verify", token, f"verification failed: {token.verify_error}" if problems else "ok")
    return not problems


def promote(token: ServiceToken, user=None) -> ServiceToken | None:
    """Make a verified standby the active token; the old active one becomes standby, to be revoked.

    Returns the demoted token (None if the site had no active one).
    """
    with transaction.atomic():
        token = ServiceToken.objects.select_for_update().select_related("site").get(pk=token.pk)
        if token.status != TokenStatus.STANDBY:
            raise TokenError(f"{token.masked} is {token.status}: only a standby token can be promoted")
        if token.refused:
            raise TokenError(
                f"Moodle refused {token.masked} ({token.refused_code}): verify it again once it is fixed in "
                "Moodle, or add a new token"
            )
        if token.last_verified_at is None or token.verify_error:
            raise TokenError(f"{token.masked} is not verified: verify it first")
        old = (
            ServiceToken.objects.select_for_update()
            .filter(site=token.site, status=TokenStatus.ACTIVE)
            .first()
        )
        if old is not None:
            # Demote first: the database allows one active token per site at any instant.
            old.status = TokenStatus.STANDBY
            old.revoke_pending = True
            old.save(update_fields=["status", "revoke_pending"])
        token.status = TokenStatus.ACTIVE
        token.revoke_pending = False
        token.save(update_fields=["status", "revoke_pending"])
        detail = f"{token.masked} active" + (
            f"; {old.masked} standby, to be revoked in Moodle" if old else ""
        )
        _audit(user, "token.promote", token, detail)
    return old


def confirm_revoked(token: ServiceToken, user=None) -> None:
    """The admin revoked the token in Moodle: record it. The active token cannot be marked revoked, or
    the site would be left without one while Moodle may still accept it."""
    with transaction.atomic():
        token = ServiceToken.objects.select_for_update().select_related("site").get(pk=token.pk)
        if token.status == TokenStatus.ACTIVE:
            raise TokenError(f"{token.masked} is the active token: promote another one first")
        if token.status == TokenStatus.REVOKED:
            raise TokenError(f"{token.masked} is already revoked")
        token.status = TokenStatus.REVOKED
        token.revoke_pending = False
        token.save(update_fields=["status", "revoke_pending"])
        _audit(user, "token.revoked", token, "confirmed revoked in Moodle")


# -- verification ------------------------------------------------------------------------------------------


def _check(token: ServiceToken, *, transport: httpx.BaseTransport | None) -> tuple[list[str], str | None]:
    """Problems (empty when fit for runs) and the error category if Moodle refused a call."""
    plaintext = token.reveal()
    client = _verification_client(token, plaintext, transport)
    try:
        check = client.preflight(SYNC_FUNCTIONS)
    except SeamError as exc:
        return [_scrub(f"Moodle did not answer, try again later: {exc}", plaintext)], "unavailable"
    finally:
        client.close()
    return [_scrub(p, plaintext) for p in check.problems], check.error_category


def _verification_client(
    token: ServiceToken, plaintext: str, transport: httpx.BaseTransport | None
) -> MoodleClient:
    """A client for this token, paced by the site's shared throttle. Its breaker is off: a candidate
    token that Moodle rejects must not open the breaker the active token's runs depend on."""
    site = token.site
    retry = RetryPolicy(**{**settings.MOODLE_RETRY, "attempts": VERIFY_RETRY_ATTEMPTS})
    audit = CallLogWriter(site, token=token if token.pk else None)
    return MoodleClient(
        site.base_url,
        plaintext,
        site=site.slug,
        limits=site_limits(site),
        redis=shared_redis(),
        transport=transport,
        on_call=audit,
        on_send=audit.sending,
        breaker=dataclasses.replace(BreakerConfig(**settings.MOODLE_BREAKER), enabled=False),
        retry=retry,
        timeouts=Timeouts(**settings.MOODLE_TIMEOUTS),
    )


def _apply_check(token: ServiceToken, problems: list[str]) -> None:
    if problems:
        token.verify_error = "; ".join(problems)[:2000]
    else:
        token.verify_error = ""
        token.last_verified_at = timezone.now()


def _scrub(text: str, plaintext: str) -> str:
    """Moodle does not echo tokens, but a proxy's error page might: never let one reach a page."""
    return text.replace(plaintext, "…" + plaintext[-4:]) if plaintext else text


def _audit(user, action: str, token: ServiceToken, detail: str) -> None:
    AuditEntry.objects.create(
        actor=user if getattr(user, "pk", None) else None, action=action, target=target(token), detail=detail
    )
    logger.info("%s %s: %s", action, target(token), detail)
