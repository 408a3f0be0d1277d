"""Sync benchmark against the simulator over HTTP, calibrated on a real Moodle 5.1 (`--profile moodle51`).

    make bench                      # every phase; results printed as JSON lines
    python bench/sync_bench.py      # the same, when DATABASE_URL and REDIS_URL are already set
    python bench/sync_bench.py bootstrap:1000 naive:1000      # chosen phases only

The simulator spends what a real Moodle 5.1 on 2 cores spends on each call (simulator/costs.py: about 6 ms
for each user created, growing with the users already there; 30 ms for a look-up that finds nobody), so a
figure here is comparable with Moodle's own CLI upload of the same people: 4.7 ms a person
(shared/MOODLE_FACTS.md, "Load"). Every phase starts from a fresh, empty simulated Moodle and a site with
the default limits (2 calls in flight, 150 ms between call starts, 90 calls a minute, batches of 2,000
whose write calls are sized by time and max_input_vars).

Phases:
- bootstrap:N   the hub's bootstrap of N new people: Moodle calls, wall time against the CLI yardstick and
                the throttle's floor, breaker openings, peak RSS;
- naive:N       a naive REST client on one connection: one look-up and one create per person;
- storm:N       N people whose lang Moodle lacks (the site's settings wrongly list it): calls until the run
                stops, and its reason;
- suspended:N   N people with `suspended` mapped, one in ten of whom has left: who is created, in how many
                calls;
- incremental:N N people already in step: write calls (must be 0), time, peak RSS.

Each phase runs in its own process, so its peak RSS is its own.
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
CLI_MS_PER_PERSON = 4.7  # Moodle's admin/tool/uploaduser CLI, in-process, on the same Moodle
DEFAULT_PHASES = [
    "bootstrap:1000", "bootstrap:10000", "naive:1000", "storm:1000", "suspended:1000", "incremental:100000",
]  # fmt: skip

DEPTS = ["Nursing", "Law", "Physics"]
MAPPING = {
    "fields": {
        "username": {"source": "login", "transforms": ["strip", "lowercase"]},
        "email": "mail",
        "firstname": "first",
        "lastname": "last",
        "department": "dept",
        "institution": "inst",
        "city": "city",
        "country": "country",
        "lang": "lang",
    }
}


def people_rows(count: int, *, lang: str = "en", left_every: int = 0):
    for n in range(count):
        login = f"bench{n:07d}"
        row = {
            "employee_id": f"B{n:07d}", "login": login, "first": "Zofia", "last": f"Wiśniewska-{n}",
            "mail": f"{login}@example.edu", "dept": DEPTS[n % 3], "inst": "Uniwersytet", "city": "Łódź",
            "country": "PL", "lang": lang,
        }  # fmt: skip
        if left_every:
            row["left"] = "1" if n % left_every == 0 else "0"
        yield row


def write_people(path: Path, count: int, **options) -> None:
    rows = people_rows(count, **options)
    first = next(rows)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(first))
        writer.writeheader()
        writer.writerow(first)
        writer.writerows(rows)


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


def make_site(slug: str, csv_path: Path, mapping: dict = MAPPING, languages: str = "en"):
    from sync.choices import TokenStatus
    from sync.models import MoodleSite, ServiceToken, SyncSource

    MoodleSite.objects.filter(slug=slug).delete()
    site = MoodleSite.objects.create(slug=slug, name=slug, base_url=SIM_URL, languages=languages)
    if os.environ.get("BENCH_BATCH_SIZE"):  # to compare batch sizes; the default is the site's
        site.batch_size = int(os.environ["BENCH_BATCH_SIZE"])
        site.save()
    token = ServiceToken(site=site, label="bench", status=TokenStatus.ACTIVE)
    token.set_token(TOKEN)
    token.save()
    SyncSource.objects.create(
        site=site, kind="csv", config={"path": str(csv_path), "id_column": "employee_id"}, mapping=mapping
    )
    return site


def sim_stats() -> dict:
    return httpx.get(f"{SIM_URL}/_sim/stats", timeout=30).json()


def run_engine(site, kind: str):
    from monitoring.models import BreakerEvent
    from sync.models import SyncRun
    from sync.run import engine

    started = time.monotonic()
    run = engine.execute(SyncRun.objects.queue(site, kind).pk)
    elapsed = time.monotonic() - started
    openings = BreakerEvent.objects.filter(site=site, new_state="open").count()
    return run, elapsed, openings


def phase_bootstrap(people: int) -> dict:
    """The hub's bootstrap of `people` new people."""
    django_setup()
    folder = Path(tempfile.mkdtemp(prefix="bench-"))
    write_people(folder / "people.csv", people)
    site = make_site("bench-bootstrap", folder / "people.csv")
    run, elapsed, openings = run_engine(site, "bootstrap")
    stats = sim_stats()
    calls = stats["total_calls"]
    floor = throttle_floor(calls, site.min_spacing_ms / 1000, site.calls_per_minute)
    return {
        "phase": "bootstrap",
        "people": people,
        "status": run.status,
        "created": run.created,
        "moodle_calls": calls,
        "calls_by_function": stats["calls"],
        "calls_per_1000_people": round(calls * 1000 / people, 1),
        "wall_s": round(elapsed, 2),
        "cli_yardstick_s": round(people * CLI_MS_PER_PERSON / 1000, 2),
        "wall_over_cli": round(elapsed / (people * CLI_MS_PER_PERSON / 1000), 2),
        "moodle_server_s": round(stats["server_ms_total"] / 1000, 2),
        "throttle_floor_s": round(floor, 2),
        "wall_over_floor": round(elapsed / floor, 2) if floor else None,
        "max_in_flight": stats["max_in_flight"],
        "breaker_openings": openings,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def phase_naive(people: int) -> dict:
    """A naive client: for each person, one look-up by idnumber and one create, on one connection."""
    rows = list(people_rows(people))
    started = time.monotonic()
    with httpx.Client(base_url=SIM_URL, timeout=60) as http:

        def call(function: str, form: dict) -> object:
            body = {"wstoken": TOKEN, "wsfunction": function, "moodlewsrestformat": "json", **form}
            return http.post("/webservice/rest/server.php", data=body).json()

        created = 0
        for row in rows:
            found = call(
                "core_user_get_users_by_field", {"field": "idnumber", "values[0]": row["employee_id"]}
            )
            if found:
                continue
            user = {
                "username": row["login"], "firstname": row["first"], "lastname": row["last"],
                "email": row["mail"], "idnumber": row["employee_id"], "department": row["dept"],
                "institution": row["inst"], "city": row["city"], "country": row["country"],
                "lang": row["lang"], "auth": "manual", "createpassword": "1",
            }  # fmt: skip
            answer = call("core_user_create_users", {f"users[0][{k}]": v for k, v in user.items()})
            created += isinstance(answer, list)
    elapsed = time.monotonic() - started
    calls = sim_stats()["total_calls"]
    return {
        "phase": "naive",
        "people": people,
        "created": created,
        "moodle_calls": calls,
        "calls_per_1000_people": round(calls * 1000 / people, 1),
        "wall_s": round(elapsed, 2),
        "wall_over_cli": round(elapsed / (people * CLI_MS_PER_PERSON / 1000), 2),
    }


def phase_storm(people: int) -> dict:
    """Everyone's lang is fr; the site's settings say fr is installed, the Moodle has only en."""
    django_setup()
    from monitoring.models import Alert

    folder = Path(tempfile.mkdtemp(prefix="bench-"))
    write_people(folder / "people.csv", people, lang="fr")
    site = make_site("bench-storm", folder / "people.csv", languages="en,fr")
    run, elapsed, openings = run_engine(site, "bootstrap")
    stats = sim_stats()
    return {
        "phase": "storm",
        "people": people,
        "status": run.status,
        "moodle_calls": stats["total_calls"],
        "calls_by_function": stats["calls"],
        "wall_s": round(elapsed, 2),
        "reason": run.abort_reason,
        "alerts": list(Alert.objects.filter(site=site).values_list("title", flat=True)),
        "breaker_openings": openings,
    }


def phase_suspended(people: int) -> dict:
    """`suspended` mapped (a column "left"), one person in ten already gone."""
    django_setup()
    folder = Path(tempfile.mkdtemp(prefix="bench-"))
    write_people(folder / "people.csv", people, left_every=10)
    mapping = {**MAPPING, "fields": {**MAPPING["fields"], "suspended": "left"}}
    site = make_site("bench-suspended", folder / "people.csv", mapping=mapping)
    run, elapsed, openings = run_engine(site, "bootstrap")
    stats = sim_stats()
    users = httpx.get(f"{SIM_URL}/_sim/users", timeout=60).json()["users"]
    return {
        "phase": "suspended",
        "people": people,
        "left": people // 10,
        "status": run.status,
        "created": run.created,
        "not_created_as_left": run.skipped,
        "in_moodle": sum(1 for u in users if str(u.get("idnumber", "")).startswith("B")),
        "moodle_calls": stats["total_calls"],
        "calls_by_function": stats["calls"],
        "wall_s": round(elapsed, 2),
        "breaker_openings": openings,
    }


def phase_incremental(people: int) -> dict:
    """`people` records already in step (written directly, as a finished bootstrap leaves them), then one
    incremental run over the unchanged source."""
    django_setup()
    from sync.choices import SyncStatus
    from sync.mapping import Mapping
    from sync.models import SyncRecord
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
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    run, elapsed, _ = run_engine(site, "incremental")
    calls = sim_stats()["calls"]
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


PHASES = {
    "bootstrap": phase_bootstrap,
    "naive": phase_naive,
    "storm": phase_storm,
    "suspended": phase_suspended,
    "incremental": phase_incremental,
}


def start_simulator() -> subprocess.Popen:
    """A fresh, empty simulated Moodle 5.1 with the calibrated costs, in its own process."""
    simulator = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", str(PORT), "--control", "--token", TOKEN,
         "--profile", "moodle51", "--langs", "en"],
        cwd=BASE_DIR, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(200):
        try:
            httpx.get(f"{SIM_URL}/_sim/stats", timeout=1)
            return simulator
        except httpx.TransportError:
            time.sleep(0.05)
    simulator.terminate()
    raise SystemExit("the simulator did not start")


def run_phase(name: str, people: int) -> dict:
    simulator = start_simulator()
    try:
        result = subprocess.run(
            [sys.executable, __file__, "--phase", name, str(people)],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        simulator.terminate()
        simulator.wait()
    if result.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] == ["--phase"]:
        print(json.dumps(PHASES[sys.argv[2]](int(sys.argv[3]))))
        return
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=BASE_DIR, check=True
    )
    for spec in sys.argv[1:] or DEFAULT_PHASES:
        name, _, people = spec.partition(":")
        print(json.dumps(run_phase(name, int(people))), flush=True)


if __name__ == "__main__":
    main()
