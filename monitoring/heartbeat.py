"""Probes of each Moodle site with `core_webservice_get_site_info`, every few minutes.

A probe finds a dead token, a missing service function or an unavailable site before the next real run
meets it. It goes through the same client as a run (throttle, breaker, CallLog audit row), so it never
adds load the site's limits do not allow, and its single attempt is not retried: a probe measures, it
does not try hard.

Alerts raised here are the ones a single probe proves: the token was rejected (`auth:{slug}`, the key the
engine uses, so a probe and a run share one alert) or the token lacks a function the hub needs
(`missing_function:{slug}`). An unavailable site is only recorded; the alert rules decide whether it is
sustained enough to page someone.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import httpx
from django.conf import settings
from django.db.models import Max, Q
from django.utils import timezone

from sync.models import MoodleSite
from sync.moodle import errors
from sync.moodle.breaker import PROBE_FUNCTION
from sync.moodle.client import SYNC_FUNCTIONS, RetryPolicy
from sync.moodle.errors import BreakerOpen, MoodleError, SeamError, ThrottleTimeout
from sync.run.connect import NoActiveToken, client_for

from .alerts import raise_alert, resolve_alert
from .kinds import AlertKind, auth_key, missing_function_key
from .models import Alert, CallLog, ProbeResult

logger = logging.getLogger(__name__)

# Categories of a failed probe that are not Moodle's error categories.
NO_TOKEN = "no_token"  # noqa: S105 - a category name, not a secret
BREAKER_OPEN = "breaker_open"
THROTTLED = "throttled"
UNREACHABLE = "unreachable"
# A probe that says the site is unavailable for now, as opposed to "the hub is set up wrong".
UNAVAILABLE = frozenset({errors.TRANSIENT, errors.MAINTENANCE, BREAKER_OPEN, THROTTLED, UNREACHABLE})
# A probe that proves an operator must act: nothing will work until they do.
BROKEN = frozenset({errors.AUTH, errors.CONFIG, NO_TOKEN})

# A beat tick every minute arrives a little early or late; without slack a 300 s interval becomes 360 s.
DUE_SLACK = timedelta(seconds=10)


def probe_site(site: MoodleSite, *, transport: httpx.BaseTransport | None = None) -> ProbeResult:
    """Probe `site` once and store the result; raise or resolve the alerts the probe proves."""
    token = site.active_token()
    if token is None:
        return ProbeResult.objects.create(
            site=site,
            ok=False,
            error_category=NO_TOKEN,
            error="The site has no active service token: add one (or promote a standby) on the token page.",
        )
    started = timezone.now()
    t0 = time.perf_counter()
    try:
        with client_for(site, token=token, transport=transport) as client:
            # One attempt: a retried probe would hide the blip it exists to see.
            client.retry = RetryPolicy(attempts=1)
            info = client.get_site_info()
    except NoActiveToken as exc:  # the token was demoted between the two reads
        return ProbeResult.objects.create(site=site, ok=False, error_category=NO_TOKEN, error=str(exc))
    except MoodleError as exc:
        latency = _latency(site, started, t0)
        result = ProbeResult.objects.create(
            site=site, ok=False, latency_ms=latency, error_category=exc.category, error=str(exc)[:2000]
        )
        if exc.category == errors.AUTH:
            _raise_auth_alert(site, token.masked, exc)
        return result
    except BreakerOpen as exc:
        return ProbeResult.objects.create(site=site, ok=False, error_category=BREAKER_OPEN, error=str(exc))
    except ThrottleTimeout as exc:
        return ProbeResult.objects.create(site=site, ok=False, error_category=THROTTLED, error=str(exc))
    except SeamError as exc:
        return ProbeResult.objects.create(
            site=site, ok=False, error_category=UNREACHABLE, error=str(exc)[:2000]
        )
    latency = _latency(site, started, t0)
    functions = sorted(
        f["name"]
        for f in info.get("functions") or []
        if isinstance(f, dict) and isinstance(f.get("name"), str)
    )
    missing = [name for name in SYNC_FUNCTIONS if name not in functions]
    result = ProbeResult.objects.create(
        site=site,
        ok=True,
        latency_ms=latency,
        release=str(info.get("release") or "")[:100],
        version=str(info.get("version") or "")[:30],
        functions=functions,
        missing_functions=missing,
    )
    # A refusal of the probe's own function is over; refusals of other functions (a missing capability
    # for writes) are not proven fixed by site info, so the alert rule decides on those.
    others = CallLog.objects.filter(site=site).exclude(function=PROBE_FUNCTION)
    last_ok = others.filter(outcome="ok").aggregate(at=Max("started_at"))["at"]
    refused_since = others.filter(outcome="auth")
    if last_ok is not None:
        refused_since = refused_since.filter(started_at__gt=last_ok)
    if not refused_since.exists():
        resolve_alert(auth_key(site.slug))
    if missing:
        _raise_missing_function_alert(site, token.masked, missing)
    else:
        resolve_alert(missing_function_key(site.slug))
    return result


def probe_sites(now=None, transport: httpx.BaseTransport | None = None) -> int:
    """Probe every enabled site whose last probe is older than PROBE_INTERVAL_S; return how many."""
    now = now or timezone.now()
    due_before = now - timedelta(seconds=settings.PROBE_INTERVAL_S) + DUE_SLACK
    sites = (
        MoodleSite.objects.filter(enabled=True)
        .annotate(last_probe=Max("probes__at"))
        .filter(Q(last_probe__isnull=True) | Q(last_probe__lte=due_before))
        .order_by("pk")
    )
    probed = 0
    for site in sites:
        try:
            probe_site(site, transport=transport)
        except Exception:
            # One site's surprise must not keep the others from being probed.
            logger.exception("probe of site %s failed unexpectedly", site.slug)
        probed += 1
    return probed


def _latency(site: MoodleSite, started, t0: float) -> float:
    """The call's own duration from its audit row; the wall time (throttle wait included) without it."""
    logged = (
        CallLog.objects.filter(site=site, function=PROBE_FUNCTION, run=None, started_at__gte=started)
        .order_by("-started_at")
        .values_list("duration_ms", flat=True)
        .first()
    )
    return round(logged if logged is not None else (time.perf_counter() - t0) * 1000, 1)


def _raise_auth_alert(site: MoodleSite, masked: str, exc: MoodleError) -> None:
    code = f" ({exc.errorcode})" if exc.errorcode else ""
    raise_alert(
        auth_key(site.slug),
        kind=AlertKind.AUTH_FAILURE,
        site=site,
        # The title stays free of times: pages that group alerts (the site's state) show titles as stored.
        title=f"{site.name}: Moodle rejected the token {masked}{code}",
        times={"refused": timezone.now()},
        detail=(
            f"The heartbeat probe ({PROBE_FUNCTION}) was refused at {{refused}}: "
            f"{exc.message or exc.category}. Runs on this site will stop at their first call. Check the "
            "token in Moodle (revoked, expired, IP restriction, its user suspended); promote a verified "
            "standby token or add a new one on the site's token page. The alert clears at the next "
            "successful probe."
        ),
    )


def _raise_missing_function_alert(site: MoodleSite, masked: str, missing: list[str]) -> None:
    names = ", ".join(missing)
    raise_alert(
        missing_function_key(site.slug),
        kind=AlertKind.CONFIG,
        site=site,
        severity=Alert.Severity.CRITICAL,
        title=f"{site.name}: the token {masked} cannot call {names}",
        detail=(
            f"The hub needs {names} and the Moodle external service of token {masked} does not include "
            f"{'it' if len(missing) == 1 else 'them'}. In Moodle, open Site administration > Server > Web "
            "services > External services, choose the hub's service, and add the missing function(s) "
            "under Functions. Runs refuse to start until then; the alert clears at the next probe that "
            "finds every function."
        ),
    )
