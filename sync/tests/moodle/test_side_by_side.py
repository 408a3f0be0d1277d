"""Creates sent side by side within the site's concurrency, and a breaker that judges a call by its work.

A big create is slow by design: on a real Moodle 5.1 with 25,000 users a create of 200 answers in about 3 s.
The breaker must not read that as a sick site, while a site info taking as long still is one."""

import threading
import time

import pytest

from sync.moodle.breaker import CLOSED, BreakerConfig
from sync.moodle.client import RetryPolicy, SiteLimits
from sync.moodle.errors import BreakerOpen

CREATE = "core_user_create_users"
TWO_AT_A_TIME = SiteLimits(max_concurrent=2, min_spacing_ms=0, calls_per_minute=100_000, max_wait_s=30)


def new_people(start: int, count: int) -> list[dict]:
    return [
        {
            "username": f"p{n:05d}",
            "firstname": "Ann",
            "lastname": f"Lee {n}",
            "email": f"p{n:05d}@example.edu",
            "idnumber": f"P{n:05d}",
            "createpassword": 1,
        }
        for n in range(start, start + count)
    ]


def wait_for(condition, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_groups_go_side_by_side_never_above_the_site_limit_and_answer_in_order(sim, make_client):
    client = make_client(limits=TWO_AT_A_TIME)
    before = len(sim.users())
    groups = [new_people(10 * g, 10) for g in range(4)]
    sim.hold(CREATE)  # every create waits at the site, so how many are there at once is certain
    answers = []
    sender = threading.Thread(target=lambda: answers.extend(client.create_users_side_by_side(groups)))
    sender.start()
    try:
        wait_for(lambda: sim.stats()["in_flight"] == 2)
        assert sim.stats()["in_flight"] == 2
    finally:
        sim.release()
        sender.join()
    assert sim.stats()["max_in_flight"] == 2
    assert [[u["username"] for u in answer] for answer in answers] == [
        [p["username"] for p in group] for group in groups
    ]
    assert len(sim.users()) == before + 40


def test_a_call_is_written_ahead_only_once_its_slot_is_granted_and_by_the_calling_thread(sim, make_client):
    """A process killed while requests wait for slots must leave no record of a call that never left."""
    announced: list[tuple[str, int]] = []
    client = make_client(
        limits=TWO_AT_A_TIME,
        on_send=lambda record: announced.append((record.function, threading.get_ident())),
    )
    looked_up: list = []
    sim.hold(CREATE)
    sender = threading.Thread(
        target=lambda: client.create_users_side_by_side(
            [new_people(10 * g, 10) for g in range(6)],
            # the caller's own call waits for a slot the round holds, and must not block the round
            meanwhile=lambda: looked_up.append(client.get_users_by_field("username", ["p00000"])),
        )
    )
    sender.start()
    try:
        wait_for(lambda: sim.stats()["in_flight"] == 2)
        assert sim.stats()["in_flight"] == 2
        assert [function for function, _ in announced] == [CREATE, CREATE]  # four more wait, unwritten
    finally:
        sim.release()
        sender.join()
    assert len(looked_up) == 1
    assert len(announced) == sim.stats()["total_calls"] == 7
    assert {thread for _, thread in announced} == {sender.ident}


def test_a_breaker_opening_mid_round_keeps_what_the_other_call_created(sim, make_client):
    breaker = BreakerConfig(window_s=60, min_calls=1, error_rate=0.4, latency_p90_ms=None, cooldown_s=60)
    client = make_client(limits=TWO_AT_A_TIME, breaker=breaker, retry=RetryPolicy(attempts=3, base_s=0.01))
    before = {u["username"] for u in sim.users()}
    sim.control.post("/_sim/inject", json={"kinds": ["503"], "function": CREATE}).raise_for_status()
    answers = client.create_users_side_by_side([new_people(0, 5), new_people(5, 5)])
    stopped = [a for a in answers if isinstance(a, BreakerOpen)]
    created = [a for a in answers if isinstance(a, list)]
    assert len(stopped) == 1 and len(created) == 1, answers
    # The call that went through is answered, although the breaker opened before its neighbour's retry.
    in_moodle = {u["username"] for u in sim.users()} - before
    assert {u["username"] for u in created[0]} == in_moodle and len(in_moodle) == 5


def test_a_big_create_is_not_a_sick_site_but_a_slow_site_info_is(sim, make_client, records):
    breaker = BreakerConfig(
        window_s=60, min_calls=5, latency_p90_ms=300, min_latency_calls=5, min_slow_calls=3, per_item_ms=25
    )
    client = make_client(breaker=breaker, retry=RetryPolicy(attempts=1))
    sim.config(profile="moodle51")  # what a real Moodle 5.1 spends: about 6 ms for each user created
    for batch in range(6):
        client.create_users(new_people(100 * batch, 100))
    creates = [r for r in records if r.function == CREATE]
    assert len(creates) == 6 and min(r.duration_ms for r in creates) > 300  # each far above the threshold
    assert client.breaker_state().state == CLOSED

    sim.config(latency_ms=400)  # now even the smallest call is slow
    with pytest.raises(BreakerOpen, match="probe slow"):  # opened on latency, then a probe at once: slow too
        for _ in range(5):
            client.get_site_info()
    assert len([r for r in records if r.function == "core_webservice_get_site_info"]) == 3 + 1


def test_a_refused_token_halts_the_round_nothing_more_is_sent(sim, make_client):
    from sync.moodle import errors

    client = make_client(limits=TWO_AT_A_TIME)
    sim.config(rest_enabled=False)  # every call is refused with HTTP 403: the run must stop
    looked_ahead = []

    def meanwhile():
        try:
            client.get_users_by_field("username", ["someone"])
        except errors.SeamError as exc:
            looked_ahead.append(exc)

    answers = client.create_users_side_by_side([new_people(10 * g, 10) for g in range(6)], meanwhile)
    sent = sim.stats()["total_calls"]
    # Only calls already out when the first refusal came back reached the site: at most one per connection.
    assert 1 <= sent <= 2, sim.stats()["calls"]
    refused = [a for a in answers if isinstance(a, errors.MoodleError)]
    assert all(a.category == errors.AUTH for a in refused)
    assert all(isinstance(a, errors.NotSent) for a in answers if a not in refused)
    ahead_refused = bool(looked_ahead) and isinstance(looked_ahead[0], errors.MoodleError)
    assert len(refused) + ahead_refused == sent
