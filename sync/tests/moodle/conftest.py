"""Fixtures for the Moodle seam: a real Redis, a fresh site name per test (so Redis keys never
leak between tests), and the simulator in-process or over HTTP."""

import os
import secrets
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from sync.moodle.breaker import BreakerConfig
from sync.moodle.client import MoodleClient, RetryPolicy, SiteLimits


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.fail(
            "REDIS_URL is not set: these tests need a real Redis (see integration_hub/pytest_services.py)"
        )
    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture
def site_name(redis_client: redis.Redis) -> Iterator[str]:
    """A site name no other test uses; its throttle and breaker keys are removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    for pattern in (f"hub:throttle:{name}:*", f"hub:breaker:{name}:*"):
        keys = list(redis_client.scan_iter(match=pattern))
        if keys:
            redis_client.delete(*keys)


class Sim:
    """The simulator app plus a control client for its ``/_sim/`` API (in-process, no sockets)."""

    def __init__(self, app, base_url: str = "http://moodle.test", transport=None) -> None:
        self.app = app
        self.base_url = base_url
        self.control = httpx.Client(
            base_url=base_url, transport=transport if transport is not None else httpx.WSGITransport(app=app)
        )

    def _json(self, response: httpx.Response):
        response.raise_for_status()
        return response.json()

    def token(self, token: str, **fields) -> dict:
        return self._json(self.control.post("/_sim/tokens", json={"token": token, **fields}))

    def revoke(self, token: str) -> None:
        self.control.delete(f"/_sim/tokens/{token}").raise_for_status()

    def config(self, **fields) -> dict:
        return self._json(self.control.post("/_sim/config", json=fields))

    def stats(self) -> dict:
        return self._json(self.control.get("/_sim/stats"))

    def hold(self, function: str) -> None:
        self.control.post("/_sim/hold", json={"function": function}).raise_for_status()

    def release(self, function: str | None = None) -> None:
        self.control.post("/_sim/release", json={"function": function}).raise_for_status()

    def reset_stats(self) -> None:
        self.control.post("/_sim/reset").raise_for_status()

    def users(self) -> list[dict]:
        return self._json(self.control.get("/_sim/users"))["users"]

    def add_user(self, **fields) -> dict:
        return self._json(self.control.post("/_sim/users", json=fields))

    def suspend(self, userid: int) -> None:
        self.control.post(f"/_sim/users/{userid}/suspend").raise_for_status()

    def transport(self, remote_addr: str = "127.0.0.1") -> httpx.WSGITransport:
        return httpx.WSGITransport(app=self.app, remote_addr=remote_addr)

    def close(self) -> None:
        self.control.close()


@pytest.fixture
def sim() -> Iterator[Sim]:
    from simulator.app import SimConfig, create_app

    simulator = Sim(create_app(SimConfig(seed=7)))
    yield simulator
    simulator.close()


@pytest.fixture
def token(sim: Sim) -> str:
    """A token with every function and capability; random so a leak is easy to search for."""
    value = secrets.token_hex(16)
    sim.token(value, functions=None, username="wsuser")
    return value


FAST_LIMITS = SiteLimits(max_concurrent=4, min_spacing_ms=0, calls_per_minute=100_000, max_wait_s=10)
FAST_RETRY = RetryPolicy(attempts=3, base_s=0.01, cap_s=0.05)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def records() -> list:
    return []


@pytest.fixture
def make_client(sim: Sim, token: str, redis_client, site_name: str, sleeps: list, records: list):
    """Build clients on the in-process simulator; each shares the test's Redis budget and site."""
    clients: list[MoodleClient] = []

    def factory(token_value: str | None = None, *, remote_addr: str = "127.0.0.1", **kwargs) -> MoodleClient:
        kwargs.setdefault("limits", FAST_LIMITS)
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("breaker", BreakerConfig(enabled=False))
        kwargs.setdefault("on_call", records.append)
        kwargs.setdefault("sleep", sleeps.append)
        client = MoodleClient(
            sim.base_url,
            token if token_value is None else token_value,
            site=site_name,
            redis=redis_client,
            transport=sim.transport(remote_addr),
            **kwargs,
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()
