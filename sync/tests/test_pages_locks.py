"""The locks and stuck runs page: a held lock with its owner, the same lock stale once its heartbeat
stops, breaking it (audited, run failed), stuck runs, and who may see it."""

import time
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from monitoring.models import AuditEntry
from sync.choices import RunKind, RunStatus
from sync.models import SyncRun
from sync.run import locks


def running_run(site, **fields) -> SyncRun:
    fields.setdefault("started_at", timezone.now())
    return SyncRun.objects.create(site=site, kind=RunKind.INCREMENTAL, status=RunStatus.RUNNING, **fields)


def take_lock(clean_redis, site, run, *, heartbeat_age_s: float = 0.0) -> locks.RunLock:
    lock = locks.RunLock(clean_redis, site.slug, run.pk, ttl_s=60)
    assert lock.acquire()
    lock._stop.set()  # no heartbeat thread renewing behind the test's back
    if heartbeat_age_s:
        clean_redis.hset(locks.META.format(site=site.slug), "heartbeat", time.time() - heartbeat_age_s)
    return lock


@pytest.fixture
def admin_client(client, hub_admin):
    client.force_login(hub_admin)
    return client


def test_empty_state(admin_client, site, clean_redis):
    page = admin_client.get(reverse("sync:locks")).content.decode()
    assert "No run holds a lock: nothing is running." in page
    assert "No run has been running without progress" in page


def test_a_live_lock_shows_its_owner_and_cannot_be_broken(admin_client, site, clean_redis):
    run = running_run(site)
    lock = take_lock(clean_redis, site, run)
    page = admin_client.get(reverse("sync:locks")).content.decode()
    assert f'href="{reverse("sync:run_detail", args=[run.pk])}"' in page and "alive" in page
    assert "Break lock" not in page
    response = admin_client.post(reverse("sync:lock_break", args=[site.slug, run.pk]), follow=True)
    assert "still heart-beating" in response.content.decode()
    assert lock.owned()
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and not AuditEntry.objects.exists()


def test_a_stale_lock_is_broken_with_an_audit_entry_and_its_run_failed(
    admin_client, site, clean_redis, hub_admin
):
    run = running_run(site, last_progress_at=timezone.now() - timedelta(hours=1))
    lock = take_lock(clean_redis, site, run, heartbeat_age_s=120)  # three beats of 15 s missed
    page = admin_client.get(reverse("sync:locks")).content.decode()
    assert "stale" in page and "Break lock" in page
    assert page.count(f"#{run.pk}") >= 2  # in the held locks and among the stuck runs

    confirm = admin_client.get(reverse("sync:lock_break", args=[site.slug, run.pk])).content.decode()
    assert "marked <strong>failed</strong>" in confirm and "lock broken by admin" in confirm
    response = admin_client.post(reverse("sync:lock_break", args=[site.slug, run.pk]), follow=True)
    assert "broken and run" in response.content.decode()
    assert "No run holds a lock" in response.content.decode()
    assert locks.lock_info(clean_redis, site.slug) is None and not lock.owned()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.abort_reason == "lock broken by admin: its worker stopped heart-beating"
    entry = AuditEntry.objects.get(action="lock.break")
    assert entry.actor == hub_admin and entry.target == f"site north run #{run.pk}"


def test_a_stuck_run_without_a_lock_is_listed(admin_client, site, clean_redis, settings):
    settings.ALERT_STUCK_RUN_S = 600
    stuck = running_run(site, started_at=timezone.now() - timedelta(minutes=30))
    moving = running_run(
        site, started_at=timezone.now() - timedelta(minutes=30), last_progress_at=timezone.now()
    )
    page = admin_client.get(reverse("sync:locks")).content.decode()
    assert f"#{stuck.pk}</a>" in page and f"#{moving.pk}</a>" not in page
    assert "not held" in page


def test_operators_may_not_see_or_break_locks(client, operator, site, clean_redis):
    run = running_run(site)
    take_lock(clean_redis, site, run, heartbeat_age_s=120)
    client.force_login(operator)
    assert client.get(reverse("sync:locks")).status_code == 403
    assert client.post(reverse("sync:lock_break", args=[site.slug, run.pk])).status_code == 403
    assert locks.lock_info(clean_redis, site.slug) is not None
