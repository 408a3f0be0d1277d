"""Discrepancies pages: counts per kind and site, filters in the URL, the side-by-side diff, the preview of
the exact calls, single and bulk approval (admins only, one run per site), rejection with a reason,
comments, and constant query counts."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from sync.choices import DiscrepancyKind, DiscrepancyStatus, ResolutionAction, ResolutionStatus, RunKind
from sync.models import Comment, Discrepancy, MoodleSite, Resolution, SyncRecord, SyncRun
from web.models import Preference

pytestmark = pytest.mark.django_db

_serial = iter(range(1, 1_000_000))


@pytest.fixture
def south(db) -> MoodleSite:
    return MoodleSite.objects.create(slug="south", name="South Campus", base_url="https://south.example.edu")


def night(site) -> SyncRun:
    return SyncRun.objects.create(site=site, kind=RunKind.RECONCILE, status="succeeded")


def drift(site, run=None, *, field="department", source="History", moodle="Edited by hand", **extra):
    n = next(_serial)
    record = SyncRecord.objects.create(
        site=site, external_id=f"E{n:05d}", display_name=f"Person {n}", moodle_id=1000 + n
    )
    values = {
        "kind": DiscrepancyKind.FIELD_DRIFT,
        "status": DiscrepancyStatus.OPEN,
        "external_id": record.external_id,
        "moodle_user_id": 1000 + n,
        "summary": f"{record.external_id} (user{n}): {field} differ",
        "fields": [field],
        "source_values": {field: source},
        "moodle_values": {field: moodle},
        "proposed_action": ResolutionAction.UPDATE,
        **extra,
    }
    return Discrepancy.objects.create(site=site, run=run or night(site), record=record, **values)


def orphan(site, run=None, **extra):
    n = next(_serial)
    return Discrepancy.objects.create(
        site=site, run=run or night(site), kind=DiscrepancyKind.ORPHAN_IN_MOODLE,
        status=DiscrepancyStatus.OPEN, moodle_user_id=5000 + n, summary=f"Moodle user {5000 + n} is no one's",
        moodle_values={"id": 5000 + n, "username": f"walkin{n}"}, proposed_action=ResolutionAction.SUSPEND,
        **extra,
    )  # fmt: skip


def listed(client, **params) -> set[int]:
    response = client.get(reverse("sync:discrepancy_list"), params)
    assert response.status_code == 200
    return {row.pk for row in response.context["page"].object_list}


# -- access --------------------------------------------------------------------------------------------------


def test_the_pages_need_a_login(client, site):
    d = drift(site)
    for url in (reverse("sync:discrepancy_list"), reverse("sync:discrepancy_detail", args=[d.pk])):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_an_operator_sees_the_page_but_the_approve_button_says_why_not(client, operator, site):
    d = drift(site)
    client.force_login(operator)
    listing = client.get(reverse("sync:discrepancy_list")).content.decode()
    assert "Approve these 1…" in listing and "Only Admins approve or reject resolutions." in listing
    assert reverse("sync:discrepancy_approve_filtered") not in listing
    detail = client.get(reverse("sync:discrepancy_detail", args=[d.pk])).content.decode()
    assert 'disabled aria-describedby="approve-why"' in detail and "Only Admins approve" in detail
    assert reverse("sync:discrepancy_approve", args=[d.pk]) not in detail


def test_an_operator_approval_attempt_is_refused_and_nothing_changes(
    client, operator, site, django_capture_on_commit_callbacks
):
    d = drift(site)
    client.force_login(operator)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert client.get(reverse("sync:discrepancy_approve", args=[d.pk])).status_code == 403
        assert client.post(reverse("sync:discrepancy_approve", args=[d.pk])).status_code == 403
        assert client.post(reverse("sync:discrepancy_approve_filtered"), {"count": "1"}).status_code == 403
        assert client.post(reverse("sync:discrepancy_reject", args=[d.pk]), {"note": "no"}).status_code == 403
    assert callbacks == []
    d.refresh_from_db()
    assert d.status == DiscrepancyStatus.OPEN
    assert not Resolution.objects.exists() and not SyncRun.objects.filter(kind=RunKind.RESOLUTION).exists()


# -- the list ------------------------------------------------------------------------------------------------


def test_filters_come_from_the_querystring(client, operator, site, south):
    client.force_login(operator)
    first_night = night(site)
    a = drift(site, first_night)
    b = orphan(site, first_night)
    c = drift(south)
    applied = drift(site, first_night, status=DiscrepancyStatus.APPLIED)
    assert listed(client) == {a.pk, b.pk, c.pk}  # waiting for a decision by default
    assert listed(client, kind="field_drift") == {a.pk, c.pk}
    assert listed(client, kind="field_drift", site="north") == {a.pk}
    assert listed(client, run=first_night.pk, status="all") == {a.pk, b.pk, applied.pk}
    assert listed(client, status="applied") == {applied.pk}
    assert listed(client, site="nowhere") == {a.pk, b.pk, c.pk}  # a bad filter is reported, not fatal


def test_counts_per_kind_and_site_link_to_the_rows(client, operator, site, south):
    client.force_login(operator)
    for _ in range(3):
        drift(site)
    orphan(site)
    drift(south)
    drift(site, status=DiscrepancyStatus.REJECTED)  # not waiting: not counted by default
    response = client.get(reverse("sync:discrepancy_list"), {"kind": "field_drift"})
    counts = response.context["counts"]
    rows = {row["kind"]: [cell["n"] for cell in row["counts"]] for row in counts["rows"]}
    assert [s["name"] for s in counts["sites"]] == ["North Campus", "South Campus"]
    assert rows == {"field_drift": [3, 1], "orphan_in_moodle": [1, 0]} and counts["total"] == 5
    drift_row = next(row for row in counts["rows"] if row["kind"] == "field_drift")
    assert drift_row["counts"][0]["url"] == "/discrepancies/?kind=field_drift&site=north"
    page = response.content.decode()
    assert 'href="/discrepancies/?kind=field_drift&amp;site=north">3</a>' in page
    assert len(listed(client, kind="field_drift", site="north")) == 3


def test_the_list_shows_the_proposed_resolution_and_relative_times(client, operator, site):
    Preference.objects.create(user=operator, time_zone="Europe/Madrid")  # the viewer's zone, not the site's
    d = drift(site)
    client.force_login(operator)
    page = client.get(reverse("sync:discrepancy_list")).content.decode()
    assert "Update Moodle (source wins)" in page
    assert f'href="{reverse("sync:discrepancy_detail", args=[d.pk])}"' in page
    assert "CET" in page  # exact time on hover, in the viewer's zone


def test_empty_states_say_what_a_clean_night_looks_like(client, operator, site):
    client.force_login(operator)
    page = client.get(reverse("sync:discrepancy_list")).content.decode()
    assert "Nothing waiting for a decision" in page and "A clean night looks like this" in page
    filtered = client.get(reverse("sync:discrepancy_list"), {"kind": "orphan_in_moodle"}).content.decode()
    assert "No discrepancy matches these filters" in filtered


def test_list_query_count_does_not_grow_with_rows(client, operator, site, south):
    client.force_login(operator)
    run = night(site)

    def fill(n):
        for _ in range(n):
            drift(site, run)

    fill(5)
    orphan(south)
    with CaptureQueriesContext(connection) as few:
        assert client.get(reverse("sync:discrepancy_list")).status_code == 200
    fill(45)
    with CaptureQueriesContext(connection) as many:
        assert client.get(reverse("sync:discrepancy_list")).status_code == 200
    assert len(many) == len(few)


# -- one discrepancy -----------------------------------------------------------------------------------------


def test_detail_shows_source_and_moodle_side_by_side_with_the_change_highlighted(client, operator, site):
    d = drift(site)
    client.force_login(operator)
    response = client.get(reverse("sync:discrepancy_detail", args=[d.pk]))
    row = response.context["diff"][0]
    assert row["field"] == "department" and row["source"] == "History" and row["changed"]
    assert row["cells"][0] == {"value": "Edited by hand", "known": True, "differs": True}
    page = response.content.decode()
    assert 'class="side-source differs"' in page and 'class="side-moodle differs"' in page
    assert "History" in page and "Edited by hand" in page and f"Moodle user {d.moodle_user_id}" in page


def test_the_preview_lists_exactly_the_planned_calls_and_changes_nothing(client, hub_admin, site):
    d = drift(site)
    client.force_login(hub_admin)
    response = client.get(reverse("sync:discrepancy_approve", args=[d.pk]))
    assert response.status_code == 200
    assert response.context["calls"] == [
        {
            "function": "core_user_update_users",
            "params": {"users": [{"id": d.moodle_user_id, "department": "History"}]},
        }
    ]
    page = response.content.decode()
    assert "core_user_update_users" in page and "Approve and apply 1 call" in page
    assert not Resolution.objects.exists()  # previewing records nothing


def test_admin_approves_one_discrepancy_and_is_sent_to_the_resolution_run(
    client, hub_admin, site, django_capture_on_commit_callbacks
):
    d = drift(site)
    client.force_login(hub_admin)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("sync:discrepancy_approve", args=[d.pk]), {"note": "HR confirmed"})
    run = SyncRun.objects.get(kind=RunKind.RESOLUTION)
    assert response.status_code == 302 and response["Location"] == reverse("sync:run_detail", args=[run.pk])
    assert len(callbacks) == 1
    resolution = Resolution.objects.get(discrepancy=d)
    assert resolution.status == ResolutionStatus.APPROVED and resolution.run == run
    assert resolution.decided_by == hub_admin and resolution.proposed_by is None
    assert resolution.note == "HR confirmed"
    assert resolution.calls[0]["params"]["users"][0] == {"id": d.moodle_user_id, "department": "History"}


def test_choose_asks_which_user_then_previews_the_retirement_of_the_others(client, hub_admin, site):
    record = SyncRecord.objects.create(site=site, external_id="E00032", display_name="Twin")
    d = Discrepancy.objects.create(
        site=site, run=night(site), record=record, kind=DiscrepancyKind.DUPLICATE_MATCH,
        status=DiscrepancyStatus.OPEN, external_id="E00032", summary="E00032 matches 2 Moodle users (41, 42)",
        candidates=[{"id": 41, "username": "twin1"}, {"id": 42, "username": "twin2"}],
        proposed_action=ResolutionAction.CHOOSE,
    )  # fmt: skip
    client.force_login(hub_admin)
    detail = client.get(reverse("sync:discrepancy_detail", args=[d.pk])).content.decode()
    assert 'name="user" value="41"' in detail and "Moodle user 42 (candidate)" in detail
    asks = client.get(reverse("sync:discrepancy_approve", args=[d.pk]))
    assert "calls" not in asks.context and "Which Moodle user?" in asks.content.decode()
    preview = client.get(reverse("sync:discrepancy_approve", args=[d.pk]), {"user": "41"})
    update = "core_user_update_users"
    assert preview.context["calls"] == [
        {"function": update, "params": {"users": [{"id": 41, "idnumber": "E00032"}]}},
        {"function": update, "params": {"users": [{"id": 42, "idnumber": "", "suspended": 1}]}},
    ]
    assert not Resolution.objects.exists()


def test_reject_requires_a_note_and_marks_the_discrepancy_rejected(client, hub_admin, site):
    d = drift(site)
    client.force_login(hub_admin)
    response = client.post(reverse("sync:discrepancy_reject", args=[d.pk]), {"note": "  "})
    assert response.status_code == 400 and "This field is required." in response.content.decode()
    d.refresh_from_db()
    assert d.status == DiscrepancyStatus.OPEN and not Resolution.objects.exists()

    response = client.post(reverse("sync:discrepancy_reject", args=[d.pk]), {"note": "Moodle is right"})
    assert response.status_code == 302
    d.refresh_from_db()
    assert d.status == DiscrepancyStatus.REJECTED
    rejected = Resolution.objects.get(discrepancy=d)
    assert rejected.status == ResolutionStatus.REJECTED and rejected.decided_by == hub_admin
    assert rejected.note == "Moodle is right"
    page = client.get(reverse("sync:discrepancy_detail", args=[d.pk])).content.decode()
    assert "“Moodle is right”" in page and "Nothing to decide" in page


def test_comments_are_saved_and_shown(client, operator, site):
    d = drift(site)
    client.force_login(operator)
    response = client.post(
        reverse("sync:discrepancy_comment", args=[d.pk]), {"text": "HR says the new dept is right"}
    )
    assert response.status_code == 302
    comment = Comment.objects.get(discrepancy=d)
    assert comment.author == operator
    page = client.get(reverse("sync:discrepancy_detail", args=[d.pk])).content.decode()
    assert "HR says the new dept is right" in page and "operator" in page
    assert client.post(reverse("sync:discrepancy_comment", args=[d.pk]), {"text": ""}).status_code == 400


# -- bulk ----------------------------------------------------------------------------------------------------


def test_bulk_approve_of_a_filtered_set_approves_exactly_that_set_one_run_per_site(
    client, hub_admin, site, south, django_capture_on_commit_callbacks
):
    chosen_north = [drift(site) for _ in range(3)]
    chosen_south = [drift(south) for _ in range(2)]
    other_kind = orphan(site)
    decided = drift(site, status=DiscrepancyStatus.APPLIED)
    client.force_login(hub_admin)

    listing = client.get(reverse("sync:discrepancy_list"), {"kind": "field_drift"}).content.decode()
    assert "Approve these 5…" in listing
    confirm = client.get(reverse("sync:discrepancy_approve_filtered"), {"kind": "field_drift"})
    assert confirm.context["count"] == 5 and len(confirm.context["calls"]) == 5
    page = confirm.content.decode()
    assert "Approve 5 discrepancies?" in page
    assert "field drift discrepancies waiting for a decision on every site" in page
    assert "North Campus: 3" in page and "South Campus: 2" in page
    assert not Resolution.objects.exists()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            reverse("sync:discrepancy_approve_filtered"), {"kind": "field_drift", "count": "5"}
        )
    assert response.status_code == 302 and len(callbacks) == 2
    runs = {run.site.slug: run for run in SyncRun.objects.filter(kind=RunKind.RESOLUTION)}
    assert set(runs) == {"north", "south"}
    approved = Resolution.objects.filter(status=ResolutionStatus.APPROVED)
    assert {r.discrepancy_id for r in approved.filter(run=runs["north"])} == {d.pk for d in chosen_north}
    assert {r.discrepancy_id for r in approved.filter(run=runs["south"])} == {d.pk for d in chosen_south}
    assert not Resolution.objects.filter(discrepancy__in=[other_kind, decided]).exists()


def test_bulk_approve_asks_again_when_the_count_changed(client, hub_admin, site):
    drift(site)
    client.force_login(hub_admin)
    drift(site)  # found meanwhile
    response = client.post(reverse("sync:discrepancy_approve_filtered"), {"count": "1"})
    assert (
        response.status_code == 200
        and "The number changed since you confirmed 1" in response.content.decode()
    )
    assert not Resolution.objects.exists()


def test_bulk_approve_leaves_choices_of_moodle_user_for_one_by_one(client, hub_admin, site):
    drift(site)
    Discrepancy.objects.create(
        site=site, run=night(site), kind=DiscrepancyKind.DUPLICATE_MATCH, status=DiscrepancyStatus.OPEN,
        external_id="E09999", summary="twins", candidates=[{"id": 1}, {"id": 2}],
        proposed_action=ResolutionAction.CHOOSE,
    )  # fmt: skip
    client.force_login(hub_admin)
    confirm = client.get(reverse("sync:discrepancy_approve_filtered"))
    assert confirm.context["count"] == 1 and confirm.context["left_out"] == 1
    assert "except 1 that needs a choice of Moodle user" in confirm.content.decode()


def test_four_eyes_refuses_the_proposer_with_the_reason(client, hub_admin, site):
    from sync import resolutions

    site.four_eyes = True
    site.save()
    d = orphan(site)
    proposal = resolutions.propose(action=d.proposed_action, discrepancy=d, user=hub_admin)
    client.force_login(hub_admin)
    detail = client.get(reverse("sync:discrepancy_detail", args=[d.pk])).content.decode()
    assert "Four-eyes rule: someone other than the proposer must approve." in detail
    response = client.post(reverse("sync:resolution_approve", args=[proposal.pk]))
    assert response.status_code == 403
    assert "Not approved. Four-eyes rule: someone other than the proposer must approve." in (
        response.content.decode()
    )
    proposal.refresh_from_db()
    assert proposal.status == ResolutionStatus.PROPOSED


def test_an_approval_from_the_page_is_checked_again_in_the_task(
    client, hub_admin, sync_site, moodle, django_capture_on_commit_callbacks
):
    from django.contrib.auth.models import Group

    from sync.run import engine

    user = moodle.control("POST", "users", {"username": "ana", "email": "ana@example.edu", "firstname": "Ana",
                                            "lastname": "K", "department": "Edited by hand"})  # fmt: skip
    d = drift(sync_site, moodle_user_id=user["id"])
    client.force_login(hub_admin)
    with django_capture_on_commit_callbacks(execute=False):
        client.post(reverse("sync:discrepancy_approve", args=[d.pk]))
    hub_admin.groups.remove(Group.objects.get(name="Admins"))  # lost the role before the worker ran
    run = engine.execute(
        SyncRun.objects.get(kind=RunKind.RESOLUTION).pk, transport=moodle.transport, sleep=lambda s: None
    )
    resolution = Resolution.objects.get(discrepancy=d)
    assert resolution.status == ResolutionStatus.FAILED and "refused when applying" in resolution.outcome
    assert {u["id"]: u for u in moodle.users()}[user["id"]]["department"] == "Edited by hand"
    assert run.kind == RunKind.RESOLUTION


def test_relink_may_create_a_new_account_and_every_kind_renders(client, hub_admin, site):
    payload = {"username": "ana", "email": "ana@example.edu", "firstname": "Ana", "lastname": "K"}
    record = SyncRecord.objects.create(site=site, external_id="E07777", payload=payload, moodle_id=61)
    gone = Discrepancy.objects.create(
        site=site, run=night(site), record=record, kind=DiscrepancyKind.IDENTITY_MISMATCH,
        status=DiscrepancyStatus.OPEN, external_id="E07777", moodle_user_id=61,
        summary="E07777 is linked to Moodle user 61, who is deleted or missing",
        candidates=[{"id": 62, "username": "ana2", "email": "ana@example.edu"}],
        proposed_action=ResolutionAction.RELINK,
    )  # fmt: skip
    client.force_login(hub_admin)
    detail = client.get(reverse("sync:discrepancy_detail", args=[gone.pk])).content.decode()
    assert "Create a new Moodle account for this person" in detail and "Moodle user 62 (candidate)" in detail
    preview = client.get(reverse("sync:discrepancy_approve", args=[gone.pk]), {"user": "new"})
    assert [call["function"] for call in preview.context["calls"]] == ["core_user_create_users"]
    assert preview.context["calls"][0]["params"]["users"][0]["idnumber"] == "E07777"
    linked = client.get(reverse("sync:discrepancy_approve", args=[gone.pk]), {"user": "62"})
    assert linked.context["calls"][0]["params"]["users"] == [{"id": 62, "idnumber": "E07777"}]
    for other in (orphan(site), drift(site, kind=DiscrepancyKind.SUSPENDED_MISMATCH)):
        assert client.get(reverse("sync:discrepancy_detail", args=[other.pk])).status_code == 200
