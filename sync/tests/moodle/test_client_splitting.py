"""PHP drops form variables past max_input_vars without an error; the client must split."""

from urllib.parse import urlencode

import pytest

from sync.moodle.client import SiteLimits
from sync.moodle.encoding import flatten
from sync.moodle.errors import MoodleError, RequestTooLarge

LIMITS_50 = SiteLimits(max_concurrent=4, min_spacing_ms=0, calls_per_minute=100_000, max_input_vars=50)


def forty_users() -> list[dict]:
    return [
        {
            "username": f"user{i:02d}",
            "password": "Str0ng-Passw0rd!",
            "firstname": f"Fírst{i}",
            "lastname": "Łast",
            "email": f"user{i:02d}@example.org",
        }
        for i in range(40)
    ]


def live_usernames(sim) -> set[str]:
    return {u["username"] for u in sim.users() if not u["deleted"]}


def test_forty_user_create_is_split_and_nobody_is_dropped(sim, make_client, records):
    sim.config(max_input_vars=50)
    created = make_client(limits=LIMITS_50).create_users(forty_users())
    assert [u["username"] for u in created] == [f"user{i:02d}" for i in range(40)]
    assert {f"user{i:02d}" for i in range(40)} <= live_usernames(sim)
    stats = sim.stats()
    assert stats["variables_dropped"] == 0
    # 50 - 20 headroom - 3 fixed = 27 variables: 5 users of 5 variables per request.
    assert stats["calls"]["core_user_create_users"] == 8
    assert [r.items for r in records] == [5] * 8


def test_the_same_call_unsplit_loses_users(sim, token):
    sim.config(max_input_vars=50)
    form = [("wstoken", token), ("wsfunction", "core_user_create_users"), ("moodlewsrestformat", "json")]
    form += flatten({"users": forty_users()})
    response = sim.control.post(
        "/webservice/rest/server.php",
        content=urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    created = response.json()
    # PHP kept 50 of 203 variables: the first 9 users arrived whole, the 10th lost its email.
    assert isinstance(created, list) or created.get("errorcode") == "invalidparameter"
    made = live_usernames(sim) & {f"user{i:02d}" for i in range(40)}
    assert len(made) < 40
    assert sim.stats()["variables_dropped"] == len(form) - 50


def test_lookups_and_merged_answers(sim, make_client):
    sim.config(max_input_vars=50)
    client = make_client(limits=LIMITS_50)
    client.create_users(forty_users())
    found = client.get_users_by_field("username", [f"user{i:02d}" for i in range(40)] + ["nobody"])
    assert sorted(u["username"] for u in found) == [f"user{i:02d}" for i in range(40)]
    assert sim.stats()["calls"]["core_user_get_users_by_field"] == 2  # 26 values per request


def test_split_update_merges_warnings_from_every_part(sim, make_client):
    sim.config(max_input_vars=50)
    client = make_client(limits=LIMITS_50)
    ids = [u["id"] for u in client.create_users(forty_users())]
    updates = [{"id": i, "department": "Ωmega"} for i in ids] + [{"id": 999_999, "department": "x"}]
    result = client.update_users(updates)
    assert result.updated_ids == ids
    assert [(f.itemid, f.warningcode) for f in result.failures] == [(999_999, "invaliduserid")]
    assert not result.ok
    assert sim.stats()["calls"]["core_user_update_users"] > 1


def test_an_item_too_big_for_one_request_is_refused_before_sending(sim, make_client):
    client = make_client(limits=LIMITS_50)
    user = forty_users()[0] | {"customfields": [{"type": f"f{i}", "value": "v"} for i in range(20)]}
    with pytest.raises(RequestTooLarge, match="item 0 of 'users' alone needs 45 form variables"):
        client.create_users([user])
    assert sim.stats()["total_calls"] == 0


def test_failed_later_part_reports_what_was_already_created(sim, make_client):
    sim.config(max_input_vars=50)
    client = make_client(limits=LIMITS_50)
    users = forty_users()
    users[12]["email"] = "broken"
    with pytest.raises(MoodleError) as caught:
        client.create_users(users)
    assert [u["username"] for u in caught.value.partial] == [f"user{i:02d}" for i in range(10)]


def test_empty_lists_send_nothing(sim, make_client):
    client = make_client()
    assert client.create_users([]) == []
    assert client.get_users_by_field("id", []) == []
    assert client.update_users([]).ok
    client.delete_users([])
    assert sim.stats()["total_calls"] == 0
