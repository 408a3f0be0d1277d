"""Each site's state for the overview: healthy, degraded, failing or paused, in words, with what to do.

failing  - nothing will work until someone acts: the token was rejected or is missing, the service lacks
           a function, or the latest run was aborted;
degraded - Moodle is slow or flaky and the hub is coping: the breaker is open or probing, transient errors
           are elevated, the last probe was slow or unavailable, or the last run failed;
paused   - an operator paused a run;
healthy  - none of the above. Boring on purpose.

Built for all sites at once with a fixed number of queries (the breaker is read from Redis), so the
overview's cost does not grow with the number of sites.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from sync.choices import RunStatus, TokenStatus
from sync.models import MoodleSite, ServiceToken, SyncRun
from sync.moodle.breaker import CLOSED, HALF_OPEN, BreakerState

from . import charts, heartbeat, metrics
from .models import ProbeResult

HEALTHY, DEGRADED, FAILING, PAUSED = "healthy", "degraded", "failing", "paused"
RANK = {HEALTHY: 0, PAUSED: 1, DEGRADED: 2, FAILING: 3}
PILL = {HEALTHY: "ok", PAUSED: "info", DEGRADED: "warn", FAILING: "bad"}


@dataclass
class Finding:
    state: str
    reason: str
    next_step: str = ""
    link: str | None = None
    link_label: str = ""


@dataclass
class SiteState:
    state: str
    findings: list[Finding]
    probe: ProbeResult | None
    breaker: BreakerState | None
    next_expiry: tuple[int, ServiceToken] | None
    sparkline: SafeString
    transient: tuple[int, int] = (0, 0)
    extra: dict = field(default_factory=dict)

    @property
    def pill(self) -> str:
        return PILL[self.state]

    @property
    def first(self) -> Finding | None:
        return self.findings[0] if self.findings else None


def _url(name: str, *args, query: str = "") -> str | None:
    try:
        return reverse(name, args=args) + (f"?{query}" if query else "")
    except NoReverseMatch:
        return None


def _hhmm(value: datetime | float | None, tz_name: str) -> str:
    if value is None:
        return "?"
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, tz=UTC)
    local = timezone.localtime(value, _zone(tz_name))
    return local.strftime("%H:%M")


def _zone(name: str):
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(name or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def _slow_ms() -> float:
    return float(settings.MOODLE_BREAKER.get("latency_p90_ms") or 3000.0)


def site_states(
    sites: list[MoodleSite], latest_runs: dict[int, list[SyncRun]], *, now: datetime | None = None
) -> dict[int, SiteState]:
    """The state of each site. `sites` should have their tokens prefetched; `latest_runs` are the newest
    runs per site, newest first (the overview already has them)."""
    now = now or timezone.now()
    ids = [site.pk for site in sites]
    probes = {
        p.site_id: p
        for p in ProbeResult.objects.filter(site_id__in=ids)
        .defer("functions")
        .order_by("site_id", "-at")
        .distinct("site_id")
    }
    paused = {
        r.site_id: r
        for r in SyncRun.objects.filter(site_id__in=ids, status=RunStatus.PAUSED)
        .defer("plan")
        .order_by("site_id", "-created_at")
        .distinct("site_id")
    }
    transient = metrics.transient_rates(ids, now - timedelta(seconds=settings.ALERT_WINDOW_S))
    sparks = metrics.latency_sparklines(ids, now=now)
    states = {}
    for site in sites:
        try:
            breaker = metrics.breaker_state(site)
        except Exception:  # Redis down: /healthz says so; the overview still shows what the database knows
            breaker = None
        findings = _findings(
            site,
            probe=probes.get(site.pk),
            breaker=breaker,
            runs=latest_runs.get(site.pk, []),
            paused=paused.get(site.pk),
            transient=transient.get(site.pk, (0, 0)),
            now=now,
        )
        findings.sort(key=lambda f: -RANK[f.state])
        state = findings[0].state if findings else HEALTHY
        states[site.pk] = SiteState(
            state=state,
            findings=findings,
            probe=probes.get(site.pk),
            breaker=breaker,
            next_expiry=_next_expiry(site, now),
            sparkline=charts.sparkline(sparks.get(site.pk, [])),
            transient=transient.get(site.pk, (0, 0)),
        )
    return states


def _next_expiry(site: MoodleSite, now: datetime) -> tuple[int, ServiceToken] | None:
    tokens = [
        t
        for t in site.tokens.all()
        if t.status in (TokenStatus.ACTIVE, TokenStatus.STANDBY) and t.valid_until is not None
    ]
    if not tokens:
        return None
    token = min(tokens, key=lambda t: t.valid_until)
    return token.days_left(now), token


def _findings(
    site: MoodleSite,
    *,
    probe: ProbeResult | None,
    breaker: BreakerState | None,
    runs: list[SyncRun],
    paused: SyncRun | None,
    transient: tuple[int, int],
    now: datetime,
) -> list[Finding]:
    tz = site.time_zone
    tokens_url = _url("site_tokens", site.slug) or _url("site_detail", site.slug)
    errors_url = _url("errors", query=f"site={site.slug}")
    found: list[Finding] = []
    active = next((t for t in site.tokens.all() if t.status == TokenStatus.ACTIVE), None)

    if active is None:
        found.append(
            Finding(
                FAILING,
                "No active service token: nothing can be called.",
                "Add a token and verify it, or promote a verified standby.",
                tokens_url,
                "Tokens",
            )
        )
    elif active.valid_until is not None and active.valid_until <= now:
        found.append(
            Finding(
                FAILING,
                f"The active token {active.masked} expired on {_hhmm(active.valid_until, tz)} "
                f"{timezone.localtime(active.valid_until, _zone(tz)):%Y-%m-%d}.",
                "Promote a verified standby token or add a new one.",
                tokens_url,
                "Tokens",
            )
        )

    if probe is not None and not probe.ok and probe.error_category in heartbeat.BROKEN:
        if probe.error_category == "auth":
            found.append(
                Finding(
                    FAILING,
                    f"Moodle rejected the token at {_hhmm(probe.at, tz)}: {_short(probe.error)}",
                    "Check the token in Moodle (revoked, expired, IP restriction, user suspended); promote a "
                    "verified standby or add a new token.",
                    tokens_url,
                    "Tokens",
                )
            )
        elif probe.error_category != heartbeat.NO_TOKEN or active is not None:
            found.append(
                Finding(
                    FAILING,
                    f"The last probe at {_hhmm(probe.at, tz)} failed: {_short(probe.error)}",
                    "Fix the Moodle service set-up named above.",
                    tokens_url,
                    "Tokens",
                )
            )
    if probe is not None and probe.ok and probe.missing_functions:
        names = ", ".join(probe.missing_functions)
        found.append(
            Finding(
                FAILING,
                f"The token cannot call {names}.",
                "Add the missing function(s) to the hub's external service in Moodle (Site administration, "
                "Server, Web services, External services); the next probe clears this.",
                _url("site_detail", site.slug),
                "Site",
            )
        )

    last_done = next(
        (r for r in runs if r.status in (RunStatus.ABORTED, RunStatus.FAILED, RunStatus.SUCCEEDED)), None
    )
    if last_done is not None and last_done.status == RunStatus.ABORTED:
        found.append(
            Finding(
                FAILING,
                f"Run #{last_done.pk} was aborted: {_short(last_done.abort_reason) or 'no reason recorded'}",
                "Fix the cause named in the run, then resume it: the records not sent are still pending.",
                _url("run_detail", last_done.pk),
                f"Run #{last_done.pk}",
            )
        )
    elif last_done is not None and last_done.status == RunStatus.FAILED:
        found.append(
            Finding(
                DEGRADED,
                f"Run #{last_done.pk} failed: {_short(last_done.abort_reason) or 'no reason recorded'}",
                "The next scheduled run retries what is pending; open the run if it keeps failing.",
                _url("run_detail", last_done.pk),
                f"Run #{last_done.pk}",
            )
        )

    if breaker is not None and breaker.state != CLOSED:
        opened = (
            f"The breaker opened at {_hhmm(breaker.opened_at, tz)} because {breaker.reason or 'of errors'}"
        )
        if breaker.state == HALF_OPEN:
            reason = f"{opened}; one probe call is checking the site now."
        else:
            reason = (
                f"{opened}; calls are paused and will be probed again at {_hhmm(breaker.next_probe_at, tz)}."
            )
        found.append(
            Finding(
                DEGRADED,
                reason,
                "Nothing to do if it closes by itself; if it keeps opening, Moodle is overloaded: check its "
                "server, or lower this site's call rate.",
                errors_url,
                "Errors",
            )
        )

    failed, total = transient
    if total >= settings.ALERT_TRANSIENT_MIN_CALLS and failed / total >= settings.ALERT_TRANSIENT_RATE:
        minutes = settings.ALERT_WINDOW_S // 60
        found.append(
            Finding(
                DEGRADED,
                f"{failed} of {total} calls ({failed / total:.0%}) in the last {minutes} min failed "
                "transiently and were retried.",
                "Usually Moodle under load; see which functions and errors on the errors page.",
                errors_url,
                "Errors",
            )
        )

    if probe is not None and not probe.ok and probe.error_category in heartbeat.UNAVAILABLE:
        found.append(
            Finding(
                DEGRADED,
                f"The last probe at {_hhmm(probe.at, tz)} could not reach Moodle ({probe.error_category}): "
                f"{_short(probe.error)}",
                "Usually clears by itself; if it persists, check the Moodle site and the network path.",
                errors_url,
                "Errors",
            )
        )
    elif probe is not None and probe.ok and probe.latency_ms is not None and probe.latency_ms > _slow_ms():
        found.append(
            Finding(
                DEGRADED,
                f"The last probe at {_hhmm(probe.at, tz)} took {probe.latency_ms / 1000:.1f} s "
                f"(slow above {_slow_ms() / 1000:g} s).",
                "Moodle is answering slowly; runs will be slower. Check the Moodle server's load.",
                errors_url,
                "Errors",
            )
        )

    if paused is not None:
        found.append(
            Finding(
                PAUSED,
                f"Run #{paused.pk} is paused"
                + (f": {_short(paused.abort_reason)}" if paused.abort_reason else "."),
                "Resume it from its page when ready: its records wait until then.",
                _url("run_detail", paused.pk),
                f"Run #{paused.pk}",
            )
        )
    return found


def _short(text: str, limit: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
