"""Every list and detail page of both apps makes the same number of queries with 10 rows behind it as with
1,000: lists paginate and aggregate in SQL, detail pages cap what they show, nothing asks per row."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from monitoring.models import Alert, AlertChannel, CallLog, Delivery, ProbeResult
from sync.choices import (
    ConflictKind,
    DeadLetterStatus,
    DiscrepancyKind,
    DiscrepancyStatus,
    OverrideStatus,
    ResolutionAction,
    ResolutionStatus,
    RunKind,
    RunStatus,
    SyncStatus,
    TokenStatus,
)
from sync.models import (
    Comment,
    Conflict,
    DeadLetter,
    Discrepancy,
    GuardOverride,
    MoodleSite,
    RecordEvent,
    Resolution,
    RunEvent,
    ServiceToken,
    SyncRecord,
    SyncRun,
)
from web import pages as web_pages

pytestmark = pytest.mark.django_db


class Seeder:
    """Adds rows of every kind up to `n`, around fixed subjects whose detail pages are measured."""

    def __init__(self, site: MoodleSite, admin) -> None:
        self.site = site
        self.admin = admin
        self.count = 0
        now = timezone.now()
        token = ServiceToken(
            site=site, label="main", status=TokenStatus.ACTIVE, valid_until=now + timedelta(50)
        )
        token.set_token("query-count-token-0000")
        token.save()
        self.run = SyncRun.objects.create(site=site, kind=RunKind.BOOTSTRAP, status=RunStatus.PROBLEMS)
        self.record = SyncRecord.objects.create(
            site=site, external_id="SUBJECT", sync_status=SyncStatus.CONFLICT
        )
        self.conflict = Conflict.objects.create(
            site=site, record=self.record, run=self.run, kind=ConflictKind.EMAIL_TAKEN, message="taken",
            their_users=[{"id": 5, "username": "x"}],
        )  # fmt: skip
        self.discrepancy = Discrepancy.objects.create(
            site=site, run=self.run, record=self.record, kind=DiscrepancyKind.ORPHAN_IN_MOODLE,
            status=DiscrepancyStatus.BLOCKED, summary="orphan", proposed_action=ResolutionAction.SUSPEND,
            moodle_user_id=5,
        )  # fmt: skip
        self.override = GuardOverride.objects.create(
            site=site, action=ResolutionAction.SUSPEND, count=1000, linked_users=2000, limit=40, reason="HR",
            status=OverrideStatus.PENDING, requested_by=admin,
        )  # fmt: skip
        self.channel = AlertChannel.objects.create(
            name="ops", kind="webhook", target="https://hook.example.org/x"
        )
        self.letter_record = self.record

    def up_to(self, n: int) -> None:
        start, self.count = self.count, n
        new = range(start, n)
        now = timezone.now()
        site, run = self.site, self.run
        runs = SyncRun.objects.bulk_create(
            SyncRun(site=site, kind=RunKind.INCREMENTAL, status=RunStatus.SUCCEEDED, finished_at=now)
            for _ in new
        )
        records = SyncRecord.objects.bulk_create(
            SyncRecord(
                site=site, external_id=f"E{i:06d}", username=f"user{i}", sync_status=SyncStatus.ERROR,
                error_message="bad", last_run=runs[k],
            )
            for k, i in enumerate(new)
        )  # fmt: skip
        RunEvent.objects.bulk_create(RunEvent(run=run, message=f"event {i}") for i in new)
        RecordEvent.objects.bulk_create(
            RecordEvent(record=r, run=run, action="create", outcome="error") for r in records
        )
        RecordEvent.objects.bulk_create(
            RecordEvent(record=self.record, run=runs[k], action="update", outcome="conflict")
            for k, _ in enumerate(new)
        )
        CallLog.objects.bulk_create(
            CallLog(
                site=site, run=run, function="core_user_create_users", outcome="transient", errorcode="",
                http_status=502, duration_ms=50, started_at=now, message="HTTP 502", detail="<html>",
            )
            for _ in new
        )  # fmt: skip
        DeadLetter.objects.bulk_create(
            DeadLetter(
                site=site, record=r, run=run, function="f", category="transient", status=DeadLetterStatus.OPEN
            )
            for r in records
        )
        DeadLetter.objects.bulk_create(
            DeadLetter(site=site, record=self.record, run=run, function="f", category="transient",
                       status=DeadLetterStatus.RESOLVED)
            for _ in new
        )  # fmt: skip
        conflicts = Conflict.objects.bulk_create(
            Conflict(site=site, record=r, run=run, kind=ConflictKind.USERNAME_TAKEN, message="x")
            for r in records
        )
        discrepancies = Discrepancy.objects.bulk_create(
            Discrepancy(
                site=site, run=run, record=r, kind=DiscrepancyKind.FIELD_DRIFT, status=DiscrepancyStatus.OPEN,
                summary="drift", proposed_action=ResolutionAction.UPDATE, moodle_user_id=k,
            )
            for k, r in enumerate(records)
        )  # fmt: skip
        Resolution.objects.bulk_create(
            Resolution(
                site=site, discrepancy=d, action=ResolutionAction.UPDATE, status=ResolutionStatus.APPLIED,
                decided_by=self.admin, run=run,
            )
            for d in discrepancies
        )  # fmt: skip
        Resolution.objects.bulk_create(
            Resolution(site=site, discrepancy=self.discrepancy, action=ResolutionAction.SUSPEND,
                       status=ResolutionStatus.REJECTED, override=self.override)
            for _ in new
        )  # fmt: skip
        Resolution.objects.bulk_create(
            Resolution(site=site, conflict=self.conflict, action=ResolutionAction.IGNORE,
                       status=ResolutionStatus.REJECTED)
            for _ in new
        )  # fmt: skip
        Comment.objects.bulk_create(
            Comment(discrepancy=self.discrepancy, author=self.admin, text="x") for _ in new
        )
        Comment.objects.bulk_create(Comment(conflict=self.conflict, author=self.admin, text="x") for _ in new)
        alerts = Alert.objects.bulk_create(
            Alert(
                key=f"k{i}",
                kind="transient_rate",
                site=site,
                title=f"alert {i}",
                status=Alert.Status.RESOLVED,
            )
            for i in new
        )
        Delivery.objects.bulk_create(
            Delivery(alert=a, channel=self.channel, event="firing", ok=False, duration_ms=3) for a in alerts
        )
        ProbeResult.objects.bulk_create(ProbeResult(site=site, ok=True, latency_ms=30) for _ in new)
        for i in new:
            token = ServiceToken(site=site, label=f"spare {i}", status=TokenStatus.STANDBY,
                                 valid_until=now + timedelta(days=i % 300))  # fmt: skip
            token.token_encrypted, token.last4 = "x", f"{i:04d}"[-4:]
            ServiceToken.objects.bulk_create([token])
        assert len(conflicts) == len(records)


def pages(s: Seeder) -> dict[str, str]:
    site, run, record = s.site, s.run, s.record
    return {
        "overview": reverse("monitoring:overview"),
        "errors": reverse("monitoring:errors") + "?window=24h",
        "calls": reverse("monitoring:error_calls"),
        "alerts": reverse("monitoring:alert_list") + "?status=resolved",
        "channels": reverse("monitoring:channel_list"),
        "sites": reverse("sync:site_list"),
        "site": reverse("sync:site_detail", args=[site.slug]),
        "tokens": reverse("sync:site_tokens", args=[site.slug]),
        "token timeline": reverse("sync:token_timeline"),
        "locks": reverse("sync:locks"),
        "runs": reverse("sync:run_list"),
        "run": reverse("sync:run_detail", args=[run.pk]),
        "run progress": reverse("sync:run_progress", args=[run.pk]),
        "records": reverse("sync:record_list") + "?status=error",
        "record": reverse("sync:record_detail", args=[record.pk]),
        "dead letters": reverse("sync:deadletter_list"),
        "retry filtered": reverse("sync:deadletter_retry_filtered"),
        "discrepancies": reverse("sync:discrepancy_list"),
        "discrepancy": reverse("sync:discrepancy_detail", args=[s.discrepancy.pk]),
        "conflicts": reverse("sync:conflict_list"),
        "conflict": reverse("sync:conflict_detail", args=[s.conflict.pk]),
        "resolutions": reverse("sync:resolution_list"),
        "override": reverse("sync:override_detail", args=[s.override.pk]),
    }


def query_counts(client, urls: dict[str, str]) -> dict[str, int]:
    counts = {}
    for name, url in urls.items():
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url)
        assert response.status_code == 200, f"{name}: HTTP {response.status_code}"
        counts[name] = len(captured.captured_queries)
    return counts


def test_no_page_asks_the_database_once_per_row(client, hub_admin, site, clean_redis):
    seeder = Seeder(site, hub_admin)
    client.force_login(hub_admin)
    seeder.up_to(10)
    urls = pages(seeder)
    few = query_counts(client, urls)
    seeder.up_to(1000)
    many = query_counts(client, urls)
    grew = {name: (few[name], many[name]) for name in urls if many[name] != few[name]}
    assert not grew, f"queries at 10 rows vs 1,000: {grew}"


def test_a_long_list_counts_only_up_to_the_cap_and_says_so(client, operator, site, monkeypatch):
    """An exact count of a million rows costs more than the page: past the cap the page says "more than"
    and its count query stops at the cap."""
    monkeypatch.setattr(web_pages, "COUNT_CAP", 5)
    SyncRecord.objects.bulk_create(SyncRecord(site=site, external_id=f"E{n}") for n in range(8))
    client.force_login(operator)
    with CaptureQueriesContext(connection) as ctx:
        text = client.get(reverse("sync:record_list")).text
    assert "More than 5 records · page 1" in text and " of 2" not in text
    counts = [
        q["sql"] for q in ctx.captured_queries if "COUNT(" in q["sql"] and "sync_syncrecord" in q["sql"]
    ]
    assert counts and all("LIMIT 6" in sql for sql in counts)
    SyncRecord.objects.filter(external_id__in=["E0", "E1", "E2"]).delete()
    assert "5 records" in client.get(reverse("sync:record_list")).text
