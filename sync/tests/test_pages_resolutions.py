"""Resolution history: each resolution's trail (proposed by, decided by, when, the calls, the run, the
outcome), filters in the URL, the empty state, a constant number of queries; and the site page's
reconciliation policy with its "Reconcile now" button."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from sync.choices import (
    ConflictKind,
    DiscrepancyKind,
    DiscrepancyStatus,
    ResolutionAction,
    ResolutionStatus,
    RunKind,
)
from sync.models import Conflict, Discrepancy, MoodleSite, Resolution, SyncRecord, SyncRun
from web.models import Preference

pytestmark = pytest.mark.django_db

_serial = iter(range(1, 1_000_000))
CALL = {"function": "core_user_update_users", "params": {"users": [{"id": 77, "department": "History"}]}}


def applied_drift(site, *, decided_by=None, proposed_by=None, automatic=False, **fields) -> Resolution:
    n = next(_serial)
    night = SyncRun.objects.create(site=site, kind=RunKind.RECONCILE, status="succeeded")
    run = SyncRun.objects.create(site=site, kind=RunKind.RESOLUTION, status="succeeded")
    record = SyncRecord.objects.create(site=site, external_id=f"E{n:05d}")
    discrepancy = Discrepancy.objects.create(
        site=site, run=night, record=record, kind=DiscrepancyKind.FIELD_DRIFT,
        status=DiscrepancyStatus.APPLIED, external_id=record.external_id, moodle_user_id=77,
        summary="department differs", proposed_action=ResolutionAction.UPDATE,
    )  # fmt: skip
    now = timezone.now()
    values = {
        "site": site, "discrepancy": discrepancy, "action": ResolutionAction.UPDATE, "calls": [CALL],
        "status": ResolutionStatus.APPLIED, "automatic": automatic, "proposed_by": proposed_by,
        "proposed_at": now - timedelta(hours=2), "decided_by": decided_by,
        "decided_at": now - timedelta(hours=1),
        "note": "HR confirmed", "run": run, "outcome": "1 call(s) made", "applied_at": now, **fields,
    }  # fmt: skip
    return Resolution.objects.create(**values)


def test_history_lists_the_trail_of_each_resolution(client, operator, hub_admin, site):
    Preference.objects.create(user=operator, time_zone="Europe/Madrid")  # the viewer's zone, not the site's
    resolution = applied_drift(site, proposed_by=operator, decided_by=hub_admin)
    client.force_login(operator)
    response = client.get(reverse("sync:resolution_list"))
    assert [r.pk for r in response.context["page"].object_list] == [resolution.pk]
    page = response.content.decode()
    for expected in (
        "Update Moodle (source wins)", "Applied", "operator", "admin", "“HR confirmed”", "1 call(s) made",
        "core_user_update_users", f'href="{reverse("sync:run_detail", args=[resolution.run_id])}"',
        f'href="{reverse("sync:discrepancy_detail", args=[resolution.discrepancy_id])}"', "CET",
    ):  # fmt: skip
        assert expected in page, expected


def test_history_names_the_policy_or_the_reconciliation_when_no_person_acted(
    client, operator, hub_admin, site
):
    applied_drift(site, automatic=True)
    applied_drift(site, decided_by=hub_admin)  # the reconciliation proposed it, an admin approved
    client.force_login(operator)
    page = client.get(reverse("sync:resolution_list")).content.decode()
    assert "the site's policy" in page and "the reconciliation" in page


def test_history_filters_from_the_querystring(client, operator, hub_admin, site):
    south = MoodleSite.objects.create(slug="south", name="South Campus", base_url="https://south.example.edu")
    manual = applied_drift(site, decided_by=hub_admin)
    automatic = applied_drift(site, automatic=True)
    rejected = applied_drift(south, decided_by=hub_admin, status=ResolutionStatus.REJECTED, run=None)
    record = SyncRecord.objects.create(site=site, external_id="E99999")
    conflict = Conflict.objects.create(
        site=site, record=record, kind=ConflictKind.USERNAME_TAKEN, message="username taken"
    )
    linked = Resolution.objects.create(
        site=site, conflict=conflict, action=ResolutionAction.LINK, params={"user_id": 9}
    )
    client.force_login(operator)

    def listed(**params):
        return {r.pk for r in client.get(reverse("sync:resolution_list"), params).context["page"].object_list}

    assert listed() == {manual.pk, automatic.pk, rejected.pk, linked.pk}
    assert listed(site="south") == {rejected.pk}
    assert listed(status="rejected") == {rejected.pk}
    assert listed(decided="policy") == {automatic.pk}
    assert listed(decided="person", status="applied") == {manual.pk}
    assert listed(action="link") == {linked.pk}
    assert listed(run=manual.run_id) == {manual.pk}
    page = client.get(reverse("sync:resolution_list"), {"action": "link"}).content.decode()
    assert f'href="{reverse("sync:conflict_detail", args=[conflict.pk])}"' in page


def test_history_empty_states(client, operator, site):
    client.force_login(operator)
    assert "No resolutions yet" in client.get(reverse("sync:resolution_list")).content.decode()
    assert (
        "No resolution matches"
        in client.get(reverse("sync:resolution_list"), {"status": "failed"}).content.decode()
    )


def test_history_query_count_does_not_grow_with_rows(client, operator, hub_admin, site):
    client.force_login(operator)
    for _ in range(5):
        applied_drift(site, proposed_by=operator, decided_by=hub_admin)
    with CaptureQueriesContext(connection) as few:
        assert client.get(reverse("sync:resolution_list")).status_code == 200
    for _ in range(45):
        applied_drift(site, proposed_by=operator, decided_by=hub_admin)
    with CaptureQueriesContext(connection) as many:
        assert client.get(reverse("sync:resolution_list")).status_code == 200
    assert len(many) == len(few)


# -- the site page: policy and "Reconcile now" ---------------------------------------------------------------


def test_site_page_shows_the_reconciliation_policy(client, operator, site):
    site.four_eyes = True
    site.auto_apply_kinds = [DiscrepancyKind.FIELD_DRIFT]
    site.save()
    client.force_login(operator)
    page = client.get(reverse("sync:site_detail", args=[site.slug])).content.decode()
    assert "Applied without approval" in page and "field drift" in page
    assert "on: whoever proposed a resolution cannot approve it" in page
    assert "suspend at most 2 % of the users or 500" in page
    assert "Reconcile now" in page


def test_reconcile_now_queues_a_reconciliation(
    client, operator, sync_site, django_capture_on_commit_callbacks
):
    client.force_login(operator)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("sync:site_reconcile", args=[sync_site.slug]))
    run = SyncRun.objects.get(kind=RunKind.RECONCILE)
    assert response["Location"] == reverse("sync:run_detail", args=[run.pk]) and len(callbacks) == 1
    assert run.started_by == operator


def test_reconcile_now_needs_the_operate_runs_permission(client, django_user_model, site):
    viewer = django_user_model.objects.create_user("viewer", password="x")
    client.force_login(viewer)
    assert client.post(reverse("sync:site_reconcile", args=[site.slug])).status_code == 403
    assert "Reconcile now" not in client.get(reverse("sync:site_detail", args=[site.slug])).content.decode()


def test_overview_counts_waiting_discrepancies_and_open_conflicts_with_links(client, operator, site):
    night = SyncRun.objects.create(site=site, kind=RunKind.RECONCILE, status="succeeded")
    for status in (DiscrepancyStatus.OPEN, DiscrepancyStatus.BLOCKED, DiscrepancyStatus.APPLIED):
        Discrepancy.objects.create(
            site=site, run=night, kind=DiscrepancyKind.ORPHAN_IN_MOODLE, status=status, summary="orphan",
            proposed_action=ResolutionAction.SUSPEND,
        )  # fmt: skip
    record = SyncRecord.objects.create(site=site, external_id="E1")
    Conflict.objects.create(site=site, record=record, kind=ConflictKind.USERNAME_TAKEN, message="taken")
    client.force_login(operator)
    page = client.get(reverse("monitoring:overview")).content.decode()
    assert 'href="/discrepancies/?site=north">2</a>' in page
    assert 'href="/conflicts/?site=north">1</a>' in page
