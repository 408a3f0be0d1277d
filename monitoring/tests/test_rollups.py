"""The call log's rollups: counted with each call exactly as a rebuild counts them, percentiles within
their bucket, and an errors page that never reads the call log itself."""

import random
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from integration_hub.testing import log_call
from monitoring import rollups
from monitoring.models import CallRollup

FIELDS = (
    "site_id",
    "span_s",
    "bucket",
    "function",
    "outcome",
    "errorcode",
    "http_status",
    "calls",
    "histogram",
)


def _rows() -> list[tuple]:
    return sorted(CallRollup.objects.values_list(*FIELDS))


@pytest.mark.django_db
def test_each_call_counts_in_its_minute_and_hour_as_a_rebuild_would(site):
    rng = random.Random(7)
    now = timezone.now()
    for n in range(60):
        log_call(
            site,
            rng.choice(["ok", "ok", "transient", "client_fault"]),
            at=now - timedelta(seconds=rng.randint(0, 3 * 3600)),
            ms=rng.uniform(5, 8000),
            function=rng.choice(["core_user_create_users", "core_user_get_users_by_field"]),
            errorcode="invalidparameter" if n % 7 == 0 else "",
            http_status=None if n % 11 == 0 else 200,
        )
    written = _rows()
    for span in rollups.SPANS:
        assert sum(r[7] for r in written if r[1] == span) == 60
    rollups.rebuild()
    assert _rows() == written


def test_a_percentile_from_the_histogram_lies_in_the_bucket_of_the_true_one():
    rng = random.Random(3)
    durations = sorted(rng.lognormvariate(5, 1) for _ in range(2000))
    histogram = [0] * rollups.SLOTS
    for ms in durations:
        histogram[rollups.slot(ms)] += 1
    for fraction in (0.5, 0.9, 0.99):
        true = durations[int(fraction * len(durations)) - 1]
        estimate = rollups.percentile(histogram, fraction, largest=durations[-1])
        assert rollups.slot(estimate) in (rollups.slot(true), rollups.slot(true) + 1)
    assert rollups.percentile([0] * rollups.SLOTS, 0.5) is None


@pytest.mark.django_db
def test_the_errors_page_reads_rollups_not_the_call_log(client, operator, site):
    for n in range(5):
        log_call(site, "transient" if n % 2 else "ok", at=timezone.now() - timedelta(minutes=n))
    client.force_login(operator)
    for window in ("1h", "6h", "24h", "7d"):
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(reverse("monitoring:errors"), {"window": window})
        assert response.status_code == 200
        rates = response.context["rates"]
        assert (rates["total"], rates["errors"]) == (5, 2), window
        assert not [q["sql"] for q in ctx.captured_queries if "monitoring_calllog" in q["sql"]], window


@pytest.mark.django_db
def test_window_totals_read_wide_buckets_and_count_every_call_exactly_once(site):
    from monitoring import metrics

    now = timezone.now()
    rng = random.Random(11)
    times = [now - timedelta(seconds=rng.uniform(0, 3 * 86400)) for _ in range(400)]
    for at in times:
        log_call(site, "ok" if rng.random() < 0.8 else "transient", at=at, function=rng.choice("ab"))
    for window in metrics.WINDOWS.values():
        since = window.since(now)
        expected = sum(1 for at in times if at >= rollups.floor(since, window.rollup_s))
        rates = metrics.category_rates(since, span_s=window.rollup_s)
        assert rates["total"] == expected, window.name
        assert sum(r["calls"] for r in metrics.by_function(since, span_s=window.rollup_s)) == expected
    rows = metrics._totals(now - timedelta(hours=24), 900)
    assert {r.span_s for r in rows} >= {7200, 900}  # the day's middle from 2-hour buckets
