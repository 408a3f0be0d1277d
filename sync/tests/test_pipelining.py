"""The next batch's look-ups go out beside this batch's creates, and its decisions are still the ones fresh
look-ups would give: what this batch wrote is laid over what those look-ups saw.

Moodle is made to hold the first create until the next batch's look-ups have been answered, so the look-ups
certainly saw Moodle before the create: the case where an overlay matters."""

from __future__ import annotations

import threading
import time

import pytest

from integration_hub.testing import person, write_csv
from monitoring.models import CallLog
from sync.choices import ConflictKind, RunKind, RunStatus, SyncStatus
from sync.models import Conflict, SyncRecord, SyncRun
from sync.run import engine

pytestmark = pytest.mark.django_db

CREATE = "core_user_create_users"
LOOKUP = "core_user_get_users_by_field"


class HoldFirstCreate:
    """Holds Moodle's creates until `lookups` look-ups were answered with a create waiting, then lets go."""

    def __init__(self, moodle, lookups: int) -> None:
        self.moodle = moodle
        self.lookups = lookups
        self.overlapped = False
        moodle.control("POST", "hold", {"function": CREATE})
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                stats = self.moodle.stats()
                if stats["calls"].get(LOOKUP, 0) >= self.lookups and stats["calls"].get(CREATE, 0) >= 1:
                    self.overlapped = stats["in_flight"] == 1  # only the held create is at Moodle
                    return
                time.sleep(0.01)
        finally:
            self.moodle.control("POST", "release", {})

    def join(self) -> None:
        self.thread.join()


def run_bootstrap(site, moodle) -> SyncRun:
    run = SyncRun.objects.queue(site, RunKind.BOOTSTRAP)
    return engine.execute(run.pk, transport=moodle.transport, sleep=lambda s: None)


def test_the_next_batch_looks_up_while_this_batch_creates(sync_site, moodle):
    # Batch 1: look-ups by idnumber, username, email; its create is held while batch 2 looks up the same way.
    holder = HoldFirstCreate(moodle, lookups=6)
    run = run_bootstrap(sync_site, moodle)
    holder.join()
    assert holder.overlapped, "the next batch's look-ups did not go out beside the create"
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    assert len(moodle.people()) == 30
    # Pipelining adds no call: three look-ups and one create per batch of 10, and the site info.
    assert moodle.stats()["calls"] == {"core_webservice_get_site_info": 1, LOOKUP: 9, CREATE: 3}


def test_what_the_last_batch_created_counts_for_the_next_batch_decisions(sync_site, moodle, people_csv):
    rows = [person(n) for n in range(1, 31)]
    rows[14]["mail"] = rows[4]["mail"]  # E00015 (batch 2) wants the email E00005 (batch 1) gets
    rows[15]["login"] = rows[5]["login"]  # E00016 (batch 2) wants the username E00006 (batch 1) gets
    write_csv(people_csv, rows)
    holder = HoldFirstCreate(moodle, lookups=6)
    run = run_bootstrap(sync_site, moodle)
    holder.join()
    assert holder.overlapped
    people = moodle.people()
    assert len(people) == 28 and "E00015" not in people and "E00016" not in people
    email = Conflict.objects.get(record__external_id="E00015")
    assert email.kind == ConflictKind.EMAIL_TAKEN
    assert [u["id"] for u in email.their_users] == [people["E00005"]["id"]]
    username = Conflict.objects.get(record__external_id="E00016")
    assert username.kind == ConflictKind.USERNAME_TAKEN
    assert [u["id"] for u in username.their_users] == [people["E00006"]["id"]]
    # Found before writing, as with fresh look-ups: Moodle never refused a create.
    assert not CallLog.objects.filter(run=run).exclude(outcome="ok").exists()
    assert SyncRecord.objects.filter(site=sync_site, sync_status=SyncStatus.CONFLICT).count() == 2


def test_an_overlay_frees_what_the_last_batch_renamed_and_adds_what_it_created():
    from sync.run.view import View

    ann = {"id": 7, "username": "x", "email": "x@example.edu", "idnumber": "E7"}
    view = View(frozenset({"E9"}), "idnumber", asked_usernames={"x", "z"}, asked_emails={"y@example.edu"})
    view.by_username = {"x": ann}
    # The last batch renamed Ann from x to y (and her email), and created Zoe as z.
    view.overlay(
        [
            {**ann, "username": "y", "email": "y@example.edu"},
            {"id": 8, "username": "z", "email": "z@example.edu", "idnumber": "E8"},
            {"id": 8, "suspended": 1},  # created, then suspended: one user, written twice
        ]
    )
    assert view.by_username == {"z": {"id": 8, "username": "z", "email": "z@example.edu", "idnumber": "E8",
                                      "suspended": 1}}  # fmt: skip
    assert [u["id"] for u in view.by_email["y@example.edu"]] == [7]
