"""Core models: tokens encrypted at rest with key rotation, one active token per site, run claiming."""

import io

import pytest
from cryptography.fernet import Fernet
from django.db import IntegrityError, connection
from django.test import override_settings

from sync import crypto
from sync.choices import RunKind, RunStatus, TokenStatus
from sync.models import ServiceToken, SyncRecord, SyncRun

PLAINTEXT = "0123456789abcdef0123456789abcdef"


def _stored_column(token: ServiceToken) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT token_encrypted FROM sync_servicetoken WHERE id = %s", [token.pk])
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_token_is_encrypted_at_rest_and_shown_only_by_its_last_four(site):
    token = ServiceToken(site=site, label="main", status=TokenStatus.ACTIVE)
    token.set_token(PLAINTEXT)
    token.save()
    stored = _stored_column(token)
    assert PLAINTEXT not in stored
    assert ServiceToken.objects.get(pk=token.pk).reveal() == PLAINTEXT
    assert token.masked == "…cdef"
    assert PLAINTEXT not in str(token) and PLAINTEXT not in repr(token)


@pytest.mark.django_db
def test_key_rotation_keeps_tokens_readable(site, settings):
    old_key, new_key = settings.TOKEN_ENCRYPTION_KEYS[0], Fernet.generate_key().decode()
    token = ServiceToken(site=site, label="main")
    token.set_token(PLAINTEXT)
    token.save()
    with override_settings(TOKEN_ENCRYPTION_KEYS=[new_key, old_key]):
        assert token.reveal() == PLAINTEXT
        token.token_encrypted = crypto.reencrypt(token.token_encrypted)
        token.save()
    with override_settings(TOKEN_ENCRYPTION_KEYS=[new_key]):
        assert ServiceToken.objects.get(pk=token.pk).reveal() == PLAINTEXT
    with (
        override_settings(TOKEN_ENCRYPTION_KEYS=[Fernet.generate_key().decode()]),
        pytest.raises(crypto.TokenDecryptionError),
    ):
        token.reveal()


@pytest.mark.django_db
def test_a_site_has_at_most_one_active_token(site):
    for label in ("first", "second"):
        token = ServiceToken(site=site, label=label, status=TokenStatus.STANDBY)
        token.set_token(PLAINTEXT + label)
        token.save()
    ServiceToken.objects.filter(label="first").update(status=TokenStatus.ACTIVE)
    with pytest.raises(IntegrityError):
        ServiceToken.objects.filter(label="second").update(status=TokenStatus.ACTIVE)


@pytest.mark.django_db
def test_a_record_is_unique_per_site_and_external_id(site):
    SyncRecord.objects.create(site=site, external_id="E1")
    with pytest.raises(IntegrityError):
        SyncRecord.objects.create(site=site, external_id="E1")


@pytest.mark.django_db
def test_a_run_is_claimed_once_and_finishes_with_a_terminal_status(site):
    run = SyncRun.objects.create(site=site, kind=RunKind.INCREMENTAL)
    assert run.start() is True
    assert SyncRun.objects.get(pk=run.pk).start() is False  # a redelivered task finds nothing to do
    run.finish(RunStatus.SUCCEEDED)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.finished_at >= run.started_at
    with pytest.raises(ValueError):
        run.finish(RunStatus.RUNNING)


@pytest.mark.django_db
def test_rotate_token_keys_command_reencrypts_with_the_first_key(site, settings):
    from django.core.management import call_command

    old_key, new_key = settings.TOKEN_ENCRYPTION_KEYS[0], Fernet.generate_key().decode()
    token = ServiceToken(site=site, label="main")
    token.set_token(PLAINTEXT)
    token.save()
    with override_settings(TOKEN_ENCRYPTION_KEYS=[new_key, old_key]):
        call_command("rotate_token_keys", stdout=io.StringIO())
    with override_settings(TOKEN_ENCRYPTION_KEYS=[new_key]):
        assert ServiceToken.objects.get(pk=token.pk).reveal() == PLAINTEXT
