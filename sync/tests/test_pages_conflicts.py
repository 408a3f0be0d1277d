"""Conflicts pages: the list with counts and filters, the record page's way out (propose link / rename /
ignore), approval by an Admin only (four-eyes when the site asks for it), and the applied result."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from simulator.server import serve
from sync.choices import ConflictKind, ConflictStatus, ResolutionAction, ResolutionStatus, RunKind, RunStatus
from sync.models import Comment, Conflict, MoodleSite, Resolution, SyncRecord, SyncRun
from sync.run import engine

pytestmark = pytest.mark.django_db

MARIA = {
    "username": "mgarcia", "email": "maria.garcia@example.edu", "firstname": "María", "lastname": "García",
    "department": "Nursing", "lang": "en",
}  # fmt: skip
HOLDER = {"id": 8812, "username": "mgarcia", "email": "m.garcia@other.example", "firstname": "Manuel",
          "lastname": "García", "idnumber": ""}  # fmt: skip
_serial = iter(range(1, 1_000_000))


def conflict(site, *, kind=ConflictKind.USERNAME_TAKEN, their_users=None, **fields) -> Conflict:
    n = next(_serial)
    payload = dict(MARIA)
    record = SyncRecord.objects.create(
        site=site, external_id=f"E{n:05d}", display_name="María García", username=payload["username"],
        email=payload["email"], payload=payload, sync_status="conflict",
    )  # fmt: skip
    return Conflict.objects.create(
        site=site, record=record, kind=kind, our_payload=payload,
        their_users=[HOLDER] if their_users is None else their_users,
        message=f"username {payload['username']} already belongs to Moodle user 8812, not linked to them",
        **fields,
    )  # fmt: skip


@pytest.fixture
def south(db) -> MoodleSite:
    return MoodleSite.objects.create(slug="south", name="South Campus", base_url="https://south.example.edu")


def propose(client, row, action, **data):
    return client.post(reverse("sync:conflict_propose", args=[row.pk]), {"action": action, **data})


# -- the list ------------------------------------------------------------------------------------------------


def test_list_filters_counts_and_empty_states(client, operator, site, south):
    client.force_login(operator)
    empty = client.get(reverse("sync:conflict_list")).content.decode()
    assert "No open conflicts" in empty and "A clean night looks like this" in empty

    a = conflict(site)
    b = conflict(site, kind=ConflictKind.EMAIL_TAKEN)
    c = conflict(south)
    closed = conflict(site, status=ConflictStatus.RESOLVED)

    def listed(**params):
        return {
            row.pk for row in client.get(reverse("sync:conflict_list"), params).context["page"].object_list
        }

    assert listed() == {a.pk, b.pk, c.pk}
    assert listed(site="north") == {a.pk, b.pk}
    assert listed(kind="email_taken") == {b.pk}
    assert listed(status="all", site="north") == {a.pk, b.pk, closed.pk}
    response = client.get(reverse("sync:conflict_list"), {"site": "north"})
    counts = {
        row["kind"]: [cell["n"] for cell in row["counts"]] for row in response.context["counts"]["rows"]
    }
    assert counts == {"username_taken": [1, 1], "email_taken": [1, 0]}
    assert 'href="/conflicts/?kind=username_taken&amp;site=south">1</a>' in response.content.decode()
    assert (
        "No conflict matches these filters"
        in client.get(reverse("sync:conflict_list"), {"kind": "duplicate_match"}).content.decode()
    )


def test_list_query_count_does_not_grow_with_rows(client, operator, site):
    client.force_login(operator)
    for _ in range(5):
        conflict(site)
    with CaptureQueriesContext(connection) as few:
        assert client.get(reverse("sync:conflict_list")).status_code == 200
    for _ in range(45):
        conflict(site)
    with CaptureQueriesContext(connection) as many:
        assert client.get(reverse("sync:conflict_list")).status_code == 200
    assert len(many) == len(few)


# -- the record page's way out -------------------------------------------------------------------------------


def test_record_page_offers_the_actions_that_resolve_the_conflict(client, operator, site):
    row = conflict(site)
    client.force_login(operator)
    page = client.get(reverse("sync:record_detail", args=[row.record_id])).content.decode()
    assert "Propose link to Moodle user 8812 (mgarcia)" in page
    assert "Propose rename (create with another username)" in page and "Propose ignore" in page
    assert reverse("sync:conflict_propose", args=[row.pk]) in page


def test_operator_proposes_a_link_from_the_record_page_and_an_admin_approves_it(
    client, operator, hub_admin, site, django_capture_on_commit_callbacks
):
    row = conflict(site)
    record_url = reverse("sync:record_detail", args=[row.record_id])
    client.force_login(operator)
    response = propose(client, row, ResolutionAction.LINK, user="8812", next=record_url)
    assert response.status_code == 302 and response["Location"] == record_url
    proposal = Resolution.objects.get(conflict=row)
    assert proposal.proposed_by == operator and proposal.status == ResolutionStatus.PROPOSED
    assert proposal.calls == [
        {
            "function": "core_user_update_users",
            "params": {"users": [{"id": 8812, "idnumber": row.record.external_id}]},
        }
    ]
    assert (
        "Proposed: <strong>link to the existing moodle user</strong>"
        in client.get(record_url).content.decode()
    )

    # The operator sees the conflict page but cannot approve; a direct attempt is refused.
    page = client.get(reverse("sync:conflict_detail", args=[row.pk])).content.decode()
    assert "Only Admins approve or reject resolutions." in page
    assert client.post(reverse("sync:resolution_approve", args=[proposal.pk])).status_code == 403
    assert (
        client.post(reverse("sync:resolution_reject", args=[proposal.pk]), {"note": "x"}).status_code == 403
    )
    proposal.refresh_from_db()
    assert proposal.status == ResolutionStatus.PROPOSED

    client.force_login(hub_admin)
    preview = client.get(reverse("sync:resolution_approve", args=[proposal.pk]))
    assert preview.status_code == 200 and preview.context["calls"] == proposal.calls
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("sync:resolution_approve", args=[proposal.pk]))
    run = SyncRun.objects.get(kind=RunKind.RESOLUTION)
    assert response["Location"] == reverse("sync:run_detail", args=[run.pk]) and len(callbacks) == 1
    proposal.refresh_from_db()
    assert proposal.status == ResolutionStatus.APPROVED and proposal.decided_by == hub_admin


def test_link_needs_a_moodle_user_and_a_second_proposal_waits_for_the_first(client, operator, site):
    row = conflict(site)
    client.force_login(operator)
    response = propose(client, row, ResolutionAction.LINK)
    assert (
        "Nothing proposed: say which Moodle user to link."
        in client.get(response["Location"]).content.decode()
    )
    assert not Resolution.objects.exists()
    propose(client, row, ResolutionAction.IGNORE)
    response = propose(client, row, ResolutionAction.IGNORE)
    assert "already proposed" in client.get(response["Location"]).content.decode()
    assert Resolution.objects.count() == 1
    response = propose(client, conflict(site, kind=ConflictKind.EMAIL_TAKEN), ResolutionAction.RENAME)
    assert (
        "does not resolve a email held by another moodle user conflict"
        in client.get(response["Location"]).content.decode()
    )


def test_rename_without_a_token_says_so_and_proposes_nothing(client, operator, site):
    row = conflict(site)
    client.force_login(operator)
    response = propose(client, row, ResolutionAction.RENAME)
    page = client.get(response["Location"]).content.decode()
    assert "North Campus has no active service token" in page and not Resolution.objects.exists()


def test_rename_finds_a_free_username_in_moodle_and_applies_after_approval(
    client, operator, hub_admin, sync_site, moodle, django_capture_on_commit_callbacks
):
    for taken in ("mgarcia", "mgarcia.1"):
        holder = {"username": taken, "email": f"{taken}@other.example", "firstname": "M", "lastname": "G"}
        moodle.control("POST", "users", holder)
    row = conflict(sync_site)
    with serve(moodle.app) as server:
        MoodleSite.objects.filter(pk=sync_site.pk).update(base_url=server.url)
        client.force_login(operator)
        propose(client, row, ResolutionAction.RENAME)
    proposal = Resolution.objects.get(conflict=row)
    assert proposal.params["overrides"] == {"username": "mgarcia.2"}
    assert proposal.calls[0]["function"] == "core_user_create_users"
    assert proposal.calls[0]["params"]["users"][0]["username"] == "mgarcia.2"

    client.force_login(hub_admin)
    with django_capture_on_commit_callbacks(execute=False):
        client.post(reverse("sync:resolution_approve", args=[proposal.pk]))
    run = engine.execute(SyncRun.objects.get(kind=RunKind.RESOLUTION).pk, transport=moodle.transport,
                         sleep=lambda s: None)  # fmt: skip
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    assert moodle.people()[row.record.external_id]["username"] == "mgarcia.2"
    row.refresh_from_db()
    proposal.refresh_from_db()
    assert row.status == ConflictStatus.RESOLVED and proposal.status == ResolutionStatus.APPLIED
    page = client.get(reverse("sync:conflict_detail", args=[row.pk])).content.decode()
    assert "Applied" in page and "operator" in page and "admin" in page and f"#{run.pk}" in page


def test_ignore_is_proposed_approved_and_closes_the_conflict(
    client, operator, hub_admin, sync_site, moodle, django_capture_on_commit_callbacks
):
    row = conflict(sync_site)
    client.force_login(operator)
    propose(client, row, ResolutionAction.IGNORE)
    proposal = Resolution.objects.get(conflict=row)
    assert proposal.calls == []
    client.force_login(hub_admin)
    assert (
        "No Moodle call"
        in client.get(reverse("sync:resolution_approve", args=[proposal.pk])).content.decode()
    )
    with django_capture_on_commit_callbacks(execute=False):
        client.post(reverse("sync:resolution_approve", args=[proposal.pk]), {"note": "a test account"})
    moodle.reset_stats()
    engine.execute(
        SyncRun.objects.get(kind=RunKind.RESOLUTION).pk, transport=moodle.transport, sleep=lambda s: None
    )
    row.refresh_from_db()
    assert row.status == ConflictStatus.IGNORED and moodle.write_calls() == 0


def test_admin_rejects_a_proposal_with_a_reason(client, operator, hub_admin, site):
    row = conflict(site)
    client.force_login(operator)
    propose(client, row, ResolutionAction.IGNORE)
    proposal = Resolution.objects.get(conflict=row)
    client.force_login(hub_admin)
    client.post(reverse("sync:resolution_reject", args=[proposal.pk]), {"note": ""})
    proposal.refresh_from_db()
    assert proposal.status == ResolutionStatus.PROPOSED
    client.post(reverse("sync:resolution_reject", args=[proposal.pk]), {"note": "she is a real person"})
    proposal.refresh_from_db()
    assert proposal.status == ResolutionStatus.REJECTED and proposal.note == "she is a real person"
    row.refresh_from_db()
    assert row.status == ConflictStatus.OPEN  # still open: someone proposes another way out


def test_four_eyes_the_proposing_admin_cannot_approve(client, hub_admin, site):
    site.four_eyes = True
    site.save()
    row = conflict(site)
    client.force_login(hub_admin)
    propose(client, row, ResolutionAction.IGNORE)
    proposal = Resolution.objects.get(conflict=row)
    page = client.get(reverse("sync:conflict_detail", args=[row.pk])).content.decode()
    assert "Four-eyes rule: someone other than the proposer must approve." in page
    assert reverse("sync:resolution_approve", args=[proposal.pk]) not in page
    response = client.post(reverse("sync:resolution_approve", args=[proposal.pk]))
    assert response.status_code == 403 and "Four-eyes rule" in response.content.decode()
    proposal.refresh_from_db()
    assert proposal.status == ResolutionStatus.PROPOSED


def test_conflict_page_shows_the_diff_and_comments(client, operator, site):
    row = conflict(site)
    client.force_login(operator)
    response = client.get(reverse("sync:conflict_detail", args=[row.pk]))
    rows = {r["field"]: r for r in response.context["diff"]}
    assert rows["email"]["changed"] and not rows["username"]["changed"]
    assert "Moodle user 8812" in response.content.decode()
    client.post(reverse("sync:conflict_comment", args=[row.pk]), {"text": "Asked HR which Maria this is"})
    assert Comment.objects.get(conflict=row).author == operator
    assert (
        "Asked HR which Maria this is"
        in client.get(reverse("sync:conflict_detail", args=[row.pk])).content.decode()
    )
