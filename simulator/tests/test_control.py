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
