"""`make demo`: embedded services, migrations, demo users, then web, worker and beat in the foreground.

One Ctrl-C stops everything: the children get it from the terminal (or a SIGTERM from here), then the
embedded PostgreSQL and Redis stop.
"""

import os
import signal
import socket
import subprocess
import sys
import time

from integration_hub.devservices import DEFAULT_VAR_DIR, DevServices

HOST = "127.0.0.1"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) != 0


def _manage(*args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], check=True)  # noqa: S603


def _processes(port: int) -> dict[str, list[str]]:
    python = sys.executable
    celery = [python, "-m", "celery", "-A", "integration_hub"]
    return {
        "web": [
            python, "-m", "gunicorn", "integration_hub.wsgi", "--bind", f"{HOST}:{port}",
            "--workers", "2", "--access-logfile", "-", "--graceful-timeout", "5",
        ],
        "worker": [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2", "--hostname", "demo@%h"],
        "beat": [*celery, "beat", "--loglevel", "INFO"],
    }  # fmt: skip


def _supervise(commands: dict[str, list[str]], port: int) -> int:
    children = {name: subprocess.Popen(argv) for name, argv in commands.items()}  # noqa: S603
    stopping = False

    def stop(*_args) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    exit_code = 0
    announced = False
    while not stopping:
        if not announced and not _port_free(port):
            announced = True
            print(
                f"\nReady: http://{HOST}:{port}/  (sign in as admin or operator; Ctrl-C stops everything)\n"
            )
        for name, child in children.items():
            if child.poll() is not None:
                print(f"demo: {name} exited with {child.returncode}; stopping the rest", file=sys.stderr)
                exit_code, stopping = 1, True
                break
        time.sleep(0.5)
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + 20
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return exit_code


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    if not _port_free(port):
        print(f"demo: port {port} is taken; run `make demo PORT=8001`", file=sys.stderr)
        return 2
    with DevServices(DEFAULT_VAR_DIR):
        _manage("migrate", "--no-input", "-v", "0")
        print("\nDemo accounts:")
        _manage("demousers")
        print(f"\nStarting web, worker and beat; the hub will be at http://{HOST}:{port}/\n")
        return _supervise(_processes(port), port)


if __name__ == "__main__":
    sys.exit(main())
