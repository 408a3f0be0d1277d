"""Rates, series and throughput from CallLog, and /metrics in Prometheus text behind its token."""

import re
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from integration_hub.testing import HUB_TOKEN, log_call
from monitoring import metrics, prometheus
from monitoring.models import Alert, Heartbeat, ProbeResult
from monitoring.worker_liveness import worker_key
from sync.choices import DeadLetterStatus, RunKind, RunStatus, TokenStatus
from sync.models import DeadLetter, ServiceToken, SyncRecord, SyncRun

METRICS_TOKEN = "scrape-me-0123456789"
LINE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*)\})? '
    r"(?P<value>-?[0-9.e+-]+|NaN|[+-]Inf)$"
)


def _call(
    site, outcome="ok", *, at=None, ms=100.0, function="core_user_update_users", errorcode="", run=None
):
    return log_call(site, outcome, run=run, at=at, ms=ms, function=function, errorcode=errorcode)


def _samples(text: str) -> dict[str, float]:
    """{'name{labels}': value} for every sample line; fails on a line that does not parse."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$", line), line
            continue
        match = LINE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        key = match["name"] + (f"{{{match['labels']}}}" if match["labels"] else "")
        samples[key] = float(match["value"])
    return samples


@pytest.mark.django_db
def test_rates_by_category_errorcode_and_function_over_the_window(site):
    for _ in range(7):
        _call(site)
    _call(site, "transient", errorcode="", function="core_user_create_users")
    _call(site, "transient", errorcode="", function="core_user_create_users")
    _call(site, "auth", errorcode="invalidtoken")
    _call(site, "transient", at=timezone.now() - timedelta(hours=2))  # outside the window

    rates = metrics.category_rates(timezone.now() - timedelta(hours=1))
    assert (rates["total"], rates["ok"], rates["errors"]) == (10, 7, 3)
    by_cat = {row["category"]: row for row in rates["rows"]}
    assert by_cat["transient"]["calls"] == 2 and by_cat["transient"]["rate"] == pytest.approx(0.2)
    assert by_cat["auth"]["calls"] == 1 and by_cat["conflict"]["calls"] == 0

    codes = metrics.by_errorcode(timezone.now() - timedelta(hours=1))
    assert [(c["outcome"], c["errorcode"], c["calls"]) for c in codes] == [
        ("transient", "", 2),
        ("auth", "invalidtoken", 1),
    ]

    functions = {f["function"]: f for f in metrics.by_function(timezone.now() - timedelta(hours=1))}
    assert functions["core_user_create_users"]["failed"] == 2
    assert (
        functions["core_user_update_users"]["calls"] == 8
        and functions["core_user_update_users"]["failed"] == 1
    )


@pytest.mark.django_db
def test_the_series_has_every_bucket_with_counts_by_category_and_latency_percentiles(site):
    now = timezone.now()
    win = metrics.window("1h")
    at = now - timedelta(minutes=10)
    for ms in (100, 200, 300, 400, 1000):
        _call(site, at=at, ms=ms)
    _call(site, "transient", at=at, ms=5000)
    points = metrics.series(win, now=now)
    assert 60 <= len(points) <= 62  # one per minute, empty ones included
    busy = [p for p in points if p["total"]]
    assert len(busy) == 1
    assert busy[0]["ok"] == 5 and busy[0]["categories"]["transient"] == 1
    assert busy[0]["p50"] == pytest.approx(350, rel=0.2) and busy[0]["p90"] > 1000  # from histograms
    assert all(p["p90"] is None for p in points if not p["total"])
    assert metrics.window("bogus").name == "1h" and metrics.window("7d").bucket_s == 7200


@pytest.mark.django_db
def test_run_throughput_gives_duration_and_records_per_minute(site):
    start = timezone.now() - timedelta(hours=1)
    fast = SyncRun.objects.create(
        site=site, kind=RunKind.INCREMENTAL, status=RunStatus.SUCCEEDED, progress_done=300,
        started_at=start, finished_at=start + timedelta(minutes=3),
    )  # fmt: skip
    slow = SyncRun.objects.create(
        site=site, kind=RunKind.INCREMENTAL, status=RunStatus.SUCCEEDED, progress_done=100,
        started_at=start + timedelta(minutes=10), finished_at=start + timedelta(minutes=20),
    )  # fmt: skip
    SyncRun.objects.create(site=site, kind=RunKind.INCREMENTAL, status=RunStatus.QUEUED)
    rows = {row["run"].pk: row for row in metrics.run_throughput()}
    assert set(rows) == {fast.pk, slow.pk}
    assert rows[fast.pk]["per_minute"] == pytest.approx(100) and rows[fast.pk]["seconds"] == 180
    assert rows[slow.pk]["per_minute"] == pytest.approx(10) and rows[slow.pk]["slow"]


@pytest.mark.django_db
def test_prometheus_text_parses_and_covers_the_hub(sync_site, clean_redis):
    token = sync_site.active_token()
    token.valid_until = timezone.now() + timedelta(days=20, hours=1)
    token.save()
    standby = ServiceToken(
        site=sync_site,
        label='new "rotation" \\ token',
        status=TokenStatus.STANDBY,
        valid_until=token.valid_until,
    )
    standby.set_token("standby-token-secret-value")
    standby.save()
    SyncRun.objects.create(site=sync_site, kind=RunKind.INCREMENTAL, status=RunStatus.ABORTED)
    _call(sync_site, "transient")
    _call(sync_site)
    record = SyncRecord.objects.create(site=sync_site, external_id="E1")
    DeadLetter.objects.create(
        site=sync_site,
        record=record,
        function="core_user_create_users",
        category="transient",
        status=DeadLetterStatus.OPEN,
    )
    ProbeResult.objects.create(site=sync_site, ok=False, latency_ms=12, error_category="auth")
    Alert.objects.create(key="auth:north", kind="auth_failure", title="t", site=sync_site)
    Heartbeat.objects.create(
        name=Heartbeat.SCHEDULER, last_finished_at=timezone.now() - timedelta(seconds=30)
    )
    clean_redis.set(worker_key("celery@m"), "1", ex=30)
    now = time.time()
    clean_redis.hset(
        "hub:breaker:north:state",
        mapping={"state": "open", "opened_at": repr(now), "reason": "x", "next_probe_at": repr(now + 30)},
    )

    text = prometheus.prometheus_text()
    samples = _samples(text)
    assert samples['hub_runs{status="aborted"}'] == 1 and samples['hub_runs{status="succeeded"}'] == 0
    assert samples['hub_moodle_calls_recent{site="north",category="transient"}'] == 1
    assert samples['hub_breaker_state{site="north"}'] == 2
    assert samples['hub_token_days_left{site="north",token="main",status="active"}'] == 20
    assert (
        samples['hub_token_days_left{site="north",token="new \\"rotation\\" \\\\ token",status="standby"}']
        == 20
    )
    assert samples['hub_dead_letters_open{site="north"}'] == 1
    assert samples['hub_alerts_open{severity="critical"}'] == 1
    assert samples["hub_workers_alive"] == 1
    assert samples['hub_probe_ok{site="north"}'] == 0 and samples['hub_probe_latency_ms{site="north"}'] == 12
    assert 29 <= samples["hub_scheduler_heartbeat_age_seconds"] < 60
    assert "# TYPE hub_breaker_state gauge" in text
    for secret in (HUB_TOKEN, "standby-token-secret-value"):
        assert secret not in text


@pytest.mark.django_db
def test_metrics_endpoint_wants_the_bearer_token(client, settings, sync_site, clean_redis):
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []
    refused = client.get("/metrics")
    assert refused.status_code == 401 and "hub_" not in refused.content.decode()
    assert refused["WWW-Authenticate"].startswith("Bearer")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "hub_" not in wrong.content.decode()

    response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    body = response.content.decode()
    assert _samples(body)  # every line parses
    assert METRICS_TOKEN not in body and HUB_TOKEN not in body


@pytest.mark.django_db
def test_metrics_endpoint_admits_an_allowed_network_and_refuses_others(client, settings, clean_redis):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics").status_code == 403  # the test client is 127.0.0.1
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8", "127.0.0.0/8"]
    assert client.get("/metrics").status_code == 200
    assert metrics.allowed_network("::1", ["::1/128"]) and not metrics.allowed_network("bogus", ["0.0.0.0/0"])
