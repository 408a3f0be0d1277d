"""Embedded PostgreSQL and Redis start on a bare machine and leave nothing running when they stop."""

import os

import psutil
import psycopg
import redis

from integration_hub.devservices import DevServices


def _processes_under(path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(path) in cmdline:
            found.append(proc)
    return found


def test_services_start_answer_and_stop_without_leftovers(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.delenv("REDIS_URL")
    services = DevServices(tmp_path, persist=False)
    added = services.__enter__()
    try:
        assert os.environ["DATABASE_URL"] == added["DATABASE_URL"]
        socket_dir = added["DATABASE_URL"].split("host=")[1]
        with psycopg.connect(host=socket_dir, user="postgres", dbname="hub") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert redis.Redis.from_url(added["REDIS_URL"]).ping()
        assert added["REDIS_URL"].startswith("redis://127.0.0.1:")
        assert _processes_under(tmp_path), "the embedded servers should be running"
    finally:
        services.stop()
    leftovers = [
        p for p in _processes_under(tmp_path) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert leftovers == []


def test_nothing_starts_when_the_urls_are_set(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://u@db.example.edu/hub")
    monkeypatch.setenv("REDIS_URL", "redis://redis.example.edu:6379/0")
    with DevServices(tmp_path) as added:
        assert "DATABASE_URL" not in added and "REDIS_URL" not in added
        assert _processes_under(tmp_path) == []


def test_a_second_process_shares_the_database_and_leaves_it_running(tmp_path, monkeypatch):
    # `make manage ...` while `make demo` runs: the second user of var/pg must not stop the demo's server.
    from integration_hub.devservices import EmbeddedPostgres

    owner, guest = EmbeddedPostgres(tmp_path / "pg"), EmbeddedPostgres(tmp_path / "pg")
    url = owner.start()
    try:
        assert guest.start() == url
        guest.stop()
        socket_dir = url.split("host=")[1]
        with psycopg.connect(host=socket_dir, user="postgres", dbname="hub") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        owner.stop()
    assert _alive(tmp_path) == []


def _alive(path) -> list:
    return [p for p in _processes_under(path) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_second_process_uses_the_same_redis_and_leaves_it_running(tmp_path):
    from integration_hub.devservices import EmbeddedRedis

    owner, guest = (
        EmbeddedRedis(tmp_path / "redis", persist=False),
        EmbeddedRedis(tmp_path / "redis", persist=False),
    )
    url = owner.start()
    try:
        assert guest.start() == url  # same server: same locks, throttle and queue
        guest.stop()
        assert redis.Redis.from_url(url).ping()
    finally:
        owner.stop()
    assert _alive(tmp_path) == []
