"""Builds the Moodle client for a site from its stored limits and active token.

The one place where a token is decrypted: the plaintext goes straight into the client, which keeps it in
the POST body only.
"""

from functools import cache

import httpx
import redis
from django.conf import settings

from monitoring.audit import CallLogWriter
from monitoring.breaker_events import breaker_changed

from ..models import MoodleSite, ServiceToken, SyncRun
from ..moodle.breaker import BreakerConfig
from ..moodle.client import MoodleClient, RetryPolicy, SiteLimits, Timeouts


class NoActiveToken(Exception):
    """The site has no active token: nothing can be called until an admin adds or promotes one."""


@cache
def shared_redis() -> redis.Redis:
    """One connection pool per process for the throttle, the breaker and the run locks."""
    # Timeouts: a Redis that stopped answering must fail a page or a call, not hang it.
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=5, socket_timeout=30)


def site_limits(site: MoodleSite) -> SiteLimits:
    return SiteLimits(
        max_concurrent=site.max_concurrent_calls,
        min_spacing_ms=site.min_spacing_ms,
        calls_per_minute=site.calls_per_minute,
        max_input_vars=site.max_input_vars,
    )


def client_for(
    site: MoodleSite,
    *,
    token: ServiceToken | None = None,
    run: SyncRun | None = None,
    transport: httpx.BaseTransport | None = None,
    **options,
) -> MoodleClient:
    """A client that calls `site` with `token` (default: the active one), auditing every call."""
    token = token or site.active_token()
    if token is None:
        raise NoActiveToken(f"site {site.slug} has no active service token")
    audit = CallLogWriter(site, run=run, token=token)
    return MoodleClient(
        site.base_url,
        token.reveal(),
        site=site.slug,
        limits=site_limits(site),
        redis=shared_redis(),
        transport=transport,
        on_call=audit,
        on_send=audit.sending,
        on_breaker_change=breaker_changed,
        breaker=BreakerConfig(**settings.MOODLE_BREAKER),
        retry=RetryPolicy(**settings.MOODLE_RETRY),
        timeouts=Timeouts(**settings.MOODLE_TIMEOUTS),
        **options,
    )
