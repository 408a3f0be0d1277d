"""Enrolments, cohort members and course look-ups as Moodle 5.1 does them.

Each test names the Moodle code it pins: enrol/manual/externallib.php (enrol_users, unenrol_users),
lib/enrollib.php (enrol_user, get_enrolled_join), enrol/externallib.php (get_enrolled_users),
user/lib.php (user_get_user_details), cohort/externallib.php and course/externallib.php.
"""

from __future__ import annotations

import time
from typing import Any

from simulator.functions import all_capabilities
from simulator.tests.conftest import TOKEN, Site
from simulator.tokens import create_token


def _user(site: Site, username: str, first: str = "Ana", last: str = "Tester", **extra: Any) -> int:
    body = {"username": username, "firstname": first, "lastname": last, "email": f"{username}@x.org", **extra}
    return site.control("POST", "/users", body)["id"]


def _course(site: Site, shortname: str = "CHEM101", **extra: Any) -> int:
    return site.control("POST", "/courses", {"shortname": shortname, **extra})["id"]


def _enrol(site: Site, *items: dict) -> Any:
    return site.call("enrol_manual_enrol_users", enrolments=list(items))


def _rows(site: Site, shortname: str = "CHEM101") -> list[dict]:
    return site.control("GET", f"/enrolments?course={shortname}")["enrolments"]


def _enrolled(site: Site, course: int, token: str = TOKEN, **options: str) -> Any:
    opts = [{"name": k, "value": v} for k, v in options.items()]
    return site.call("core_enrol_get_enrolled_users", token, courseid=course, options=opts)


# enrol_manual_enrol_users -------------------------------------------------------------------------


def test_enrol_without_dates_or_suspend_resets_an_existing_enrolment(plain: Site) -> None:
    """enrol_users passes timestart/timeend 0 when omitted and ENROL_USER_ACTIVE unless `suspend`;
    enrol_user() then updates an existing enrolment with all three."""
    ana, course = _user(plain, "ana"), _course(plain)
    dated = {"timestart": 100, "timeend": 4_000_000_000, "suspend": 1}
    _enrol(plain, {"roleid": 5, "userid": ana, "courseid": course, **dated})
    assert [(r["status"], r["timestart"], r["timeend"]) for r in _rows(plain)] == [(1, 100, 4_000_000_000)]
    assert _enrol(plain, {"roleid": 5, "userid": ana, "courseid": course}) is None
    assert [(r["status"], r["timestart"], r["timeend"]) for r in _rows(plain)] == [(0, 0, 0)]


def test_suspend_is_an_int_and_any_nonzero_value_suspends(plain: Site) -> None:
    ana, course = _user(plain, "ana"), _course(plain)
    _enrol(plain, {"roleid": 5, "userid": ana, "courseid": course, "suspend": 2})
    assert _rows(plain)[0]["status"] == 1
    _enrol(plain, {"roleid": 5, "userid": ana, "courseid": course, "suspend": 0})
    assert _rows(plain)[0]["status"] == 0


def test_a_second_role_is_added_not_replaced(plain: Site) -> None:
    """role_assign() adds a role; enrolling again with another role keeps the first one."""
    ana, course = _user(plain, "ana"), _course(plain)
    _enrol(plain, {"roleid": 5, "userid": ana, "courseid": course})
    _enrol(plain, {"roleid": 3, "userid": ana, "courseid": course})
    assert _rows(plain)[0]["roles"] == [3, 5]
    (user,) = _enrolled(plain, course, userfields="roles")
    assert user["roles"] == [
        {"roleid": 3, "name": "", "shortname": "editingteacher", "sortorder": 0},
        {"roleid": 5, "name": "", "shortname": "student", "sortorder": 0},
    ]  # the standard roles' names are empty in the role table; sortorder is the assignment's (0)


def test_enrol_checks_the_user_before_the_role_and_the_instance(site: Site) -> None:
    """core_user::get_user(MUST_EXIST) and require_active_user() come before get_assignable_roles()."""
    course = _course(site)
    unknown = _enrol(site, {"roleid": 1, "userid": 999, "courseid": course})
    assert unknown["exception"] == "dml_missing_record_exception"
    assert unknown["errorcode"] == ("invaliduser" if site.app.config.debug else "invalidrecordunknown")
    gone = _user(site, "gone")
    site.control("DELETE", f"/users/{gone}")
    deleted = _enrol(site, {"roleid": 5, "userid": gone, "courseid": course})
    assert (deleted["errorcode"], deleted["message"]) == ("userdeleted", "This user account has been deleted")
    guest = _enrol(site, {"roleid": 5, "userid": 1, "courseid": course})
    assert guest["errorcode"] == "guestsarenotallowed"
    nocourse = _enrol(site, {"roleid": 5, "userid": gone, "courseid": 999})
    assert nocourse["errorcode"] == "invalidparameter"  # validate_context(false): "Context does not exist"


def test_a_suspended_user_can_be_enrolled(plain: Site) -> None:
    ana, course = _user(plain, "ana", suspended=1), _course(plain)
    assert _enrol(plain, {"roleid": 5, "userid": ana, "courseid": course}) is None
    assert [r["userid"] for r in _rows(plain)] == [ana]


def test_wsusercannotassign_message_and_all_or_nothing(plain: Site) -> None:
    ana, bo, course = _user(plain, "ana"), _user(plain, "bo"), _course(plain)
    refused = _enrol(
        plain,
        {"roleid": 5, "userid": ana, "courseid": course},
        {"roleid": 1, "userid": bo, "courseid": course},
    )
    assert refused["errorcode"] == "wsusercannotassign"
    assert refused["message"] == (
        f"You don't have the permission to assign this role (1) to this user ({bo}) "
        f"in this course ({course})."
    )
    assert _rows(plain) == []


# enrol_manual_unenrol_users -----------------------------------------------------------------------


def test_unenrol_ignores_roleid_and_removes_the_whole_enrolment(plain: Site) -> None:
    """unenrol_user($instance, $userid): `roleid` is accepted but never read."""
    ana, course = _user(plain, "ana"), _course(plain)
    _enrol(
        plain,
        {"roleid": 5, "userid": ana, "courseid": course},
        {"roleid": 3, "userid": ana, "courseid": course},
    )
    gone = plain.raw(
        "enrol_manual_unenrol_users", enrolments=[{"userid": ana, "courseid": course, "roleid": 3}]
    )
    assert gone.text == "null"
    assert _rows(plain) == []


def test_unenrol_errors_follow_moodle_51(site: Site) -> None:
    """Unknown user: dml_missing_record_exception (no longer "User id not exist"); deleted: userdeleted;
    not enrolled: nothing to do; no manual instance: wsnoinstance; unknown course: missing record."""
    ana, course = _user(site, "ana"), _course(site)
    unenrol = "enrol_manual_unenrol_users"
    assert site.call(unenrol, enrolments=[{"userid": 999, "courseid": course}])["exception"] == (
        "dml_missing_record_exception"
    )
    assert site.raw(unenrol, enrolments=[{"userid": ana, "courseid": course}]).text == "null"
    site.control("DELETE", f"/users/{ana}")
    assert site.call(unenrol, enrolments=[{"userid": ana, "courseid": course}])["errorcode"] == "userdeleted"
    selfonly = _course(site, "ORIENT", manual=False)
    assert site.call(unenrol, enrolments=[{"userid": 2, "courseid": selfonly}])["errorcode"] == "wsnoinstance"
    assert site.call(unenrol, enrolments=[{"userid": 2, "courseid": 999}])["exception"] == (
        "dml_missing_record_exception"
    )


def test_a_disabled_manual_instance_refuses_enrolments_but_not_unenrolments(plain: Site) -> None:
    ana, course = _user(plain, "ana"), _course(plain)
    _enrol(plain, {"roleid": 5, "userid": ana, "courseid": course})
    for instance in plain.app.state.enrol_instances.values():
        instance["status"] = 1
    assert _enrol(plain, {"roleid": 5, "userid": ana, "courseid": course})["errorcode"] == "wsnoinstance"
    unenrolled = plain.raw("enrol_manual_unenrol_users", enrolments=[{"userid": ana, "courseid": course}])
    assert unenrolled.text == "null" and _rows(plain) == []


# core_enrol_get_enrolled_users --------------------------------------------------------------------


def test_limitnum_is_silently_ignored_and_everyone_comes_back(plain: Site) -> None:
    course = _course(plain)
    ids = [_user(plain, f"u{i}") for i in range(4)]
    _enrol(plain, *[{"roleid": 5, "userid": u, "courseid": course} for u in ids])
    assert [u["id"] for u in _enrolled(plain, course, limitnum="1")] == ids
    assert [u["id"] for u in _enrolled(plain, course, limitfrom="1", limitnumber="2")] == ids[1:3]
    assert [u["id"] for u in _enrolled(plain, course, limitfrom="-3", limitnumber="0")] == ids  # 0: no limit


def test_onlyactive_reads_the_enrolment_not_the_user(plain: Site) -> None:
    """get_enrolled_join(): ue.status active, instance enabled, timestart < now, timeend 0 or later.
    A suspended *user* with an active enrolment is listed; onlysuspended lists the rest."""
    course, now = _course(plain), int(time.time())
    ids = [_user(plain, name) for name in ("active", "susp", "future", "ended", "usersusp")]
    _enrol(
        plain,
        {"roleid": 5, "userid": ids[0], "courseid": course},
        {"roleid": 5, "userid": ids[1], "courseid": course, "suspend": 1},
        {"roleid": 5, "userid": ids[2], "courseid": course, "timestart": now + 3600},
        {"roleid": 5, "userid": ids[3], "courseid": course, "timeend": now - 3600},
        {"roleid": 5, "userid": ids[4], "courseid": course},
    )
    plain.control("POST", f"/users/{ids[4]}/suspend")
    assert [u["id"] for u in _enrolled(plain, course, onlyactive="1")] == [ids[0], ids[4]]
    assert [u["id"] for u in _enrolled(plain, course, onlysuspended="1")] == ids[1:4]
    assert [u["id"] for u in _enrolled(plain, course, onlyactive="0")] == ids
    both = _enrolled(plain, course, onlyactive="1", onlysuspended="1")
    assert both["errorcode"] == "codingerror"


def test_onlyactive_needs_enrolreview(plain: Site) -> None:
    caps = [c for c in all_capabilities() if c != "moodle/course:enrolreview"]
    create_token(plain.app.state, "noreview", username="noreview", capabilities=caps)
    course = _course(plain)
    assert _enrolled(plain, course, "noreview") == []
    refused = _enrolled(plain, course, "noreview", onlyactive="1")
    assert refused["errorcode"] == "nopermissions" and "Review course enrolments" in refused["message"]


def test_userfields_always_bring_id_and_fullname_and_refuse_unknown_names(plain: Site) -> None:
    """user_get_user_details(): id and fullname are added; a name outside user_get_default_fields()
    is `invaliduserfield` — only once there is a user to show."""
    course = _course(plain)
    assert _enrolled(plain, course, userfields="shoesize") == []
    ana = _user(plain, "ana", "Ana", "Lefèvre")
    _enrol(plain, {"roleid": 5, "userid": ana, "courseid": course})
    assert _enrolled(plain, course, userfields="username") == [
        {"id": ana, "fullname": "Ana Lefèvre", "username": "ana"}
    ]
    bad = _enrolled(plain, course, userfields="username,shoesize")
    assert bad["errorcode"] == "invaliduserfield" and bad["message"] == "Invalid user field: shoesize"
    (everything,) = _enrolled(plain, course)
    assert everything["roles"][0]["shortname"] == "student" and everything["lastcourseaccess"] == 0
    assert everything["enrolledcourses"] == [{"id": course, "fullname": "CHEM101", "shortname": "CHEM101"}]


def test_enrolledcourses_lists_only_active_enrolments(plain: Site) -> None:
    """enrol_get_users_courses($userid, onlyactive=true); the key is left out when there are none."""
    ana, one, two = _user(plain, "ana"), _course(plain, "ONE"), _course(plain, "TWO")
    _enrol(plain, {"roleid": 5, "userid": ana, "courseid": one, "suspend": 1})
    (details,) = _enrolled(plain, one, userfields="enrolledcourses")
    assert "enrolledcourses" not in details
    _enrol(plain, {"roleid": 5, "userid": ana, "courseid": two})
    (details,) = _enrolled(plain, one, userfields="enrolledcourses")
    assert [c["shortname"] for c in details["enrolledcourses"]] == ["TWO"]


def test_sortby_and_sortdirection(plain: Site) -> None:
    """ORDER BY us.id ASC by default; sortby id|firstname|lastname|siteorder, sortdirection ASC|DESC."""
    course = _course(plain)
    zoe = _user(plain, "zoe", "Zoé", "Álvarez")
    bob = _user(plain, "bob", "Bob", "Zapata")
    amy = _user(plain, "amy", "Amy", "Álvarez")
    _enrol(plain, *[{"roleid": 5, "userid": u, "courseid": course} for u in (bob, amy, zoe)])

    def order(**options: str) -> list[int]:
        return [u["id"] for u in _enrolled(plain, course, userfields="id", **options)]

    assert order() == [zoe, bob, amy]
    assert order(sortdirection="desc") == [amy, bob, zoe]
    assert order(sortby="firstname") == [amy, bob, zoe]
    assert order(sortby="siteorder") == [amy, zoe, bob]  # lastname, firstname, id
    assert _enrolled(plain, course, sortby="email")["errorcode"] == "invalidparameter"
    assert _enrolled(plain, course, sortdirection="up")["errorcode"] == "invalidparameter"


# Cohorts --------------------------------------------------------------------------------------------


def _cohort(site: Site, idnumber: str = "dept-law") -> int:
    (made,) = site.call(
        "core_cohort_create_cohorts",
        cohorts=[{"categorytype": {"type": "system", "value": ""}, "name": "Law", "idnumber": idnumber}],
    )
    return made["id"]


def _member(user: str, utype: str = "username", cohort: str = "dept-law") -> dict:
    return {"cohorttype": {"type": "idnumber", "value": cohort}, "usertype": {"type": utype, "value": user}}


def test_cohort_members_are_named_by_id_or_username_only(plain: Site) -> None:
    _user(plain, "ana", idnumber="E1")
    _cohort(plain)
    result = plain.call("core_cohort_add_cohort_members", members=[_member("E1", "idnumber")])
    assert result == {"warnings": [{"warningcode": "1", "message": "invalid parameter: usertype=idnumber"}]}


def test_cohort_members_come_ordered_by_lastname_then_firstname(plain: Site) -> None:
    zed = _user(plain, "zed", "Zed", "Abbott")
    amy = _user(plain, "amy", "Amy", "Zimmer")
    bea = _user(plain, "bea", "Béa", "Abbott")
    cid = _cohort(plain)
    plain.call("core_cohort_add_cohort_members", members=[_member(u) for u in ("amy", "zed", "bea")])
    assert plain.call("core_cohort_get_cohort_members", cohortids=[cid]) == [
        {"cohortid": cid, "userids": [bea, zed, amy]}
    ]
    members = plain.control("GET", "/cohorts/dept-law/members")
    assert members["cohort"]["id"] == cid and [m["userid"] for m in members["members"]] == [zed, amy, bea]


def test_cohort_capability_is_checked_per_member_and_fails_the_whole_call(plain: Site) -> None:
    """Entries that only warn need no capability; the first real addition without it is nopermissions
    and the transaction adds nobody."""
    _user(plain, "ana")
    _user(plain, "bo")
    cid = _cohort(plain)
    plain.call("core_cohort_add_cohort_members", members=[_member("ana")])
    caps = [c for c in all_capabilities() if c not in ("moodle/cohort:assign", "moodle/cohort:manage")]
    create_token(plain.app.state, "viewer", username="viewer", capabilities=caps)
    warned = plain.call(
        "core_cohort_add_cohort_members", "viewer", members=[_member("ana"), _member("ghost")]
    )
    assert [w["warningcode"] for w in warned["warnings"]] == ["3", "2"]
    refused = plain.call("core_cohort_add_cohort_members", "viewer", members=[_member("bo"), _member("ana")])
    assert refused["errorcode"] == "nopermissions"
    assert len(plain.control("GET", "/cohorts/dept-law/members")["members"]) == 1
    missing = plain.call(
        "core_cohort_delete_cohort_members", "viewer", members=[{"cohortid": 999, "userid": 2}]
    )
    assert missing["exception"] == "dml_missing_record_exception"  # the cohort is looked up first
    assert plain.call("core_cohort_get_cohort_members", cohortids=[cid])[0]["cohortid"] == cid


def test_get_cohorts_skips_unknown_ids(plain: Site) -> None:
    cid = _cohort(plain)
    cohorts = plain.call("core_cohort_get_cohorts", cohortids=[999, cid])
    assert [c["id"] for c in cohorts] == [cid] and cohorts[0]["customfields"] == []


# Courses ----------------------------------------------------------------------------------------------


def test_courses_by_field_lists_the_site_course_and_shows_idnumber_to_managers_only(plain: Site) -> None:
    one = _course(plain, "ONE", idnumber="one-id")
    two = _course(plain, "TWO")
    assert [c["id"] for c in plain.call("core_course_get_courses_by_field")["courses"]] == [1, one, two]
    ordered = plain.call("core_course_get_courses_by_field", field="ids", value=f"{two},{one},{two}")
    assert [c["id"] for c in ordered["courses"]] == [two, one]  # validate_courses keeps the order asked
    (found,) = plain.call("core_course_get_courses_by_field", field="idnumber", value="one-id")["courses"]
    assert found["idnumber"] == "one-id"
    caps = [c for c in all_capabilities() if c != "moodle/course:update"]
    create_token(plain.app.state, "reader", username="reader", capabilities=caps)
    answer = plain.call("core_course_get_courses_by_field", "reader", field="shortname", value="ONE")
    (seen,) = answer["courses"]
    assert seen["id"] == one and "idnumber" not in seen and "timecreated" not in seen
