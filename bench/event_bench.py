"""Event path benchmark: how long a leaver's suspension, sent by the source's signed webhook, takes to reach
Moodle when nothing else holds the site.

    make bench-events                  # spaced:100 burst:100, the throttle opened up as in the tests
    .venv/bin/python -m integration_hub.devservices run --var-dir var/bench-events -- \
        .venv/bin/python bench/event_bench.py spaced:100 --default-limits

Set-up, every process real and on this machine: a fresh simulated Moodle over HTTP (`--profile moodle51`), a
Celery worker (`-Q celery,monitoring`, prefork pool of 2, as the demo's run worker), the hub's web app under
gunicorn (2 workers) on a free loopback port, no beat (nothing else runs on the site). A site whose mapping
maps `suspended` from the source's `status` column through a value map ({"left": 1, "active": 0}), 500
people bootstrapped by a real bootstrap run through the worker, a source webhook secret from
sync.hooks.make_secret. The throttle is opened up as in the tests (integration_hub/testing.py make_site:
min_spacing_ms 0, calls_per_minute 100,000, max_concurrent_calls 4) unless --default-limits.

Scenarios, each on leavers not used before (`status` "left", one person per event, signed, over HTTP):
- spaced:N  one event at a time; the next is posted once the last is seen suspended and at least --every
            seconds (3.5, more than EVENT_COALESCE_S) after it, so each event is its own run;
- burst:N   N events posted back to back, then wait until all are suspended.
Latency, per event: from the hub's receipt (InboundEvent.received_at) to the first poll of the simulator's
user list (GET /_sim/users every POLL_S) that shows the person suspended (an upper bound, late by at most
one poll), and the hub's own applied_at - received_at. Each scenario prints one JSON line; the per-event
figures go to var/bench-events/<scenario>.json, the processes' logs next to them.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import statistics
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chaos_services
from chaos_services import BASE_DIR, Proc, end_leftovers, wait_until

from integration_hub.devservices import free_port
from integration_hub.testing import FIELDS, MAPPING, person

VAR = BASE_DIR / "var" / "bench-events"
SITE = "bench-events"
TOKEN = "bench-token-0123456789abcdef"  # noqa: S105 - the simulator's throwaway token
PEOPLE = 500
POLL_S = 0.05
OPEN_LIMITS = {"min_spacing_ms": 0, "calls_per_minute": 100_000, "max_concurrent_calls": 4}
SUSPENDED = {"source": "status", "values": {"left": 1, "active": 0}}


def pct(values: list[float], q: float) -> float:
    """The nearest-rank percentile q (0-100)."""
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)], 3)


def summary(values: list[float]) -> dict:
    return {"p50": pct(values, 50), "p95": pct(values, 95), "max": round(max(values), 3)}


# -- the processes -----------------------------------------------------------------------------------


def start(name: str, argv: list[str], procs: dict[str, Proc]) -> Proc:
    procs[name] = Proc(name, argv, None, VAR / f"{name}.log").start()
    return procs[name]


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
        return True
    except httpx.TransportError:
        return False


def start_processes(procs: dict[str, Proc]) -> tuple[str, str]:
    """The simulator, the worker and the web app; their base URLs once all three are ready."""
    sim, web = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    python = sys.executable
    start("simulator", [
        python, "-m", "simulator", "--host", "127.0.0.1", "--port", sim.rsplit(":", 1)[1], "--control",
        "--token", TOKEN, "--profile", "moodle51", "--langs", "en",
    ], procs)  # fmt: skip
    worker = start("worker", [
        python, "-m", "celery", "-A", "integration_hub", "worker", "-Q", "celery,monitoring", "--pool",
        "prefork", "--concurrency", "2", "--loglevel", "INFO", "--hostname", f"bench-events-{os.getpid()}@%h",
    ], procs)  # fmt: skip
    start("web", [
        python, "-m", "gunicorn", "integration_hub.wsgi", "--bind", web.removeprefix("http://"), "--workers",
        "2", "--graceful-timeout", "5",
    ], procs)  # fmt: skip
    wait_until(lambda: answers(f"{sim}/_sim/stats"), 60, "the simulator")
    wait_until(lambda: " ready." in worker.log.read_text(errors="replace"), 90, "the worker", interval=0.3)
    wait_until(lambda: answers(f"{web}/healthz"), 60, "the web app")
    return sim, web


# -- the site ----------------------------------------------------------------------------------------


def make_site(sim: str, default_limits: bool):
    """The site, its token, its CSV source of PEOPLE active people with `suspended` mapped, and a source
    webhook secret; the plaintext secret is returned as `site.secret`."""
    from sync.choices import HookDirection, TokenStatus
    from sync.hooks import make_secret
    from sync.models import MoodleSite, ServiceToken, SyncSource

    path = VAR / "people.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*FIELDS, "status"])
        writer.writeheader()
        writer.writerows({**person(n), "status": "active"} for n in range(1, PEOPLE + 1))
    MoodleSite.objects.filter(slug=SITE).delete()
    limits = {} if default_limits else OPEN_LIMITS
    site = MoodleSite.objects.create(slug=SITE, name="Events bench", base_url=sim, languages="en", **limits)
    token = ServiceToken(site=site, label="bench", status=TokenStatus.ACTIVE)
    token.set_token(TOKEN)
    token.save()
    mapping = {**MAPPING, "fields": {**MAPPING["fields"], "suspended": SUSPENDED}}
    SyncSource.objects.create(
        site=site, kind="csv", config={"path": str(path), "id_column": "employee_id"}, mapping=mapping
    )
    site.secret = make_secret(site, HookDirection.SOURCE, None)
    return site


def finished(run_ids: set[int]) -> list | None:
    """The runs, once every one of them has ended."""
    from sync.choices import RunStatus
    from sync.models import SyncRun

    runs = list(SyncRun.objects.filter(pk__in=run_ids))
    return runs if all(r.status in RunStatus.terminal() for r in runs) else None


def bootstrap(site) -> dict:
    from sync.choices import RunKind, RunStatus
    from sync.dispatch import send_run
    from sync.models import SyncRun

    run = SyncRun.objects.queue(site, RunKind.BOOTSTRAP)
    send_run(run.pk)
    (run,) = wait_until(lambda: finished({run.pk}), 600, "the bootstrap", interval=0.5)
    if run.status != RunStatus.SUCCEEDED:
        raise SystemExit(f"the bootstrap ended {run.status}: {run.abort_reason}")
    return {"status": run.status, "created": run.created, "calls": run.calls,
            "wall_s": round((run.finished_at - run.started_at).total_seconds(), 2)}  # fmt: skip


# -- events ------------------------------------------------------------------------------------------


def post(web: httpx.Client, secret: str, n: int, event_id: str) -> float:
    """One leaver's event, signed as a sender signs it; the seconds the hub took to answer 202."""
    from sync.hooks import signature

    body = json.dumps({"people": [{**person(n), "status": "left"}]}).encode()
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Timestamp": stamp,
        "X-Hub-Signature-256": signature(secret, stamp, body),
        "X-Hub-Event-Id": event_id,
    }
    started = time.perf_counter()
    answer = web.post(f"/hooks/source/{SITE}/", content=body, headers=headers)
    if answer.status_code != 202:
        raise RuntimeError(f"event {event_id}: HTTP {answer.status_code} {answer.text}")
    return time.perf_counter() - started


def watch(sim: httpx.Client, wanted: set[int], seen: dict[int, float], timeout: float = 120) -> None:
    """Poll Moodle until every user in `wanted` is suspended; `seen` gets each one's first moment."""

    def all_seen() -> bool:
        now = time.time()
        for user in sim.get("/_sim/users").json()["users"]:
            if user["id"] in wanted and user["suspended"] and user["id"] not in seen:
                seen[user["id"]] = now
        return wanted <= seen.keys()

    wait_until(all_seen, timeout, f"{len(wanted)} people to be suspended", POLL_S)


def scenario(kind: str, leavers: list[int], ids: dict[int, int], site, sim: str, web: str, every: float):
    """Post the leavers' events as `kind` says and watch Moodle; the events' figures."""
    from sync.models import InboundEvent

    tag = f"{kind}-{int(time.time())}"
    event_ids = {n: f"{tag}-{n}" for n in leavers}
    seen: dict[int, float] = {}
    answer_s = []
    with httpx.Client(base_url=web, timeout=30) as hub, httpx.Client(base_url=sim, timeout=30) as moodle:
        stats_before = moodle.get("/_sim/stats").json()["calls"]
        started = time.time()
        for n in leavers:
            began = time.monotonic()
            answer_s.append(post(hub, site.secret, n, event_ids[n]))
            if kind == "spaced":
                watch(moodle, {ids[n]}, seen)
                time.sleep(max(0.0, began + every - time.monotonic()))
        posted = time.time()
        watch(moodle, {ids[n] for n in leavers}, seen, timeout=600)
        mine = InboundEvent.objects.filter(event_id__in=event_ids.values())
        runs = wait_until(lambda: finished(set(mine.values_list("run", flat=True))), 120, "the runs", 0.2)
        events = {e.event_id: e for e in mine.all()}
        stats_after = moodle.get("/_sim/stats").json()["calls"]
    calls = Counter(stats_after) - Counter(stats_before)
    samples = [
        {
            "person": n,
            "event": event_ids[n],
            "run": events[event_ids[n]].run_id,
            "moodle_s": round(seen[ids[n]] - events[event_ids[n]].received_at.timestamp(), 3),
            "hub_s": round(events[event_ids[n]].latency.total_seconds(), 3),
        }
        for n in leavers
    ]
    first_receipt = min(e.received_at.timestamp() for e in events.values())
    result = {
        "scenario": f"{kind}:{len(leavers)}",
        "events": len(events),
        "applied": sum(e.status == "applied" for e in events.values()),
        "runs": len(runs),
        "run_statuses": dict(Counter(r.status for r in runs)),
        "moodle_calls_by_function": dict(sorted(calls.items())),
        "moodle_calls": sum(calls.values()),
        "calls_per_event": round(sum(calls.values()) / len(leavers), 2),
        "hub_answer_s": summary(answer_s),
        "receipt_to_suspended_in_moodle_s": summary([s["moodle_s"] for s in samples]),
        "hub_applied_minus_received_s": summary([s["hub_s"] for s in samples]),
        "posting_s": round(posted - started, 2),
        "first_receipt_to_all_suspended_s": round(max(seen.values()) - first_receipt, 2),
        "runs_detail": [] if kind == "spaced" else run_detail(runs),
        "where_the_time_goes": breakdown(events.values(), runs) if kind == "spaced" else None,
    }
    details = json.dumps({"result": result, "samples": samples}, indent=1)
    (VAR / f"{kind}.json").write_text(details)
    return result


def run_detail(runs) -> list[dict]:
    from monitoring.models import CallLog

    return [
        {"run": r.pk, "status": r.status, "events": r.events_fed.count(), "updated": r.updated,
         "calls": dict(Counter(CallLog.objects.filter(run=r).values_list("function", flat=True))),
         "started": r.started_at.isoformat(),
         "took_s": round((r.finished_at - r.started_at).total_seconds(), 2)}
        for r in sorted(runs, key=lambda r: r.pk)
    ]  # fmt: skip


def breakdown(events, runs) -> dict:
    """Where the time from receipt to Moodle went, for events that had a run each: medians in seconds, from
    the hub's own timestamps (the run's started_at, each call's CallLog start and duration, applied_at)."""
    from monitoring.models import CallLog

    by_pk = {r.pk: r for r in runs}
    parts: dict[str, list[float]] = {}
    durations: dict[str, list[float]] = {}
    for event in events:
        run = by_pk[event.run_id]
        calls = list(CallLog.objects.filter(run=run).order_by("started_at", "pk"))
        update = next(c for c in reversed(calls) if c.function == "core_user_update_users")
        update_done = update.started_at + timedelta(milliseconds=update.duration_ms)
        for name, seconds in {
            "receipt_to_run_started": run.started_at - event.received_at,
            "run_started_to_first_call": calls[0].started_at - run.started_at,
            "first_call_to_update_answered": update_done - calls[0].started_at,
            "update_answered_to_applied": event.applied_at - update_done,
            "applied_to_run_finished": run.finished_at - event.applied_at,
        }.items():
            parts.setdefault(name, []).append(seconds.total_seconds())
        for call in calls:
            durations.setdefault(call.function, []).append(call.duration_ms)
    medians = {name: round(statistics.median(values), 3) for name, values in parts.items()}
    calls_ms = {name: round(statistics.median(values), 1) for name, values in sorted(durations.items())}
    return {**medians, "call_ms_median": calls_ms}


# -- main --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", default=["spaced:100", "burst:100"])
    parser.add_argument("--every", type=float, default=3.5, help="seconds between spaced events (at least)")
    parser.add_argument("--default-limits", action="store_true", help="the site's default throttle")
    args = parser.parse_args()
    VAR.mkdir(parents=True, exist_ok=True)
    chaos_services.REGISTRY = VAR / "pids"
    end_leftovers(chaos_services.REGISTRY)  # what an interrupted run of this script left running
    chaos_services.REGISTRY.unlink(missing_ok=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integration_hub.settings")
    os.environ["PYTHONUNBUFFERED"] = "1"
    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    procs: dict[str, Proc] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a SIGTERM, too, stops what was started
    try:
        sim, web = start_processes(procs)
        site = make_site(sim, args.default_limits)
        limits = {k: getattr(site, k) for k in OPEN_LIMITS}
        print(json.dumps({"setup": {"people": PEOPLE, "limits": limits, "every_s": args.every,
                                    "EVENT_COALESCE_S": settings.EVENT_COALESCE_S,
                                    "bootstrap": bootstrap(site)}}), flush=True)  # fmt: skip
        users = httpx.get(f"{sim}/_sim/users", timeout=60).json()["users"]
        ids = {int(u["idnumber"][1:]): u["id"] for u in users if u.get("idnumber")}
        unused = iter(range(1, PEOPLE + 1))
        for spec in args.scenarios:
            kind, _, size = spec.partition(":")
            if kind not in ("spaced", "burst"):
                raise SystemExit(f"unknown scenario {spec!r}: spaced:N or burst:N")
            leavers = [next(unused) for _ in range(int(size))]
            result = scenario(kind, leavers, ids, site, sim, web, args.every)
            print(json.dumps(result, ensure_ascii=False), flush=True)
    finally:
        for proc in reversed(procs.values()):
            proc.stop()


if __name__ == "__main__":
    main()
