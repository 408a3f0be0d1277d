"""Retry only what may succeed later, with exponential backoff and full jitter."""

import pytest

from sync.moodle import errors
from sync.moodle.client import RetryPolicy
from sync.moodle.errors import MoodleError

POLICY = RetryPolicy(attempts=5, base_s=0.5, cap_s=2.0)


def test_transient_errors_are_retried_with_capped_full_jitter(sim, make_client, sleeps, records):
    sim.config(error_rate=1.0, error_kinds=["503"])
    with pytest.raises(MoodleError) as caught:
        make_client(retry=POLICY).get_site_info()
    assert caught.value.category == errors.TRANSIENT
    assert [r.attempt for r in records] == [1, 2, 3, 4, 5]
    assert sim.stats()["calls"]["core_webservice_get_site_info"] == 5
    assert len(sleeps) == 4
    for attempt, slept in enumerate(sleeps, start=1):
        assert 0 <= slept <= min(2.0, 0.5 * 2 ** (attempt - 1))


def test_backoff_bounds_grow_then_cap():
    import random

    rng = random.Random(3)
    draws = {attempt: [POLICY.delay(attempt, rng) for _ in range(500)] for attempt in (1, 2, 3, 6)}
    assert max(draws[1]) <= 0.5 < max(draws[2]) <= 1.0 < max(draws[3]) <= 2.0
    assert max(draws[6]) <= 2.0
    assert min(draws[1]) < 0.05  # full jitter reaches down to zero


def test_a_retry_that_succeeds_returns_the_answer(sim, make_client, sleeps, records):
    sim.config(error_rate=1.0, error_kinds=["lockwait"])

    def heal_after_two(record):
        records.append(record)
        if len(records) == 2:
            sim.config(error_rate=0.0)

    info = make_client(retry=POLICY, on_call=heal_after_two).get_site_info()
    assert info["sitename"] == "Simulated Moodle"
    assert [r.outcome for r in records] == [errors.TRANSIENT, errors.TRANSIENT, "ok"]
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    ("setup", "category"),
    [
        ({"rest_enabled": False}, errors.AUTH),
        ({}, errors.CLIENT_FAULT),
    ],
)
def test_other_categories_are_never_retried(sim, make_client, sleeps, records, setup, category):
    sim.config(**setup)
    with pytest.raises(MoodleError) as caught:
        make_client(retry=POLICY).create_users([{"username": "Bad Name", "firstname": "a", "lastname": "b"}])
    assert caught.value.category == category
    assert len(records) == 1
    assert sleeps == []
