import pytest

from sync.moodle import errors
from sync.moodle.errors import MoodleError, classify


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"http_status": 502, "body": "<html>Bad Gateway</html>"}, errors.TRANSIENT),
        ({"http_status": 503, "body": ""}, errors.TRANSIENT),
        ({"http_status": 504, "body": "Gateway Time-out"}, errors.TRANSIENT),
        ({"http_status": 503, "body": "<h1>Site is under maintenance</h1>"}, errors.MAINTENANCE),
        ({"timed_out": True}, errors.TRANSIENT),
        ({"http_status": 403, "body": ""}, errors.AUTH),
        ({"http_status": 200, "body": "<b>Fatal error</b>: Allowed memory size"}, errors.CLIENT_FAULT),
        ({"http_status": 404, "body": "Not Found"}, errors.CLIENT_FAULT),
        ({"errorcode": "invalidtoken"}, errors.AUTH),
        ({"errorcode": "accessexception"}, errors.AUTH),
        ({"errorcode": "nopermissions"}, errors.AUTH),
        ({"errorcode": "wsaccessusersuspended"}, errors.AUTH),
        ({"errorcode": "sitemaintenance"}, errors.MAINTENANCE),
        ({"errorcode": "invalidrecordunknown"}, errors.CONFIG),
        ({"errorcode": "invalidrecord"}, errors.CONFIG),
        ({"errorcode": "invalidrecordunknown", "function_known": True}, errors.CLIENT_FAULT),
        ({"errorcode": "invaliduser"}, errors.CLIENT_FAULT),
        ({"errorcode": "codingerror"}, errors.CONFIG),
        ({"errorcode": "invalidparameter"}, errors.CLIENT_FAULT),
        ({"errorcode": "invalidparameter", "debuginfo": "Username already exists: ana"}, errors.CONFLICT),
        (
            {"errorcode": "invalidparameter", "debuginfo": "Email address already exists: a@x"},
            errors.CONFLICT,
        ),
        (
            {"errorcode": "invalidparameter", "message": "Invalid parameter (Username already exists: ana)"},
            errors.CONFLICT,
        ),
        ({"errorcode": "dmlwriteexception", "debuginfo": "Lock wait timeout exceeded"}, errors.TRANSIENT),
        ({"errorcode": "dmlwriteexception", "debuginfo": "ERROR: deadlock detected"}, errors.TRANSIENT),
        (
            {"errorcode": "dmlwriteexception", "debuginfo": "duplicate key value violates unique constraint"},
            errors.CLIENT_FAULT,
        ),
        ({"errorcode": "dmlwriteexception", "message": "Error writing to database"}, errors.TRANSIENT),
        ({"errorcode": "shortnametaken"}, errors.CLIENT_FAULT),
        ({"errorcode": "<div>Passwords must be at least 8 characters long.</div>"}, errors.CLIENT_FAULT),
    ],
)
def test_classify(kwargs, expected):
    assert classify(**kwargs) == expected


def test_classify_ignores_exception_class_names():
    # Only keyword arguments about codes and statuses exist; a class name cannot sway the result.
    assert "exception" not in classify.__code__.co_varnames[: classify.__code__.co_kwonlyargcount]


def test_moodle_error_says_what_happened():
    error = MoodleError(
        errors.AUTH,
        "Access control exception",
        exception="webservice_access_exception",
        errorcode="accessexception",
        debuginfo="Access to the function core_user_create_users() is not allowed.",
        http_status=200,
        function="core_user_create_users",
    )
    # A sentence for people: what failed, the category in words, the errorcode, then what to do.
    assert str(error) == (
        "core_user_create_users failed: Access control exception"
        " — Access to the function core_user_create_users() is not allowed. (authorization, accessexception)."
        " Check the token on the site's token page: expired, revoked, IP restriction, the service's"
        " functions or its user's capabilities."
    )
    refused = MoodleError(errors.CLIENT_FAULT, "x", exception="invalid_parameter_exception")
    assert "exception" not in str(refused)  # Moodle's class names never reach a page
    assert error.stops_run and not error.retryable
    assert MoodleError(errors.MAINTENANCE, "x").retryable


def test_errors_survive_pickling_for_celery():
    import pickle

    from sync.moodle.errors import BreakerOpen

    error = MoodleError(errors.CONFLICT, "Invalid parameter value detected", errorcode="invalidparameter")
    error.partial = [{"id": 3}]
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (copy.category, copy.errorcode, copy.partial, str(copy)) == (
        errors.CONFLICT,
        "invalidparameter",
        [{"id": 3}],
        str(error),
    )
    opened = pickle.loads(pickle.dumps(BreakerOpen("north", "p90 latency", 12.5)))  # noqa: S301
    assert (opened.site, opened.reason, opened.next_probe_at) == ("north", "p90 latency", 12.5)
