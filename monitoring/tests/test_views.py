"""Overview and /healthz."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from integration_hub.testing import log_call
from monitoring.models import CallLog, Heartbeat, ProbeResult
from monitoring.worker_liveness import worker_key
from sync.choices import RunKind, RunStatus, TokenStatus
from sync.models import MoodleSite, ServiceToken, SyncRun
from web.models import Preference


@pytest.mark.django_db
def test_overview_needs_a_login(client):
    response = client.get(reverse("monitoring:overview"))
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.mark.django_db
def test_overview_empty_state_says_how_to_add_a_site(client, operator):
    client.force_login(operator)
    body = client.get(reverse("monitoring:overview")).content.decode()
    assert "No Moodle site yet" in body
    assert "manage.py addsite" in body
    assert "Ask an administrator" in body


@pytest.mark.django_db
def test_overview_shows_latest_runs_and_scheduler_heartbeat(client, operator, site):
    Heartbeat.objects.create(
        name=Heartbeat.SCHEDULER, last_finished_at=timezone.now() - timedelta(seconds=40)
    )
    done = SyncRun.objects.create(site=site, kind=RunKind.INCREMENTAL, status=RunStatus.SUCCEEDED)
    done.started_at = done.finished_at = timezone.now()
    done.save()
    running = SyncRun.objects.create(
        site=site, kind=RunKind.BOOTSTRAP, status=RunStatus.RUNNING, progress_total=200, progress_done=50
    )
    client.force_login(operator)
    body = client.get(reverse("monitoring:overview")).content.decode()
    assert "beat last seen 40 s ago" in body
    assert f"#{done.pk}" in body and f"#{running.pk}" in body
    assert 'value="25"' in body  # the running bootstrap's progress bar
    assert "scheduler is silent" not in body


@pytest.mark.django_db
def test_overview_warns_when_the_scheduler_is_silent(client, operator):
    Heartbeat.objects.create(
        name=Heartbeat.SCHEDULER, last_finished_at=timezone.now() - timedelta(minutes=10)
    )
    client.force_login(operator)
    body = client.get(reverse("monitoring:overview")).content.decode()
    assert "scheduler is silent" in body and "10 min ago" in body


@pytest.mark.django_db
def test_overview_query_count_does_not_grow_with_sites(client, operator):
    client.force_login(operator)

    def queries_for(site_count: int) -> int:
        for i in range(MoodleSite.objects.count(), site_count):
            site = MoodleSite.objects.create(slug=f"s{i}", name=f"S{i}", base_url="https://m.example.edu")
            token = ServiceToken(site=site, label="main", status=TokenStatus.ACTIVE)
            token.set_token(f"token-{i}-abcdef")
            token.save()
            for _ in range(3):
                SyncRun.objects.create(site=site, kind=RunKind.INCREMENTAL)
            SyncRun.objects.create(site=site, kind=RunKind.INCREMENTAL, status=RunStatus.PAUSED)
            ProbeResult.objects.create(site=site, ok=True, latency_ms=80, release="5.1")
            CallLog.objects.create(
                site=site, function="f", outcome="transient", duration_ms=50, started_at=timezone.now()
            )
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse("monitoring:overview")).status_code == 200
        return len(ctx.captured_queries)

    assert queries_for(2) == queries_for(12)


@pytest.mark.django_db
def test_healthz_needs_no_login_and_reports_components(client, clean_redis):
    Heartbeat.record(Heartbeat.SCHEDULER)
    clean_redis.set(worker_key("celery@web"), "1", ex=30)
    response = client.get("/healthz")
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "ok"
    assert {c["name"] for c in data["components"]} == {"database", "redis", "worker", "scheduler"}


@pytest.mark.django_db
def test_healthz_is_503_when_the_scheduler_is_silent(client):
    Heartbeat.objects.create(name=Heartbeat.SCHEDULER, last_finished_at=timezone.now() - timedelta(minutes=4))
    response = client.get("/healthz")
    assert response.status_code == 503
    scheduler = next(c for c in response.json()["components"] if c["name"] == "scheduler")
    assert scheduler["ok"] is False and "240 s ago" in scheduler["detail"]


def _overview_state(client, slug: str = "north") -> str:
    """The state block of one site on the overview."""
    body = client.get(reverse("monitoring:overview")).content.decode()
    start = body.rindex('<div class="site-state', 0, body.index(f'id="state-{slug}"'))
    return body[start : body.index("</dl>", start)]


def _with_token(site: MoodleSite, **fields) -> ServiceToken:
    token = ServiceToken(site=site, label="main", status=TokenStatus.ACTIVE, **fields)
    token.set_token("overview-token-9876wxyz")
    token.save()
    return token


@pytest.mark.django_db
def test_overview_site_state_is_healthy_and_boring_with_the_last_probe_and_token_expiry(
    client, operator, site, clean_redis
):
    _with_token(site, valid_until=timezone.now() + timedelta(days=45, hours=1))
    ProbeResult.objects.create(site=site, ok=True, latency_ms=84, release="5.1.2 (Build: 20251006)")
    log_call(site, ms=90)
    client.force_login(operator)
    state = _overview_state(client)
    assert "state-healthy" in state and "Boring on purpose" in state
    assert "84 ms" in state and "Moodle 5.1.2 (Build: 20251006)" in state
    assert "45 days" in state and "…wxyz" in state
    assert '<svg class="sparkline"' in state
    assert "overview-token-9876wxyz" not in client.get(reverse("monitoring:overview")).content.decode()


@pytest.mark.django_db
def test_overview_site_state_is_failing_when_the_probe_was_refused(client, operator, site, clean_redis):
    _with_token(site)
    ProbeResult.objects.create(
        site=site,
        ok=False,
        error_category="auth",
        error="core_webservice_get_site_info: auth: [invalidtoken] x",
    )
    client.force_login(operator)
    state = _overview_state(client)
    assert "state-failing" in state and "Moodle rejected the token" in state and "invalidtoken" in state
    assert "Next:" in state


@pytest.mark.django_db
def test_overview_site_state_is_failing_when_the_latest_run_aborted_or_a_function_is_missing(
    client, operator, site, clean_redis
):
    _with_token(site)
    ProbeResult.objects.create(
        site=site, ok=True, latency_ms=50, missing_functions=["core_user_create_users"]
    )
    run = SyncRun.objects.create(
        site=site,
        kind=RunKind.INCREMENTAL,
        status=RunStatus.ABORTED,
        abort_reason="Moodle rejected the token",
    )
    client.force_login(operator)
    state = _overview_state(client)
    assert "state-failing" in state
    assert f"Run #{run.pk} was stopped" in state and "cannot call core_user_create_users" in state
    assert reverse("sync:run_detail", args=[run.pk]) in state


@pytest.mark.django_db
def test_overview_site_state_is_degraded_while_the_breaker_is_open_saying_when_it_probes_again(
    client, operator, site, clean_redis
):
    _with_token(site)
    Preference.objects.create(user=operator, time_zone="Europe/Warsaw")  # shown in the viewer's zone
    opened = timezone.now().replace(hour=9, minute=12, second=0, microsecond=0)
    local = timezone.localtime(opened, timezone=__import__("zoneinfo").ZoneInfo("Europe/Warsaw"))
    clean_redis.hset(
        "hub:breaker:north:state",
        mapping={
            "state": "open",
            "opened_at": repr(opened.timestamp()),
            "reason": "p90 latency 2400 ms > 2000 ms over 12 calls",
            "next_probe_at": repr(opened.timestamp() + 60),
        },
    )
    client.force_login(operator)
    state = _overview_state(client)
    assert "state-degraded" in state
    expected = (
        f"The breaker opened at {local:%H:%M %Z} because p90 latency 2400 ms &gt; 2000 ms over 12 calls; "
        f"calls are paused and will be probed again at {local + timedelta(minutes=1):%H:%M %Z}."
    )
    assert expected in state


@pytest.mark.django_db
def test_overview_site_state_is_degraded_when_transient_errors_are_elevated(
    client, operator, site, clean_redis, settings
):
    settings.ALERT_TRANSIENT_MIN_CALLS = 10
    _with_token(site)
    for n in range(10):
        CallLog.objects.create(
            site=site,
            function="f",
            outcome="transient" if n < 3 else "ok",
            duration_ms=50,
            started_at=timezone.now(),
        )
    client.force_login(operator)
    state = _overview_state(client)
    assert "state-degraded" in state and "3 of 10 calls (30%)" in state


@pytest.mark.django_db
def test_overview_site_state_is_paused_while_a_run_is_paused(client, operator, site, clean_redis):
    _with_token(site)
    run = SyncRun.objects.create(site=site, kind=RunKind.BOOTSTRAP, status=RunStatus.PAUSED)
    client.force_login(operator)
    state = _overview_state(client)
    assert "state-paused" in state and f"Run #{run.pk} is paused" in state
