"""Each alert rule fires once and only once for its condition, and resolves with one recovery notice.

The rules run as the beat task runs them (all of them, on a healthy hub), against rows made to look like
the problem; the email channel (locmem backend) shows what an operator would have received.
"""

import json
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from monitoring import alerts, rules
from monitoring.models import Alert, AlertChannel, BreakerEvent, CallLog, Delivery, Heartbeat, RuleState
from sync.choices import RunKind, RunStatus, RunTrigger, TokenStatus
from sync.models import ServiceToken, SyncRun
from sync.run.locks import KEY, META

pytestmark = pytest.mark.django_db


@pytest.fixture
def hub_ok(clean_redis):
    """A healthy hub: the scheduler heartbeat is fresh and one worker is alive, so only the condition a
    test makes is a problem."""
    Heartbeat.record(Heartbeat.SCHEDULER)
    clean_redis.set("hub:worker:test@host", int(time.time()), ex=300)
    return clean_redis


@pytest.fixture
def email_channel(db):
    return AlertChannel.objects.create(name="ops", kind="email", target="ops@example.edu")


def cycle(times: int = 1) -> None:
    """What the evaluate_alerts task does each minute."""
    for _ in range(times):
        assert rules.evaluate().failed_rules == (), "every rule could look"
        alerts.notify_pending()


def call(site, outcome="ok", function="core_user_get_users", errorcode="", ago_s=0, **extra):
    return CallLog.objects.create(
        site=site, function=function, outcome=outcome, errorcode=errorcode, duration_ms=12,
        started_at=timezone.now() - timedelta(seconds=ago_s), **extra,
    )  # fmt: skip


def running(site, started_ago, progress_ago=None):
    now = timezone.now()
    return SyncRun.objects.create(
        site=site, kind=RunKind.INCREMENTAL, status=RunStatus.RUNNING, started_at=now - started_ago,
        last_progress_at=now - (progress_ago if progress_ago is not None else timedelta(0)),
    )  # fmt: skip


# Each case makes a condition on a site and returns (expected key, a function that clears it).


def active_token(site) -> ServiceToken:
    token = site.active_token()
    if token is None:
        token = ServiceToken(site=site, label="main", status=TokenStatus.ACTIVE)
        token.set_token("active-token-0123456789")
        token.save()
    return token


def auth_refused(site, redis):
    token = active_token(site)
    call(site, "auth", "core_user_create_users", errorcode="invalidtoken", http_status=200, token=token)
    return f"auth:{site.slug}", lambda: call(site, "ok", "core_user_create_users", token=token)


def over_budget(site, redis):
    run = running(site, timedelta(hours=2))  # the site's budget is one hour; it still progresses
    return f"run_budget:{run.pk}", lambda: run.finish(RunStatus.SUCCEEDED)


def stuck(site, redis):
    run = running(site, timedelta(minutes=30), progress_ago=timedelta(minutes=20))
    return f"stuck_run:{run.pk}", lambda: run.finish(RunStatus.FAILED, "worker lost")


def transient_errors(site, redis):
    CallLog.objects.bulk_create(
        [CallLog(site=site, function="core_user_get_users", outcome="transient" if n % 4 == 0 else "ok",
                 duration_ms=10, started_at=timezone.now()) for n in range(24)]
    )  # fmt: skip
    return f"transient_rate:{site.slug}", lambda: CallLog.objects.filter(outcome="transient").delete()


def expiring_token(site, redis):
    token = ServiceToken(site=site, label="main", status=TokenStatus.ACTIVE)
    token.set_token("expiring-token-abcdef0123")
    token.valid_until = timezone.now() + timedelta(days=20, hours=1)
    token.save()

    def renew():
        token.valid_until = timezone.now() + timedelta(days=365)
        token.save()

    return f"token_expiry:{token.pk}:30", renew


def breaker(site, redis):
    BreakerEvent.objects.create(
        site=site, old_state="closed", new_state="open", reason="error rate 80%",
        at=timezone.now() - timedelta(minutes=20),
    )  # fmt: skip
    return f"breaker_open:{site.slug}", lambda: BreakerEvent.objects.create(
        site=site, old_state="half_open", new_state="closed", reason="probe ok"
    )


def stale_lock(site, redis):
    old = time.time() - 120
    redis.set(KEY.format(site=site.slug), "41", px=60_000)
    redis.hset(
        META.format(site=site.slug),
        mapping={"run_id": 41, "host": "gone", "pid": 7, "acquired": old, "heartbeat": old, "ttl": 60},
    )
    return f"stale_lock:{site.slug}", lambda: redis.delete(
        KEY.format(site=site.slug), META.format(site=site.slug)
    )


def missed_schedule(site, redis):
    task = PeriodicTask.objects.get(name=f"Incremental sync: {site.slug}")
    task.last_run_at = timezone.now() - timedelta(hours=1)
    task.save()

    def ran():
        PeriodicTask.objects.filter(pk=task.pk).update(last_run_at=timezone.now())
        SyncRun.objects.create(
            site=site, kind=RunKind.INCREMENTAL, trigger=RunTrigger.SCHEDULE, status=RunStatus.SUCCEEDED,
            started_at=timezone.now(),
        )  # fmt: skip

    return f"schedule_missed:{task.pk}", ran


def scheduler_quiet(site, redis):
    Heartbeat.objects.filter(name=Heartbeat.SCHEDULER).update(
        last_finished_at=timezone.now() - timedelta(minutes=10)
    )
    return "scheduler_silent", lambda: Heartbeat.record(Heartbeat.SCHEDULER)


def no_worker(site, redis):
    redis.delete("hub:worker:test@host")
    return "worker_silent", lambda: redis.set("hub:worker:test@host", int(time.time()), ex=300)


CASES = [
    auth_refused, over_budget, stuck, transient_errors, expiring_token, breaker, stale_lock, missed_schedule,
    scheduler_quiet, no_worker,
]  # fmt: skip
IMMEDIATE = {auth_refused, expiring_token}


@pytest.mark.parametrize("make", CASES, ids=[c.__name__ for c in CASES])
def test_rule_fires_once_and_recovers_once(make, site, hub_ok, email_channel, settings):
    settings.ALERT_CONSECUTIVE = 2
    key, clear = make(site, hub_ok)

    cycle()
    if make not in IMMEDIATE:
        assert not Alert.objects.exists(), "one sighting is a blip: no alert yet"
        assert RuleState.objects.get(key=key).failures == 1
        cycle()
    cycle(3)

    alert = Alert.objects.get()
    assert alert.key == key and alert.status == Alert.Status.OPEN
    assert alert.count == 4
    assert alert.detail, "every alert says what to do"
    assert list(Delivery.objects.values_list("event", "ok")) == [("firing", True)]
    assert len(mail.outbox) == 1 and alert.title in mail.outbox[0].subject

    clear()
    cycle(3)
    alert.refresh_from_db()
    assert alert.status == Alert.Status.RESOLVED and Alert.objects.count() == 1
    assert sorted(Delivery.objects.values_list("event", flat=True)) == ["firing", "recovery"]
    assert len(mail.outbox) == 2 and "RECOVERED" in mail.outbox[1].subject
    assert not RuleState.objects.filter(key=key).exists()


def test_one_blip_never_alerts(site, hub_ok, email_channel, settings):
    settings.ALERT_CONSECUTIVE = 3
    run = running(site, timedelta(hours=2))
    cycle(2)
    run.finish(RunStatus.SUCCEEDED)
    cycle(2)
    running(site, timedelta(hours=2))
    cycle(2)
    assert not Alert.objects.exists() and not mail.outbox


def test_single_transient_error_fixed_by_a_retry_and_conflicts_do_not_alert(site, hub_ok, email_channel):
    for _ in range(30):
        call(site, "ok", "core_user_create_users")
    call(site, "transient", "core_user_create_users", http_status=503)
    call(site, "ok", "core_user_create_users", attempt=2)
    for code in ("usernametaken", "emailalreadyexists"):
        for _ in range(10):
            call(site, "conflict", "core_user_create_users", errorcode=code)
    cycle(4)
    assert not Alert.objects.exists() and not mail.outbox


def test_auth_alert_is_the_engines_alert_and_offers_a_verified_standby(site, hub_ok, email_channel):
    active = ServiceToken(site=site, label="old", status=TokenStatus.ACTIVE)
    active.set_token("active-token-1111aaaa")
    active.save()
    standby = ServiceToken(
        site=site, label="new", status=TokenStatus.STANDBY, last_verified_at=timezone.now()
    )
    standby.set_token("standby-token-2222bbbb")
    standby.save()
    # The engine raised it first, from a run.
    alerts.raise_alert(f"auth:{site.slug}", kind="auth_failure", site=site, title="North: token refused")
    call(site, "auth", "core_webservice_get_site_info", errorcode="invalidtoken", token=active_token(site))
    cycle(2)
    alert = Alert.objects.get()
    assert alert.key == "auth:north" and alert.title == "North: token refused" and alert.count == 3
    assert standby.masked in alert.detail and "/sites/north/tokens/" in alert.detail
    assert "never switches" in alert.detail
    assert ServiceToken.objects.get(pk=active.pk).status == TokenStatus.ACTIVE, "the hub never promotes"
    assert "2222bbbb" not in alert.detail.replace(standby.masked, "") and "standby-token" not in alert.detail
    assert len(mail.outbox) == 1


def test_token_expiry_warns_again_at_each_threshold(site, hub_ok, email_channel):
    token = ServiceToken(site=site, label="main", status=TokenStatus.ACTIVE)
    token.set_token("expiring-token-abcdef0123")
    token.valid_until = timezone.now() + timedelta(days=20, hours=1)
    token.save()
    cycle(2)
    first = Alert.objects.get(status="open")
    assert first.key.endswith(":30") and first.severity == "warning"

    token.valid_until = timezone.now() + timedelta(days=6, hours=1)
    token.save()
    cycle(2)
    now_open = Alert.objects.get(status="open")
    assert now_open.key.endswith(":7") and now_open.severity == "critical"
    first.refresh_from_db()
    assert first.status == "resolved"
    # Superseded, not recovered: no "RECOVERED" notice for a token that only got closer to expiry.
    assert [m.subject.split("]")[0] for m in mail.outbox] == ["[ALERT", "[ALERT"]


def test_scheduled_run_that_started_late_warns(site, hub_ok, email_channel, settings):
    settings.ALERT_START_DRIFT_S = 600
    task = PeriodicTask.objects.get(name=f"Incremental sync: {site.slug}")
    sent = timezone.now() - timedelta(minutes=14)
    PeriodicTask.objects.filter(pk=task.pk).update(last_run_at=sent)
    SyncRun.objects.create(
        site=site,
        kind=RunKind.INCREMENTAL,
        trigger=RunTrigger.SCHEDULE,
        status=RunStatus.QUEUED,
    )
    cycle(2)
    alert = Alert.objects.get()
    assert alert.key == f"schedule_late:{task.pk}" and "has not started" in alert.detail


def test_a_rule_that_cannot_look_leaves_its_alerts_alone(site, hub_ok, email_channel):
    def broken(now):
        raise ConnectionError("redis down")

    alerts.raise_alert("stale_lock:north", kind="stale_lock", site=site, title="lock")
    result = rules.evaluate(rules=[rules.Rule("stale_lock:", "stale_lock", broken)])
    assert result.failed_rules == ("stale_lock",)
    assert Alert.objects.get().status == Alert.Status.OPEN


def test_task_summary(site, hub_ok, email_channel):
    from monitoring.tasks import evaluate_alerts

    assert "problem" in evaluate_alerts() and "(s)" not in evaluate_alerts()
    assert (
        json.loads(PeriodicTask.objects.get(name=f"Incremental sync: {site.slug}").kwargs)["site_slug"]
        == "north"
    )


def test_a_nightly_schedule_that_did_not_run_is_found_from_its_crontab(site, hub_ok, email_channel):
    task = PeriodicTask.objects.get(name=f"Nightly reconciliation: {site.slug}")
    PeriodicTask.objects.filter(pk=task.pk).update(last_run_at=timezone.now() - timedelta(days=2))
    cycle(2)
    alert = Alert.objects.get()
    assert alert.key == f"schedule_missed:{task.pk}" and "did not run" in alert.title
    assert "celery beat" in alert.detail


def test_an_auth_alert_resolved_elsewhere_is_not_reopened_for_the_same_refusal(site, hub_ok, email_channel):
    # A run hit accessexception on one function; the probe's own call still works and resolves the alert.
    token = active_token(site)
    call(site, "auth", "core_user_update_users", errorcode="accessexception", token=token)
    cycle()
    alerts.resolve_alert("auth:north")
    cycle(3)
    assert Alert.objects.get().status == Alert.Status.RESOLVED
    call(site, "auth", "core_user_update_users", errorcode="accessexception", token=token)  # a new refusal
    cycle()
    assert Alert.objects.filter(status="open").count() == 1


def test_a_candidate_token_refused_while_being_verified_raises_no_alert(site, hub_ok, settings):
    active_token(site)
    candidate = ServiceToken(site=site, label="new", status=TokenStatus.STANDBY)
    candidate.set_token("mistyped-token-0123456789")
    candidate.save()
    call(site, "auth", "core_webservice_get_site_info", errorcode="invalidtoken", token=candidate)
    call(site, "auth", "core_webservice_get_site_info", errorcode="invalidtoken")  # never stored at all
    cycle(3)
    assert not Alert.objects.filter(key=f"auth:{site.slug}").exists()
