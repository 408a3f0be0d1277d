"""The Records page searches the way people search: by surname, by full name in either order, without
accents or case, besides the exact external id and the start of a username or email; an empty search
says what it looked for and where, and claims nothing about the source it cannot know."""

import pytest
from django.db import connection
from django.db.models import F
from django.urls import reverse

from sync.bulk import insert_rows, update_rows
from sync.models import MoodleSite, SyncRecord
from sync.search import NameHasWords, name_words


@pytest.fixture
def signed_in(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def people(site):
    south = MoodleSite.objects.create(slug="south", name="South Campus", base_url="https://south.example.edu")
    for site_, external_id, name, username, email in [
        (site, "E00042", "María García", "mgarcia", "Maria.Garcia@example.edu"),
        (site, "E00043", "Omar Haddad", "ohaddad", "omar.haddad@example.edu"),
        (site, "E00044", "Anna Nowak", "anowak", "a.nowak@example.edu"),
        (site, "E00045", "Mario Garcés", "mgarces", "mario@example.edu"),
        (south, "S00001", "Łukasz Żółć-Straße", "lzolc", "lukasz@south.example.edu"),
    ]:
        SyncRecord.objects.create(
            site=site_, external_id=external_id, display_name=name, username=username, email=email
        )


def found(client, q: str, **params) -> set[str]:
    response = client.get(reverse("sync:record_list"), {"q": q, **params})
    assert response.status_code == 200
    return {record.external_id for record in response.context["page"].object_list}


def test_search_finds_people_by_surname(signed_in, people):
    assert found(signed_in, "Haddad") == {"E00043"}
    assert found(signed_in, "García") == {"E00042"}
    assert found(signed_in, "Nowak") == {"E00044"}


def test_search_finds_a_full_name_in_either_order(signed_in, people):
    assert found(signed_in, "maria garcia") == {"E00042"}
    assert found(signed_in, "garcia maria") == {"E00042"}
    assert found(signed_in, "García, María") == {"E00042"}
    assert found(signed_in, "haddad omar") == {"E00043"}
    assert found(signed_in, "garcia mar") == {"E00042"}  # every word must start a word of the name
    assert found(signed_in, "omar garcia") == set()


def test_search_ignores_accents_and_case(signed_in, people):
    assert found(signed_in, "nowak") == {"E00044"}
    assert found(signed_in, "NOWAK") == {"E00044"}
    assert found(signed_in, "MARIA GARCIA") == {"E00042"}
    assert found(signed_in, "garces") == {"E00045"}
    assert found(signed_in, "garcía") == {"E00042"}
    # Stroked letters and ß, which have no accent to drop, are spelled out; a hyphen separates words.
    assert found(signed_in, "lukasz zolc") == {"S00001"}
    assert found(signed_in, "strasse") == {"S00001"}
    assert found(signed_in, "Zółć") == {"S00001"}


def test_search_matches_the_start_of_words_not_their_middle(signed_in, people):
    assert found(signed_in, "arcia") == set()
    assert found(signed_in, "gar") == {"E00042", "E00045"}


def test_search_still_matches_username_and_email_by_their_start(signed_in, people):
    assert found(signed_in, "MGAR") == {"E00042", "E00045"}
    assert found(signed_in, "maria.garcia@") == {"E00042"}
    assert found(signed_in, "omar.h") == {"E00043"}
    assert found(signed_in, "example.edu") == set()  # a prefix, not a substring


def test_search_still_matches_the_external_id_exactly(signed_in, people):
    assert found(signed_in, "E00042") == {"E00042"}
    assert found(signed_in, " e00042 ") == set()  # an id is exact: case matters
    assert found(signed_in, "E0004") == set()


def test_search_applies_within_the_chosen_site(signed_in, people):
    assert found(signed_in, "garcia", site="south") == set()
    assert found(signed_in, "zolc", site="south") == {"S00001"}


def test_each_look_up_is_capped_within_the_other_filters(signed_in, people, monkeypatch):
    """Each way of matching stops at COUNT_CAP + 1 ids. Capped across all sites, a common prefix could
    fill the cap with another site's people and leave the chosen site's list wrongly empty."""
    monkeypatch.setattr("sync.search.COUNT_CAP", 1)
    SyncRecord.objects.create(
        site=MoodleSite.objects.get(slug="south"), external_id="S00002", display_name="Zed", username="mgarz"
    )
    assert found(signed_in, "mgar", site="south") == {"S00002"}


def test_records_written_in_bulk_are_found_by_name(db, site):
    """The name index is on an expression of display_name: COPY and UPDATE ... FROM unnest (sync.bulk)
    and bulk_create keep it current without any search column to fill in."""
    insert_rows(SyncRecord, [SyncRecord(site=site, external_id="B1", display_name="Zoë Ångström")])
    SyncRecord.objects.bulk_create([SyncRecord(site=site, external_id="B2", display_name="Piotr Wiśniewski")])
    renamed = SyncRecord.objects.get(external_id="B2")
    renamed.display_name = "Piotr Kowalczyk"
    update_rows(SyncRecord, [renamed], ["display_name"])

    def ids(q: str) -> set[str]:
        return set(
            SyncRecord.objects.filter(NameHasWords(F("display_name"), name_words(q))).values_list(
                "external_id", flat=True
            )
        )

    assert ids("angstrom zoe") == {"B1"}
    assert ids("kowalczyk") == {"B2"}
    assert ids("wisniewski") == set()


def test_the_name_search_is_served_by_the_name_index(db, site):
    """The query's expression must be the index's (migration 0016), or PostgreSQL scans the table."""
    records = SyncRecord.objects.filter(NameHasWords(F("display_name"), ["garcia", "maria"])).values("pk")
    sql, params = records.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "record_name_words" in plan


def test_an_empty_search_says_what_was_searched_and_where(signed_in, people):
    page = signed_in.get(reverse("sync:record_list"), {"q": "haddadi"}).content.decode()
    assert (
        "No record matches “haddadi” in first name, surname, full name, username, email or external id "
        "on all sites" in page
    )
    assert "was not in the source" not in page

    page = signed_in.get(reverse("sync:record_list"), {"q": "haddad", "site": "south"}).content.decode()
    assert (
        "No record matches “haddad” in first name, surname, full name, username, email or external id "
        "on South Campus" in page
    )
    assert "was not in the source" not in page


def test_an_empty_search_escapes_what_was_typed(signed_in, people):
    page = signed_in.get(reverse("sync:record_list"), {"q": "<b>x</b>"}).content.decode()
    assert "“&lt;b&gt;x&lt;/b&gt;”" in page


def test_only_an_empty_hub_says_the_source_was_empty(signed_in, db):
    page = signed_in.get(reverse("sync:record_list")).content.decode()
    assert "No records yet" in page and "the source was empty" in page
