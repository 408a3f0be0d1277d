"""Runs that wait and stop: the breaker opening mid-run, and an operator's pause and resume."""

import threading
import time

import pytest
from django.db import connections

from integration_hub.testing import person, write_csv
from monitoring.models import BreakerEvent
from sync import runs
from sync.choices import RunKind, RunStatus, SyncStatus
from sync.models import SyncRecord, SyncRun
from sync.run import engine


@pytest.mark.django_db
def test_breaker_open_pauses_the_run_and_it_resumes_when_the_probe_succeeds(sync_site, moodle, settings):
    settings.MOODLE_BREAKER = {**settings.MOODLE_BREAKER, "min_calls": 4, "cooldown_s": 1.0}
    settings.MOODLE_RETRY = {**settings.MOODLE_RETRY, "attempts": 2, "base_s": 0.01}
    settings.TRANSIENT_BACKOFF_S = 0.2
    # Four 503s on look-ups: the pre-flight's look-up fails twice (two attempts each), the run backs off,
    # the breaker opens on the error rate, and after the cool-down its probe succeeds.
    moodle.control("POST", "inject", {"kinds": ["503"] * 4, "function": "core_user_get_users_by_field"})
    run = SyncRun.objects.queue(sync_site, RunKind.BOOTSTRAP)
    started = time.monotonic()
    run = engine.execute(run.pk, transport=moodle.transport)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    assert time.monotonic() - started >= 1.0  # it waited for the cool-down
    assert run.events.filter(message__contains="circuit breaker is open").exists()
    transitions = list(BreakerEvent.objects.order_by("at").values_list("old_state", "new_state"))
    assert transitions[0][1] == "open" and transitions[-1][1] == "closed"
    assert len(moodle.people()) == 30
    assert set(SyncRecord.objects.values_list("sync_status", flat=True)) == {SyncStatus.OK}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_pause_stops_after_the_batch_in_flight_and_resume_finishes_the_job(sync_site, moodle, people_csv):
    write_csv(people_csv, [person(n) for n in range(1, 101)])
    moodle.control("POST", "config", {"latency_ms": 15})
    run = SyncRun.objects.queue(sync_site, RunKind.BOOTSTRAP)

    def execute_in_thread() -> None:
        try:
            engine.execute(run.pk, transport=moodle.transport)
        finally:
            connections.close_all()  # this thread's own connection

    worker = threading.Thread(target=execute_in_thread)
    worker.start()
    deadline = time.monotonic() + 30
    while SyncRun.objects.get(pk=run.pk).progress_done == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    runs.pause(SyncRun.objects.get(pk=run.pk), user=None)
    worker.join(timeout=60)
    run.refresh_from_db()
    assert run.status == RunStatus.PAUSED and run.finished_at is None
    assert 0 < run.progress_done < 100 and run.progress_done % sync_site.batch_size == 0
    assert len(moodle.people()) == run.progress_done  # exactly the committed batches, nothing half-done
    runs.resume(run, user=None)  # queues a task; here the run is executed in-process instead
    run = engine.execute(run.pk, transport=moodle.transport)
    assert run.status == RunStatus.SUCCEEDED and run.progress_done == 100
    assert len(moodle.people()) == 100
    assert run.events.filter(message__startswith="Resumed by").exists()
