"""What Moodle's create refuses is never sent, and a source Moodle refuses wholesale stops the run early.

`suspended` is not a create parameter; a lang the site lacks and a text field with an HTML tag fail the whole
call. The hub refuses such people itself (naming the field), creates-then-suspends where it must, and when
people sent alone keep being refused the same way it stops with one alert naming what they share."""

from __future__ import annotations

import csv

import pytest

from integration_hub.testing import FIELDS, MAPPING, person, write_csv
from monitoring.models import Alert, CallLog
from sync.choices import DiscrepancyKind, RunKind, RunStatus, SyncStatus
from sync.models import Discrepancy, SyncRecord, SyncRun, SyncSource
from sync.run import engine

pytestmark = pytest.mark.django_db


def run_sync(site, moodle, kind=RunKind.BOOTSTRAP) -> SyncRun:
    run = SyncRun.objects.queue(site, kind)
    return engine.execute(run.pk, transport=moodle.transport, sleep=lambda s: None)


def write_people_who_may_have_left(path, count: int, left: set[int]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*FIELDS, "left"])
        writer.writeheader()
        for n in range(1, count + 1):
            writer.writerow({**person(n), "left": "yes" if n in left else "no"})


def map_suspended(site, **options) -> None:
    source = SyncSource.objects.get(site=site)
    source.mapping = {**MAPPING, **options, "fields": {**MAPPING["fields"], "suspended": "left"}}
    source.save()


def test_with_suspended_mapped_everyone_present_is_created_and_leavers_are_not(sync_site, moodle, people_csv):
    write_people_who_may_have_left(people_csv, 30, left={3, 17})
    map_suspended(sync_site)
    run = run_sync(sync_site, moodle)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    people = moodle.people()
    assert len(people) == 28 and "E00003" not in people and "E00017" not in people
    assert not any(p["suspended"] for p in people.values())
    assert (run.created, run.skipped, run.errors) == (28, 2, 0)
    gone = SyncRecord.objects.get(site=sync_site, external_id="E00003")
    assert gone.sync_status == SyncStatus.OK and gone.moodle_id is None
    # Nobody was refused, so no batch was split: one create per batch of 10.
    assert CallLog.objects.filter(run=run, function="core_user_create_users", outcome="ok").count() == 3
    assert not CallLog.objects.filter(run=run).exclude(outcome="ok").exists()

    # The nightly reconciliation does not report someone who left before they had an account as missing.
    reconcile = run_sync(sync_site, moodle, RunKind.RECONCILE)
    assert reconcile.status == RunStatus.SUCCEEDED, reconcile.abort_reason
    assert not Discrepancy.objects.filter(kind=DiscrepancyKind.MISSING_IN_MOODLE).exists()


def test_create_suspended_creates_them_then_suspends_them_with_one_update(sync_site, moodle, people_csv):
    write_people_who_may_have_left(people_csv, 30, left={3, 17})
    map_suspended(sync_site, create_suspended=True)
    run = run_sync(sync_site, moodle)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    people = moodle.people()
    assert len(people) == 30
    assert {e for e, p in people.items() if p["suspended"]} == {"E00003", "E00017"}
    assert run.created == 30
    assert CallLog.objects.filter(run=run, function="core_user_update_users").count() == 2  # batches 1, 2
    assert not CallLog.objects.filter(run=run).exclude(outcome="ok").exists()


def test_a_text_field_with_a_tag_is_refused_before_sending_naming_the_field(sync_site, moodle, people_csv):
    rows = [person(n) for n in range(1, 31)]
    rows[5]["dept"] = "R&D <Research>"
    rows[6]["dept"] = "R&D"  # an ampersand alone is fine
    write_csv(people_csv, rows)
    run = run_sync(sync_site, moodle)
    refused = SyncRecord.objects.get(site=sync_site, external_id="E00006")
    assert refused.sync_status == SyncStatus.ERROR and refused.error_category == "validation"
    assert 'department "R&D <Research>" contains an HTML tag (<Research>)' in refused.error_message
    assert "E00007" in moodle.people() and len(moodle.people()) == 29
    assert CallLog.objects.filter(run=run, function="core_user_create_users").count() == 3
    assert not CallLog.objects.filter(run=run).exclude(outcome="ok").exists()


def test_a_source_moodle_refuses_wholesale_stops_within_twenty_calls_naming_the_cause(
    sync_site, moodle, people_csv
):
    # The site's settings claim a French pack the Moodle does not have: every create is refused.
    write_csv(people_csv, [person(n, lang="fr") for n in range(1, 301)])
    sync_site.languages = "en,fr"
    sync_site.batch_size = 1000
    sync_site.save()
    run = run_sync(sync_site, moodle)
    assert run.status == RunStatus.ABORTED and run.stop_category == "config"
    assert "all 5 carry lang=fr, as do 295 more people waiting to be sent" in run.abort_reason
    assert moodle.stats()["total_calls"] <= 20, moodle.stats()["calls"]
    assert moodle.people() == {}
    alerts = Alert.objects.filter(site=sync_site, kind="config")
    assert alerts.count() == 1 and "refuses the people sent" in alerts.get().title
    # The people tried alone carry the reason; the rest wait, unsent, for the fix.
    assert SyncRecord.objects.filter(site=sync_site, sync_status=SyncStatus.ERROR).count() == 5
    assert SyncRecord.objects.filter(site=sync_site, sync_status=SyncStatus.PENDING).count() == 295


def test_one_bad_person_is_not_a_storm(sync_site, moodle, people_csv):
    # The first person sent alone is refused, the next ones are created: isolation goes on as before.
    rows = [person(n) for n in range(1, 31)]
    rows[0]["lang"] = "xx"
    write_csv(people_csv, rows)
    sync_site.languages = "en,xx"
    sync_site.save()
    run = run_sync(sync_site, moodle)
    assert run.status == RunStatus.PROBLEMS
    assert len(moodle.people()) == 29 and not Alert.objects.filter(kind="config").exists()
