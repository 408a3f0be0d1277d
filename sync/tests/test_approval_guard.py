"""Approvals that respect the blast-radius guard everywhere: when previewed, when confirmed, and again in the
task; destructive and safe changes never in one bulk action; past the limit only by an explicit override
(the count typed out, a reason, a second admin under four-eyes); suspensions batched like any run."""

import pytest
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from integration_hub.testing import PASSWORD, make_site, person, write_csv
from monitoring.models import Alert, AuditEntry, CallLog
from sync import resolutions
from sync.choices import (
    DiscrepancyKind,
    DiscrepancyStatus,
    OverrideStatus,
    ResolutionAction,
    ResolutionStatus,
    RunKind,
    RunStatus,
)
from sync.models import Discrepancy, GuardOverride, Resolution, SyncRecord, SyncRun
from sync.run import engine

pytestmark = pytest.mark.django_db
STAYING = 20  # the night's export kept 20 people; everyone else is an orphan to suspend


def execute(site, moodle, kind=None, run=None) -> SyncRun:
    run = run or SyncRun.objects.queue(site, kind)
    return engine.execute(run.pk, transport=moodle.transport, sleep=lambda s: None)


def bad_night(tmp_path, moodle, people: int):
    """`people` in Moodle; tonight's export has 20: reconciliation held back the other suspensions."""
    rows = [person(n) for n in range(1, people + 1)]
    csv_path = write_csv(tmp_path / "people.csv", rows)
    site = make_site(
        "north", "http://moodle.test", csv_path, name="North Campus", batch_size=200, removed_policy="keep"
    )
    assert execute(site, moodle, RunKind.BOOTSTRAP).status == RunStatus.SUCCEEDED
    write_csv(csv_path, rows[:STAYING])
    reconcile = execute(site, moodle, RunKind.RECONCILE)
    assert reconcile.status == RunStatus.PROBLEMS and reconcile.blocked == people - STAYING
    return site


@pytest.fixture
def night(db, clean_redis, tmp_path, moodle):
    """120 people, 100 held-back suspensions; the guard's limit is 2 % of 120 = 2."""
    return bad_night(tmp_path, moodle, 120)


@pytest.fixture
def big_night(db, clean_redis, tmp_path, moodle):
    """520 people, 500 held-back suspensions; the guard's limit is 2 % of 520 = 10."""
    return bad_night(tmp_path, moodle, 520)


@pytest.fixture
def second_admin(db) -> User:
    user = User.objects.create_user("admin2", password=PASSWORD)
    user.groups.add(Group.objects.get(name="Admins"))
    return user


def orphans():
    return Discrepancy.objects.filter(kind=DiscrepancyKind.ORPHAN_IN_MOODLE)


def test_the_plan_states_the_consequence_and_refuses_without_an_override(night, hub_admin):
    plan = resolutions.bulk_plan(orphans())
    assert len(plan.destructive) == 100 and not plan.safe
    (verdict,) = plan.over_limit
    assert verdict.sentence() == (
        "suspends 100 users = 83 % of the 120 linked users on North Campus; the site's limit is 2 % (2)"
    )
    with pytest.raises(
        resolutions.ResolutionError, match="type the number of users exactly as shown \\(100\\)"
    ):
        resolutions.approve_discrepancies(plan, hub_admin)
    assert not Resolution.objects.exists() and not SyncRun.objects.filter(kind=RunKind.RESOLUTION).exists()


def test_a_wrong_count_or_no_reason_is_refused(night, hub_admin):
    plan = resolutions.bulk_plan(orphans())
    with pytest.raises(resolutions.ResolutionError, match="exactly as shown"):
        resolutions.approve_discrepancies(plan, hub_admin, typed_count=50, reason="HR confirms")
    with pytest.raises(resolutions.ResolutionError, match="give the reason"):
        resolutions.approve_discrepancies(plan, hub_admin, typed_count=100, reason="  ")
    assert not GuardOverride.objects.exists() and not Resolution.objects.exists()


def test_an_override_applies_500_suspensions_in_a_few_batched_calls(big_night, hub_admin, moodle):
    plan = resolutions.bulk_plan(orphans())
    ((_, n, run, override),) = resolutions.approve_discrepancies(
        plan, hub_admin, typed_count=500, reason="HR confirms the end-of-year leavers"
    )
    assert n == 500 and override.status == OverrideStatus.CONFIRMED and override.count == 500
    assert AuditEntry.objects.filter(action="guard.override", actor=hub_admin).count() == 1
    assert Alert.objects.filter(key=f"guard_override:{override.pk}", kind="guard_override").count() == 1
    assert set(orphans().values_list("status", flat=True)) == {DiscrepancyStatus.APPROVED}

    moodle.reset_stats()
    done = execute(big_night, moodle, run=run)
    assert done.status == RunStatus.SUCCEEDED, done.abort_reason
    updates = moodle.stats()["calls"]["core_user_update_users"]
    assert updates <= 5  # 500 users, two form variables each, under max_input_vars 5000
    assert done.suspended == 500 and done.progress_done == done.progress_total == 500
    assert done.calls == CallLog.objects.filter(run=done).count() <= 8
    assert sum(u["suspended"] for u in moodle.people().values()) == 500
    assert set(Resolution.objects.values_list("status", flat=True)) == {ResolutionStatus.APPLIED}
    assert set(orphans().values_list("status", flat=True)) == {DiscrepancyStatus.APPLIED}
    assert SyncRecord.objects.filter(site=big_night, suspended_by_hub=True).count() == 500


def test_four_eyes_an_override_waits_for_a_second_admin(night, hub_admin, second_admin, moodle):
    night.four_eyes = True
    night.save()
    plan = resolutions.bulk_plan(orphans())
    ((_, _, run, override),) = resolutions.approve_discrepancies(
        plan, hub_admin, typed_count=100, reason="HR confirms the leavers"
    )
    assert run is None and override.status == OverrideStatus.PENDING
    assert set(Resolution.objects.values_list("status", flat=True)) == {ResolutionStatus.PROPOSED}
    with pytest.raises(PermissionDenied, match="second admin"):
        resolutions.confirm_override(override, hub_admin)
    run = resolutions.confirm_override(override, second_admin)
    override.refresh_from_db()
    assert override.status == OverrideStatus.CONFIRMED and override.decided_by == second_admin
    assert AuditEntry.objects.filter(action="guard.override_confirmed", actor=second_admin).exists()
    assert execute(night, moodle, run=run).suspended == 100


def test_the_task_refuses_suspensions_past_the_limit_even_when_the_page_was_bypassed(
    night, hub_admin, moodle
):
    proposals = [resolutions.propose(action=d.proposed_action, discrepancy=d) for d in orphans()]
    # Someone approves behind the pages' back: no override, straight to approved.
    run = SyncRun.objects.create(site=night, kind=RunKind.RESOLUTION)
    Resolution.objects.filter(pk__in=[p.pk for p in proposals]).update(
        status=ResolutionStatus.APPROVED, decided_by=hub_admin, run=run
    )
    moodle.reset_stats()
    done = execute(night, moodle, run=run)
    assert "core_user_update_users" not in moodle.stats()["calls"]
    assert not any(u["suspended"] for u in moodle.people().values())
    assert done.status == RunStatus.PROBLEMS and done.blocked == 100
    outcomes = set(Resolution.objects.values_list("status", "outcome"))
    assert len(outcomes) == 1
    status, outcome = outcomes.pop()
    assert status == ResolutionStatus.FAILED and outcome.startswith(
        "refused when applying: this suspends 100"
    )
    assert set(orphans().values_list("status", flat=True)) == {DiscrepancyStatus.BLOCKED}


def test_destructive_and_safe_changes_are_never_approved_together(night, hub_admin, moodle):
    drifted = moodle.people()["E00001"]
    moodle.control("PATCH", f"users/{drifted['id']}", {"department": "By hand"})
    night.auto_apply_kinds = []
    night.save()
    execute(night, moodle, RunKind.RECONCILE)
    plan = resolutions.bulk_plan(Discrepancy.objects.filter(status__in=DiscrepancyStatus.waiting()))
    assert plan.mixed and len(plan.safe) == 1
    with pytest.raises(resolutions.ResolutionError, match="separately"):
        resolutions.approve_discrepancies(plan, hub_admin, typed_count=100, reason="x")
    drift = resolutions.propose(action=ResolutionAction.UPDATE, discrepancy=plan.safe[0])
    orphan = resolutions.propose(action=ResolutionAction.SUSPEND, discrepancy=plan.destructive[0])
    with pytest.raises(resolutions.ResolutionError, match="never together with safe ones"):
        resolutions.approve([drift, orphan], hub_admin)


def test_a_refused_update_fails_only_its_own_resolution(night, hub_admin, moodle):
    night.max_removal_count, night.max_removal_percent = 1000, 100
    night.save()
    chosen = list(orphans().order_by("pk")[:4])
    proposals = [resolutions.propose(action=d.proposed_action, discrepancy=d) for d in chosen]
    # One proposal's recorded call carries a value Moodle refuses for the whole call (a boolean as "yes").
    bad = proposals[1]
    bad.calls = [
        {
            "function": "core_user_update_users",
            "params": {"users": [{"id": bad.calls[0]["params"]["users"][0]["id"], "suspended": "yes"}]},
        }
    ]
    bad.save()
    run = resolutions.approve(proposals, hub_admin, enqueue=False)
    done = execute(night, moodle, run=run)
    statuses = dict(Resolution.objects.values_list("pk", "status"))
    assert statuses.pop(bad.pk) == ResolutionStatus.FAILED
    assert set(statuses.values()) == {ResolutionStatus.APPLIED}
    assert done.suspended == 3 and done.errors == 1 and done.status == RunStatus.PROBLEMS
    bad.refresh_from_db()
    assert "invalidparameter" in bad.outcome and "Exception" not in bad.outcome


def test_the_pages_offer_separate_actions_and_a_typed_override(night, client, hub_admin, moodle):
    client.force_login(hub_admin)
    page = client.get(reverse("sync:discrepancy_list"), {"status": "waiting"}).content.decode()
    assert "Review the 100 that take access away…" in page and "Approve these 100" not in page
    url = reverse("sync:discrepancy_approve_filtered")
    preview = client.get(url, {"effect": "destructive"}).content.decode()
    assert "This suspends 100 users = 83 % of the 120 linked users on North Campus" in preview
    assert "the site&#x27;s limit is 2 % (2)" in preview and "Type the number of users to confirm" in preview
    refused = client.post(url, {"effect": "destructive", "count": "100", "reason": "HR says so"})
    assert refused.status_code == 400 and not Resolution.objects.exists()
    done = client.post(
        url, {"effect": "destructive", "count": "100", "typed_count": "100", "reason": "HR says so"}
    )
    run = SyncRun.objects.get(kind=RunKind.RESOLUTION)
    assert done.status_code == 302 and done["Location"] == reverse("sync:run_detail", args=[run.pk])
    assert Resolution.objects.filter(status=ResolutionStatus.APPROVED, override__isnull=False).count() == 100
