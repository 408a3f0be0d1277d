"""The site setup pages: adding and editing a site, its source, its mapping with the preview, its policy."""

import html
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from integration_hub.testing import MAPPING, PASSWORD, person, simulated_moodle, write_csv
from monitoring.models import AuditEntry
from simulator.server import serve
from sync.choices import DiscrepancyKind
from sync.models import MoodleSite, SyncSource
from sync.schedules import reconcile_task_name

SITE_FIELDS = {
    "name": "East Campus", "slug": "east", "base_url": "http://127.0.0.1:1", "enabled": "on",
    "time_zone": "Europe/Berlin", "max_concurrent_calls": 2, "min_spacing_ms": 100, "calls_per_minute": 120,
    "batch_size": 500, "max_input_vars": 5000, "run_time_budget": "04:00:00", "languages": "en,de",
}  # fmt: skip


@pytest.fixture
def admin_client(client, hub_admin):
    client.login(username="admin", password=PASSWORD)
    return client


@pytest.fixture
def csv_site(site, people_csv) -> MoodleSite:
    SyncSource.objects.create(
        site=site, kind="csv", config={"path": str(people_csv), "id_column": "employee_id"}, mapping=MAPPING
    )
    return site


def mapping_post(**overrides) -> dict:
    """The mapping form as a person fills it in for the test CSV (integration_hub.testing.FIELDS)."""
    data = {"match_key": "idnumber", "auth": "manual"}
    columns = {
        "username": "login",
        "email": "mail",
        "firstname": "first",
        "lastname": "last",
        "department": "dept",
    }
    for field, column in columns.items():
        data[f"{field}__source"] = column
        data[f"{field}__transforms"] = ["strip", "lowercase"] if field == "username" else ["strip"]
        data[f"{field}__update"] = "always"
    for field in ("idnumber", "auth", "suspended", "institution", "city", "country", "lang", "timezone"):
        data[f"{field}__update"] = "always"
    for field in ("phone1", "address"):
        data[f"{field}__update"] = "always"
    data.update(overrides)
    return data


# -- sites -------------------------------------------------------------------------------------------------


def test_a_bad_time_zone_is_a_form_error_and_no_site_row_is_created(admin_client):
    response = admin_client.post(reverse("sync:site_add"), {**SITE_FIELDS, "time_zone": "Mars/Olympus_Mons"})
    assert response.status_code == 200
    assert "Mars/Olympus_Mons is not an IANA time zone name" in response.content.decode()
    assert not MoodleSite.objects.exists() and not AuditEntry.objects.exists()


def test_an_unreachable_url_saves_the_site_with_a_warning(admin_client):
    response = admin_client.post(reverse("sync:site_add"), SITE_FIELDS, follow=True)
    site = MoodleSite.objects.get(slug="east")
    assert (site.time_zone, site.languages, site.batch_size) == ("Europe/Berlin", "en,de", 500)
    page = response.content.decode()
    assert "Site East Campus added" in page and "http://127.0.0.1:1 cannot be reached" in page
    entry = AuditEntry.objects.get(action="site.add")
    assert entry.target == "site east" and entry.actor.username == "admin"


def test_a_url_answering_as_moodle_saves_without_a_warning(admin_client):
    with serve(simulated_moodle().app) as server:
        response = admin_client.post(
            reverse("sync:site_add"), {**SITE_FIELDS, "base_url": server.url}, follow=True
        )
    page = response.content.decode()
    assert "Site East Campus added" in page and "Saved, but" not in page
    assert MoodleSite.objects.get(slug="east").base_url == server.url


def an_intranet_page(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [b"<!doctype html><title>Intranet</title><h1>Welcome</h1>"]


def test_a_url_answering_but_not_as_moodle_is_a_warning(admin_client):
    with serve(an_intranet_page) as server:  # answers, but HTML, not Moodle's JSON
        response = admin_client.post(
            reverse("sync:site_add"), {**SITE_FIELDS, "base_url": server.url}, follow=True
        )
    assert "not as Moodle's web service does" in html.unescape(response.content.decode())
    assert MoodleSite.objects.filter(slug="east").exists()


def test_editing_a_site_saves_it_and_audits_each_change(admin_client, site):
    url = reverse("sync:site_edit", args=[site.slug])
    page = admin_client.get(url).content.decode()
    assert 'value="North Campus"' in page
    data = {**SITE_FIELDS, "slug": "renamed", "name": "North Campus", "base_url": site.base_url}
    response = admin_client.post(url, data)
    assert response.status_code == 302
    site.refresh_from_db()
    assert (site.slug, site.time_zone, site.languages) == ("north", "Europe/Berlin", "en,de")
    entry = AuditEntry.objects.get(action="site.change")
    assert "time_zone: UTC → Europe/Berlin" in entry.detail and "languages: en → en,de" in entry.detail
    assert "slug" not in entry.detail


def test_a_new_time_zone_moves_the_nightly_reconciliation_unless_an_admin_set_its_zone(admin_client, site):
    nightly = PeriodicTask.objects.get(name=reconcile_task_name(site))
    assert (nightly.crontab.hour, str(nightly.crontab.timezone)) == ("2", "UTC")
    data = {**SITE_FIELDS, "slug": "north", "name": "North Campus", "base_url": site.base_url}
    assert admin_client.post(reverse("sync:site_edit", args=[site.slug]), data).status_code == 302
    nightly.refresh_from_db()
    assert (nightly.crontab.hour, str(nightly.crontab.timezone)) == ("2", "Europe/Berlin")  # 02:00 site time
    assert "nightly reconciliation moved to Europe/Berlin" in AuditEntry.objects.get().detail

    # An admin put the nightly run in another zone on purpose: a later change of the site's zone leaves it.
    nightly.crontab = CrontabSchedule.objects.create(hour="3", minute="0", timezone="Asia/Tokyo")
    nightly.save()
    data["time_zone"] = "Europe/Madrid"
    assert admin_client.post(reverse("sync:site_edit", args=[site.slug]), data).status_code == 302
    nightly.refresh_from_db()
    assert (nightly.crontab.hour, str(nightly.crontab.timezone)) == ("3", "Asia/Tokyo")


def test_editing_with_a_bad_time_zone_changes_nothing(admin_client, site):
    data = {**SITE_FIELDS, "slug": "north", "time_zone": "Europe/Atlantis"}
    response = admin_client.post(reverse("sync:site_edit", args=[site.slug]), data)
    assert response.status_code == 200 and "Europe/Atlantis is not an IANA" in response.content.decode()
    site.refresh_from_db()
    assert site.time_zone == "UTC" and not AuditEntry.objects.exists()


def test_the_site_page_links_to_the_setup_pages_for_admins(admin_client, site):
    page = admin_client.get(reverse("sync:site_detail", args=[site.slug])).content.decode()
    assert reverse("sync:site_edit", args=[site.slug]) in page
    assert reverse("sync:source_edit", args=[site.slug]) in page
    assert reverse("sync:policy_edit", args=[site.slug]) in page
    assert "Set up its source and mapping" in page  # not the addsource command any more


@pytest.mark.parametrize(
    "name", ["sync:site_add", "sync:site_edit", "sync:source_edit", "sync:mapping_edit", "sync:policy_edit"]
)
def test_an_operator_gets_403_on_every_setup_view(client, operator, csv_site, name):
    client.login(username="operator", password=PASSWORD)
    url = reverse(name) if name == "sync:site_add" else reverse(name, args=[csv_site.slug])
    assert client.get(url).status_code == 403
    assert client.post(url, {**SITE_FIELDS, **mapping_post(), "kind": "csv"}).status_code == 403
    page = client.get(reverse("sync:site_detail", args=[csv_site.slug])).content.decode()
    assert reverse("sync:site_edit", args=[csv_site.slug]) not in page
    assert not AuditEntry.objects.exists()


# -- sources -----------------------------------------------------------------------------------------------


def test_source_errors_are_shown_on_their_fields_and_nothing_is_saved(admin_client, site, tmp_path, settings):
    settings.SOURCE_FILE_DIRS = [tmp_path]
    url = reverse("sync:source_edit", args=[site.slug])
    response = admin_client.post(url, {"kind": "csv", "csv_origin": "path", "removed_policy": "keep"})
    form = response.context["form"]
    assert form.errors["path"] == ["Required for this kind of source."]
    assert form.errors["id_column"] == ["Required for this kind of source."]

    people = write_csv(tmp_path / "people.csv", [person(1)])
    data = {
        "kind": "csv",
        "csv_origin": "path",
        "path": str(people),
        "id_column": "emp",
        "removed_policy": "keep",
    }
    form = admin_client.post(url, data).context["form"]
    assert "id column 'emp' not found" in form.errors["id_column"][0]

    data = {"kind": "sql", "dsn_secret": "postgresql://hr:s3cret@db/hr", "table": "people", "id_column": "id",
            "removed_policy": "keep"}  # fmt: skip
    form = admin_client.post(url, data).context["form"]
    assert "is not the name of an environment variable" in form.errors["dsn_secret"][0]

    data = {"kind": "sql", "dsn_secret": "HUB_TEST_UNSET_DSN", "id_column": "id", "removed_policy": "keep"}
    assert admin_client.post(url, data).context["form"].errors["table"]

    data = {"kind": "http", "url": "https://hr:s3cret@hr.example.org/people", "removed_policy": "keep"}
    assert "Take the password out" in admin_client.post(url, data).context["form"].errors["url"][0]
    assert not SyncSource.objects.exists() and not AuditEntry.objects.exists()


def test_a_missing_secret_is_named_on_its_field(admin_client, site, monkeypatch):
    monkeypatch.delenv("HUB_TEST_UNSET_DSN", raising=False)
    data = {"kind": "sql", "dsn_secret": "HUB_TEST_UNSET_DSN", "table": "people", "id_column": "id",
            "removed_policy": "keep"}  # fmt: skip
    form = admin_client.post(reverse("sync:source_edit", args=[site.slug]), data).context["form"]
    assert (
        "HUB_TEST_UNSET_DSN" in form.errors["dsn_secret"][0] and "is not set" in form.errors["dsn_secret"][0]
    )


def test_an_sql_source_reads_its_dsn_from_the_named_variable(admin_client, site, tmp_path, monkeypatch):
    import sqlite3

    db = tmp_path / "hr.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE people (employee_id TEXT, login TEXT)")
        conn.execute("INSERT INTO people VALUES ('E1', 'ann')")
    monkeypatch.setenv("HR_DB_DSN", f"sqlite:///{db}")
    data = {"kind": "sql", "dsn_secret": "HR_DB_DSN", "table": "people", "id_column": "employee_id",
            "removed_policy": "suspend"}  # fmt: skip
    response = admin_client.post(reverse("sync:source_edit", args=[site.slug]), data)
    assert response.status_code == 302
    source = SyncSource.objects.get(site=site)
    assert source.config == {"dsn_secret": "HR_DB_DSN", "table": "people", "id_column": "employee_id"}
    assert source.removed_policy == "suspend" and str(db) not in str(AuditEntry.objects.get().detail)


def test_an_uploaded_csv_is_kept_by_the_hub_and_audited(admin_client, site, tmp_path, settings):
    settings.UPLOAD_DIR = tmp_path / "uploads"
    content = write_csv(tmp_path / "hr-export.csv", [person(n) for n in range(1, 4)]).read_bytes()
    data = {
        "kind": "csv", "csv_origin": "upload", "id_column": "employee_id", "removed_policy": "keep",
        "upload": SimpleUploadedFile("hr-export.csv", content, content_type="text/csv"),
    }  # fmt: skip
    response = admin_client.post(reverse("sync:source_edit", args=[site.slug]), data)
    assert response.url == reverse("sync:mapping_edit", args=[site.slug])
    source = SyncSource.objects.get(site=site)
    kept = Path(source.config["path"])
    assert kept.parent == settings.UPLOAD_DIR / "north" / "source" and kept.read_bytes() == content
    assert source.mapping == {}
    entry = AuditEntry.objects.get(action="source.add")
    assert "hr-export.csv" in entry.detail

    # Edited without a new file: the kept one stays.
    data = {"kind": "csv", "csv_origin": "upload", "id_column": "employee_id", "removed_policy": "suspend"}
    assert admin_client.post(reverse("sync:source_edit", args=[site.slug]), data).status_code == 302
    source.refresh_from_db()
    assert source.config["path"] == str(kept) and source.removed_policy == "suspend"
    assert AuditEntry.objects.filter(action="source.change").count() == 1


@pytest.mark.parametrize("where", ["/etc/passwd", "{allowed}/../secrets.csv"])
def test_a_server_path_outside_the_source_folders_is_refused(admin_client, site, tmp_path, settings, where):
    allowed = tmp_path / "exports"
    allowed.mkdir()
    write_csv(tmp_path / "secrets.csv", [person(1)])
    settings.SOURCE_FILE_DIRS = [allowed]
    data = {"kind": "csv", "csv_origin": "path", "path": where.format(allowed=allowed),
            "id_column": "employee_id", "removed_policy": "keep"}  # fmt: skip
    response = admin_client.post(reverse("sync:source_edit", args=[site.slug]), data)
    assert "SOURCE_FILE_DIRS" in response.context["form"].errors["path"][0]
    assert "user00001" not in response.content.decode()  # nothing of the file was read
    assert not SyncSource.objects.exists()


def test_editing_a_source_keeps_the_keys_the_form_does_not_show(admin_client, site, people_csv):
    config = {"path": str(people_csv), "id_column": "employee_id", "description": "nightly HR export"}
    SyncSource.objects.create(site=site, kind="csv", config=config, mapping=MAPPING)
    url = reverse("sync:source_edit", args=[site.slug])
    page = admin_client.get(url).content.decode()
    assert str(people_csv) in page and "description" in page
    data = {"kind": "csv", "csv_origin": "path", "path": str(people_csv), "id_column": "employee_id",
            "delimiter": ",", "removed_policy": "keep"}  # fmt: skip
    assert admin_client.post(url, data).status_code == 302
    source = SyncSource.objects.get(site=site)
    assert source.config == {**config, "delimiter": ","} and source.mapping == MAPPING


# -- mappings and the preview ------------------------------------------------------------------------------


def test_the_mapping_form_offers_the_sources_columns(admin_client, csv_site):
    page = admin_client.get(reverse("sync:mapping_edit", args=[csv_site.slug])).content.decode()
    for column in ("employee_id", "login", "mail", "dept"):
        assert f'<option value="{column}"' in page
    assert "user00001" in page  # the stored mapping's preview


def test_mapping_errors_are_shown_on_the_field_and_nothing_is_saved(admin_client, csv_site):
    url = reverse("sync:mapping_edit", args=[csv_site.slug])
    response = admin_client.post(url, mapping_post(email__source="", save="1"))
    errors = response.context["form"].errors
    assert "Moodle needs email to create users" in errors["email__source"][0]
    response = admin_client.post(url, mapping_post(city__source="dept", city__constant="Oslo", save="1"))
    assert response.context["form"].errors["city__constant"] == [
        "Choose a column or a fixed value, not both."
    ]
    response = admin_client.post(url, mapping_post(idnumber__source="employee_id", save="1"))
    assert "fields.idnumber" in response.context["form"].errors["idnumber__source"][0]
    assert (
        'id="field-email" class="invalid"'
        in admin_client.post(url, mapping_post(email__source="")).content.decode()
    )
    assert SyncSource.objects.get(site=csv_site).mapping == MAPPING and not AuditEntry.objects.exists()


def test_a_valid_mapping_is_saved_audited_and_used_by_runs(admin_client, csv_site):
    url = reverse("sync:mapping_edit", args=[csv_site.slug])
    data = mapping_post(country__constant="PL", city__source="city", city__update="create", save="1")
    response = admin_client.post(url, data)
    assert response.status_code == 302
    mapping = MoodleSite.objects.get(pk=csv_site.pk).mapping()  # what a run builds
    assert mapping.fields["country"].constant == "PL" and mapping.fields["city"].update == "create"
    assert mapping.fields["username"].transforms == ("strip", "lowercase")
    entry = AuditEntry.objects.get(action="mapping.change")
    assert "country ← constant 'PL'" in entry.detail


def test_the_preview_shows_mapped_records_and_names_the_field_of_each_error(admin_client, site, tmp_path):
    rows = [person(1), person(2, mail="bob@"), person(3, login="Bad Name"), person(4), person(4)]
    people = write_csv(tmp_path / "people.csv", rows)
    SyncSource.objects.create(site=site, kind="csv", config={"path": str(people), "id_column": "employee_id"},
                              mapping={})  # fmt: skip
    url = reverse("sync:mapping_edit", args=[site.slug])
    response = admin_client.post(url, mapping_post(username__transforms=["strip"], preview="1"))
    preview = response.context["preview"]
    assert [row.ok for row in preview.rows] == [True, False, False, True, False]
    assert [row.result.field for row in preview.rows if not row.ok] == ["email", "username", "external id"]
    page = html.unescape(response.content.decode())
    assert "user00001" in page and "user00001@example.edu" in page
    assert 'email "bob@" is not a valid email address' in page
    assert SyncSource.objects.get(site=site).mapping == {}  # a preview saves nothing


def test_the_preview_answers_htmx_with_the_page_and_checks_languages(admin_client, csv_site):
    url = reverse("sync:mapping_edit", args=[csv_site.slug])
    response = admin_client.post(url, mapping_post(lang__constant="fr"), HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert 'id="preview"' in page and "not sent" in page and "fr" in page
    assert all(row.result.field == "lang" for row in response.context["preview"].rows)
    assert SyncSource.objects.get(site=csv_site).mapping == MAPPING


def test_the_mapping_page_sends_a_site_without_a_source_to_the_source_page(admin_client, site):
    response = admin_client.get(reverse("sync:mapping_edit", args=[site.slug]))
    assert response.url == reverse("sync:source_edit", args=[site.slug])


# -- the policy --------------------------------------------------------------------------------------------


def test_the_policy_form_saves_checkboxes_and_limits_and_audits(admin_client, site):
    url = reverse("sync:policy_edit", args=[site.slug])
    data = {
        "auto_apply_kinds": [DiscrepancyKind.FIELD_DRIFT], "four_eyes": "on", "rename_rule": "{username}{n}",
        "max_removal_percent": "5", "max_removal_count": "100",
    }  # fmt: skip
    assert admin_client.post(url, data).status_code == 302
    site.refresh_from_db()
    assert site.auto_apply_kinds == ["field_drift"] and site.four_eyes and site.max_removal_count == 100
    entry = AuditEntry.objects.get(action="policy.change")
    assert "four_eyes: False → True" in entry.detail and "max_removal_count: 500 → 100" in entry.detail


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("rename_rule", "{username}.x", "needs {n}"),
        ("rename_rule", "{user}{n}", "Only {username}"),
        ("max_removal_percent", "120", "between 0 and 100"),
        ("auto_apply_kinds", "everything", "Select a valid choice"),
    ],
)
def test_the_policy_form_refuses_what_cannot_work(admin_client, site, field, value, error):
    data = {
        "rename_rule": "{username}.{n}",
        "max_removal_percent": "2",
        "max_removal_count": "500",
        field: value,
    }
    response = admin_client.post(reverse("sync:policy_edit", args=[site.slug]), data)
    assert error in response.context["form"].errors[field][0]
    assert not AuditEntry.objects.exists()


def test_a_run_is_refused_while_the_mapping_is_not_valid_and_the_page_says_where_to_fix_it(
    admin_client, site, people_csv
):
    SyncSource.objects.create(
        site=site, kind="csv", config={"path": str(people_csv), "id_column": "employee_id"}, mapping={}
    )
    page = admin_client.get(reverse("sync:site_detail", args=[site.slug])).content.decode()
    assert "mapping is not valid" in page and reverse("sync:mapping_edit", args=[site.slug]) in page
    response = admin_client.post(reverse("sync:run_start", args=[site.slug]), {"mode": "bootstrap"})
    assert response.status_code == 200 and "mapping is not valid" in response.content.decode()
    assert not site.runs.exists()


def test_a_value_map_is_edited_on_the_page_shown_in_the_preview_and_used_by_runs(
    admin_client, site, tmp_path
):
    rows = [person(1, dept="Nursing"), person(2, dept="history "), person(3, dept="Chemistry")]
    people = write_csv(tmp_path / "people.csv", rows)
    SyncSource.objects.create(site=site, kind="csv", config={"path": str(people), "id_column": "employee_id"},
                              mapping={})  # fmt: skip
    url = reverse("sync:mapping_edit", args=[site.slug])
    values = {"department__values": "Nursing=Health; History=Humanities"}
    preview = admin_client.post(url, mapping_post(**values, preview="1")).context["preview"]
    assert [row.result.payload.get("department") for row in preview.rows if row.ok] == [
        "Health",
        "Humanities",
    ]
    [refused] = [row for row in preview.rows if not row.ok]  # no default: Chemistry is not sent
    assert refused.result.field == "department" and "Chemistry" in refused.result.message

    response = admin_client.post(url, mapping_post(**values, department__default="Other", save="1"))
    assert response.status_code == 302
    spec = SyncSource.objects.get(site=site).mapping["fields"]["department"]
    assert spec["values"] == {"Nursing": "Health", "History": "Humanities"} and spec["default"] == "Other"
    form_again = admin_client.get(url).content.decode()
    assert 'value="History=Humanities; Nursing=Health"' in form_again  # as stored (jsonb orders the keys)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"department__values": "Nursing"}, "has no &#x27;=&#x27;"),
        (
            {"department__source": "", "department__constant": "X", "department__values": "a=b"},
            "needs a column",
        ),
    ],
)
def test_a_bad_value_map_is_an_error_on_its_field_and_saves_nothing(admin_client, csv_site, overrides, error):
    url = reverse("sync:mapping_edit", args=[csv_site.slug])
    response = admin_client.post(url, mapping_post(**overrides, save="1"))
    assert response.status_code == 200 and error in response.content.decode()
    assert SyncSource.objects.get(site=csv_site).mapping == MAPPING
