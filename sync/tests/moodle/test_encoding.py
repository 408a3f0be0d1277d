from urllib.parse import parse_qsl, urlencode

import pytest

from sync.moodle.encoding import (
    FIXED_VARIABLES,
    count_variables,
    flatten,
    headroom,
    request_budget,
    split_params,
)
from sync.moodle.errors import RequestTooLarge


def test_nested_lists_and_dicts_become_php_brackets_in_order():
    params = {
        "users": [
            {
                "username": "ana",
                "suspended": True,
                "customfields": [{"type": "dept", "value": "Física"}, {"type": "site", "value": "Köln"}],
                "preferences": [],
                "middlename": None,
            },
            {"username": "bo", "suspended": False, "id": 7, "ratio": 2.0},
        ],
        "field": "username",
    }
    assert flatten(params) == [
        ("users[0][username]", "ana"),
        ("users[0][suspended]", "1"),
        ("users[0][customfields][0][type]", "dept"),
        ("users[0][customfields][0][value]", "Física"),
        ("users[0][customfields][1][type]", "site"),
        ("users[0][customfields][1][value]", "Köln"),
        ("users[1][username]", "bo"),
        ("users[1][suspended]", "0"),
        ("users[1][id]", "7"),
        ("users[1][ratio]", "2"),
        ("field", "username"),
    ]
    assert count_variables(params) == 11


def test_unicode_survives_form_encoding():
    pairs = flatten({"users": [{"firstname": "Zoë 李 Ωμέγα 🙂"}]})
    assert parse_qsl(urlencode(pairs)) == [("users[0][firstname]", "Zoë 李 Ωμέγα 🙂")]


def test_counts_match_what_is_sent():
    params = {"values": ["a", "b", "c"], "field": "username", "opts": {"x": None, "y": [1, [2, 3]]}}
    assert count_variables(params) == len(flatten(params)) == 7
    assert count_variables(None) == 0
    assert count_variables([]) == 0


def test_headroom_is_ten_percent_or_at_least_twenty():
    assert headroom(5000) == 500
    assert headroom(50) == 20
    assert request_budget(5000) == 4500
    assert request_budget(50) == 30


def test_split_keeps_every_item_in_order_and_under_budget():
    users = [
        {"username": f"u{i}", "firstname": "F", "lastname": "L", "email": f"u{i}@x.org"} for i in range(40)
    ]
    chunks = split_params({"users": users}, "users", 50, function="core_user_create_users")
    # 30 variables per request, 3 fixed: 27 left, so 6 users of 4 variables each.
    assert [len(c["users"]) for c in chunks] == [6, 6, 6, 6, 6, 6, 4]
    assert [u for c in chunks for u in c["users"]] == users
    for chunk in chunks:
        assert FIXED_VARIABLES + count_variables(chunk) <= request_budget(50)


def test_split_counts_the_other_parameters_in_every_request():
    chunks = split_params({"field": "username", "values": [f"v{i}" for i in range(100)]}, "values", 50)
    assert all(c["field"] == "username" for c in chunks)
    assert [len(c["values"]) for c in chunks] == [26, 26, 26, 22]
    assert list(chunks[0]) == ["field", "values"]


def test_small_call_is_not_split():
    params = {"field": "id", "values": [1, 2]}
    assert split_params(params, "values", 5000) == [params]
    assert split_params({}, None, 5000) == [{}]


def test_item_too_large_on_its_own_is_a_clear_error():
    big = {"username": "x", "customfields": [{"type": f"t{i}", "value": "v"} for i in range(20)]}
    with pytest.raises(RequestTooLarge, match=r"item 1 of 'users' alone needs 41 form variables"):
        split_params({"users": [{"username": "a"}, big]}, "users", 50, function="core_user_create_users")


def test_unsplittable_call_over_the_limit_is_refused():
    with pytest.raises(RequestTooLarge, match="core_user_get_users needs"):
        split_params(
            {"criteria": [{"key": "k", "value": str(i)} for i in range(20)]},
            None,
            50,
            function="core_user_get_users",
        )
