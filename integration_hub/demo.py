"""`make demo`: embedded services, migrations, demo users, the Moodle simulator with a demo site and its
HR export, then web, worker and beat in the foreground.

On the first start the demo site is registered (demo/people.csv as its source) and a bootstrap is
queued, so the pages show real data. One Ctrl-C stops everything: the children get it from the
terminal (or a SIGTERM from here), then the embedded PostgreSQL and Redis stop.
"""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time

from integration_hub.devservices import BASE_DIR, DEFAULT_VAR_DIR, DevServices

HOST = "127.0.0.1"
SIMULATOR_PORT = int(os.environ.get("SIMULATOR_PORT", "8090"))
SIMULATOR_URL = f"http://{HOST}:{SIMULATOR_PORT}"
DEMO_SITE = "demo"
# The language packs of the demo Moodle: every lang its people carry (demo/people.csv), and en.
DEMO_LANGUAGES = "en,ar,de,es,fr,ja,pl,tr,vi"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) != 0


def _manage(*args: str, stdin: str | None = None) -> None:
    subprocess.run([sys.executable, "manage.py", *args], check=True, input=stdin, text=True)  # noqa: S603


def _demo_token() -> str:
    """The simulator's token for the demo site, made once (kept in var/, never printed)."""
    path = DEFAULT_VAR_DIR / "demo-token"
    if not path.exists():
        path.write_text(secrets.token_hex(16))
        path.chmod(0o600)
    return path.read_text().strip()


def _wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _port_free(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")
        time.sleep(0.2)


def _register_demo_site(token: str) -> None:
    """First start only: the demo site, its CSV source, and a bootstrap for the worker to run."""
    import django

    django.setup()
    from sync.models import MoodleSite

    if MoodleSite.objects.filter(slug=DEMO_SITE).exists():
        return
    print("\nRegistering the demo site and queueing its first bootstrap:")
    _manage("addsite", DEMO_SITE, "--url", SIMULATOR_URL, "--name", "Demo University", "--token-stdin",
            "--languages", DEMO_LANGUAGES, stdin=token + "\n")  # fmt: skip
    _manage(
        "addsource", DEMO_SITE, "--kind", "csv", "--path", str(BASE_DIR / "demo" / "people.csv"),
        "--id-column", "employee_id", "--mapping", str(BASE_DIR / "demo" / "mapping.json"),
        "--removed", "suspend",
    )  # fmt: skip
    _manage("sync", DEMO_SITE, "--mode", "bootstrap", "--async")


def _processes(port: int) -> dict[str, list[str]]:
    python = sys.executable
    celery = [python, "-m", "celery", "-A", "integration_hub"]
    return {
        "web": [
            python, "-m", "gunicorn", "integration_hub.wsgi", "--bind", f"{HOST}:{port}",
            "--workers", "2", "--access-logfile", "-", "--graceful-timeout", "5",
        ],
        "worker": [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2", "--hostname", "demo@%h"],
        # Heartbeat, probes and alert rules on their own worker, so long runs never starve them.
        "monitor": [*celery, "worker", "-Q", "monitoring", "--loglevel", "INFO", "--concurrency", "1",
                    "--hostname", "monitor@%h"],
        "beat": [*celery, "beat", "--loglevel", "INFO"],
    }  # fmt: skip


def _simulator(token: str) -> list[str]:
    return [
        sys.executable, "manage.py", "simulator", "--port", str(SIMULATOR_PORT), "--control",
        "--state", str(DEFAULT_VAR_DIR / "moodle.json"), "--seed-users", "300", "--token", token,
        "--latency-ms", "40", "--jitter-ms", "30", "--langs", DEMO_LANGUAGES,
    ]  # fmt: skip


MAX_RESTARTS = 5  # a process that exits this often within RESTART_WINDOW_S is broken, not unlucky
RESTART_WINDOW_S = 60.0


def _supervise(commands: dict[str, list[str]], port: int, children: dict[str, subprocess.Popen]) -> int:
    children.update({name: subprocess.Popen(argv) for name, argv in commands.items()})  # noqa: S603
    stopping = False

    def stop(*_args) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    exit_code = 0
    announced = False
    restarts: dict[str, list[float]] = {}
    while not stopping:
        if not announced and not _port_free(port):
            announced = True
            print(
                f"\nReady: http://{HOST}:{port}/  (sign in as admin or operator; Ctrl-C stops everything)\n"
            )
        for name, child in list(children.items()):
            if child.poll() is None:
                continue
            # As compose does (restart: unless-stopped): a worker that exits, e.g. when Redis restarts under
            # it, is started again; one that keeps exiting stops the demo.
            now = time.monotonic()
            recent = [t for t in restarts.get(name, []) if now - t < RESTART_WINDOW_S]
            if len(recent) >= MAX_RESTARTS:
                print(f"demo: {name} keeps exiting ({child.returncode}); stopping the rest", file=sys.stderr)
                exit_code, stopping = 1, True
                break
            print(f"demo: {name} exited with {child.returncode}; starting it again", file=sys.stderr)
            restarts[name] = [*recent, now]
            children[name] = subprocess.Popen(commands[name])  # noqa: S603
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
    for wanted, hint in ((port, "make demo PORT=8001"), (SIMULATOR_PORT, "make demo SIMULATOR_PORT=8091")):
        if not _port_free(wanted):
            print(f"demo: port {wanted} is taken; run `{hint}`", file=sys.stderr)
            return 2
    # The demo probes its Moodle every minute, so a revoked token shows within a minute.
    os.environ.setdefault("PROBE_INTERVAL_S", "60")
    with DevServices(DEFAULT_VAR_DIR):
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integration_hub.settings")
        _manage("migrate", "--no-input", "-v", "0")
        print("\nDemo accounts:")
        _manage("demousers")
        token = _demo_token()
        simulator = subprocess.Popen(_simulator(token))  # noqa: S603
        try:
            _wait_for_port(SIMULATOR_PORT)
            _register_demo_site(token)
        except BaseException:
            simulator.terminate()
            simulator.wait()
            raise
        print(f"\nStarting web, worker and beat; the hub will be at http://{HOST}:{port}/\n")
        return _supervise(_processes(port), port, {"simulator": simulator})


if __name__ == "__main__":
    sys.exit(main())
