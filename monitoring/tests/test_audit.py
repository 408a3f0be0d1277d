"""Every Moodle call is kept as a CallLog row, and no row and no log line carries the token."""

import json
import logging
from datetime import timedelta

import httpx
import pytest
import redis as redis_lib
from django.utils import timezone

from integration_hub.testing import HUB_TOKEN
from monitoring.audit import CallLogWriter
from monitoring.models import CallLog
from sync.choices import RunKind
from sync.models import ServiceToken, SyncRun
from sync.moodle.audit import SENDING, CallRecord
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


class ProcessDied(BaseException):
    """What a kill looks like from inside: nothing after it runs (no except Exception catches it)."""


def test_a_call_moodle_received_is_logged_even_if_the_process_dies_before_the_answer(sync_site, moodle):
    seen_at_moodle: list[str] = []

    def die_after_moodle_did_it(request):
        seen_at_moodle.append(CallLog.objects.get().outcome)  # the row exists before the request arrives
        moodle.transport.handle_request(request)  # Moodle does the call...
        raise ProcessDied  # ...and the hub's process dies before the answer is read

    transport = httpx.MockTransport(die_after_moodle_did_it)
    with client_for(sync_site, transport=transport) as client, pytest.raises(ProcessDied):
        client.create_users([{"username": "a", "email": "a@x.org", "firstname": "A", "lastname": "A",
                                  "createpassword": 1}])  # fmt: skip
    assert seen_at_moodle == [SENDING]
    row = CallLog.objects.get()
    assert (row.function, row.outcome, row.items) == ("core_user_create_users", SENDING, 1)
    assert moodle.stats()["calls"]["core_user_create_users"] == CallLog.objects.count() == 1


def test_the_call_is_completed_in_the_log_even_when_redis_fails_right_after_it(
    sync_site, moodle, monkeypatch
):
    from sync.moodle.breaker import Breaker

    def redis_gone(*args, **kwargs):
        raise redis_lib.ConnectionError("Connection refused")

    with client_for(sync_site, transport=moodle.transport) as client:
        monkeypatch.setattr(Breaker, "record", redis_gone)
        assert client.get_users_by_field("username", ["nobody"]) == []  # the answer is still used
    row = CallLog.objects.get()
    assert (row.outcome, row.http_status) == ("ok", 200)


def test_a_call_the_throttle_never_sent_leaves_no_row(sync_site, moodle):
    from sync.moodle import errors

    with client_for(sync_site, transport=moodle.transport) as client:
        client.throttle.slot = _no_slot
        with pytest.raises(errors.ThrottleTimeout):
            client.get_users_by_field("username", ["nobody"])
    assert not CallLog.objects.exists()


def _no_slot(idle=None):
    from sync.moodle import errors

    raise errors.ThrottleTimeout("no slot within 0 s")


def test_a_call_whose_row_cannot_be_written_is_not_sent(sync_site, moodle, monkeypatch):
    from django.db import OperationalError

    def database_down(self, record):
        raise OperationalError("the connection is closed")

    monkeypatch.setattr(CallLogWriter, "sending", database_down)
    with client_for(sync_site, transport=moodle.transport) as client, pytest.raises(OperationalError):
        client.get_users_by_field("username", ["nobody"])
    assert moodle.stats()["total_calls"] == 0  # Moodle never saw a call the log would miss
