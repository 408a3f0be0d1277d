import itertools
import threading
import time

import pytest

from sync.moodle.errors import ThrottleTimeout
from sync.moodle.throttle import LocalThrottle, Throttle, ThrottleSettings


def _hammer(throttle, threads: int, calls: int, hold_s: float) -> tuple[int, list[float]]:
    lock = threading.Lock()
    in_flight = 0
    peak = 0
    starts: list[float] = []

    def worker():
        nonlocal in_flight, peak
        for _ in range(calls):
            with throttle.slot() as lease:
                with lock:
                    in_flight += 1
                    peak = max(peak, in_flight)
                    starts.append(lease.granted_at)
                time.sleep(hold_s)
                with lock:
                    in_flight -= 1

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return peak, sorted(starts)


def test_slots_and_spacing_hold_across_threads(redis_client, site_name):
    settings = ThrottleSettings(max_concurrent=2, min_spacing_ms=20, calls_per_minute=1000, max_wait_s=10)
    peak, starts = _hammer(Throttle(redis_client, site_name, settings), threads=5, calls=4, hold_s=0.05)
    assert len(starts) == 20
    assert peak <= 2
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.020 - 1e-6


def test_local_throttle_keeps_the_same_budget(site_name):
    settings = ThrottleSettings(max_concurrent=2, min_spacing_ms=20, calls_per_minute=1000, max_wait_s=10)
    peak, starts = _hammer(LocalThrottle(site_name, settings), threads=5, calls=4, hold_s=0.05)
    assert peak <= 2
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.020 - 1e-6


def test_a_slot_held_by_a_dead_process_expires(redis_client, site_name):
    settings = ThrottleSettings(max_concurrent=1, min_spacing_ms=0, lease_s=0.3, max_wait_s=5)
    throttle = Throttle(redis_client, site_name, settings)
    dead = throttle.acquire()  # never released, as if the process had been killed mid-call
    assert throttle.in_flight() == 1
    lease = throttle.acquire()
    # On Redis's clock: the slot came free when the dead lease ran out, not before.
    assert lease.granted_at - dead.granted_at >= 0.3 - 1e-3
    throttle.release(lease)
    assert throttle.in_flight() == 0


def test_waiting_is_bounded_and_says_why(redis_client, site_name):
    settings = ThrottleSettings(max_concurrent=1, min_spacing_ms=0, max_wait_s=0.2)
    throttle = Throttle(redis_client, site_name, settings)
    held = throttle.acquire()
    with pytest.raises(ThrottleTimeout, match=f"no Moodle call slot for site '{site_name}' within 0.2 s"):
        throttle.acquire()
    throttle.release(held)


def test_calls_per_minute_cap(redis_client, site_name):
    settings = ThrottleSettings(max_concurrent=5, min_spacing_ms=0, calls_per_minute=3, max_wait_s=0.2)
    throttle = Throttle(redis_client, site_name, settings)
    for _ in range(3):
        with throttle.slot():
            pass
    with pytest.raises(ThrottleTimeout):
        throttle.acquire()


def test_sites_have_separate_budgets(redis_client, site_name):
    settings = ThrottleSettings(max_concurrent=1, min_spacing_ms=0, max_wait_s=0.1)
    Throttle(redis_client, site_name, settings).acquire()
    other = Throttle(redis_client, site_name + "-other", settings)
    other.release(other.acquire())
    redis_client.delete(*redis_client.keys(f"hub:throttle:{site_name}-other:*"))
