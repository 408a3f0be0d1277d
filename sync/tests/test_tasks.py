"""The task layer with a real Celery worker: runs execute through the broker, and a worker killed with
SIGKILL mid-bootstrap loses nothing and doubles nobody."""

import os
import signal
import subprocess
import sys
import time

import pytest

from integration_hub.testing import HUB_TOKEN, MAPPING, Moodle, person, write_csv
from simulator.app import SimConfig, create_app
from simulator.server import serve
from sync import engine, runs
from sync.choices import RunKind, RunStatus, SyncStatus, TokenStatus
from sync.models import MoodleSite, ServiceToken, SyncRecord, SyncRun, SyncSource
from sync.tasks import execute_run

PEOPLE = 200


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _site(url: str, csv_path) -> MoodleSite:
    site = MoodleSite.objects.create(
        slug="west", name="West", base_url=url, min_spacing_ms=0, calls_per_minute=100_000, batch_size=20
    )
    token = ServiceToken(site=site, label="main", status=TokenStatus.ACTIVE)
    token.set_token(HUB_TOKEN)
    token.save()
    SyncSource.objects.create(
        site=site, kind="csv", config={"path": str(csv_path), "id_column": "employee_id"}, mapping=MAPPING
    )
    return site


def _worker(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "integration_hub", "worker", "--pool", "solo",
         "--loglevel", "WARNING", "--hostname", f"test-{os.getpid()}@%h"],
        env=env,
    )  # fmt: skip


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_kill_9_mid_bootstrap_then_rerun_creates_everyone_exactly_once(child_env, clean_redis, tmp_path):
    sim = Moodle(create_app(SimConfig(latency_ms=20, seed=5), control=True))
    sim.control("POST", "tokens", {"token": HUB_TOKEN, "username": "wsuser"})
    csv_path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, PEOPLE + 1)])
    with serve(sim.app) as server:
        site = _site(server.url, csv_path)
        worker = _worker({**child_env, "RUN_LOCK_TTL_S": "3"})
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
        rerun = engine.execute(engine.queue_run(site, RunKind.BOOTSTRAP).pk)
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
    sim = Moodle(create_app(SimConfig(seed=6), control=True))
    sim.control("POST", "tokens", {"token": HUB_TOKEN, "username": "wsuser"})
    csv_path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, 21)])
    with serve(sim.app) as server:
        site = _site(server.url, csv_path)
        worker = _worker(child_env)
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
