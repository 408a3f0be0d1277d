"""Each site's state, in one place: what the Overview, the site page, /metrics and the alert rules show.

A site is *healthy* only when nothing needs a person. Otherwise the most urgent finding names the state,
says why in words and links to where it is fixed:

failing          nothing will work until someone acts: no usable token (missing, expired, refused by
                 Moodle), the service lacks a function, the last run was aborted, a critical alert of
                 that kind is open;
degraded         Moodle is slow or flaky and the hub is coping: the breaker is open, transient errors are
                 elevated, the probe is slow or cannot reach Moodle, the last run failed, a token expires
                 within a week;
needs attention  the hub works, but work waits for a person: the last run finished with problems, dead
                 letters, records in error, conflicts, discrepancies or an override waiting, a token
                 expiring within a month, an open alert about any of these;
paused           an operator paused a run;
healthy          none of the above. Boring on purpose.

An operator's cancel and a dry run (an uploaded file that did not parse) are not faults of the site: the
state looks past them. Built for all sites at once with a fixed number of queries (the breaker is read
from Redis), so the Overview's cost does not grow with the number of sites.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Count, Max, OuterRef, QuerySet, Subquery
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from sync.choices import (
    ConflictStatus,
    DeadLetterStatus,
    DiscrepancyStatus,
    EventStatus,
    HookDirection,
    HookSecretStatus,
    MembershipStatus,
    OverrideStatus,
    RunKind,
    RunStatus,
    SyncStatus,
    TokenStatus,
)
from sync.models import (
    Conflict,
    DeadLetter,
    Discrepancy,
    GuardOverride,
    HookSecret,
    InboundEvent,
    Membership,
    MoodleSite,
    ServiceToken,
    SyncRecord,
    SyncRun,
)
from sync.moodle.breaker import CLOSED, HALF_OPEN, BreakerState
from sync.words import counted
from web.templatetags.hub import fill_times

from . import charts, heartbeat, metrics
from .kinds import AlertKind
from .models import Alert, ProbeResult

HEALTHY, PAUSED, ATTENTION, DEGRADED, FAILING = "healthy", "paused", "attention", "degraded", "failing"
RANK = {HEALTHY: 0, PAUSED: 1, ATTENTION: 2, DEGRADED: 3, FAILING: 4}
PILL = {HEALTHY: "ok", PAUSED: "info", ATTENTION: "warn", DEGRADED: "warn", FAILING: "bad"}
LABEL = {
    HEALTHY: "healthy",
    PAUSED: "paused",
    ATTENTION: "needs attention",
    DEGRADED: "degraded",
    FAILING: "failing",
}
# The state an open alert of each kind puts its site in (a token expiry depends on its severity).
ALERT_STATE = {
    AlertKind.AUTH_FAILURE: FAILING,
    AlertKind.CONFIG: FAILING,
    AlertKind.STUCK_RUN: FAILING,
    AlertKind.RUN_BUDGET: DEGRADED,
    AlertKind.TRANSIENT_RATE: DEGRADED,
    AlertKind.BREAKER_OPEN: DEGRADED,
    AlertKind.SITE_UNAVAILABLE: DEGRADED,
    AlertKind.STALE_LOCK: DEGRADED,
    AlertKind.SCHEDULE_MISSED: DEGRADED,
    AlertKind.SCHEDULE_LATE: DEGRADED,
    AlertKind.BLAST_RADIUS: ATTENTION,
    AlertKind.GUARD_OVERRIDE: ATTENTION,
}
# "Last clean sync" means people were sent: a reconciliation or a dry run is not one.
SYNC_KINDS = (RunKind.BOOTSTRAP, RunKind.INCREMENTAL, RunKind.RETRY)
TOKEN_RED_DAYS = 7
TOKEN_AMBER_DAYS = 30


@dataclass
class Finding:
    state: str
    reason: str
    next_step: str = ""
    link: str | None = None
    link_label: str = ""
    key: str = ""  # what kind of finding, for the alert rules and the tests

    @property
    def label(self) -> str:
        return LABEL[self.state]

    @property
    def pill(self) -> str:
        return PILL[self.state]


@dataclass
class SiteState:
    state: str
    findings: list[Finding]
    probe: ProbeResult | None
    breaker: BreakerState | None
    next_expiry: tuple[int, ServiceToken] | None
    sparkline: SafeString
    transient: tuple[int, int] = (0, 0)
    counts: dict[str, int] = field(default_factory=dict)
    last_finished: SyncRun | None = None
    last_clean: SyncRun | None = None

    @property
    def pill(self) -> str:
        return PILL[self.state]

    @property
    def label(self) -> str:
        return LABEL[self.state]

    @property
    def first(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    @property
    def rank(self) -> int:
        return RANK[self.state]


def _url(name: str, *args, query: dict | None = None) -> str | None:
    try:
        return reverse(name, args=args) + (f"?{urlencode(query)}" if query else "")
    except NoReverseMatch:
        return None


def hhmm(value: datetime | float | None) -> str:
    """A time in the active zone (on a page, the viewer's), named."""
    if value is None:
        return "?"
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, tz=UTC)
    return timezone.localtime(value).strftime("%H:%M %Z")


# Refused webhook requests this recent make a site need attention: their sender is losing its changes.
REFUSED_EVENTS_WINDOW = timedelta(hours=1)


def _slow_ms() -> float:
    return float(settings.MOODLE_BREAKER.get("latency_p90_ms") or 3000.0)


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


@dataclass
class _Facts:
    """Everything the findings are made of, read for all sites at once."""

    probes: dict[int, ProbeResult]
    paused: dict[int, SyncRun]
    last_finished: dict[int, SyncRun]
    last_clean: dict[int, SyncRun]
    counts: dict[int, dict[str, int]]
    alerts: dict[int, list[dict]]
    overrides: dict[int, int]
    transient: dict[int, tuple[int, int]]
    # Per site and webhook direction with an active secret: the last event received, else the secret's making.
    event_silence: dict[int, dict[str, datetime]]


def _per_site(queryset, ids: list[int]) -> dict[int, int]:
    return dict(queryset.filter(site_id__in=ids).values_list("site_id").annotate(n=Count("*")).order_by())


def _newest_per_site(runs: QuerySet, ids: list[int]) -> dict[int, SyncRun]:
    """The last finished of `runs` for each site, in one query that walks each site's index on finished_at
    (DISTINCT ON would sort every run the sites ever had)."""
    newest = runs.filter(site_id=OuterRef("pk")).order_by("-finished_at", "-pk").values("pk")[:1]
    picked = MoodleSite.objects.filter(pk__in=ids).annotate(run=Subquery(newest)).values("run")
    return {r.site_id: r for r in SyncRun.objects.filter(pk__in=picked).defer("plan")}


def _facts(ids: list[int], now: datetime, *, include_alerts: bool) -> _Facts:
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
    last_finished = _newest_per_site(
        SyncRun.objects.filter(status__in=RunStatus.finished(), dry_run=False), ids
    )
    last_clean = _newest_per_site(
        SyncRun.objects.filter(status=RunStatus.SUCCEEDED, dry_run=False, kind__in=SYNC_KINDS), ids
    )
    sources = {
        "dead_letters": DeadLetter.objects.filter(status=DeadLetterStatus.OPEN),
        "errors": SyncRecord.objects.filter(sync_status=SyncStatus.ERROR),
        "conflicts": Conflict.objects.filter(status=ConflictStatus.OPEN),
        "membership_errors": Membership.objects.filter(status=MembershipStatus.ERROR),
        # A sender whose requests are refused (a wrong secret, a skewed clock) is losing its changes.
        "refused_events": InboundEvent.objects.filter(
            status=EventStatus.REFUSED, received_at__gte=now - REFUSED_EVENTS_WINDOW
        ),
        "discrepancies": Discrepancy.objects.filter(status__in=DiscrepancyStatus.waiting()),
        "blocked": Discrepancy.objects.filter(status=DiscrepancyStatus.BLOCKED),
    }
    counted = {name: _per_site(queryset, ids) for name, queryset in sources.items()}
    counts = {site_id: {name: counted[name].get(site_id, 0) for name in sources} for site_id in ids}
    alerts: dict[int, list[dict]] = {site_id: [] for site_id in ids}
    if include_alerts:
        rows = (
            Alert.objects.filter(site_id__in=ids)
            .exclude(status=Alert.Status.RESOLVED)
            .values("site_id", "kind", "severity")
            .annotate(n=Count("pk"), title=Max("title"), last=Max("last_seen_at"))
            .order_by("site_id", "kind", "severity")
        )
        for row in rows:
            alerts[row["site_id"]].append(row)
    overrides = _per_site(GuardOverride.objects.filter(status=OverrideStatus.PENDING), ids)
    transient = metrics.transient_rates(ids, now - timedelta(seconds=settings.ALERT_WINDOW_S))
    return _Facts(
        probes, paused, last_finished, last_clean, counts, alerts, overrides, transient, _event_silence(ids)
    )


def _event_silence(ids: list[int]) -> dict[int, dict[str, datetime]]:
    """Since when each webhook with an active secret has been quiet (two queries for all sites)."""
    quiet: dict[int, dict[str, datetime]] = defaultdict(dict)
    for row in HookSecret.objects.filter(site_id__in=ids, status=HookSecretStatus.ACTIVE).values(
        "site_id", "direction", "created_at"
    ):
        quiet[row["site_id"]][row["direction"]] = row["created_at"]
    last = (
        InboundEvent.objects.filter(
            site_id__in=ids, status__in=[EventStatus.ACCEPTED, EventStatus.APPLIED, EventStatus.FAILED]
        )
        .values("site_id", "direction")
        .annotate(last=Max("received_at"))
        .order_by()
    )
    for row in last:
        since = quiet[row["site_id"]].get(row["direction"])
        if since is not None:
            quiet[row["site_id"]][row["direction"]] = max(since, row["last"])
    return quiet


def site_states(
    sites: list[MoodleSite], *, now: datetime | None = None, include_alerts: bool = True
) -> dict[int, SiteState]:
    """The state of each site (`sites` should have their tokens prefetched). The alert rules ask with
    `include_alerts=False`, so an alert never keeps up the condition that raised it."""
    now = now or timezone.now()
    ids = [site.pk for site in sites]
    facts = _facts(ids, now, include_alerts=include_alerts)
    sparks = metrics.latency_sparklines(ids, now=now)
    states = {}
    for site in sites:
        try:
            breaker = metrics.breaker_state(site)
        except Exception:  # Redis down: /healthz says so; the overview still shows what the database knows
            breaker = None
        findings = _Findings(site, facts, breaker, now).collect()
        findings.sort(key=lambda f: -RANK[f.state])  # stable: within a rank, the order of _Findings
        states[site.pk] = SiteState(
            state=findings[0].state if findings else HEALTHY,
            findings=findings,
            probe=facts.probes.get(site.pk),
            breaker=breaker,
            next_expiry=_next_expiry(site, now),
            sparkline=charts.sparkline(sparks.get(site.pk, [])),
            transient=facts.transient.get(site.pk, (0, 0)),
            counts=facts.counts[site.pk],
            last_finished=facts.last_finished.get(site.pk),
            last_clean=facts.last_clean.get(site.pk),
        )
    return states


def site_state(site: MoodleSite, **options) -> SiteState:
    return site_states([site], **options)[site.pk]


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


class _Findings:
    """The findings of one site, most urgent first within each state."""

    def __init__(self, site: MoodleSite, facts: _Facts, breaker: BreakerState | None, now: datetime):
        self.site = site

        self.probe = facts.probes.get(site.pk)
        self.breaker = breaker
        self.paused = facts.paused.get(site.pk)
        self.last = facts.last_finished.get(site.pk)
        self.counts = facts.counts[site.pk]
        self.alerts = facts.alerts[site.pk]
        self.overrides = facts.overrides.get(site.pk, 0)
        self.transient = facts.transient.get(site.pk, (0, 0))
        self.quiet_since = facts.event_silence.get(site.pk, {})
        self.now = now
        self.active = next((t for t in site.tokens.all() if t.status == TokenStatus.ACTIVE), None)
        self.tokens_url = _url("sync:site_tokens", site.slug) or _url("sync:site_detail", site.slug)
        self.errors_url = _url("monitoring:errors", query={"site": site.slug})
        self.found: list[Finding] = []
        self.covered: set[str] = set()  # alert kinds a fact already explains

    def add(self, state: str, key: str, reason: str, next_step: str, link, label: str, covers=()) -> None:
        self.found.append(Finding(state, reason, next_step, link, label, key))
        self.covered.update(covers)

    def collect(self) -> list[Finding]:
        self._token()
        self._probe()
        self._last_run()
        self._moodle_load()
        self._waiting_work()
        self._refused_events()
        self._silent_events()
        self._alerts()
        if self.paused is not None:
            self.add(
                PAUSED,
                "run_paused",
                f"Run #{self.paused.pk} is paused"
                + (f": {_short(self.paused.abort_reason)}" if self.paused.abort_reason else "."),
                "Resume it from its page when ready: its records wait until then.",
                _url("sync:run_detail", self.paused.pk),
                f"Run #{self.paused.pk}",
            )
        return self.found

    def _token(self) -> None:
        active = self.active
        auth = (AlertKind.AUTH_FAILURE,)
        if active is None:
            self.add(
                FAILING,
                "no_token",
                "No active service token: nothing can be called.",
                "Add a token and verify it, or promote a verified standby.",
                self.tokens_url,
                "Tokens",
                auth,
            )
            return
        if active.valid_until is not None and active.valid_until <= self.now:
            local = timezone.localtime(active.valid_until)
            self.add(
                FAILING,
                "token_expired",
                f"The active token {active.masked} expired on {local:%Y-%m-%d %H:%M %Z}.",
                "Promote a verified standby token or add a new one.",
                self.tokens_url,
                "Tokens",
                (*auth, AlertKind.TOKEN_EXPIRY),
            )
            return
        if active.refused:
            self.add(
                FAILING,
                "token_refused",
                f"Moodle refused the token {active.masked} at {hhmm(active.refused_at)} "
                f"({active.refused_code}"
                + (f" on {active.refused_function}" if active.refused_function else "")
                + ").",
                "Check the token in Moodle (revoked, expired, IP restriction, its user suspended or missing "
                "a "
                "capability); promote a verified standby or add a new token, then resume the stopped run.",
                self.tokens_url,
                "Token page",
                auth,
            )
            return
        days = active.days_left(self.now)
        if days is not None and days <= TOKEN_AMBER_DAYS:
            self.add(
                DEGRADED if days <= TOKEN_RED_DAYS else ATTENTION,
                "token_expiring",
                f"The active token {active.masked} expires in {_plural(days, 'day', 'days')}.",
                "Create a new token in Moodle, add it here as standby, verify and promote it.",
                self.tokens_url,
                "Token page",
                (AlertKind.TOKEN_EXPIRY,),
            )

    def _probe(self) -> None:
        probe = self.probe
        if probe is None:
            return
        if not probe.ok and probe.error_category in heartbeat.BROKEN:
            active = self.active
            if probe.error_category == "auth":
                later_use = active is not None and active.last_used_at and active.last_used_at > probe.at
                if active is not None and not active.refused and not later_use:
                    self.add(
                        FAILING,
                        "probe_refused",
                        f"Moodle rejected the token at {hhmm(probe.at)}: {_short(probe.error)}",
                        "Check the token in Moodle (revoked, expired, IP restriction, its user suspended); "
                        "promote a verified standby or add a new token.",
                        self.tokens_url,
                        "Token page",
                        (AlertKind.AUTH_FAILURE,),
                    )
            elif probe.error_category != heartbeat.NO_TOKEN:
                self.add(
                    FAILING,
                    "probe_broken",
                    f"The last probe at {hhmm(probe.at)} failed: {_short(probe.error)}",
                    "Fix the Moodle service set-up named above.",
                    self.tokens_url,
                    "Tokens",
                    (AlertKind.CONFIG,),
                )
        if probe.ok and probe.missing_functions:
            names = ", ".join(probe.missing_functions)
            self.add(
                FAILING,
                "missing_functions",
                f"The token cannot call {names}.",
                "Add the missing function(s) to the hub's external service in Moodle (Site administration, "
                "Server, Web services, External services); the next probe clears this.",
                _url("sync:site_detail", self.site.slug),
                "Site",
                (AlertKind.CONFIG,),
            )
        if not probe.ok and probe.error_category in heartbeat.UNAVAILABLE:
            self.add(
                DEGRADED,
                "probe_unavailable",
                f"The last probe at {hhmm(probe.at)} could not reach Moodle: {_short(probe.error)}",
                "Usually clears by itself; if it persists, check the Moodle site and the network path.",
                self.errors_url,
                "Errors",
                (AlertKind.SITE_UNAVAILABLE,),
            )
        elif probe.ok and probe.latency_ms is not None and probe.latency_ms > _slow_ms():
            self.add(
                DEGRADED,
                "probe_slow",
                f"The last probe at {hhmm(probe.at)} took {probe.latency_ms / 1000:.1f} s "
                f"(slow above {_slow_ms() / 1000:g} s).",
                "Moodle is answering slowly; runs will be slower. Check the Moodle server's load.",
                self.errors_url,
                "Errors",
            )

    def _last_run(self) -> None:
        run = self.last
        if run is None:
            return
        label = f"Run #{run.pk}"
        if run.status == RunStatus.ABORTED:
            auth = run.stop_category == "auth"
            self.add(
                FAILING,
                "run_aborted",
                f"Run #{run.pk} was stopped: {_short(run.abort_reason) or 'no reason recorded'}",
                (
                    "Fix the token on the token page, then resume the run: the records not sent are still "
                    "pending."
                    if auth
                    else "Fix the cause named in the run, then resume it: the records not sent are still "
                    "pending."
                ),
                self.tokens_url if auth else _url("sync:run_detail", run.pk),
                "Token page" if auth else label,
                (AlertKind.AUTH_FAILURE,) if auth else (AlertKind.CONFIG,),
            )
        elif run.status == RunStatus.FAILED:
            self.add(
                DEGRADED,
                "run_failed",
                f"Run #{run.pk} failed: {_short(run.abort_reason) or 'no reason recorded'}",
                "The next scheduled run retries what is pending; open the run if it keeps failing.",
                _url("sync:run_detail", run.pk),
                label,
                (AlertKind.STUCK_RUN, AlertKind.RUN_BUDGET),
            )
        elif run.status == RunStatus.PROBLEMS:
            self.add(
                ATTENTION,
                "run_problems",
                f"Run #{run.pk} ({run.get_kind_display().lower()}) finished with problems: "
                f"{_short(run.abort_reason)}",
                "Open the run: each counter links to what it left behind.",
                _url("sync:run_detail", run.pk),
                label,
            )

    def _moodle_load(self) -> None:
        breaker = self.breaker
        if breaker is not None and breaker.state != CLOSED:
            why = breaker.reason or "of errors"
            opened = f"The breaker opened at {hhmm(breaker.opened_at)} because {why}"
            if breaker.state == HALF_OPEN:
                reason = f"{opened}; one probe call is checking the site now."
            else:
                probe = hhmm(breaker.next_probe_at)
                reason = f"{opened}; calls are paused and will be probed again at {probe}."
            self.add(
                DEGRADED,
                "breaker_open",
                reason,
                "Nothing to do if it closes by itself; if it keeps opening, Moodle is overloaded: check its "
                "server, or lower this site's call rate.",
                self.errors_url,
                "Errors",
                (AlertKind.BREAKER_OPEN,),
            )
        failed, total = self.transient
        if total >= settings.ALERT_TRANSIENT_MIN_CALLS and failed / total >= settings.ALERT_TRANSIENT_RATE:
            minutes = settings.ALERT_WINDOW_S // 60
            self.add(
                DEGRADED,
                "transient_rate",
                f"{failed} of {counted(total, 'call')} ({failed / total:.0%}) in the last {minutes} min "
                "failed "
                "transiently and were retried.",
                "Usually Moodle under load; see which functions and errors on the errors page.",
                self.errors_url,
                "Errors",
                (AlertKind.TRANSIENT_RATE,),
            )

    def _waiting_work(self) -> None:
        slug, counts = self.site.slug, self.counts
        if self.overrides:
            self.add(
                ATTENTION,
                "override_pending",
                _plural(
                    self.overrides,
                    "override of the blast-radius guard waits",
                    "overrides of the blast-radius guard wait",
                )
                + " for a second admin.",
                "A second admin confirms or rejects it on the Discrepancies page.",
                _url("sync:discrepancy_list", query={"site": slug}),
                "Discrepancies",
                (AlertKind.GUARD_OVERRIDE,),
            )
        if counts["dead_letters"]:
            self.add(
                ATTENTION,
                "dead_letters",
                f"{_plural(counts['dead_letters'], 'dead letter waits', 'dead letters wait')} for a retry: "
                "Moodle kept failing these writes.",
                "Retry them once Moodle is well (or discard them with a reason).",
                _url("sync:deadletter_list", query={"site": slug}),
                "Dead letters",
            )
        if counts["blocked"]:
            self.add(
                ATTENTION,
                "guard_blocked",
                f"{_plural(counts['blocked'], 'suspension was', 'suspensions were')} held back by the "
                "blast-radius guard and wait for an admin.",
                "Check the source first (a truncated export?); then approve with an override or reject.",
                _url("sync:discrepancy_list", query={"site": slug, "status": DiscrepancyStatus.BLOCKED}),
                "Held-back suspensions",
                (AlertKind.BLAST_RADIUS,),
            )
        others = counts["discrepancies"] - counts["blocked"]
        if others:
            self.add(
                ATTENTION,
                "discrepancies",
                f"{_plural(others, 'discrepancy waits', 'discrepancies wait')} for an admin's decision.",
                "Review them on the Discrepancies page.",
                _url("sync:discrepancy_list", query={"site": slug}),
                "Discrepancies",
            )
        if counts["conflicts"]:
            self.add(
                ATTENTION,
                "conflicts",
                f"{_plural(counts['conflicts'], 'conflict is', 'conflicts are')} open: those people are not "
                "synced until someone decides.",
                "Propose a link, a rename or ignore on each conflict's page.",
                _url("sync:conflict_list", query={"site": slug}),
                "Conflicts",
            )
        if counts["errors"]:
            self.add(
                ATTENTION,
                "records_in_error",
                f"{_plural(counts['errors'], 'record is', 'records are')} in error and not in step with "
                "the source.",
                "Open them: each says which field is wrong; fix it in the source.",
                _url("sync:record_list", query={"site": slug, "status": SyncStatus.ERROR}),
                "Records in error",
            )
        if counts["membership_errors"]:
            self.add(
                ATTENTION,
                "memberships_in_error",
                f"{_plural(counts['membership_errors'], 'membership is', 'memberships are')} in error: those "
                "people are not in the courses or cohorts the source puts them in.",
                "Open them: each says what Moodle refused or what is wrong in the source.",
                _url("sync:site_memberships", slug, query={"status": MembershipStatus.ERROR}),
                "Memberships in error",
            )

    def _refused_events(self) -> None:
        refused = self.counts.get("refused_events", 0)
        if refused:
            self.add(
                ATTENTION,
                "refused_events",
                f"{_plural(refused, 'webhook request was', 'webhook requests were')} refused in the last "
                "hour: their changes did not reach the hub.",
                "See why on the Events page (a wrong secret, a clock off by minutes, a body too big).",
                _url("sync:site_events", self.site.slug, query={"status": EventStatus.REFUSED}),
                "Events",
            )

    def _silent_events(self) -> None:
        """A webhook that should be speaking and is not: the sender is down, or its deliveries are refused."""
        expected = self.site.events_expected_within
        if expected is None:
            return
        for direction, since in sorted(self.quiet_since.items()):
            if self.now - since <= expected:
                continue
            who = HookDirection(direction).label.split(" ")[0].lower()
            self.add(
                ATTENTION,
                f"silent_events:{direction}",
                f"No event from {'the ' + who if who == 'source' else who} since {_when(since, self.now)} "
                f"(expected at least every {_minutes(expected)}).",
                "Check the sender (its deliveries, its secret, its clock), and the refused events here.",
                _url("sync:site_events", self.site.slug, query={"direction": direction}),
                "Events",
            )

    def _alerts(self) -> None:
        """Open alerts no fact above explains already: the alert's own title, at its kind's state."""
        for row in self.alerts:
            kind = row["kind"]
            if kind in self.covered:
                continue
            if kind == AlertKind.TOKEN_EXPIRY:
                state = DEGRADED if row["severity"] == Alert.Severity.CRITICAL else ATTENTION
            else:
                state = ALERT_STATE.get(
                    kind, DEGRADED if row["severity"] == Alert.Severity.CRITICAL else ATTENTION
                )
            self.add(
                state,
                f"alert:{kind}",
                # A title from before times became data says "04:06 UTC": shown in the viewer's zone too.
                fill_times(row["title"], None, anchor=row["last"])
                + (f" (and {row['n'] - 1} more like it)" if row["n"] > 1 else ""),
                "See the alert for what to do.",
                _url("monitoring:alert_list", query={"site": self.site.slug}),
                "Alerts",
            )


def _when(value: datetime, now: datetime) -> str:
    """A time in the active zone, with its date when it is not within the last 20 hours."""
    shown = timezone.localtime(value)
    return shown.strftime("%H:%M %Z" if now - value < timedelta(hours=20) else "%Y-%m-%d %H:%M %Z")


def _minutes(period: timedelta) -> str:
    minutes = round(period.total_seconds() / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}" if minutes < 120 else f"{minutes // 60} hours"


def _short(text: str, limit: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
