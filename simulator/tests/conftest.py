"""Fixtures: a simulator in-process behind httpx.WSGITransport, and raw-call helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from simulator.app import SimConfig, SimulatorApp, create_app
from simulator.tokens import create_token

REST = "/webservice/rest/server.php"
TOKEN = "t0ken-for-tests"


def flatten(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Nested dicts/lists -> PHP bracket pairs, booleans -> 0/1 (what a correct client sends)."""
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}[{key}]", sub)
        elif isinstance(value, list):
            for index, sub in enumerate(value):
                walk(f"{prefix}[{index}]", sub)
        elif isinstance(value, bool):
            pairs.append((prefix, "1" if value else "0"))
        elif value is not None:
            pairs.append((prefix, str(value)))

    for key, value in params.items():
        walk(key, value)
    return pairs


class Site:
    """One simulated site with a full-rights token and helpers for raw calls."""

    def __init__(self, app: SimulatorApp, client: httpx.Client) -> None:
        self.app = app
        self.client = client

    def post(self, pairs: list[tuple[str, str]], **kwargs: Any) -> httpx.Response:
        body = "&".join(f"{httpx.QueryParams({k: v})}" for k, v in pairs)
        return self.client.post(
            REST, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}, **kwargs
        )

    def raw(
        self, function: str, token: str = TOKEN, fmt: str | None = "json", **params: Any
    ) -> httpx.Response:
        pairs = [("wstoken", token), ("wsfunction", function)]
        if fmt:
            pairs.append(("moodlewsrestformat", fmt))
        return self.post(pairs + flatten(params))

    def call(self, function: str, token: str = TOKEN, **params: Any) -> Any:
        response = self.raw(function, token, **params)
        assert response.status_code == 200, response.text
        return response.json()

    def control(self, method: str, path: str, json: Any = None) -> Any:
        response = self.client.request(method, f"/_sim{path}", json=json)
        assert response.status_code == 200, response.text
        return response.json()

    def user(self, **overrides: Any) -> dict:
        base = {
            "username": "alice",
            "firstname": "Alice",
            "lastname": "Martín",
            "email": "alice@example.org",
            "password": "Secret-123",
        }
        base.update(overrides)
        return base


@pytest.fixture
def make_site() -> Iterator[Callable[..., Site]]:
    clients: list[httpx.Client] = []

    def factory(remote_addr: str = "127.0.0.1", **config: Any) -> Site:
        app = create_app(SimConfig(**config))
        create_token(app.state, TOKEN)
        client = httpx.Client(
            transport=httpx.WSGITransport(app=app, remote_addr=remote_addr), base_url="http://moodle.test"
        )
        clients.append(client)
        return Site(app, client)

    yield factory
    for client in clients:
        client.close()


@pytest.fixture(params=[False, True], ids=["debug-off", "debug-on"])
def site(request: pytest.FixtureRequest, make_site: Callable[..., Site]) -> Site:
    """Every test using this runs twice: production (debug off) and debugging on."""
    return make_site(debug=request.param)


@pytest.fixture
def plain(make_site: Callable[..., Site]) -> Site:
    return make_site()
