"""The threaded server: real concurrency, the degrading ramp, and the command-line entry points."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from simulator.app import SimConfig, create_app
from simulator.server import serve
from simulator.tests.conftest import TOKEN
from simulator.tokens import create_token

ROOT = Path(__file__).resolve().parents[2]
INFO = {"wstoken": TOKEN, "wsfunction": "core_webservice_get_site_info", "moodlewsrestformat": "json"}


def test_requests_really_overlap() -> None:
    app = create_app(SimConfig(latency_ms=200))
    create_token(app.state, TOKEN)
    with serve(app) as server, httpx.Client(base_url=server.url) as client:
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda _: client.post("/webservice/rest/server.php", data=INFO), range(8))
            )
        elapsed = time.monotonic() - started
        stats = client.get("/_sim/stats").json()
    assert all(a.json()["username"] == "wsuser" for a in answers)
    assert stats["max_in_flight"] > 1
    assert elapsed < 8 * 0.2  # sequential would take 1.6 s


def test_degrading_mode_slows_down_before_failing() -> None:
    app = create_app(SimConfig(seed=3))
    create_token(app.state, TOKEN)
    with serve(app) as server, httpx.Client(base_url=server.url) as client:
        client.post(
            "/_sim/config",
            json={"degrade": {"ramp_s": 1.0, "max_extra_ms": 400, "errors_after_s": 1.5, "error_rate": 1.0}},
        )
        began = client.get("/_sim/stats").json()["degrade_started_at"]
        assert began is not None
        samples = []
        while time.time() - began < 2.0:
            t0 = time.monotonic()
            response = client.post("/webservice/rest/server.php", data=INFO)
            samples.append((time.time() - began, time.monotonic() - t0, response.status_code))
        client.post("/_sim/config", json={"degrade": None})
        assert client.get("/_sim/stats").json()["degrade_started_at"] is None
        t0 = time.monotonic()
        assert client.post("/webservice/rest/server.php", data=INFO).status_code == 200
        assert time.monotonic() - t0 < 0.2
    early = [d for at, d, _ in samples if at < 0.3]
    late_ok = [d for at, d, status in samples if at >= 1.0 and status == 200]
    assert early and late_ok and max(early) < min(late_ok)  # latency climbed
    assert all(status == 200 for at, _, status in samples if at < 1.4)  # no error before errors_after_s
    assert samples[-1][2] == 503


def _wait_for_line(process: subprocess.Popen, needle: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if needle in line:
            return line
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no line containing {needle!r}; stderr: {process.stderr.read()}")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _command_env() -> dict[str, str]:
    """What settings.py insists on; the simulator itself touches neither database nor Redis."""
    env = dict(os.environ)
    env.setdefault("SECRET_KEY", "simulator-test")
    env.setdefault("ALLOWED_HOSTS", "localhost")
    env.setdefault("TOKEN_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    env.setdefault("DATABASE_URL", "postgres://unused@127.0.0.1:1/unused")
    env.setdefault("REDIS_URL", "redis://127.0.0.1:1/0")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.parametrize("entry", ["manage.py", "python -m simulator"])
def test_command_starts_serves_and_saves_state(tmp_path: Path, entry: str) -> None:
    if entry == "manage.py" and not (ROOT / "manage.py").exists():
        pytest.skip("manage.py not there yet")
    port, state = _free_port(), tmp_path / "moodle.json"
    head = (
        [sys.executable, "manage.py", "simulator"]
        if entry == "manage.py"
        else [sys.executable, "-m", "simulator"]
    )
    args = [*head, "--port", str(port), "--token", "demo", "--control", "--seed-users", "12"]
    args += ["--state", str(state), "--latency-ms", "5", "--max-input-vars", "5000"]
    process = subprocess.Popen(
        args, cwd=ROOT, env=_command_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = _wait_for_line(process, "listening on")
        assert "demo" not in line  # the token value is never printed
        url = f"http://127.0.0.1:{port}"
        data = {
            **INFO,
            "wstoken": "demo",
            "wsfunction": "core_user_get_users",
            "criteria[0][key]": "email",
            "criteria[0][value]": "%@example.edu",
        }
        users = httpx.post(f"{url}/webservice/rest/server.php", data=data).json()["users"]
        assert len(users) == 12
        assert httpx.get(f"{url}/_sim/stats").json()["total_calls"] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    assert process.returncode == 0
    assert "demo" in state.read_text()


def test_lookups_cost_time_per_user_returned() -> None:
    app = create_app(SimConfig(cost_per_user_ms=20))
    create_token(app.state, TOKEN)
    data = {**INFO, "wsfunction": "core_user_get_users_by_field", "field": "id"}
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://moodle.test") as client:
        t0 = time.monotonic()
        client.post("/webservice/rest/server.php", data={**data, "values[0]": "999"})
        empty = time.monotonic() - t0
        t0 = time.monotonic()
        found = client.post("/webservice/rest/server.php", data={**data, "values[0]": "2", "values[1]": "3"})
        two = time.monotonic() - t0
    assert len(found.json()) == 2
    assert two >= 0.04 > empty
