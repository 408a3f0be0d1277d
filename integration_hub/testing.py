"""Helpers the tests share (fixtures live in conftest.py): accounts, a source of people, the simulated
Moodle's control API."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from simulator.app import SimulatorApp

PASSWORD = "correct horse battery staple"  # noqa: S105 - test accounts only


def sign_in(page, username: str, password: str = PASSWORD) -> None:
    """Sign in through the login form, as a person would."""
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


HUB_TOKEN = "hub-token-0123456789abcdef"  # noqa: S105 - the simulator's test token
FIELDS = ["employee_id", "login", "first", "last", "mail", "dept", "city", "lang"]
MAPPING = {
    "match_key": "idnumber",
    "auth": "manual",
    "fields": {
        "username": {"source": "login", "transforms": ["strip", "lowercase"]},
        "email": {"source": "mail", "transforms": ["strip"]},
        "firstname": "first",
        "lastname": "last",
        "department": "dept",
        "city": {"source": "city", "update": "create"},
        "lang": "lang",
    },
}


def log_call(site, outcome: str = "ok", *, run=None, at=None, ms: float = 100.0, **fields):
    """One Moodle call as the client reports it, stored by the real writer (its row and its rollups)."""
    # Imported here: this module is loaded by conftest before Django is set up.
    from django.utils import timezone

    from monitoring.audit import CallLogWriter
    from monitoring.models import CallLog
    from sync.moodle.audit import CallRecord

    record = CallRecord(
        site=site.slug,
        function=fields.pop("function", "core_user_update_users"),
        params={},
        outcome=outcome,
        errorcode=fields.pop("errorcode", ""),
        exception=None,
        http_status=fields.pop("http_status", 200),
        duration_ms=ms,
        attempt=1,
        started_at=at or timezone.now(),
        message=fields.pop("message", ""),
        items=0,
    )
    assert not fields, f"unknown fields {sorted(fields)}"
    CallLogWriter(site, run=run)(record)
    return CallLog.objects.filter(site=site).latest("pk")


def person(n: int, **overrides: str) -> dict[str, str]:
    row = {
        "employee_id": f"E{n:05d}",
        "login": f"user{n:05d}",
        "first": ["Łucja", "Mateo", "Thu", "Ayşe", "Jürgen", "Renée"][n % 6],
        "last": f"Nowak-{n}",
        "mail": f"user{n:05d}@example.edu",
        "dept": ["Nursing", "History", "Physics"][n % 3],
        "city": "Gdańsk",
        "lang": "en",
    }
    row.update(overrides)
    return row


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


@dataclass
class Moodle:
    """The simulated Moodle behind the site, with its control API."""

    app: SimulatorApp

    @property
    def transport(self) -> httpx.WSGITransport:
        return httpx.WSGITransport(app=self.app)

    def control(self, method: str, path: str, json=None):
        with httpx.Client(transport=self.transport, base_url="http://moodle.test") as client:
            response = client.request(method, f"/_sim/{path}", json=json)
            response.raise_for_status()
            return response.json()

    def users(self, *, include_deleted: bool = False) -> list[dict]:
        users = self.control("GET", "users")["users"]
        return [u for u in users if include_deleted or not u.get("deleted")]

    def people(self, *, unique: bool = True) -> dict[str, dict]:
        """Users created for source people (idnumber set), by idnumber; by default an idnumber held twice
        fails the test."""
        found: dict[str, dict] = {}
        for user in self.users():
            if user.get("idnumber"):
                assert not unique or user["idnumber"] not in found, (
                    f"idnumber {user['idnumber']} exists twice"
                )
                found[user["idnumber"]] = user
        return found

    def stats(self) -> dict:
        return self.control("GET", "stats")

    def reset_stats(self) -> None:
        self.control("POST", "reset")

    def write_calls(self) -> int:
        calls = self.stats()["calls"]
        return sum(n for fn, n in calls.items() if fn.startswith(("core_user_create", "core_user_update")))


def make_site(slug: str, base_url: str, csv_path: Path, *, removed_policy: str = "keep", **fields):
    """A site with an active token for the simulator, a CSV source with MAPPING, and limits generous
    enough that the tests are not paced by the throttle (which has tests of its own)."""
    from sync.choices import TokenStatus
    from sync.models import MoodleSite, ServiceToken, SyncSource

    limits = {"min_spacing_ms": 0, "calls_per_minute": 100_000, "max_concurrent_calls": 4}
    site = MoodleSite.objects.create(
        slug=slug, name=fields.pop("name", slug.title()), base_url=base_url, **{**limits, **fields}
    )
    token = ServiceToken(site=site, label="main", status=TokenStatus.ACTIVE)
    token.set_token(HUB_TOKEN)
    token.save()
    SyncSource.objects.create(
        site=site,
        kind="csv",
        config={"path": str(csv_path), "id_column": "employee_id"},
        mapping=MAPPING,
        removed_policy=removed_policy,
    )
    return site


def start_worker(env: dict, name: str, *, concurrency: int = 1) -> subprocess.Popen:
    """A real Celery worker process with the given environment: the solo pool, or a prefork pool of
    `concurrency` processes (as in production) to let tasks race."""
    pool = (
        ["--pool", "solo"] if concurrency == 1 else ["--pool", "prefork", "--concurrency", str(concurrency)]
    )
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "celery", "-A", "integration_hub", "worker", *pool,
         "-Q", "celery,monitoring", "--loglevel", "WARNING", "--hostname", f"{name}-{os.getpid()}@%h"],
        env=env,
    )  # fmt: skip


def simulated_moodle(**config) -> Moodle:
    """A fresh in-process simulator with the hub's token for the service user."""
    from simulator.app import SimConfig, create_app

    moodle = Moodle(create_app(SimConfig(**config), control=True))
    moodle.control("POST", "tokens", {"token": HUB_TOKEN, "username": "wsuser"})
    return moodle
