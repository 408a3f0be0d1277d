"""Every Moodle call is kept as a CallLog row, and no row and no log line carries the token."""

import json
import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from integration_hub.testing import HUB_TOKEN
from monitoring.audit import CallLogWriter
from monitoring.models import CallLog
from sync.choices import RunKind
from sync.models import ServiceToken, SyncRun
from sync.moodle.audit import CallRecord
from sync.run import engine
from sync.run.connect import client_for

pytestmark = pytest.mark.django_db


def test_calls_are_audited_with_redacted_parameters(sync_site, moodle):
    with client_for(sync_site, transport=moodle.transport) as client:
        client.get_users_by_field("username", ["nobody"])
    row = CallLog.objects.get(function="core_user_get_users_by_field")
    assert row.outcome == "ok" and row.http_status == 200 and row.site == sync_site
    assert row.params == {"field": "username", "values": ["nobody"]}
    assert ServiceToken.objects.get(site=sync_site).last_used_at is not None


def test_no_token_in_any_call_log_or_log_line_even_when_everything_fails(sync_site, moodle, caplog):
    caplog.set_level(logging.DEBUG)
    moodle.control("POST", "config", {"debug": True})
    by_field = "core_user_get_users_by_field"
    moodle.control("POST", "inject", {"kinds": ["503", "lockwait"], "function": by_field})
    moodle.control("POST", "inject", {"kinds": ["fatal", "constraint"], "function": "core_user_create_users"})
    moodle.control("POST", "config", {"revoke_after": {"token": HUB_TOKEN, "calls": 12}})
    run = SyncRun.objects.queue(sync_site, RunKind.BOOTSTRAP)
    engine.execute(run.pk, transport=moodle.transport, sleep=lambda s: None)
    rows = list(CallLog.objects.values())
    outcomes = {row["outcome"] for row in rows}
    assert {"ok", "transient", "client_fault", "auth"} <= outcomes
    assert HUB_TOKEN not in json.dumps(rows, default=str)
    assert HUB_TOKEN not in caplog.text
    assert HUB_TOKEN[-4:] in run.__class__.objects.get(pk=run.pk).abort_reason  # only the last four


def test_only_a_call_that_started_after_a_refusal_proves_the_token_works_again(sync_site):
    """Side by side, a call already under way when the token was revoked can be answered after the
    refusal: its success says nothing about the token now."""
    token = sync_site.active_token()
    write = CallLogWriter(sync_site, token=token)
    refused_at = timezone.now()

    def call(outcome: str, started_at, errorcode: str = "") -> None:
        write(CallRecord(
            site=sync_site.slug, function="core_user_get_users_by_field", params={}, outcome=outcome,
            errorcode=errorcode, exception=None, http_status=200, duration_ms=50, attempt=1,
            started_at=started_at, message="", items=0,
        ))  # fmt: skip

    call("auth", refused_at, "invalidtoken")
    call("ok", refused_at - timedelta(seconds=2))  # a create sent before, answered after
    token.refresh_from_db()
    assert token.refused_at == refused_at and token.refused_code == "invalidtoken"
    call("ok", refused_at + timedelta(seconds=1))
    token.refresh_from_db()
    assert token.refused_at is None
