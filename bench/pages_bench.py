"""Page benchmark: do the hub's pages stay fast when the database holds a big site's history?

    python -m integration_hub.devservices run --var-dir var/bench-pages -- \
        .venv/bin/python bench/pages_bench.py [--scales 1000,1000000] [--calls-per-record 10]

For each scale N (sync records), the sync and monitoring tables are emptied and seeded in plain SQL
(INSERT ... SELECT ... FROM generate_series): 2 sites, N records (mostly ok, ~2 % error, ~1 % conflict,
~3 % pending), N x calls-per-record call-log rows over the last 30 days (mostly ok, a few % transient,
refused data and the rest), N/100 runs with their timelines, one record event per record, dead letters,
conflicts, discrepancies, resolutions and alerts (N/1,000 each, at least 60 so every list has a page 2),
and some thousands of probes, deliveries and audit entries. Then every list page and the Overview is
requested as a superuser with Django's test client (DEBUG off), and for each page the bench prints one
JSON line: the SQL queries of one request and the median time of 5 (after a warm-up request). A Markdown
table at the end puts the scales side by side and flags a page whose query count changes with N or
whose time more than doubles: a page that costs the same at 1,000 and 1,000,000 records is what we want.

Seeding 1,000,000 records and 10,000,000 calls takes a few minutes on 2 cores: the big tables are loaded
with their indexes and foreign keys dropped, which are re-created (and checked) before anything is
measured. `--explain-over MS` prints EXPLAIN ANALYZE (to stderr) for each query slower than MS.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
METRICS_TOKEN = "bench-metrics-token-0123456789"  # noqa: S105 - a throwaway token for /metrics
ADMIN = "bench-admin"
DAYS = 30  # how far back the history goes
REPEATS = 5
SMALL_MIN = 60  # dead letters, conflicts, ... at least: more than a page (50), so page 2 exists

FIRST_NAMES = [
    "Anna", "Jan", "Zofia", "Piotr", "Maria", "Tomasz", "Ewa", "Paweł", "Agnieszka", "Krzysztof",
    "Léa", "Lukas", "Sofia", "Mateo", "Emma", "Noah", "Chloé", "Jonas", "Olivia", "Ahmed",
]  # fmt: skip
LAST_NAMES = [
    "Nowak", "Kowalska", "Wiśniewski", "Wójcik", "Kamińska", "Lewandowski", "Zielińska", "Szymański",
    "Müller", "Schmidt", "Dubois", "Martin", "Rossi", "García", "Jensen", "Smith", "O'Brien", "Novák",
    "Horváth", "Popescu", "Ivanova", "Öztürk", "Andersson", "Silva", "Kim",
]  # fmt: skip
DEPARTMENTS = ["Nursing", "Law", "Physics", "History", "Medicine", "Economics"]


# -- set-up ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scales",
        default="1000,1000000",
        type=lambda text: [int(part.replace("_", "")) for part in text.split(",") if part.strip()],
        help="sync records per scale, comma-separated (default 1000,1000000)",
    )
    parser.add_argument("--calls-per-record", type=int, default=10, help="call-log rows per record")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timed requests per page")
    parser.add_argument(
        "--explain-over", type=float, default=0.0, metavar="MS", help="EXPLAIN ANALYZE queries slower than MS"
    )
    args = parser.parse_args(argv)
    if any(n < 1000 for n in args.scales):
        parser.error("each scale must be at least 1000 records")
    return args


def django_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integration_hub.settings")
    import django

    django.setup()
    from django.conf import settings

    # The test client's host; DEBUG stays as configured (off), so pages run as in production.
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    # /metrics takes a bearer token or an allowed network; the bench brings its own token.
    settings.METRICS_TOKEN = METRICS_TOKEN


def migrate() -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=BASE_DIR, check=True
    )


def log(message: str) -> None:
    """Progress for the person waiting; stdout is kept for the results."""
    print(message, file=sys.stderr, flush=True)


def sql(statement: str, params: dict | list | None = None) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)


# -- an empty database -----------------------------------------------------------------------------------


def hub_tables() -> list[str]:
    """The sync and monitoring apps' tables: everything a page reads, nothing of auth or Celery."""
    from django.apps import apps
    from django.db import connection

    existing = set(connection.introspection.table_names())
    return [
        model._meta.db_table
        for label in ("sync", "monitoring")
        for model in apps.get_app_config(label).get_models()
        if model._meta.db_table in existing
    ]


def empty_database() -> None:
    # TRUNCATE, not DELETE: instant on 10 M rows, and RESTART IDENTITY makes the ids of each scale alike.
    tables = ", ".join(f'"{table}"' for table in hub_tables())
    sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


# -- seeding ---------------------------------------------------------------------------------------------


class Plan:
    """How many rows of each kind a scale gets."""

    def __init__(self, records: int, calls_per_record: int) -> None:
        self.records = records
        self.calls = records * calls_per_record
        self.runs = max(20, records // 100 // 2 * 2)  # even: the two sites take turns
        self.small = min(max(SMALL_MIN, records // 1000), records // 4)  # dead letters, conflicts, ...
        self.step = records // self.small  # records between two picked for a dead letter, a conflict, ...
        self.probes = max(1000, records // 200)
        self.deliveries = max(1000, records // 250)
        self.audit = max(500, records // 500)
        self.run_step_s = DAYS * 86400 / self.runs  # runs are evenly spread over the DAYS


@contextmanager
def bare_table(table: str) -> Iterator[None]:
    """Load `table` without its secondary indexes and constraints: building an index once over 10 M rows
    is several times faster than updating it 10 M times, and a foreign key added afterwards is checked by
    one join instead of a trigger per row. Everything is back (and checked) when the block ends."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype IN ('f', 'u')",
            [table],
        )
        constraints = cursor.fetchall()
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
            "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)",
            [table, table],
        )
        indexes = cursor.fetchall()
        for name, _ in constraints:
            cursor.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for _, definition in indexes:
                cursor.execute(definition)
            for name, definition in constraints:
                cursor.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')


def seed_sites(admin) -> tuple[int, int]:
    """Two sites with an active token and a CSV source, made with the ORM (a few rows, and the token
    must be encrypted the way the hub does it)."""
    from monitoring.models import AlertChannel, Heartbeat
    from sync.choices import TokenStatus
    from sync.models import MoodleSite, ServiceToken, SyncSource

    ids = []
    named = (("north", "North University", "Europe/Warsaw"), ("south", "South College", "UTC"))
    for slug, name, zone in named:
        site = MoodleSite.objects.create(
            slug=slug, name=name, base_url=f"https://moodle.{slug}.example.edu", time_zone=zone
        )
        token = ServiceToken(site=site, label="main", status=TokenStatus.ACTIVE, created_by=admin)
        token.set_token(f"bench-{slug}-token-0123456789abcdef")
        token.save()
        SyncSource.objects.create(
            site=site,
            kind="csv",
            config={"path": f"/srv/people/{slug}.csv", "id_column": "employee_id"},
            mapping={
                "fields": {"username": "login", "email": "mail", "firstname": "first", "lastname": "last"}
            },
        )
        ids.append(site.pk)
    for name, kind, target in (
        ("Ops mail", AlertChannel.Kind.EMAIL, "ops@example.edu"),
        ("Chat", AlertChannel.Kind.WEBHOOK, "https://chat.example.edu/hooks/abc"),
    ):
        AlertChannel.objects.create(name=name, kind=kind, target=target)
    Heartbeat.record(Heartbeat.SCHEDULER, "bench")  # a live scheduler, as on a working hub
    return ids[0], ids[1]


def seed_runs(plan: Plan, sites: tuple[int, int]) -> None:
    """Runs evenly spread over the DAYS, the two sites taking turns (run k is on site k % 2). Mostly
    succeeded, some with problems, a few failed, aborted or cancelled; the newest two still running."""
    sql(
        """
        INSERT INTO sync_syncrun (
            id, site_id, kind, trigger, status, created_at, started_at, finished_at, started_by_id,
            seen, changed, created, updated, suspended, unchanged, skipped, conflicts, errors, dead_lettered,
            blocked, calls, progress_total, progress_done, abort_reason, stop_category, dry_run, control,
            planned_at, last_progress_at, plan, task_id, source_file, upload_name, claim, heartbeat_at,
            sent_at)
        SELECT k + 1, CASE WHEN mod(k, 2) = 0 THEN %(a)s ELSE %(b)s END,
            CASE WHEN k < 2 THEN 'bootstrap' WHEN mod(k, 50) = 7 THEN 'reconcile'
                 WHEN mod(k, 97) = 3 THEN 'retry' WHEN mod(k, 211) = 13 THEN 'resolution'
                 ELSE 'incremental' END,
            CASE WHEN mod(k, 10) = 0 THEN 'manual' ELSE 'schedule' END,
            status, created, created + interval '1 second',
            CASE WHEN status = 'running' THEN NULL ELSE created + %(length)s * interval '1 second' END,
            NULL, %(seen)s, changed, changed - least(changed, mod(k, 7)), least(changed, mod(k, 7)), 0,
            %(seen)s - changed, 0,
            CASE WHEN status = 'problems' THEN 1 + mod(k, 3) ELSE 0 END,
            CASE WHEN status = 'problems' THEN 2 + mod(k, 5) ELSE 0 END,
            CASE WHEN status = 'problems' THEN 1 ELSE 0 END,
            0, %(calls)s, changed, CASE WHEN status = 'running' THEN changed / 2 ELSE changed END,
            CASE status WHEN 'failed' THEN 'Moodle did not answer: 5 timeouts in a row'
                        WHEN 'aborted' THEN 'The token was refused (invalidtoken)'
                        WHEN 'cancelled' THEN 'Cancelled by an operator' ELSE '' END,
            CASE WHEN status = 'aborted' THEN 'auth' ELSE '' END,
            false, '', created + interval '2 seconds',
            CASE WHEN status = 'running' THEN now() - interval '5 seconds'
                 ELSE created + %(length)s * interval '1 second' END,
            '{}'::jsonb, md5(k::text), '', '', 1,
            CASE WHEN status = 'running' THEN now() - interval '5 seconds' ELSE NULL END, created
        FROM (
            SELECT k, now() - %(days)s * interval '1 day' + k * %(step)s * interval '1 second' AS created,
                1 + mod(k * 37, 200) AS changed,
                CASE WHEN k >= %(runs)s - 2 THEN 'running' WHEN mod(k, 10) = 3 THEN 'problems'
                     WHEN mod(k, 53) = 5 THEN 'failed' WHEN mod(k, 101) = 9 THEN 'aborted'
                     WHEN mod(k, 199) = 1 THEN 'cancelled' ELSE 'succeeded' END AS status
            FROM generate_series(0, %(runs)s - 1) AS k
        ) AS runs
        """,
        {
            "a": sites[0],
            "b": sites[1],
            "runs": plan.runs,
            "days": DAYS,
            "step": plan.run_step_s,
            "length": plan.run_step_s * 0.8,
            "seen": plan.records // 2,
            "calls": plan.calls // plan.runs,
        },
    )
    # Each run's timeline: started and finished.
    sql(
        """
        INSERT INTO sync_runevent (run_id, at, level, message, link, link_label)
        SELECT id, started_at, 'info', 'Run started: reading the source', '', '' FROM sync_syncrun
        UNION ALL
        SELECT id, finished_at, CASE WHEN status = 'succeeded' THEN 'info' ELSE 'warning' END,
            'Run finished: ' || status, '', '' FROM sync_syncrun WHERE finished_at IS NOT NULL
        """
    )


def seed_records(plan: Plan, sites: tuple[int, int]) -> None:
    """Record i is on site i % 2 and was last touched by a run of the same site; its status is drawn at
    random: ~2 % error, ~1 % conflict, ~3 % pending, the rest ok."""
    with bare_table("sync_syncrecord"):
        sql("SELECT setseed(0.42)")
        sql(
            """
            INSERT INTO sync_syncrecord (
                id, site_id, external_id, moodle_id, external_hash, synced_at, sync_status, error_category,
                error_message, attempts, updated_at, username, email, display_name, origin, payload,
                payload_hash, create_only, pending_action, suspended_by_hub, overrides, last_run_id)
            SELECT i + 1, CASE WHEN mod(i, 2) = 0 THEN %(a)s ELSE %(b)s END, external_id,
                CASE WHEN status = 'pending' THEN NULL ELSE 100000 + i END, md5(external_id),
                CASE WHEN status = 'pending' THEN NULL ELSE touched END, status,
                CASE WHEN status = 'error'
                     THEN (ARRAY['client_fault', 'validation', 'transient'])[1 + mod(i, 3)] ELSE '' END,
                CASE WHEN status = 'error' THEN 'Moodle refused the record: invalidparameter (email)'
                     ELSE '' END,
                CASE WHEN status = 'ok' THEN 1 ELSE 1 + mod(i, 4) END, touched,
                username, username || '@example.edu', first || ' ' || last, 'line ' || (i / 2 + 2),
                jsonb_build_object(
                    'username', username, 'email', username || '@example.edu', 'firstname', first,
                    'lastname', last, 'idnumber', external_id, 'auth', 'manual',
                    'department', (%(departments)s::text[])[1 + mod(i, %(n_departments)s)],
                    'city', 'Łódź', 'country', 'PL', 'lang', 'en'),
                md5(username || first || last), '[]'::jsonb, 'upsert', false, '{}'::jsonb,
                mod(i / 2, %(runs)s / 2) * 2 + mod(i, 2) + 1
            FROM (
                SELECT i, 'E' || lpad(i::text, 8, '0') AS external_id,
                    'user' || lpad(i::text, 7, '0') AS username,
                    (%(firsts)s::text[])[1 + mod(i, %(n_firsts)s)] AS first,
                    (%(lasts)s::text[])[1 + mod(i / %(n_firsts)s, %(n_lasts)s)] AS last,
                    now() - random() * %(days)s * interval '1 day' AS touched,
                    CASE WHEN r < 0.02 THEN 'error' WHEN r < 0.03 THEN 'conflict' WHEN r < 0.06 THEN 'pending'
                         ELSE 'ok' END AS status
                FROM (SELECT i, random() AS r FROM generate_series(0, %(n)s - 1) AS i) AS drawn
            ) AS people
            """,
            {
                "a": sites[0],
                "b": sites[1],
                "n": plan.records,
                "runs": plan.runs,
                "days": DAYS,
                "firsts": FIRST_NAMES,
                "n_firsts": len(FIRST_NAMES),
                "lasts": LAST_NAMES,
                "n_lasts": len(LAST_NAMES),
                "departments": DEPARTMENTS,
                "n_departments": len(DEPARTMENTS),
            },
        )
    # What each record's last run did to it: the record page's history and the run page's error counts.
    with bare_table("sync_recordevent"):
        sql(
            """
            INSERT INTO sync_recordevent (record_id, run_id, at, action, outcome, function, message)
            SELECT id, last_run_id, updated_at,
                CASE WHEN mod(id, 3) = 0 THEN 'create' ELSE 'update' END,
                CASE sync_status WHEN 'pending' THEN 'unchanged' ELSE sync_status END,
                CASE WHEN mod(id, 3) = 0 THEN 'core_user_create_users' ELSE 'core_user_update_users' END,
                error_message
            FROM sync_syncrecord
            """
        )


def seed_work(plan: Plan) -> None:
    """Dead letters, conflicts and discrepancies (`plan.small` of each, on distinct records), and
    resolutions for some of them; the records they name get the matching status."""
    params = {"small": plan.small, "step": plan.step}
    sql(
        """
        INSERT INTO sync_deadletter (
            site_id, record_id, run_id, function, payload, category, errorcode, http_status, message,
            attempts, first_failed_at, last_failed_at, status, retry_run_id, discard_reason, discarded_by_id,
            closed_at)
        SELECT r.site_id, r.id, r.last_run_id,
            CASE WHEN mod(j, 3) = 0 THEN 'core_user_create_users' ELSE 'core_user_update_users' END,
            r.payload, 'transient',
            (ARRAY['', 'dbwriteerror', 'servicetemporarilyunavailable'])[1 + mod(j, 3)],
            (ARRAY[NULL, 200, 503])[1 + mod(j, 3)], 'Moodle kept failing after 5 attempts', 5,
            failed - interval '2 hours', failed,
            CASE WHEN mod(j, 10) < 7 THEN 'open' WHEN mod(j, 10) < 9 THEN 'resolved' ELSE 'discarded' END,
            NULL, CASE WHEN mod(j, 10) = 9 THEN 'Left the university' ELSE '' END, NULL,
            CASE WHEN mod(j, 10) < 7 THEN NULL ELSE failed + interval '1 day' END
        FROM (
            SELECT j, now() - j * interval '37 minutes' AS failed FROM generate_series(0, %(small)s - 1) AS j
        ) AS s
        JOIN sync_syncrecord AS r ON r.id = 1 + j * %(step)s
        """,
        params,
    )
    sql(
        """
        INSERT INTO sync_conflict (
            site_id, record_id, run_id, kind, status, our_payload, their_users, message, created_at,
            resolved_at)
        SELECT r.site_id, r.id, r.last_run_id,
            (ARRAY['username_taken', 'email_taken', 'duplicate_match', 'linked_user_gone'])[1 + mod(j, 4)],
            CASE WHEN mod(j, 10) < 8 THEN 'open' WHEN mod(j, 10) = 8 THEN 'resolved' ELSE 'ignored' END,
            r.payload,
            jsonb_build_array(jsonb_build_object(
                'id', 900000 + j, 'username', r.username, 'email', r.email, 'firstname', 'Someone',
                'lastname', 'Else', 'auth', 'manual', 'suspended', false)),
            'The username ' || r.username || ' belongs to another Moodle user', at,
            CASE WHEN mod(j, 10) < 8 THEN NULL ELSE at + interval '1 day' END
        FROM (
            SELECT j, now() - j * interval '41 minutes' AS at FROM generate_series(0, %(small)s - 1) AS j
        ) AS s
        JOIN sync_syncrecord AS r ON r.id = 2 + j * %(step)s
        """,
        params,
    )
    sql(
        """
        INSERT INTO sync_discrepancy (
            site_id, run_id, record_id, kind, status, external_id, moodle_user_id, summary, fields,
            source_values, moodle_values, candidates, proposed_action, needs_approval, created_at)
        SELECT r.site_id, r.last_run_id, CASE WHEN kind = 'orphan_in_moodle' THEN NULL ELSE r.id END, kind,
            (ARRAY['open', 'open', 'open', 'auto', 'applied', 'rejected', 'blocked', 'superseded'])
                [1 + mod(j, 8)],
            CASE WHEN kind = 'orphan_in_moodle' THEN '' ELSE r.external_id END, r.moodle_id,
            kind || ': ' || r.display_name,
            CASE WHEN kind = 'field_drift' THEN '["email"]'::jsonb ELSE '[]'::jsonb END,
            jsonb_build_object('email', r.email), jsonb_build_object('email', 'old.' || r.email),
            CASE WHEN kind = 'duplicate_match'
                 THEN jsonb_build_array(
                     jsonb_build_object('id', 800000 + j), jsonb_build_object('id', 810000 + j))
                 ELSE '[]'::jsonb END,
            CASE kind WHEN 'missing_in_moodle' THEN 'create' WHEN 'orphan_in_moodle' THEN 'suspend'
                      WHEN 'left_source' THEN 'suspend' WHEN 'field_drift' THEN 'update'
                      WHEN 'suspended_mismatch' THEN 'unsuspend' WHEN 'identity_mismatch' THEN 'relink'
                      ELSE 'choose' END,
            kind NOT IN ('field_drift', 'missing_in_moodle', 'suspended_mismatch'),
            now() - j * interval '43 minutes'
        FROM (
            SELECT j, (ARRAY['missing_in_moodle', 'orphan_in_moodle', 'left_source', 'field_drift',
                             'suspended_mismatch', 'identity_mismatch', 'duplicate_match'])
                       [1 + mod(j, 7)] AS kind
            FROM generate_series(0, %(small)s - 1) AS j
        ) AS s
        JOIN sync_syncrecord AS r ON r.id = 3 + j * %(step)s
        """,
        params,
    )
    # A proposal or a decision for every third discrepancy and every fourth conflict.
    sql(
        """
        INSERT INTO sync_resolution (
            site_id, discrepancy_id, conflict_id, action, params, calls, status, automatic, proposed_by_id,
            proposed_at, decided_by_id, decided_at, note, run_id, override_id, outcome, applied_at)
        SELECT site_id, discrepancy_id, conflict_id, action, '{}'::jsonb, '[]'::jsonb, status, false, NULL,
            proposed_at, NULL,
            CASE WHEN status = 'proposed' THEN NULL ELSE proposed_at + interval '1 hour' END,
            CASE WHEN status = 'rejected' THEN 'Not this one' ELSE '' END, NULL, NULL,
            CASE WHEN status = 'applied' THEN 'done' ELSE '' END,
            CASE WHEN status = 'applied' THEN proposed_at + interval '2 hours' END
        FROM (
            SELECT site_id, id AS discrepancy_id, NULL::bigint AS conflict_id, proposed_action AS action,
                CASE status WHEN 'applied' THEN 'applied' WHEN 'rejected' THEN 'rejected' ELSE 'proposed' END
                    AS status, created_at + interval '10 minutes' AS proposed_at
            FROM sync_discrepancy WHERE mod(id, 3) = 0
            UNION ALL
            SELECT site_id, NULL, id, CASE WHEN mod(id, 2) = 0 THEN 'link' ELSE 'rename' END,
                CASE status WHEN 'open' THEN 'proposed' ELSE 'applied' END, created_at + interval '10 minutes'
            FROM sync_conflict WHERE mod(id, 4) = 0
        ) AS proposals
        """
    )
    sql(
        """
        UPDATE sync_syncrecord AS r SET sync_status = 'error', error_category = 'transient',
            error_message = d.message
        FROM sync_deadletter AS d WHERE d.record_id = r.id AND d.status = 'open'
        """
    )
    sql(
        """
        UPDATE sync_syncrecord AS r SET sync_status = 'conflict', error_category = 'conflict',
            error_message = c.message
        FROM sync_conflict AS c WHERE c.record_id = r.id AND c.status = 'open'
        """
    )


def seed_monitoring(plan: Plan, sites: tuple[int, int], admin_id: int) -> None:
    """Alerts (a few open or acknowledged, the rest resolved), their deliveries, heartbeat probes and
    audit entries."""
    from monitoring.kinds import AlertKind

    kinds = [kind for kind in AlertKind.values if kind != AlertKind.TEST]
    params = {
        "a": sites[0], "b": sites[1], "small": plan.small, "kinds": kinds, "n_kinds": len(kinds),
        "admin": admin_id, "probes": plan.probes, "deliveries": plan.deliveries, "audit": plan.audit,
        "days": DAYS,
    }  # fmt: skip
    sql(
        """
        INSERT INTO monitoring_alert (
            id, key, kind, site_id, run_id, severity, status, title, detail, times, count, first_seen_at,
            last_seen_at, acknowledged_at, acknowledged_by_id, resolved_at, last_notified_at, notifications,
            recovery_notified_at)
        SELECT j + 1, kind || ':bench-' || j, kind, CASE WHEN mod(j, 2) = 0 THEN %(a)s ELSE %(b)s END, NULL,
            CASE WHEN mod(j, 3) = 0 THEN 'critical' ELSE 'warning' END, status,
            'Bench alert #' || j || ' (' || kind || ')', 'What happened and what to do next.', '{}'::jsonb,
            1 + mod(j, 9),
            seen - interval '3 hours', seen,
            CASE WHEN status = 'acknowledged' THEN seen END,
            CASE WHEN status = 'acknowledged' THEN %(admin)s END,
            CASE WHEN status = 'resolved' THEN seen + interval '1 hour' END, seen, 1 + mod(j, 3),
            CASE WHEN status = 'resolved' THEN seen + interval '1 hour' END
        FROM (
            SELECT j, (%(kinds)s::text[])[1 + mod(j, %(n_kinds)s)] AS kind,
                now() - j * interval '47 minutes' AS seen,
                CASE WHEN j < 4 THEN 'open' WHEN j < 6 THEN 'acknowledged' ELSE 'resolved' END AS status
            FROM generate_series(0, %(small)s - 1) AS j
        ) AS s
        """,
        params,
    )
    sql(
        """
        INSERT INTO monitoring_delivery (
            alert_id, channel_id, event, attempt, ok, permanent, error, duration_ms, at)
        SELECT 1 + mod(j, %(small)s), c.id, (ARRAY['firing', 'repeat', 'recovery'])[1 + mod(j, 3)], 1,
            mod(j, 20) <> 0, false, CASE WHEN mod(j, 20) = 0 THEN 'HTTP 502 from the webhook' ELSE '' END,
            20 + random() * 400, now() - random() * %(days)s * interval '1 day'
        FROM generate_series(0, %(deliveries)s - 1) AS j
        JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM monitoring_alertchannel) AS c
            ON c.n = mod(j, 2)
        """,
        params,
    )
    sql(
        """
        INSERT INTO monitoring_proberesult (
            site_id, at, ok, latency_ms, release, version, functions, missing_functions, error_category,
            error)
        SELECT CASE WHEN mod(j, 2) = 0 THEN %(a)s ELSE %(b)s END,
            now() - (j / 2) * (%(days)s * 86400.0 / (%(probes)s / 2)) * interval '1 second',
            mod(j, 97) <> 5, 50 + random() * 700, '5.1 (Build: 20251006)', '2025100600',
            '["core_user_create_users", "core_user_update_users", "core_user_get_users_by_field"]'::jsonb,
            '[]'::jsonb, CASE WHEN mod(j, 97) = 5 THEN 'transient' ELSE '' END,
            CASE WHEN mod(j, 97) = 5 THEN 'Read timed out' ELSE '' END
        FROM generate_series(0, %(probes)s - 1) AS j
        """,
        params,
    )
    sql(
        """
        INSERT INTO monitoring_auditentry (at, actor_id, action, target, detail)
        SELECT now() - j * (%(days)s * 86400.0 / %(audit)s) * interval '1 second', %(admin)s,
            (ARRAY['token_promoted', 'token_revoked', 'lock_broken', 'channel_enabled', 'channel_added'])
                [1 + mod(j, 5)],
            CASE WHEN mod(j, 2) = 0 THEN 'north' ELSE 'south' END, 'bench entry ' || j
        FROM generate_series(0, %(audit)s - 1) AS j
        """,
        params,
    )


def seed_calls(plan: Plan, sites: tuple[int, int]) -> None:
    """The call log, in time order as the hub appends it: call i belongs to run i * runs / calls and
    starts within that run's slot; ~3 % have no run (probes, look-ups from a record page). Outcomes:
    ~93 % ok, 3.5 % transient, 1.5 % refused data, then conflicts, maintenance, config and auth."""
    with bare_table("monitoring_calllog"):
        sql("SELECT setseed(0.17)")
        sql(
            """
            INSERT INTO monitoring_calllog (
                site_id, run_id, token_id, function, params, outcome, errorcode, exception, http_status,
                duration_ms, attempt, items, message, detail, started_at)
            SELECT CASE WHEN mod(k, 2) = 0 THEN %(a)s ELSE %(b)s END,
                CASE WHEN r_run < 0.03 THEN NULL ELSE k + 1 END, NULL,
                CASE WHEN r_fn < 0.5 THEN 'core_user_get_users_by_field'
                     WHEN r_fn < 0.8 THEN 'core_user_update_users' ELSE 'core_user_create_users' END,
                '{}'::jsonb, outcome,
                CASE outcome WHEN 'client_fault' THEN 'invalidparameter'
                             WHEN 'conflict' THEN 'invalidparameter' WHEN 'maintenance' THEN 'sitemaintenance'
                             WHEN 'config' THEN 'invalidrecordunknown' WHEN 'auth' THEN 'invalidtoken'
                             ELSE '' END,
                CASE WHEN outcome = 'transient' AND r_run < 0.5 THEN 'ReadTimeout' ELSE '' END,
                CASE WHEN outcome = 'transient' AND r_run < 0.5 THEN NULL
                     WHEN outcome IN ('transient', 'maintenance') THEN 503 ELSE 200 END,
                20 + random() * 2980, CASE WHEN outcome = 'transient' THEN 2 ELSE 1 END, 1 + mod(i, 200),
                CASE outcome WHEN 'ok' THEN '' WHEN 'conflict' THEN 'Username already exists'
                             ELSE 'Moodle said no (' || outcome || ')' END,
                '', now() - %(days)s * interval '1 day' + (k + r_at) * %(step)s * interval '1 second'
            FROM (
                SELECT i, k, r_run, r_fn, r_at,
                    CASE WHEN r_out < 0.93 THEN 'ok' WHEN r_out < 0.965 THEN 'transient'
                         WHEN r_out < 0.98 THEN 'client_fault' WHEN r_out < 0.99 THEN 'conflict'
                         WHEN r_out < 0.995 THEN 'maintenance' WHEN r_out < 0.998 THEN 'config'
                         ELSE 'auth' END AS outcome
                FROM (
                    SELECT i, i * %(runs)s / %(calls)s AS k, random() AS r_run, random() AS r_fn,
                        random() AS r_at, random() AS r_out
                    FROM generate_series(0::bigint, %(calls)s - 1) AS i
                ) AS drawn
            ) AS calls
            """,
            {
                "a": sites[0],
                "b": sites[1],
                "runs": plan.runs,
                "calls": plan.calls,
                "days": DAYS,
                "step": plan.run_step_s,
            },
        )


def rebuild_rollups() -> bool:
    """The per-minute and per-hour call rollups (monitoring.rollups, when this version of the hub has
    them) are written with each call; a bulk-loaded call log needs them rebuilt."""
    if importlib.util.find_spec("monitoring.rollups") is None:
        return False
    rollups = importlib.import_module("monitoring.rollups")
    if not callable(getattr(rollups, "rebuild", None)):
        return False
    rollups.rebuild()
    return True


def reset_sequences() -> None:
    """Rows were inserted with explicit ids: move each table's id sequence past them."""
    from django.apps import apps
    from django.core.management.color import no_style
    from django.db import connection

    models = [model for label in ("sync", "monitoring") for model in apps.get_app_config(label).get_models()]
    for statement in connection.ops.sequence_reset_sql(no_style(), models):
        sql(statement)


def seed(records: int, calls_per_record: int, admin) -> tuple[Plan, float]:
    """An empty hub, then a scale's worth of history, timed step by step: the plan and the seconds."""
    plan = Plan(records, calls_per_record)
    # More memory for the index builds and the rollups' GROUP BY, in this session; reset before the pages
    # are measured, since the pages run on this same connection and must see the server's settings.
    sql("SET maintenance_work_mem = '256MB'")
    sql("SET work_mem = '64MB'")

    @contextmanager
    def step(name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        log(f"  seeded {name} in {time.monotonic() - started:.1f} s")

    log(f"seeding {records:,} records, {plan.calls:,} calls, {plan.runs:,} runs ...")
    total = time.monotonic()
    with step("empty database"):
        empty_database()
    with step("sites"):
        sites = seed_sites(admin)
    with step(f"{plan.runs:,} runs"):
        seed_runs(plan, sites)
    with step(f"{plan.records:,} records and events"):
        seed_records(plan, sites)
    with step(f"dead letters, conflicts, discrepancies ({plan.small:,} each), resolutions"):
        seed_work(plan)
    with step("alerts, deliveries, probes, audit entries"):
        seed_monitoring(plan, sites, admin.pk)
    with step(f"{plan.calls:,} calls"):
        seed_calls(plan, sites)
    with step("call rollups"):
        if not rebuild_rollups():
            log("  (no monitoring.rollups.rebuild in this version: rollups not rebuilt)")
    reset_sequences()
    # VACUUM as well as ANALYZE: autovacuum keeps a live database's visibility map set, which lets counts
    # use index-only scans; a table bulk-loaded a minute ago has none yet and would look slower than it is.
    with step("vacuum analyze"):
        sql("VACUUM ANALYZE")
    sql("RESET work_mem")  # not RESET ALL: Django set the session's time zone when it connected
    sql("RESET maintenance_work_mem")
    seconds = time.monotonic() - total
    log(f"seeded {records:,} records in {seconds:.1f} s")
    return plan, seconds


# -- the pages -------------------------------------------------------------------------------------------


def admin_user():
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    user = user_model.objects.filter(username=ADMIN).first()
    return user or user_model.objects.create_superuser(ADMIN, f"{ADMIN}@example.edu", None)


def pages(plan: Plan) -> list[tuple[str, str, dict]]:
    """(name, URL, extra headers) of every page measured. The ids are picked the same way at each scale
    (a run in the middle of the history, a record with an open dead letter), so pages compare."""
    from django.db.models import Count
    from django.urls import reverse

    from sync.models import DeadLetter, RecordEvent, SyncRun

    middle = SyncRun.objects.filter(kind="incremental", status="succeeded", pk__gte=plan.runs // 2)
    run_id = middle.order_by("pk").values_list("pk", flat=True).first()
    record_id = (
        DeadLetter.objects.filter(status="open").order_by("pk").values_list("record_id", flat=True).first()
    )
    # The run that left the most records in error, so its filtered record list is not empty at any scale.
    worst = RecordEvent.objects.filter(outcome="error").values("run_id").annotate(n=Count("pk"))
    worst_run = worst.order_by("-n", "run_id").values_list("run_id", flat=True).first()
    url = reverse
    runs, records, calls = url("sync:run_list"), url("sync:record_list"), url("monitoring:error_calls")
    letters, conflicts = url("sync:deadletter_list"), url("sync:conflict_list")
    discrepancies, alerts = url("sync:discrepancy_list"), url("monitoring:alert_list")
    errors = url("monitoring:errors")
    return [
        ("overview", url("monitoring:overview"), {}),
        ("sites", url("sync:site_list"), {}),
        ("site detail", url("sync:site_detail", args=["north"]), {}),
        ("site tokens", url("sync:site_tokens", args=["north"]), {}),
        ("token timeline", url("sync:token_timeline"), {}),
        ("locks", url("sync:locks"), {}),
        ("runs", runs, {}),
        ("runs p2", runs + "?page=2", {}),
        ("runs status=problems", runs + "?status=problems", {}),
        ("run detail", url("sync:run_detail", args=[run_id]), {}),
        ("records", records, {}),
        ("records p2", records + "?page=2", {}),
        ("records status=error", records + "?status=error", {}),
        ("records status=error p2", records + "?status=error&page=2", {}),
        ("records site+status=pending", records + "?site=north&status=pending", {}),
        ("records search username", records + "?q=user00001", {}),
        ("records search name", records + "?q=kowalska", {}),
        ("records search external id", records + "?q=E00000777", {}),
        ("records of run, errors", records + f"?run={worst_run}&outcome=error", {}),
        ("record detail", url("sync:record_detail", args=[record_id]), {}),
        ("dead letters", letters, {}),
        ("dead letters p2", letters + "?status=all&page=2", {}),
        ("dead letters errorcode", letters + "?errorcode=dbwriteerror", {}),
        ("conflicts", conflicts, {}),
        ("conflicts p2", conflicts + "?status=all&page=2", {}),
        ("discrepancies", discrepancies, {}),
        ("discrepancies p2", discrepancies + "?status=all&page=2", {}),
        ("resolutions", url("sync:resolution_list"), {}),
        ("alerts", alerts, {}),
        ("alerts p2", alerts + "?page=2", {}),
        ("alert channels", url("monitoring:channel_list"), {}),
        ("errors 1h", errors + "?window=1h", {}),
        ("errors 24h", errors + "?window=24h", {}),
        ("errors 7d", errors + "?window=7d", {}),
        ("errors 7d site", errors + "?window=7d&site=north", {}),
        ("calls", calls, {}),
        ("calls p2", calls + "?page=2", {}),
        ("calls errors", calls + "?category=errors", {}),
        ("calls errors p2", calls + "?category=errors&page=2", {}),
        ("calls errors 24h", calls + "?category=errors&window=24h", {}),
        ("calls transient 7d site", calls + "?category=transient&window=7d&site=north", {}),
        ("calls of a run", calls + f"?run={run_id}", {}),
        ("audit log (admin)", "/admin/monitoring/auditentry/", {}),
        ("metrics", url("monitoring:metrics"), {"Authorization": f"Bearer {METRICS_TOKEN}"}),
    ]


class PageFailed(Exception):
    pass


def request(client, url: str, headers: dict) -> int:
    response = client.get(url, headers=headers)
    if response.status_code != 200:
        raise PageFailed(f"GET {url} answered {response.status_code}")
    return response.status_code


def measure(client, name: str, url: str, headers: dict, repeats: int, explain_over: float) -> dict:
    """One warm-up request (caches, templates), one counted, then the median of `repeats` timed ones.
    Counting is kept apart from timing: capturing queries costs time of its own."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    request(client, url, headers)
    with CaptureQueriesContext(connection) as captured:
        status = request(client, url, headers)
    # Read now: the next request clears the connection's query log the capture is a window on.
    queries = captured.captured_queries
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        request(client, url, headers)
        times.append((time.perf_counter() - started) * 1000)
    if explain_over:
        explain_slow(name, queries, explain_over)
    return {
        "page": name,
        "url": url,
        "status": status,
        "queries": len(queries),
        "median_ms": round(statistics.median(times), 1),
    }


def explain_slow(page: str, queries: list[dict], over_ms: float) -> None:
    """EXPLAIN ANALYZE, to stderr, each query of the page that took longer than `over_ms`."""
    from django.db import connection

    for query in queries:
        ms = float(query["time"]) * 1000
        if ms < over_ms or not query["sql"].lstrip().upper().startswith("SELECT"):
            continue
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {query['sql']}")
            plan = "\n".join(f"    {row[0]}" for row in cursor.fetchall())
        log(f"--- {page}: {ms:.0f} ms\n    {query['sql']}\n{plan}")


def measure_with_retry(client, name: str, url: str, headers: dict, repeats: int, explain_over: float) -> dict:
    """Pages are code other people are editing: one failure (a half-saved file) gets a second chance a
    minute later; a second failure is real and stops the bench."""
    try:
        return measure(client, name, url, headers, repeats, explain_over)
    except Exception as exc:  # any error in a view: retried once, then raised
        log(f"{name}: {type(exc).__name__}: {exc}; retrying in 60 s")
        time.sleep(60)
        return measure(client, name, url, headers, repeats, explain_over)


def measure_pages(scale: int, plan: Plan, admin, repeats: int, explain_over: float) -> list[dict]:
    from django.test import Client

    client = Client()
    client.force_login(admin)
    results = []
    for name, url, headers in pages(plan):
        result = {"scale": scale, **measure_with_retry(client, name, url, headers, repeats, explain_over)}
        print(json.dumps(result, ensure_ascii=False), flush=True)
        results.append(result)
    return results


# -- the report ------------------------------------------------------------------------------------------


def short(n: int) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size and n % (size // 10) == 0:
            return f"{n / size:g}{suffix}"
    return f"{n:,}"


def table(results: list[dict], scales: list[int]) -> str:
    """Pages down, scales across; ratio is the largest scale's time over the smallest's. A page is flagged
    when its query count depends on the scale (an N+1 or a per-row query) or its time more than doubles."""
    first, last = scales[0], scales[-1]
    by = {(r["scale"], r["page"]): r for r in results}
    names = list(dict.fromkeys(r["page"] for r in results))
    head = (
        ["page"]
        + [f"queries at {short(s)}" for s in scales]
        + [f"ms at {short(s)}" for s in scales]
        + ["ratio", "flag"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        rows = [by.get((s, name)) for s in scales]
        queries = [str(r["queries"]) if r else "-" for r in rows]
        ms = [f"{r['median_ms']:.1f}" if r else "-" for r in rows]
        ratio, flags = "-", []
        if by.get((first, name)) and by.get((last, name)):
            value = by[(last, name)]["median_ms"] / max(by[(first, name)]["median_ms"], 0.1)
            ratio = f"{value:.2f}"
            if len({r["queries"] for r in rows if r}) > 1:
                flags.append("queries differ")
            if value > 2:
                flags.append("slower")
        lines.append("| " + " | ".join([name, *queries, *ms, ratio, ", ".join(flags) or ""]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    migrate()
    django_setup()
    admin = admin_user()
    results: list[dict] = []
    seeding: list[str] = []
    for scale in args.scales:
        plan, seconds = seed(scale, args.calls_per_record, admin)
        seeding.append(f"{short(scale)} records + {short(plan.calls)} calls in {seconds:.0f} s")
        results += measure_pages(scale, plan, admin, args.repeats, args.explain_over)
    print()
    print(table(results, args.scales))
    print()
    print(f"Seeding: {'; '.join(seeding)}. Times are medians of {args.repeats} requests, in ms.")


if __name__ == "__main__":
    main()
