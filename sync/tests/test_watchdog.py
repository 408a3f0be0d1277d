"""No run is left running without a worker, nor queued without a task: the watchdog, the claim that fences a
worker thought dead, and a run that waits out its own database and Redis blinking."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis as redis_lib
from django.db import OperationalError
from django.test import override_settings
from django.utils import timezone

from sync import dispatch, runs
from sync.choices import RunKind, RunStatus, SyncStatus
from sync.models import RunEvent, SyncRecord, SyncRun
from sync.run import engine, state, watchdog
from sync.run.connect import shared_redis
from sync.run.locks import LockLost, RunLock

pytestmark = pytest.mark.django_db


def no_sleep(_seconds: float) -> None:
    """Waits happen at once here."""


def bootstrap(site, moodle) -> SyncRun:
    return engine.execute(
        SyncRun.objects.queue(site, RunKind.BOOTSTRAP).pk, transport=moodle.transport, sleep=no_sleep
    )


def fail_redis_at_slot(monkeypatch, nth: int) -> None:
    """Redis fails once, as the `nth` throttle slot of the run is asked for."""
    from sync.moodle.throttle import Throttle

    real_slot = Throttle.slot
    asked = []

    def slot(self, idle=None):
        asked.append(1)
        if len(asked) == nth:
            raise redis_lib.ConnectionError("Connection closed by server.")
        return real_slot(self, idle)

    monkeypatch.setattr(Throttle, "slot", slot)


def orphan(site, *, beat_ago_s: float = 120) -> SyncRun:
    """A run marked running whose worker died: its last heartbeat long ago, its site's lock expired."""
    run = SyncRun.objects.queue(site, RunKind.BOOTSTRAP)
    assert run.start()
    SyncRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=beat_ago_s))
    run.refresh_from_db()
    return run


def test_a_run_whose_worker_died_is_continued_and_finishes_with_everyone_once(sync_site, moodle):
    dead = orphan(sync_site)
    claim = dead.claim

    watch = watchdog.watch_runs()

    assert watch.continued == [dead.pk]
    dead.refresh_from_db()
    assert dead.status == RunStatus.QUEUED and dead.claim == claim + 1 and dead.sent_at is not None
    assert RunEvent.objects.filter(run=dead, message__startswith="Continued automatically").exists()
    done = engine.execute(dead.pk, transport=moodle.transport, sleep=no_sleep)  # the next worker
    assert done.status == RunStatus.SUCCEEDED, done.abort_reason
    assert len(moodle.people()) == 30
    assert set(SyncRecord.objects.filter(site=sync_site).values_list("sync_status", flat=True)) == {
        SyncStatus.OK
    }


def test_a_live_worker_is_left_alone(sync_site):
    quiet = orphan(sync_site)  # its database heartbeat is late (a database restart)...
    lock = RunLock(shared_redis(), sync_site.slug, quiet.pk)
    assert lock.acquire()  # ...but it still holds its site's lock
    try:
        beating = orphan(SyncRun.objects.queue(sync_site, RunKind.RECONCILE).site, beat_ago_s=5)
        assert watchdog.watch_runs().continued == []
        assert SyncRun.objects.get(pk=quiet.pk).status == RunStatus.RUNNING
        assert SyncRun.objects.get(pk=beating.pk).status == RunStatus.RUNNING
    finally:
        lock.release()


def test_a_worker_thought_dead_writes_nothing_after_its_run_was_handed_on(sync_site):
    old = orphan(sync_site)
    watchdog.watch_runs()
    batch = list(SyncRecord.objects.filter(site=sync_site)[:1])
    with pytest.raises(LockLost, match="handed to another worker"):
        state.commit_batch(old, batch, {}, None)
    assert old.finish(RunStatus.FAILED, "the old worker's last word") is False
    assert SyncRun.objects.get(pk=old.pk).status == RunStatus.QUEUED


def test_cancel_of_a_run_whose_worker_died_takes_effect_at_once(sync_site, operator):
    dead = orphan(sync_site)
    runs.cancel(dead, operator)
    dead.refresh_from_db()
    assert dead.status == RunStatus.CANCELLED and "its worker had stopped" in dead.abort_reason
    assert watchdog.watch_runs().continued == []


def test_a_queued_run_whose_task_never_reached_the_broker_is_sent_when_it_answers(sync_site, monkeypatch):
    def broker_down(*args, **kwargs):
        from kombu.exceptions import OperationalError as BrokerDown

        raise BrokerDown("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    with monkeypatch.context() as down:
        down.setattr(dispatch.current_app, "send_task", broker_down)
        run = runs.start(sync_site, RunKind.INCREMENTAL, enqueue=False)
        assert dispatch.send_run(run.pk) is None  # no traceback for the caller
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.sent_at is None
    assert run.abort_reason.startswith("waiting for the task queue")

    assert watchdog.watch_runs().resent == []  # a moment after queueing, it may still be on its way
    SyncRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    assert watchdog.watch_runs().resent == [run.pk]
    run.refresh_from_db()
    assert run.sent_at is not None and run.task_id


def test_a_queued_run_sent_long_ago_is_sent_again(sync_site):
    run = runs.start(sync_site, RunKind.INCREMENTAL, enqueue=False)
    SyncRun.objects.filter(pk=run.pk).update(sent_at=timezone.now() - timedelta(minutes=10))
    with override_settings(RUN_RESEND_S=300):
        assert watchdog.watch_runs().resent == [run.pk]


def test_a_database_blink_under_a_run_is_waited_out(sync_site, moodle, monkeypatch):
    real_commit = state.commit_batch
    blinks = []

    def commit_once_broken(*args, **kwargs):
        if not blinks:
            blinks.append(1)
            raise OperationalError("terminating connection due to administrator command")
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(engine, "commit_batch", commit_once_broken)
    done = bootstrap(sync_site, moodle)

    assert done.status == RunStatus.SUCCEEDED, done.abort_reason
    assert len(moodle.people()) == 30  # the batch whose commit broke was looked up again, not doubled
    # The 10 created in the batch whose commit broke are found by their idnumber and linked, already in step.
    assert (done.created, done.unchanged) == (20, 10)
    assert RunEvent.objects.filter(run=done, message__contains="database failed").exists()


def test_a_redis_blink_under_a_run_is_waited_out(sync_site, moodle, monkeypatch):
    fail_redis_at_slot(monkeypatch, 1)
    done = bootstrap(sync_site, moodle)

    assert done.status == RunStatus.SUCCEEDED, done.abort_reason
    assert len(moodle.people()) == 30
    assert RunEvent.objects.filter(run=done, message__contains="Redis failed").exists()


def test_a_run_whose_services_stay_down_fails_with_the_cause(sync_site, moodle, monkeypatch):
    monkeypatch.setattr(engine, "commit_batch", _always_broken)
    monkeypatch.setattr(engine, "_hub_services_answer", lambda: False)
    done = bootstrap(sync_site, moodle)
    assert done.status == RunStatus.FAILED
    assert "the hub's database did not answer for" in done.abort_reason
    assert "terminating connection" in done.abort_reason


def _always_broken(*args, **kwargs):
    raise OperationalError("terminating connection due to administrator command")


def test_a_lock_that_vanished_with_redis_is_taken_back_by_its_live_owner(clean_redis):
    client = shared_redis()
    lock = RunLock(client, "north", 7)
    assert lock.acquire()
    try:
        client.flushall()  # Redis restarted empty
        assert lock.renew() and lock.holder() == 7
        other = RunLock(client, "north", 8)
        assert not other.acquire()
    finally:
        lock.release()
    taken = RunLock(client, "north", 9)
    assert taken.acquire()
    try:
        assert not lock.renew()  # another run holds it now: the old owner does not take it
    finally:
        taken.release()


@pytest.mark.parametrize("failing_slot", [1, 4, 5, 6, 9])
def test_the_call_log_counts_what_moodle_counts_when_redis_fails_under_any_call(
    sync_site, moodle, monkeypatch, failing_slot
):
    from monitoring.models import CallLog

    fail_redis_at_slot(monkeypatch, failing_slot)
    done = bootstrap(sync_site, moodle)

    assert done.status == RunStatus.SUCCEEDED, done.abort_reason
    assert len(moodle.people()) == 30
    assert CallLog.objects.count() == moodle.stats()["total_calls"]
    assert not CallLog.objects.filter(outcome="sending").exists()


def test_redis_failing_after_a_round_of_creates_loses_none_of_their_answers(sync_site, moodle, monkeypatch):
    from monitoring.models import CallLog
    from sync.moodle.breaker import Breaker

    real_record = Breaker.record
    recorded = []

    def record_then_fail(self, **kwargs):
        recorded.append(1)
        if len(recorded) in (5, 6):  # the breaker's bookkeeping of a create round's answers
            raise redis_lib.ConnectionError("Connection closed by server.")
        return real_record(self, **kwargs)

    monkeypatch.setattr(Breaker, "record", record_then_fail)
    done = bootstrap(sync_site, moodle)
    assert done.status == RunStatus.SUCCEEDED, done.abort_reason
    assert (done.created, len(moodle.people())) == (30, 30)
    assert CallLog.objects.count() == moodle.stats()["total_calls"]
    assert not CallLog.objects.filter(outcome="sending").exists()


def test_redis_failing_as_a_slot_is_given_back_loses_no_answer(sync_site, moodle, monkeypatch):
    import contextlib

    from monitoring.models import CallLog
    from sync.moodle.throttle import Throttle

    real_slot = Throttle.slot
    slots = []

    @contextlib.contextmanager
    def slot_whose_release_fails(self, idle=None):
        slots.append(1)
        with real_slot(self, idle):
            yield
        if len(slots) in (5, 6, 7):  # the answers of a create round are in hand when Redis goes
            raise redis_lib.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(Throttle, "slot", slot_whose_release_fails)
    done = bootstrap(sync_site, moodle)
    assert done.status == RunStatus.SUCCEEDED, done.abort_reason
    assert (done.created, len(moodle.people())) == (30, 30)
    assert CallLog.objects.count() == moodle.stats()["total_calls"]
    assert not CallLog.objects.filter(outcome="sending").exists()
