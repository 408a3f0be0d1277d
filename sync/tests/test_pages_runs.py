"""Runs pages: the list and its filters, the run page with its live progress, pause / resume / cancel, and
starting a run from the site page."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from integration_hub.testing import MAPPING
from monitoring.models import CallLog
from sync.choices import RunControl, RunKind, RunStatus, SourceKind, SyncStatus
from sync.models import DeadLetter, MoodleSite, RecordEvent, RunEvent, SyncRecord, SyncRun, SyncSource


def make_run(site, **fields) -> SyncRun:
    fields.setdefault("kind", RunKind.INCREMENTAL)
    return SyncRun.objects.create(site=site, **fields)


@pytest.fixture
def south(db) -> MoodleSite:
    return MoodleSite.objects.create(slug="south", name="South Campus", base_url="https://south.example.edu")


@pytest.fixture
def csv_source(site, tmp_path) -> SyncSource:
    return SyncSource.objects.create(
        site=site,
        kind=SourceKind.CSV,
        config={"path": str(tmp_path / "people.csv"), "id_column": "employee_id"},
        mapping=MAPPING,
    )


@pytest.fixture
def viewer(db) -> User:
    """Signed in, but in no group: may look, may not act."""
    return User.objects.create_user("viewer", password="x")


@pytest.fixture
def signed_in(client, operator):
    client.force_login(operator)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["sync:run_list", "sync:record_list", "sync:deadletter_list"])
def test_pages_redirect_to_login_when_signed_out(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.mark.django_db
def test_run_detail_redirects_to_login_when_signed_out(client, site):
    run = make_run(site)
    for url in (reverse("sync:run_detail", args=[run.pk]), reverse("sync:run_progress", args=[run.pk])):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")


# -- the list -------------------------------------------------------------------------------------------


def listed(response) -> set[int]:
    return {run.pk for run in response.context["page"].object_list}


def test_run_list_filters_by_site_kind_status_and_time_from_the_querystring(signed_in, site, south):
    now = timezone.now()
    north_ok = make_run(site, status=RunStatus.SUCCEEDED)
    north_failed = make_run(site, status=RunStatus.FAILED, abort_reason="the worker's time limit was reached")
    north_old = make_run(
        site, kind=RunKind.BOOTSTRAP, status=RunStatus.SUCCEEDED, created_at=now - timedelta(days=3)
    )
    south_run = make_run(south, status=RunStatus.SUCCEEDED)

    assert listed(signed_in.get(reverse("sync:run_list"))) == {
        north_ok.pk,
        north_failed.pk,
        north_old.pk,
        south_run.pk,
    }
    assert listed(signed_in.get(reverse("sync:run_list"), {"site": "south"})) == {south_run.pk}
    assert listed(signed_in.get(reverse("sync:run_list"), {"kind": "bootstrap"})) == {north_old.pk}
    assert listed(signed_in.get(reverse("sync:run_list"), {"site": "north", "status": "failed"})) == {
        north_failed.pk
    }
    assert listed(signed_in.get(reverse("sync:run_list"), {"site": "north", "since": "24h"})) == {
        north_ok.pk,
        north_failed.pk,
    }
    assert listed(signed_in.get(reverse("sync:run_list"), {"since": "7d"})) == {
        north_ok.pk,
        north_failed.pk,
        north_old.pk,
        south_run.pk,
    }

    page = signed_in.get(reverse("sync:run_list"), {"status": "failed"}).content.decode()
    assert "the worker&#x27;s time limit was reached" in page
    assert f'href="{reverse("sync:run_detail", args=[north_failed.pk])}"' in page


def test_a_bad_filter_value_is_reported_and_the_others_still_apply(signed_in, site, south):
    make_run(site)
    south_run = make_run(south)
    response = signed_in.get(reverse("sync:run_list"), {"site": "south", "status": "exploded"})
    assert listed(response) == {south_run.pk}
    assert "This filter is not applied" in response.content.decode()


def test_run_list_empty_state_says_what_healthy_means(signed_in, site):
    page = signed_in.get(reverse("sync:run_list")).content.decode()
    assert "No runs yet" in page and "every 15 minutes" in page
    page = signed_in.get(reverse("sync:run_list"), {"status": "failed"}).content.decode()
    assert "No run matches these filters" in page


def test_run_list_paginates_by_50_and_keeps_the_filter_in_page_links(signed_in, site):
    SyncRun.objects.bulk_create([SyncRun(site=site, kind=RunKind.INCREMENTAL) for _ in range(55)])
    response = signed_in.get(reverse("sync:run_list"), {"site": "north"})
    assert len(response.context["page"].object_list) == 50
    assert "site=north&amp;page=2" in response.content.decode()
    assert (
        len(signed_in.get(reverse("sync:run_list"), {"site": "north", "page": 2}).context["page"].object_list)
        == 5
    )


def test_run_list_query_count_does_not_grow_with_runs(signed_in, site, operator):
    def fill(n):
        SyncRun.objects.bulk_create(
            [
                SyncRun(site=site, kind=RunKind.INCREMENTAL, status=RunStatus.SUCCEEDED, started_by=operator)
                for _ in range(n)
            ]
        )

    fill(5)
    with CaptureQueriesContext(connection) as few:
        assert signed_in.get(reverse("sync:run_list"), {"site": "north"}).status_code == 200
    fill(45)
    with CaptureQueriesContext(connection) as many:
        assert signed_in.get(reverse("sync:run_list"), {"site": "north"}).status_code == 200
    assert len(many) == len(few)


# -- the run page ---------------------------------------------------------------------------------------


def test_progress_partial_polls_while_the_run_is_running(signed_in, site):
    start = timezone.now() - timedelta(minutes=10)
    run = make_run(
        site, status=RunStatus.RUNNING, started_at=start, last_progress_at=start + timedelta(minutes=5),
        progress_total=2000, progress_done=500,
    )  # fmt: skip
    page = signed_in.get(reverse("sync:run_progress", args=[run.pk])).content.decode()
    assert f'hx-get="{reverse("sync:run_progress", args=[run.pk])}"' in page
    assert 'hx-trigger="every 2s"' in page and 'hx-swap="outerHTML"' in page
    assert '<progress max="100" value="25"' in page and "aria-label=" in page
    assert "25 %" in page
    assert ">100<" in page  # 500 records in 5 minutes: 100 a minute, so 15 minutes left
    assert signed_in.get(reverse("sync:run_progress", args=[run.pk])).context["eta"] is not None


def test_progress_partial_stops_polling_when_the_run_finished(signed_in, site):
    run = make_run(site, status=RunStatus.SUCCEEDED, progress_total=10, progress_done=10)
    page = signed_in.get(reverse("sync:run_progress", args=[run.pk])).content.decode()
    assert "hx-get" not in page and "hx-trigger" not in page
    assert '<progress max="100" value="100"' in page
    detail = signed_in.get(reverse("sync:run_detail", args=[run.pk])).content.decode()
    assert "hx-trigger" not in detail and 'id="run-progress"' in detail


def test_run_page_shows_the_abort_reason_and_links_counters_to_records(signed_in, site):
    run = make_run(
        site, status=RunStatus.ABORTED, conflicts=2, errors=3, dead_lettered=1,
        abort_reason="Moodle rejected the token …abcd (accessexception): access denied",
    )  # fmt: skip
    page = signed_in.get(reverse("sync:run_detail", args=[run.pk])).content.decode()
    assert "Moodle rejected the token …abcd (accessexception)" in page
    assert f"/records/?run={run.pk}&amp;outcome=conflict" in page
    assert f"/records/?run={run.pk}&amp;status=error" in page
    assert f"/deadletters/?run={run.pk}&amp;status=all" in page
    assert "Resume run" in page and "then resume: the run finishes the job" in page  # story 2


def test_run_page_groups_errors_by_category_errorcode_and_outcome(signed_in, site):
    run = make_run(site, status=RunStatus.SUCCEEDED)
    now = timezone.now()
    calls = [("transient", "", "core_user_create_users", 503)] * 3 + [
        ("client_fault", "invalidparameter", "core_user_update_users", 200)
    ]
    calls += [("ok", "", "core_user_get_users_by_field", 200)] * 4
    CallLog.objects.bulk_create(
        [
            CallLog(
                site=site,
                run=run,
                outcome=o,
                errorcode=e,
                function=f,
                http_status=h,
                duration_ms=5,
                started_at=now,
            )
            for o, e, f, h in calls
        ]
    )
    records = [SyncRecord.objects.create(site=site, external_id=f"E{n}") for n in range(4)]
    for record, outcome in zip(records, ["error", "dead_letter", "dead_letter", "conflict"], strict=True):
        RecordEvent.objects.create(record=record, run=run, action="create", outcome=outcome)
    RecordEvent.objects.create(record=records[0], run=run, action="update", outcome="ok")

    response = signed_in.get(reverse("sync:run_detail", args=[run.pk]))
    groups = {
        (g["outcome"], g["errorcode"], g["function"]): g["calls"] for g in response.context["call_errors"]
    }
    assert groups == {
        ("transient", "", "core_user_create_users"): 3,
        ("client_fault", "invalidparameter", "core_user_update_users"): 1,
    }
    outcomes = {g["outcome"]: g["records"] for g in response.context["record_errors"]}
    assert outcomes == {"error": 1, "dead_letter": 2, "conflict": 1}
    assert f"/records/?run={run.pk}&amp;outcome=dead_letter" in response.content.decode()


def test_run_page_shows_the_timeline(signed_in, site):
    run = make_run(site)
    RunEvent.objects.create(run=run, message="Queued by operator")
    RunEvent.objects.create(
        run=run, level=RunEvent.Level.WARNING, message="Waiting 30 s: Moodle's circuit breaker is open"
    )
    page = signed_in.get(reverse("sync:run_detail", args=[run.pk])).content.decode()
    assert page.index("Queued by operator") < page.index("Waiting 30 s")


def test_dry_run_page_shows_the_plan_with_examples_and_estimate(signed_in, site):
    plan = {
        "seen": 2000, "would_create": 1500, "would_update": 400, "would_suspend": 3, "already_in_step": 80,
        "conflicts": 12, "invalid": 5, "skipped": 0, "removal_blocked": 0,
        "examples": {
            "create": ["E00001: create"],
            "conflict": ["E00007: username mgarcia already belongs to Moodle user 8812"],
        },
        "estimate": {"calls": 42, "minutes": 3.5},
    }  # fmt: skip
    run = make_run(site, kind=RunKind.BOOTSTRAP, dry_run=True, status=RunStatus.SUCCEEDED, plan=plan)
    page = signed_in.get(reverse("sync:run_detail", args=[run.pk])).content.decode()
    assert "Dry run" in page and "What a real run would do" in page
    assert "Would create" in page and ">1500<" in page
    assert "username mgarcia already belongs to Moodle user 8812" in page
    assert "42 Moodle calls" in page and "3.5 minutes" in page


# -- pause, resume, cancel ------------------------------------------------------------------------------


def test_pause_asks_the_running_run_to_stop_after_its_batch(signed_in, site):
    run = make_run(site, status=RunStatus.RUNNING)
    response = signed_in.post(reverse("sync:run_pause", args=[run.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("sync:run_detail", args=[run.pk])
    run.refresh_from_db()
    assert run.control == RunControl.PAUSE and run.status == RunStatus.RUNNING
    assert RunEvent.objects.filter(run=run, message__startswith="Pause requested by operator").exists()
    page = signed_in.get(response["Location"]).content.decode()
    assert f"Pause requested for run #{run.pk}" in page
    assert "Pause requested — takes effect after the batch in flight" in page


def test_pause_of_a_finished_run_changes_nothing_and_says_why(signed_in, site):
    run = make_run(site, status=RunStatus.SUCCEEDED)
    response = signed_in.post(reverse("sync:run_pause", args=[run.pk]), follow=True)
    run.refresh_from_db()
    assert run.control == "" and run.status == RunStatus.SUCCEEDED
    assert not RunEvent.objects.filter(run=run).exists()
    assert "Nothing was done" in response.content.decode() and "not running" in response.content.decode()


def test_pause_needs_a_post(signed_in, site):
    run = make_run(site, status=RunStatus.RUNNING)
    assert signed_in.get(reverse("sync:run_pause", args=[run.pk])).status_code == 405
    run.refresh_from_db()
    assert run.control == ""


def test_resume_queues_a_paused_run_again(signed_in, site, django_capture_on_commit_callbacks):
    run = make_run(site, status=RunStatus.PAUSED, abort_reason="paused by an operator")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = signed_in.post(reverse("sync:run_resume", args=[run.pk]))
    assert response.status_code == 302
    assert len(callbacks) == 1  # the task is sent once the transaction commits
    assert RunEvent.objects.filter(run=run, message="Resumed by operator").exists()


def test_cancel_asks_for_confirmation_then_ends_a_queued_run(signed_in, site):
    run = make_run(site, status=RunStatus.QUEUED)
    page = signed_in.get(reverse("sync:run_cancel", args=[run.pk])).content.decode()
    assert f"Cancel run #{run.pk}?" in page and 'method="post"' in page
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED  # the GET changed nothing
    response = signed_in.post(reverse("sync:run_cancel", args=[run.pk]))
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.finished_at is not None
    assert RunEvent.objects.filter(run=run, message="Cancelled by operator").exists()


def test_cancel_of_a_running_run_is_requested_for_the_next_batch_boundary(signed_in, site):
    run = make_run(site, status=RunStatus.RUNNING)
    signed_in.post(reverse("sync:run_cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.control == RunControl.CANCEL and run.status == RunStatus.RUNNING
    assert RunEvent.objects.filter(run=run, message__startswith="Cancel requested by operator").exists()


def test_run_actions_need_the_operate_runs_permission(client, viewer, site):
    client.force_login(viewer)
    run = make_run(site, status=RunStatus.RUNNING)
    for name in ("sync:run_pause", "sync:run_resume", "sync:run_cancel"):
        assert client.post(reverse(name, args=[run.pk])).status_code == 403
    run.refresh_from_db()
    assert run.control == "" and run.status == RunStatus.RUNNING
    page = client.get(reverse("sync:run_detail", args=[run.pk])).content.decode()
    assert reverse("sync:run_pause", args=[run.pk]) not in page
    assert "the “operate runs” permission" in page


def test_operators_see_the_buttons_that_fit_the_state(signed_in, site):
    running = make_run(site, status=RunStatus.RUNNING)
    page = signed_in.get(reverse("sync:run_detail", args=[running.pk])).content.decode()
    assert (
        reverse("sync:run_pause", args=[running.pk]) in page
        and reverse("sync:run_cancel", args=[running.pk]) in page
    )
    assert reverse("sync:run_resume", args=[running.pk]) not in page
    paused = make_run(site, status=RunStatus.PAUSED)
    page = signed_in.get(reverse("sync:run_detail", args=[paused.pk])).content.decode()
    assert (
        reverse("sync:run_resume", args=[paused.pk]) in page
        and reverse("sync:run_pause", args=[paused.pk]) not in page
    )


# -- starting a run from the site page ------------------------------------------------------------------


def test_site_page_offers_to_start_a_run_and_describes_the_source(signed_in, site, csv_source):
    page = signed_in.get(reverse("sync:site_detail", args=[site.slug])).content.decode()
    assert f'action="{reverse("sync:run_start", args=[site.slug])}"' in page
    assert 'enctype="multipart/form-data"' in page and 'name="upload"' in page
    assert "Bootstrap" in page and "Incremental" in page and "90 calls a minute" in page
    assert "employee_id" in page and "Run lock" in page


def test_site_page_hides_secret_looking_source_settings(signed_in, site):
    SyncSource.objects.create(
        site=site, kind=SourceKind.SQL, mapping=MAPPING,
        config={
            "dsn": "postgresql://hr:s3cret@db/hr", "dsn_secret": "HR_DSN",
            "password": "hunter2", "table": "people",
        },
    )  # fmt: skip
    page = signed_in.get(reverse("sync:site_detail", args=[site.slug])).content.decode()
    assert "s3cret" not in page and "hunter2" not in page
    assert "HR_DSN" in page and "people" in page
    assert 'name="upload"' not in page  # uploads are for CSV sources only


def test_starting_a_run_queues_it_and_shows_its_page(
    signed_in, site, csv_source, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = signed_in.post(
            reverse("sync:run_start", args=[site.slug]), {"mode": "bootstrap", "dry_run": "on"}
        )
    run = SyncRun.objects.get()
    assert (run.kind, run.dry_run, run.status, run.started_by.username) == (
        "bootstrap",
        True,
        "queued",
        "operator",
    )
    assert response.status_code == 302 and response["Location"] == reverse("sync:run_detail", args=[run.pk])
    assert len(callbacks) == 1
    assert f"Queued run #{run.pk}" in signed_in.get(response["Location"]).content.decode()


def test_starting_a_run_with_an_uploaded_csv_keeps_the_file(
    signed_in, site, csv_source, settings, tmp_path, django_capture_on_commit_callbacks
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.UPLOAD_DIR = tmp_path / "uploads"
    upload = SimpleUploadedFile("people.csv", b"employee_id,login\nE1,ann\n", content_type="text/csv")
    with django_capture_on_commit_callbacks(execute=False):
        signed_in.post(reverse("sync:run_start", args=[site.slug]), {"mode": "incremental", "upload": upload})
    run = SyncRun.objects.get()
    assert run.source_file.startswith(str(tmp_path / "uploads"))
    with open(run.source_file, "rb") as handle:
        assert handle.read() == b"employee_id,login\nE1,ann\n"


def test_starting_a_run_needs_the_operate_runs_permission(client, viewer, site, csv_source):
    client.force_login(viewer)
    assert (
        client.post(reverse("sync:run_start", args=[site.slug]), {"mode": "incremental"}).status_code == 403
    )
    assert not SyncRun.objects.exists()
    page = client.get(reverse("sync:site_detail", args=[site.slug])).content.decode()
    assert 'name="mode"' not in page and "needs the “operate runs” permission" in page


def test_a_site_without_a_source_cannot_start_a_run(signed_in, site):
    response = signed_in.post(reverse("sync:run_start", args=[site.slug]), {"mode": "incremental"})
    assert response.status_code == 200 and "no source yet" in response.content.decode()
    assert not SyncRun.objects.exists()


# -- the overview links to the rows behind its numbers ---------------------------------------------------


def test_overview_counts_link_to_the_filtered_lists(signed_in, site):
    running = make_run(site, status=RunStatus.RUNNING, progress_total=10, progress_done=4)
    record = SyncRecord.objects.create(site=site, external_id="E1", sync_status=SyncStatus.ERROR)
    SyncRecord.objects.create(site=site, external_id="E2", sync_status=SyncStatus.ERROR)
    DeadLetter.objects.create(
        site=site, record=record, function="core_user_create_users", category="transient"
    )
    page = signed_in.get(reverse("monitoring:overview")).content.decode()
    assert '/runs/?site=north"' in page
    assert f'href="{reverse("sync:run_detail", args=[running.pk])}"' in page
    assert '/records/?site=north&amp;status=error">2</a>' in page
    assert '/deadletters/?site=north">1</a>' in page


# -- in a browser: the progress block refreshes itself, then stops ---------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_progress_bar_follows_the_run_live_and_stops_when_it_ends(page, operator, site):
    from integration_hub.testing import sign_in

    start = timezone.now() - timedelta(minutes=2)
    run = make_run(
        site, kind=RunKind.BOOTSTRAP, status=RunStatus.RUNNING, started_at=start, last_progress_at=start,
        progress_total=2000, progress_done=340, started_by=operator,
    )  # fmt: skip
    sign_in(page, "operator")
    page.goto(reverse("sync:run_detail", args=[run.pk]))
    assert page.get_by_role("heading", name=f"Run #{run.pk}: bootstrap on North Campus").is_visible()
    assert page.locator('progress[value="17"]').is_visible()

    SyncRun.objects.filter(pk=run.pk).update(progress_done=1000, last_progress_at=timezone.now())
    page.wait_for_selector('progress[value="50"]', timeout=8000)  # no reload: htmx swapped the block in

    SyncRun.objects.filter(pk=run.pk).update(
        progress_done=2000, status=RunStatus.SUCCEEDED, finished_at=timezone.now()
    )
    page.wait_for_selector('progress[value="100"]', timeout=8000)
    assert page.locator("#run-progress[hx-trigger]").count() == 0  # finished: polling stopped
    assert page.get_by_role("button", name="Pause").count() == 0
