"""Every error a page shows is a sentence for a person: after a demo run full of trouble (a proxy's HTML
502s, a binary upload, a half-empty export held back by the guard, a revoked token), every page reachable
from the Overview is rendered and none shows a class name, a traceback, a raw HTML page or a server path."""

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from integration_hub.demo import DEMO_LANGUAGES
from integration_hub.testing import HUB_TOKEN, simulated_moodle
from monitoring import rules
from monitoring.heartbeat import probe_site
from simulator.seed import seed
from sync import runs
from sync.choices import RemovedPolicy, RunKind, RunStatus, TokenStatus
from sync.models import MoodleSite, ServiceToken, SyncRun, SyncSource
from sync.run import engine
from web.models import Preference

pytestmark = pytest.mark.django_db

DEMO = Path(settings.BASE_DIR) / "demo"
FORBIDDEN = ("Error:", "Exception", "Traceback", "/tmp/", "var/")
RAW_DETAILS = re.compile(r'<details class="raw">.*?</details>', re.S)
LINK = re.compile(r'href="(/[^"#]*)"')
SKIP = ("/admin/", "/static/", "/logout/", "/metrics")
MAX_PAGES = 400
VARIANTS_PER_PATH = 6


def run(site, moodle, kind, **options):
    queued = runs.start(site, kind, enqueue=False, **options)
    return engine.execute(queued.pk, transport=moodle.transport, sleep=lambda s: None)


@pytest.fixture
def troubled_demo(clean_redis, hub_admin):
    moodle = simulated_moodle(seed=7, langs=tuple(DEMO_LANGUAGES.split(",")))
    seed(moodle.app.state, 300)
    site = MoodleSite.objects.create(
        slug="demo",
        name="Demo University",
        base_url="http://moodle.test",
        min_spacing_ms=0,
        calls_per_minute=100_000,
        max_concurrent_calls=1,  # one create at a time, so the proxy's 502s all land on the first group
        batch_size=250,  # one create group per batch, so the resend comes right after the first try
        languages=DEMO_LANGUAGES,
    )
    token = ServiceToken(site=site, label="demo", status=TokenStatus.ACTIVE)
    token.set_token(HUB_TOKEN)
    token.save()
    SyncSource.objects.create(
        site=site,
        kind="csv",
        config={"path": str(DEMO / "people.csv"), "id_column": "employee_id"},
        mapping=__import__("json").loads((DEMO / "mapping.json").read_text()),
        removed_policy=RemovedPolicy.SUSPEND,
    )
    probe_site(site, transport=moodle.transport)
    # A proxy in front of Moodle answers the first create with its HTML 502 page, and its one resend (the
    # look-up found nobody made) too: that batch's people become dead letters.
    moodle.control("POST", "inject", {"kinds": ["502"] * 2, "function": "core_user_create_users"})
    bootstrap = run(site, moodle, RunKind.BOOTSTRAP)
    assert bootstrap.status == RunStatus.PROBLEMS and bootstrap.dead_lettered > 100

    binary = SimpleUploadedFile("export.csv", b"employee_id,login\x00\r\x01\x02,\x00\x00\rIHDR\x00\n1,a\n")
    dry = run(site, moodle, RunKind.BOOTSTRAP, dry_run=True, upload=binary)
    assert dry.status == RunStatus.FAILED and "the source could not be read" in dry.abort_reason

    lines = (DEMO / "people.csv").read_bytes().splitlines(keepends=True)
    half = SimpleUploadedFile("people-truncated.csv", b"".join(lines[: len(lines) // 2]))
    held = run(site, moodle, RunKind.INCREMENTAL, upload=half)
    assert held.status == RunStatus.PROBLEMS and held.blocked > 500
    run(site, moodle, RunKind.RECONCILE)

    moodle.control("DELETE", f"tokens/{HUB_TOKEN}")
    probe_site(site, transport=moodle.transport)
    stopped = run(site, moodle, RunKind.INCREMENTAL)
    assert stopped.status == RunStatus.ABORTED
    rules.evaluate()
    rules.evaluate()
    return site


def crawl(client, starts: list[str]) -> dict[str, str]:
    """Every page reachable by links from `starts` (a few of each kind): {url: html}."""
    seen: dict[str, str] = {}
    per_path: dict[str, int] = {}
    queue = list(starts)
    while queue and len(seen) < MAX_PAGES:
        url = queue.pop(0).replace("&amp;", "&")
        path = re.sub(r"\d+", "N", urlsplit(url).path)  # a few of each kind of page, not every record
        if url in seen or url.startswith(SKIP) or per_path.get(path, 0) >= VARIANTS_PER_PATH:
            continue
        response = client.get(url)
        assert response.status_code in (200, 403), f"{url} answered {response.status_code}"
        per_path[path] = per_path.get(path, 0) + 1
        if response.streaming:  # a download (a list as CSV), not a page
            continue
        html = response.content.decode()
        seen[url] = html
        queue.extend(link for link in LINK.findall(html) if link not in seen)
    return seen


def test_no_page_shows_a_class_name_a_traceback_a_raw_page_or_a_server_path(client, troubled_demo, hub_admin):
    client.force_login(hub_admin)
    runs_of_the_night = [f"/runs/{pk}/" for pk in SyncRun.objects.values_list("pk", flat=True)]
    pages = crawl(client, ["/", *runs_of_the_night])
    assert len(pages) > 80  # the crawl reached the lists, the details and the forms
    configured = troubled_demo.source.config["path"]  # typed in by an admin: configuration, not a leak
    problems = []
    for url, html in pages.items():
        text = RAW_DETAILS.sub("", html).replace(configured, "<the source's path>")
        found = [word for word in FORBIDDEN if word in text]
        if text.count("<html") != 1 or "&lt;html" in text:
            found.append("<html")
        if found:
            problems.append(f"{url}: {', '.join(found)}")
    assert not problems, "\n".join(problems)
    # The raw answer of the proxy is there for whoever needs it, behind a toggle on the calls page.
    calls = client.get("/errors/calls/", {"category": "transient"}).content.decode()
    assert "HTTP 502 from a proxy in front of Moodle: Moodle did not answer" in calls
    assert '<details class="raw">' in calls and "502 Bad Gateway" in calls


OPTIONS = re.compile(r"<select\b.*?</select>", re.S)  # a zone picker lists "UTC" as a choice
# "1 runs", "1 dead letters": a count of one with a plural noun (a few words that end in s are singular).
SINGULAR_S = "s|ms|class|status|process|address|access|alias|yes"
ONE_PLURAL = re.compile(rf"(?<![\d.,])\b1 (?!(?:{SINGULAR_S})\b)[a-z]+s\b")


def test_every_page_shows_times_in_the_viewers_zone_and_counts_one_in_the_singular(
    client, troubled_demo, hub_admin, operator
):
    troubled_demo.time_zone = "Europe/Madrid"  # the site's zone is not the viewer's either
    troubled_demo.save()
    problems = []
    for person in (operator, hub_admin):
        Preference.objects.update_or_create(user=person, defaults={"time_zone": "America/Los_Angeles"})
        client.force_login(person)
        runs_of_the_night = [f"/runs/{pk}/" for pk in SyncRun.objects.values_list("pk", flat=True)]
        pages = crawl(client, ["/", *runs_of_the_night])
        assert len(pages) > 60
        for url, html in pages.items():
            text = OPTIONS.sub("", RAW_DETAILS.sub("", html))
            # The settings page states the rule and the notices' zone (the hub's, UTC here) in so many words.
            text = text.replace("stored in UTC", "").replace("the hub's zone (UTC)", "")
            found = [word for word in ("UTC", "CET", "CEST") if re.search(rf"\b{word}\b", text)]
            found += ONE_PLURAL.findall(re.sub(r"<[^>]+>", " ", text))
            if found:
                problems.append(f"{person.get_username()} {url}: {', '.join(found)}")
    assert not problems, "\n".join(problems)
