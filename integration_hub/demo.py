"""`make demo`: embedded services, migrations, demo users, the Moodle simulator with a demo site and its
HR export, then web, worker and beat in the foreground.

On the first start the demo site is registered (demo/people.csv as its source) and a bootstrap is
queued, so the pages show real data. One Ctrl-C stops everything: the children run in sessions of their
own, so the terminal's Ctrl-C reaches only this process, which sends each child one SIGTERM (their clean
stop), waits for them, then stops the embedded PostgreSQL and Redis. No child sees a KeyboardInterrupt.

"Ready" is printed once /healthz answers 200: the workers are alive and the scheduler's heartbeat is
fresh. The heartbeat schedule is made due before beat starts, so beat sends it on its first tick and the
Overview never opens on a "scheduler is silent" banner.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from integration_hub.devservices import BASE_DIR, DEFAULT_VAR_DIR, DevServices

HOST = "127.0.0.1"
SIMULATOR_PORT = int(os.environ.get("SIMULATOR_PORT", "8090"))
SIMULATOR_URL = f"http://{HOST}:{SIMULATOR_PORT}"
DEMO_SITE = "demo"
# The language packs of the demo Moodle: every lang its people carry (demo/people.csv), and en.
DEMO_LANGUAGES = "en,ar,de,es,fr,ja,pl,tr,vi"
HEARTBEAT_TASK = "monitoring.record_scheduler_heartbeat"
READY_WAIT_S = 90.0  # how long "Ready" waits for /healthz before it is printed with what still fails


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) != 0


def _start(argv: list[str], **kwargs) -> subprocess.Popen:
    """A child in a session of its own: a Ctrl-C in the terminal reaches only the demo, which stops the
    children with one SIGTERM each instead of letting each raise KeyboardInterrupt."""
    return subprocess.Popen(argv, start_new_session=True, **kwargs)  # noqa: S603


def _stop(child: subprocess.Popen, timeout: float = 20) -> None:
    if child.poll() is None:
        child.terminate()
    try:
        child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _manage(*args: str, stdin: str | None = None, hints: bool = True) -> None:
    """Run a management command to its end. With hints=False its "Next: ..." lines are left out: the demo
    takes those steps itself, and telling the reader to do them again misleads."""
    child = _start(
        [sys.executable, "manage.py", *args],
        stdin=subprocess.PIPE if stdin is not None else None,
        stdout=None if hints else subprocess.PIPE,
        text=True,
    )
    try:
        out, _ = child.communicate(stdin)
    except BaseException:  # Ctrl-C: the command stops cleanly, then the demo does
        _stop(child)
        raise
    if out:
        sys.stdout.write("".join(line for line in out.splitlines(True) if not line.startswith("Next:")))
        sys.stdout.flush()
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, args)


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
            "--languages", DEMO_LANGUAGES, stdin=token + "\n", hints=False)  # fmt: skip
    _manage(
        "addsource", DEMO_SITE, "--kind", "csv", "--path", str(BASE_DIR / "demo" / "people.csv"),
        "--id-column", "employee_id", "--mapping", str(BASE_DIR / "demo" / "mapping.json"),
        "--removed", "suspend", hints=False,
    )  # fmt: skip
    _manage("sync", DEMO_SITE, "--mode", "bootstrap", "--async")


def _connect_moodle_events(port: int) -> None:
    """The simulated Moodle acts as the local_integrationhub plugin: its changes (made on its control API, or
    by the hub's own calls) reach the hub's Moodle hook, signed with the demo site's secret (made once and
    kept encrypted by the hub like any secret; the simulator forgets its hook settings when it stops)."""
    import django

    django.setup()
    from sync.choices import HookDirection, HookSecretStatus
    from sync.hooks import make_secret
    from sync.models import MoodleSite

    site = MoodleSite.objects.get(slug=DEMO_SITE)
    current = site.hook_secrets.filter(direction=HookDirection.MOODLE, status=HookSecretStatus.ACTIVE).first()
    secret = current.reveal() if current else make_secret(site, HookDirection.MOODLE, None)
    body = json.dumps({"url": f"http://{HOST}:{port}/hooks/moodle/{DEMO_SITE}/", "secret": secret}).encode()
    request = urllib.request.Request(  # noqa: S310 - the simulator this process started, on 127.0.0.1
        f"{SIMULATOR_URL}/_sim/hook", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310
        pass


def heartbeat_due_now() -> int:
    """Make the scheduler's heartbeat entry due, so the beat about to start sends it on its first tick.

    django_celery_beat counts an entry that never ran from when it was created (the migration, seconds
    before beat starts), so a first demo would wait a whole interval for its first heartbeat, with /healthz
    at 503 and a red "scheduler is silent" banner meanwhile. The heartbeat stays real: beat sends the task
    and the monitoring worker records it; only the wait goes. Returns how many entries were made due."""
    import django

    django.setup()
    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    now = timezone.now()
    due = 0
    for entry in PeriodicTask.objects.filter(task=HEARTBEAT_TASK, enabled=True, interval__isnull=False):
        last = now - entry.interval.schedule.run_every
        if entry.last_run_at is None or entry.last_run_at > last:
            due += PeriodicTask.objects.filter(pk=entry.pk).update(last_run_at=last)
    return due


def _health(port: int) -> tuple[bool, str]:
    """Whether /healthz answers 200, and the components that fail when it does not."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=3) as response:
            return response.status == 200, ""
    except urllib.error.HTTPError as exc:
        try:
            failing = [c for c in json.loads(exc.read())["components"] if not c["ok"]]
            return False, "; ".join(f"{c['name']}: {c['detail']}" for c in failing)
        except (ValueError, KeyError, TypeError):
            return False, f"HTTP {exc.code}"
    except OSError as exc:
        return False, type(exc).__name__


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
    stopping = False

    def stop(*_args) -> None:
        nonlocal stopping
        stopping = True

    # Before the children start: from here a Ctrl-C only asks the loop below to stop them all.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children.update({name: _start(argv) for name, argv in commands.items()})
    exit_code = 0
    announced = False
    web_since = next_check = 0.0
    restarts: dict[str, list[float]] = {}
    while not stopping:
        now = time.monotonic()
        if not announced and now >= next_check and not _port_free(port):
            # Ready when the hub says so: workers alive and the scheduler's first heartbeat recorded.
            web_since = web_since or now
            next_check = now + 2
            healthy, failing = _health(port)
            if healthy or now - web_since > READY_WAIT_S:
                announced = True
                print(
                    f"\nReady: http://{HOST}:{port}/  (sign in as admin or operator; Ctrl-C stops everything)"
                    + (f"\n  /healthz still fails: {failing}" if not healthy else "")
                    + "\n",
                    flush=True,
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
            children[name] = _start(commands[name])
        time.sleep(0.5)
    print("\nStopping the hub's processes…", flush=True)
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + 20
    for child in children.values():
        _stop(child, timeout=max(0.1, deadline - time.monotonic()))
    return exit_code


def main() -> int:
    try:
        return _main()
    except KeyboardInterrupt:
        # Ctrl-C before the hub's processes started: each step already stopped its child.
        print("\ndemo: stopped", file=sys.stderr)
        return 130


def _main() -> int:
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
        simulator = _start(_simulator(token))
        try:
            _wait_for_port(SIMULATOR_PORT)
            _register_demo_site(token)
            _connect_moodle_events(port)
            heartbeat_due_now()
        except BaseException:
            _stop(simulator)
            raise
        print(f"\nStarting web, worker and beat; the hub will be at http://{HOST}:{port}/\n")
        return _supervise(_processes(port), port, {"simulator": simulator})


if __name__ == "__main__":
    sys.exit(main())
