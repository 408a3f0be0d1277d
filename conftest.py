"""Shared test fixtures: the fixed cast of people and sites, a browser, and the environment for the
real worker and beat processes some tests start."""

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connections

from integration_hub.testing import PASSWORD, Moodle, make_site, person, simulated_moodle, write_csv
from sync.choices import RemovedPolicy
from sync.models import MoodleSite

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def operator(db) -> User:
    user = User.objects.create_user("operator", password=PASSWORD)
    user.groups.add(Group.objects.get(name="Operators"))
    return user


@pytest.fixture
def hub_admin(db) -> User:
    user = User.objects.create_user("admin", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="Admins"))
    return user


@pytest.fixture
def site(db) -> MoodleSite:
    return MoodleSite.objects.create(
        slug="north",
        name="North Campus",
        base_url="http://127.0.0.1:8090",
        run_time_budget=timedelta(hours=1),
    )


@pytest.fixture
def child_env() -> dict[str, str]:
    """Environment for a subprocess (worker, beat) that must see the test database and Redis.

    Tests using it need committed data: mark them django_db(transaction=True, serialized_rollback=True)
    so that the rows the migrations made (roles, schedules) are back for the tests after them."""
    env = dict(os.environ)
    db = settings.DATABASES["default"]
    host = db.get("HOST") or db.get("OPTIONS", {}).get("host", "")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    if host.startswith("/"):
        env["DATABASE_URL"] = f"postgres://{db['USER']}@/{db['NAME']}?host={host}"
    else:
        env["DATABASE_URL"] = f"postgres://{db['USER']}:{db['PASSWORD']}@{host}{port}/{db['NAME']}"
    return env


@pytest.fixture
def browser():
    """Headless Debian Chromium driven by Playwright. Skips when Chromium is missing, unless
    REQUIRE_BROWSER=1 (CI), where a missing browser is a failure."""
    if not CHROMIUM:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail("REQUIRE_BROWSER=1 but no chromium executable was found")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; Django's ORM calls made here by the test
    # (fixtures, assertions) are still synchronous and safe.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
            ],
        )  # fmt: skip
        yield browser
        # Connections opened while Playwright's loop ran live in its context: close them here, or the
        # test database cannot be dropped at the end of the session.
        connections.close_all()
        browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def clean_redis():
    """Throttle, breaker and lock state from one test must not leak into the next."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter("hub:*"):
        client.delete(key)
    yield client


@pytest.fixture
def moodle() -> Moodle:
    return simulated_moodle(seed=7)


@pytest.fixture
def people_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "people.csv", [person(n) for n in range(1, 31)])


@pytest.fixture
def sync_site(db, clean_redis, people_csv) -> MoodleSite:
    """A site with generous limits (the throttle is tested on its own) and the CSV source above."""
    return make_site(
        "north", "http://moodle.test", people_csv, name="North Campus", batch_size=10,
        removed_policy=RemovedPolicy.SUSPEND,
    )  # fmt: skip
