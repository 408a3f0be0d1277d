"""Health checks: workers by their liveness keys, the scheduler by its heartbeat, and /healthz flipping to 503
and back with a real worker process."""

import os
import signal
import subprocess
import time
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from integration_hub.testing import start_worker
from monitoring.health import check_worker
from monitoring.models import Heartbeat
from monitoring.worker_liveness import Liveness, alive_workers, worker_key

TTL_S = 3


def _components(response) -> dict[str, dict]:
    return {c["name"]: c for c in response.json()["components"]}


def test_check_worker_counts_the_fresh_liveness_keys(clean_redis):
    assert check_worker().ok is False and check_worker().detail.startswith("no worker alive")
    clean_redis.set(worker_key("celery@a"), "1", ex=30)
    assert (check_worker().ok, check_worker().detail) == (True, "1 worker alive")
    clean_redis.set(worker_key("celery@b"), "1", ex=30)
    assert check_worker().detail == "2 workers alive"
    assert alive_workers(clean_redis) == ["celery@a", "celery@b"]


def test_the_liveness_thread_keeps_the_key_with_its_ttl_and_removes_it_on_stop(clean_redis):
    liveness = Liveness("celery@unit", clean_redis, ttl_s=TTL_S)
    liveness.start()
    try:
        deadline = time.monotonic() + 2
        while not clean_redis.exists(worker_key("celery@unit")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0 < clean_redis.ttl(worker_key("celery@unit")) <= TTL_S
        time.sleep(TTL_S + 0.5)  # refreshed every TTL/3, so it outlives its first TTL
        assert clean_redis.exists(worker_key("celery@unit"))
    finally:
        liveness.stop()
    assert not clean_redis.exists(worker_key("celery@unit"))


@pytest.mark.django_db
def test_healthz_is_503_naming_the_worker_when_none_is_alive_and_200_again_when_one_is(client, clean_redis):
    Heartbeat.record(Heartbeat.SCHEDULER)
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json()["status"] == "failing"
    worker = _components(response)["worker"]
    assert worker["ok"] is False and "no worker alive" in worker["detail"]
    clean_redis.set(worker_key("celery@x"), "1", ex=30)
    response = client.get("/healthz")
    assert response.status_code == 200 and _components(response)["worker"]["detail"] == "1 worker alive"


@pytest.mark.django_db
def test_healthz_flips_to_503_when_the_beat_heartbeat_goes_stale_and_back(client, clean_redis, settings):
    clean_redis.set(worker_key("celery@x"), "1", ex=30)
    Heartbeat.record(Heartbeat.SCHEDULER)
    assert client.get("/healthz").status_code == 200
    Heartbeat.objects.filter(name=Heartbeat.SCHEDULER).update(
        last_finished_at=timezone.now() - timedelta(seconds=settings.SCHEDULER_STALE_AFTER_S + 5)
    )
    response = client.get("/healthz")
    assert response.status_code == 503
    assert _components(response)["scheduler"]["ok"] is False and _components(response)["worker"]["ok"] is True
    Heartbeat.record(Heartbeat.SCHEDULER)  # beat and a worker finished the heartbeat task again
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_healthz_shows_no_secret(client, clean_redis, sync_site, settings):
    settings.METRICS_TOKEN = "metrics-secret-1234"
    body = client.get("/healthz").content.decode()
    for secret in ("metrics-secret-1234", settings.SECRET_KEY, sync_site.active_token().reveal()):
        assert secret not in body


@pytest.mark.django_db
def test_the_healthcheck_command_takes_component_names(clean_redis):
    call_command("healthcheck", "database", "redis")
    with pytest.raises(CommandError):
        call_command("healthcheck", "worker")
    clean_redis.set(worker_key("celery@x"), "1", ex=30)
    call_command("healthcheck", "worker")


def _start_worker(env: dict) -> subprocess.Popen:
    return start_worker(env, "health")


def _wait_for_status(client, status: int, timeout: float) -> float:
    """Seconds until /healthz answers `status`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        response = client.get("/healthz")
        if response.status_code == status:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"/healthz did not answer {status} within {timeout} s: {response.json()}")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_healthz_flips_to_503_when_the_worker_stops_and_back_when_it_runs_again(
    client, child_env, clean_redis
):
    env = {**child_env, "WORKER_HEARTBEAT_TTL_S": str(TTL_S)}
    Heartbeat.record(Heartbeat.SCHEDULER)
    figures = {}

    worker = _start_worker(env)
    try:
        figures["up after start"] = _wait_for_status(client, 200, 60)
        # Killed without a chance to clean up: its key expires after the TTL.
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        figures["down after kill -9"] = _wait_for_status(client, 503, TTL_S + 5)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    worker_state = _components(client.get("/healthz"))["worker"]
    assert worker_state["ok"] is False and "no worker alive" in worker_state["detail"]

    Heartbeat.record(Heartbeat.SCHEDULER)
    worker = _start_worker(env)
    try:
        figures["up after restart"] = _wait_for_status(client, 200, 60)
        time.sleep(TTL_S + 0.5)  # the thread keeps the key past its first TTL
        assert client.get("/healthz").status_code == 200
        worker.terminate()  # a clean stop removes its key at once
        worker.wait(timeout=30)
        figures["down after clean stop"] = _wait_for_status(client, 503, TTL_S + 5)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    print("healthz figures (s):", {k: round(v, 2) for k, v in figures.items()})
    assert figures["down after kill -9"] <= TTL_S + 1
