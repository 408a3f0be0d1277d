"""MOODLE_FACTS "Errors" table, line by line, through raw HTTP, with debugging off and on."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from simulator.tests.conftest import TOKEN, Site
from simulator.tokens import create_token

NS = "core\\exception\\"


@dataclass
class Case:
    """One row: arrange the site, make one call, expect this error (debuginfo only with debugging)."""

    id: str
    function: str
    params: dict[str, Any]
    exception: str
    errorcode: str | Callable[[bool], str]
    setup: Callable[[Site], str | None] = lambda site: None  # may return the token to use
    message: str | None = None
    debuginfo: str | None = None  # substring expected in debuginfo when debugging is on
    config: dict[str, Any] = field(default_factory=dict)


def _token(**kwargs: Any) -> Callable[[Site], str]:
    def setup(site: Site) -> str:
        options = dict(kwargs)
        create_token(site.app.state, "special", username=options.pop("username", "wsother"), **options)
        return "special"

    return setup


def _existing_user(**overrides: Any) -> Callable[[Site], None]:
    def setup(site: Site) -> None:
        assert site.call("core_user_create_users", users=[site.user(**overrides)])[0]["id"]

    return setup


def _suspend_service_user(site: Site) -> None:
    userid = site.app.state.tokens[TOKEN]["userid"]
    site.control("POST", f"/users/{userid}/suspend")


def _create_course(site: Site) -> None:
    site.control("POST", "/courses", {"shortname": "MATH101"})


def _users(**overrides: Any) -> dict:
    user = {
        "username": "bob",
        "firstname": "Bob",
        "lastname": "Doe",
        "email": "bob@example.org",
        "password": "Secret-123",
    }
    user.update(overrides)
    return {"users": [user]}


CASES = [
    Case(
        "unknown token",
        "core_webservice_get_site_info",
        {},
        NS + "moodle_exception",
        "invalidtoken",
        setup=lambda s: "nope",
        message="Invalid token - token not found",
    ),
    Case(
        "expired token first call",
        "core_webservice_get_site_info",
        {},
        "webservice_access_exception",
        "accessexception",
        setup=_token(valid_until=time.time() - 5),
        message="Access control exception",
        debuginfo="token expired",
    ),
    Case(
        "IP outside restriction",
        "core_webservice_get_site_info",
        {},
        "webservice_access_exception",
        "accessexception",
        setup=_token(iprestriction="10.0.0.0/8,192.168.1.7"),
        message="Access control exception",
        debuginfo="IP:127.0.0.1 is not supported",
    ),
    Case(
        "function not in service",
        "core_user_create_users",
        _users(),
        "webservice_access_exception",
        "accessexception",
        setup=_token(functions=["core_webservice_get_site_info"]),
        message="Access control exception",
        debuginfo="Access to the function core_user_create_users()",
    ),
    Case(
        "service disabled",
        "core_webservice_get_site_info",
        {},
        "webservice_access_exception",
        "accessexception",
        setup=_token(service_enabled=False),
        debuginfo="Web service is not available",
    ),
    Case(
        "user not authorised for service",
        "core_webservice_get_site_info",
        {},
        "webservice_access_exception",
        "accessexception",
        setup=_token(authorised=False),
        debuginfo="not allowed for this service",
    ),
    Case(
        "missing webservice/rest:use",
        "core_webservice_get_site_info",
        {},
        "webservice_access_exception",
        "accessexception",
        setup=_token(capabilities=["moodle/user:viewdetails"]),
        debuginfo="missing capability: webservice/rest:use",
    ),
    Case(
        "service user suspended",
        "core_webservice_get_site_info",
        {},
        NS + "moodle_exception",
        "wsaccessusersuspended",
        setup=_suspend_service_user,
    ),
    Case(
        "function that does not exist",
        "core_user_no_such_function",
        {},
        "dml_missing_record_exception",
        lambda debug: "invalidrecord" if debug else "invalidrecordunknown",
        debuginfo="external_functions",
    ),
    Case(
        "write without capability",
        "core_user_create_users",
        _users(),
        NS + "required_capability_exception",
        "nopermissions",
        setup=_token(capabilities=["webservice/rest:use"]),
        debuginfo="moodle/user:create",
    ),
    Case(
        "admin maintenance mode",
        "core_webservice_get_site_info",
        {},
        NS + "moodle_exception",
        "sitemaintenance",
        config={"maintenance": "admin"},
    ),
    Case(
        "weak password",
        "core_user_create_users",
        _users(password="short"),
        NS + "moodle_exception",
        "<div>Passwords must be at least 8 characters long.</div>"
        "<div>Passwords must have at least 1 digit(s).</div>"
        "<div>Passwords must have at least 1 upper case letter(s).</div>"
        "<div>Passwords must have at least 1 special character(s) such as as *, -, or #.</div>",
    ),
    Case(
        "duplicate course shortname",
        "core_course_create_courses",
        {"courses": [{"fullname": "Maths", "shortname": "MATH101", "categoryid": 1}]},
        NS + "moodle_exception",
        "shortnametaken",
        setup=_create_course,
    ),
    Case(
        "duplicate username",
        "core_user_create_users",
        _users(username="alice"),
        NS + "invalid_parameter_exception",
        "invalidparameter",
        setup=_existing_user(),
        message="Invalid parameter value detected",
        debuginfo="Username already exists: alice",
    ),
    Case(
        "duplicate email differing in case",
        "core_user_create_users",
        _users(email="ALICE@Example.org"),
        NS + "invalid_parameter_exception",
        "invalidparameter",
        setup=_existing_user(),
        debuginfo="Email address already exists: ALICE@Example.org",
    ),
    Case(
        "look-up on an unknown field",
        "core_user_get_users_by_field",
        {"field": "shoesize", "values": ["1"]},
        NS + "coding_exception",
        "codingerror",
    ),
    Case(
        "missing record (delete unknown user)",
        "core_user_delete_users",
        {"userids": [9999]},
        "dml_missing_record_exception",
        lambda debug: "invaliduser" if debug else "invalidrecordunknown",
    ),
]

BAD_PARAMETERS = [
    ("bad email", _users(email="not-an-email"), "Invalid external api parameter"),
    ("uppercase username", _users(username="Bob"), 'expecting "username" type'),
    ("spaced username", _users(username="bob smith"), 'expecting "username" type'),
    ("blank first name", _users(firstname="  "), "The field firstname cannot be blank"),
    ("unknown auth", _users(auth="kerberos"), "Invalid authentication type: kerberos"),
    (
        "missing field",
        {"users": [{"username": "bob", "firstname": "B", "email": "b@x.org", "password": "x"}]},
        "Missing required key in single structure: lastname",
    ),
    ("neither password nor createpassword", _users(password=None), "you must provide a password"),
    ("true for a boolean", _users(password=None, createpassword="true"), 'expecting "bool" type'),
    (
        "username twice in one batch",
        {"users": [_users()["users"][0], _users(email="b2@x.org")["users"][0]]},
        "Username already exists: bob",
    ),
    ("unknown key", _users(shoesize="44"), "Unexpected keys (shoesize) detected"),
    ("uppercase username in look-up", {"field": "username", "values": ["Alice"]}, "value is invalid"),
]


def _assert_error(
    site: Site, response: Any, exception: str, errorcode: str, message: str | None, debuginfo: str | None
) -> None:
    assert response.status_code == 200
    body = response.json()
    assert body["exception"] == exception
    assert body["errorcode"] == errorcode
    if message:
        assert body["message"] == message
    if site.app.config.debug:
        if debuginfo:
            assert debuginfo in body["debuginfo"]
    else:
        assert "debuginfo" not in body
        if debuginfo:
            assert debuginfo not in response.text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_error_table(site: Site, case: Case) -> None:
    site.app.config.update(case.config)
    token = case.setup(site) or TOKEN
    response = site.raw(case.function, token, **case.params)
    debug = bool(site.app.config.debug)
    code = case.errorcode(debug) if callable(case.errorcode) else case.errorcode
    _assert_error(site, response, case.exception, code, case.message, case.debuginfo)


@pytest.mark.parametrize(("name", "params", "reason"), BAD_PARAMETERS, ids=[b[0] for b in BAD_PARAMETERS])
def test_bad_parameters_are_invalidparameter_with_reason_only_in_debuginfo(
    site: Site, name: str, params: dict, reason: str
) -> None:
    function = "core_user_get_users_by_field" if "look-up" in name else "core_user_create_users"
    response = site.raw(function, **params)
    _assert_error(
        site,
        response,
        NS + "invalid_parameter_exception",
        "invalidparameter",
        "Invalid parameter value detected",
        reason,
    )
    assert site.app.state.users.keys() == {1, 2, 3}  # nobody was created


def test_expired_token_is_deleted_after_first_call(site: Site) -> None:
    create_token(site.app.state, "old", valid_until=time.time() - 1)
    assert site.call("core_webservice_get_site_info", "old")["errorcode"] == "accessexception"
    assert "old" not in site.app.state.tokens
    assert site.call("core_webservice_get_site_info", "old")["errorcode"] == "invalidtoken"


def test_lookup_without_capability_is_empty_not_an_error(site: Site) -> None:
    create_token(site.app.state, "blind", username="blind", capabilities=["webservice/rest:use"])
    me = site.app.state.tokens["blind"]["userid"]
    # Only the caller itself comes back: Moodle always shows a user their own record.
    assert [
        u["id"] for u in site.call("core_user_get_users_by_field", "blind", field="id", values=[me, 2])
    ] == [me]
    found = site.call("core_user_get_users", "blind", criteria=[{"key": "email", "value": "%"}])
    assert [u["id"] for u in found["users"]] == [me] and found["warnings"] == []


def test_cli_maintenance_is_http_503_html(make_site: Callable[..., Site]) -> None:
    site = make_site(maintenance="cli")
    response = site.raw("core_webservice_get_site_info")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert "<html>" in response.text.lower()


def test_rest_disabled_is_http_403_empty(make_site: Callable[..., Site]) -> None:
    site = make_site(rest_enabled=False)
    response = site.raw("core_webservice_get_site_info")
    assert response.status_code == 403
    assert response.content == b""


@pytest.mark.parametrize("kind", ["lockwait", "deadlock", "constraint"])
def test_dml_write_exception_names_cause_only_in_debuginfo(site: Site, kind: str) -> None:
    site.control("POST", "/inject", {"kinds": [kind]})
    response = site.raw("core_user_create_users", **_users())
    body = response.json()
    assert body["exception"] == "dml_write_exception"
    assert body["errorcode"] == "dmlwriteexception"
    assert body["message"] == "Error writing to database"
    words = {
        "lockwait": "Lock wait timeout exceeded",
        "deadlock": "Deadlock found",
        "constraint": "Duplicate entry",
    }
    if site.app.config.debug:
        assert words[kind] in body["debuginfo"]
    else:
        assert "debuginfo" not in body
    assert site.call("core_user_get_users_by_field", field="username", values=["bob"]) == []


@pytest.mark.parametrize("status", ["502", "503", "504"])
def test_injected_proxy_errors_are_html(plain: Site, status: str) -> None:
    plain.control("POST", "/inject", {"kinds": [status]})
    response = plain.raw("core_webservice_get_site_info")
    assert response.status_code == int(status)
    assert response.text.startswith("<html>")
    assert plain.control("GET", "/stats")["injected_errors"] == {status: 1}


def test_developer_debugging_appends_reason_to_message(make_site: Callable[..., Site]) -> None:
    site = make_site(debug="developer")
    body = site.call("core_user_create_users", **_users(username="Bob"))
    assert body["message"].startswith("Invalid parameter value detected (")
    assert "debuginfo" not in body


def test_access_exception_reasons_look_identical_without_debugging(plain: Site) -> None:
    create_token(plain.app.state, "ip", username="ipuser", iprestriction="10.0.0.1")
    create_token(plain.app.state, "fn", username="fnuser", functions=["core_user_get_users"])
    ip = plain.call("core_webservice_get_site_info", "ip")
    fn = plain.call("core_webservice_get_site_info", "fn")
    assert (
        ip
        == fn
        == {
            "exception": "webservice_access_exception",
            "errorcode": "accessexception",
            "message": "Access control exception",
        }
    )


def test_php_fatal_is_http_200_with_html(plain: Site) -> None:
    plain.control("POST", "/inject", {"kinds": ["fatal"], "function": "core_user_get_users"})
    # Other functions are unaffected by an injection aimed at one.
    assert plain.raw("core_webservice_get_site_info").json()["username"] == "wsuser"
    response = plain.raw("core_user_get_users", criteria=[{"key": "id", "value": "2"}])
    assert response.status_code == 200
    assert response.text.startswith("<br />\n<b>Fatal error</b>")


def test_developer_debugging_never_sends_an_empty_debuginfo(make_site: Callable[..., Site]) -> None:
    site = make_site(debug="developer")
    body = site.call("core_user_get_users_by_field", field="nosuchfield", values=["x"])
    assert body["errorcode"] == "codingerror"
    assert "debuginfo" not in body


def test_a_request_without_wsfunction_is_an_invalid_parameter(plain: Site) -> None:
    for pairs in ([("wstoken", TOKEN)], [("wstoken", TOKEN), ("wsfunction", "")]):
        response = plain.post([*pairs, ("moodlewsrestformat", "json")])
        assert response.json()["errorcode"] == "invalidparameter"


@pytest.mark.parametrize(
    ("field", "value"),
    [("department", "R&D <Research>"), ("city", "Grade <3"), ("institution", "<b>Uni</b>")],
)
def test_a_text_field_with_a_tag_fails_the_whole_create(plain: Site, field: str, value: str) -> None:
    (ann,) = _users(username="ann", email="ann@example.org")["users"]
    (bob,) = _users()["users"]
    body = plain.call("core_user_create_users", users=[ann, {**bob, field: value}])
    assert body["errorcode"] == "invalidparameter"
    assert plain.call("core_user_get_users_by_field", field="username", values=["ann"]) == []
    # "<" before a space opens no tag, and ">" alone is kept: nothing changes, so Moodle takes it.
    created = plain.call("core_user_create_users", users=[{**bob, field: "R&D > 3 < 4"}])
    assert created[0]["username"] == "bob", created


def test_a_lang_the_site_lacks_fails_the_create(make_site: Callable[..., Site]) -> None:
    site = make_site(langs=("en", "de"))
    assert site.call("core_user_create_users", **_users(lang="fr"))["errorcode"] == "invalidparameter"
    assert site.call("core_user_create_users", **_users(lang="de"))[0]["username"] == "bob"
