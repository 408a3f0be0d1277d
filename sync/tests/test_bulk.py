"""The fast bulk writes store what save() would store."""

import pytest
from django.utils import timezone

from sync.bulk import insert_rows, update_rows
from sync.choices import PendingAction, SyncStatus
from sync.models import MoodleSite, SyncRecord

pytestmark = pytest.mark.django_db


def test_insert_then_update_round_trip_like_save():
    site = MoodleSite.objects.create(slug="s", name="S", base_url="https://m.example.edu")
    before = timezone.now()
    insert_rows(
        SyncRecord,
        [
            SyncRecord(
                site=site,
                external_id="E1",
                payload={"username": "zoë", "n": 1},
                sync_status=SyncStatus.PENDING,
            ),
            SyncRecord(site=site, external_id="E2", pending_action=PendingAction.SUSPEND),
        ],
    )
    one, two = SyncRecord.objects.order_by("external_id")
    assert (one.payload, one.sync_status, one.create_only, one.overrides) == (
        {"username": "zoë", "n": 1},
        "pending",
        [],
        {},
    )
    assert two.pending_action == "suspend" and two.updated_at >= before
    one.sync_status, one.moodle_id, one.synced_at = SyncStatus.OK, 42, timezone.now()
    two.error_message = "it's <b>fine</b>; \\ 'quoted'"
    stamp = two.updated_at
    update_rows(SyncRecord, [one, two], ["sync_status", "moodle_id", "synced_at", "error_message"])
    one.refresh_from_db()
    two.refresh_from_db()
    assert (one.sync_status, one.moodle_id) == ("ok", 42) and one.synced_at is not None
    assert (
        two.error_message == "it's <b>fine</b>; \\ 'quoted'" and two.updated_at > stamp
    )  # auto_now, as save()
