"""PHP form decoding and the max_input_vars cut-off."""

from __future__ import annotations

from collections.abc import Callable

from simulator.phpform import parse
from simulator.tests.conftest import Site, flatten


def test_brackets_build_nested_arrays() -> None:
    raw = (
        "users%5B0%5D%5Busername%5D=a&users%5B0%5D%5Bcustomfields%5D%5B0%5D%5Btype%5D=dept"
        "&users%5B1%5D%5Busername%5D=b"
    )
    data, dropped = parse(raw, 5000)
    assert dropped == 0
    assert data == {
        "users": {0: {"username": "a", "customfields": {0: {"type": "dept"}}}, 1: {"username": "b"}}
    }


def test_php_name_quirks() -> None:
    data, _ = parse("a[]=1&a[]=2&b.c=3&d[x=4&e=1&e=2&f+g=5", 5000)
    assert data == {"a": {0: "1", 1: "2"}, "b_c": "3", "d_x": "4", "e": "2", "f_g": "5"}


def test_variables_past_the_limit_are_dropped_silently() -> None:
    data, dropped = parse("a=1&b=2&c=3&d=4", 3)
    assert data == {"a": "1", "b": "2", "c": "3"}
    assert dropped == 1


def _user(i: int) -> dict:
    # Required fields first, optional last: a user cut in the middle of its optional fields still passes.
    return {
        "username": f"user{i:02d}",
        "firstname": "F",
        "lastname": "L",
        "email": f"u{i}@x.org",
        "createpassword": 1,
        "department": "Física",
    }


def test_unsplit_40_user_create_with_limit_50_loses_users(make_site: Callable[..., Site]) -> None:
    """3 fixed variables + 6 per user: 7 users and most of an 8th fit in 50; 32 vanish without an error."""
    site = make_site(max_input_vars=50)
    users = [_user(i) for i in range(40)]
    assert len(flatten({"users": users})) + 3 == 243
    result = site.call("core_user_create_users", users=users)
    assert isinstance(result, list)  # no error at all
    assert [r["username"] for r in result] == [f"user{i:02d}" for i in range(8)]
    eighth = site.call("core_user_get_users_by_field", field="username", values=["user07"])[0]
    assert "department" not in eighth  # even the last user that got through lost a field
    assert site.control("GET", "/stats")["variables_dropped"] == 243 - 50


def test_split_calls_below_the_limit_lose_nobody(make_site: Callable[..., Site]) -> None:
    site = make_site(max_input_vars=50)
    users = [_user(i) for i in range(40)]
    created = []
    for start in range(0, 40, 7):
        created += site.call("core_user_create_users", users=users[start : start + 7])
    assert len(created) == 40
    assert site.control("GET", "/stats")["variables_dropped"] == 0


def test_token_sent_after_the_limit_is_lost(make_site: Callable[..., Site]) -> None:
    site = make_site(max_input_vars=3)
    pairs = [
        ("wsfunction", "core_webservice_get_site_info"),
        ("moodlewsrestformat", "json"),
        ("x", "1"),
        ("wstoken", "t0ken-for-tests"),
    ]
    assert site.post(pairs).json()["errorcode"] == "invalidtoken"
