"""Every error line of MOODLE_FACTS, through the client and the simulator, with debugging off, on
and at developer level: the category must never depend on debuginfo being there, except that a
conflict can only be recognised when it is."""

import time

import httpx
import pytest

from sync.moodle import errors
from sync.moodle.client import MoodleClient, RetryPolicy
from sync.moodle.errors import MoodleError

DEBUG_LEVELS = [False, True, "developer"]

ALICE = {"username": "alice", "firstname": "Alice", "lastname": "Liddell", "email": "alice@x.org"}
STRONG = "Str0ng-Passw0rd!"


def new_user(**fields):
    return {**ALICE, "password": STRONG, **fields}


def expect(call, category: str, errorcode: str | None = None) -> MoodleError:
    with pytest.raises(MoodleError) as caught:
        call()
    error = caught.value
    assert error.category == category, str(error)
    if errorcode is not None:
        assert error.errorcode == errorcode
    return error


@pytest.fixture(params=DEBUG_LEVELS, ids=["debug-off", "debug-on", "debug-developer"])
def debug(request, sim):
    sim.config(debug=request.param)
    return request.param


def test_unknown_token(debug, make_client):
    error = expect(make_client("0" * 32).get_site_info, errors.AUTH, "invalidtoken")
    assert error.message == "Invalid token - token not found"


def test_expired_token_first_call_then_invalid(debug, sim, make_client):
    sim.token("expiring-token-value", valid_until=int(time.time()) - 5)
    client = make_client("expiring-token-value")
    expect(client.get_site_info, errors.AUTH, "accessexception")
    expect(client.get_site_info, errors.AUTH, "invalidtoken")


def test_ip_restriction(debug, sim, make_client):
    sim.token("ip-token-value", iprestriction="10.0.0.0/8")
    expect(make_client("ip-token-value").get_site_info, errors.AUTH, "accessexception")
    assert make_client("ip-token-value", remote_addr="10.1.2.3").get_site_info()["userid"]


def test_function_not_in_service(debug, sim, make_client):
    sim.token("narrow-token-value", functions=["core_webservice_get_site_info"])
    error = expect(
        lambda: make_client("narrow-token-value").create_users([new_user()]), errors.AUTH, "accessexception"
    )
    assert error.message.startswith("Access control exception")
    assert (error.debuginfo is not None) == (debug is True)


def test_suspended_service_user(debug, sim, make_client):
    userid = sim.token("suspended-token-value", username="wsother")["userid"]
    sim.suspend(userid)
    expect(make_client("suspended-token-value").get_site_info, errors.AUTH, "wsaccessusersuspended")


def test_function_that_does_not_exist_is_config(debug, make_client):
    error = expect(lambda: make_client().call("core_user_frobnicate_users"), errors.CONFIG)
    assert error.errorcode == ("invalidrecord" if debug else "invalidrecordunknown")
    assert error.stops_run


def test_missing_record_of_a_known_function_is_data_not_config(debug, make_client):
    # Same errorcode as a missing function; the token's function list tells them apart.
    error = expect(lambda: make_client().delete_users([424242]), errors.CLIENT_FAULT)
    assert error.errorcode in {"invalidrecordunknown", "invalidrecord", "invaliduser"}


def test_missing_capability_for_a_write(debug, sim, make_client):
    sim.token("weak-token-value", username="weakuser", capabilities=["webservice/rest:use"])
    expect(lambda: make_client("weak-token-value").create_users([new_user()]), errors.AUTH, "nopermissions")


def test_missing_capability_for_a_lookup_is_silently_empty(debug, sim, make_client):
    sim.token("blind-token-value", username="blinduser", capabilities=["webservice/rest:use"])
    assert make_client("blind-token-value").get_users_by_field("username", ["admin"]) == []
    assert make_client().get_users_by_field("username", ["admin"])[0]["id"] == 2


def test_admin_maintenance_mode_is_retried_then_reported(debug, sim, make_client, sleeps, records):
    sim.config(maintenance="admin")
    expect(make_client().get_site_info, errors.MAINTENANCE, "sitemaintenance")
    assert len(sleeps) == 2  # three attempts
    assert [r.outcome for r in records] == [errors.MAINTENANCE] * 3


def test_cli_maintenance_mode_is_an_html_503(debug, sim, make_client):
    sim.config(maintenance="cli")
    error = expect(make_client().get_site_info, errors.MAINTENANCE)
    assert error.http_status == 503
    assert error.errorcode is None


def test_rest_disabled_is_403_auth(debug, sim, make_client):
    sim.config(rest_enabled=False)
    error = expect(make_client().get_site_info, errors.AUTH)
    assert error.http_status == 403
    assert error.message == (
        "HTTP 403 with an empty answer: web services or the REST protocol are disabled in Moodle"
    )
    assert error.raw == "(empty body)"


def test_weak_password_is_a_client_fault_that_shows_the_policy(debug, make_client):
    error = expect(lambda: make_client().create_users([new_user(password="abc")]), errors.CLIENT_FAULT)
    assert "Passwords must be at least 8 characters long." in error.errorcode


def test_duplicate_course_shortname(debug, make_client):
    client = make_client()
    course = {"fullname": "Physics", "shortname": "PHY1", "categoryid": 1}
    client.call("core_course_create_courses", courses=[course])
    expect(
        lambda: client.call("core_course_create_courses", courses=[course]),
        errors.CLIENT_FAULT,
        "shortnametaken",
    )


def test_duplicate_username_is_a_conflict_only_with_debuginfo(debug, make_client):
    client = make_client()
    client.create_users([new_user()])
    expected = errors.CONFLICT if debug else errors.CLIENT_FAULT
    error = expect(lambda: client.create_users([new_user(email="other@x.org")]), expected, "invalidparameter")
    assert error.message.startswith("Invalid parameter value detected")


def test_duplicate_email_ignores_case(debug, make_client):
    client = make_client()
    client.create_users([new_user()])
    expected = errors.CONFLICT if debug else errors.CLIENT_FAULT
    expect(lambda: client.create_users([new_user(username="alice2", email="Alice@X.org")]), expected)


def test_duplicate_email_allowed_when_the_site_allows_it(debug, sim, make_client):
    sim.config(allowaccountssameemail=True)
    client = make_client()
    client.create_users([new_user()])
    assert client.create_users([new_user(username="alice2")])[0]["username"] == "alice2"


@pytest.mark.parametrize(
    "user",
    [
        new_user(email="not-an-email"),
        new_user(username="Alice"),
        new_user(username="al ice"),
        new_user(firstname=" "),
        new_user(auth="nosuchauth"),
        {k: v for k, v in new_user().items() if k != "email"},
        {k: v for k, v in new_user().items() if k != "password"},
        new_user(nosuchkey=1),
        new_user(createpassword="true"),
    ],
    ids=[
        "email",
        "uppercase",
        "space",
        "blank-name",
        "auth",
        "missing",
        "no-password",
        "unknown-key",
        "true",
    ],
)
def test_bad_parameters_are_client_faults(debug, make_client, user):
    error = expect(lambda: make_client().create_users([user]), errors.CLIENT_FAULT, "invalidparameter")
    assert error.message.startswith("Invalid parameter value detected")
    assert not error.retryable


def test_same_username_twice_in_one_batch(debug, make_client):
    expect(
        lambda: make_client().create_users([new_user(), new_user(email="b@x.org")]),
        errors.CONFLICT if debug else errors.CLIENT_FAULT,
        "invalidparameter",
    )


def test_lookup_on_an_unknown_field_is_config(debug, make_client):
    expect(lambda: make_client().get_users_by_field("nosuchfield", ["x"]), errors.CONFIG, "codingerror")


@pytest.mark.parametrize("kind", ["lockwait", "deadlock"])
def test_lock_wait_and_deadlock_are_transient(debug, sim, make_client, records, kind):
    sim.config(error_rate=1.0, error_kinds=[kind])
    error = expect(lambda: make_client().create_users([new_user()]), errors.TRANSIENT, "dmlwriteexception")
    assert [r.attempt for r in records] == [1, 2, 3]
    assert error.message.startswith("Error writing to database")


@pytest.mark.parametrize("status", ["502", "503", "504"])
def test_gateway_errors_are_transient(debug, sim, make_client, status):
    sim.config(error_rate=1.0, error_kinds=[status])
    error = expect(make_client().get_site_info, errors.TRANSIENT)
    assert error.http_status == int(status)


def test_void_function_answers_null(debug, make_client):
    client = make_client()
    cohort = client.create_cohorts(
        [{"categorytype": {"type": "system", "value": ""}, "name": "C", "idnumber": "c"}]
    )
    assert (
        client.call("core_cohort_delete_cohort_members", members=[{"cohortid": cohort[0]["id"], "userid": 2}])
        is None
    )


def test_php_fatal_or_proxy_page_is_reported_not_decoded(sim, redis_client, site_name):
    html = "<html><body><b>Fatal error</b>: Allowed memory size of 134217728 bytes exhausted</body></html>"
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, text=html, headers={"content-type": "text/html"})
    )
    client = MoodleClient(
        "http://moodle.test", "t" * 32, site=site_name, redis=redis_client, transport=transport
    )
    error = expect(client.get_site_info, errors.CLIENT_FAULT)
    # Summarised for people; the page's first bytes are kept apart, for the call's details only.
    assert error.message == (
        "Moodle answered with an HTML page instead of JSON: a PHP error or a page from a proxy"
    )
    assert "<html" not in str(error) and "Fatal error" in error.raw
    assert "PHP error logs" in str(error)
    client.close()


def test_a_proxy_502_is_summarised_and_its_page_kept_for_the_details(sim, redis_client, site_name):
    page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    transport = httpx.MockTransport(
        lambda request: httpx.Response(502, text=page, headers={"content-type": "text/html"})
    )
    client = MoodleClient(
        "http://moodle.test", "t" * 32, site=site_name, redis=redis_client, transport=transport,
        retry=RetryPolicy(attempts=1),
    )  # fmt: skip
    error = expect(client.get_site_info, errors.TRANSIENT)
    assert str(error).startswith(
        "core_webservice_get_site_info failed: HTTP 502 from a proxy in front of Moodle: Moodle did not "
        "answer (transient)."
    )
    assert "<html" not in str(error) and "502 Bad Gateway" in error.raw
    client.close()


def test_timeouts_are_transient(redis_client, site_name):
    def slow(request):
        raise httpx.ReadTimeout("read timed out", request=request)

    slept = []
    client = MoodleClient(
        "http://moodle.test",
        "t" * 32,
        site=site_name,
        redis=redis_client,
        transport=httpx.MockTransport(slow),
        sleep=slept.append,
    )
    error = expect(client.get_site_info, errors.TRANSIENT)
    assert "in time (a timeout)" in error.message and error.raw == "ReadTimeout"
    assert len(slept) == 3  # four attempts by default
    client.close()


def test_constraint_write_failure_is_a_client_fault_when_the_reason_is_visible(sim, make_client):
    sim.config(debug=True, error_rate=1.0, error_kinds=["constraint"])
    expect(lambda: make_client().create_users([new_user()]), errors.CLIENT_FAULT, "dmlwriteexception")


def test_unexplained_write_failure_is_retried(sim, make_client, records):
    # Without debugging a constraint failure looks exactly like a lock wait; a bounded retry is
    # cheaper than sending a lock wait to the dead letters.
    sim.config(debug=False, error_rate=1.0, error_kinds=["constraint"])
    expect(lambda: make_client().create_users([new_user()]), errors.TRANSIENT, "dmlwriteexception")
    assert len(records) == 3
