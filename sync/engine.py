"""A sync run from start to finish: claim it, take the site's lock, check the token, read the source, work
the pending records batch by batch, and end with an honest status.

    plan (sync/planning.py)  ->  batches (sync/batch.py)  ->  commit per batch (sync/state.py)

Stops and pauses:
- auth or configuration failure: the run is aborted at once, with no further call; the batch's records
  not yet written stay pending; an alert is raised;
- circuit breaker open or throttle wait exhausted: the run waits, then retries the batch (the next call
  is the breaker's probe), or fails when its time budget is spent;
- Moodle in maintenance: the run waits for a long backoff and tries again;
- an operator's pause or cancel: honoured at the next batch boundary, after the batch in flight is
  committed. Resuming continues with the records still pending.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import httpx
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from monitoring.alerts import raise_alert, resolve_alert
from monitoring.models import CallLog

from .batch import BatchProcessor, Interrupted
from .choices import (
    DeadLetterStatus,
    ResolutionStatus,
    RunControl,
    RunKind,
    RunStatus,
    RunTrigger,
    SyncStatus,
)
from .connect import NoActiveToken, client_for, shared_redis
from .locks import LockLost, RunLock
from .mapping import Mapping
from .models import MoodleSite, RunEvent, SyncRecord, SyncRun
from .moodle import errors
from .moodle.client import MoodleClient, Preflight
from .moodle.errors import MoodleError
from .planning import Planner
from .reconcile import Reconciler
from .resolutions import apply_approved
from .sources import open_source
from .state import commit_batch, tally

logger = logging.getLogger(__name__)

# The functions a user sync calls; the pre-flight refuses to start without them.
SYNC_FUNCTIONS = (
    "core_webservice_get_site_info",
    "core_user_get_users_by_field",
    "core_user_get_users",
    "core_user_create_users",
    "core_user_update_users",
)


class RunStopped(Exception):
    """Ends the run with `status` and `reason`."""

    def __init__(self, status: str, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


def release_unfinished_work(run: SyncRun, reason: str) -> None:
    """A run that ended without doing all it was queued for hands its work back: approved resolutions it
    did not apply fail with the reason (they can be proposed again), dead letters it did not settle are
    open again (they can be retried or discarded)."""
    from .models import DeadLetter, Resolution

    Resolution.objects.filter(run=run, status=ResolutionStatus.APPROVED).update(
        status=ResolutionStatus.FAILED, outcome=f"not applied: run #{run.pk} ended ({reason or run.status})"
    )
    DeadLetter.objects.filter(retry_run=run, status=DeadLetterStatus.RETRYING).update(
        status=DeadLetterStatus.OPEN
    )


def queue_run(
    site: MoodleSite,
    kind: str = RunKind.INCREMENTAL,
    *,
    trigger: str = RunTrigger.MANUAL,
    user=None,
    dry_run: bool = False,
    source_file: str = "",
) -> SyncRun:
    """Record a run as queued; the caller sends its task (or executes it in-process)."""
    return SyncRun.objects.create(
        site=site, kind=kind, trigger=trigger, started_by=user, dry_run=dry_run, source_file=source_file
    )


def execute(
    run_id: int, *, transport: httpx.BaseTransport | None = None, sleep: Callable = time.sleep
) -> SyncRun:
    """Execute a queued or paused run. Does nothing for a run that ended or that another worker runs: a
    redelivered task is harmless."""
    run = SyncRun.objects.select_related("site").get(pk=run_id)
    if not run.start():
        return run
    return RunExecutor(run, transport=transport, sleep=sleep).execute()


class RunExecutor:
    """Carries one run through its phases. Separate from `execute` so tests can drive the phases."""

    def __init__(self, run: SyncRun, *, transport=None, sleep: Callable = time.sleep) -> None:
        self.run = run
        self.site = run.site
        self.transport = transport
        self.sleep = sleep
        self.deadline = time.monotonic() + self.site.run_time_budget.total_seconds()
        self.lock: RunLock | None = None

    # -- the whole run -----------------------------------------------------------------------------

    def execute(self) -> SyncRun:
        self.lock = RunLock(shared_redis(), self.site.slug, self.run.pk, ttl_s=settings.RUN_LOCK_TTL_S)
        if not self.lock.acquire():
            holder = self.lock.holder()
            reason = f"run #{holder} holds the lock of site {self.site.slug}"
            self.run.finish(RunStatus.SKIPPED, reason)
            self.event(f"Skipped: run #{holder} is already working on this site.", RunEvent.Level.WARNING)
            release_unfinished_work(self.run, reason)
            return self.run
        try:
            self._reap_orphans()
            self.event("Started" + (" (dry run: nothing is written to Moodle)" if self.run.dry_run else ""))
            with self._client() as client:
                check = self._preflight(client)
                if self.run.dry_run:
                    self._dry_run(client)
                elif self.run.kind == RunKind.RECONCILE:
                    Reconciler(self, client, check.userid).reconcile()
                elif self.run.kind == RunKind.RESOLUTION:
                    apply_approved(self, client)
                else:
                    if self.run.planned_at is None:
                        self._plan()
                    self._work(client)
            self._finish(RunStatus.SUCCEEDED, "")
        except RunStopped as stop:
            self._finish(stop.status, stop.reason)
        except LockLost as exc:
            self._finish(RunStatus.FAILED, f"{exc}; its last batch was not committed")
        except SoftTimeLimitExceeded:
            self._finish(
                RunStatus.FAILED, "the worker's time limit was reached; pending records stay pending"
            )
        except Exception as exc:
            logger.exception("run %s failed", self.run.pk)
            self._finish(RunStatus.FAILED, f"unexpected error: {type(exc).__name__}: {exc}")
        finally:
            self.lock.release()
        return self.run

    def _client(self) -> MoodleClient:
        try:
            return client_for(self.site, run=self.run, transport=self.transport, sleep=self.sleep)
        except NoActiveToken as exc:
            raise RunStopped(RunStatus.ABORTED, f"{exc}: add or promote a token on the site page") from None

    def _reap_orphans(self) -> None:
        """Runs of this site still marked running lost their worker: this run holds the lock now."""
        orphans = SyncRun.objects.filter(site=self.site, status=RunStatus.RUNNING).exclude(pk=self.run.pk)
        for orphan in orphans:
            orphan.finish(
                RunStatus.FAILED,
                f"its worker stopped without finishing (the site's lock expired); run #{self.run.pk} "
                "continues with the records it left pending",
            )

    def _finish(self, status: str, reason: str) -> None:
        calls = CallLog.objects.filter(run=self.run).count()
        SyncRun.objects.filter(pk=self.run.pk).update(calls=calls)
        self.run.refresh_from_db()
        self.run.finish(status, reason)
        level = (
            RunEvent.Level.INFO if status in (RunStatus.SUCCEEDED, RunStatus.PAUSED) else RunEvent.Level.ERROR
        )
        self.event(f"{self.run.get_status_display()}" + (f": {reason}" if reason else ""), level)
        if status == RunStatus.SUCCEEDED and not self.run.dry_run:
            resolve_alert(f"auth:{self.site.slug}")
            resolve_alert(f"config:{self.site.slug}")
        release_unfinished_work(self.run, reason)

    def event(self, message: str, level: str = RunEvent.Level.INFO) -> None:
        RunEvent.objects.create(run=self.run, level=level, message=message)

    # -- phases -----------------------------------------------------------------------------------

    def _preflight(self, client: MoodleClient) -> Preflight:
        check = self._patiently(lambda: client.preflight(SYNC_FUNCTIONS))
        if check.ok:
            return check
        problems = "; ".join(check.problems) or "the pre-flight check failed"
        if check.error_category == errors.AUTH:
            self._stop_for_auth(problems, None)
        if check.error_category:
            raise RunStopped(RunStatus.FAILED, f"pre-flight failed: {problems}")
        raise self._config_failure(problems)  # missing functions, or look-ups that would be blind

    def _source_and_mapping(self):
        source_config = self.site.source
        config = dict(source_config.config)
        if self.run.source_file:
            config["path"] = self.run.source_file
        return open_source({"kind": source_config.kind, **config}), Mapping.from_config(source_config.mapping)

    def _plan(self) -> None:
        source, mapping = self._source_and_mapping()
        bootstrap = self.run.kind == RunKind.BOOTSTRAP
        planner = Planner(self.run, mapping, bootstrap=bootstrap)
        for _ in planner.stage(source.records()):
            self._check_control()
        planner.stage_removals(self.site.source.removed_policy)
        counts = planner.counts
        total = SyncRecord.objects.filter(site=self.site, sync_status=SyncStatus.PENDING).count()
        SyncRun.objects.filter(pk=self.run.pk).update(
            seen=counts.seen,
            changed=counts.changed + counts.removed,
            unchanged=counts.unchanged,
            skipped=counts.skipped,
            errors=F("errors") + counts.invalid,
            progress_total=total,
            planned_at=timezone.now(),
        )
        self.event(
            f"Read {counts.seen} source records: {counts.changed} new or changed, "
            f"{counts.unchanged} unchanged, "
            f"{counts.invalid} invalid, {counts.removed} left the source; {total} to send."
        )
        if counts.removal_blocked:
            raise_alert(
                f"blast_radius:{self.site.slug}",
                kind="blast_radius",
                site=self.site,
                run=self.run,
                title=f"{self.site.name}: {counts.removal_blocked} people left the source; "
                "nobody was suspended",
                detail=counts.examples["removal_blocked"][0],
            )

    def _work(self, client: MoodleClient) -> None:
        mapping = Mapping.from_config(self.site.source.mapping)
        processor = BatchProcessor(client, match_key=mapping.match_key, auth=mapping.auth)
        while True:
            self._check_control()
            batch = list(
                SyncRecord.objects.filter(site=self.site, sync_status=SyncStatus.PENDING).order_by("pk")[
                    : self.site.batch_size
                ]
            )
            if not batch:
                return
            self._run_batch(processor, batch)

    def _run_batch(self, processor: BatchProcessor, batch: list[SyncRecord]) -> None:
        while True:
            try:
                results = processor.process(batch)
            except Interrupted as stop:
                commit_batch(self.run, batch, stop.results, self.lock)
                batch = [r for r in batch if r.external_id not in stop.results]
                self._handle_interruption(stop.cause, batch)
                continue  # waited: try what is left of the batch
            commit_batch(self.run, batch, results, self.lock)
            return

    def _handle_interruption(self, cause: Exception, left: list[SyncRecord]) -> None:
        if isinstance(cause, MoodleError) and cause.category == errors.AUTH:
            self._stop_for_auth(str(cause), cause)
        if isinstance(cause, MoodleError) and cause.category == errors.CONFIG:
            raise self._config_failure(str(cause))
        if isinstance(cause, MoodleError) and cause.category == errors.MAINTENANCE:
            self._wait(
                settings.MAINTENANCE_BACKOFF_S,
                f"Moodle is in maintenance mode ({cause.errorcode or 'HTTP 503'})",
            )
            return
        if isinstance(cause, errors.BreakerOpen):
            delay = max(1.0, (cause.next_probe_at or time.time() + 5) - time.time())
            self._wait(delay, f"Moodle's circuit breaker is open: {cause.reason}")
            return
        if isinstance(cause, MoodleError) and cause.category == errors.TRANSIENT:
            # A look-up that failed after its retries (writes become dead letters instead): back off and try
            # the batch again; if Moodle keeps failing, the breaker opens and the waits grow.
            self._wait(settings.TRANSIENT_BACKOFF_S, f"Moodle kept failing a look-up: {cause}")
            return
        if isinstance(cause, errors.ThrottleTimeout):
            self._wait(5, "the site's call budget is in use by other runs")
            return
        raise cause  # a client fault outside a write: a bug or a misconfiguration, not data

    def _dry_run(self, client: MoodleClient) -> None:
        source, mapping = self._source_and_mapping()
        planner = Planner(self.run, mapping, bootstrap=self.run.kind == RunKind.BOOTSTRAP, persist=False)
        processor = BatchProcessor(client, match_key=mapping.match_key, auth=mapping.auth, dry_run=True)
        totals: Counter = Counter()
        examples: dict[str, list[str]] = {}

        def classify(records: list[SyncRecord]) -> None:
            for start in range(0, len(records), self.site.batch_size):
                batch = records[start : start + self.site.batch_size]
                results = self._patiently(lambda b=batch: processor.process(b))
                totals.update(tally(results))
                for external_id, result in results.items():
                    key = result.action if result.status == SyncStatus.OK else result.status
                    bucket = examples.setdefault(key, [])
                    if len(bucket) < 5:
                        bucket.append(f"{external_id}: {result.message or result.action}")

        for chunk in planner.stage(source.records()):
            self._check_control()
            classify(chunk)
        classify(planner.stage_removals(self.site.source.removed_policy))
        counts = planner.counts
        writes = totals["created"] + totals["updated"] + totals["suspended"]
        plan = {
            "seen": counts.seen,
            "would_create": totals["created"],
            "would_update": totals["updated"],
            "would_suspend": totals["suspended"],
            "already_in_step": totals["unchanged"] + counts.unchanged,
            "conflicts": totals["conflicts"],
            "invalid": counts.invalid + totals["errors"],
            "skipped": counts.skipped,
            "removal_blocked": counts.removal_blocked,
            "examples": {**counts.examples, **examples},
            "estimate": self._estimate(counts.changed + counts.removed, writes),
        }
        SyncRun.objects.filter(pk=self.run.pk).update(
            plan=plan,
            seen=counts.seen,
            changed=counts.changed,
            unchanged=counts.unchanged,
            skipped=counts.skipped,
        )

    def _estimate(self, to_send: int, writes: int) -> dict:
        """Calls and minutes the real run would take at the site's throttle (look-ups + writes per batch)."""
        batches = -(-to_send // self.site.batch_size) if to_send else 0
        calls = 2 + batches * 3 + -(-writes // self.site.batch_size)
        per_second = min(self.site.calls_per_minute / 60, 1000 / max(self.site.min_spacing_ms, 1))
        return {"calls": calls, "minutes": round(calls / per_second / 60, 1)}

    # -- stops and waits --------------------------------------------------------------------------

    def _check_control(self) -> None:
        self.run.refresh_from_db(fields=["control", "started_by"])
        if self.run.control == RunControl.PAUSE:
            SyncRun.objects.filter(pk=self.run.pk).update(control="")
            raise RunStopped(
                RunStatus.PAUSED, "paused by an operator; resume continues with the pending records"
            )
        if self.run.control == RunControl.CANCEL:
            SyncRun.objects.filter(pk=self.run.pk).update(control="")
            raise RunStopped(RunStatus.ABORTED, "cancelled by an operator; unsent records stay pending")
        if time.monotonic() > self.deadline:
            raise RunStopped(
                RunStatus.FAILED,
                f"its time budget ({self.site.run_time_budget}) was spent; unsent records stay pending",
            )

    def _wait(self, seconds: float, why: str) -> None:
        """Wait inside the run (it keeps its lock), checking for pause, cancel and the time budget."""
        until = timezone.now() + timedelta(seconds=seconds)
        SyncRun.objects.filter(pk=self.run.pk).update(
            abort_reason=f"waiting until {until:%H:%M:%S} UTC: {why}"
        )
        self.event(f"Waiting {seconds:.0f} s: {why}", RunEvent.Level.WARNING)
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._check_control()
            self.sleep(min(left, 2.0))
        SyncRun.objects.filter(pk=self.run.pk).update(abort_reason="")

    def _patiently(self, call: Callable):
        """A read-only call (pre-flight, dry-run look-ups) that waits out the breaker and maintenance."""
        while True:
            try:
                return call()
            except Interrupted as stop:
                self._handle_interruption(stop.cause, [])
            except (MoodleError, errors.BreakerOpen, errors.ThrottleTimeout) as cause:
                self._handle_interruption(cause, [])

    def _stop_for_auth(self, problem: str, error: MoodleError | None) -> None:
        self.run.refresh_from_db()
        token = self.site.active_token()
        masked = token.masked if token else "(none)"
        code = f" ({error.errorcode})" if error and error.errorcode else ""
        pending = SyncRecord.objects.filter(site=self.site, sync_status=SyncStatus.PENDING).count()
        done = (
            f"Run #{self.run.pk} stopped after {self.run.progress_done} of {self.run.progress_total} people; "
        )
        reason = f"Moodle rejected the token {masked}{code}: {problem}"
        raise_alert(
            f"auth:{self.site.slug}",
            kind="auth_failure",
            site=self.site,
            run=self.run,
            title=f"{self.site.name}: Moodle rejected the token {masked} at {timezone.now():%H:%M} UTC{code}",
            detail=done
            + f"{pending} are pending and will be sent on the next run. Check the token (expired, IP "
            "restriction, service functions, user suspended or missing a capability), then resume.",
        )
        raise RunStopped(RunStatus.ABORTED, reason)

    def _config_failure(self, problem: str) -> RunStopped:
        raise_alert(
            f"config:{self.site.slug}",
            kind="config",
            site=self.site,
            run=self.run,
            title=f"{self.site.name}: the Moodle service is not set up for the hub",
            detail=f"{problem}. Add the missing functions to the external service in Moodle, then resume.",
        )
        return RunStopped(RunStatus.ABORTED, problem)
