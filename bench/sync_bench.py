"""Sync engine benchmark against the simulator over HTTP.

    make bench                      # both phases, results printed as JSON and Markdown
    python bench/sync_bench.py      # the same, when DATABASE_URL and REDIS_URL are already set

Phase "bootstrap": 10,000 new people into a simulated Moodle answering in 80 ± 40 ms, with the site's
default limits (2 calls in flight, 150 ms between call starts, 90 calls a minute, batches of 200).
Reports Moodle calls per 1,000 people, wall time against the throttle's floor for that many calls, and
the engine process's peak RSS.

Phase "incremental": 100,000 people already in step (their sync records are written directly, as a
finished bootstrap would have left them), then an incremental run over the unchanged source. Reports
write calls (must be 0), time and peak RSS.

Each phase runs the engine in its own process, so its peak RSS is its own.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
TOKEN = "bench-token-0123456789abcdef"  # noqa: S105 - the simulator's throwaway token
PORT = int(os.environ.get("BENCH_SIMULATOR_PORT", "8099"))
SIM_URL = f"http://127.0.0.1:{PORT}"


DEPTS = ["Nursing", "Law", "Physics"]


def write_people(path: Path, count: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["employee_id", "login", "first", "last", "mail", "dept"])
        for n in range(count):
            login = f"bench{n:07d}"
            name = f"Wiśniewska-{n}"
            writer.writerow([f"B{n:07d}", login, "Zofia", name, f"{login}@example.edu", DEPTS[n % 3]])


MAPPING = {
    "fields": {
        "username": {"source": "login", "transforms": ["strip", "lowercase"]},
        "email": "mail",
        "firstname": "first",
        "lastname": "last",
        "department": "dept",
    }
}


def throttle_floor(calls: int, spacing_s: float, per_minute: int) -> float:
    """The least time `calls` call starts can span under the throttle's two rules: starts at least
    `spacing_s` apart, and at most `per_minute` starts in any 60 s."""
    starts: list[float] = []
    for k in range(calls):
        t = starts[-1] + spacing_s if starts else 0.0
        if k >= per_minute:
            t = max(t, starts[k - per_minute] + 60.0)
        starts.append(t)
    return starts[-1] if starts else 0.0


def django_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integration_hub.settings")
    import django

    django.setup()


def make_site(slug: str, csv_path: Path):
    from sync.choices import TokenStatus
    from sync.models import MoodleSite, ServiceToken, SyncSource

    MoodleSite.objects.filter(slug=slug).delete()
    site = MoodleSite.objects.create(slug=slug, name=slug, base_url=SIM_URL)  # default limits
    token = ServiceToken(site=site, label="bench", status=TokenStatus.ACTIVE)
    token.set_token(TOKEN)
    token.save()
    SyncSource.objects.create(
        site=site, kind="csv", config={"path": str(csv_path), "id_column": "employee_id"}, mapping=MAPPING
    )
    return site


def sim_calls() -> dict:
    return httpx.get(f"{SIM_URL}/_sim/stats", timeout=30).json()["calls"]


def phase_bootstrap(people: int) -> dict:
    """Runs in its own process: bootstrap `people` people, report calls, time and peak RSS."""
    django_setup()
    from sync.choices import RunKind
    from sync.models import SyncRun
    from sync.run import engine

    folder = Path(tempfile.mkdtemp(prefix="bench-"))
    write_people(folder / "people.csv", people)
    site = make_site("bench-bootstrap", folder / "people.csv")
    httpx.post(f"{SIM_URL}/_sim/reset", timeout=30)
    started = time.monotonic()
    run = engine.execute(SyncRun.objects.queue(site, RunKind.BOOTSTRAP).pk)
    elapsed = time.monotonic() - started
    calls = sum(sim_calls().values())
    floor = throttle_floor(calls, site.min_spacing_ms / 1000, site.calls_per_minute)
    return {
        "phase": "bootstrap",
        "people": people,
        "status": run.status,
        "created": run.created,
        "moodle_calls": calls,
        "calls_per_1000_people": round(calls * 1000 / people, 1),
        "wall_s": round(elapsed, 1),
        "throttle_floor_s": round(floor, 1),
        "wall_over_floor": round(elapsed / floor, 3) if floor else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def phase_incremental(people: int) -> dict:
    """Runs in its own process: `people` unchanged records, one incremental run."""
    django_setup()
    from sync.choices import RunKind, SyncStatus
    from sync.mapping import Mapping
    from sync.models import SyncRecord, SyncRun
    from sync.run import engine
    from sync.sources import open_source

    folder = Path(tempfile.mkdtemp(prefix="bench-"))
    csv_path = folder / "people.csv"
    write_people(csv_path, people)
    site = make_site("bench-incremental", csv_path)
    mapping = Mapping.from_config(MAPPING)
    batch = []
    for n, record in enumerate(
        open_source({"kind": "csv", "path": str(csv_path), "id_column": "employee_id"}).records()
    ):
        mapped = mapping.apply(record)
        batch.append(SyncRecord(
            site=site, external_id=mapped.external_id, moodle_id=100 + n, external_hash=mapped.hash,
            payload_hash=mapped.hash, payload=mapped.payload, sync_status=SyncStatus.OK,
            username=mapped.payload["username"], email=mapped.payload["email"],
        ))  # fmt: skip
        if len(batch) == 5000:
            SyncRecord.objects.bulk_create(batch)
            batch = []
    SyncRecord.objects.bulk_create(batch)
    del batch, mapping
    httpx.post(f"{SIM_URL}/_sim/reset", timeout=30)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.monotonic()
    run = engine.execute(SyncRun.objects.queue(site, RunKind.INCREMENTAL).pk)
    elapsed = time.monotonic() - started
    calls = sim_calls()
    writes = sum(n for fn, n in calls.items() if fn.startswith(("core_user_create", "core_user_update")))
    return {
        "phase": "incremental",
        "people": people,
        "status": run.status,
        "unchanged": run.unchanged,
        "moodle_calls": sum(calls.values()),
        "write_calls": writes,
        "wall_s": round(elapsed, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_before_run_mb": round(rss_before, 1),
    }


def run_phase(name: str, people: int) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--phase", name, str(people)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] == ["--phase"]:
        phase = {"bootstrap": phase_bootstrap, "incremental": phase_incremental}[sys.argv[2]]
        print(json.dumps(phase(int(sys.argv[3]))))
        return
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=BASE_DIR, check=True
    )
    simulator = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", str(PORT), "--control", "--token", TOKEN,
         "--latency-ms", "80", "--jitter-ms", "40"],
        cwd=BASE_DIR, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                httpx.get(f"{SIM_URL}/_sim/stats", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        results = [
            run_phase("bootstrap", int(os.environ.get("BENCH_BOOTSTRAP_PEOPLE", "10000"))),
            run_phase("incremental", int(os.environ.get("BENCH_INCREMENTAL_PEOPLE", "100000"))),
        ]
    finally:
        simulator.terminate()
        simulator.wait()
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
