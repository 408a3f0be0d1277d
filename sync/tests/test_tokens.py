"""The token lifecycle against the in-process simulator: add, verify, promote, confirm revoked, and a
rotation end to end where the old token is revoked in Moodle and runs carry on with the new one."""

import logging
from pathlib import Path

import pytest

from integration_hub.testing import HUB_TOKEN, person, write_csv
from monitoring.models import AuditEntry, CallLog
from sync import tokens
from sync.choices import RunStatus, TokenStatus
from sync.models import ServiceToken, SyncRun
from sync.run import engine

NEW_TOKEN = "rotated-token-fedcba9876543210wxyz"


@pytest.fixture
def new_token(moodle) -> str:
    moodle.control("POST", "tokens", {"token": NEW_TOKEN, "username": "wsuser"})
    return NEW_TOKEN


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert NEW_TOKEN not in text and HUB_TOKEN not in text


def test_first_token_of_a_site_becomes_active(site, moodle, hub_admin, new_token, clean_redis):
    site.base_url = "http://moodle.test"
    site.save()
    token = tokens.add_token(site, "first", new_token, user=hub_admin, transport=moodle.transport)
    assert token.status == TokenStatus.ACTIVE
    assert token.last_verified_at is not None and token.verify_error == ""
    assert token.masked == "…wxyz" and token.reveal() == NEW_TOKEN
    assert NEW_TOKEN not in token.token_encrypted
    entry = AuditEntry.objects.get(action="token.add")
    assert entry.actor == hub_admin and entry.target == "site north token …wxyz"


def test_a_token_moodle_rejects_is_not_stored(sync_site, moodle, hub_admin):
    with pytest.raises(tokens.TokenError, match="Moodle rejected the token") as caught:
        tokens.add_token(
            sync_site, "typo", "not-a-known-token-1234", user=hub_admin, transport=moodle.transport
        )
    assert "not-a-known-token-1234" not in str(caught.value)
    assert sync_site.tokens.count() == 1


def test_a_token_lacking_functions_is_stored_as_standby_with_the_reason(sync_site, moodle, hub_admin):
    moodle.control(
        "POST",
        "tokens",
        {"token": NEW_TOKEN, "username": "wsuser", "functions": ["core_webservice_get_site_info"]},
    )
    token = tokens.add_token(sync_site, "narrow", NEW_TOKEN, user=hub_admin, transport=moodle.transport)
    assert token.status == TokenStatus.STANDBY
    assert "core_user_create_users" in token.verify_error and token.last_verified_at is None
    with pytest.raises(tokens.TokenError, match="not verified"):
        tokens.promote(token, hub_admin)


def test_the_same_token_twice_is_refused(sync_site, moodle, hub_admin):
    with pytest.raises(tokens.TokenError, match="already has that token"):
        tokens.add_token(sync_site, "again", HUB_TOKEN, user=hub_admin, transport=moodle.transport)


def test_verify_records_a_failure_and_a_later_success(sync_site, moodle, hub_admin, new_token):
    token = tokens.add_token(sync_site, "next", new_token, user=hub_admin, transport=moodle.transport)
    assert token.status == TokenStatus.STANDBY
    moodle.control("DELETE", f"tokens/{new_token}")
    assert tokens.verify(token, hub_admin, transport=moodle.transport) is False
    token.refresh_from_db()
    assert token.verify_error and token.last_verified_at is not None
    moodle.control("POST", "tokens", {"token": new_token, "username": "wsuser"})
    assert tokens.verify(token, hub_admin, transport=moodle.transport) is True
    token.refresh_from_db()
    assert token.verify_error == ""


def test_the_active_token_cannot_be_marked_revoked(sync_site, hub_admin):
    with pytest.raises(tokens.TokenError, match="active token"):
        tokens.confirm_revoked(sync_site.active_token(), hub_admin)


def test_rotation_end_to_end(sync_site, moodle, hub_admin, new_token, caplog):
    caplog.set_level(logging.DEBUG)
    no_sleep = lambda s: None  # noqa: E731
    first = engine.execute(
        SyncRun.objects.queue(sync_site, "bootstrap").pk, transport=moodle.transport, sleep=no_sleep
    )
    assert first.status == RunStatus.SUCCEEDED
    old = sync_site.active_token()

    new = tokens.add_token(sync_site, "2027", new_token, user=hub_admin, transport=moodle.transport)
    assert new.status == TokenStatus.STANDBY
    assert tokens.verify(new, hub_admin, transport=moodle.transport)
    demoted = tokens.promote(new, hub_admin)
    assert demoted.pk == old.pk
    old.refresh_from_db()
    new.refresh_from_db()
    assert (new.status, old.status, old.revoke_pending) == (TokenStatus.ACTIVE, TokenStatus.STANDBY, True)

    moodle.control("DELETE", f"tokens/{HUB_TOKEN}")  # the admin revokes the old token in Moodle
    tokens.confirm_revoked(old, hub_admin)
    old.refresh_from_db()
    assert (old.status, old.revoke_pending) == (TokenStatus.REVOKED, False)

    people = [person(n) for n in range(1, 31)]
    people[0]["city"] = "Kraków"  # one change for the next run to send with the new token
    people[1]["dept"] = "Physics"
    write_csv(Path(sync_site.source.config["path"]), people)
    run = engine.execute(
        SyncRun.objects.queue(sync_site, "incremental").pk, transport=moodle.transport, sleep=no_sleep
    )
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    assert run.changed >= 1
    outcomes = set(CallLog.objects.filter(run=run).values_list("outcome", flat=True))
    assert outcomes == {"ok"}, outcomes  # preflight, look-ups and the update, all with the new token
    new.refresh_from_db()
    assert new.last_used_at is not None

    actions = list(AuditEntry.objects.order_by("at").values_list("action", flat=True))
    assert actions == ["token.add", "token.verify", "token.promote", "token.revoked"]
    assert_no_secret(
        caplog.text,
        *(f"{e.target} {e.detail}" for e in AuditEntry.objects.all()),
        *(f"{c.params} {c.message} {c.exception}" for c in CallLog.objects.all()),
        *(t.verify_error for t in ServiceToken.objects.all()),
    )
