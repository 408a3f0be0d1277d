"""Nightly reconciliation against the simulator: every kind of drift found, safe fixes applied, the rest
approved by an admin and applied, then a clean night; the blast-radius guard; approvals refused to
operators in the task."""

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import Count

from integration_hub.testing import person, write_csv
from monitoring.models import Alert
from sync import resolutions
from sync.choices import DiscrepancyKind, DiscrepancyStatus, ResolutionStatus, RunKind, RunStatus
from sync.models import Discrepancy, Resolution, SyncRecord, SyncRun
from sync.run import engine

pytestmark = pytest.mark.django_db


def execute(site, moodle, kind):
    return engine.execute(
        SyncRun.objects.queue(site, kind).pk, transport=moodle.transport, sleep=lambda s: None
    )


def found(run) -> dict[str, dict[str, int]]:
    rows = Discrepancy.objects.filter(run=run).values("kind", "status").annotate(n=Count("pk"))
    result: dict[str, dict[str, int]] = {}
    for row in rows:
        result.setdefault(row["kind"], {})[row["status"]] = row["n"]
    return result


@pytest.fixture
def synced(sync_site, moodle, people_csv):
    """30 people bootstrapped, then E00003 left and came back (the hub suspended them in between)."""
    execute(sync_site, moodle, RunKind.BOOTSTRAP)
    write_csv(people_csv, [person(n) for n in range(1, 31) if n != 3])
    execute(sync_site, moodle, RunKind.INCREMENTAL)
    assert moodle.people()["E00003"]["suspended"]
    return sync_site


def seed_drift_of_every_kind(moodle, people_csv) -> dict:
    people = moodle.people()
    moodle.control("PATCH", f"users/{people['E00001']['id']}", {"department": "Edited by hand"})
    moodle.control("DELETE", f"users/{people['E00002']['id']}")
    orphan = moodle.control("POST", "users", {"username": "walkin", "email": "walk@in.org", "firstname": "W",
                                              "lastname": "I"})  # fmt: skip
    twins = [
        moodle.control(
            "POST",
            "users",
            {
                "username": f"twin{i}",
                "email": f"twin{i}@x.org",
                "firstname": "T",
                "lastname": "W",
                "idnumber": "E00032",
            },
        )
        for i in (1, 2)
    ]
    # E00003 is back; E00031 is new to Moodle; E00032 matches the two twins.
    write_csv(people_csv, [person(n) for n in range(1, 33)])
    return {"orphan": orphan, "twins": twins}


def test_reconcile_finds_every_kind_applies_safe_fixes_and_approved_ones(
    synced, moodle, people_csv, hub_admin
):
    synced.max_removal_percent = 20  # three destructive approvals at once on a site of 31 (tested apart)
    synced.save()
    seeded = seed_drift_of_every_kind(moodle, people_csv)
    run = execute(synced, moodle, RunKind.RECONCILE)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    assert found(run) == {
        DiscrepancyKind.FIELD_DRIFT: {DiscrepancyStatus.APPLIED: 1},
        DiscrepancyKind.MISSING_IN_MOODLE: {DiscrepancyStatus.APPLIED: 1},
        DiscrepancyKind.SUSPENDED_MISMATCH: {DiscrepancyStatus.APPLIED: 1},
        DiscrepancyKind.IDENTITY_MISMATCH: {DiscrepancyStatus.OPEN: 1},
        DiscrepancyKind.DUPLICATE_MATCH: {DiscrepancyStatus.OPEN: 1},
        DiscrepancyKind.ORPHAN_IN_MOODLE: {DiscrepancyStatus.OPEN: 1},
    }
    people = moodle.people(unique=False)  # the twins share E00032 until the admin chooses
    assert people["E00001"]["department"] == "History"  # source wins
    assert "E00031" in people and not people["E00003"]["suspended"]
    drift = Discrepancy.objects.get(kind=DiscrepancyKind.FIELD_DRIFT)
    assert drift.fields == ["department"] and drift.moodle_values == {"department": "Edited by hand"}
    assert Resolution.objects.filter(automatic=True, status=ResolutionStatus.APPLIED).count() == 3

    # An admin approves the three that wait: choose the first twin, re-link E00002, suspend the orphan.
    duplicate = Discrepancy.objects.get(kind=DiscrepancyKind.DUPLICATE_MATCH)
    identity = Discrepancy.objects.get(kind=DiscrepancyKind.IDENTITY_MISMATCH)
    orphan = Discrepancy.objects.get(kind=DiscrepancyKind.ORPHAN_IN_MOODLE)
    assert orphan.moodle_user_id == seeded["orphan"]["id"]
    chosen, other = seeded["twins"]
    proposals = [
        resolutions.propose(
            action=duplicate.proposed_action, discrepancy=duplicate, params={"user_id": chosen["id"]}
        ),
        resolutions.propose(action=identity.proposed_action, discrepancy=identity),
        resolutions.propose(action=orphan.proposed_action, discrepancy=orphan),
    ]
    update = "core_user_update_users"
    assert proposals[0].calls == [
        {"function": update, "params": {"users": [{"id": chosen["id"], "idnumber": "E00032"}]}},
        {"function": update, "params": {"users": [{"id": other["id"], "idnumber": "", "suspended": 1}]}},
    ]
    resolution_run = resolutions.approve(proposals, hub_admin, enqueue=False)
    resolution_run = engine.execute(resolution_run.pk, transport=moodle.transport, sleep=lambda s: None)
    assert resolution_run.status == RunStatus.SUCCEEDED, resolution_run.abort_reason
    assert set(Resolution.objects.filter(run=resolution_run).values_list("status", flat=True)) == {"applied"}
    users = {u["id"]: u for u in moodle.users()}
    assert users[seeded["orphan"]["id"]]["suspended"]
    assert users[other["id"]]["suspended"] and not users[other["id"]]["idnumber"]
    assert SyncRecord.objects.get(external_id="E00032").moodle_id == chosen["id"]
    assert moodle.people()["E00002"]["username"] == "user00002"  # a new account for E00002

    clean = execute(synced, moodle, RunKind.RECONCILE)
    assert clean.status == RunStatus.SUCCEEDED and found(clean) == {}


def test_blast_radius_guard_stops_a_source_that_lost_half_its_rows(synced, moodle, people_csv):
    write_csv(people_csv, [person(n) for n in range(1, 16) if n != 3])  # E00016-E00030 lost
    moodle.reset_stats()
    run = execute(synced, moodle, RunKind.RECONCILE)
    assert run.status == RunStatus.PROBLEMS and run.blocked == 15
    blocked = Discrepancy.objects.filter(run=run, kind=DiscrepancyKind.ORPHAN_IN_MOODLE)
    assert blocked.count() == 15 and set(blocked.values_list("status", flat=True)) == {
        DiscrepancyStatus.BLOCKED
    }
    assert moodle.write_calls() == 0
    assert not any(u["suspended"] for n, u in moodle.people().items() if n != "E00003")
    alert = Alert.objects.get(key=f"blast_radius:{synced.slug}")
    assert "suspends 15 users = 50 % of the 30 linked users" in alert.detail
    assert "Nothing was suspended" in alert.detail and "First of them: Moodle user" in alert.detail
    event = run.events.get(message__startswith="The blast-radius guard held back")
    assert event.link_label == "Decide on the 15 held-back suspensions" and f"run={run.pk}" in event.link


def test_a_suspiciously_small_listing_is_an_error_not_no_orphans(synced, moodle):
    # Listing by the mapping's auth method finds nobody: Moodle filters silently, so this must not read
    # as "no orphans", nor as "everyone is an orphan".
    source = synced.source
    source.mapping = {**source.mapping, "auth": "saml2"}
    source.save()
    moodle.reset_stats()
    run = execute(synced, moodle, RunKind.RECONCILE)
    assert run.status == RunStatus.FAILED
    assert "Moodle listed 0 users with auth saml2, but the hub has linked 30" in run.abort_reason
    assert not Discrepancy.objects.filter(kind=DiscrepancyKind.ORPHAN_IN_MOODLE).exists()
    assert moodle.write_calls() == 0


def test_approval_is_refused_to_an_operator_and_rechecked_in_the_task(
    synced, moodle, people_csv, operator, hub_admin
):
    seed_drift_of_every_kind(moodle, people_csv)
    execute(synced, moodle, RunKind.RECONCILE)
    orphan = Discrepancy.objects.get(kind=DiscrepancyKind.ORPHAN_IN_MOODLE)
    proposal = resolutions.propose(action=orphan.proposed_action, discrepancy=orphan, user=operator)
    with pytest.raises(PermissionDenied):
        resolutions.approve([proposal], operator)
    run = resolutions.approve([proposal], hub_admin, enqueue=False)
    hub_admin.groups.remove(Group.objects.get(name="Admins"))  # lost the role before the task ran
    run = engine.execute(run.pk, transport=moodle.transport, sleep=lambda s: None)
    proposal.refresh_from_db()
    assert proposal.status == ResolutionStatus.FAILED and "refused when applying" in proposal.outcome
    assert not {u["id"]: u for u in moodle.users()}[orphan.moodle_user_id]["suspended"]


def test_four_eyes_rule_stops_the_proposer_approving(synced, moodle, people_csv, hub_admin):
    synced.four_eyes = True
    synced.save()
    seed_drift_of_every_kind(moodle, people_csv)
    execute(synced, moodle, RunKind.RECONCILE)
    orphan = Discrepancy.objects.get(kind=DiscrepancyKind.ORPHAN_IN_MOODLE)
    proposal = resolutions.propose(action=orphan.proposed_action, discrepancy=orphan, user=hub_admin)
    with pytest.raises(PermissionDenied, match="four-eyes"):
        resolutions.approve([proposal], hub_admin)


def test_a_duplicate_nobody_should_link_is_dismissed_with_a_reason(synced, moodle, people_csv, hub_admin):
    seed_drift_of_every_kind(moodle, people_csv)
    execute(synced, moodle, RunKind.RECONCILE)
    duplicate = Discrepancy.objects.get(kind=DiscrepancyKind.DUPLICATE_MATCH)
    with pytest.raises(resolutions.ResolutionError, match="not one of the users offered"):
        resolutions.propose(
            action=duplicate.proposed_action, discrepancy=duplicate, params={"user_id": 99999}
        )
    with pytest.raises(resolutions.ResolutionError, match="say why"):
        resolutions.dismiss(duplicate, hub_admin, " ")
    trail = resolutions.dismiss(duplicate, hub_admin, "HR is merging these two people")
    duplicate.refresh_from_db()
    assert duplicate.status == DiscrepancyStatus.REJECTED
    assert (trail.status, trail.decided_by, trail.calls) == (ResolutionStatus.REJECTED, hub_admin, [])


def test_an_approval_whose_run_finds_the_site_busy_waits_and_is_applied_after(
    synced, moodle, people_csv, hub_admin, clean_redis, monkeypatch
):
    from sync.models import SyncRun
    from sync.run.locks import RunLock

    retries = []
    monkeypatch.setattr(
        engine, "send_run", lambda run_id, countdown=None: retries.append((run_id, countdown))
    )
    seed_drift_of_every_kind(moodle, people_csv)
    execute(synced, moodle, RunKind.RECONCILE)
    orphan = Discrepancy.objects.get(kind=DiscrepancyKind.ORPHAN_IN_MOODLE)
    proposal = resolutions.propose(action=orphan.proposed_action, discrepancy=orphan)
    run = resolutions.approve([proposal], hub_admin, enqueue=False)
    holder = SyncRun.objects.create(site=synced, kind=RunKind.INCREMENTAL, status=RunStatus.RUNNING)
    lock = RunLock(clean_redis, synced.slug, holder.pk, ttl_s=30)
    assert lock.acquire()
    try:
        waiting = engine.execute(run.pk, transport=moodle.transport, sleep=lambda s: None)
    finally:
        lock.release()
    # Not skipped, not failed: back in the queue, retried later, and the approval still stands.
    assert waiting.status == RunStatus.QUEUED and f"waiting for run #{holder.pk}" in waiting.abort_reason
    assert retries == [(run.pk, 15.0)]
    proposal.refresh_from_db()
    orphan.refresh_from_db()
    assert proposal.status == ResolutionStatus.APPROVED and orphan.status == DiscrepancyStatus.APPROVED
    done = engine.execute(run.pk, transport=moodle.transport, sleep=lambda s: None)
    assert done.status == RunStatus.SUCCEEDED and done.suspended == 1
    proposal.refresh_from_db()
    assert proposal.status == ResolutionStatus.APPLIED
