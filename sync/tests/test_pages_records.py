"""Records pages: search by external id, username, email or name; filters; a record's status in words, its
values beside Moodle's, and its history."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from simulator.server import serve
from sync.choices import ConflictKind, ErrorCategory, RunKind, RunStatus, SyncStatus
from sync.models import Conflict, DeadLetter, MoodleSite, RecordEvent, SyncRecord, SyncRun

MARIA_CONFLICT = "username mgarcia already belongs to Moodle user 8812, not linked to this person"


def make_record(site, external_id: str, **fields) -> SyncRecord:
    return SyncRecord.objects.create(site=site, external_id=external_id, **fields)


@pytest.fixture
def signed_in(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def people(site):
    """Maria in conflict, José fine, Ana in error (another site)."""
    south = MoodleSite.objects.create(slug="south", name="South Campus", base_url="https://south.example.edu")
    payload = {
        "username": "mgarcia", "email": "Maria.Garcia@example.edu", "firstname": "María",
        "lastname": "García", "idnumber": "E00042", "auth": "manual",
    }  # fmt: skip
    maria = make_record(
        site, "E00042", username="mgarcia", email="Maria.Garcia@example.edu", display_name="María García",
        sync_status=SyncStatus.CONFLICT, error_category=ErrorCategory.CONFLICT, error_message=MARIA_CONFLICT,
        payload=payload,
    )  # fmt: skip
    jose = make_record(
        site,
        "E00420",
        username="jmartinez",
        email="jose@example.edu",
        display_name="José Martínez",
        sync_status=SyncStatus.OK,
    )
    ana = make_record(
        south, "S1", username="ana", email="ana@south.example.edu", display_name="Ana Souza",
        sync_status=SyncStatus.ERROR, error_category=ErrorCategory.VALIDATION,
        error_message='record S1 (line 3): email "ana@" is not valid',
    )  # fmt: skip
    return {"maria": maria, "jose": jose, "ana": ana}


def found(client, **params) -> set[str]:
    response = client.get(reverse("sync:record_list"), params)
    assert response.status_code == 200
    return {record.external_id for record in response.context["page"].object_list}


def test_search_matches_the_external_id_exactly(signed_in, people):
    assert found(signed_in, q="E00042") == {"E00042"}
    assert found(signed_in, q="E0004") == set()  # not a prefix search on ids: E00420 is not found either


def test_search_matches_username_email_and_name_by_case_insensitive_prefix(signed_in, people):
    assert found(signed_in, q="MGAR") == {"E00042"}
    assert found(signed_in, q="maria.g") == {"E00042"}
    assert found(signed_in, q="josé") == {"E00420"}
    assert found(signed_in, q="garcia") == {"E00042"}  # a surname starts a word of the name
    assert found(signed_in, q="arcia") == set()  # the start of a word, not any substring
    assert found(signed_in, q="  mgarcia ") == {"E00042"}


def test_filters_by_site_status_category_and_run_from_the_querystring(signed_in, people, site):
    run = SyncRun.objects.create(site=site, kind=RunKind.INCREMENTAL, status=RunStatus.SUCCEEDED)
    SyncRecord.objects.filter(pk=people["jose"].pk).update(last_run=run)
    assert found(signed_in, site="south") == {"S1"}
    assert found(signed_in, site="north") == {"E00042", "E00420"}
    assert found(signed_in, status="conflict") == {"E00042"}
    assert found(signed_in, status="error", category="validation") == {"S1"}
    assert found(signed_in, run=run.pk) == {"E00420"}
    assert found(signed_in, site="north", status="error") == set()


def test_run_and_outcome_find_the_records_a_run_left_with_that_outcome(signed_in, people, site):
    run = SyncRun.objects.create(site=site, kind=RunKind.INCREMENTAL, status=RunStatus.SUCCEEDED)
    RecordEvent.objects.create(record=people["maria"], run=run, action="create", outcome="conflict")
    RecordEvent.objects.create(record=people["jose"], run=run, action="create", outcome="ok")
    assert found(signed_in, run=run.pk, outcome="conflict") == {"E00042"}
    assert found(signed_in, run=run.pk, outcome="created") == {"E00420"}
    assert found(signed_in, run=run.pk, outcome="updated") == set()


def test_empty_search_explains_what_it_matches(signed_in, people):
    page = signed_in.get(reverse("sync:record_list"), {"q": "nobody"}).content.decode()
    assert "No record matches" in page and "external id exactly" in page


def test_record_list_query_count_does_not_grow_with_records(signed_in, site):
    run = SyncRun.objects.create(site=site, kind=RunKind.BOOTSTRAP)

    def fill(start, n):
        SyncRecord.objects.bulk_create(
            [
                SyncRecord(site=site, external_id=f"E{i:05d}", username=f"user{i}", last_run=run)
                for i in range(start, start + n)
            ]
        )

    fill(0, 5)
    with CaptureQueriesContext(connection) as few:
        assert signed_in.get(reverse("sync:record_list"), {"q": "user"}).status_code == 200
    fill(5, 45)
    with CaptureQueriesContext(connection) as many:
        assert signed_in.get(reverse("sync:record_list"), {"q": "user"}).status_code == 200
    assert len(many) == len(few)


def test_record_page_says_why_and_shows_moodle_values_beside_the_source(signed_in, people, site):
    maria = people["maria"]
    run = SyncRun.objects.create(site=site, kind=RunKind.BOOTSTRAP, status=RunStatus.SUCCEEDED)
    Conflict.objects.create(
        site=site, record=maria, run=run, kind=ConflictKind.USERNAME_TAKEN, our_payload=maria.payload,
        their_users=[{
            "id": 8812, "username": "mgarcia", "email": "m.garcia@other.example", "firstname": "Manuel",
            "lastname": "García", "idnumber": "",
        }],
        message=MARIA_CONFLICT,
    )  # fmt: skip
    RecordEvent.objects.create(
        record=maria,
        run=run,
        action="create",
        outcome="conflict",
        function="core_user_create_users",
        message=MARIA_CONFLICT,
    )
    response = signed_in.get(reverse("sync:record_detail", args=[maria.pk]))
    page = response.content.decode()
    assert MARIA_CONFLICT in page
    assert "Moodle user 8812" in page and "Manuel" in page
    rows = {row["field"]: row for row in response.context["comparison"]}
    assert rows["firstname"]["theirs"][0]["differs"] is True
    assert rows["lastname"]["theirs"][0]["differs"] is False
    assert rows["username"]["theirs"][0]["differs"] is False
    assert 'class="differs"' in page
    assert f'href="{reverse("sync:run_detail", args=[run.pk])}"' in page  # history links to the run
    assert "core_user_create_users" in page
    assert "Open conflicts" in page


def test_record_page_lists_its_dead_letters(signed_in, people):
    ana = people["ana"]
    DeadLetter.objects.create(
        site=ana.site, record=ana, function="core_user_update_users", category="transient", http_status=503
    )
    page = signed_in.get(reverse("sync:record_detail", args=[ana.pk])).content.decode()
    assert "core_user_update_users" in page and "HTTP 503" in page


def test_look_up_without_a_token_says_so_clearly(signed_in, people):
    response = signed_in.post(reverse("sync:record_lookup", args=[people["maria"].pk]))
    assert response.status_code == 200
    assert "no active service token" in response.content.decode()
    assert response.context["lookup_error"]


def test_look_up_needs_a_post(signed_in, people):
    assert signed_in.get(reverse("sync:record_lookup", args=[people["maria"].pk])).status_code == 405


def test_record_pages_need_a_login(client, people):
    for url in (
        reverse("sync:record_detail", args=[people["maria"].pk]),
        reverse("sync:record_lookup", args=[people["maria"].pk]),
    ):
        response = client.post(url) if url.endswith("lookup/") else client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_look_up_shows_moodles_values_beside_the_source_with_changes_marked(signed_in, sync_site, moodle):
    user = {
        "username": "mgarcia", "email": "old@example.edu", "firstname": "María", "lastname": "García",
        "idnumber": "E00042",
    }  # fmt: skip
    moodle.control("POST", "users", user)
    record = make_record(
        sync_site, "E00042", username="mgarcia", sync_status=SyncStatus.PENDING,
        payload={**user, "email": "maria@example.edu"},
    )  # fmt: skip
    # The far end is the simulator, over HTTP like a real Moodle.
    with serve(moodle.app) as server:
        MoodleSite.objects.filter(pk=sync_site.pk).update(base_url=server.url)
        response = signed_in.post(reverse("sync:record_lookup", args=[record.pk]))
    assert response.status_code == 200 and not response.context["lookup_error"]
    rows = {row["field"]: row for row in response.context["comparison"]}
    assert rows["email"]["theirs"][0] == {"value": "old@example.edu", "known": True, "differs": True}
    assert rows["firstname"]["theirs"][0]["differs"] is False
    assert "looked up by idnumber E00042" in response.content.decode()
