"""The sync engine against the simulated Moodle: correctness of bootstrap and incremental runs, conflicts,
bad-record isolation, auth aborts, breaker pauses and run locks."""

from __future__ import annotations

import pytest

from integration_hub.testing import HUB_TOKEN, person, write_csv
from monitoring.models import Alert, CallLog
from sync.choices import (
    ConflictKind,
    DiscrepancyKind,
    DiscrepancyStatus,
    ResolutionAction,
    RunKind,
    RunStatus,
    SyncStatus,
)
from sync.models import Conflict, DeadLetter, Discrepancy, RecordEvent, SyncRecord, SyncRun
from sync.run import engine
from sync.run.locks import RunLock

pytestmark = pytest.mark.django_db


def no_sleep(_seconds: float) -> None:
    """Retries and waits happen at once in these tests; the throttle has its own tests."""


def run_sync(site, moodle, kind=RunKind.INCREMENTAL, **options) -> SyncRun:
    run = SyncRun.objects.queue(site, kind, **options)
    return engine.execute(run.pk, transport=moodle.transport, sleep=no_sleep)


def statuses(site) -> dict[str, int]:
    from django.db.models import Count

    return dict(SyncRecord.objects.filter(site=site).values_list("sync_status").annotate(n=Count("pk")))


def test_bootstrap_creates_everyone_once_with_idnumber_and_fields(sync_site, moodle):
    run = run_sync(sync_site, moodle, RunKind.BOOTSTRAP)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    people = moodle.people()
    assert len(people) == 30
    alice = people["E00001"]
    assert alice["username"] == "user00001" and alice["email"] == "user00001@example.edu"
    assert alice["department"] == "History" and alice["city"] == "Gdańsk"
    assert statuses(sync_site) == {SyncStatus.OK: 30}
    record = SyncRecord.objects.get(site=sync_site, external_id="E00001")
    assert record.moodle_id == alice["id"] and record.external_hash == record.payload_hash
    assert (run.seen, run.created, run.errors, run.progress_done, run.progress_total) == (30, 30, 0, 30, 30)
    assert run.calls == CallLog.objects.filter(run=run).count() > 0


def test_rerun_makes_no_write_call(sync_site, moodle):
    run_sync(sync_site, moodle, RunKind.BOOTSTRAP)
    moodle.reset_stats()
    run = run_sync(sync_site, moodle)
    assert run.status == RunStatus.SUCCEEDED
    assert moodle.write_calls() == 0
    assert (run.unchanged, run.changed, run.created, run.updated) == (30, 0, 0, 0)


def test_three_changed_records_make_exactly_three_updates(sync_site, moodle, people_csv):
    run_sync(sync_site, moodle, RunKind.BOOTSTRAP)
    rows = [person(n) for n in range(1, 31)]
    rows[0]["dept"] = "Surgery"
    rows[1]["last"] = "Kowalska"
    rows[2]["mail"] = "new.address@example.edu"
    rows[3]["city"] = "Kraków"  # update policy "create": never sent again, so no update
    write_csv(people_csv, rows)
    moodle.reset_stats()
    run = run_sync(sync_site, moodle)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    assert run.updated == 3
    assert moodle.stats()["calls"].get("core_user_update_users") == 1
    people = moodle.people()
    assert people["E00001"]["department"] == "Surgery"
    assert people["E00002"]["lastname"] == "Kowalska"
    assert people["E00003"]["email"] == "new.address@example.edu"
    assert people["E00004"]["city"] == "Gdańsk"


def test_a_removed_record_is_suspended(sync_site, moodle, people_csv):
    run_sync(sync_site, moodle, RunKind.BOOTSTRAP)
    write_csv(people_csv, [person(n) for n in range(1, 30)])  # E00030 left
    run = run_sync(sync_site, moodle)
    assert run.status == RunStatus.SUCCEEDED and run.suspended == 1
    assert moodle.people()["E00030"]["suspended"]
    assert SyncRecord.objects.get(external_id="E00030").suspended_by_hub
    # Back in the source: unsuspended.
    write_csv(people_csv, [person(n) for n in range(1, 31)])
    run_sync(sync_site, moodle)
    assert not moodle.people()["E00030"]["suspended"]


def test_blast_radius_guard_suspends_nobody_when_half_the_source_is_gone(sync_site, moodle, people_csv):
    run_sync(sync_site, moodle, RunKind.BOOTSTRAP)
    write_csv(people_csv, [person(n) for n in range(1, 16)])
    run = run_sync(sync_site, moodle)
    assert run.suspended == 0
    assert not any(u["suspended"] for u in moodle.people().values())
    alert = Alert.objects.get(key=f"blast_radius:{sync_site.slug}")
    assert "15 people left the source" in alert.title
    # Not a green run: the guard held work back, names who, and leaves one decision per person.
    assert run.status == RunStatus.PROBLEMS and run.blocked == 15
    assert "15 suspensions held back by the guard" in run.abort_reason
    held = run.events.get(message__startswith="The blast-radius guard held back suspensions")
    assert "15 people left the source" in held.message and "50 % of the 30 linked users" in held.message
    assert "E00016 (" in held.message  # the first examples, by name
    assert held.link.startswith("/discrepancies/?") and "kind=left_source" in held.link
    waiting = Discrepancy.objects.filter(site=sync_site, kind=DiscrepancyKind.LEFT_SOURCE)
    assert waiting.count() == 15 and set(waiting.values_list("status", flat=True)) == {
        DiscrepancyStatus.BLOCKED
    }
    assert set(waiting.values_list("proposed_action", flat=True)) == {ResolutionAction.SUSPEND}


def test_held_back_suspensions_are_not_repeated_by_the_next_run(sync_site, moodle, people_csv):
    run_sync(sync_site, moodle, RunKind.BOOTSTRAP)
    write_csv(people_csv, [person(n) for n in range(1, 16)])
    run_sync(sync_site, moodle)
    write_csv(people_csv, [person(n) for n in range(1, 17)])  # E00016 is back
    second = run_sync(sync_site, moodle)
    waiting = Discrepancy.objects.filter(
        site=sync_site, kind=DiscrepancyKind.LEFT_SOURCE, status=DiscrepancyStatus.BLOCKED
    )
    assert waiting.count() == 14 and set(waiting.values_list("run_id", flat=True)) == {second.pk}
    assert not waiting.filter(external_id="E00016").exists()


def test_conflicts_are_detected_with_debugging_off(sync_site, moodle, people_csv):
    moodle.control(
        "POST",
        "users",
        {"username": "user00005", "email": "someone@else.org", "firstname": "A", "lastname": "B"},
    )
    moodle.control(
        "POST",
        "users",
        {"username": "other", "email": "User00006@Example.edu", "firstname": "C", "lastname": "D"},
    )
    moodle.control(
        "POST",
        "users",
        {"username": "exact", "email": "user00007@example.edu", "firstname": "E", "lastname": "F"},
    )
    run = run_sync(sync_site, moodle, RunKind.BOOTSTRAP)
    assert run.status == RunStatus.PROBLEMS  # it left conflicts or errors behind
    assert run.conflicts == 3 and run.created == 27
    kinds = dict(Conflict.objects.values_list("record__external_id", "kind"))
    assert kinds == {
        "E00005": ConflictKind.USERNAME_TAKEN,
        "E00006": ConflictKind.EMAIL_TAKEN,  # case differs: found by the isolated create's email check
        "E00007": ConflictKind.EMAIL_TAKEN,
    }
    record = SyncRecord.objects.get(external_id="E00005")
    assert record.sync_status == SyncStatus.CONFLICT
    assert "username user00005 already belongs to Moodle user" in record.error_message
    # Never retried automatically.
    moodle.reset_stats()
    run = run_sync(sync_site, moodle)
    assert moodle.write_calls() == 0 and run.skipped == 3


def test_existing_user_with_the_idnumber_is_linked_not_created(sync_site, moodle):
    existing = moodle.control(
        "POST",
        "users",
        {
            "username": "user00001",
            "email": "user00001@example.edu",
            "firstname": "Ł",
            "lastname": "N",
            "idnumber": "E00001",
        },
    )
    run = run_sync(sync_site, moodle, RunKind.BOOTSTRAP)
    assert run.status == RunStatus.SUCCEEDED
    assert SyncRecord.objects.get(external_id="E00001").moodle_id == existing["id"]
    assert len([u for u in moodle.users() if u.get("idnumber") == "E00001"]) == 1
    assert moodle.people()["E00001"]["firstname"] == "Mateo"  # source wins


def test_bad_records_are_isolated_and_the_rest_written(sync_site, moodle, people_csv):
    rows = [person(n) for n in range(1, 31)]
    rows[4]["mail"] = "not-an-email"  # refused by our own validation: never sent
    rows[7]["lang"] = "xx"  # the site's settings say xx is installed, but Moodle has no such pack
    write_csv(people_csv, rows)
    sync_site.languages = "en,xx"
    sync_site.save()
    run = run_sync(sync_site, moodle, RunKind.BOOTSTRAP)
    assert run.status == RunStatus.PROBLEMS  # it left conflicts or errors behind
    people = moodle.people()
    assert len(people) == 28 and "E00005" not in people and "E00008" not in people
    invalid = SyncRecord.objects.get(external_id="E00005")
    assert invalid.sync_status == SyncStatus.ERROR and invalid.error_category == "validation"
    assert 'email "not-an-email"' in invalid.error_message and "E00005" in invalid.error_message
    refused = SyncRecord.objects.get(external_id="E00008")
    assert refused.sync_status == SyncStatus.ERROR and refused.error_category == "client_fault"
    assert (
        "Moodle refused record E00008" in refused.error_message
        and "invalidparameter" in refused.error_message
    )
    # The first batch (9 people after E00005) failed as a whole; its first person went alone (created),
    # then the other 8 were split in halves down to E00008: 1 + 1 + (1 + 2 + 2 + 2) create calls (and one
    # email check), against 1 for each clean batch.
    creates = CallLog.objects.filter(run=run, function="core_user_create_users").count()
    assert creates == 2 + 1 + 1 + 1 + 2 + 2 + 2


def test_a_lang_the_site_does_not_have_is_refused_before_sending_naming_the_field(
    sync_site, moodle, people_csv
):
    rows = [person(n) for n in range(1, 31)]
    rows[7]["lang"] = "fr"
    write_csv(people_csv, rows)
    run = run_sync(sync_site, moodle, RunKind.BOOTSTRAP)
    refused = SyncRecord.objects.get(external_id="E00008")
    assert refused.error_category == "validation"
    assert 'lang "fr" is not a language pack installed on the site (installed: en)' in refused.error_message
    # Never sent, so no batch was split over it: one create call per batch.
    assert CallLog.objects.filter(run=run, function="core_user_create_users").count() == 3


def test_token_revoked_mid_run_aborts_with_no_call_after_the_auth_error(sync_site, moodle):
    # One connection, so every call has a single "after"; side by side, the calls already out when the
    # refusal comes back may be refused too (tests/moodle/test_side_by_side.py bounds them).
    sync_site.max_concurrent_calls = 1
    sync_site.save()
    moodle.control("POST", "config", {"revoke_after": {"token": "hub-token-0123456789abcdef", "calls": 8}})
    run = run_sync(sync_site, moodle, RunKind.BOOTSTRAP)
    assert run.status == RunStatus.ABORTED
    assert "Moodle rejected the token …cdef (invalidtoken)" in run.abort_reason
    calls = list(CallLog.objects.filter(run=run).order_by("started_at", "pk"))
    assert calls[-1].outcome == "auth"
    assert [c.outcome for c in calls].count("auth") == 1  # nothing was called after it
    pending = SyncRecord.objects.filter(site=sync_site, sync_status=SyncStatus.PENDING).count()
    assert pending > 0 and not SyncRecord.objects.filter(sync_status=SyncStatus.ERROR).exists()
    alert = Alert.objects.get(key=f"auth:{sync_site.slug}")
    assert f"{pending} are pending" in alert.detail


def test_transient_failures_after_retries_become_dead_letters(sync_site, moodle):
    moodle.control("POST", "inject", {"kinds": ["503"] * 4, "function": "core_user_create_users"})
    run = run_sync(sync_site, moodle, RunKind.BOOTSTRAP)
    # A run that left dead letters is never green, nor the last clean sync.
    assert run.status == RunStatus.PROBLEMS and run.abort_reason.startswith("it left 10 dead letters")
    assert run.dead_lettered == 10 and run.created == 20
    letter = DeadLetter.objects.first()
    assert letter.function == "core_user_create_users" and letter.http_status == 503
    assert (
        letter.record.sync_status == SyncStatus.ERROR
        and letter.payload["idnumber"] == letter.record.external_id
    )
    assert "wstoken" not in str(letter.payload)


def test_two_concurrent_starts_one_is_skipped(sync_site, moodle, clean_redis):
    holder = SyncRun.objects.create(site=sync_site, kind=RunKind.INCREMENTAL, status=RunStatus.RUNNING)
    lock = RunLock(clean_redis, sync_site.slug, holder.pk, ttl_s=30)
    assert lock.acquire()
    try:
        run = run_sync(sync_site, moodle)
    finally:
        lock.release()
    assert run.status == RunStatus.SKIPPED
    assert f"run #{holder.pk} holds the lock" in run.abort_reason
    assert moodle.stats()["total_calls"] == 0


def test_record_history_names_the_run_and_the_call(sync_site, moodle):
    run = run_sync(sync_site, moodle, RunKind.BOOTSTRAP)
    event = RecordEvent.objects.get(record__external_id="E00001")
    assert (event.run_id, event.action, event.outcome, event.function) == (
        run.pk,
        "create",
        "ok",
        "core_user_create_users",
    )


def test_dry_run_writes_nothing_and_counts_the_plan(sync_site, moodle):
    moodle.control(
        "POST", "users", {"username": "user00005", "email": "x@y.org", "firstname": "A", "lastname": "B"}
    )
    run = run_sync(sync_site, moodle, RunKind.BOOTSTRAP, dry_run=True)
    assert run.status == RunStatus.SUCCEEDED
    assert moodle.write_calls() == 0
    assert not SyncRecord.objects.exists()
    assert run.plan["would_create"] == 29 and run.plan["conflicts"] == 1
    assert run.plan["estimate"]["calls"] > 0


def test_a_retried_dead_letter_that_fails_another_way_is_open_again(sync_site, moodle):
    from sync import runs
    from sync.choices import DeadLetterStatus

    moodle.control("POST", "inject", {"kinds": ["503"] * 4, "function": "core_user_create_users"})
    run_sync(sync_site, moodle, RunKind.BOOTSTRAP)
    letter = DeadLetter.objects.filter(status=DeadLetterStatus.OPEN).first()
    # Meanwhile someone took the person's username in Moodle: the retry meets a conflict, not a 503.
    moodle.control("POST", "users", {"username": letter.record.username, "email": "x@y.org", "firstname": "A",
                                     "lastname": "B"})  # fmt: skip
    retry = runs.retry_dead_letters(sync_site, [letter], enqueue=False)
    engine.execute(retry.pk, transport=moodle.transport, sleep=no_sleep)
    letter.refresh_from_db()
    assert letter.status == DeadLetterStatus.OPEN  # can be retried or discarded, not stuck in "retrying"
    assert letter.record.sync_status == SyncStatus.CONFLICT


def test_cancelling_a_run_a_worker_just_claimed_asks_the_worker(sync_site, operator):
    from sync import runs
    from sync.choices import RunControl

    run = SyncRun.objects.queue(sync_site, RunKind.INCREMENTAL)
    stale_view = SyncRun.objects.get(pk=run.pk)  # the page saw it queued
    assert run.start()  # a worker claims it meanwhile
    runs.cancel(stale_view, operator)
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.control == RunControl.CANCEL


def test_a_token_that_cannot_see_users_stops_the_run_before_any_write(sync_site, moodle):
    # Without moodle/user:viewdetails every look-up answers [] instead of an error: all would look new.
    from simulator.functions import all_capabilities

    blind = [c for c in all_capabilities() if not c.startswith("moodle/user:view")]
    moodle.control("POST", "tokens", {"token": HUB_TOKEN, "username": "wsuser", "capabilities": blind})
    run = run_sync(sync_site, moodle, RunKind.BOOTSTRAP)
    assert run.status == RunStatus.ABORTED and run.stop_category == "config"
    assert "would be silently empty or partial" in run.abort_reason
    assert moodle.write_calls() == 0
    assert statuses(sync_site) == {SyncStatus.PENDING: 30}  # nothing decided from blind answers is kept
    assert Alert.objects.filter(site=sync_site, kind="config").count() == 1


def test_the_look_up_proof_rides_on_the_first_batch_and_costs_no_call(sync_site, moodle):
    run = run_sync(sync_site, moodle, RunKind.BOOTSTRAP)
    assert run.status == RunStatus.SUCCEEDED
    lookups = moodle.stats()["calls"]["core_user_get_users_by_field"]
    # Three batches of 10: by idnumber, username (the guest riding along in the first, as proof), email.
    assert lookups == 3 * 3
    moodle.reset_stats()
    rerun = run_sync(sync_site, moodle)  # nothing changed: nothing to look up, so nothing to prove
    assert rerun.status == RunStatus.SUCCEEDED
    assert moodle.stats()["calls"] == {"core_webservice_get_site_info": 1}
