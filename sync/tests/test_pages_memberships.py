"""Course and cohort pages: a site's courses (and cohorts) with their people counted by where they stand in
one query, a course's people filtered by status, a person's courses and cohorts on the record page, and a
run's membership counters apart from the users'."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from integration_hub.testing import MAPPING
from sync.choices import (
    MembershipKind,
    MembershipState,
    MembershipStatus,
    RunKind,
    RunStatus,
    SourceKind,
)
from sync.models import Membership, MembershipTarget, SyncRecord, SyncRun, SyncSource
from web.models import Preference

pytestmark = pytest.mark.django_db

ACTIVE, SUSPENDED, REMOVED, NONE = (
    MembershipState.ACTIVE,
    MembershipState.SUSPENDED,
    MembershipState.REMOVED,
    MembershipState.NONE,
)
NO_MANUAL = "course BIO101 has no manual enrolment instance in Moodle: add one in its enrolment methods"
MEMBERSHIPS = {
    "cohorts": [{"source": "dept", "idnumber": "dept-{slug}", "name": "Department of {value}"}],
    "courses": [{"source": "courses", "separator": ";", "match": "shortname", "role": "student"}],
}


@pytest.fixture
def signed_in(client, operator):
    client.force_login(operator)
    return client


def with_source(site, memberships: dict | None = MEMBERSHIPS) -> SyncSource:
    mapping = {**MAPPING, "memberships": memberships} if memberships else MAPPING
    return SyncSource.objects.create(
        site=site, kind=SourceKind.CSV, config={"path": "/data/people.csv", "id_column": "employee_id"},
        mapping=mapping,
    )  # fmt: skip


def course(site, key: str, **fields) -> MembershipTarget:
    fields.setdefault("match", "shortname")
    return MembershipTarget.objects.create(site=site, kind=MembershipKind.COURSE, key=key, **fields)


def cohort(site, key: str, **fields) -> MembershipTarget:
    return MembershipTarget.objects.create(site=site, kind=MembershipKind.COHORT, key=key, **fields)


def person(site, n: int, **fields) -> SyncRecord:
    fields.setdefault("display_name", f"Person {n}")
    return SyncRecord.objects.create(site=site, external_id=f"E{n:05d}", **fields)


def member(record, target, **fields) -> Membership:
    if target.kind == MembershipKind.COURSE:
        fields.setdefault("role", "student")
    return Membership.objects.create(site=record.site, record=record, target=target, **fields)


def fill(target, start: int, **fields) -> list[Membership]:
    """People E<start>… in `target`, one per status the page counts apart."""
    site = target.site
    kinds = [
        dict(desired=ACTIVE, synced=ACTIVE, synced_role="student", status=MembershipStatus.OK),
        dict(desired=ACTIVE, synced=ACTIVE, synced_role="student", status=MembershipStatus.OK),
        dict(desired=ACTIVE, synced=ACTIVE, synced_role="student", status=MembershipStatus.OK),
        dict(desired=ACTIVE, status=MembershipStatus.PENDING),
        dict(desired=ACTIVE, status=MembershipStatus.WAITING),
        dict(desired=ACTIVE, status=MembershipStatus.ERROR, error_message="record E: unknown role tutor"),
        dict(desired=REMOVED, synced=SUSPENDED, status=MembershipStatus.OK),
        dict(desired=REMOVED, synced=ACTIVE, status=MembershipStatus.HELD, error_message="held back"),
    ]
    return [member(person(site, start + i), target, **{**kind, **fields}) for i, kind in enumerate(kinds)]


def rows(response) -> dict[str, MembershipTarget]:
    assert response.status_code == 200
    return {target.key: target for target in response.context["page"].object_list}


# -- a site's courses and cohorts --------------------------------------------------------------------------


def test_course_page_counts_the_people_of_each_course_by_where_they_stand(signed_in, site):
    with_source(site)
    maths = course(site, "MATH1", name="Mathematics 1", moodle_id=11)
    fill(maths, 1)
    bio = course(site, "BIO101", name="Biology", problem=NO_MANUAL)
    member(person(site, 100), bio, status=MembershipStatus.ERROR, error_message=NO_MANUAL)
    cohort(site, "dept-hr")  # not a course: not listed

    response = signed_in.get(reverse("sync:target_list", args=[site.slug, "course"]))
    found = rows(response)
    assert set(found) == {"MATH1", "BIO101"}
    math = found["MATH1"]
    assert (math.in_source, math.in_moodle, math.suspended_in_moodle) == (6, 4, 1)
    assert (math.pending, math.errors, math.held) == (2, 1, 1)  # pending counts the waiting one too
    assert (found["BIO101"].in_source, found["BIO101"].errors) == (1, 1)
    page = response.content.decode()
    assert "Mathematics 1" in page and ">11<" in page
    assert "not found yet" in page  # BIO101 has no Moodle id
    assert "Course BIO101 has no manual enrolment instance in Moodle" in page
    detail = reverse("sync:target_detail", args=[site.slug, "course", maths.pk])
    for query in ("status=pending", "status=error", "status=held", "desired=active", "synced=suspended"):
        assert f'href="{detail}?{query}"' in page


def test_moodles_own_count_is_shown_with_the_reconciliation_time_in_the_viewers_zone(
    signed_in, site, operator
):
    Preference.objects.create(user=operator, time_zone="America/Los_Angeles")
    course(site, "MATH1", moodle_count=37, moodle_counted_at=datetime(2026, 3, 2, 4, 6, tzinfo=UTC))
    course(site, "ART1", moodle_count=1, moodle_counted_at=datetime(2026, 3, 2, 4, 6, tzinfo=UTC))
    page = signed_in.get(reverse("sync:target_list", args=[site.slug, "course"])).content.decode()
    assert "37 people in Moodle as read by the reconciliation at 2026-03-01 20:06 PST" in page
    assert "1 person in Moodle as read by the reconciliation" in page


def test_cohort_page_lists_cohorts_without_the_suspended_column(signed_in, site):
    hr = cohort(site, "dept-hr", name="Department of HR", moodle_id=4)
    fill(hr, 1, role="")
    course(site, "MATH1")
    response = signed_in.get(reverse("sync:target_list", args=[site.slug, "cohort"]))
    found = rows(response)
    assert set(found) == {"dept-hr"}
    assert (found["dept-hr"].in_source, found["dept-hr"].in_moodle) == (6, 4)
    page = response.content.decode()
    assert "Department of HR" in page and "Suspended</abbr>" not in page


def test_course_list_filters_to_those_needing_attention_and_by_search(signed_in, site):
    fill(course(site, "MATH1", name="Mathematics"), 1)
    course(site, "ART1", name="Drawing")
    course(site, "BIO101", name="Biology", problem=NO_MANUAL)
    url = reverse("sync:target_list", args=[site.slug, "course"])
    assert set(rows(signed_in.get(url, {"show": "attention"}))) == {"MATH1", "BIO101"}
    assert set(rows(signed_in.get(url, {"show": "pending"}))) == {"MATH1"}
    assert set(rows(signed_in.get(url, {"q": "draw"}))) == {"ART1"}


def test_empty_course_page_says_the_mapping_names_none_and_links_to_the_mapping(client, site, hub_admin):
    with_source(site, memberships=None)
    client.force_login(hub_admin)
    page = client.get(reverse("sync:target_list", args=[site.slug, "course"])).content.decode()
    assert "The mapping of North Campus names no courses yet" in page
    assert f'href="{reverse("sync:mapping_edit", args=[site.slug])}"' in page
    page = client.get(reverse("sync:target_list", args=[site.slug, "cohort"])).content.decode()
    assert "names no cohorts yet" in page


def test_empty_course_page_of_a_mapping_with_courses_says_when_they_appear(signed_in, site):
    with_source(site)
    page = signed_in.get(reverse("sync:target_list", args=[site.slug, "course"])).content.decode()
    assert "No courses yet" in page and "<code>courses</code>" in page
    assert "names no courses" not in page


def test_course_page_query_count_does_not_grow_with_courses(signed_in, site):
    def courses(start: int, n: int) -> None:
        for i in range(start, start + n):
            fill(course(site, f"C{i:03d}", moodle_id=i + 1, problem=NO_MANUAL if i % 2 else ""), i * 10)

    url = reverse("sync:target_list", args=[site.slug, "course"])
    courses(0, 3)
    with CaptureQueriesContext(connection) as few:
        assert len(rows(signed_in.get(url))) == 3
    courses(3, 27)
    with CaptureQueriesContext(connection) as many:
        assert len(rows(signed_in.get(url))) == 30
    assert len(many) == len(few)


def test_site_page_links_to_its_courses_cohorts_and_memberships_not_in_step(signed_in, site):
    with_source(site)
    fill(course(site, "MATH1"), 1)
    course(site, "BIO101", problem=NO_MANUAL)
    page = signed_in.get(reverse("sync:site_detail", args=[site.slug])).content.decode()
    assert f'href="{reverse("sync:target_list", args=[site.slug, "course"])}"' in page
    assert f'href="{reverse("sync:target_list", args=[site.slug, "cohort"])}"' in page
    assert "(1 with a problem)" in page
    memberships = reverse("sync:site_memberships", args=[site.slug])
    assert f'href="{memberships}?status=error"' in page and f'href="{memberships}?status=held"' in page


# -- one course's people -----------------------------------------------------------------------------------


def test_course_detail_lists_its_people_filtered_by_status(signed_in, site):
    maths = course(site, "MATH1", name="Mathematics 1", moodle_id=11)
    made = fill(maths, 1)
    url = reverse("sync:target_detail", args=[site.slug, "course", maths.pk])

    def people(**params) -> set[str]:
        response = signed_in.get(url, params)
        assert response.status_code == 200
        return {m.record.external_id for m in response.context["page"].object_list}

    assert len(people()) == 8
    assert people(status="error") == {"E00006"}
    assert people(status="pending") == {"E00004", "E00005"}  # and the one waiting for the account
    assert people(status="waiting") == {"E00005"}
    assert people(status="held") == {"E00008"}
    assert people(synced="suspended") == {"E00007"}
    page = signed_in.get(url, {"status": "error"}).content.decode()
    assert f'href="{reverse("sync:record_detail", args=[made[5].record_id])}"' in page
    assert "Person 6" in page and "record E: unknown role tutor" in page and "student" in page


def test_course_detail_paginates_and_keeps_the_filter(signed_in, site):
    maths = course(site, "MATH1")
    for n in range(60):
        member(person(site, n), maths, status=MembershipStatus.PENDING)
    url = reverse("sync:target_detail", args=[site.slug, "course", maths.pk])
    response = signed_in.get(url, {"status": "pending"})
    assert len(response.context["page"].object_list) == 50
    page = response.content.decode()
    assert "60 people · page 1 of 2" in page and "?status=pending&amp;page=2" in page


def test_a_target_is_found_only_under_its_kind_and_site(signed_in, site):
    hr = cohort(site, "dept-hr")
    assert signed_in.get(reverse("sync:target_detail", args=[site.slug, "course", hr.pk])).status_code == 404
    assert signed_in.get(reverse("sync:target_detail", args=[site.slug, "cohort", hr.pk])).status_code == 200
    assert signed_in.get(reverse("sync:target_detail", args=["nowhere", "cohort", hr.pk])).status_code == 404


def test_site_memberships_list_shows_the_rows_a_run_left_in_error(signed_in, site):
    run = SyncRun.objects.create(site=site, kind=RunKind.INCREMENTAL, status=RunStatus.PROBLEMS)
    maths, hr = course(site, "MATH1"), cohort(site, "dept-hr")
    fill(maths, 1)
    broken = member(
        person(site, 50), hr, status=MembershipStatus.ERROR, error_message="no such cohort", last_run=run
    )
    response = signed_in.get(
        reverse("sync:site_memberships", args=[site.slug]), {"run": run.pk, "status": "error"}
    )
    assert [m.pk for m in response.context["page"].object_list] == [broken.pk]
    assert "no such cohort" in response.content.decode()
    response = signed_in.get(reverse("sync:site_memberships", args=[site.slug]), {"kind": "cohort"})
    assert [m.pk for m in response.context["page"].object_list] == [broken.pk]


# -- the record page ---------------------------------------------------------------------------------------


def test_record_page_shows_each_course_and_cohort_source_beside_moodle(signed_in, site):
    with_source(site)
    maria = person(site, 42, display_name="María García")
    member(
        maria, course(site, "MATH1", name="Mathematics 1"), desired=ACTIVE, role="editingteacher",
        timestart=int(datetime(2026, 9, 1, tzinfo=UTC).timestamp()),
        timeend=int(datetime(2027, 1, 31, tzinfo=UTC).timestamp()),
        synced=ACTIVE, synced_role="student", status=MembershipStatus.PENDING,
    )  # fmt: skip
    member(
        maria, course(site, "BIO101", problem=NO_MANUAL), desired=ACTIVE,
        status=MembershipStatus.ERROR, error_message=f"record E00042: {NO_MANUAL}",
    )  # fmt: skip
    member(maria, cohort(site, "dept-hr", name="Department of HR"), synced=ACTIVE, status=MembershipStatus.OK)
    page = signed_in.get(reverse("sync:record_detail", args=[maria.pk])).content.decode()
    assert "Courses and cohorts" in page
    assert "Mathematics 1" in page and "Department of HR" in page
    assert "Active as editingteacher" in page and "from 2026-09-01 until 2027-01-31" in page
    assert "Active as student" in page  # what Moodle holds, marked as differing
    assert f"record E00042: {NO_MANUAL}" in page
    assert "Not in it" in page  # BIO101: nothing in Moodle yet
    hr = MembershipTarget.objects.get(key="dept-hr")
    assert f'href="{reverse("sync:target_detail", args=[site.slug, "cohort", hr.pk])}"' in page


def test_record_page_query_count_does_not_grow_with_memberships(signed_in, site):
    with_source(site)
    maria = person(site, 42)

    def join(start: int, n: int) -> None:
        for i in range(start, start + n):
            member(maria, course(site, f"C{i:03d}"), status=MembershipStatus.OK, synced=ACTIVE)

    join(0, 3)
    url = reverse("sync:record_detail", args=[maria.pk])
    with CaptureQueriesContext(connection) as few:
        assert signed_in.get(url).status_code == 200
    join(3, 27)
    with CaptureQueriesContext(connection) as many:
        assert signed_in.get(url).status_code == 200
    assert len(many) == len(few)


def test_record_page_has_no_course_section_when_the_mapping_names_none(signed_in, site):
    with_source(site, memberships=None)
    page = signed_in.get(reverse("sync:record_detail", args=[person(site, 1).pk])).content.decode()
    assert "Courses and cohorts" not in page


def test_record_page_says_when_the_source_puts_someone_in_no_course(signed_in, site):
    with_source(site)
    page = signed_in.get(reverse("sync:record_detail", args=[person(site, 1).pk])).content.decode()
    assert "The source puts this person in no course or cohort" in page


# -- runs --------------------------------------------------------------------------------------------------


def test_run_page_shows_membership_counters_in_words_apart_from_the_users(signed_in, site):
    run = SyncRun.objects.create(
        site=site, kind=RunKind.INCREMENTAL, status=RunStatus.PROBLEMS, created=2,
        enrolled=1, enrolments_suspended=3, cohort_added=2, membership_errors=1, memberships_held=4,
    )  # fmt: skip
    page = signed_in.get(reverse("sync:run_detail", args=[run.pk])).content.decode()
    assert ">Memberships</h3>" in page
    assert "1 enrolment made, changed or re-activated" in page
    assert "3 enrolments suspended" in page and "2 cohort memberships added" in page
    assert "0 cohort memberships removed" in page
    assert "1 membership in error" in page and "4 membership changes held back by the guard" in page
    errors = reverse("sync:site_memberships", args=[site.slug])
    assert f'href="{errors}?run={run.pk}&amp;status=error"' in page
    assert "kind=membership_left" in page
    runs = signed_in.get(reverse("sync:run_list")).content.decode()
    assert "1 membership in error" in runs and "3 enrolments suspended" in runs


def test_run_page_leaves_the_memberships_out_when_the_site_has_none(signed_in, site):
    with_source(site, memberships=None)
    run = SyncRun.objects.create(site=site, kind=RunKind.INCREMENTAL, status=RunStatus.SUCCEEDED, created=2)
    page = signed_in.get(reverse("sync:run_detail", args=[run.pk])).content.decode()
    assert ">Memberships</h3>" not in page


def test_run_page_of_a_site_with_memberships_shows_them_even_when_none_moved(signed_in, site):
    with_source(site)
    run = SyncRun.objects.create(site=site, kind=RunKind.INCREMENTAL, status=RunStatus.SUCCEEDED)
    page = signed_in.get(reverse("sync:run_detail", args=[run.pk])).content.decode()
    assert ">Memberships</h3>" in page and "0 enrolments made, changed or re-activated" in page


def test_dry_run_page_shows_the_memberships_a_real_run_would_change(signed_in, site):
    plan = {
        "seen": 40, "would_create": 40, "would_enrol": 12, "would_add_to_cohorts": 3,
        "would_suspend_enrolments": 0, "would_remove_from_cohorts": 0, "membership_problems": 1,
        "examples": {"membership_enrol": ["E00001: enrol in MATH1 as student"]},
        "target_problems": [f"Course BIO101: {NO_MANUAL}"],
    }  # fmt: skip
    run = SyncRun.objects.create(
        site=site, kind=RunKind.BOOTSTRAP, status=RunStatus.SUCCEEDED, dry_run=True, plan=plan
    )
    page = signed_in.get(reverse("sync:run_detail", args=[run.pk])).content.decode()
    assert "Would enrol (or change the role or dates)" in page and ">12<" in page
    assert "E00001: enrol in MATH1 as student" in page
    assert f"Course BIO101: {NO_MANUAL}" in page


# -- access ------------------------------------------------------------------------------------------------


def test_course_and_cohort_pages_need_a_login(client, site):
    target = course(site, "MATH1")
    for url in (
        reverse("sync:target_list", args=[site.slug, "course"]),
        reverse("sync:target_list", args=[site.slug, "cohort"]),
        reverse("sync:target_detail", args=[site.slug, "course", target.pk]),
        reverse("sync:site_memberships", args=[site.slug]),
    ):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url
