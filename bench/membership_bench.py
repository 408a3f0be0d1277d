"""Membership benchmark against the simulator over HTTP (`--profile moodle51`, as bench/sync_bench.py).

    make bench-memberships              # both phases; results printed as JSON lines
    python bench/membership_bench.py    # the same, when DATABASE_URL and REDIS_URL are already set
    python bench/membership_bench.py bootstrap:2000 read:50000      # chosen phases only

Phases, each against a fresh simulator in its own process, every request recorded on the hub's side:
- bootstrap:N  a real bootstrap run (sync.run.engine.execute) of N new people with 5 course enrolments each
               (30 courses) and one department cohort each, then an incremental rerun with nothing changed:
               Moodle calls by function, membership and total calls per 1,000 enrolments, wall time, and
               the rerun's write calls (must be 0);
- read:N       N enrolments (10 courses) written straight into the simulator's state, then every course read
               back with sync.run.membership_reconcile.read_course: get_enrolled_users calls, users read,
               time, and whether every call carried limitfrom and limitnumber (and never limitnum).

The site's throttle is opened up as in the tests (integration_hub/testing.py make_site: min_spacing_ms 0,
calls_per_minute 100000); the other limits are the site's defaults (2 calls in flight). The floor the
default throttle would impose is computed, not measured: calls / the default calls_per_minute, and by its
sliding window. Breaker openings are counted too.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qsl

import httpx

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
TOKEN = "bench-token-0123456789abcdef"  # noqa: S105 - the simulator's throwaway token
DEFAULT_PHASES = ["bootstrap:2000", "read:50000"]
COURSES = [f"C{n:02d}" for n in range(30)]
MEMBERSHIPS = {
    "cohorts": [{"source": "dept", "idnumber": "dept-{slug}", "name": "Department of {value}"}],
    "courses": [{"source": "courses", "separator": ";", "match": "shortname", "role": "student"}],
}
WRITES = (
    "core_user_create_users", "core_user_update_users", "enrol_manual_enrol_users",
    "enrol_manual_unenrol_users", "core_cohort_create_cohorts", "core_cohort_add_cohort_members",
    "core_cohort_delete_cohort_members",
)  # fmt: skip


class Recording(httpx.BaseTransport):
    """HTTP to the simulator, keeping each call's function, form and round-trip time."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.sent: list[tuple[str, dict[str, str], float]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        form = dict(parse_qsl(request.content.decode()))
        started = time.perf_counter()
        response = self.inner.handle_request(request)
        response.read()
        self.sent.append((form.get("wsfunction", ""), form, time.perf_counter() - started))
        return response

    def by_function(self) -> dict[str, int]:
        return dict(sorted(Counter(function for function, _, _ in self.sent).items()))


def default_floors(calls: int) -> dict:
    """Computed, not measured: what the default throttle (150 ms between starts, 90 calls a minute) would
    impose on `calls`: at its rate (calls / calls_per_minute), and by its sliding window (sync_bench's
    throttle_floor: 90 starts in any 60 s, so a run of fewer calls is bound by the spacing alone)."""
    from sync_bench import throttle_floor

    from sync.moodle.limits import DEFAULT_LIMITS as D

    return {
        "computed_default_floor_rate_s": round(calls / D.calls_per_minute * 60, 1),
        "computed_default_floor_window_s": round(
            throttle_floor(calls, D.min_spacing_ms / 1000, D.calls_per_minute), 1
        ),
    }


def breaker_openings(site) -> int:
    from monitoring.models import BreakerEvent

    return BreakerEvent.objects.filter(site=site, new_state="open").count()


def start_simulator(port: int, state_file: Path | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "simulator", "--port", str(port), "--control", "--profile", "moodle51"]
    command += ["--state", str(state_file)] if state_file else ["--token", TOKEN]
    simulator = subprocess.Popen(command, cwd=BASE_DIR, stdout=subprocess.DEVNULL)
    for _ in range(1200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/_sim/stats", timeout=1)
            return simulator
        except httpx.TransportError:
            time.sleep(0.1)
    simulator.terminate()
    raise SystemExit("the simulator did not start")


def make_site(url: str, csv_path: Path | None = None):
    from integration_hub.testing import MAPPING
    from sync.choices import TokenStatus
    from sync.models import MoodleSite, ServiceToken, SyncSource

    MoodleSite.objects.filter(slug="bench-memberships").delete()
    site = MoodleSite.objects.create(
        slug="bench-memberships", name="bench", base_url=url, min_spacing_ms=0, calls_per_minute=100_000
    )
    token = ServiceToken(site=site, label="bench", status=TokenStatus.ACTIVE)
    token.set_token(TOKEN)
    token.save()
    if csv_path:
        SyncSource.objects.create(
            site=site,
            kind="csv",
            config={"path": str(csv_path), "id_column": "employee_id"},
            mapping={**MAPPING, "memberships": MEMBERSHIPS},
        )
    return site


def run_engine(site, kind: str, transport: Recording):
    from sync.models import SyncRun
    from sync.run import engine

    started = time.monotonic()
    run = engine.execute(SyncRun.objects.queue(site, kind).pk, transport=transport)
    return run, round(time.monotonic() - started, 2)


def phase_bootstrap(people: int, url: str) -> dict:
    from integration_hub.testing import FIELDS, person

    path = Path(tempfile.mkdtemp(prefix="bench-")) / "people.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*FIELDS, "courses"])
        writer.writeheader()
        for n in range(1, people + 1):
            courses = ";".join(COURSES[(n + k * 7) % 30] for k in range(5))
            writer.writerow({**person(n), "courses": courses})
    for shortname in COURSES:
        httpx.post(f"{url}/_sim/courses", json={"shortname": shortname}).raise_for_status()
    site = make_site(url, path)
    transport = Recording()
    run, wall = run_engine(site, "bootstrap", transport)
    calls = transport.by_function()
    enrolments = run.enrolled
    membership = sum(
        n
        for function, n in calls.items()
        if function in ("enrol_manual_enrol_users", "core_course_get_courses_by_field")
        or function.startswith("core_cohort_")
    )
    total = sum(calls.values())
    in_moodle = len(httpx.get(f"{url}/_sim/enrolments", timeout=60).json()["enrolments"])
    server_s = httpx.get(f"{url}/_sim/stats", timeout=60).json()["server_ms_total"] / 1000
    rerun_transport = Recording()
    rerun, rerun_wall = run_engine(site, "incremental", rerun_transport)
    rerun_calls = rerun_transport.by_function()
    return {
        "phase": "bootstrap",
        "people": people,
        "status": run.status,
        "created": run.created,
        "enrolled": enrolments,
        "cohort_added": run.cohort_added,
        "membership_errors": run.membership_errors,
        "enrolments_in_moodle": in_moodle,
        "calls_by_function": calls,
        "total_calls": total,
        "membership_calls": membership,
        "membership_calls_per_1000_enrolments": round(membership * 1000 / enrolments, 2),
        "total_calls_per_1000_enrolments": round(total * 1000 / enrolments, 2),
        "wall_s": wall,
        "simulator_calibrated_server_s": round(server_s, 2),
        "breaker_openings": breaker_openings(site),
        **default_floors(total),
        "rerun_status": rerun.status,
        "rerun_calls_by_function": rerun_calls,
        "rerun_write_calls": sum(n for function, n in rerun_calls.items() if function in WRITES),
        "rerun_wall_s": rerun_wall,
    }


def seed_enrolments(enrolments: int, courses: int) -> tuple[Path, list[int]]:
    """A simulator state file holding `enrolments` active student enrolments over `courses` courses, each
    person in one course."""
    from simulator.state import SimState, new_user
    from simulator.tokens import create_token
    from simulator.ws_course import add_course

    state = SimState()
    create_token(state, TOKEN)
    ids = []
    for c in range(courses):
        course = add_course(state, {"shortname": f"R{c:02d}", "fullname": f"R{c:02d}", "categoryid": 1,
                                    "idnumber": "", "visible": 1, "startdate": 0, "enddate": 0})  # fmt: skip
        ids.append(course["id"])
        instance = next(i for i in state.enrol_instances.values() if i["courseid"] == course["id"])
        for _ in range(enrolments // courses):
            uid = state.take_id("user")
            state.users[uid] = new_user(id=uid, username=f"r{uid}", firstname="Ana", lastname=f"Nowak-{uid}",
                                        email=f"r{uid}@example.edu", idnumber=f"R{uid}")  # fmt: skip
            state.enrolments.append({"instanceid": instance["id"], "courseid": course["id"], "userid": uid,
                                     "roles": [5], "status": 0, "timestart": 0, "timeend": 0,
                                     "timecreated": 0})  # fmt: skip
    path = Path(tempfile.mkdtemp(prefix="bench-")) / "state.json"
    state.save(str(path))
    return path, ids


def options(form: dict[str, str]) -> dict[str, str]:
    """The `options` a get_enrolled_users form carries, as name: value."""
    return {v: form.get(k[: -len("[name]")] + "[value]", "") for k, v in form.items() if k.endswith("[name]")}


def phase_read(enrolments: int, url: str, courseids: list[int]) -> dict:
    from sync.run import membership_reconcile
    from sync.run.connect import client_for

    transport = Recording()
    site = make_site(url)
    client = client_for(site, transport=transport)
    started = time.monotonic()
    seats = {courseid: membership_reconcile.read_course(client, courseid) for courseid in courseids}
    wall = time.monotonic() - started
    reads = [
        options(form) for function, form, _ in transport.sent if function == "core_enrol_get_enrolled_users"
    ]
    stats = httpx.get(f"{url}/_sim/stats", timeout=60).json()
    waiting = sum(seconds for _, _, seconds in transport.sent)
    return {
        "phase": "read",
        "enrolments": enrolments,
        "courses": len(courseids),
        "page": membership_reconcile.PAGE,
        "calls_by_function": transport.by_function(),
        "get_enrolled_users_calls": len(reads),
        "users_read": sum(len(s) for s in seats.values()),
        "all_active_students": all(s.active and s.roles == {5} for c in seats.values() for s in c.values()),
        "every_call_has_limitfrom_and_limitnumber": all(
            {"limitfrom", "limitnumber"} <= set(o) for o in reads
        ),
        "calls_with_limitnum": sum("limitnum" in o for o in reads),
        "limitnumber_values": dict(Counter(o.get("limitnumber") for o in reads)),
        "wall_s": round(wall, 2),
        "waiting_on_simulator_s": round(waiting, 2),
        "hub_own_s": round(wall - waiting, 2),
        "simulator_calibrated_server_s": round(stats["server_ms_total"] / 1000, 2),
        "breaker_openings": breaker_openings(site),
        **default_floors(len(transport.sent)),
    }


def run_phase(name: str, size: int) -> dict:
    from integration_hub.devservices import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if name == "read":
        state_file, courseids = seed_enrolments(size, 10)
        simulator = start_simulator(port, state_file)
    else:
        simulator = start_simulator(port)
    try:
        return phase_read(size, url, courseids) if name == "read" else phase_bootstrap(size, url)
    finally:
        simulator.terminate()
        simulator.wait()


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integration_hub.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    for spec in sys.argv[1:] or DEFAULT_PHASES:
        name, _, size = spec.partition(":")
        print(json.dumps(run_phase(name, int(size)), ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
