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
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda _: client.post("/webservice/rest/server.php", data=INFO), range(8))
            )
        stats = client.get("/_sim/stats").json()
    assert all(a.json()["username"] == "wsuser" for a in answers)
    assert stats["max_in_flight"] > 1  # the simulator's own count: calls were served side by side


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
        statuses = []
        while time.time() - began < 2.0:
            statuses.append(client.post("/webservice/rest/server.php", data=INFO).status_code)
        calls = client.get("/_sim/stats").json()["call_starts"]
        client.post("/_sim/config", json={"degrade": None})
        assert client.get("/_sim/stats").json()["degrade_started_at"] is None
        assert client.post("/webservice/rest/server.php", data=INFO).status_code == 200
        recovered = client.get("/_sim/stats").json()["call_starts"][-1]
    # The simulator's own clock and server times: latency climbed, then errors came.
    served = [(start - began, ms) for start, function, ms in calls if function]
    early = [ms for at, ms in served if at < 0.3]
    late = [ms for at, ms in served if at >= 1.0]
    assert early and late and max(early) < min(late)
    assert recovered[2] < 50  # back to normal at once
    assert statuses[0] == 200 and statuses[-1] == 503


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
        client.post("/webservice/rest/server.php", data={**data, "values[0]": "999"})
        found = client.post("/webservice/rest/server.php", data={**data, "values[0]": "2", "values[1]": "3"})
    assert len(found.json()) == 2
    empty, two = (ms for _, _, ms in app.stats.snapshot()["call_starts"])
    assert empty == 0 and two == 40  # 20 ms a user returned, on the simulator's own account
