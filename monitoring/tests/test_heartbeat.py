"""Probes against the simulated Moodle: what is stored, which alerts a probe raises, and which it does not."""

import logging
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from integration_hub.testing import HUB_TOKEN
from monitoring import heartbeat
from monitoring.heartbeat import probe_site, probe_sites
from monitoring.models import Alert, CallLog, ProbeResult
from sync.models import MoodleSite
from sync.moodle.client import SYNC_FUNCTIONS

NARROW_TOKEN = "narrow-token-5555aaaa9999"
SITE_INFO = "core_webservice_get_site_info"


def _use_token(site: MoodleSite, plaintext: str) -> None:
    token = site.active_token()
    token.set_token(plaintext)
    token.save()


def _alerts(key: str):
    return Alert.objects.filter(key=key)


@pytest.mark.django_db
def test_a_probe_stores_availability_latency_release_and_functions(sync_site, moodle):
    result = probe_site(sync_site, transport=moodle.transport)
    assert result.ok and result.error_category == ""
    assert result.release and result.version
    assert set(SYNC_FUNCTIONS) <= set(result.functions)
    assert result.missing_functions == []
    assert result.latency_ms is not None and result.latency_ms >= 0
    # Through the client: audited like any call, outside any run.
    call = CallLog.objects.get(site=sync_site, function=SITE_INFO)
    assert call.run is None and call.outcome == "ok"
    assert not Alert.objects.exists()


@pytest.mark.django_db
def test_a_token_lacking_a_needed_function_raises_one_alert_naming_it_and_resolves_when_fixed(
    sync_site, moodle
):
    moodle.control(
        "POST",
        "tokens",
        {
            "token": NARROW_TOKEN,
            "username": "wsuser",
            "functions": [SITE_INFO, "core_user_get_users_by_field"],
        },
    )
    _use_token(sync_site, NARROW_TOKEN)

    first = probe_site(sync_site, transport=moodle.transport)
    probe_site(sync_site, transport=moodle.transport)
    assert first.ok and "core_user_create_users" in first.missing_functions
    alert = _alerts("missing_function:north").get()  # one row, however many probes saw it
    assert alert.kind == "config" and alert.status == Alert.Status.OPEN and alert.count == 2
    for name in ("core_user_get_users", "core_user_create_users", "core_user_update_users"):
        assert name in alert.title
    assert "external service" in alert.detail
    assert NARROW_TOKEN not in alert.title + alert.detail

    _use_token(sync_site, HUB_TOKEN)  # the admin fixed the service (here: a token with every function)
    fixed = probe_site(sync_site, transport=moodle.transport)
    assert fixed.ok and fixed.missing_functions == []
    alert.refresh_from_db()
    assert alert.status == Alert.Status.RESOLVED and alert.resolved_at is not None


@pytest.mark.django_db
def test_a_revoked_token_raises_exactly_one_auth_alert_and_a_later_good_probe_resolves_it(
    sync_site, moodle, caplog
):
    caplog.set_level(logging.DEBUG)
    moodle.control("DELETE", f"tokens/{HUB_TOKEN}")
    results = [probe_site(sync_site, transport=moodle.transport) for _ in range(3)]
    assert [r.ok for r in results] == [False, False, False]
    assert {r.error_category for r in results} == {"auth"}
    alert = _alerts("auth:north").get()
    assert alert.kind == "auth_failure" and alert.status == Alert.Status.OPEN
    assert sync_site.active_token().masked in alert.title
    assert "{" not in alert.title and "{refused}" in alert.detail  # a time only where pages fill it in
    assert Alert.objects.count() == 1

    moodle.control("POST", "tokens", {"token": HUB_TOKEN, "username": "wsuser"})
    assert probe_site(sync_site, transport=moodle.transport).ok
    alert.refresh_from_db()
    assert alert.status == Alert.Status.RESOLVED

    stored = " ".join(ProbeResult.objects.values_list("error", flat=True))
    stored += " ".join(CallLog.objects.values_list("message", flat=True))
    for text in (stored, alert.title, alert.detail, caplog.text):
        assert HUB_TOKEN not in text


@pytest.mark.django_db
def test_a_site_without_an_active_token_gets_a_clear_failed_probe(site):
    result = probe_site(site)
    assert not result.ok and result.error_category == heartbeat.NO_TOKEN
    assert "no active service token" in result.error
    assert not CallLog.objects.exists()


@pytest.mark.django_db
def test_a_transient_failure_is_recorded_as_unavailable_without_an_alert(sync_site, moodle):
    moodle.control("POST", "inject", {"kinds": ["503"], "function": SITE_INFO})
    result = probe_site(sync_site, transport=moodle.transport)
    assert not result.ok and result.error_category == "transient"
    assert CallLog.objects.filter(function=SITE_INFO).count() == 1  # one attempt: a probe is not retried
    assert not Alert.objects.exists()


@pytest.mark.django_db
def test_an_open_breaker_is_recorded_as_unavailable_and_no_call_is_sent(sync_site, moodle, clean_redis):
    now = time.time()
    clean_redis.hset(
        "hub:breaker:north:state",
        mapping={
            "state": "open",
            "opened_at": repr(now),
            "reason": "p90 latency",
            "next_probe_at": repr(now + 60),
        },
    )
    result = probe_site(sync_site, transport=moodle.transport)
    assert not result.ok and result.error_category == heartbeat.BREAKER_OPEN
    assert moodle.stats()["total_calls"] == 0
    assert not Alert.objects.exists()


@pytest.mark.django_db
def test_probe_sites_probes_enabled_sites_when_their_last_probe_is_due(sync_site, moodle, settings):
    settings.PROBE_INTERVAL_S = 300
    MoodleSite.objects.create(slug="off", name="Off", base_url="http://moodle.test", enabled=False)
    assert probe_sites(transport=moodle.transport) == 1
    assert probe_sites(transport=moodle.transport) == 0  # just probed
    later = timezone.now() + timedelta(seconds=300)
    assert probe_sites(now=later, transport=moodle.transport) == 1
    assert not ProbeResult.objects.filter(site__slug="off").exists()


def test_the_task_has_the_name_beat_sends():
    from monitoring.tasks import probe_sites as task

    assert task.name == "monitoring.probe_sites"
