"""Cohort and course membership sync against the simulated Moodle: every enrolment made once, a rerun
sends nothing, a move sends only the move, leavers are suspended (never unenrolled), removals past the
guard wait for an admin, and a course without manual enrolment stops the run once, naming it."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest

from integration_hub.testing import MAPPING, make_site, person, simulated_moodle
from monitoring.models import Alert
from sync.choices import (
    DiscrepancyKind,
    DiscrepancyStatus,
    MembershipStatus,
    RemovedPolicy,
    ResolutionStatus,
    RunKind,
    RunStatus,
)
from sync.models import Discrepancy, Membership, Resolution, SyncRun
from sync.resolutions import GuardRefused, approve, propose
from sync.run import engine

pytestmark = pytest.mark.django_db

COURSES = [f"C{n:02d}" for n in range(30)]
FIELDS = ["employee_id", "login", "first", "last", "mail", "dept", "city", "lang", "courses"]
MEMBERSHIPS = {
    "cohorts": [{"source": "dept", "idnumber": "dept-{slug}", "name": "Department of {value}"}],
    "courses": [{"source": "courses", "separator": ";", "match": "shortname", "role": "student"}],
}


class Recording(httpx.BaseTransport):
    """The simulator's transport, keeping the form of every call to the functions watched."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.sent: list[tuple[str, dict[str, str]]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        form = dict(parse_qsl(request.content.decode()))
        function = form.get("wsfunction") or dict(parse_qsl(request.url.query.decode())).get("wsfunction", "")
        self.sent.append((function, form))
        return self.inner.handle_request(request)

    def enrolments(self) -> list[dict[str, str]]:
        """Each enrolment sent with enrol_manual_enrol_users, as its fields."""
        found = []
        for function, form in self.sent:
            if function != "enrol_manual_enrol_users":
                continue
            items: dict[str, dict[str, str]] = {}
            for key, value in form.items():
                if key.startswith("enrolments["):
                    index, name = key[len("enrolments[") :].split("][")
                    items.setdefault(index, {})[name.rstrip("]")] = value
            found.extend(items.values())
        return found

    def count(self, function: str) -> int:
        return sum(1 for name, _ in self.sent if name == function)


def courses_of(n: int) -> list[str]:
    return [COURSES[(n + k * 7) % 30] for k in range(5)]


def write_people(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def row(n: int, courses: list[str] | None = None, **overrides: str) -> dict[str, str]:
    return {**person(n, **overrides), "courses": ";".join(courses_of(n) if courses is None else courses)}


@pytest.fixture
def moodle():
    sim = simulated_moodle(seed=7)
    for shortname in COURSES:
        sim.control("POST", "courses", {"shortname": shortname, "fullname": f"Course {shortname}"})
    return sim


def make_membership_site(tmp_path, rows, *, on_leave="suspend", **fields):
    path = write_people(tmp_path / "people.csv", rows)
    site = make_site("uni", "http://moodle.test", path, removed_policy=RemovedPolicy.SUSPEND, **fields)
    site.source.mapping = {**MAPPING, "memberships": {**MEMBERSHIPS, "on_leave": on_leave}}
    site.source.save()
    return site, path


def run_sync(site, transport, kind=RunKind.INCREMENTAL, **options) -> SyncRun:
    run = SyncRun.objects.queue(site, kind, **options)
    return engine.execute(run.pk, transport=transport, sleep=lambda _s: None)


def enrolled(sim, shortname: str) -> dict[int, dict]:
    """The simulator's enrolments in a course, by Moodle user id."""
    state = sim.app.state
    course = next(c for c in state.courses.values() if c["shortname"] == shortname)
    return {e["userid"]: e for e in state.enrolments if e["courseid"] == course["id"]}


def moodle_ids(site) -> dict[str, int]:
    return dict(site.records.values_list("external_id", "moodle_id"))


@pytest.fixture
def small(tmp_path, clean_redis, moodle):
    rows = [row(n) for n in range(1, 41)]
    site, path = make_membership_site(tmp_path, rows)
    transport = Recording(moodle.transport)
    run = run_sync(site, transport, RunKind.BOOTSTRAP)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    return site, path, rows, moodle, transport


def test_a_bootstrap_of_2000_people_with_5_enrolments_each_enrols_everyone_exactly_once(
    tmp_path, clean_redis, moodle
):
    rows = [row(n) for n in range(1, 2001)]
    site, _ = make_membership_site(tmp_path, rows, batch_size=1000)
    transport = Recording(moodle.transport)
    run = run_sync(site, transport, RunKind.BOOTSTRAP)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    sent = transport.enrolments()
    assert len(sent) == 10_000
    assert len({(e["userid"], e["courseid"]) for e in sent}) == 10_000  # none twice
    assert run.enrolled == 10_000 and run.membership_errors == 0
    assert run.cohort_added == 2000
    ids = moodle_ids(site)
    for n in (1, 777, 2000):
        for shortname in courses_of(n):
            enrolment = enrolled(moodle, shortname)[ids[f"E{n:05d}"]]
            assert enrolment["roles"] == [5] and enrolment["status"] == 0
    assert sum(len(enrolled(moodle, c)) for c in COURSES) == 10_000
    # Calls per 1,000 enrolments: 30 course look-ups, the enrol calls of up to 500 each, the cohorts.
    membership_calls = sum(
        transport.count(f)
        for f in ("enrol_manual_enrol_users", "core_course_get_courses_by_field", "core_cohort_get_cohorts",
                  "core_cohort_create_cohorts", "core_cohort_add_cohort_members")
    )  # fmt: skip
    assert membership_calls <= 10 * 10
    assert transport.count("core_course_get_courses_by_field") == 30

    transport.sent.clear()
    again = run_sync(site, transport)
    assert again.status == RunStatus.SUCCEEDED, again.abort_reason
    assert transport.enrolments() == []
    assert transport.count("core_cohort_add_cohort_members") == 0
    assert transport.count("core_course_get_courses_by_field") == 0
    assert (again.enrolled, again.enrolments_suspended, again.cohort_added) == (0, 0, 0)


def test_moving_three_people_between_courses_sends_exactly_those_changes(small, tmp_path):
    site, path, rows, moodle, transport = small
    ids = moodle_ids(site)
    moves = {1: ("C01", "C02"), 2: ("C02", "C03"), 3: ("C03", "C04")}
    for n, (old, new) in moves.items():
        courses = courses_of(n)
        assert old in courses and new not in courses
        rows[n - 1] = row(n, [new if c == old else c for c in courses])
    write_people(path, rows)
    transport.sent.clear()
    run = run_sync(site, transport)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    course_id = {c["shortname"]: c["id"] for c in moodle.app.state.courses.values()}
    sent = {(int(e["userid"]), int(e["courseid"]), e.get("suspend", "0")) for e in transport.enrolments()}
    expected = set()
    for n, (old, new) in moves.items():
        expected.add((ids[f"E{n:05d}"], course_id[new], "0"))
        expected.add((ids[f"E{n:05d}"], course_id[old], "1"))
    assert sent == expected
    assert transport.count("enrol_manual_enrol_users") == 1
    assert (run.enrolled, run.enrolments_suspended, run.updated, run.created) == (3, 3, 0, 0)
    for n, (old, new) in moves.items():
        assert enrolled(moodle, new)[ids[f"E{n:05d}"]]["status"] == 0
        assert enrolled(moodle, old)[ids[f"E{n:05d}"]]["status"] == 1  # suspended, still enrolled


def test_leavers_enrolments_are_suspended_never_unenrolled(small):
    site, path, rows, moodle, transport = small
    ids = moodle_ids(site)
    write_people(path, rows[1:])  # person 1 left the source
    transport.sent.clear()
    run = run_sync(site, transport)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    assert run.suspended == 1 and run.enrolments_suspended == 5
    assert transport.count("enrol_manual_unenrol_users") == 0
    for shortname in courses_of(1):
        assert enrolled(moodle, shortname)[ids["E00001"]]["status"] == 1


def test_an_unenrolment_waits_for_an_admin_and_one_past_the_guard_is_refused(small, hub_admin):
    site, path, rows, moodle, transport = small
    site.source.mapping = {**site.source.mapping, "memberships": {**MEMBERSHIPS, "on_leave": "unenrol"}}
    site.source.save()
    site.max_removal_percent = 50
    site.save()
    ids = moodle_ids(site)
    in_c00 = [n for n in range(1, 41) if "C00" in courses_of(n)]
    leaving = in_c00[:3]
    for n in leaving:
        rows[n - 1] = row(n, [c for c in courses_of(n) if c != "C00"])
    write_people(path, rows)
    run = run_sync(site, transport)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    assert run.enrolments_suspended == 3
    assert transport.count("enrol_manual_unenrol_users") == 0
    proposals = Discrepancy.objects.filter(site=site, kind=DiscrepancyKind.MEMBERSHIP_LEFT)
    assert proposals.count() == 3 and {d.status for d in proposals} == {DiscrepancyStatus.OPEN}
    for n in leaving:
        assert enrolled(moodle, "C00")[ids[f"E{n:05d}"]]["status"] == 1  # still there, suspended

    # The nightly reconciliation supersedes yesterday's proposals and makes them again.
    assert reconcile(site, transport).status in (RunStatus.SUCCEEDED, RunStatus.PROBLEMS)
    proposals = Discrepancy.objects.filter(
        site=site, kind=DiscrepancyKind.MEMBERSHIP_LEFT, status=DiscrepancyStatus.OPEN
    )
    assert sorted(d.external_id for d in proposals) == sorted(f"E{n:05d}" for n in leaving)
    assert {d.proposed_action for d in proposals} == {"unenrol"}
    # The guard counts per course: taking 3 of C00's people out is past a limit of 1 (10 %).
    site.max_removal_percent = 10
    site.save()
    resolutions = [propose(action=d.proposed_action, discrepancy=d) for d in proposals]
    with pytest.raises(GuardRefused, match=r"unenrols 3 of the \d+ people in course C00"):
        approve(resolutions, hub_admin)
    site.max_removal_percent = 50
    site.save()
    resolutions = list(Resolution.objects.filter(pk__in=[r.pk for r in resolutions]))
    resolution_run = approve(resolutions, hub_admin, enqueue=False)
    engine.execute(resolution_run.pk, transport=transport, sleep=lambda _s: None)
    applied = Resolution.objects.filter(pk__in=[r.pk for r in resolutions])
    assert {r.status for r in applied} == {ResolutionStatus.APPLIED}, [r.outcome for r in applied]
    assert transport.count("enrol_manual_unenrol_users") == 1
    for n in leaving:
        assert ids[f"E{n:05d}"] not in enrolled(moodle, "C00")


def test_removals_past_the_guard_in_one_course_are_held_back_for_an_admin(small):
    site, path, rows, moodle, transport = small
    in_c05 = [n for n in range(1, 41) if "C05" in courses_of(n)]
    for n in in_c05:
        rows[n - 1] = row(n, [c for c in courses_of(n) if c != "C05"])
    write_people(path, rows)
    run = run_sync(site, transport)
    assert run.status == RunStatus.PROBLEMS
    assert run.memberships_held == len(in_c05) and run.enrolments_suspended == 0
    held = Membership.objects.filter(site=site, status=MembershipStatus.HELD)
    assert {m.target.key for m in held} == {"C05"}
    assert all(e["status"] == 0 for e in enrolled(moodle, "C05").values())
    assert Discrepancy.objects.filter(
        kind=DiscrepancyKind.MEMBERSHIP_LEFT, status=DiscrepancyStatus.BLOCKED
    ).count() == len(in_c05)
    assert Alert.objects.filter(site=site, kind="blast_radius").exists()


def test_a_course_without_manual_enrolment_stops_the_run_once_naming_it(tmp_path, clean_redis, moodle):
    moodle.control(
        "POST", "courses", {"shortname": "NOMAN", "fullname": "Self enrolment only", "manual": False}
    )
    rows = [row(n, ["C01", "NOMAN"]) for n in range(1, 11)]
    site, _ = make_membership_site(tmp_path, rows)
    transport = Recording(moodle.transport)
    run = run_sync(site, transport, RunKind.BOOTSTRAP)
    assert run.status == RunStatus.ABORTED
    assert "NOMAN" in run.abort_reason and "manual enrolment" in run.abort_reason
    assert transport.count("enrol_manual_enrol_users") == 0  # nothing sent before the stop
    assert Alert.objects.filter(site=site, kind="config").count() == 1
    assert run.created == 10  # the people themselves were made


def test_a_dry_run_names_an_unknown_course_and_one_without_manual_enrolment(tmp_path, clean_redis, moodle):
    moodle.control(
        "POST", "courses", {"shortname": "NOMAN", "fullname": "Self enrolment only", "manual": False}
    )
    rows = [row(n, ["C01", "NOMAN", "GHOST"]) for n in range(1, 6)]
    site, _ = make_membership_site(tmp_path, rows)
    transport = Recording(moodle.transport)
    run = run_sync(site, transport, RunKind.BOOTSTRAP, dry_run=True)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    problems = " | ".join(run.plan["target_problems"])
    assert "GHOST" in problems and "no course" in problems
    assert "NOMAN" in problems and "manual enrolment" in problems
    assert run.plan["would_enrol"] == 15
    # 6 calls for the people; 3 course look-ups, the cohort listing and creation, one enrol call, one
    # cohort-members call for their memberships.
    assert run.plan["estimate"]["calls"] == 6 + 7
    assert transport.count("enrol_manual_enrol_users") == 0


def reconcile(site, transport) -> SyncRun:
    return run_sync(site, transport, RunKind.RECONCILE)


def test_reading_a_course_back_pages_with_limitnumber_and_finds_everyone(
    tmp_path, clean_redis, moodle, monkeypatch
):
    from sync.models import MembershipTarget
    from sync.run import membership_reconcile

    monkeypatch.setattr(membership_reconcile, "PAGE", 100)
    rows = [row(n, ["C00"]) for n in range(1, 251)]
    site, _ = make_membership_site(tmp_path, rows)
    transport = Recording(moodle.transport)
    assert run_sync(site, transport, RunKind.BOOTSTRAP).status == RunStatus.SUCCEEDED
    transport.sent.clear()
    run = reconcile(site, transport)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    reads = [form for function, form in transport.sent if function == "core_enrol_get_enrolled_users"]
    pages = []
    for form in reads:
        options = {
            form[f"options[{i}][name]"]: form[f"options[{i}][value]"]
            for i in range(8)
            if f"options[{i}][name]" in form
        }
        assert "limitnum" not in options  # Moodle ignores it and answers everyone
        pages.append((options.get("onlyactive", "0"), int(options["limitfrom"]), int(options["limitnumber"])))
    # 250 people: three pages of 100 for everyone, three for the active ones.
    assert sorted(pages) == sorted((active, start, 100) for active in ("0", "1") for start in (0, 100, 200))
    target = MembershipTarget.objects.get(site=site, key="C00")
    assert target.moodle_count == 250
    assert not Discrepancy.objects.filter(site=site).exists()


def test_reconciliation_finds_membership_drift_and_mends_what_is_safe(small, hub_admin):
    site, _path, _rows, moodle, transport = small
    ids = moodle_ids(site)
    state = moodle.app.state
    course_id = {c["shortname"]: c["id"] for c in state.courses.values()}
    # Made by hand in Moodle: person 1 unenrolled from C01, person 2 suspended in C02, person 3 put in C05.
    state.enrolments[:] = [
        e
        for e in state.enrolments
        if not (e["userid"] == ids["E00001"] and e["courseid"] == course_id["C01"])
    ]
    next(e for e in state.enrolments if e["userid"] == ids["E00002"] and e["courseid"] == course_id["C02"])[
        "status"
    ] = 1
    assert "C05" not in courses_of(3)
    instance = next(i for i in state.enrol_instances.values() if i["courseid"] == course_id["C05"])
    state.enrolments.append(
        {"instanceid": instance["id"], "courseid": course_id["C05"], "userid": ids["E00003"], "roles": [5],
         "status": 0, "timestart": 0, "timeend": 0, "timecreated": 0}
    )  # fmt: skip
    transport.sent.clear()
    run = reconcile(site, transport)
    assert run.status in (RunStatus.SUCCEEDED, RunStatus.PROBLEMS), run.abort_reason
    found = {
        (d.kind, d.external_id, d.membership.target.key): d for d in Discrepancy.objects.filter(site=site)
    }
    missing = found[(DiscrepancyKind.MEMBERSHIP_MISSING, "E00001", "C01")]
    suspended = found[(DiscrepancyKind.MEMBERSHIP_SUSPENDED, "E00002", "C02")]
    extra = found[(DiscrepancyKind.MEMBERSHIP_EXTRA, "E00003", "C05")]
    assert len(found) == 3
    # Safe ones were applied in the same run; the removal waits for an admin.
    assert (missing.status, suspended.status) == (DiscrepancyStatus.APPLIED, DiscrepancyStatus.APPLIED)
    assert enrolled(moodle, "C01")[ids["E00001"]]["status"] == 0
    assert enrolled(moodle, "C02")[ids["E00002"]]["status"] == 0
    assert extra.status == DiscrepancyStatus.OPEN and extra.proposed_action == "suspend_enrol"
    resolution = propose(action=extra.proposed_action, discrepancy=extra)
    suspension = {"roleid": 5, "userid": ids["E00003"], "courseid": course_id["C05"], "suspend": 1}
    assert resolution.calls == [
        {"function": "enrol_manual_enrol_users", "params": {"enrolments": [suspension]}}
    ]
    applying = approve([resolution], hub_admin, enqueue=False)
    engine.execute(applying.pk, transport=transport, sleep=lambda _s: None)
    assert enrolled(moodle, "C05")[ids["E00003"]]["status"] == 1


def test_the_mapping_page_keeps_and_edits_the_memberships_and_the_policy_page_the_role_table(
    tmp_path, clean_redis, moodle, client, hub_admin
):
    site, _ = make_membership_site(tmp_path, [row(n) for n in range(1, 4)])
    client.force_login(hub_admin)
    page = client.get(f"/sites/{site.slug}/mapping/")
    assert b"dept-{slug}" in page.content
    form = page.context["form"]
    data = {k: v for k, v in form.initial.items() if v is not None and v is not False}
    for name, field in form.fields.items():
        if name not in data and field.initial not in (None, False, []):
            data[name] = field.initial
    tutors = {"courses": [{"source": "courses", "separator": ";", "role": "tutor"}]}
    data["memberships"] = json.dumps(tutors)
    data["save"] = "1"
    answer = client.post(f"/sites/{site.slug}/mapping/", data)
    assert answer.status_code == 302, answer.content.decode()[:2000]
    site.source.refresh_from_db()
    assert site.source.mapping["memberships"] == tutors
    data["memberships"] = '{"courses": [{"source": "courses", "match": "fullname"}]}'
    refused = client.post(f"/sites/{site.slug}/mapping/", data)
    assert refused.status_code == 200 and b"match" in refused.content

    policy = client.get(f"/sites/{site.slug}/policy/")
    assert b"student=5; teacher=4; editingteacher=3" in policy.content
    values = {
        "auto_apply_kinds": site.auto_apply_kinds, "rename_rule": site.rename_rule,
        "max_removal_percent": "2", "max_removal_count": "500", "role_table": "student=5; tutor=9",
    }  # fmt: skip
    assert client.post(f"/sites/{site.slug}/policy/", values).status_code == 302
    site.refresh_from_db()
    assert site.role_ids == {"student": 5, "tutor": 9}
    values["role_table"] = ""
    assert client.post(f"/sites/{site.slug}/policy/", values).status_code == 302
    site.refresh_from_db()
    assert site.role_ids == {"student": 5, "teacher": 4, "editingteacher": 3}
    values["role_table"] = "student=five"
    assert "is not shortname=id" in client.post(f"/sites/{site.slug}/policy/", values).content.decode()


def test_a_role_the_token_may_not_assign_stops_the_run_once_and_the_next_dry_run_names_it(
    tmp_path, clean_redis, moodle
):
    from integration_hub.testing import HUB_TOKEN

    moodle.control("POST", "assignable-roles", {"token": HUB_TOKEN, "roleids": [3, 4]})
    site, _ = make_membership_site(tmp_path, [row(n, ["C01"]) for n in range(1, 6)])
    transport = Recording(moodle.transport)
    run = run_sync(site, transport, RunKind.BOOTSTRAP)
    assert run.status == RunStatus.ABORTED
    assert "may not assign the role student (id 5) in course C01" in run.abort_reason
    assert transport.count("enrol_manual_enrol_users") == 1  # one refusal, not one per person
    assert Alert.objects.filter(site=site, kind="config").count() == 1
    dry = run_sync(site, transport, dry_run=True)
    assert any("may not assign the role student" in p for p in dry.plan["target_problems"])


def test_one_unknown_user_fails_only_their_own_enrolment(small):
    site, path, rows, moodle, transport = small
    ids = moodle_ids(site)
    gone = ids["E00007"]
    moodle.app.state.users[gone]["deleted"] = 1  # deleted by hand in Moodle; the hub still links them
    for n in range(1, 41):
        rows[n - 1] = row(n, [*courses_of(n), "C29"] if "C29" not in courses_of(n) else courses_of(n))
    write_people(path, rows)
    transport.sent.clear()
    run = run_sync(site, transport)
    in_error = Membership.objects.filter(site=site, status=MembershipStatus.ERROR)
    assert [m.record.external_id for m in in_error] == ["E00007"]
    assert "E00007" in in_error[0].error_message and "C29" in in_error[0].error_message
    newly = [n for n in range(1, 41) if "C29" not in courses_of(n) and n != 7]
    assert all(ids[f"E{n:05d}"] in enrolled(moodle, "C29") for n in newly)
    assert run.membership_errors == 1 and run.enrolled == len(newly)
    assert run.status == RunStatus.PROBLEMS


def test_someone_already_in_a_cohort_is_in_step_not_an_error(tmp_path, clean_redis, moodle):
    rows = [row(n, []) for n in range(1, 6)]
    site, _ = make_membership_site(tmp_path, rows)
    transport = Recording(moodle.transport)
    run_sync(site, transport, RunKind.BOOTSTRAP)  # makes the department cohorts and their members
    site.records.update(membership_hash="")  # the hub forgets it sent them: it sends them again
    Membership.objects.filter(site=site).update(synced="", status=MembershipStatus.PENDING)
    run = run_sync(site, transport)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    assert run.cohort_added == 5 and run.membership_errors == 0
    assert set(Membership.objects.filter(site=site).values_list("status", flat=True)) == {MembershipStatus.OK}


def test_enrolments_all_refused_alone_stop_the_run_instead_of_hammering_moodle(small):
    site, path, rows, moodle, transport = small
    ids = moodle_ids(site)
    for n in range(1, 9):
        moodle.app.state.users[ids[f"E{n:05d}"]]["deleted"] = 1
        rows[n - 1] = row(n, [*courses_of(n), "C28"] if "C28" not in courses_of(n) else courses_of(n))
    write_people(path, rows)  # eight people deleted by hand in Moodle get a new course each
    transport.sent.clear()
    run = run_sync(site, transport)
    assert run.status == RunStatus.ABORTED
    assert "refused each of the 5 memberships sent alone" in run.abort_reason
    assert transport.count("enrol_manual_enrol_users") <= 10
    assert Membership.objects.filter(site=site, status=MembershipStatus.ERROR).count() == 5


def test_a_held_back_removal_the_source_takes_back_is_no_longer_anyones_decision(small):
    site, path, rows, _moodle, transport = small
    original = list(rows)
    in_c05 = [n for n in range(1, 41) if "C05" in courses_of(n)]
    for n in in_c05:
        rows[n - 1] = row(n, [c for c in courses_of(n) if c != "C05"])
    write_people(path, rows)
    assert run_sync(site, transport).memberships_held == len(in_c05)
    held = Discrepancy.objects.filter(site=site, kind=DiscrepancyKind.MEMBERSHIP_LEFT)
    assert {d.status for d in held} == {DiscrepancyStatus.BLOCKED}
    write_people(path, original)  # the export was truncated; the next one is whole again
    transport.sent.clear()
    run = run_sync(site, transport)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    assert {d.status for d in held.all()} == {DiscrepancyStatus.SUPERSEDED}
    assert not Membership.objects.filter(site=site).exclude(status=MembershipStatus.OK).exists()
    assert transport.enrolments() == []


def test_the_approval_pages_show_the_guard_per_course_before_anyone_confirms(small, client, hub_admin):
    site, path, rows, _moodle, transport = small
    site.source.mapping = {**site.source.mapping, "memberships": {**MEMBERSHIPS, "on_leave": "unenrol"}}
    site.source.save()
    site.max_removal_percent = 50
    site.save()
    leaving = [n for n in range(1, 41) if "C00" in courses_of(n)][:3]
    for n in leaving:
        rows[n - 1] = row(n, [c for c in courses_of(n) if c != "C00"])
    write_people(path, rows)
    run_sync(site, transport)
    site.max_removal_percent = 10
    site.save()
    client.force_login(hub_admin)
    one = Discrepancy.objects.filter(site=site, kind=DiscrepancyKind.MEMBERSHIP_LEFT).first()
    page = client.get(f"/discrepancies/{one.pk}/approve/").content.decode()
    assert "unenrols 1 of the" in page and "people in course C00" in page and "Within the limit" in page
    assert "enrol_manual_unenrol_users" in page
    bulk = client.get(
        "/discrepancies/approve/", {"site": site.slug, "kind": "membership_left"}
    ).content.decode()
    assert "unenrols 3 of the" in bulk and "people in course C00" in bulk and "past the limit" in bulk


def test_a_course_made_in_moodle_after_a_run_named_it_unknown_is_enrolled_by_the_next_run(
    tmp_path, clean_redis, moodle
):
    site, _ = make_membership_site(tmp_path, [row(n, ["C01", "LATER"]) for n in range(1, 4)])
    transport = Recording(moodle.transport)
    first = run_sync(site, transport, RunKind.BOOTSTRAP)
    assert first.status == RunStatus.PROBLEMS and first.membership_errors == 3
    assert "no course with shortname LATER" in Membership.objects.filter(status="error").first().error_message
    moodle.control("POST", "courses", {"shortname": "LATER", "fullname": "Made later"})
    transport.sent.clear()
    second = run_sync(site, transport)
    assert second.status == RunStatus.SUCCEEDED, second.abort_reason
    assert second.enrolled == 3 and len(enrolled(moodle, "LATER")) == 3
    transport.sent.clear()
    third = run_sync(site, transport)  # in step now: not even a look-up
    assert transport.count("core_course_get_courses_by_field") == 0 and third.enrolled == 0


def test_a_missing_cohort_is_never_read_as_a_missing_person_with_the_same_id():
    from types import SimpleNamespace

    from sync.run.memberships import missing_for, not_in_moodle

    row = SimpleNamespace(record=SimpleNamespace(moodle_id=12), target=SimpleNamespace(moodle_id=3))
    assert missing_for(row, not_in_moodle(["cohort id=12 not exists"])) == []
    assert missing_for(row, not_in_moodle(["user id=12 not exists"])) == ["user 12 does not exist in Moodle"]
    assert missing_for(row, not_in_moodle(["cohort id=3 not exists", "user id=120 not exists"])) == [
        "cohort 3 does not exist in Moodle"
    ]
