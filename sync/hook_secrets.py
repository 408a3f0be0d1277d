"""The webhook secrets' lifecycle as an admin drives it from the pages: make (or rotate) and revoke, each
written to the audit trail. Making the secret itself is sync.hooks.make_secret; this module decides what the
action is called and records it.

A plaintext secret passes through here once, on its way from make_secret to the one page that shows it: it
is never logged, audited or stored anywhere but the encrypted column. The trail names a secret by its last
four characters.
"""

from __future__ import annotations

import logging

from django.db import transaction

from monitoring.models import AuditEntry

from . import hooks
from .choices import HookDirection, HookSecretStatus
from .models import HookSecret, MoodleSite

logger = logging.getLogger(__name__)

# A hook secret lets its holder change people in Moodle, as a service token does: the same people manage both.
MANAGE = "sync.manage_tokens"
LIVE = (HookSecretStatus.ACTIVE, HookSecretStatus.RETIRING)


class HookSecretError(Exception):
    """An action that was refused; the message is for the admin and never holds a secret."""


def target(site: MoodleSite, direction: str) -> str:
    return f"site {site.slug} {direction} hook"


def make(site: MoodleSite, direction: str, user) -> tuple[str, HookSecret]:
    """A new active secret for the hook: the first one, or a rotation (the current one retires and is still
    accepted until its end, so the sender can switch over). Returns the plaintext, to be shown once, and
    the new row."""
    if direction not in HookDirection.values:
        raise HookSecretError(f"there is no {direction!r} hook")
    with transaction.atomic():
        old = site.hook_secrets.filter(direction=direction, status=HookSecretStatus.ACTIVE).first()
        plaintext = hooks.make_secret(site, direction, user)
        secret = site.hook_secrets.get(direction=direction, status=HookSecretStatus.ACTIVE)
        if old is None:
            _audit(user, "hook_secret.make", site, direction, f"secret …{secret.last4} made, active")
        else:
            old.refresh_from_db()
            _audit(
                user,
                "hook_secret.rotate",
                site,
                direction,
                f"secret …{secret.last4} made, active; …{old.last4} retiring, accepted until "
                f"{old.valid_until.isoformat()}",
            )
    return plaintext, secret


def revoke(secret: HookSecret, user) -> HookSecret:
    """Stop accepting a secret at once (an active one, or a retiring one before its end). Revoking the
    active secret leaves the hook refusing every request until a new one is made."""
    with transaction.atomic():
        secret = HookSecret.objects.select_for_update().select_related("site").get(pk=secret.pk)
        if secret.status not in LIVE:
            raise HookSecretError(f"secret …{secret.last4} is already revoked")
        was = secret.status
        secret.status = HookSecretStatus.REVOKED
        secret.save(update_fields=["status"])
        _audit(
            user,
            "hook_secret.revoke",
            secret.site,
            secret.direction,
            f"secret …{secret.last4} ({was}) revoked",
        )
    return secret


def _audit(user, action: str, site: MoodleSite, direction: str, detail: str) -> None:
    AuditEntry.objects.create(
        actor=user if getattr(user, "pk", None) else None,
        action=action,
        target=target(site, direction)[:200],
        detail=detail,
    )
    logger.info("%s %s: %s", action, target(site, direction), detail)
