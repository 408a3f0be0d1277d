"""The typed helpers against the simulator: return shapes and the batch rules of MOODLE_FACTS."""

import pytest

from sync.moodle import errors
from sync.moodle.client import HUB_FUNCTIONS, cohort_member
from sync.moodle.errors import MoodleError

PASSWORD = "Str0ng-Passw0rd!"


def user(name: str, **fields) -> dict:
    return {
        "username": name,
        "password": PASSWORD,
        "firstname": name.title(),
        "lastname": "Tester",
        "email": f"{name}@example.org",
        **fields,
    }


@pytest.fixture
def client(make_client):
    return make_client()


def test_create_is_all_or_nothing(client, sim):
    with pytest.raises(MoodleError) as caught:
        client.create_users([user("ana"), user("bo", email="broken"), user("cy")])
    assert caught.value.category == errors.CLIENT_FAULT
    assert not {"ana", "bo", "cy"} & {u["username"] for u in sim.users()}
    created = client.create_users([user("ana"), user("cy")])
    assert [u["username"] for u in created] == ["ana", "cy"]
    assert all(isinstance(u["id"], int) for u in created)


def test_update_warnings_are_per_user_failures(client):
    ana, bo = client.create_users([user("ana"), user("bo")])
    result = client.update_users(
        [
            {"id": ana["id"], "firstname": "Anna"},
            {"id": bo["id"], "email": "ANA@example.org"},  # duplicate email, case-insensitive
            {"id": 2, "firstname": "Root"},  # the admin
            {"id": 999_999, "firstname": "Nobody"},
        ]
    )
    assert result.updated_ids == [ana["id"]]
    assert [(f.itemid, f.warningcode) for f in result.failures] == [
        (bo["id"], "useremailduplicate"),
        (2, "usernotupdatedadmin"),
        (999_999, "invaliduserid"),
    ]
    assert client.get_users_by_field("id", [ana["id"]])[0]["firstname"] == "Anna"


def test_one_invalid_parameter_fails_the_whole_update(client):
    (ana,) = client.create_users([user("ana")])
    with pytest.raises(MoodleError, match="invalidparameter"):
        client.update_users(
            [{"id": ana["id"], "firstname": "Anna"}, {"id": ana["id"], "username": "Not Valid"}]
        )
    assert client.get_users_by_field("id", [ana["id"]])[0]["firstname"] == "Ana"


def test_email_lookup_is_exact_and_case_sensitive(client):
    client.create_users([user("ana", email="Ana@Example.org")])
    assert client.get_users_by_field("email", ["ana@example.org"]) == []
    assert [u["username"] for u in client.get_users_by_field("email", ["Ana@Example.org"])] == ["ana"]
    found = client.get_users({"email": "ana@example.org"})["users"]
    assert [u["username"] for u in found] == ["ana"]  # core_user_get_users matches case-insensitively


def test_uppercase_username_lookup_is_refused(client):
    with pytest.raises(MoodleError, match="invalidparameter"):
        client.get_users_by_field("username", ["Ana"])


def test_delete_scrambles_and_frees_the_username(client):
    (ana,) = client.create_users([user("ana")])
    client.delete_users([ana["id"]])
    assert client.get_users_by_field("username", ["ana"]) == []
    (deleted,) = client.get_users_by_field("id", [ana["id"]])
    assert deleted["username"].startswith("ana@example.org.")
    assert client.create_users([user("ana")])[0]["id"] != ana["id"]


def test_idnumber_is_not_unique_in_moodle(client):
    client.create_users([user("ana", idnumber="E1"), user("bo", idnumber="E1")])
    assert len(client.get_users_by_field("idnumber", ["E1"])) == 2


def test_get_users_percent_lists_everyone(client):
    client.create_users([user("ana"), user("bo")])
    answer = client.get_users({"email": "%"})
    assert {"ana", "bo"} <= {u["username"] for u in answer["users"]}
    assert answer["warnings"] == []


def test_cohorts_membership_warnings_and_members(client):
    ana, bo = client.create_users([user("ana"), user("bo")])
    (cohort,) = client.create_cohorts(
        [{"categorytype": {"type": "system", "value": ""}, "name": "Staff", "idnumber": "staff"}]
    )
    assert client.get_cohorts([cohort["id"]])[0]["idnumber"] == "staff"
    assert client.add_cohort_members([cohort_member(cohort["id"], ana["id"])]) == []
    failures = client.add_cohort_members(
        [
            cohort_member(cohort["id"], ana["id"]),
            cohort_member(cohort["id"], 999_999),
            cohort_member(cohort["id"], bo["id"]),
        ]
    )
    assert sorted(f.warningcode for f in failures) == ["2", "3"]
    assert client.get_cohort_members([cohort["id"]]) == [
        {"cohortid": cohort["id"], "userids": [ana["id"], bo["id"]]}
    ]
    client.delete_cohort_members(
        [{"cohortid": cohort["id"], "userid": bo["id"]}, {"cohortid": cohort["id"], "userid": 2}]
    )
    assert client.get_cohort_members([cohort["id"]])[0]["userids"] == [ana["id"]]


def test_enrolments_are_idempotent_and_paged_with_limitnumber(client):
    users = client.create_users([user(f"u{i}") for i in range(7)])
    (course,) = client.call(
        "core_course_create_courses", courses=[{"fullname": "Physics", "shortname": "PHY", "categoryid": 1}]
    )
    enrolments = [{"roleid": 5, "userid": u["id"], "courseid": course["id"]} for u in users]
    client.enrol_users(enrolments)
    client.enrol_users(enrolments[:2])  # twice is fine
    paged = client.get_enrolled_users(course["id"], page_size=3, userfields=["id", "username"])
    assert [u["id"] for u in paged] == [u["id"] for u in users]
    assert client.get_courses_by_field("shortname", "PHY")[0]["id"] == course["id"]
    client.unenrol_users([{"userid": users[0]["id"], "courseid": course["id"]}])
    assert len(client.get_enrolled_users(course["id"])) == 6


def test_one_unknown_user_fails_the_whole_enrolment(client):
    (ana,) = client.create_users([user("ana")])
    (course,) = client.call(
        "core_course_create_courses", courses=[{"fullname": "Maths", "shortname": "MAT", "categoryid": 1}]
    )
    with pytest.raises(MoodleError) as caught:
        client.enrol_users(
            [
                {"roleid": 5, "userid": ana["id"], "courseid": course["id"]},
                {"roleid": 5, "userid": 999_999, "courseid": course["id"]},
            ]
        )
    assert caught.value.category == errors.CLIENT_FAULT
    assert client.get_enrolled_users(course["id"]) == []


def test_course_without_manual_enrolment(client, sim):
    from simulator.ws_course import add_course

    course = add_course(
        sim.app.state,
        {
            "fullname": "Self",
            "shortname": "SELF",
            "categoryid": 1,
            "idnumber": "",
            "summary": "",
            "format": "topics",
            "visible": 1,
            "startdate": 0,
            "enddate": 0,
            "timecreated": 0,
            "timemodified": 0,
        },
        manual=False,
    )
    (ana,) = client.create_users([user("ana")])
    with pytest.raises(MoodleError, match="wsnoinstance"):
        client.enrol_users([{"roleid": 5, "userid": ana["id"], "courseid": course["id"]}])


def test_preflight_passes_for_a_complete_token(client):
    report = client.preflight()
    assert report.ok, report.problems
    assert report.release.startswith("5.1")
    assert report.username == "wsuser"
    assert report.can_see_users
    assert report.missing_functions == []
    assert set(HUB_FUNCTIONS) <= set(report.functions)


def test_preflight_reports_missing_functions_and_blind_lookups(sim, make_client):
    sim.token(
        "partial-token-value",
        username="partial",
        functions=["core_webservice_get_site_info", "core_user_get_users_by_field", "core_user_create_users"],
        capabilities=["webservice/rest:use", "moodle/user:create"],
    )
    report = make_client("partial-token-value").preflight()
    assert not report.ok
    assert "core_user_update_users" in report.missing_functions
    assert not report.can_see_users
    assert any("silently empty" in p for p in report.problems)


def test_preflight_is_not_fooled_by_a_service_user_that_sees_only_itself(sim, make_client):
    """Moodle shows the service user itself in full whatever its capabilities: with viewdetails alone it
    finds itself, email included, but nobody else by username, and no one's email."""
    sim.token(
        "self-only-token-value",
        username="selfonly",
        capabilities=["webservice/rest:use", "moodle/user:viewdetails", "moodle/user:create"],
    )
    client = make_client("self-only-token-value")
    me = client.get_site_info()["userid"]
    assert client.get_users_by_field("id", [me])[0]["email"]  # it sees itself whole
    report = client.preflight()
    assert not report.ok and not report.can_see_users
    assert any("guest user" in p for p in report.problems)


def test_preflight_of_a_dead_token(make_client):
    report = make_client("f" * 32).preflight()
    assert not report.ok
    assert report.error_category == errors.AUTH


def test_preflight_raises_while_the_site_is_only_unavailable(sim, make_client):
    # A site in maintenance says nothing about the token: the caller waits instead of failing the run.
    sim.config(maintenance="admin")
    with pytest.raises(MoodleError) as caught:
        make_client().preflight()
    assert caught.value.category == errors.MAINTENANCE
