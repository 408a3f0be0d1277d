"""Dead letters page: filters in the URL, the summary by errorcode and function, retry, retry-all-filtered
with its exact count, and discard with a required reason."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from sync.choices import DeadLetterStatus, RunKind, RunStatus
from sync.models import DeadLetter, MoodleSite, RunEvent, SyncRecord, SyncRun
from web.models import Preference

UTC = ZoneInfo("UTC")
NIGHT = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)


@pytest.fixture
def operators_may_retry(db):
    """The Operators group holds retry_deadletter; make sure of it for the positive path."""
    group = Group.objects.get(name="Operators")
    group.permissions.add(Permission.objects.get(content_type__app_label="sync", codename="retry_deadletter"))
    return group


@pytest.fixture
def signed_in(client, operator, operators_may_retry):
    client.force_login(operator)
    return client


@pytest.fixture
def south(db) -> MoodleSite:
    return MoodleSite.objects.create(slug="south", name="South Campus", base_url="https://south.example.edu")


_serial = iter(range(1, 1_000_000))


def letter(
    site, *, minute=5, errorcode="", http_status=503, function="core_user_create_users", **fields
) -> DeadLetter:
    n = next(_serial)
    record = SyncRecord.objects.create(site=site, external_id=f"E{n:05d}", display_name=f"Person {n}")
    at = NIGHT + timedelta(minutes=minute)
    return DeadLetter.objects.create(
        site=site, record=record, function=function, category="transient", errorcode=errorcode,
        http_status=http_status, message="HTTP 503 Service Unavailable", first_failed_at=at,
        last_failed_at=at, **fields,
    )  # fmt: skip


def listed(client, **params) -> set[int]:
    response = client.get(reverse("sync:deadletter_list"), params)
    assert response.status_code == 200
    return {row.pk for row in response.context["page"].object_list}


def test_the_list_shows_open_letters_by_default_and_filters_from_the_querystring(signed_in, site, south):
    outage = letter(site, minute=10)
    late = letter(site, minute=45)
    update = letter(
        site, minute=12, function="core_user_update_users", http_status=None, errorcode="dmlwriteexception"
    )
    other_site = letter(south, minute=10)
    done = letter(site, minute=11, status=DeadLetterStatus.RESOLVED)

    assert listed(signed_in) == {outage.pk, late.pk, update.pk, other_site.pk}
    assert listed(signed_in, status="all") == {outage.pk, late.pk, update.pk, other_site.pk, done.pk}
    assert listed(signed_in, site="south") == {other_site.pk}
    assert listed(signed_in, http_status="503", site="north") == {outage.pk, late.pk}
    assert listed(signed_in, http_status="-") == {update.pk}
    assert listed(signed_in, errorcode="dmlwriteexception") == {update.pk}
    assert listed(signed_in, errorcode="-", function="core_user_create_users", site="north") == {
        outage.pk,
        late.pk,
    }
    window = {"since": "2026-11-21T02:00", "until": "2026-11-21T02:20"}
    assert listed(signed_in, site="north", **window) == {outage.pk, update.pk}


def test_times_are_read_in_the_viewers_time_zone(signed_in, operator, site):
    Preference.objects.create(user=operator, time_zone="Europe/Madrid")  # UTC+1 in November
    site.time_zone = "America/Los_Angeles"  # the site's zone is for its schedules, not for what people type
    site.save()
    at_0210_utc = letter(site, minute=10)
    assert listed(signed_in, site="north", since="2026-11-21T03:00", until="2026-11-21T03:20") == {
        at_0210_utc.pk
    }
    assert listed(signed_in, site="north", since="2026-11-21T02:00", until="2026-11-21T02:20") == set()


def test_the_summary_groups_by_errorcode_function_and_status_and_links_to_each_group(signed_in, site):
    for _ in range(3):
        letter(site, minute=10)
    letter(
        site, minute=10, function="core_user_update_users", http_status=None, errorcode="dmlwriteexception"
    )
    response = signed_in.get(reverse("sync:deadletter_list"), {"site": "north"})
    groups = {
        (g["errorcode"], g["function"], g["http_status"]): g["letters"] for g in response.context["groups"]
    }
    assert groups == {
        ("", "core_user_create_users", 503): 3,
        ("dmlwriteexception", "core_user_update_users", None): 1,
    }
    first = response.context["groups"][0]
    assert first["query"] == "site=north&errorcode=-&function=core_user_create_users&http_status=503"
    assert len(listed(signed_in, **dict(pair.split("=") for pair in first["query"].split("&")))) == 3


def test_empty_list_says_what_healthy_empty_means(signed_in, site):
    page = signed_in.get(reverse("sync:deadletter_list")).content.decode()
    assert "No open dead letters" in page and "Healthy" in page


def test_retry_one_queues_a_retry_run(signed_in, site, operator, django_capture_on_commit_callbacks):
    row = letter(site)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = signed_in.post(
            reverse("sync:deadletter_retry", args=[row.pk]), {"next": "/deadletters/?site=north"}
        )
    assert response.status_code == 302 and response["Location"] == "/deadletters/?site=north"
    row.refresh_from_db()
    run = SyncRun.objects.get(kind=RunKind.RETRY)
    assert row.status == DeadLetterStatus.RETRYING and row.retry_run == run and run.started_by == operator
    assert len(callbacks) == 1
    assert (
        f"Queued retry run #{run.pk} for 1 dead letter"
        in signed_in.get(response["Location"]).content.decode()
    )


def test_retry_never_redirects_off_site(signed_in, site, django_capture_on_commit_callbacks):
    row = letter(site)
    with django_capture_on_commit_callbacks(execute=False):
        response = signed_in.post(
            reverse("sync:deadletter_retry", args=[row.pk]), {"next": "https://evil.example/"}
        )
    assert response["Location"] == reverse("sync:deadletter_list")


def test_retry_all_filtered_confirms_with_the_exact_count_then_queues_exactly_those(
    signed_in, site, south, django_capture_on_commit_callbacks
):
    chosen = [letter(site, minute=m) for m in (1, 5, 19)]
    too_late = letter(site, minute=25)
    other_code = letter(site, minute=5, http_status=502)
    other_site = letter(south, minute=5)
    already_discarded = letter(site, minute=5, status=DeadLetterStatus.DISCARDED)
    flt = {"site": "north", "http_status": "503", "since": "2026-11-21T02:00", "until": "2026-11-21T02:20"}

    list_page = signed_in.get(reverse("sync:deadletter_list"), flt).content.decode()
    assert "Retry all 3 filtered" in list_page

    confirm = signed_in.get(reverse("sync:deadletter_retry_filtered"), flt)
    page = confirm.content.decode()
    assert confirm.context["count"] == 3
    assert "Retry 3 dead letters?" in page
    words = "open dead letters on North Campus with HTTP 503 last failing between 2026-11-21 02:00 and "
    assert words + "2026-11-21 02:20 (UTC)" in page
    assert not DeadLetter.objects.filter(status=DeadLetterStatus.RETRYING).exists()  # the GET changed nothing

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = signed_in.post(reverse("sync:deadletter_retry_filtered"), {**flt, "count": "3"})
    assert response.status_code == 302
    run = SyncRun.objects.get(kind=RunKind.RETRY)
    assert run.site == site and len(callbacks) == 1
    retried = set(DeadLetter.objects.filter(status=DeadLetterStatus.RETRYING).values_list("pk", flat=True))
    assert retried == {row.pk for row in chosen}
    for untouched in (too_late, other_code, other_site):
        untouched.refresh_from_db()
        assert untouched.status == DeadLetterStatus.OPEN
    already_discarded.refresh_from_db()
    assert already_discarded.status == DeadLetterStatus.DISCARDED
    assert RunEvent.objects.filter(
        run=run, message__startswith="Retry of 3 dead letters queued by operator"
    ).exists()
    assert "status=all" in response["Location"]
    assert (
        f"Queued retry run #{run.pk} for 3 dead letters"
        in signed_in.get(response["Location"]).content.decode()
    )


def test_retry_all_queues_one_run_per_site(signed_in, site, south, django_capture_on_commit_callbacks):
    letter(site)
    letter(south)
    letter(south)
    with django_capture_on_commit_callbacks(execute=False):
        signed_in.post(reverse("sync:deadletter_retry_filtered"), {"count": "3"})
    runs = {run.site.slug: run for run in SyncRun.objects.filter(kind=RunKind.RETRY)}
    assert set(runs) == {"north", "south"}
    assert DeadLetter.objects.filter(retry_run=runs["south"]).count() == 2


def test_retry_all_asks_again_when_the_count_changed_since_the_confirmation(signed_in, site):
    letter(site)
    letter(site)
    response = signed_in.post(reverse("sync:deadletter_retry_filtered"), {"site": "north", "count": "1"})
    assert response.status_code == 200 and response.context["count"] == 2
    assert "The number changed" in response.content.decode()
    assert not SyncRun.objects.exists()
    assert DeadLetter.objects.filter(status=DeadLetterStatus.OPEN).count() == 2


def test_discard_asks_for_a_reason_and_keeps_it(signed_in, site, operator):
    row = letter(site)
    form = signed_in.get(reverse("sync:deadletter_discard", args=[row.pk]))
    assert form.status_code == 200 and 'name="reason"' in form.content.decode()

    refused = signed_in.post(reverse("sync:deadletter_discard", args=[row.pk]), {"reason": "   "})
    assert refused.status_code == 200 and refused.context["form"].errors
    row.refresh_from_db()
    assert row.status == DeadLetterStatus.OPEN

    response = signed_in.post(
        reverse("sync:deadletter_discard", args=[row.pk]),
        {"reason": "left before the outage", "next": "/deadletters/"},
    )
    assert response.status_code == 302 and response["Location"] == "/deadletters/"
    row.refresh_from_db()
    assert row.status == DeadLetterStatus.DISCARDED
    assert (row.discard_reason, row.discarded_by) == ("left before the outage", operator)
    assert row.closed_at is not None


def test_dead_letter_actions_need_the_retry_permission(client, site):
    user = User.objects.create_user("viewer", password="x")
    client.force_login(user)
    row = letter(site)
    assert client.post(reverse("sync:deadletter_retry", args=[row.pk])).status_code == 403
    assert client.get(reverse("sync:deadletter_retry_filtered")).status_code == 403
    assert client.post(reverse("sync:deadletter_retry_filtered"), {"count": "1"}).status_code == 403
    assert client.get(reverse("sync:deadletter_discard", args=[row.pk])).status_code == 403
    assert client.post(reverse("sync:deadletter_discard", args=[row.pk]), {"reason": "x"}).status_code == 403
    row.refresh_from_db()
    assert row.status == DeadLetterStatus.OPEN and not SyncRun.objects.exists()
    page = client.get(reverse("sync:deadletter_list")).content.decode()
    assert reverse("sync:deadletter_retry", args=[row.pk]) not in page
    assert "the “retry dead letters” permission" in page


def test_each_retry_shows_its_outcome_in_place(signed_in, site):
    run = SyncRun.objects.create(
        site=site, kind=RunKind.RETRY, status=RunStatus.SUCCEEDED, finished_at=timezone.now()
    )
    row = letter(site, status=DeadLetterStatus.RESOLVED, retry_run=run)
    page = signed_in.get(reverse("sync:deadletter_list"), {"status": "all"}).content.decode()
    assert f"retry run #{run.pk}" in page and "Resolved by a retry" in page
    assert reverse("sync:deadletter_retry", args=[row.pk]) not in page  # nothing left to retry


def test_dead_letter_list_query_count_does_not_grow_with_rows(signed_in, site):
    for _ in range(5):
        letter(site, minute=1)
    with CaptureQueriesContext(connection) as few:
        assert signed_in.get(reverse("sync:deadletter_list"), {"site": "north"}).status_code == 200
    for n in range(45):
        letter(site, minute=n % 20, http_status=503 if n % 2 else 502)
    with CaptureQueriesContext(connection) as many:
        assert signed_in.get(reverse("sync:deadletter_list"), {"site": "north"}).status_code == 200
    assert len(many) == len(few)
