"""Overview and /healthz."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from monitoring.models import Heartbeat
from sync.choices import RunKind, RunStatus
from sync.models import MoodleSite, SyncRun


@pytest.mark.django_db
def test_overview_needs_a_login(client):
    response = client.get(reverse("overview"))
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.mark.django_db
def test_overview_empty_state_says_how_to_add_a_site(client, operator):
    client.force_login(operator)
    body = client.get(reverse("overview")).content.decode()
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
    body = client.get(reverse("overview")).content.decode()
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
    body = client.get(reverse("overview")).content.decode()
    assert "scheduler is silent" in body and "10 min ago" in body


@pytest.mark.django_db
def test_overview_query_count_does_not_grow_with_sites(client, operator):
    client.force_login(operator)

    def queries_for(site_count: int) -> int:
        for i in range(MoodleSite.objects.count(), site_count):
            site = MoodleSite.objects.create(slug=f"s{i}", name=f"S{i}", base_url="https://m.example.edu")
            for _ in range(3):
                SyncRun.objects.create(site=site, kind=RunKind.INCREMENTAL)
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse("overview")).status_code == 200
        return len(ctx.captured_queries)

    assert queries_for(2) == queries_for(12)


@pytest.mark.django_db
def test_healthz_needs_no_login_and_reports_components(client):
    Heartbeat.record(Heartbeat.SCHEDULER)
    response = client.get("/healthz")
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "ok"
    assert {c["name"] for c in data["components"]} == {"database", "redis", "scheduler"}


@pytest.mark.django_db
def test_healthz_is_503_when_the_scheduler_is_silent(client):
    Heartbeat.objects.create(name=Heartbeat.SCHEDULER, last_finished_at=timezone.now() - timedelta(minutes=4))
    response = client.get("/healthz")
    assert response.status_code == 503
    scheduler = next(c for c in response.json()["components"] if c["name"] == "scheduler")
    assert scheduler["ok"] is False and "240 s ago" in scheduler["detail"]
