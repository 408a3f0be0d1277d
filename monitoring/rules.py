"""The alert rules: what counts as a problem an operator must hear about, and when it has cleared.

Each rule is a small function that looks at the rows (and Redis) as they are now and returns the problems
it sees, each under a stable key. `evaluate` runs them all: a problem must be seen on ALERT_CONSECUTIVE
evaluations in a row before it becomes an alert (one blip never pages anyone), except the rules marked
immediate (a refused token, an expiring token); a problem no longer seen resolves its alert, which sends
the recovery notice. The rules follow the seed guide's Monitoring section: any invalidtoken or
accessexception, a run over its time budget, a sustained transient error rate, a token near expiry, plus
the hub's own dead-man switches. Single transient errors that a retry fixed and username/email conflicts
are deliberately not rules.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, F, Max, Q
from django.db.models.functions import Coalesce
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from sync.choices import OverrideStatus, RunStatus, RunTrigger, TokenStatus
from sync.models import GuardOverride, MoodleSite, ServiceToken, SyncRun
from sync.moodle.audit import SENDING
from sync.run.connect import shared_redis
from sync.run.locks import lock_info
from sync.words import counted

from .alerts import raise_alert, resolve_alert, supersede_alert
from .kinds import AlertKind, auth_key, guard_override_key, site_unavailable_key
from .models import Alert, BreakerEvent, CallLog, Heartbeat, RuleState
from .site_state import hhmm, site_states

logger = logging.getLogger(__name__)

CRITICAL = Alert.Severity.CRITICAL
WARNING = Alert.Severity.WARNING
WORKER_KEYS = "hub:worker:*"  # the worker-liveness contract: one key per live worker, with a TTL


@dataclass(frozen=True)
class Problem:
    key: str
    kind: str
    severity: str
    title: str
    detail: str
    site: MoodleSite | None = None
    run: SyncRun | None = None
    # The instants the detail names as "{name}": written out in each reader's zone, never baked in.
    times: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    prefix: str  # every key this rule returns starts with it; alerts and states under it are its own
    kind: str
    check: Callable[[datetime], list[Problem]]
    immediate: bool = False  # fire on the first evaluation that sees it


def _url(name: str, *args, fallback: str) -> str:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:  # the page is not wired in this deployment yet
        return fallback


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


# -- rules --------------------------------------------------------------------------------------------------


def auth_failures(now: datetime) -> list[Problem]:
    """Moodle refused the token (invalidtoken, accessexception, nopermissions) on some function.

    Holds until that function has answered normally again after its last refusal, so a refused token
    keeps its alert open between runs; uses the key the sync engine raises (`auth:{slug}`), so a refusal
    seen by a run and by this rule is one alert.
    """
    window_start = now - timedelta(seconds=settings.ALERT_WINDOW_S)
    open_alerts = {
        a.site_id: a
        for a in Alert.objects.filter(key__startswith="auth:").exclude(status=Alert.Status.RESOLVED)
        if a.site_id
    }
    problems = []
    for site in MoodleSite.objects.all():
        alert = open_alerts.get(site.pk)
        since = (
            min(window_start, alert.first_seen_at - timedelta(seconds=settings.ALERT_WINDOW_S))
            if alert
            else window_start
        )
        refused = list(
            # Refusals of the active token only: a candidate token being verified (a mistyped new one) is
            # not the site's problem.
            CallLog.objects.filter(
                site=site, outcome="auth", started_at__gte=since, token__status=TokenStatus.ACTIVE
            )
            .values("function")
            .annotate(last=Max("started_at"), calls=Count("id"), code=Max("errorcode"))
        )
        if not refused:
            continue
        answered = dict(
            CallLog.objects.filter(site=site, outcome="ok", function__in=[r["function"] for r in refused])
            .values("function")
            .annotate(last=Max("started_at"))
            .values_list("function", "last")
        )
        # A refusal older than the alert's last resolution was already declared over (a run succeeded,
        # a probe answered): re-opening for it would flap between the probe and this rule.
        settled = Alert.objects.filter(key=auth_key(site.slug), status=Alert.Status.RESOLVED).aggregate(
            at=Max("resolved_at")
        )["at"]
        still = [
            r
            for r in refused
            if not (answered.get(r["function"]) and answered[r["function"]] > r["last"])
            and not (settled and r["last"] <= settled)
        ]
        recent = [r for r in still if r["last"] >= window_start]
        if not still or (not recent and alert is None):
            continue
        problems.append(_auth_problem(site, still, alert))
    return problems


def _auth_problem(site: MoodleSite, refused: list[dict], alert: Alert | None) -> Problem:
    calls = sum(r["calls"] for r in refused)
    codes = sorted({r["code"] for r in refused if r["code"]})
    functions = ", ".join(sorted(r["function"] for r in refused))
    token = site.active_token()
    masked = f"the token {token.masked}" if token else "the token"
    title = alert.title if alert else f"{site.name}: Moodle refuses {masked} ({', '.join(codes) or 'auth'})"
    detail = (
        alert.detail
        if alert
        else f"{counted(calls, 'call')} to {functions} {'was' if calls == 1 else 'were'} refused. "
        "Check the token in Moodle: expired, IP "
        "restriction, the service's functions, the token's user suspended or missing a capability."
    )
    standby = (
        ServiceToken.objects.filter(
            site=site,
            status=TokenStatus.STANDBY,
            last_verified_at__isnull=False,
            verify_error="",
            refused_at__isnull=True,
        )
        .order_by("-last_verified_at")
        .first()
    )
    if standby is not None:
        page = _url("sync:site_tokens", site.slug, fallback=f"/sites/{site.slug}/tokens/")
        offer = (
            f"A verified standby token {standby.masked} exists: if it should replace {masked}, promote it on "
            f"the token page ({page}). The hub never switches tokens by itself."
        )
        if offer not in detail:
            detail = f"{detail}\n\n{offer}"
    return Problem(auth_key(site.slug), AlertKind.AUTH_FAILURE, CRITICAL, title, detail, site=site)


def run_over_budget(now: datetime) -> list[Problem]:
    """A run still going after its site's time budget (the seed guide's "fails to complete")."""
    problems = []
    for run in SyncRun.objects.filter(status=RunStatus.RUNNING, started_at__isnull=False).select_related(
        "site"
    ):
        budget = run.site.run_time_budget
        if budget and run.started_at + budget < now:
            problems.append(
                Problem(
                    f"run_budget:{run.pk}",
                    AlertKind.RUN_BUDGET,
                    CRITICAL,
                    f"{run.site.name}: run #{run.pk} has been running longer than its {budget} budget",
                    f"Run #{run.pk} ({run.get_kind_display()}) started {{started}} "
                    f"and has done {run.progress_done} of {run.progress_total}. Open the run: if it is still "
                    "making progress Moodle is slow (check the breaker and latency); if not, see the Locks "
                    "page.",
                    site=run.site,
                    run=run,
                    times={"started": run.started_at},
                )
            )
    return problems


def _stuck_advice(run: SyncRun, now: datetime, locks: str) -> str:
    """What the buttons do for this run now: a run whose worker died is continued by the watchdog; one whose
    worker lives is waiting for something its events name, or stuck inside a call."""
    if run.heartbeat_at is None or (now - run.heartbeat_at).total_seconds() > settings.RUN_STALE_S:
        return (
            "Its worker shows no sign of life: the hub continues it on another worker once its lock expires "
            f"(see the Locks page, {locks}); Cancel ends it at once. If it stays like this, no worker is "
            "running: start one."
        )
    return (
        "Its worker is alive (last sign of life at {heartbeat}): the run's events say "
        "what it waits for (Moodle's breaker or maintenance, the site's call budget). Cancel ends it after "
        "the call in flight; if nothing moves, the worker's log shows where it hangs."
    )


def stuck_runs(now: datetime) -> list[Problem]:
    """A run in running that has not progressed for ALERT_STUCK_RUN_S: its worker likely died."""
    quiet = now - timedelta(seconds=settings.ALERT_STUCK_RUN_S)
    runs = (
        SyncRun.objects.filter(status=RunStatus.RUNNING, started_at__isnull=False)
        .annotate(progress=Coalesce("last_progress_at", "started_at"))
        .filter(progress__lt=quiet)
        .select_related("site")
    )
    locks = _url("sync:locks", fallback="/locks/")
    return [
        Problem(
            f"stuck_run:{run.pk}",
            AlertKind.STUCK_RUN,
            CRITICAL,
            f"{run.site.name}: run #{run.pk} made no progress for "
            f"{_minutes((now - run.progress).total_seconds())}",
            f"Run #{run.pk} is running but its last progress was at {{progress}}. "
            + _stuck_advice(run, now, locks),
            site=run.site,
            run=run,
            times={"progress": run.progress, "heartbeat": run.heartbeat_at},
        )
        for run in runs
    ]


def transient_rate(now: datetime) -> list[Problem]:
    """A sustained share of transient errors over the window (a single one a retry fixed is noise)."""
    since = now - timedelta(seconds=settings.ALERT_WINDOW_S)
    rows = (
        CallLog.objects.filter(started_at__gte=since)
        .exclude(outcome=SENDING)
        .values("site")
        .annotate(calls=Count("id"), transient=Count("id", filter=Q(outcome="transient")))
        .filter(calls__gte=settings.ALERT_TRANSIENT_MIN_CALLS, transient__gt=0)
    )
    sites = MoodleSite.objects.in_bulk([r["site"] for r in rows])
    problems = []
    for row in rows:
        rate = row["transient"] / row["calls"]
        if rate <= settings.ALERT_TRANSIENT_RATE:
            continue
        site = sites[row["site"]]
        problems.append(
            Problem(
                f"transient_rate:{site.slug}",
                AlertKind.TRANSIENT_RATE,
                WARNING,
                f"{site.name}: {rate:.0%} of Moodle calls failed transiently",
                f"{row['transient']} of {counted(row['calls'], 'call')} in the last "
                f"{_minutes(settings.ALERT_WINDOW_S)} were "
                f"timeouts, 5xx or connection errors (the threshold is {settings.ALERT_TRANSIENT_RATE:.0%}). "
                "Moodle or the network is struggling: check the site's load and the breaker; retries are "
                "absorbing what they can.",
                site=site,
            )
        )
    return problems


def token_expiry(now: datetime) -> list[Problem]:
    """A token within 30 days of its valid-until, again at 14, 7 and 1: one alert per threshold."""
    thresholds = sorted(settings.ALERT_TOKEN_EXPIRY_DAYS)
    if not thresholds:
        return []
    tokens = ServiceToken.objects.filter(
        status__in=[TokenStatus.ACTIVE, TokenStatus.STANDBY],
        valid_until__isnull=False,
        valid_until__lte=now + timedelta(days=thresholds[-1] + 1),
    ).select_related("site")
    problems = []
    for token in tokens:
        days = token.days_left(now)
        passed = [t for t in thresholds if days <= t]
        if not passed:
            continue
        threshold = passed[0]
        page = _url("sync:site_tokens", token.site.slug, fallback=f"/sites/{token.site.slug}/tokens/")
        when = "has expired" if days < 0 else f"expires in {counted(days, 'day')}"
        problems.append(
            Problem(
                f"token_expiry:{token.pk}:{threshold}",
                AlertKind.TOKEN_EXPIRY,
                CRITICAL if threshold <= 7 else WARNING,
                f"{token.site.name}: {token.get_status_display().lower()} token {token.masked} {when}",
                f"Valid until {{valid_until}}. Create a new token in Moodle, add it "
                f"as standby on the token page ({page}), verify and promote it, then revoke this one in "
                "Moodle.",
                site=token.site,
                times={"valid_until": token.valid_until},
            )
        )
    return problems


def breaker_open(now: datetime) -> list[Problem]:
    """A site's breaker open (or half-open, still probing) for longer than ALERT_BREAKER_OPEN_S."""
    limit = now - timedelta(seconds=settings.ALERT_BREAKER_OPEN_S)
    problems = []
    for site in MoodleSite.objects.all():
        latest = BreakerEvent.objects.filter(site=site).first()
        if latest is None or latest.new_state == "closed":
            continue
        closed = BreakerEvent.objects.filter(site=site, new_state="closed").first()
        later = (
            BreakerEvent.objects.filter(site=site, at__gt=closed.at)
            if closed
            else BreakerEvent.objects.filter(site=site)
        )
        opened = later.order_by("at").first() or latest
        if opened.at > limit:
            continue
        problems.append(
            Problem(
                f"breaker_open:{site.slug}",
                AlertKind.BREAKER_OPEN,
                CRITICAL,
                f"{site.name}: Moodle calls have been paused for "
                f"{_minutes((now - opened.at).total_seconds())}",
                "The circuit breaker opened at {opened} "
                f"({opened.reason or latest.reason or 'errors'}) "
                "and its probes keep failing. Check that Moodle is up (maintenance mode, database load); "
                "runs resume by themselves once a probe succeeds.",
                site=site,
                times={"opened": opened.at},
            )
        )
    return problems


def stale_locks(now: datetime) -> list[Problem]:
    """A run lock whose owner stopped heart-beating: every later run of the site waits behind it."""
    client = shared_redis()
    locks = _url("sync:locks", fallback="/locks/")
    problems = []
    for site in MoodleSite.objects.all():
        info = lock_info(client, site.slug)
        if info is None or not info.is_stale(info.ttl_s / 4):
            continue
        problems.append(
            Problem(
                f"stale_lock:{site.slug}",
                AlertKind.STALE_LOCK,
                CRITICAL,
                f"{site.name}: the run lock's owner stopped heart-beating",
                f"Run #{info.run_id} holds the lock from {info.host} (pid {info.pid}); its last heartbeat "
                f"was {_minutes(info.heartbeat_age())} ago. If that worker is gone, break the lock on the "
                f"Locks page ({locks}); otherwise it expires by itself within {info.ttl_s:.0f} s.",
                site=site,
            )
        )
    return problems


def schedules(now: datetime) -> list[Problem]:
    """A scheduled sync that beat did not send at all, or that did not start within ALERT_START_DRIFT_S of
    being sent (the seed guide's "a last-run timestamp written at start lies": we look at the runs)."""
    drift = timedelta(seconds=settings.ALERT_START_DRIFT_S)
    sites = {s.slug: s for s in MoodleSite.objects.filter(enabled=True)}
    problems = []
    real_now = timezone.now()
    for task in PeriodicTask.objects.filter(task="sync.scheduled_sync", enabled=True):
        kwargs = json.loads(task.kwargs or "{}")
        site = sites.get(kwargs.get("site_slug"))
        if site is None or (task.one_off and task.total_run_count) or (task.expires and task.expires < now):
            continue
        if task.start_time and task.start_time > now:
            continue
        reference = task.last_run_at or task.date_changed
        due = real_now + task.schedule.remaining_estimate(reference)
        if now > due + drift:
            problems.append(
                Problem(
                    f"schedule_missed:{task.pk}",
                    AlertKind.SCHEDULE_MISSED,
                    CRITICAL,
                    f"{site.name}: “{task.name}” did not run",
                    "It was due at {due} and the scheduler has not sent it"
                    f"{' (last sent {last_sent})' if task.last_run_at else ''}. "
                    "Check that celery beat is running and the schedule is enabled in the admin.",
                    site=site,
                    times={"due": due, "last_sent": task.last_run_at},
                )
            )
            continue
        late, times = _late_start(task, site, kwargs.get("kind", "incremental"), now, drift)
        if late:
            problems.append(
                Problem(
                    f"schedule_late:{task.pk}",
                    AlertKind.SCHEDULE_LATE,
                    WARNING,
                    f"{site.name}: “{task.name}” did not start on time",
                    late,
                    site=site,
                    times=times,
                )
            )
    return problems


def _late_start(
    task, site: MoodleSite, kind: str, now: datetime, drift: timedelta
) -> tuple[str, dict[str, datetime]]:
    """Why a sent schedule has not started on time ("" when it has), and the instants the text names."""
    sent = task.last_run_at
    if sent is None or now - sent <= drift:
        return "", {}
    run = (
        SyncRun.objects.filter(
            site=site, kind=kind, trigger=RunTrigger.SCHEDULE, created_at__gte=sent - timedelta(minutes=1)
        )
        .order_by("created_at")
        .first()
    )
    if run is None:
        return (
            "The scheduler sent it at {sent} but no worker has picked it up. Check that a celery "
            "worker is running and the queue is not backed up."
        ), {"sent": sent}
    if run.status == RunStatus.SKIPPED:
        return "", {}
    if run.started_at is None:
        queued = f"Run #{run.pk} was queued at {{queued}} and has not started: is a worker free?"
        return queued, {"queued": run.created_at}
    if run.started_at - sent > drift:
        return (
            f"Run #{run.pk} started {_minutes((run.started_at - sent).total_seconds())} after it was due. "
            "The workers are too busy or were down; check the queue."
        ), {}
    return "", {}


def unavailable_sites(now: datetime) -> list[Problem]:
    """Moodle did not answer the site's probe: the site state's own finding, held for consecutive
    evaluations (a probe runs every few minutes, so one blip is seen once and pages nobody)."""
    sites = list(MoodleSite.objects.filter(enabled=True).prefetch_related("tokens"))
    states = site_states(sites, now=now, include_alerts=False)
    problems = []
    for site in sites:
        finding = next((f for f in states[site.pk].findings if f.key == "probe_unavailable"), None)
        if finding is None:
            continue
        detail, times = f"{finding.reason} {finding.next_step}", {}
        probe = states[site.pk].probe
        if probe is not None:
            # The finding writes the probe's time for a page ("05:06 CET"); an alert keeps it as data.
            shown = hhmm(probe.at)
            if shown in detail:
                detail, times = detail.replace(shown, "{probe_at}", 1), {"probe_at": probe.at}
        problems.append(
            Problem(
                site_unavailable_key(site.slug),
                AlertKind.SITE_UNAVAILABLE,
                WARNING,
                f"{site.name}: Moodle does not answer the hub's probe",
                detail,
                site=site,
                times=times,
            )
        )
    return problems


def guard_overrides(now: datetime) -> list[Problem]:
    """An admin went (or asks to go) past a site's blast-radius guard: kept in view while a second admin
    must confirm it, and for an hour after it was decided, so every channel hears of it once."""
    recent = now - timedelta(hours=1)
    overrides = GuardOverride.objects.filter(
        Q(status=OverrideStatus.PENDING) | Q(status=OverrideStatus.CONFIRMED, decided_at__gte=recent)
    ).select_related("site", "requested_by", "decided_by")
    problems = []
    for override in overrides:
        who = override.requested_by.get_username() if override.requested_by else "an admin"
        pending = override.status == OverrideStatus.PENDING
        problems.append(
            Problem(
                guard_override_key(override.pk),
                AlertKind.GUARD_OVERRIDE,
                CRITICAL,
                f"{override.site.name}: {who} "
                + ("asks to go" if pending else "went")
                + f" past the blast-radius guard for {counted(override.count, 'user', grouped=True)}",
                f"Override #{override.pk}: {override.count:,} of {override.linked_users:,} linked users, the "
                f"site's limit being {override.limit:,}. Reason: {override.reason}"
                + (" A second admin must confirm or reject it." if pending else ""),
                site=override.site,
            )
        )
    return problems


def scheduler_silent(now: datetime) -> list[Problem]:
    """Beat runs but its heartbeat task no longer finishes (if beat itself is dead this rule cannot run
    either: /healthz going 503 covers that)."""
    beat = Heartbeat.objects.filter(name=Heartbeat.SCHEDULER).first()
    age = beat.age_seconds(now) if beat else None
    if age is not None and age <= settings.SCHEDULER_STALE_AFTER_S:
        return []
    when = f"{_minutes(age)} ago" if age is not None else "never"
    return [
        Problem(
            "scheduler_silent",
            AlertKind.SCHEDULER_SILENT,
            CRITICAL,
            "The hub's scheduler heartbeat is silent",
            f"The heartbeat task last finished {when}. Scheduled syncs are probably not running: check "
            "celery beat and the workers' logs.",
        )
    ]


def workers_silent(now: datetime) -> list[Problem]:
    """No worker has refreshed its liveness key: queued runs and notices wait."""
    if next(iter(shared_redis().scan_iter(WORKER_KEYS, count=100)), None) is not None:
        return []
    return [
        Problem(
            "worker_silent",
            AlertKind.WORKER_SILENT,
            CRITICAL,
            "No hub worker is alive",
            "No celery worker has reported in the last "
            f"{_minutes(settings.WORKER_HEARTBEAT_TTL_S)}. Runs, probes and notices are not processed: start "
            "or restart the workers.",
        )
    ]


RULES: list[Rule] = [
    Rule("auth:", AlertKind.AUTH_FAILURE, auth_failures, immediate=True),
    Rule("run_budget:", AlertKind.RUN_BUDGET, run_over_budget),
    Rule("stuck_run:", AlertKind.STUCK_RUN, stuck_runs),
    Rule("transient_rate:", AlertKind.TRANSIENT_RATE, transient_rate),
    Rule("token_expiry:", AlertKind.TOKEN_EXPIRY, token_expiry, immediate=True),
    Rule("breaker_open:", AlertKind.BREAKER_OPEN, breaker_open),
    Rule("stale_lock:", AlertKind.STALE_LOCK, stale_locks),
    Rule("schedule_missed:", AlertKind.SCHEDULE_MISSED, schedules),
    Rule("schedule_late:", AlertKind.SCHEDULE_LATE, schedules),
    Rule("site_unavailable:", AlertKind.SITE_UNAVAILABLE, unavailable_sites),
    Rule("guard_override:", AlertKind.GUARD_OVERRIDE, guard_overrides, immediate=True),
    Rule("scheduler_silent", AlertKind.SCHEDULER_SILENT, scheduler_silent),
    Rule("worker_silent", AlertKind.WORKER_SILENT, workers_silent),
]


# -- evaluation ---------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    problems: int = 0
    raised: int = 0
    resolved: int = 0
    failed_rules: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = (
            f"{counted(self.problems, 'problem')}, {counted(self.raised, 'alert')} raised or repeated, "
            f"{self.resolved} resolved"
        )
        return text + (
            f"; rules that could not look: {', '.join(self.failed_rules)}" if self.failed_rules else ""
        )


def evaluate(now: datetime | None = None, rules: list[Rule] | None = None) -> Evaluation:
    """Run every rule once: count each problem's consecutive sightings, raise what held long enough,
    resolve what cleared. A rule that fails (Redis down) leaves its alerts as they are."""
    now = now or timezone.now()
    rules = RULES if rules is None else rules
    seen: dict[str, tuple[Rule, Problem]] = {}
    failed: list[str] = []
    results: dict[Callable, list[Problem]] = {}
    for rule in rules:
        try:
            if rule.check not in results:  # one check may serve two rules (schedules)
                results[rule.check] = rule.check(now)
        except Exception:
            logger.exception("alert rule %s could not run", rule.kind)
            failed.append(rule.kind)
            continue
        for problem in results[rule.check]:
            if problem.key.startswith(rule.prefix):
                seen[problem.key] = (rule, problem)

    result = Evaluation(problems=len(seen), failed_rules=tuple(failed))
    for key, (rule, problem) in seen.items():
        if _sightings(key, now) >= (1 if rule.immediate else settings.ALERT_CONSECUTIVE):
            raise_alert(
                key,
                kind=problem.kind,
                title=problem.title[:300],
                detail=problem.detail,
                site=problem.site,
                run=problem.run,
                severity=problem.severity,
                times=problem.times,
            )
            result.raised += 1

    for rule in rules:
        if rule.kind in failed:
            continue
        RuleState.objects.filter(key__startswith=rule.prefix).exclude(key__in=seen).delete()
        stale = Alert.objects.filter(key__startswith=rule.prefix, kind=rule.kind).exclude(
            status=Alert.Status.RESOLVED
        )
        for key in stale.exclude(key__in=seen).values_list("key", flat=True):
            result.resolved += _clear(key, seen)
    return result


def _sightings(key: str, now: datetime) -> int:
    """Count one more consecutive sighting of `key`'s condition; returns the run length."""
    state, _ = RuleState.objects.get_or_create(
        key=key, defaults={"failures": 0, "since": now, "checked_at": now}
    )
    RuleState.objects.filter(pk=state.pk).update(failures=F("failures") + 1, checked_at=now)
    state.refresh_from_db(fields=["failures"])
    return state.failures


def _clear(key: str, seen: dict) -> int:
    if key.startswith("token_expiry:"):
        token_prefix = key.rsplit(":", 1)[0] + ":"
        if any(k.startswith(token_prefix) for k in seen):
            return supersede_alert(key)  # a later threshold replaced it; the token did not get better
    return resolve_alert(key)
