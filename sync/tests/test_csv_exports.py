"""CSV downloads of the Dead letters, Discrepancies and Records lists: cells a spreadsheet would run as
formulas are escaped, the list's filters apply, a login is required, and rows are streamed in constant
queries."""

import csv
import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from sync.choices import DeadLetterStatus, DiscrepancyKind, DiscrepancyStatus, ResolutionAction, RunKind
from sync.mapping import Mapping
from sync.models import DeadLetter, Discrepancy, MoodleSite, SyncRecord, SyncRun
from sync.sources.base import SourceRecord
from web.csv_export import csv_lines, escape_cell

pytestmark = pytest.mark.django_db

NIGHT = datetime(2026, 11, 21, 2, 0, tzinfo=ZoneInfo("UTC"))
_serial = iter(range(1, 1_000_000))


@pytest.fixture
def signed_in(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def south(db) -> MoodleSite:
    return MoodleSite.objects.create(slug="south", name="South Campus", base_url="https://south.example.edu")


def letter(site, *, errorcode="", message="HTTP 503 Service Unavailable", name=None, **fields) -> DeadLetter:
    n = next(_serial)
    record = SyncRecord.objects.create(site=site, external_id=f"E{n:05d}", display_name=name or f"Person {n}")
    at = NIGHT + timedelta(minutes=n)
    return DeadLetter.objects.create(
        site=site, record=record, function="core_user_create_users", category="transient",
        errorcode=errorcode, http_status=503, message=message, first_failed_at=at, last_failed_at=at,
        **fields,
    )  # fmt: skip


def discrepancy(site, *, kind=DiscrepancyKind.FIELD_DRIFT, summary="department differs", **fields):
    n = next(_serial)
    run = SyncRun.objects.create(site=site, kind=RunKind.RECONCILE, status="succeeded")
    values = {
        "kind": kind,
        "status": DiscrepancyStatus.OPEN,
        "external_id": f"E{n:05d}",
        "moodle_user_id": 1000 + n,
        "summary": summary,
        "fields": ["department"],
        "source_values": {"department": "History"},
        "moodle_values": {"department": "=1+1"},
        "proposed_action": ResolutionAction.UPDATE,
        **fields,
    }
    return Discrepancy.objects.create(site=site, run=run, **values)


def download(client, name: str, **params) -> list[dict[str, str]]:
    response = client.get(reverse(name), params)
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment; filename=")
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


# --- the escape ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+49 30 1234", "'+49 30 1234"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("a=b", "a=b"),
        ("O'Brien", "O'Brien"),
        ("", ""),
        (None, ""),
        (503, "503"),
        (True, "yes"),
    ],
)
def test_a_cell_a_spreadsheet_would_run_gets_a_leading_quote(value, cell):
    assert escape_cell(value) == cell


def test_every_cell_is_quoted_and_the_header_is_escaped_too():
    lines = "".join(csv_lines(["=name"], [["a,b"], ['say "hi"']]))
    assert lines == '\ufeff"\'=name"\r\n"a,b"\r\n"say ""hi"""\r\n'


def test_an_export_past_its_limit_ends_with_a_row_saying_so():
    rows = list(csv.reader(io.StringIO("".join(csv_lines(["n"], ([i] for i in range(10)), limit=3)))))
    assert [row[0] for row in rows[1:4]] == ["0", "1", "2"]
    assert len(rows) == 5
    assert "the export stops at 3" in rows[4][0]


def test_values_sent_to_moodle_are_never_escaped():
    config = {"fields": {"username": "u", "email": "e", "firstname": "f", "lastname": "l", "phone1": "p"}}
    fields = {"u": "ann", "e": "ann@example.org", "f": "Ann", "l": "-Lee", "p": "+49 30 1234"}
    payload = Mapping.from_config(config).apply(SourceRecord("E1", fields, "line 2")).payload
    assert (payload["lastname"], payload["phone1"]) == ("-Lee", "+49 30 1234")


# --- dead letters ----------------------------------------------------------------------------------


def test_dead_letter_export_escapes_formulas_and_leaves_the_rows_unchanged(signed_in, site):
    bad = letter(site, message='=HYPERLINK("http://evil.example")', name="@Mallory")
    rows = download(signed_in, "sync:deadletter_export")
    assert [row["id"] for row in rows] == [str(bad.pk)]
    assert rows[0]["message"] == '\'=HYPERLINK("http://evil.example")'
    assert rows[0]["name"] == "'@Mallory"
    assert rows[0]["site"] == "north"
    assert rows[0]["last_failed_at"] == bad.last_failed_at.isoformat()
    bad.refresh_from_db()
    assert bad.message == '=HYPERLINK("http://evil.example")'


def test_dead_letter_export_applies_the_lists_filters(signed_in, site, south):
    wanted = letter(site, errorcode="servicenotavailable")
    letter(site, errorcode="other")
    letter(south, errorcode="servicenotavailable")
    letter(site, errorcode="servicenotavailable", status=DeadLetterStatus.DISCARDED)
    rows = download(signed_in, "sync:deadletter_export", site="north", errorcode="servicenotavailable")
    assert [row["id"] for row in rows] == [str(wanted.pk)]  # open by default, like the list
    every_status = download(
        signed_in, "sync:deadletter_export", site="north", errorcode="servicenotavailable", status="all"
    )
    assert len(every_status) == 2


def test_dead_letter_list_links_to_the_export_with_its_filters(signed_in, site):
    letter(site, errorcode="x")
    response = signed_in.get(reverse("sync:deadletter_list"), {"errorcode": "x"})
    assert f'href="{reverse("sync:deadletter_export")}?errorcode=x"' in response.content.decode()


def test_dead_letter_export_reads_the_rows_in_constant_queries(signed_in, site):
    letter(site)
    with CaptureQueriesContext(connection) as few:
        download(signed_in, "sync:deadletter_export")
    for _ in range(20):
        letter(site)
    with CaptureQueriesContext(connection) as many:
        assert len(download(signed_in, "sync:deadletter_export")) == 21
    assert len(many) == len(few)


# --- discrepancies ---------------------------------------------------------------------------------


def test_discrepancy_export_escapes_formulas_and_writes_json_values(signed_in, site):
    found = discrepancy(site, summary="@cmd|' /C calc'!A0", external_id="-E1")
    rows = download(signed_in, "sync:discrepancy_export")
    assert [row["id"] for row in rows] == [str(found.pk)]
    assert rows[0]["summary"] == "'@cmd|' /C calc'!A0"
    assert rows[0]["external_id"] == "'-E1"
    assert rows[0]["moodle_values"] == '{"department": "=1+1"}'
    assert rows[0]["fields"] == '["department"]'
    assert rows[0]["kind"] == DiscrepancyKind.FIELD_DRIFT


def test_discrepancy_export_applies_the_lists_filters(signed_in, site, south):
    wanted = discrepancy(site)
    discrepancy(site, kind=DiscrepancyKind.ORPHAN_IN_MOODLE, proposed_action=ResolutionAction.SUSPEND)
    discrepancy(south)
    discrepancy(site, status=DiscrepancyStatus.APPLIED)
    rows = download(signed_in, "sync:discrepancy_export", site="north", kind=DiscrepancyKind.FIELD_DRIFT)
    assert [row["id"] for row in rows] == [str(wanted.pk)]  # waiting only by default, like the list


def test_discrepancy_list_links_to_the_export_with_its_filters(signed_in, site):
    discrepancy(site)
    response = signed_in.get(reverse("sync:discrepancy_list"), {"site": "north"})
    assert f'href="{reverse("sync:discrepancy_export")}?site=north"' in response.content.decode()


# --- records ---------------------------------------------------------------------------------------


def test_record_export_escapes_formulas_and_applies_the_search_and_filters(signed_in, site, south):
    wanted = SyncRecord.objects.create(
        site=site, external_id="E1", display_name="=cmd García", email="-x@example.edu", sync_status="error"
    )
    SyncRecord.objects.create(site=site, external_id="E2", display_name="Ann García", sync_status="ok")
    SyncRecord.objects.create(site=south, external_id="S1", display_name="=cmd García", sync_status="error")
    SyncRecord.objects.create(site=site, external_id="E3", display_name="Bob Nowak", sync_status="error")
    rows = download(signed_in, "sync:record_export", q="garcia", site="north", status="error")
    assert [row["external_id"] for row in rows] == [wanted.external_id]
    assert rows[0]["display_name"] == "'=cmd García"
    assert rows[0]["email"] == "'-x@example.edu"
    wanted.refresh_from_db()
    assert wanted.display_name == "=cmd García"


def test_record_list_links_to_the_export_with_its_search(signed_in, site):
    SyncRecord.objects.create(site=site, external_id="E1", display_name="Ann Nowak")
    response = signed_in.get(reverse("sync:record_list"), {"q": "nowak"})
    assert f'href="{reverse("sync:record_export")}?q=nowak"' in response.content.decode()


# --- who may download ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sync:deadletter_export", "sync:discrepancy_export", "sync:record_export"])
def test_an_export_needs_a_login_like_its_list(client, site, name):
    letter(site)
    discrepancy(site)
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert not getattr(response, "streaming", False)
