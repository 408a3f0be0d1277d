"""Answers lost on the way back: a create Moodle did (or may have done) is looked up, never sent again
blind, and nobody is ever in conflict with their own account."""

from __future__ import annotations

import httpx
import pytest

from integration_hub.testing import HUB_TOKEN
from monitoring.models import CallLog
from sync.choices import RunKind, RunStatus, SyncStatus
from sync.models import Conflict, DeadLetter, SyncRecord, SyncRun, SyncSource
from sync.moodle import errors
from sync.moodle.client import MoodleClient, RetryPolicy
from sync.run import engine

pytestmark = pytest.mark.django_db

CREATE = "core_user_create_users"
LOOKUP = "core_user_get_users_by_field"


def no_sleep(_seconds: float) -> None:
    """Retries happen at once here."""


def bootstrap(site, moodle) -> SyncRun:
    run = SyncRun.objects.queue(site, RunKind.BOOTSTRAP)
    return engine.execute(run.pk, transport=moodle.transport, sleep=no_sleep)


def clean_bootstrap_calls(site, moodle_factory) -> dict[str, int]:
    """The calls a bootstrap of the same people makes when nothing goes wrong."""
    clean = moodle_factory()
    SyncRecord.objects.filter(site=site).delete()
    run = bootstrap(site, clean)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    calls = clean.stats()["calls"]
    SyncRecord.objects.filter(site=site).delete()
    return calls


def assert_everyone_once_and_ok(site, moodle, people: int = 30) -> None:
    assert len(moodle.people()) == people  # fails if an idnumber exists twice
    assert not Conflict.objects.filter(site=site).exists()
    assert set(SyncRecord.objects.filter(site=site).values_list("sync_status", flat=True)) == {SyncStatus.OK}
    for record in SyncRecord.objects.filter(site=site):
        assert moodle.people()[record.external_id]["id"] == record.moodle_id


def test_a_create_done_but_answered_504_is_looked_up_and_linked_not_sent_again(sync_site, moodle):
    from integration_hub.testing import simulated_moodle

    clean = clean_bootstrap_calls(sync_site, lambda: simulated_moodle(seed=7))
    moodle.control("POST", "inject", {"kinds": ["lost"], "function": CREATE})

    run = bootstrap(sync_site, moodle)

    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    assert_everyone_once_and_ok(sync_site, moodle)
    calls = moodle.stats()["calls"]
    assert calls[CREATE] == clean[CREATE]  # the lost call is not repeated: its people were there
    assert calls[LOOKUP] == clean[LOOKUP] + 1  # the one look-up of the lost batch
    assert "core_user_get_users" not in calls  # no lone refusal, no e-mail check
    assert run.created == 30 and not DeadLetter.objects.exists()
    lost = CallLog.objects.get(run=run, function=CREATE, http_status=504)
    assert lost.outcome == "transient" and "Moodle may have done it" in lost.message


def test_a_create_refused_by_the_proxy_before_moodle_is_sent_once_more(sync_site, moodle):
    from integration_hub.testing import simulated_moodle

    clean = clean_bootstrap_calls(sync_site, lambda: simulated_moodle(seed=7))
    moodle.control("POST", "inject", {"kinds": ["504"], "function": CREATE})  # Moodle never saw it

    run = bootstrap(sync_site, moodle)

    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    assert_everyone_once_and_ok(sync_site, moodle)
    calls = moodle.stats()["calls"]
    assert calls[CREATE] == clean[CREATE] + 1  # the failed call, then its people sent again once
    assert calls[LOOKUP] == clean[LOOKUP] + 1


def test_a_second_lost_answer_leaves_dead_letters_that_a_retry_links(sync_site, moodle):
    moodle.control("POST", "inject", {"kinds": ["504", "lost"], "function": CREATE})

    run = bootstrap(sync_site, moodle)

    assert run.status == RunStatus.PROBLEMS, run.abort_reason
    letters = DeadLetter.objects.filter(site=sync_site)
    assert letters.exists() and not Conflict.objects.exists()
    rerun = bootstrap(sync_site, moodle)  # the people Moodle made are found by idnumber and linked
    assert rerun.status == RunStatus.SUCCEEDED, rerun.abort_reason
    assert_everyone_once_and_ok(sync_site, moodle)


def test_a_holder_with_the_persons_own_idnumber_is_their_account_not_a_conflict(sync_site, moodle):
    source = SyncSource.objects.get(site=sync_site)
    source.mapping = {**source.mapping, "match_key": "email"}
    source.save()
    # Made earlier under this person's idnumber, with an e-mail the source no longer has.
    moodle.control(
        "POST",
        "users",
        {"username": "user00005", "email": "old@example.edu", "idnumber": "E00005", "firstname": "A",
         "lastname": "B"},
    )  # fmt: skip

    run = bootstrap(sync_site, moodle)

    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    assert_everyone_once_and_ok(sync_site, moodle)
    assert moodle.people()["E00005"]["email"] == "user00005@example.edu"


def test_the_client_never_sends_a_create_twice_after_a_lost_answer(moodle):
    sent: list[str] = []

    def lose_creates(request: httpx.Request) -> httpx.Response:
        function = dict(httpx.QueryParams(request.content.decode())).get("wsfunction", "")
        sent.append(function)
        raise httpx.ReadTimeout("read timed out", request=request)

    client = MoodleClient(
        "http://moodle.test",
        HUB_TOKEN,
        transport=httpx.MockTransport(lose_creates),
        retry=RetryPolicy(attempts=4),
        sleep=no_sleep,
    )
    with pytest.raises(errors.MoodleError) as lost:
        client.create_users([{"username": "a", "email": "a@x.org", "firstname": "A", "lastname": "A"}])
    assert lost.value.ambiguous and lost.value.category == errors.TRANSIENT
    assert sent == [CREATE]  # not retried blind
    sent.clear()
    with pytest.raises(errors.MoodleError) as lookup:
        client.get_users_by_field("id", [2])
    assert lookup.value.ambiguous and sent == [LOOKUP] * 4  # a look-up is safe to repeat


def test_a_connection_refused_is_not_ambiguous_and_a_create_is_retried(moodle):
    attempts: list[int] = []

    def refuse_then_answer(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return moodle.transport.handle_request(request)

    client = MoodleClient(
        "http://moodle.test", HUB_TOKEN, transport=httpx.MockTransport(refuse_then_answer), sleep=no_sleep
    )
    made = client.create_users([{"username": "a", "email": "a@x.org", "firstname": "A", "lastname": "A",
                                 "createpassword": 1}])  # fmt: skip
    assert len(made) == 1 and len(attempts) == 2
