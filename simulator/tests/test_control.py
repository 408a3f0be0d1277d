"""The /_sim/ control API: tokens, drift, switches, faults, stats."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from simulator.app import SimConfig, create_app
from simulator.tests.conftest import TOKEN, Site


def test_token_with_function_list_capabilities_and_ip(plain: Site) -> None:
    made = plain.control(
        "POST",
        "/tokens",
        {
            "token": "abc",
            "functions": ["core_webservice_get_site_info"],
            "username": "svc",
            "capabilities": ["webservice/rest:use"],
            "valid_until": time.time() + 60,
            "iprestriction": "127.0.0.0/8",
        },
    )
    assert made["token"] == "abc" and plain.app.state.users[made["userid"]]["username"] == "svc"
    assert plain.call("core_webservice_get_site_info", "abc")["username"] == "svc"
    assert plain.call("core_user_get_users", "abc", criteria=[{"key": "id", "value": "2"}])["errorcode"] == (
        "accessexception"
    )
    plain.control("DELETE", "/tokens/abc")
    assert plain.call("core_webservice_get_site_info", "abc")["errorcode"] == "invalidtoken"


def test_suspend_and_unsuspend_service_user(plain: Site) -> None:
    userid = plain.app.state.tokens[TOKEN]["userid"]
    plain.control("POST", f"/users/{userid}/suspend")
    assert plain.call("core_webservice_get_site_info")["errorcode"] == "wsaccessusersuspended"
    plain.control("POST", f"/users/{userid}/unsuspend")
    assert plain.call("core_webservice_get_site_info")["userid"] == userid


def test_direct_user_edits_seed_drift(plain: Site) -> None:
    user = plain.control("POST", "/users", {"username": "drift", "email": "Drift@X.org", "firstname": "D"})
    plain.control("PATCH", f"/users/{user['id']}", {"city": "Gdańsk"})
    found = plain.call("core_user_get_users_by_field", field="username", values=["drift"])
    assert found[0]["city"] == "Gdańsk"
    deleted = plain.control("DELETE", f"/users/{user['id']}")
    assert deleted["deleted"] == 1 and deleted["username"].startswith("drift@x.org.")
    listed = plain.control("GET", "/users")["users"]
    assert any(u["id"] == user["id"] and u["deleted"] == 1 for u in listed)
    assert all("password" not in u for u in listed)


def test_config_switches_and_revoke_after(plain: Site) -> None:
    config = plain.control("POST", "/config", {"debug": True, "maintenance": "admin"})
    assert config["debug"] is True and config["maintenance"] == "admin"
    assert plain.call("core_webservice_get_site_info")["errorcode"] == "sitemaintenance"
    plain.control("POST", "/config", {"maintenance": "off", "revoke_after": {"token": TOKEN, "calls": 2}})
    assert "userid" in plain.call("core_webservice_get_site_info")
    assert "userid" in plain.call("core_webservice_get_site_info")
    assert plain.call("core_webservice_get_site_info")["errorcode"] == "invalidtoken"
    assert plain.control("GET", "/config")["max_input_vars"] == 5000
    bad = plain.client.post("/_sim/config", json={"nonsense": 1})
    assert bad.status_code == 400


def test_stats_and_reset(plain: Site) -> None:
    plain.call("core_webservice_get_site_info")
    plain.call("core_user_get_users", criteria=[{"key": "id", "value": "2"}])
    stats = plain.control("GET", "/stats")
    assert stats["calls"] == {"core_webservice_get_site_info": 1, "core_user_get_users": 1}
    assert stats["total_calls"] == 2 and stats["max_in_flight"] == 1 and stats["in_flight"] == 0
    assert [name for _, name, _ in stats["call_starts"]] == [
        "core_webservice_get_site_info",
        "core_user_get_users",
    ]
    assert set(stats) >= {"injected_errors", "variables_dropped", "degrade_started_at"}
    reset = plain.control("POST", "/reset")
    assert reset["total_calls"] == 0 and reset["calls"] == {} and reset["call_starts"] == []
    assert plain.call("core_webservice_get_site_info")["username"] == "wsuser"  # users untouched


def test_error_rate_injects_the_configured_kinds(make_site: Callable[..., Site]) -> None:
    site = make_site(error_rate=1.0, error_kinds=("lockwait",), seed=1)
    assert site.call("core_user_delete_users", userids=[2])["errorcode"] == "dmlwriteexception"
    site.control("POST", "/config", {"error_kinds": ["504"]})
    assert site.raw("core_webservice_get_site_info").status_code == 504
    assert site.control("GET", "/stats")["injected_errors"] == {"lockwait": 1, "504": 1}


def test_control_api_absent_without_control_flag() -> None:
    app = create_app(SimConfig(), control=False)
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://moodle.test") as client:
        assert client.get("/_sim/stats").status_code == 404


def _courses(site: Site, field: str, value: str) -> list[dict]:
    return site.call("core_course_get_courses_by_field", field=field, value=value)["courses"]


def test_course_with_or_without_manual_enrolment(plain: Site) -> None:
    body = {"shortname": "CHEM101", "fullname": "Química general", "idnumber": "chem-101"}
    made = plain.control("POST", "/courses", body)
    assert {k: made[k] for k in body} == body
    assert _courses(plain, "shortname", "CHEM101")[0]["enrollmentmethods"] == ["manual"]
    selfonly = plain.control("POST", "/courses", {"shortname": "ORIENT", "manual": False})
    assert _courses(plain, "id", str(selfonly["id"]))[0]["enrollmentmethods"] == []
    again = plain.client.post("/_sim/courses", json={"shortname": "CHEM101"})
    assert again.status_code == 409


def test_assignable_roles_by_token_or_by_user(plain: Site) -> None:
    userid = plain.app.state.tokens[TOKEN]["userid"]
    alice = plain.control("POST", "/users", {"username": "alice", "firstname": "A", "lastname": "B"})
    course = plain.control("POST", "/courses", {"shortname": "LAW101"})["id"]
    made = plain.control("POST", "/assignable-roles", {"token": TOKEN, "roleids": [5]})
    assert made == {"userid": userid, "roleids": [5]}
    enrol = [{"roleid": 3, "userid": alice["id"], "courseid": course}]
    assert plain.call("enrol_manual_enrol_users", enrolments=enrol)["errorcode"] == "wsusercannotassign"
    reset = plain.control("POST", "/assignable-roles", {"userid": userid, "roleids": None})
    assert reset["roleids"] == [3, 4, 5]
    assert plain.call("enrol_manual_enrol_users", enrolments=enrol) is None
    assert plain.client.post("/_sim/assignable-roles", json={"roleids": [5]}).status_code == 400
    unknown = plain.client.post("/_sim/assignable-roles", json={"userid": 999, "roleids": [5]})
    assert unknown.status_code == 404


def test_enrolments_and_cohort_members_read_back(plain: Site) -> None:
    alice = plain.control("POST", "/users", {"username": "alice", "firstname": "A", "lastname": "B"})
    course = plain.control("POST", "/courses", {"shortname": "LAW101"})["id"]
    plain.control("POST", "/courses", {"shortname": "LAW210"})
    enrol = [{"roleid": 5, "userid": alice["id"], "courseid": course}]
    plain.call("enrol_manual_enrol_users", enrolments=enrol)
    row = {"course": "LAW101", "userid": alice["id"], "username": "alice", "roles": [5], "status": 0}
    row.update(timestart=0, timeend=0)
    assert plain.control("GET", "/enrolments?course=LAW101") == {"enrolments": [row]}
    assert plain.control("GET", "/enrolments?course=LAW210") == {"enrolments": []}
    assert plain.control("GET", "/enrolments") == {"enrolments": [row]}
    assert plain.client.get("/_sim/enrolments?course=NOPE").status_code == 404
    cohort = {
        "categorytype": {"type": "system", "value": ""},
        "name": "Économie",
        "idnumber": "dept-economie",
    }
    plain.call("core_cohort_create_cohorts", cohorts=[cohort])
    member = {
        "cohorttype": {"type": "idnumber", "value": "dept-economie"},
        "usertype": {"type": "username", "value": "alice"},
    }
    plain.call("core_cohort_add_cohort_members", members=[member])
    members = plain.control("GET", "/cohorts/dept-economie/members")
    assert members["cohort"]["name"] == "Économie"
    assert members["members"] == [{"userid": alice["id"], "username": "alice"}]
    assert plain.client.get("/_sim/cohorts/nope/members").status_code == 404
