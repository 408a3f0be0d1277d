"""A sync run from start to finish: claim it, take the site's lock, check the token, read the source, work
the pending records batch by batch, and end with an honest status.

    plan (sync/planning.py)  ->  batches (sync/batch.py)  ->  commit per batch (sync/state.py)

How a run ends:
- succeeded: everything it was asked to do is done;
- finished with problems: it ran to the end but left work for a person (dead letters, records in error,
  conflicts, or suspensions the blast-radius guard held back);
- aborted: the token was refused or the Moodle service lacks a function; no call after that, the batch's
  unsent records stay pending, an alert is raised, and the run resumes once it is fixed;
- failed: the source could not be read, the time budget was spent, the lock was lost, or the hub hit an
  unexpected problem; pending records stay pending for the next run;
- cancelled or paused: an operator asked, honoured at the next batch boundary, or within a second or
  PULSE_ROWS source rows while the source is read (sync/run/planning.py);
- skipped: another run holds the site's lock. A resolution run never skips: it waits for the lock and
  applies everything approved meanwhile, so no approval is lost to a race.

Waits (breaker open, maintenance, a look-up failing every retry) happen inside the run, which keeps its
lock and checks for pause, cancel and its time budget while it waits.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import httpx
import redis as redis_lib
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, connections
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from monitoring.alerts import raise_alert, resolve_alert
from monitoring.kinds import AlertKind, auth_key, blast_radius_key, config_key
from monitoring.models import CallLog

from ..choices import RunControl, RunKind, RunStatus, SyncStatus
from ..dispatch import send_run
from ..models import RunEvent, SyncRecord, SyncRun
from ..moodle import errors
from ..moodle.client import MEMBERSHIP_FUNCTIONS, SYNC_FUNCTIONS, MoodleClient, Preflight
from ..moodle.errors import MoodleError
from ..sources import open_source
from ..sources.base import SourceConfigError, SourceError
from ..words import counted
from .apply_resolutions import apply_approved
from .batch import BatchProcessor, Interrupted, Result, StormStop
from .connect import NoActiveToken, client_for, shared_redis
from .context import RunStopped
from .events import EventPhase
from .locks import LockLost, RunLock
from .membership_dry_run import check_targets
from .membership_reconcile import MembershipReconciler
from .memberships import MembershipPhase, membership_calls
from .planning import Planner, expected_rows
from .reconcile import Reconciler
from .sizing import remember_pace, remembered_pace
from .state import commit_batch, fence, tally
from .view import BlindLookups, LookupProof

logger = logging.getLogger(__name__)

# Kinds that wait for a busy lock instead of being skipped: what they carry was decided by a person.
# Events wait too: a change sent while a long run holds the site is applied after it, never dropped.
WAITS_FOR_LOCK = (RunKind.RESOLUTION, RunKind.EVENT)
# The hub's own services failing under a run: waited for, not fatal (see _run_phases_through_blinks).
BLINKS = (OperationalError, InterfaceError, redis_lib.ConnectionError, redis_lib.TimeoutError)
HUB_SERVICE_POLL_S = 2.0


class HubServiceDown(Exception):
    """The hub's database or Redis stayed unreachable longer than a run waits for them."""


def _hub_services_answer() -> bool:
    """Whether the database and Redis answer again (a broken connection is dropped and made anew)."""
    try:
        if not connection.in_atomic_block:  # (a test's transaction is not ours to drop)
            connection.close()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        shared_redis().ping()
    except (DatabaseError, redis_lib.RedisError):
        return False
    return True


def execute(
    run_id: int, *, transport: httpx.BaseTransport | None = None, sleep: Callable = time.sleep
) -> SyncRun | None:
    """Execute a queued run. Does nothing for a run that ended, that another worker runs, or that no
    longer exists: a redelivered task is harmless."""
    run = SyncRun.objects.select_related("site").filter(pk=run_id).first()
    if run is None or run.status != RunStatus.QUEUED:
        return run
    return RunExecutor(run, transport=transport, sleep=sleep).execute()


class RunExecutor:
    """Carries one run through its phases; implements the RunContext seam (sync/run/context.py) that the
    phases riding on a run (reconciliation, applying resolutions) use."""

    def __init__(self, run: SyncRun, *, transport=None, sleep: Callable = time.sleep) -> None:
        self.run = run
        self.site = run.site
        self.transport = transport
        self.sleep = sleep
        self.deadline = time.monotonic() + self.site.run_time_budget.total_seconds()
        self.lock: RunLock | None = None
        self.proof: LookupProof | None = None  # set by the pre-flight when a look-up must carry it

    # -- the whole run -----------------------------------------------------------------------------

    def execute(self) -> SyncRun:
        # The lock first, then the claim: a run is never seen running without holding its site's lock.
        self.lock = RunLock(
            shared_redis(),
            self.site.slug,
            self.run.pk,
            ttl_s=settings.RUN_LOCK_TTL_S,
            on_beat=self._heartbeat,
        )
        if not self.lock.acquire():
            self._lock_busy(self.lock.holder())
            return self.run
        if not self.run.start():
            self.lock.release()  # another worker had it, or it ended meanwhile
            return self.run
        try:
            self._run_phases_through_blinks()
            self._finish(RunStatus.SUCCEEDED, "")
        except RunStopped as stop:
            self._finish(stop.status, stop.reason, stop.category)
        except LockLost as exc:
            self._finish(RunStatus.FAILED, f"{exc}; its last batch was not committed")
        except SoftTimeLimitExceeded:
            self._finish(
                RunStatus.FAILED, "the worker's time limit was reached; pending records stay pending"
            )
        except (SourceError, SourceConfigError) as exc:
            self._finish(RunStatus.FAILED, f"the source could not be read: {exc}")
        except HubServiceDown as exc:
            self._finish(RunStatus.FAILED, f"{exc}; pending records stay pending and the next run continues")
        except Exception:
            logger.exception("run %s failed", self.run.pk)
            self._finish(
                RunStatus.FAILED,
                "the run stopped on an unexpected problem inside the hub "
                "(the worker's log has the details for a developer); pending records stay pending and the "
                "next run continues with them",
            )
        finally:
            try:
                self.lock.release()
            except redis_lib.RedisError:
                logger.warning("run %s: its lock could not be released; it expires by itself", self.run.pk)
            self._kick_waiting_runs()
        return self.run

    def _run_phases_through_blinks(self) -> None:
        """The run's phases. When the hub's own database or Redis blinks (a restart, a failover), the run
        waits for them like it waits for a breaker, then goes on from what is committed: records of the
        interrupted batch are still pending, and the next look-ups find what Moodle did with them."""
        while True:
            try:
                return self._run_phases()
            except BLINKS as exc:
                self._wait_for_hub_services(exc)

    def _wait_for_hub_services(self, cause: Exception) -> None:
        what = "Redis" if isinstance(cause, redis_lib.RedisError) else "database"
        first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
        logger.warning("run %s: the hub's %s failed (%s); waiting for it", self.run.pk, what, first_line)
        waited = 0.0
        while not _hub_services_answer():
            if waited >= settings.HUB_SERVICE_WAIT_S:
                raise HubServiceDown(
                    f"the hub's {what} did not answer for {settings.HUB_SERVICE_WAIT_S} s ({first_line})"
                )
            self.sleep(HUB_SERVICE_POLL_S)
            waited += HUB_SERVICE_POLL_S
        if not self.lock.renew():  # Redis may have come back empty: the lock is taken back, if still free
            raise LockLost(f"run #{self.run.pk} lost the lock of site {self.site.slug} while {what} was down")
        self._reload()  # goes on from what is committed: a source already read is not read again
        self.event(
            f"The hub's {what} failed ({first_line}); the run waited for it and goes on.",
            RunEvent.Level.WARNING,
        )

    def _heartbeat(self) -> None:
        """The run's sign of life in the database, from the lock's heartbeat thread (its own connection,
        closed each time so a database restart costs one beat). The watchdog continues a run without one."""
        try:
            SyncRun.objects.filter(pk=self.run.pk, claim=self.run.claim).update(heartbeat_at=timezone.now())
        finally:
            connections.close_all()

    def _lock_busy(self, holder: int | None) -> None:
        """Another run works on the site. A resolution run waits for it; a sync is skipped (the next
        schedule comes soon). If the holder is this very run, a duplicate task found it: nothing to do."""
        if holder == self.run.pk:
            return
        if self.run.kind in WAITS_FOR_LOCK:
            self._wait_for_lock(holder)
            return
        reason = f"run #{holder} holds the lock of site {self.site.slug}"
        skipped = SyncRun.objects.filter(pk=self.run.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.SKIPPED, finished_at=timezone.now(), abort_reason=reason
        )
        self.run.refresh_from_db()
        if skipped:
            self.event(f"Skipped: run #{holder} is already working on this site.", RunEvent.Level.WARNING)
            self.run.release_unfinished_work(reason)

    def _run_phases(self) -> None:
        self._reap_orphans()
        self.event("Started" + (" (dry run: nothing is written to Moodle)" if self.run.dry_run else ""))
        with self._client() as client:
            check = self._preflight(client)
            if self.run.dry_run:
                self._dry_run(client)
            elif self.run.kind == RunKind.RECONCILE:
                Reconciler(self, client, check.userid).reconcile()
                if self.site.memberships.exists():
                    rules = self.site.mapping().memberships
                    MembershipReconciler(
                        self, client, cohort_category=rules.cohort_category, on_leave=rules.on_leave
                    ).reconcile()
            elif self.run.kind == RunKind.RESOLUTION:
                apply_approved(self, client)
            elif self.run.kind == RunKind.EVENT:
                EventPhase(self, client).work()
            else:
                if self.run.planned_at is None:
                    self._plan()
                self.work(client)
                self.send_memberships(client)

    def send_memberships(self, client: MoodleClient) -> None:
        """After the people, their courses and cohorts (also memberships left pending by an earlier run)."""
        rules = self.site.mapping().memberships
        if rules.empty and not self.site.memberships.exists():
            return
        MembershipPhase(self, client, on_leave=rules.on_leave, cohort_category=rules.cohort_category).work()

    def _wait_for_lock(self, holder: int | None) -> None:
        """Stay queued and try again later (or as soon as the holder releases the lock)."""
        waiting = f"waiting for run #{holder} to finish on this site; it starts right after"
        first = not self.run.abort_reason.startswith("waiting for run")
        SyncRun.objects.filter(pk=self.run.pk, status=RunStatus.QUEUED).update(abort_reason=waiting)
        self.run.refresh_from_db()
        if first:
            self.event(f"Waiting: run #{holder} holds the site's lock.")
        send_run(self.run.pk, countdown=settings.LOCK_WAIT_RETRY_S)

    def _kick_waiting_runs(self) -> None:
        """Runs that wait for this site's lock start now rather than at their next retry."""
        try:
            waiting = SyncRun.objects.filter(
                site=self.site, status=RunStatus.QUEUED, kind__in=WAITS_FOR_LOCK
            ).values_list("pk", flat=True)
            for run_id in waiting:
                send_run(run_id)
        except Exception:
            # Their retry is already scheduled; a broker blip only delays them.
            logger.exception("could not wake the runs waiting for site %s", self.site.slug)

    def _client(self) -> MoodleClient:
        try:
            return client_for(self.site, run=self.run, transport=self.transport, sleep=self.sleep)
        except NoActiveToken as exc:
            raise RunStopped(
                RunStatus.ABORTED, f"{exc}: add or promote a token on the site's token page", errors.AUTH
            ) from None

    def _reap_orphans(self) -> None:
        """Runs of this site still marked running lost their worker: this run holds the lock now."""
        orphans = SyncRun.objects.filter(site=self.site, status=RunStatus.RUNNING).exclude(pk=self.run.pk)
        for orphan in orphans:
            orphan.finish(
                RunStatus.FAILED,
                f"its worker stopped without finishing (the site's lock expired); run #{self.run.pk} "
                "continues with the records it left pending",
            )
            orphan.release_unfinished_work(orphan.abort_reason)

    def _reload(self) -> None:
        """Read the run again, keeping this worker's claim: the fence is what this worker was given."""
        claim = self.run.claim
        self.run.refresh_from_db()
        self.run.claim = claim

    def _finish(self, status: str, reason: str, category: str = "") -> None:
        self.count_calls()
        self._reload()
        if status == RunStatus.SUCCEEDED and not self.run.dry_run and self.run.left_behind():
            status = RunStatus.PROBLEMS
            reason = f"it left {self.run.left_behind_text()} for a person; the counters link to them"
        if not self.run.finish(status, reason):
            logger.warning("run %s was handed to another worker; this one leaves it as it is", self.run.pk)
            return
        SyncRun.objects.filter(pk=self.run.pk).update(stop_category=category)
        self.run.stop_category = category
        level = {
            RunStatus.SUCCEEDED: RunEvent.Level.INFO,
            RunStatus.PAUSED: RunEvent.Level.INFO,
            RunStatus.CANCELLED: RunEvent.Level.INFO,
            RunStatus.PROBLEMS: RunEvent.Level.WARNING,
        }.get(status, RunEvent.Level.ERROR)
        link, label = "", ""
        if category == errors.AUTH:
            link, label = reverse("sync:site_tokens", args=[self.site.slug]), "Open the token page"
        self.event(f"{self.run.get_status_display()}" + (f": {reason}" if reason else ""), level, link, label)
        if status in (RunStatus.SUCCEEDED, RunStatus.PROBLEMS) and not self.run.dry_run:
            resolve_alert(auth_key(self.site.slug))
            resolve_alert(config_key(self.site.slug))
        self.run.release_unfinished_work(reason)

    # -- the seam the phases use -------------------------------------------------------------------

    def event(
        self, message: str, level: str = RunEvent.Level.INFO, link: str = "", link_label: str = ""
    ) -> None:
        RunEvent.objects.create(run=self.run, level=level, message=message, link=link, link_label=link_label)

    def fence(self) -> None:
        fence(self.run, self.lock)

    def count_calls(self) -> None:
        SyncRun.objects.filter(pk=self.run.pk).update(calls=CallLog.objects.filter(run=self.run).count())

    def source_and_mapping(self):
        source_config = self.site.source
        config = dict(source_config.config)
        if self.run.source_file:
            config["path"] = self.run.source_file
        return open_source({"kind": source_config.kind, **config}), self.site.mapping()

    def work(self, client: MoodleClient) -> None:
        """Send the site's pending records, batch by batch, until none is left. The batch after the
        current one is read ahead, so its look-ups can go out beside the current batch's creates."""
        processor = self.batch_processor(client)
        processor.sizer.resume(remembered_pace(shared_redis(), self.run.pk))  # continued: as it was sized
        batch = self._pending_batch()
        while batch:
            self.check_control()
            upcoming = self._pending_batch(after=batch[-1].pk)
            self.run_batch(processor, batch, upcoming)
            remember_pace(shared_redis(), self.run.pk, processor.sizer.seen)
            # Normally what was read ahead is what is pending now; if not (records left pending by an
            # interruption), read again.
            batch = upcoming if self._pending_ids() == [r.pk for r in upcoming] else self._pending_batch()

    def _pending(self, after: int = 0):
        pending = SyncRecord.objects.filter(site=self.site, sync_status=SyncStatus.PENDING, pk__gt=after)
        return pending.order_by("pk")[: self.site.batch_size]

    def _pending_batch(self, after: int = 0) -> list[SyncRecord]:
        return list(self._pending(after))

    def _pending_ids(self) -> list[int]:
        return list(self._pending().values_list("pk", flat=True))

    def run_batch(
        self, processor: BatchProcessor, batch: list[SyncRecord], upcoming: list[SyncRecord] | None = None
    ) -> dict[str, Result]:
        """One batch through Moodle and committed, waiting out interruptions; the results by external id."""
        done: dict[str, Result] = {}
        while True:
            try:
                results = processor.process(batch, upcoming)
            except Interrupted as stop:
                commit_batch(self.run, batch, stop.results, self.lock)
                done.update(stop.results)
                batch = [r for r in batch if r.external_id not in stop.results]
                self.handle_interruption(stop.cause)
                continue  # waited: try what is left of the batch
            commit_batch(self.run, batch, results, self.lock)
            done.update(results)
            return done

    def handle_interruption(self, cause: Exception) -> None:
        """Wait out what passes (breaker, maintenance, a failing look-up, a busy throttle); stop the run
        for what does not (auth, configuration); re-raise anything else."""
        if isinstance(cause, MoodleError) and cause.category == errors.AUTH:
            self._stop_for_auth(str(cause), cause)
        if isinstance(cause, MoodleError) and cause.category == errors.CONFIG:
            raise self._config_failure(str(cause))
        if isinstance(cause, MoodleError) and cause.category == errors.MAINTENANCE:
            self.wait(
                settings.MAINTENANCE_BACKOFF_S,
                f"Moodle is in maintenance mode ({cause.errorcode or 'HTTP 503'})",
            )
            return
        if isinstance(cause, errors.BreakerOpen):
            delay = max(1.0, (cause.next_probe_at or time.time() + 5) - time.time())
            self.wait(delay, f"Moodle's circuit breaker is open: {cause.reason}")
            return
        if isinstance(cause, MoodleError) and cause.category == errors.TRANSIENT:
            # A look-up that failed after its retries (writes become dead letters instead): back off and try
            # the batch again; if Moodle keeps failing, the breaker opens and the waits grow.
            self.wait(settings.TRANSIENT_BACKOFF_S, f"Moodle kept failing a look-up: {cause.summary()}")
            return
        if isinstance(cause, errors.ThrottleTimeout):
            self.wait(5, "the site's call budget is in use by other runs")
            return
        if isinstance(cause, StormStop):
            raise self._storm_failure(cause)
        if isinstance(cause, BlindLookups):
            raise self._config_failure(str(cause))
        raise cause  # a client fault outside a write: a bug or a misconfiguration, not data

    def batch_processor(self, client: MoodleClient, *, dry_run: bool = False) -> BatchProcessor:
        """The run's batch processor: it lasts the run, learning Moodle's pace as it goes."""
        mapping = self.site.mapping()
        return BatchProcessor(
            client,
            match_key=mapping.match_key,
            auth=mapping.auth,
            dry_run=dry_run,
            create_suspended=mapping.create_suspended,
            target_call_ms=settings.MOODLE_TARGET_CALL_MS,
            proof=self.proof,
        )

    def patiently(self, call: Callable):
        """A read-only call (pre-flight, dry-run look-ups) that waits out the breaker and maintenance."""
        while True:
            try:
                return call()
            except Interrupted as stop:
                self.handle_interruption(stop.cause)
            except (MoodleError, errors.BreakerOpen, errors.ThrottleTimeout) as cause:
                self.handle_interruption(cause)

    def check_control(self) -> None:
        """Honour an operator's pause or cancel, and the time budget, at a batch boundary."""
        self.run.refresh_from_db(fields=["control", "started_by"])
        if self.run.control == RunControl.PAUSE:
            SyncRun.objects.filter(pk=self.run.pk).update(control="")
            raise RunStopped(
                RunStatus.PAUSED, "paused by an operator; resume continues with the pending records"
            )
        if self.run.control == RunControl.CANCEL:
            SyncRun.objects.filter(pk=self.run.pk).update(control="")
            raise RunStopped(RunStatus.CANCELLED, "cancelled by an operator; unsent records stay pending")
        if time.monotonic() > self.deadline:
            raise RunStopped(
                RunStatus.FAILED,
                f"its time budget ({self.site.run_time_budget}) was spent; unsent records stay pending",
            )

    def wait(self, seconds: float, why: str) -> None:
        """Wait inside the run (it keeps its lock), checking for pause, cancel and the time budget."""
        SyncRun.objects.filter(pk=self.run.pk).update(
            abort_reason=f"waiting {seconds:.0f} s (see the timeline for when it began): {why}"
        )
        self.event(f"Waiting {seconds:.0f} s: {why}", RunEvent.Level.WARNING)
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check_control()
            self.sleep(min(left, 2.0))
        SyncRun.objects.filter(pk=self.run.pk).update(abort_reason="")

    # -- phases -----------------------------------------------------------------------------------

    def _preflight(self, client: MoodleClient) -> Preflight:
        # A reconciliation reads absences from a listing; every other run proves its look-ups with its first
        # one that acts on an absence (LookupProof), which saves the pre-flight's own look-up.
        prove = self.run.kind in (RunKind.RECONCILE, RunKind.RESOLUTION, RunKind.EVENT)
        needed = (
            SYNC_FUNCTIONS if self.site.mapping().memberships.empty else SYNC_FUNCTIONS + MEMBERSHIP_FUNCTIONS
        )
        check = self.patiently(lambda: client.preflight(needed, prove_lookups=prove))
        if check.ok:
            if check.can_see_users is None:
                self.proof = LookupProof()
            return check
        problems = "; ".join(check.problems) or "the pre-flight check failed"
        if check.error_category == errors.AUTH:
            self._stop_for_auth(problems, None)
        if check.error_category:
            raise RunStopped(RunStatus.FAILED, f"pre-flight failed: {problems}")
        raise self._config_failure(problems)  # missing functions, or look-ups that would be blind

    def _plan(self) -> None:
        self.plan_from(*self.source_and_mapping())

    def plan_from(self, source, mapping=None) -> None:
        """Read `source` and stage who needs a write. A run of kind event reads only the people its events
        name: nobody is taken to have left the source."""
        mapping = mapping or self.site.mapping()
        bootstrap = self.run.kind == RunKind.BOOTSTRAP
        planner = Planner(self.run, mapping, bootstrap=bootstrap, pulse=self._planning_pulse(source))
        for _ in planner.stage(source.records()):
            pass  # the planner's pulse records progress and hears pause and cancel as it reads
        if self.run.kind != RunKind.EVENT:
            planner.stage_removals(self.site.source.removed_policy)
        counts = planner.counts
        total = SyncRecord.objects.filter(site=self.site, sync_status=SyncStatus.PENDING).count()
        SyncRun.objects.filter(pk=self.run.pk).update(
            seen=counts.seen,
            changed=counts.changed + counts.removed,
            unchanged=counts.unchanged,
            skipped=counts.skipped,
            errors=F("errors") + counts.invalid,
            blocked=counts.removal_blocked,
            progress_total=total,
            planned_at=timezone.now(),
        )
        self.event(
            f"Read {counts.seen} source records: {counts.changed} new or changed, "
            f"{counts.unchanged} unchanged, "
            f"{counts.invalid} invalid, {counts.removed} to suspend as they left the source"
            + (f" ({counts.removal_blocked} more held back by the guard)" if counts.removal_blocked else "")
            + f"; {total} to send."
        )
        if counts.removal_blocked:
            raise_alert(
                blast_radius_key(self.site.slug),
                kind=AlertKind.BLAST_RADIUS,
                site=self.site,
                run=self.run,
                title=f"{self.site.name}: {counted(counts.removal_blocked, 'person', 'people')} left the "
                "source; "
                "nobody was suspended",
                detail=counts.examples["removal_blocked"][0],
            )

    def _planning_pulse(self, source) -> Callable[[Planner], None]:
        """What the planner calls every few thousand rows or every second while it reads the source: record
        how far it got (a dry run as its progress, a real run as its Seen counter; both as a sign of
        progress for the stuck-run alert), then honour a pause, a cancel or the time budget, saying truthfully
        where the run was."""
        total = expected_rows(source)

        def pulse(planner: Planner) -> None:
            fields = {"seen": planner.read, "last_progress_at": timezone.now()}
            if self.run.dry_run:
                fields.update(progress_done=planner.read, progress_total=max(total, planner.read))
            SyncRun.objects.filter(pk=self.run.pk).update(**fields)
            try:
                self.check_control()
            except RunStopped as stop:
                raise RunStopped(
                    stop.status, self._planning_stop(stop, planner, total), stop.category
                ) from None

        return pulse

    def _planning_stop(self, stop: RunStopped, planner: Planner, total: int) -> str:
        """Why the run stopped while reading the source, in words true of that moment (nothing was sent)."""
        why = {
            RunStatus.CANCELLED: "cancelled by an operator",
            RunStatus.PAUSED: "paused by an operator",
        }.get(stop.status, stop.reason.split(";")[0])
        where = f"{planner.read:,}" + (f" of about {total:,}" if total >= planner.read else "")
        if self.run.dry_run:
            then = "a dry run writes nothing, so nothing changed"
        else:
            staged = planner.counts.changed
            then = "nothing was sent to Moodle; " + (
                f"the {staged:,} people staged so far stay pending" if staged else "nobody was staged yet"
            )
            if stop.status == RunStatus.PAUSED:
                then += "; resuming reads the source again from the start"
        return f"{why} while the source was being read ({where} rows read); {then}"

    def _dry_run(self, client: MoodleClient) -> None:
        source, mapping = self.source_and_mapping()
        planner = Planner(
            self.run,
            mapping,
            bootstrap=self.run.kind == RunKind.BOOTSTRAP,
            persist=False,
            pulse=self._planning_pulse(source),
        )
        processor = self.batch_processor(client, dry_run=True)
        totals: Counter = Counter()
        examples: dict[str, list[str]] = {}

        def classify(records: list[SyncRecord]) -> None:
            for start in range(0, len(records), self.site.batch_size):
                batch = records[start : start + self.site.batch_size]
                results = self.patiently(lambda b=batch: processor.process(b))
                totals.update(tally(results))
                for external_id, result in results.items():
                    key = result.action if result.status == SyncStatus.OK else result.status
                    bucket = examples.setdefault(key, [])
                    if len(bucket) < 5:
                        bucket.append(f"{external_id}: {result.message or result.action}")

        for chunk in planner.stage(source.records()):
            classify(chunk)
        classify(planner.stage_removals(self.site.source.removed_policy))
        counts = planner.counts
        writes = totals["created"] + totals["updated"] + totals["suspended"]
        target_problems = self.patiently(lambda: check_targets(client, self.run, planner.targets, mapping))
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
            "examples": {**counts.examples, **examples, **planner.memberships.examples},
            "estimate": self._estimate(
                counts.changed + counts.removed,
                writes,
                membership_calls(planner.memberships, planner.targets),
            ),
            **planner.memberships.as_plan(),
            "target_problems": target_problems,
        }
        SyncRun.objects.filter(pk=self.run.pk).update(
            plan=plan,
            seen=counts.seen,
            changed=counts.changed,
            unchanged=counts.unchanged,
            skipped=counts.skipped,
            progress_done=counts.seen,
            progress_total=counts.seen,
            planned_at=timezone.now(),
            last_progress_at=timezone.now(),
        )

    def _estimate(self, to_send: int, writes: int, memberships: int = 0) -> dict:
        """Calls and minutes the real run would take at the site's throttle (look-ups + writes per batch, and
        the membership calls)."""
        batches = -(-to_send // self.site.batch_size) if to_send else 0
        calls = 2 + batches * 3 + -(-writes // self.site.batch_size) + memberships
        per_second = min(self.site.calls_per_minute / 60, 1000 / max(self.site.min_spacing_ms, 1))
        return {"calls": calls, "minutes": round(calls / per_second / 60, 1)}

    # -- stops ------------------------------------------------------------------------------------

    def _stop_for_auth(self, problem: str, error: MoodleError | None) -> None:
        self._reload()
        token = self.site.active_token()
        masked = token.masked if token else "(none)"
        code = f" ({error.errorcode})" if error and error.errorcode else ""
        pending = SyncRecord.objects.filter(site=self.site, sync_status=SyncStatus.PENDING).count()
        done = (
            f"Run #{self.run.pk} stopped after {self.run.progress_done} of "
            f"{counted(self.run.progress_total, 'person', 'people')}; "
        )
        reason = (
            f"Moodle rejected the token {masked}{code}: {problem} "
            f"{pending:,} record{'s are' if pending != 1 else ' is'} pending and will be sent when the run "
            "resumes."
        )
        raise_alert(
            auth_key(self.site.slug),
            kind=AlertKind.AUTH_FAILURE,
            site=self.site,
            run=self.run,
            title=f"{self.site.name}: Moodle rejected the token {masked}{code}",
            detail=done
            + f"{pending} are pending and will be sent on the next run. Check the token (expired, IP "
            "restriction, service functions, user suspended or missing a capability), then resume.",
        )
        raise RunStopped(RunStatus.ABORTED, reason, errors.AUTH)

    def _storm_failure(self, storm: StormStop) -> RunStopped:
        """Every person sent alone was refused the same way: say what they share, stop, alert once."""
        refused = len(storm.refused)
        if storm.common is not None:
            field, value = storm.common
            more = SyncRecord.objects.filter(
                site=self.site, sync_status=SyncStatus.PENDING, **{f"payload__{field}": value}
            ).count()
            shared = f"all {refused} carry {field}={value}" + (
                f", as do {more:,} more people waiting to be sent" if more else ""
            )
        else:
            shared = "they have no value in common that the people Moodle accepted lack"
        problem = (
            f"Moodle refused each of the {counted(refused, 'person', 'people')} sent alone "
            f"({storm.errorcode}); {shared}. The run "
            "stopped instead of trying every one: fix the source, the mapping or the site's settings (its "
            "languages, for a lang), then start a new run, which reads the source again"
        )
        for record in storm.refused:
            SyncRecord.objects.filter(pk=record.pk).update(
                sync_status=SyncStatus.ERROR, error_category="client_fault", error_message=problem[:2000]
            )
        return self._config_failure(
            problem, f"{self.site.name}: Moodle refuses the people sent, each the same way"
        )

    def _config_failure(self, problem: str, title: str = "") -> RunStopped:
        advice = "" if title else " Add the missing functions to the external service in Moodle, then resume."
        raise_alert(
            config_key(self.site.slug),
            kind=AlertKind.CONFIG,
            site=self.site,
            run=self.run,
            title=title or f"{self.site.name}: the Moodle service is not set up for the hub",
            detail=f"{problem}.{advice}",
        )
        return RunStopped(RunStatus.ABORTED, problem, errors.CONFIG)
