"""The errors page (chart, rates, drill-down) and the calls list behind it."""

import logging
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from integration_hub.testing import HUB_TOKEN, log_call
from monitoring.heartbeat import probe_site
from monitoring.models import CallLog
from sync.choices import RunKind, RunStatus
from sync.models import MoodleSite, SyncRun
from sync.run import engine


def _call(site, outcome="ok", *, run=None, function="core_user_create_users", errorcode="", minutes_ago=5):
    return log_call(
        site,
        outcome,
        run=run,
        function=function,
        errorcode=errorcode,
        ms=120.0,
        at=timezone.now() - timedelta(minutes=minutes_ago),
        http_status=503 if outcome == "transient" else 200,
        message=f"{function}: {outcome}" if outcome != "ok" else "",
    )


@pytest.fixture
def calls(site):
    other = MoodleSite.objects.create(slug="south", name="South Campus", base_url="https://s.example.edu")
    start = timezone.now() - timedelta(minutes=10)
    run = SyncRun.objects.create(
        site=site, kind=RunKind.INCREMENTAL, status=RunStatus.SUCCEEDED, progress_done=40,
        started_at=start, finished_at=start + timedelta(minutes=2),
    )  # fmt: skip
    for _ in range(5):
        _call(site, run=run)
    _call(site, "transient", run=run)
    _call(site, "transient", run=run, function="core_user_update_users")
    _call(site, "client_fault", run=run, errorcode="invalidparameter")
    _call(other, "transient")
    _call(site, "transient", minutes_ago=3 * 60)  # only in the wider windows
    return {"run": run, "other": other}


@pytest.mark.django_db
def test_the_errors_pages_need_a_login(client):
    for name in ("monitoring:errors", "monitoring:error_calls"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.mark.django_db
def test_errors_page_shows_the_chart_rates_and_drill_down_links(client, operator, site, calls):
    client.force_login(operator)
    response = client.get(reverse("monitoring:errors"))
    assert response.status_code == 200
    body = response.content.decode()
    assert '<svg class="chart"' in body and "<rect" in body and 'class="latency"' in body
    assert "9 calls: 5 OK" in body
    assert f"{reverse('monitoring:error_calls')}?window=1h&amp;category=transient" in body
    assert "<code>invalidparameter</code>" in body
    assert f'href="{reverse("sync:run_detail", args=[calls["run"].pk])}"' in body  # the throughput table

    site_only = client.get(reverse("monitoring:errors"), {"site": "north", "window": "6h"}).content.decode()
    assert "Errors on North Campus" in site_only
    assert "9 calls: 5 OK" in site_only  # 8 recent on north + the one three hours ago
    assert "?window=6h&amp;site=north&amp;category=transient" in site_only


@pytest.mark.django_db
def test_errors_page_empty_window_says_what_healthy_means(client, operator, site):
    client.force_login(operator)
    body = client.get(reverse("monitoring:errors"), {"window": "7d"}).content.decode()
    assert "No Moodle call in the last 7 days" in body and "No failed call in this window" in body


@pytest.mark.django_db
def test_the_calls_list_filters_by_site_category_errorcode_function_and_run(client, operator, site, calls):
    client.force_login(operator)
    url = reverse("monitoring:error_calls")

    def listed(**params) -> int:
        response = client.get(url, params)
        assert response.status_code == 200
        return response.context["page"].paginator.count

    assert listed() == 10
    assert listed(window="1h") == 9
    assert listed(category="transient", site="north", window="1h") == 2
    assert listed(category="transient", site="south") == 1
    assert listed(category="errors", site="north", window="1h") == 3
    assert listed(errorcode="invalidparameter") == 1
    assert listed(function="core_user_update_users") == 1
    assert listed(run=calls["run"].pk, category="errors") == 3
    assert listed(category="transient", site="nowhere") == 4  # a bad value is ignored and reported
    body = client.get(url, {"run": calls["run"].pk, "category": "client_fault"}).content.decode()
    assert f'href="{reverse("sync:run_detail", args=[calls["run"].pk])}"' in body
    assert f"{reverse('sync:record_list')}?run={calls['run'].pk}&amp;outcome=error" in body
    assert "with outcome Client fault in run #" in body
    empty = client.get(url, {"function": "core_nothing"}).content.decode()
    assert "No call matches these filters" in empty


@pytest.mark.django_db
def test_the_calls_list_paginates(client, operator, site):
    for _ in range(60):
        _call(site, "transient")
    client.force_login(operator)
    first = client.get(reverse("monitoring:error_calls"), {"category": "transient"})
    assert len(first.context["page"].object_list) == 50
    body = first.content.decode()
    assert "page=2" in body and "category=transient" in body


@pytest.mark.django_db
def test_the_errors_page_query_count_does_not_grow_with_calls(client, operator, site):
    client.force_login(operator)

    def queries_for(n: int) -> int:
        for _ in range(n - CallLog.objects.count()):
            _call(site, "transient", run=SyncRun.objects.create(site=site, kind=RunKind.INCREMENTAL))
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse("monitoring:errors")).status_code == 200
        return len(ctx.captured_queries)

    assert queries_for(3) == queries_for(30)


@pytest.mark.django_db
def test_no_page_or_log_line_shows_the_token(client, operator, sync_site, moodle, caplog, settings):
    """A run, a probe with a revoked token and its alert, then every monitoring page: the token nowhere."""
    settings.METRICS_TOKEN = "scrape-token-abc"
    caplog.set_level(logging.DEBUG)
    run = engine.execute(SyncRun.objects.queue(sync_site, RunKind.BOOTSTRAP).pk, transport=moodle.transport)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    moodle.control("DELETE", f"tokens/{HUB_TOKEN}")
    probe_site(sync_site, transport=moodle.transport)

    client.force_login(operator)
    pages = [
        client.get(reverse("monitoring:overview")),
        client.get(reverse("monitoring:errors")),
        client.get(reverse("monitoring:errors"), {"site": "north", "window": "24h"}),
        client.get(reverse("monitoring:error_calls")),
        client.get(reverse("monitoring:error_calls"), {"category": "auth"}),
        client.get(reverse("monitoring:healthz")),
        client.get(reverse("monitoring:metrics"), headers={"Authorization": "Bearer scrape-token-abc"}),
    ]
    assert [p.status_code for p in pages[:5]] == [200] * 5
    assert "Moodle refused the token" in pages[0].content.decode()
    for page in pages:
        assert HUB_TOKEN not in page.content.decode()
    assert "scrape-token-abc" not in pages[-1].content.decode()
    assert HUB_TOKEN not in caplog.text
