"""How many people go into one create call: under max_input_vars, about the target time of Moodle's work,
in groups that fill the site's concurrency, learning Moodle's time per user as the run goes."""

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sync.moodle.encoding import count_variables, request_budget
from sync.run.sizing import CallSizer, remember_pace, remembered_pace

PERSON = {
    "username": "ann", "firstname": "Ann", "lastname": "Lee", "email": "ann@example.edu",
    "idnumber": "E1", "auth": "manual", "createpassword": 1, "lang": "en",
}  # fmt: skip


@pytest.mark.parametrize("people", [1, 3, 333, 1000, 5000])
@pytest.mark.parametrize("max_input_vars", [1000, 5000])
@pytest.mark.parametrize("concurrency", [1, 2, 4])
def test_every_group_fits_and_nobody_is_lost_or_repeated(people, max_input_vars, concurrency):
    sizer = CallSizer(max_input_vars, target_ms=2000, concurrency=concurrency)
    items = list(range(people))
    groups = sizer.groups(items, PERSON)
    assert [i for g in groups for i in g] == items
    per_call = (request_budget(max_input_vars) - 10) // count_variables(PERSON)
    assert all(len(g) <= per_call for g in groups)
    assert all(len(g) <= 2000 / 6 + 1 for g in groups)  # about 2 s of Moodle's time at 6 ms a user
    if len(groups) > 1:
        assert len(groups) % concurrency == 0 or len(groups) == people


def test_a_thousand_people_on_two_connections_go_in_four_equal_calls():
    groups = CallSizer(5000, target_ms=2000, concurrency=2).groups(list(range(1000)), PERSON)
    assert [len(g) for g in groups] == [250, 250, 250, 250]


def test_it_learns_that_moodle_got_slower_and_sends_smaller_calls():
    sizer = CallSizer(5000, target_ms=2000, concurrency=2)
    before = len(sizer.groups(list(range(1000)), PERSON)[0])
    # Two rounds of two calls side by side took 8 s for 1,000 people: 16 ms a person each, not 6.
    sizer.observe(1000, 8000, side_by_side=2)
    sizer.observe(1000, 8000, side_by_side=2)
    assert sizer.ms_per_user == pytest.approx(16)
    after = len(sizer.groups(list(range(1000)), PERSON)[0])
    assert after < before and after * sizer.ms_per_user <= 2000


def test_one_stalled_round_does_not_make_the_rest_of_the_run_send_smaller_calls():
    sizer = CallSizer(5000, target_ms=2000, concurrency=2)
    sizer.observe(2000, 6000, side_by_side=2)  # Moodle's pace: 6 ms a person
    before = sizer.groups(list(range(1000)), PERSON)
    sizer.observe(2000, 60_000, side_by_side=2)  # Moodle stalled for a minute under one round
    assert sizer.groups(list(range(1000)), PERSON) == before
    sizer.observe(2000, 6000, side_by_side=2)
    assert sizer.ms_per_user == pytest.approx(6)


def test_a_stall_after_the_first_round_keeps_the_pace_seen_not_the_first_guess():
    sizer = CallSizer(5000, target_ms=2000, concurrency=2)
    sizer.observe(2000, 800, side_by_side=2)  # Moodle is fast: 0.8 ms a person, not the guessed 6
    before = sizer.groups(list(range(1000)), PERSON)
    sizer.observe(2000, 60_000, side_by_side=2)  # then one round stalls
    assert sizer.ms_per_user == pytest.approx(0.8)
    assert sizer.groups(list(range(1000)), PERSON) == before


def test_a_continued_run_sizes_its_calls_as_the_run_did_before_its_worker_stopped(clean_redis):
    killed = CallSizer(5000, target_ms=2000, concurrency=2)
    killed.observe(2000, 800, side_by_side=2)  # the run had seen Moodle take 0.8 ms a person
    remember_pace(clean_redis, 7, killed.seen)
    continued = CallSizer(5000, target_ms=2000, concurrency=2)
    continued.resume(remembered_pace(clean_redis, 7))
    people = list(range(2000))
    assert continued.groups(people, PERSON) == killed.groups(people, PERSON)
    assert len(continued.groups(people, PERSON)) < len(CallSizer(5000, 2000, 2).groups(people, PERSON))
    assert remembered_pace(clean_redis, 8) == []  # another run starts from the guess


def test_a_redis_that_fails_leaves_the_sizer_guessing_and_the_run_going():
    gone = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    remember_pace(gone, 7, [0.8])
    assert remembered_pace(gone, 7) == []
