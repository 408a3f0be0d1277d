"""History older than the retention is pruned in bounded batches; what pages and rules still need stays;
an old run's page does not claim that calls it can no longer see all succeeded."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from integration_hub.testing import log_call
from monitoring import retention
from monitoring.models import Alert, AlertChannel, BreakerEvent, CallLog, CallRollup, Delivery, ProbeResult
from monitoring.tasks import prune_history
from sync.choices import RunKind, RunStatus
from sync.models import SyncRun

pytestmark = pytest.mark.django_db


def _old(days: int):
    return timezone.now() - timedelta(days=days)


def test_old_history_goes_and_what_pages_and_rules_still_read_stays(site, settings):
    settings.HISTORY_RETENTION_DAYS = 30
    for _ in range(7):
        log_call(site, at=_old(40))
    recent = log_call(site, at=_old(2))
    for days in (50, 45, 40):
        ProbeResult.objects.create(site=site, ok=True, latency_ms=80, at=_old(days))
        BreakerEvent.objects.create(site=site, old_state="closed", new_state="open", at=_old(days))
    channel = AlertChannel.objects.create(name="ops", kind="email", target="ops@example.edu")
    resolved = Alert.objects.create(key="a", kind="auth", title="t", status=Alert.Status.RESOLVED)
    still_open = Alert.objects.create(key="b", kind="auth", title="t")
    for alert in (resolved, still_open):
        Delivery.objects.create(
            alert=alert, channel=channel, event="firing", ok=True, duration_ms=5, at=_old(60)
        )

    pruned = retention.prune(batch=3)

    assert pruned.finished and pruned.rows["calls"] == 7
    assert list(CallLog.objects.all()) == [recent]
    assert not CallRollup.objects.filter(bucket__lt=retention.cutoff()).exists()
    assert CallRollup.objects.filter(span_s=60).get().calls == 1
    # The latest probe and breaker change of the site stay however old; so do an open alert's notices.
    assert list(ProbeResult.objects.values_list("at", flat=True)) == [ProbeResult.objects.latest("at").at]
    assert BreakerEvent.objects.count() == 1 and ProbeResult.objects.count() == 1
    assert list(Delivery.objects.values_list("alert", flat=True)) == [still_open.pk]
    assert "nothing" in prune_history()


def test_a_prune_stops_at_its_budget_and_the_next_goes_on(site, settings):
    settings.HISTORY_RETENTION_DAYS = 30
    for _ in range(10):
        log_call(site, at=_old(31))
    first = retention.prune(budget_s=0, batch=4)
    assert not first.finished and first.rows["calls"] == 4 and "more left" in str(first)
    assert CallLog.objects.count() == 6
    assert retention.prune(budget_s=0, batch=100).finished
    assert CallLog.objects.count() == 0


def test_an_old_run_does_not_claim_every_call_succeeded(client, operator, site, settings):
    settings.HISTORY_RETENTION_DAYS = 30
    old = SyncRun.objects.create(
        site=site,
        kind=RunKind.INCREMENTAL,
        status=RunStatus.SUCCEEDED,
        started_at=_old(40),
        finished_at=_old(40),
    )
    new = SyncRun.objects.create(
        site=site,
        kind=RunKind.INCREMENTAL,
        status=RunStatus.SUCCEEDED,
        started_at=_old(1),
        finished_at=_old(1),
    )
    client.force_login(operator)
    old_page = client.get(reverse("sync:run_detail", args=[old.pk])).text
    assert "every Moodle call of this run succeeded" not in old_page
    assert "older than the 30 days the call log is kept" in old_page
    assert (
        "every Moodle call of this run succeeded"
        in client.get(reverse("sync:run_detail", args=[new.pk])).text
    )
