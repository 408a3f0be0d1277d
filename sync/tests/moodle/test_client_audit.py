"""Every attempt reaches the audit hook; no token or password ever does, nor any log line."""

import logging

import pytest

from sync.moodle import errors
from sync.moodle.client import RetryPolicy
from sync.moodle.errors import MoodleError, SeamError


def test_records_describe_each_attempt(sim, make_client, records, site_name):
    client = make_client()
    client.create_users(
        [
            {
                "username": "ana",
                "password": "Str0ng-Passw0rd!",
                "firstname": "Ana",
                "lastname": "B",
                "email": "a@x.org",
            }
        ]
    )
    (record,) = records
    assert record.site == site_name
    assert record.function == "core_user_create_users"
    assert record.outcome == "ok"
    assert record.http_status == 200
    assert record.attempt == 1
    assert record.items == 1
    assert record.started_at.tzinfo is not None
    assert record.duration_ms >= 0
    assert record.params == {
        "users": [
            {"username": "ana", "password": "***", "firstname": "Ana", "lastname": "B", "email": "a@x.org"}
        ]
    }


def test_long_lists_are_summarised(make_client, records):
    make_client().get_users_by_field("username", [f"u{i}" for i in range(30)])
    assert records[0].params == {"field": "username", "values": ["u0", "u1", "u2", "u3", "u4", "... 25 more"]}
    assert records[0].items == 30


def test_a_failing_hook_never_fails_the_call(make_client, caplog):
    def broken(record):
        raise RuntimeError("database is gone")

    assert make_client(on_call=broken).get_site_info()["sitename"]
    assert "on_call hook failed" in caplog.text


def test_no_token_in_any_record_or_log_line(sim, token, make_client, records, caplog):
    """A run full of failures, with every logger at DEBUG; then search everything for the token."""
    caplog.set_level(logging.DEBUG)
    sim.config(debug=True)
    client = make_client(retry=RetryPolicy(attempts=2, base_s=0, cap_s=0))
    secret_password = "Sup3r-Secret-Passw0rd!"
    user = {
        "username": "ana",
        "password": secret_password,
        "firstname": "A",
        "lastname": "B",
        "email": "a@x.org",
    }

    client.preflight()
    client.create_users([user])
    failures = [
        lambda: client.create_users([user]),  # conflict
        lambda: client.create_users([{**user, "username": "Ana"}]),  # invalid parameter
        lambda: client.get_users_by_field("nosuchfield", ["x"]),  # coding error
        lambda: client.call("core_nonexistent_function", token=token),  # a parameter named token
    ]
    for fail in failures:
        with pytest.raises(MoodleError):
            fail()
    sim.config(error_rate=1.0, error_kinds=["503", "lockwait"])
    with pytest.raises(MoodleError) as caught:
        client.update_users([{"id": 2, "password": secret_password}])
    assert caught.value.category == errors.TRANSIENT
    sim.config(error_rate=0.0, maintenance="cli")
    with pytest.raises(SeamError):
        client.get_site_info()
    sim.config(maintenance="off")
    sim.revoke(token)
    with pytest.raises(MoodleError):
        client.get_site_info()

    assert len(records) >= 10
    # The test's own control requests (/_sim/tokens/<token>) are not the client's doing.
    lines = [r for r in caplog.records if "/_sim/" not in r.getMessage()]
    everything = "\n".join(repr(r) for r in records)
    everything += "\n".join(r.getMessage() + repr(r.args) + (r.exc_text or "") for r in lines)
    assert token not in everything
    assert secret_password not in everything
    assert {r.outcome for r in records} >= {"ok", errors.CONFLICT, errors.CLIENT_FAULT, errors.CONFIG}


def test_token_travels_only_in_the_post_body(redis_client, site_name):
    import httpx

    from sync.moodle.client import MoodleClient

    seen = []

    def moodle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"sitename": "x", "functions": []})

    token = "b" * 32
    with MoodleClient(
        "https://moodle.test/",
        token,
        site=site_name,
        redis=redis_client,
        transport=httpx.MockTransport(moodle),
    ) as client:
        client.get_site_info()
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://moodle.test/webservice/rest/server.php"
    assert token not in str(request.headers)
    assert request.content.decode().startswith(f"wstoken={token}&wsfunction=core_webservice_get_site_info")
    assert token not in repr(client)


def test_a_page_of_enrolled_users_is_as_big_as_the_page_asked_for(make_client, records):
    """The breaker allows a call the time its size explains: a page of 1,000 participants is a big read,
    not a one-item call that took too long."""
    make_client().get_enrolled_users(1, page_size=1000, userfields=["id"])
    (page,) = records
    assert page.function == "core_enrol_get_enrolled_users" and page.items == 1000
    make_client().get_enrolled_users(1)
    assert records[1].items == 0  # unpaged: its size is not known before the answer
