"""MOODLE_FACTS "The call", "Batches" and "Pre-flight", through raw HTTP, debugging off and on."""

from __future__ import annotations

import re

from simulator.tests.conftest import TOKEN, Site
from simulator.tokens import create_token


def _create(site: Site, *users: dict) -> list[dict]:
    result = site.call("core_user_create_users", users=list(users))
    assert isinstance(result, list), result
    return result


def _by(site: Site, field: str, *values: object, token: str = TOKEN) -> list[dict]:
    return site.call("core_user_get_users_by_field", token, field=field, values=list(values))


# The call ----------------------------------------------------------------------------------------


def test_get_works_too(site: Site) -> None:
    response = site.client.get(
        "/webservice/rest/server.php",
        params={
            "wstoken": TOKEN,
            "wsfunction": "core_webservice_get_site_info",
            "moodlewsrestformat": "json",
        },
    )
    assert response.json()["username"] == "wsuser"


def test_json_body_is_not_understood(site: Site) -> None:
    response = site.client.post(
        "/webservice/rest/server.php",
        params={"wstoken": TOKEN, "wsfunction": "core_user_get_users_by_field", "moodlewsrestformat": "json"},
        json={"field": "id", "values": [2]},
    )
    assert response.json()["errorcode"] == "invalidparameter"


def test_without_format_the_answer_is_xml(site: Site) -> None:
    ok = site.raw("core_user_get_users_by_field", fmt=None, field="id", values=[2])
    assert ok.headers["content-type"].startswith("application/xml")
    assert ok.text.startswith('<?xml version="1.0" encoding="UTF-8" ?>')
    assert '<KEY name="username"><VALUE>admin</VALUE>' in ok.text
    error = site.raw("core_webservice_get_site_info", token="nope", fmt=None)
    assert '<EXCEPTION class="core\\exception\\moodle_exception">' in error.text
    assert "<MESSAGE>Invalid token - token not found</MESSAGE>" in error.text


def test_void_function_answers_json_null(site: Site) -> None:
    (created,) = _create(site, site.user())
    response = site.raw("core_user_delete_users", userids=[created["id"]])
    assert response.text == "null"


def test_booleans_are_0_or_1(site: Site) -> None:
    user = site.user(password=None, createpassword=True)
    assert _create(site, user)[0]["username"] == "alice"
    bad = site.call("core_user_update_users", users=[{"id": 4, "suspended": "True"}])
    assert bad["errorcode"] == "invalidparameter"


def test_empty_list_disappears_from_the_form(site: Site) -> None:
    assert site.call("core_user_create_users", users=[])["errorcode"] == "invalidparameter"


def test_unicode_round_trips(site: Site) -> None:
    _create(site, site.user(firstname="Łukasz", lastname="Nguyễn Thị Hương"))
    (found,) = _by(site, "username", "alice")
    assert (found["firstname"], found["lastname"]) == ("Łukasz", "Nguyễn Thị Hương")
    raw = site.raw("core_user_get_users_by_field", field="username", values=["alice"]).text
    assert "\\u0141ukasz" in raw  # json_encode escapes non-ASCII, as PHP does


# Batches -----------------------------------------------------------------------------------------


def test_create_is_all_or_nothing(site: Site) -> None:
    good = site.user()
    bad = site.user(username="bob", email="broken")
    assert site.call("core_user_create_users", users=[good, bad])["errorcode"] == "invalidparameter"
    assert _by(site, "username", "alice") == []
    assert _create(site, good)[0]["username"] == "alice"


def test_create_returns_ids_and_usernames(site: Site) -> None:
    result = _create(site, site.user(), site.user(username="bob", email="bob@example.org"))
    assert [sorted(r) for r in result] == [["id", "username"], ["id", "username"]]
    assert [r["username"] for r in result] == ["alice", "bob"]


def test_update_validates_all_then_updates_each_with_warnings(site: Site) -> None:
    alice, bob, carol = _create(
        site,
        site.user(),
        site.user(username="bob", email="bob@x.org"),
        site.user(username="carol", email="c@x.org"),
    )
    site.call("core_user_delete_users", userids=[carol["id"]])
    assert (
        site.call("core_user_update_users", users=[{"id": alice["id"], "firstname": "A"}, {"id": "x"}])[
            "errorcode"
        ]
        == "invalidparameter"
    )
    result = site.call(
        "core_user_update_users",
        users=[
            {"id": alice["id"], "city": "Kraków"},
            {"id": bob["id"], "email": "ALICE@example.org"},
            {"id": 9999, "city": "x"},
            {"id": 2, "city": "x"},
            {"id": carol["id"], "city": "x"},
            {"id": bob["id"], "username": "alice"},
            {"id": bob["id"], "email": ""},
            {"id": bob["id"], "email": "not-an-email"},
        ],
    )
    codes = [(w["itemid"], w["warningcode"]) for w in result["warnings"]]
    assert codes == [
        (bob["id"], "useremailduplicate"),
        (9999, "invaliduserid"),
        (2, "usernotupdatedadmin"),
        (carol["id"], "usernotupdateddeleted"),
        (bob["id"], "dmlwriteexception"),
        (bob["id"], "useremailinvalid"),
        (bob["id"], "useremailinvalid"),  # a malformed email is a warning on update, not a refused call
    ]
    assert all(w["item"] == "user" and w["message"] for w in result["warnings"])
    assert _by(site, "id", alice["id"])[0]["city"] == "Kraków"


def test_delete_scrambles_username_and_email_and_frees_them(site: Site) -> None:
    (alice,) = _create(site, site.user(idnumber="S1"))
    assert site.raw("core_user_delete_users", userids=[alice["id"]]).text == "null"
    (found,) = _by(site, "id", alice["id"])
    assert re.fullmatch(r"alice@example\.org\.\d{10}", found["username"])
    assert re.fullmatch(r"[0-9a-f]{32}", found["email"])
    assert _by(site, "username", "alice") == []
    assert _by(site, "email", "alice@example.org") == []
    assert _create(site, site.user())[0]["id"] != alice["id"]  # the username is reusable at once


def test_delete_is_one_transaction(site: Site) -> None:
    (alice,) = _create(site, site.user())
    assert site.call("core_user_delete_users", userids=[alice["id"], 9999])["exception"] == (
        "dml_missing_record_exception"
    )
    assert _by(site, "username", "alice")


def test_email_lookup_is_exact_and_case_sensitive(site: Site) -> None:
    _create(site, site.user(email="Alice@X.org"))
    assert _by(site, "email", "alice@x.org") == []
    assert [u["username"] for u in _by(site, "email", "Alice@X.org")] == ["alice"]
    assert (
        site.call("core_user_create_users", users=[site.user(username="a2", email="alice@x.org")])[
            "errorcode"
        ]
        == "invalidparameter"
    )


def test_allowaccountssameemail_permits_duplicates(make_site) -> None:
    site = make_site(allowaccountssameemail=True)
    _create(site, site.user(), site.user(username="bob", email="ALICE@example.org"))
    assert (
        len(
            site.call("core_user_get_users", criteria=[{"key": "email", "value": "alice@example.org"}])[
                "users"
            ]
        )
        == 2
    )


def test_idnumber_is_not_unique(site: Site) -> None:
    _create(site, site.user(idnumber="S1"), site.user(username="bob", email="b@x.org", idnumber="S1"))
    assert len(_by(site, "idnumber", "S1")) == 2


def test_lookup_returns_only_found_users_with_moodle_fields(site: Site) -> None:
    (alice,) = _create(
        site, site.user(department="Física", customfields=[{"type": "studentid", "value": "42"}])
    )
    found = _by(site, "id", alice["id"], 12345)
    assert len(found) == 1
    user = found[0]
    for key in ("id", "username", "firstname", "lastname", "fullname", "email", "auth", "suspended", "lang"):
        assert key in user
    assert user["suspended"] is False
    assert user["department"] == "Física"
    assert user["customfields"] == [
        {"type": "text", "value": "42", "displayvalue": "42", "name": "Student ID", "shortname": "studentid"}
    ]


def test_get_users_email_is_a_case_insensitive_like_without_paging(site: Site) -> None:
    _create(site, site.user(), site.user(username="bob", email="Bob@Example.org"))
    result = site.call("core_user_get_users", criteria=[{"key": "email", "value": "%EXAMPLE.ORG"}])
    assert sorted(u["username"] for u in result["users"]) == ["admin", "alice", "bob", "wsuser"]
    everyone = site.call("core_user_get_users", criteria=[{"key": "email", "value": "%"}])
    assert len(everyone["users"]) == 4  # admin, wsuser, alice, bob (guest and deleted left out)
    unknown = site.call("core_user_get_users", criteria=[{"key": "shoesize", "value": "1"}])
    assert unknown["users"] == [] and unknown["warnings"][0]["warningcode"] == "invalidfieldparameter"


def test_get_users_is_filtered_by_rights(site: Site) -> None:
    create_token(site.app.state, "plain", username="plain", capabilities=["webservice/rest:use"])
    result = site.call("core_user_get_users", "plain", criteria=[{"key": "email", "value": "%"}])
    assert [u["username"] for u in result["users"]] == ["plain"]  # itself, and nobody else


def _cohort(site: Site, idnumber: str = "c1") -> int:
    (cohort,) = site.call(
        "core_cohort_create_cohorts",
        cohorts=[{"categorytype": {"type": "system", "value": ""}, "name": "Cohort", "idnumber": idnumber}],
    )
    return cohort["id"]


def test_cohort_members_warnings_and_null_answers(site: Site) -> None:
    alice, bob = _create(site, site.user(), site.user(username="bob", email="b@x.org"))
    cid = _cohort(site)

    def member(cohort: str, user: str, utype: str = "username") -> dict:
        return {
            "cohorttype": {"type": "idnumber", "value": cohort},
            "usertype": {"type": utype, "value": user},
        }

    first = site.call("core_cohort_add_cohort_members", members=[member("c1", "alice")])
    assert first == {"warnings": []}
    result = site.call(
        "core_cohort_add_cohort_members",
        members=[member("c1", "alice"), member("nope", "bob"), member("c1", "ghost"), member("c1", "bob")],
    )
    assert [w["warningcode"] for w in result["warnings"]] == ["3", "2", "2"]
    assert site.call("core_cohort_get_cohort_members", cohortids=[cid]) == [
        {"cohortid": cid, "userids": [alice["id"], bob["id"]]}
    ]
    gone = site.raw("core_cohort_delete_cohort_members", members=[{"cohortid": cid, "userid": bob["id"]}] * 2)
    assert gone.text == "null"
    assert site.call("core_cohort_get_cohort_members", cohortids=[cid])[0]["userids"] == [alice["id"]]
    cohorts = site.call("core_cohort_get_cohorts", cohortids=[])
    assert [c["idnumber"] for c in cohorts] == ["c1"] and cohorts[0]["visible"] is True


def _course(site: Site, shortname: str = "MATH101", manual: bool = True) -> int:
    return site.control("POST", "/courses", {"shortname": shortname, "manual": manual})["id"]


def test_enrol_is_null_idempotent_and_all_or_nothing(site: Site) -> None:
    alice, bob = _create(site, site.user(), site.user(username="bob", email="b@x.org"))
    course = _course(site)
    enrol = [{"roleid": 5, "userid": alice["id"], "courseid": course}]
    assert site.raw("enrol_manual_enrol_users", enrolments=enrol).text == "null"
    assert site.raw("enrol_manual_enrol_users", enrolments=enrol).text == "null"
    failing = site.call(
        "enrol_manual_enrol_users",
        enrolments=[
            {"roleid": 5, "userid": bob["id"], "courseid": course},
            {"roleid": 5, "userid": 999, "courseid": course},
        ],
    )
    assert failing["exception"] == "dml_missing_record_exception"
    ids = [u["id"] for u in site.call("core_enrol_get_enrolled_users", courseid=course)]
    assert ids == [alice["id"]]


def test_enrol_errors_wsnoinstance_and_wsusercannotassign(site: Site) -> None:
    (alice,) = _create(site, site.user())
    selfonly = _course(site, "ORIENT", manual=False)
    course = _course(site)
    noinstance = site.call(
        "enrol_manual_enrol_users", enrolments=[{"roleid": 5, "userid": alice["id"], "courseid": selfonly}]
    )
    assert noinstance["errorcode"] == "wsnoinstance"
    manager = site.call(
        "enrol_manual_enrol_users", enrolments=[{"roleid": 1, "userid": alice["id"], "courseid": course}]
    )
    assert manager["errorcode"] == "wsusercannotassign"


def test_enrolled_users_paging_uses_limitfrom_and_limitnumber(site: Site) -> None:
    users = _create(site, *[site.user(username=f"u{i}", email=f"u{i}@x.org") for i in range(5)])
    course = _course(site)
    site.call(
        "enrol_manual_enrol_users",
        enrolments=[{"roleid": 5, "userid": u["id"], "courseid": course} for u in users],
    )

    def page(*options: tuple[str, str]) -> list[int]:
        opts = [{"name": n, "value": v} for n, v in options]
        return [u["id"] for u in site.call("core_enrol_get_enrolled_users", courseid=course, options=opts)]

    ids = [u["id"] for u in users]
    assert page(("limitfrom", "0"), ("limitnumber", "2")) == ids[:2]
    assert page(("limitfrom", "2"), ("limitnumber", "2")) == ids[2:4]
    assert page(("limitfrom", "4"), ("limitnumber", "2")) == ids[4:]
    assert page(("limitnum", "2")) == ids  # unknown option silently ignored: everyone comes back
    site.call("core_user_update_users", users=[{"id": ids[0], "suspended": 1}])
    assert page(("onlyactive", "1")) == ids  # a suspended user's enrolment is still active
    (first,) = site.call(
        "core_enrol_get_enrolled_users",
        courseid=course,
        options=[{"name": "userfields", "value": "username"}, {"name": "limitnumber", "value": "1"}],
    )
    assert first == {"id": ids[0], "username": "u0", "fullname": "Alice Martín"}  # id, fullname always


def test_unenrol_is_null(site: Site) -> None:
    (alice,) = _create(site, site.user())
    course = _course(site)
    site.call(
        "enrol_manual_enrol_users", enrolments=[{"roleid": 5, "userid": alice["id"], "courseid": course}]
    )
    assert (
        site.raw("enrol_manual_unenrol_users", enrolments=[{"userid": alice["id"], "courseid": course}]).text
        == "null"
    )
    assert site.call("core_enrol_get_enrolled_users", courseid=course) == []


def test_courses_by_field_answers_courses_and_warnings(site: Site) -> None:
    course = _course(site)
    result = site.call("core_course_get_courses_by_field", field="shortname", value="MATH101")
    assert result["warnings"] == []
    assert [c["id"] for c in result["courses"]] == [course]
    assert "manual" in result["courses"][0]["enrollmentmethods"]
    everything = site.call("core_course_get_courses_by_field")["courses"]
    assert [c["shortname"] for c in everything] == ["site", "MATH101"]  # the site course is listed too


# Pre-flight --------------------------------------------------------------------------------------


def test_site_info_lists_release_version_and_functions(site: Site) -> None:
    info = site.call("core_webservice_get_site_info")
    assert info["release"].startswith("5.1") and info["version"] == "2025100600"
    assert info["username"] == "wsuser" and info["userid"] == site.app.state.tokens[TOKEN]["userid"]
    names = {f["name"] for f in info["functions"]}
    assert {"core_user_create_users", "core_enrol_get_enrolled_users"} <= names
    create_token(
        site.app.state,
        "few",
        username="few",
        functions=["core_webservice_get_site_info"],
        capabilities=["webservice/rest:use"],
    )
    few = site.call("core_webservice_get_site_info", "few")
    assert [f["name"] for f in few["functions"]] == ["core_webservice_get_site_info"]


def test_the_caller_sees_itself_whole_and_others_by_its_capabilities(site: Site) -> None:
    """user_get_user_details: the caller always sees itself; of others, username and idnumber need
    viewalldetails, the email viewuseridentity, names viewfullnames; a look-up returns a user only when
    the searched field is among what the caller sees."""
    create_token(
        site.app.state,
        "partial",
        username="partial",
        capabilities=["webservice/rest:use", "moodle/user:viewdetails"],
    )
    partial_me = site.app.state.tokens["partial"]["userid"]
    me = _by(site, "id", partial_me, token="partial")[0]
    assert me["email"] and me["username"] == "partial"
    (guest,) = _by(site, "id", 1, token="partial")
    assert {"username", "email", "firstname", "idnumber"}.isdisjoint(guest) and guest["fullname"]
    assert _by(site, "username", "guest", token="partial") == []
    assert _by(site, "username", "guest")[0]["email"] == "root@localhost"  # a full token sees it all
