"""Chaos suite: a bootstrap of 5,000 people through real Celery workers while the hub's services fail.

    make chaos                        # everything, from a bare machine (embedded PostgreSQL and Redis)
    .venv/bin/python bench/chaos.py   # the same
    .venv/bin/python bench/chaos.py kill_9 redis_restart_empty    # chosen experiments (clean always first)

Every experiment starts from scratch: a fresh database (copied from a template migrated once), an empty
Redis, a fresh simulated Moodle over HTTP (flat profile, LATENCY_MS a call), a site with the default limits
and a CSV source of 5,000 people (made as bench/sync_bench.py makes them), a run worker (`-Q celery`) and a
monitor worker (`-Q monitoring`) as `celery -A integration_hub worker` processes, and `celery -A
integration_hub beat` with the database scheduler, whose "Watch runs" entry sends the watchdog
(sync.watch_runs) every 30 s. The bootstrap is queued as an operator queues it, `manage.py sync chaos --mode
bootstrap --async`, and goes through the broker to the worker. Then one fault:

    clean                     none: the minimum of write calls and look-ups the others are compared with
    lost_answer               Moodle does one core_user_create_users call, the hub gets a 504
    postgres_restart          `pg_ctl stop -m fast` mid-run, started again 10 s later
    redis_restart_empty       redis-server SIGKILLed mid-run, started again EMPTY on the same port 10 s later
    kill_9                    the worker executing the run SIGKILLed 5 times at random points; a replacement
                              is started each time, as compose's restart policy would
    moodle_stall              every core_user_create_users held at Moodle for 60 s, then released
    queued_while_redis_down   Redis down, the run queued with `--async`, Redis back (empty) 10 s after it went

The script plays the faults and a process supervisor (a hub process that exits is started again, and that
is recorded); it never starts, resumes, retries or cancels a run: nothing a person would do is done for the
hub. Hub settings are the defaults (RUN_LOCK_TTL_S=60, RUN_STALE_S=45, HUB_SERVICE_WAIT_S=300,
RUN_RESEND_S=300) unless set in the environment; the summary line says which were used.

Each experiment prints one JSON line to stdout as it ends; then a table of all. The exit status is 1 when
any experiment misses one of: 5,000/5,000 people in Moodle, no idnumber twice, every record ok, no conflict,
as many CallLog rows as Moodle counted calls, the run succeeded by itself (one run, none left queued). Logs
of every process are under var/chaos/<experiment>/; the last experiment's database stays in var/chaos/pg.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chaos_services
from chaos_services import BASE_DIR, Postgres, Proc, Redis, Simulator, end_leftovers, wait_until
from sync_bench import MAPPING, write_people  # the benchmark's people and mapping

from integration_hub.devservices import dev_secrets

PEOPLE = 5000
SITE = "chaos"
TOKEN = "chaos-token-0123456789abcdef"  # noqa: S105 - the simulator's throwaway token
VAR = BASE_DIR / "var" / "chaos"
DATABASE = "chaos"
TEMPLATE = "chaos_template"
# Moodle's time per call in the simulator's flat profile: short, so the suite is short, yet long enough that
# a fault lands while calls are at Moodle. A clean bootstrap of 5,000 takes about 6 s.
LATENCY_MS = 100.0
# A fault lands once the run has sent this many creates (a clean bootstrap of 5,000 sends 18 of 250-334
# people): the first batch of 2,000 is created and committed, the second is at Moodle, the third not sent.
MID_RUN_CREATES = 10
FAULT_S = 10.0  # how long PostgreSQL and Redis stay down
STALL_S = 60.0  # how long Moodle holds every create
KILLS = 5
SUITE_BUDGET_S = 25 * 60  # the hard limit of the whole suite; each experiment has its own below
LOOKUPS = ("core_user_get_users_by_field", "core_user_get_users")
WRITES = ("core_user_create_users", "core_user_update_users")
HUB_DEFAULTS = {
    "RUN_LOCK_TTL_S": "60",
    "RUN_STALE_S": "45",
    "HUB_SERVICE_WAIT_S": "300",
    "RUN_RESEND_S": "300",
}


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# -- what lasts the suite, and the Django side of this process ----------------------------------------


class Suite:
    """PostgreSQL with a migrated template database, the Redis port every experiment uses, the CSV, and the
    environment of the hub's processes."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)  # fault timing, not security
        self.postgres = Postgres(VAR / "pg")
        self.redis_port = Redis(VAR / "redis").port  # fixed: a Redis restarted comes back where it was
        self.csv = VAR / "people.csv"
        self.env: dict[str, str] = {}

    def start(self) -> None:
        self.postgres.start()
        self.env = {
            **os.environ,
            **{name: value for name, value in HUB_DEFAULTS.items() if name not in os.environ},
            **dev_secrets(VAR),
            "DJANGO_SETTINGS_MODULE": "integration_hub.settings",
            "DATABASE_URL": self.postgres.url(DATABASE),
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "HTTPS": "0",
            "PYTHONUNBUFFERED": "1",
        }
        self.postgres.fresh_database(TEMPLATE)
        log("migrating the template database")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
            cwd=BASE_DIR, env={**self.env, "DATABASE_URL": self.postgres.url(TEMPLATE)}, check=True,
        )  # fmt: skip
        write_people(self.csv, PEOPLE)
        os.environ.update(self.env)  # this process reads each experiment's database through Django
        import django

        django.setup()

    def stop(self) -> None:
        close_db()
        self.postgres.stop()


def close_db() -> None:
    from django.db import connections

    connections.close_all()


def db(query: Callable, default=None):
    """A read of the hub's database that survives the database being down (it gives `default` then)."""
    from django.db import DatabaseError, InterfaceError

    try:
        return query()
    except (DatabaseError, InterfaceError):
        close_db()
        return default


def make_site(sim_url: str, csv_path: Path):
    """The site as an admin adds it: default limits (2 calls in flight, 150 ms apart, 90 a minute, batches
    of 2,000), an active token for the simulator, the benchmark's CSV source and mapping."""
    from sync.choices import TokenStatus
    from sync.models import MoodleSite, ServiceToken, SyncSource

    site = MoodleSite.objects.create(slug=SITE, name="Chaos University", base_url=sim_url, languages="en")
    token = ServiceToken(site=site, label="chaos", status=TokenStatus.ACTIVE)
    token.set_token(TOKEN)
    token.save()
    SyncSource.objects.create(
        site=site, kind="csv", config={"path": str(csv_path), "id_column": "employee_id"}, mapping=MAPPING
    )
    return site


# -- one experiment's processes ----------------------------------------------------------------------


@dataclass
class Restart:
    process: str
    exit_code: int | None
    at_s: float  # after the run was queued


class Stack:
    """One experiment's Redis, simulated Moodle, workers and beat, and the supervisor that keeps the hub's
    processes up (compose's `restart: unless-stopped`)."""

    def __init__(self, suite: Suite, name: str) -> None:
        self.suite = suite
        self.dir = VAR / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.redis = Redis(self.dir / "redis", port=suite.redis_port)
        self.sim = Simulator(TOKEN, self.dir / "simulator.log", latency_ms=LATENCY_MS)
        self.hub: dict[str, Proc] = {}
        self.restarts: list[Restart] = []
        self.kills: list[dict] = []
        self.t0 = time.time()  # moved to the moment the run is queued

    def start(self) -> None:
        self.suite.postgres.fresh_database(DATABASE, template=TEMPLATE)
        self.redis.start()
        self.sim.start()
        celery = [sys.executable, "-m", "celery", "-A", "integration_hub"]
        tag = os.getpid()
        commands = {
            # Runs, on the prefork pool as in production: a kill of the group takes its pool children too.
            "worker": [*celery, "worker", "-Q", "celery", "--pool", "prefork", "--concurrency", "2",
                       "--loglevel", "INFO", "--hostname", f"chaos-worker-{tag}@%h"],
            # Supervision on a worker of its own, as in compose: the watchdog never waits behind a run.
            "monitor": [*celery, "worker", "-Q", "monitoring", "--pool", "prefork", "--concurrency", "1",
                        "--loglevel", "INFO", "--hostname", f"chaos-monitor-{tag}@%h"],
            "beat": [*celery, "beat", "--loglevel", "INFO", "--pidfile", str(self.dir / "beat.pid")],
        }  # fmt: skip
        for name, argv in commands.items():
            self.hub[name] = Proc(name, argv, self.suite.env, self.dir / f"{name}.log").start()
        for name in ("worker", "monitor"):
            self.wait_ready(name)

    def wait_ready(self, name: str, timeout: float = 90) -> None:
        """A worker is ready when its log says so, once for each time it was started."""
        proc = self.hub[name]

        def ready() -> bool:
            self.supervise()
            return proc.log.read_text(errors="replace").count(" ready.") >= proc.starts

        wait_until(ready, timeout, f"the {name} to be ready", interval=0.3)

    def supervise(self) -> None:
        """Start again a hub process that exited by itself."""
        for name, proc in self.hub.items():
            if proc.popen is not None and not proc.alive():
                code = proc.exit_code()
                proc.stop()  # reap it, and any child left in its group
                self.restarts.append(Restart(name, code, round(time.time() - self.t0, 1)))
                log(f"  supervisor: {name} exited with {code}; starting it again")
                proc.start()

    def sleep(self, seconds: float) -> None:
        """Wait, supervising the hub's processes meanwhile."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.supervise()
            time.sleep(min(0.2, left))

    def kill_worker(self, note: dict) -> None:
        """SIGKILL the run worker's whole process group (main process and pool children), then start its
        replacement at once."""
        proc = self.hub["worker"]
        pid = proc.pid
        proc.kill(signal.SIGKILL)
        proc.stop()
        self.kills.append({"pid": pid, "at_s": round(time.time() - self.t0, 1), **note})
        proc.start()

    def stop_hub(self) -> None:
        """Workers and beat first, all at once (SIGTERM, then SIGKILL): no call starts while we count. One
        that had exited by itself meanwhile is recorded, not started again."""
        for name, proc in self.hub.items():
            if proc.popen is not None and not proc.alive():
                self.restarts.append(Restart(f"{name} (at the end, not restarted)", proc.exit_code(), 0.0))
        for proc in self.hub.values():
            proc.kill(signal.SIGTERM)
        for proc in self.hub.values():
            proc.stop(timeout=20)

    def stop(self) -> None:
        self.stop_hub()
        self.sim.stop()
        self.redis.stop()

    def fatal_log_lines(self) -> list[str]:
        """What the hub's processes logged as CRITICAL (a worker's "Unrecoverable error" that shuts it down:
        it finishes its task, then exits), by process."""
        found = []
        for name, proc in self.hub.items():
            for line in proc.log.read_text(errors="replace").splitlines():
                if " CRITICAL " in line:
                    found.append(f"{name}: {line.split(' CRITICAL ', 1)[1][:160]}")
        return found


# -- watching the run --------------------------------------------------------------------------------


def queue_bootstrap(stack: Stack) -> tuple[int | None, dict]:
    """`manage.py sync chaos --mode bootstrap --async`, as an operator queues it; the run's id."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "manage.py", "sync", SITE, "--mode", "bootstrap", "--async", "--json"],
        cwd=BASE_DIR, env=stack.suite.env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    (stack.dir / "sync-command.log").write_text(done.stdout + "\n---- stderr\n" + done.stderr)
    info = {"exit": done.returncode, "seconds": round(time.monotonic() - started, 1)}
    match = re.search(r'"run_id":\s*(\d+)', done.stdout)
    return (int(match.group(1)) if match else None), info


def run_row(run_id: int):
    from sync.models import SyncRun

    return db(lambda: SyncRun.objects.filter(pk=run_id).first())


def run_ended(run_id: int) -> bool:
    from sync.choices import RunStatus

    run = run_row(run_id)
    return run is not None and run.status in RunStatus.terminal()


def wait_for_run_end(stack: Stack, run_id: int, deadline: float) -> bool:
    def ended() -> bool:
        stack.supervise()
        return run_ended(run_id)

    try:
        wait_until(ended, max(1.0, deadline - time.monotonic()), f"run #{run_id} to end", interval=0.5)
        return True
    except TimeoutError:
        return False


def user_calls(stack: Stack, prefix: str = "core_user_") -> int:
    return sum(n for fn, n in stack.sim.stats()["calls"].items() if fn.startswith(prefix))


def mid_run(stack: Stack, deadline: float) -> None:
    """Wait for the moment a fault lands: MID_RUN_CREATES create calls sent."""

    def reached() -> bool:
        stack.supervise()
        return user_calls(stack, "core_user_create_users") >= MID_RUN_CREATES

    wait_until(reached, max(1.0, deadline - time.monotonic()), "the run to reach mid-run", interval=0.1)


# -- the faults --------------------------------------------------------------------------------------


@dataclass
class Fault:
    """Each episode of the fault as (began, over) in wall-clock seconds, and what happened on the way."""

    episodes: list[tuple[float, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def fault_none(stack: Stack, run_id: int, deadline: float) -> Fault:
    return Fault()


def fault_lost_answer(stack: Stack, run_id: int, deadline: float) -> Fault:
    """The next create is done by Moodle and answered 504 (the simulator's "lost" kind)."""
    mid_run(stack, deadline)
    began = time.time()
    stack.sim.control("POST", "inject", {"kinds": ["lost"], "function": "core_user_create_users"})

    def answered() -> bool:
        stack.supervise()
        return stack.sim.stats()["injected_errors"].get("lost", 0) >= 1

    wait_until(answered, max(1.0, deadline - time.monotonic()), "the lost answer", interval=0.05)
    return Fault([(began, time.time())])


def fault_postgres_restart(stack: Stack, run_id: int, deadline: float) -> Fault:
    mid_run(stack, deadline)
    close_db()
    postgres = stack.suite.postgres
    before = postgres.postmaster_pid()
    began = time.time()
    postgres.fast_shutdown()
    try:
        stack.sleep(FAULT_S)
    finally:  # whatever happens meanwhile, the suite's PostgreSQL comes back
        postgres.start_again()
    fault = Fault([(began, time.time())])
    fault.notes.append(f"postmaster {before} stopped (fast), {postgres.postmaster_pid()} started")
    return fault


def fault_redis_restart_empty(stack: Stack, run_id: int, deadline: float) -> Fault:
    mid_run(stack, deadline)
    began = time.time()
    stack.redis.crash()
    stack.sleep(FAULT_S)
    stack.redis.start()
    return Fault([(began, time.time())])


def fault_kill_9(stack: Stack, run_id: int, deadline: float) -> Fault:
    """KILLS times: wait until a worker claims the run (its claim goes up), let it work for a random while
    (8-16 more Moodle calls about users for the first, 0-6 for the others, then 0-1 s), SIGKILL it and
    start a replacement. Nobody tells the hub: the watchdog must notice (no heartbeat for RUN_STALE_S, the
    lock expired after RUN_LOCK_TTL_S)."""
    from sync.choices import RunStatus

    fault = Fault()
    claim_seen = 0
    reclaimed_after: list[float] = []
    for kill in range(1, KILLS + 1):

        def claimed(seen=claim_seen):
            stack.supervise()
            run = run_row(run_id)
            if run is not None and run.status in RunStatus.terminal():
                return "ended"
            return run if run is not None and run.status == RunStatus.RUNNING and run.claim > seen else None

        state = wait_until(claimed, max(1.0, deadline - time.monotonic()), "a worker to take the run", 0.2)
        if state == "ended":
            fault.notes.append(f"the run ended before kill {kill}")
            break
        claim_seen = state.claim
        if fault.episodes:
            reclaimed_after.append(round(time.time() - fault.episodes[-1][0], 1))
        # The first worker goes further (into the second batch, the first one committed); the others are
        # killed early in their attempt, while they look up again what the last one left.
        calls_then = user_calls(stack)
        more = stack.suite.rng.randint(8, 16) if kill == 1 else stack.suite.rng.randint(0, 6)

        def worked(target=calls_then + more) -> bool:
            stack.supervise()
            return user_calls(stack) >= target or run_ended(run_id)

        wait_until(worked, max(1.0, deadline - time.monotonic()), "the worker to make calls", 0.05)
        stack.sleep(stack.suite.rng.uniform(0, 1.0))
        if run_ended(run_id):
            fault.notes.append(f"the run ended before kill {kill}")
            break
        stats = stack.sim.stats()
        note = {
            "claim": claim_seen,
            "user_calls_since_claim": user_calls(stack) - calls_then,
            "calls_at_moodle": stats["in_flight"],
            "people_in_moodle": stack.sim.people(),
        }
        now = time.time()
        stack.kill_worker(note)
        fault.episodes.append((now, now))
        log(f"  kill {kill}: {note}")
    fault.extra["reclaimed_after_kill_s"] = reclaimed_after
    return fault


def fault_moodle_stall(stack: Stack, run_id: int, deadline: float) -> Fault:
    """Moodle stops answering creates: each one waits at the site until the release (the simulator's hold)."""
    mid_run(stack, deadline)
    began = time.time()
    stack.sim.control("POST", "hold", {"function": "core_user_create_users"})
    try:
        stack.sleep(STALL_S)
    finally:
        stack.sim.control("POST", "release", {"function": "core_user_create_users"})
    return Fault([(began, time.time())])


def queued_while_redis_down(stack: Stack) -> tuple[int | None, Fault, dict]:
    """Redis goes; two seconds later an operator queues the bootstrap; Redis is back, empty, FAULT_S after it
    went. The run's task never reached a broker: the watchdog must send it (a queued run with no task)."""
    began = time.time()
    stack.redis.crash()
    stack.sleep(2)
    stack.t0 = time.time()
    run_id, command = queue_bootstrap(stack)
    stack.sleep(max(0.0, began + FAULT_S - time.time()))
    stack.redis.start()
    fault = Fault([(began, time.time())])
    fault.notes.append(f"sync --async while Redis was down: exit {command['exit']} in {command['seconds']} s")
    return run_id, fault, command


# -- one experiment ----------------------------------------------------------------------------------


@dataclass
class Experiment:
    name: str
    fault: Callable[[Stack, int, float], Fault] | None  # None: the fault comes before the run is queued
    timeout_s: float
    what: str


EXPERIMENTS = [
    Experiment("clean", fault_none, 120, "no fault"),
    Experiment("lost_answer", fault_lost_answer, 120, "one create done by Moodle, answered 504"),
    Experiment("postgres_restart", fault_postgres_restart, 180, f"pg_ctl stop -m fast, {FAULT_S:.0f} s down"),
    Experiment("redis_restart_empty", fault_redis_restart_empty, 240, f"Redis killed, {FAULT_S:.0f} s down"),
    Experiment("kill_9", fault_kill_9, 600, f"run worker SIGKILLed {KILLS} times at random"),
    Experiment("moodle_stall", fault_moodle_stall, 180, f"creates held at Moodle {STALL_S:.0f} s"),
    Experiment("queued_while_redis_down", None, 240, "run queued while Redis down, back empty"),
]  # fmt: skip


def experiment(suite: Suite, spec: Experiment, budget_left: float) -> dict:
    log(f"== {spec.name}: {spec.what}")
    result: dict = {"experiment": spec.name, "fault": spec.what}
    fault, run_id = Fault(), None
    started = time.monotonic()
    deadline = started + min(spec.timeout_s, budget_left)
    stack = Stack(suite, spec.name)
    try:
        stack.start()
        close_db()  # the database was made anew: no connection to the last one may be reused
        make_site(stack.sim.url, suite.csv)
        if spec.fault is None:
            run_id, fault, command = queued_while_redis_down(stack)
        else:
            stack.t0 = time.time()
            run_id, command = queue_bootstrap(stack)
            if run_id is None:
                raise RuntimeError(f"the sync command queued no run: {command}")
            fault = spec.fault(stack, run_id, deadline)
        result["sync_command"] = command
        result["finished_in_time"] = wait_for_run_end(stack, run_id, deadline)
        if not result["finished_in_time"]:
            result["error"] = f"the run had not ended after {deadline - started:.0f} s (its time limit)"
    except Exception as exc:  # a failure of the experiment itself: recorded, and the suite goes on
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"  {result['error']}")
    finally:
        stack.stop_hub()  # nothing may call Moodle or write a CallLog row while we count
        try:
            if run_id is not None:
                result.update(measure(stack, run_id, fault))
        except Exception as exc:  # e.g. the database never came back: say so, and go on
            result.setdefault("error", f"could not measure: {type(exc).__name__}: {exc}")
        finally:
            stack.stop()
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["restarts"] = [asdict(r) for r in stack.restarts]
    result["kills"] = stack.kills
    result["critical_log_lines"] = stack.fatal_log_lines()
    result["fault_notes"] = fault.notes
    result.update(fault.extra)
    return result


def measure(stack: Stack, run_id: int, fault: Fault) -> dict:
    """What Moodle holds, what the hub recorded and what the run cost, with every hub process stopped."""
    from monitoring.models import CallLog
    from sync.choices import RunStatus, SyncStatus
    from sync.models import Conflict, DeadLetter, SyncRecord, SyncRun

    stats = stack.sim.stats()
    idnumbers = [u["idnumber"] for u in stack.sim.users() if u.get("idnumber")]
    wanted = {f"B{n:07d}" for n in range(PEOPLE)}
    calls = stats["calls"]
    logged = Counter(CallLog.objects.values_list("function", flat=True))
    conflicts = list(Conflict.objects.filter(site__slug=SITE).select_related("record"))
    run = SyncRun.objects.get(pk=run_id)
    records = SyncRecord.objects.filter(site__slug=SITE)
    events = list(run.events.order_by("at", "pk").values_list("message", flat=True))
    # The run goes on when Moodle hears from it again about users (a probe's site info does not count).
    user_call_starts = sorted(s[0] for s in stats["call_starts"] if s[1].startswith("core_user_"))
    continued = []
    for began, over in fault.episodes:
        after = next((t for t in user_call_starts if t >= over), None)
        continued.append(round(after - began, 1) if after is not None else None)
    finished = run.finished_at.timestamp() if run.finished_at else None
    last_began = fault.episodes[-1][0] if fault.episodes else None
    return {
        "status": run.status,
        "abort_reason": run.abort_reason,
        "claims": run.claim,
        "runs_on_site": SyncRun.objects.filter(site__slug=SITE).count(),
        "runs_left_queued": SyncRun.objects.filter(site__slug=SITE, status=RunStatus.QUEUED).count(),
        "present": len(set(idnumbers) & wanted),
        "duplicates": len(idnumbers) - len(set(idnumbers)),
        "records": records.count(),
        "records_not_ok": records.exclude(sync_status=SyncStatus.OK).count(),
        "conflicts": len(conflicts),
        "self_conflicts": sum(
            1 for c in conflicts if any(str(u.get("idnumber")) == c.record.external_id for u in c.their_users)
        ),
        "dead_letters": DeadLetter.objects.filter(site__slug=SITE).count(),
        "run_counters": {
            "created": run.created,
            "unchanged_or_linked": run.unchanged,
            "errors": run.errors,
            "progress": f"{run.progress_done}/{run.progress_total}",
        },
        "write_calls": sum(calls.get(fn, 0) for fn in WRITES),
        "lookup_calls": sum(calls.get(fn, 0) for fn in LOOKUPS),
        "moodle_calls_by_function": calls,
        "moodle_calls": stats["total_calls"],
        "calllog_rows": sum(logged.values()),
        "calllog_minus_moodle": {
            fn: logged.get(fn, 0) - calls.get(fn, 0)
            for fn in sorted(set(logged) | set(calls))
            if logged.get(fn, 0) != calls.get(fn, 0)
        },
        "calllog_left_sending": CallLog.objects.filter(outcome="sending").count(),
        "run_calls_counter": run.calls,
        "injected": stats["injected_errors"],
        "plans": sum(1 for m in events if m.startswith("Read ")),
        "fault_s": [round(over - began, 1) for began, over in fault.episodes],
        "fault_to_continued_s": continued,
        "fault_to_finished_s": round(finished - last_began, 1) if finished and last_began else None,
        "run_s": round(run.duration.total_seconds(), 1) if run.duration else None,
        "events": events[:40],
    }


# -- verdict and table -------------------------------------------------------------------------------


def violations(row: dict) -> list[str]:
    problems = [row["error"]] if "error" in row else []
    checks = [
        (row.get("present") == PEOPLE, f"{row.get('present')}/{PEOPLE} present"),
        (row.get("duplicates") == 0, f"{row.get('duplicates')} duplicates"),
        (row.get("records_not_ok") == 0, f"{row.get('records_not_ok')} records not ok"),
        (row.get("conflicts") == 0, f"{row.get('conflicts')} conflicts"),
        (
            row.get("calllog_rows") == row.get("moodle_calls"),
            f"CallLog {row.get('calllog_rows')} ≠ Moodle {row.get('moodle_calls')}",
        ),
        (row.get("status") == "succeeded", f"run {row.get('status')}"),
        (row.get("runs_on_site") == 1, f"{row.get('runs_on_site')} runs on the site"),
        (row.get("runs_left_queued") == 0, f"{row.get('runs_left_queued')} runs left queued"),
    ]
    if row["experiment"] == "kill_9":
        checks.append((len(row.get("kills", [])) == KILLS, f"{len(row.get('kills', []))} of {KILLS} kills"))
    return problems + [text for ok, text in checks if not ok]


def notes(row: dict) -> str:
    """What the table's last column says: why the run stopped, or what went on under it."""
    parts = [row.get("abort_reason") or row.get("error") or ""]
    if row.get("plans", 1) > 1:
        parts.append(f"source read {row['plans']} times")
    if row.get("calllog_minus_moodle"):
        diff = ", ".join(
            f"{fn.removeprefix('core_')} {n:+d}" for fn, n in row["calllog_minus_moodle"].items()
        )
        parts.append(f"CallLog minus Moodle: {diff}")
    if row.get("calllog_left_sending"):
        left = row["calllog_left_sending"]
        parts.append(f"{left} row{'' if left == 1 else 's'} left 'sending'")
    if row.get("kills"):
        parts.append(f"{len(row['kills'])} kills")
    for line in row.get("critical_log_lines", []):
        parts.append(f"CRITICAL {line}")
    return "; ".join(p for p in parts if p)[:300].replace("|", "/")


def table(rows: list[dict]) -> str:
    clean = next((r for r in rows if r["experiment"] == "clean" and "write_calls" in r), {})
    head = [
        "experiment", "run status", "in Moodle", "dup", "not ok", "conflicts", "writes (clean)",
        "extra look-ups", "CallLog / Moodle calls", "person needed", "restarts", "fault → continued",
        "fault → finished", "notes",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        extra = r["lookup_calls"] - clean["lookup_calls"] if clean and "lookup_calls" in r else "—"
        continued = [c for c in r.get("fault_to_continued_s", []) if c is not None]
        cells = [
            r["experiment"],
            r.get("status", "—"),
            f"{r.get('present', '—')}/{PEOPLE}",
            r.get("duplicates", "—"),
            r.get("records_not_ok", "—"),
            r.get("conflicts", "—"),
            f"{r.get('write_calls', '—')} ({clean.get('write_calls', '—')})",
            extra,
            f"{r.get('calllog_rows', '—')} / {r.get('moodle_calls', '—')}",
            "no" if r.get("status") == "succeeded" and r.get("finished_in_time") else "YES",
            ", ".join(f"{x['process']} (exit {x['exit_code']})" for x in r.get("restarts", [])) or "0",
            ("max " if len(continued) > 1 else "") + (f"{max(continued):.1f} s" if continued else "—"),
            f"{r['fault_to_finished_s']:.1f} s" if r.get("fault_to_finished_s") is not None else "—",
            notes(r),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------------


def prepare_var() -> None:
    """A clean var/chaos: what an interrupted earlier suite left running there is ended first (only the
    processes it noted starting, by pid), then the folder is made anew."""
    registry = VAR / "pids.txt"
    ended = end_leftovers(registry)
    if ended:
        log(f"ended {len(ended)} processes left by an interrupted suite: {ended}")
    Postgres(VAR / "pg").stop_leftover()
    shutil.rmtree(VAR, ignore_errors=True)
    VAR.mkdir(parents=True)
    chaos_services.REGISTRY = registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="*", help=", ".join(e.name for e in EXPERIMENTS))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", "20261201")))
    args = parser.parse_args(argv)
    unknown = set(args.experiments) - {e.name for e in EXPERIMENTS}
    if unknown:
        parser.error(f"unknown experiment(s): {', '.join(sorted(unknown))}")
    chosen = [e for e in EXPERIMENTS if not args.experiments or e.name in {*args.experiments, "clean"}]
    # A SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so every process is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    prepare_var()
    suite = Suite(args.seed)
    rows: list[dict] = []
    settings_used: dict = {}
    began = time.monotonic()
    try:
        suite.start()
        from django.conf import settings

        settings_used.update({name: getattr(settings, name) for name in HUB_DEFAULTS})
        log(f"seed {args.seed}; hub settings {settings_used}; Moodle {LATENCY_MS:.0f} ms a call")
        for spec in chosen:
            budget_left = SUITE_BUDGET_S - (time.monotonic() - began)
            if budget_left < 60:
                row = {"experiment": spec.name, "fault": spec.what, "error": "not run: suite budget spent"}
            else:
                row = experiment(suite, spec, budget_left)
            row["violations"] = violations(row)
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False, default=str), flush=True)
            verdict = "; ".join(row["violations"]) or "every check holds"
            log(f"  {spec.name}: {row.get('status')} — {verdict}")
    finally:
        suite.stop()
    print()
    print(
        f"Chaos suite {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.uname().nodename} "
        f"({os.cpu_count()} cores), "
        f"seed {args.seed}, {PEOPLE:,} people, Moodle {LATENCY_MS:.0f} ms a call, hub settings "
        f"{settings_used}, {time.monotonic() - began:.0f} s in all"
    )
    print()
    print(table(rows))
    failed = [r["experiment"] for r in rows if r["violations"]]
    print(f"\nFAILED: {', '.join(failed)}" if failed else "\nEvery experiment holds.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
