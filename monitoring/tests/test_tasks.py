"""The dead-man switch end to end: real beat sends the heartbeat task, a real worker records it."""

import subprocess
import sys
import time

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from monitoring.models import Heartbeat
from monitoring.tasks import record_scheduler_heartbeat


def _wait_for_heartbeat(timeout: float) -> Heartbeat | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        beat = Heartbeat.objects.filter(name=Heartbeat.SCHEDULER).first()
        if beat:
            return beat
        time.sleep(0.25)
    return None


def _stop(*processes: subprocess.Popen) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.django_db
def test_the_heartbeat_task_records_when_it_finished():
    before = Heartbeat.objects.filter(name=Heartbeat.SCHEDULER).count()
    summary = record_scheduler_heartbeat()
    assert before == 0 and "scheduler heartbeat at" in summary
    assert Heartbeat.objects.get(name=Heartbeat.SCHEDULER).age_seconds() < 5


@pytest.mark.django_db
def test_the_heartbeat_is_scheduled_every_minute_in_the_database():
    task = PeriodicTask.objects.get(name="Scheduler heartbeat")
    assert task.task == "monitoring.record_scheduler_heartbeat"
    assert (task.interval.every, task.interval.period) == (1, IntervalSchedule.MINUTES)
    assert task.enabled and task.expire_seconds < 60


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_real_beat_and_worker_record_the_scheduler_heartbeat(child_env, tmp_path):
    # Shorten the schedule the way an admin edits it in the admin, so the test need not wait a minute.
    task = PeriodicTask.objects.get(name="Scheduler heartbeat")
    task.interval = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.SECONDS)
    task.save()
    celery = [sys.executable, "-m", "celery", "-A", "integration_hub"]
    worker = subprocess.Popen(
        [
            *celery,
            "worker",
            "--pool",
            "solo",
            "-Q",
            "celery,monitoring",
            "--loglevel",
            "WARNING",
            "--hostname",
            "test-worker@%h",
        ],
        env=child_env,
    )
    beat = subprocess.Popen(
        [
            *celery,
            "beat",
            "--loglevel",
            "WARNING",
            "--max-interval",
            "1",
            "--pidfile",
            str(tmp_path / "beat.pid"),
        ],
        env=child_env,
    )
    try:
        heartbeat = _wait_for_heartbeat(timeout=90)
    finally:
        _stop(worker, beat)
    assert heartbeat is not None, "no heartbeat within 90 s: beat or the worker did not do its job"
    assert heartbeat.age_seconds() < 90
    assert heartbeat.detail.startswith("worker ")
