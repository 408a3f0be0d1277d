"""Breaker transitions reported by the Moodle client, kept as rows for the pages and the alert rules."""

import logging

from sync.models import MoodleSite

from .models import BreakerEvent

logger = logging.getLogger(__name__)


def breaker_changed(site_slug: str, old: str, new: str, reason: str) -> None:
    """The client's on_breaker_change callback; never raises into the call that tripped it."""
    logger.warning("breaker for site %s: %s -> %s (%s)", site_slug, old, new, reason)
    try:
        site = MoodleSite.objects.filter(slug=site_slug).first()
        if site is not None:
            BreakerEvent.objects.create(site=site, old_state=old, new_state=new, reason=reason[:500])
    except Exception:
        logger.exception("could not record the breaker transition of %s", site_slug)
