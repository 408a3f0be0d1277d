import pytest

from sync.moodle.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerConfig
from sync.moodle.errors import BreakerOpen


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def changes():
    return []


def make(redis_client, site_name, clock, changes, **config):
    defaults = {"window_s": 60, "min_calls": 4, "error_rate": 0.5, "latency_p90_ms": 1000, "cooldown_s": 30}
    return Breaker(
        redis_client,
        site_name,
        BreakerConfig(**{**defaults, **config}),
        on_change=lambda *args: changes.append(args),
        clock=clock,
    )


def test_opens_on_error_rate_after_minimum_calls(redis_client, site_name, clock, changes):
    breaker = make(redis_client, site_name, clock, changes)
    for _ in range(3):
        breaker.record(failed=True, duration_ms=50)
    assert breaker.state().state == CLOSED  # three calls are not enough to judge
    breaker.record(failed=False, duration_ms=50)
    assert breaker.state().state == OPEN
    assert changes == [(site_name, CLOSED, OPEN, "error rate 3/4 (75%) in 60 s")]
    with pytest.raises(BreakerOpen, match="error rate"):
        breaker.before_call()


def test_client_faults_never_open_it(redis_client, site_name, clock, changes):
    breaker = make(redis_client, site_name, clock, changes)
    for _ in range(20):
        breaker.record(failed=False, duration_ms=40)  # how the client reports client faults
    assert breaker.state().state == CLOSED
    assert breaker.before_call() is False


def test_opens_on_p90_latency_without_errors(redis_client, site_name, clock, changes):
    breaker = make(redis_client, site_name, clock, changes, min_latency_calls=5)
    for ms in (40, 40, 40, 40, 40, 40, 40, 40, 40, 1500, 1500):
        breaker.record(failed=False, duration_ms=ms)
    assert breaker.state().state == CLOSED  # two slow calls are a blip, not a sick site
    breaker.record(failed=False, duration_ms=1500)
    assert breaker.state().state == OPEN
    assert changes[0][3] == "p90 latency 1500 ms > 1000 ms over 12 calls (after 25 ms per item sent)"


def test_a_big_call_is_judged_by_the_work_it_carries(redis_client, site_name, clock, changes):
    breaker = make(redis_client, site_name, clock, changes, min_latency_calls=5)
    for _ in range(15):  # creates of 200 people answering in 3 s, as a real Moodle 5.1 with 25,000 users does
        breaker.record(failed=False, duration_ms=3000, items=200)
        clock.now += 3
    assert breaker.state().state == CLOSED
    for _ in range(3):  # a site info taking as long is a sick site
        breaker.record(failed=False, duration_ms=3000, items=0)
    assert breaker.state().state == OPEN


def test_evidence_is_dated_by_when_the_call_started(redis_client, site_name, clock, changes):
    breaker = make(redis_client, site_name, clock, changes, min_latency_calls=1, min_slow_calls=1)
    # A call stuck for 90 s that ends now says how the site was 90 s ago: outside the 60 s window.
    breaker.record(failed=False, duration_ms=90_000, started_at=clock.now - 90)
    state = breaker.state()
    assert (state.state, state.window_calls) == (CLOSED, 0)


def test_a_stall_that_is_over_costs_one_probe_not_a_cool_down(redis_client, site_name, clock, changes):
    """Calls stuck in a stall all finish when it ends: slow answers about the past. Opened on latency, the
    breaker probes at once, and a fast probe closes it with a fresh window."""
    breaker = make(redis_client, site_name, clock, changes, min_latency_calls=5)
    for _ in range(5):
        breaker.record(failed=False, duration_ms=20_000, started_at=clock.now - 20)
    state = breaker.state()
    assert state.state == OPEN and state.next_probe_at == clock.now  # no cool-down to sit out
    assert breaker.before_call() is True  # this caller probes now
    breaker.probe_finished(True, "probe answered in 5 ms")
    state = breaker.state()
    assert (state.state, state.window_calls) == (CLOSED, 0)


def test_errors_wait_the_cool_down_out(redis_client, site_name, clock, changes):
    breaker = make(redis_client, site_name, clock, changes)
    for _ in range(10):
        breaker.record(failed=True, duration_ms=50)
    assert breaker.state().next_probe_at == clock.now + breaker.config.cooldown_s
    with pytest.raises(BreakerOpen):
        breaker.before_call()


def test_window_forgets_old_calls(redis_client, site_name, clock, changes):
    breaker = make(redis_client, site_name, clock, changes)
    for _ in range(3):
        breaker.record(failed=True, duration_ms=50)
    clock.now += 61
    breaker.record(failed=True, duration_ms=50)
    state = breaker.state()
    assert (state.state, state.window_calls, state.window_errors) == (CLOSED, 1, 1)


def test_exactly_one_probe_after_cool_down_then_close(redis_client, site_name, clock, changes):
    breaker = make(redis_client, site_name, clock, changes)
    other_process = make(redis_client, site_name, clock, [])
    for _ in range(4):
        breaker.record(failed=True, duration_ms=50)
    clock.now += 29
    with pytest.raises(BreakerOpen):
        other_process.before_call()
    clock.now += 2
    assert breaker.before_call() is True  # this one probes
    with pytest.raises(BreakerOpen, match="probe in progress"):
        other_process.before_call()
    assert breaker.state().state == HALF_OPEN
    breaker.probe_finished(True, "probe answered in 30 ms")
    assert other_process.before_call() is False
    state = breaker.state()
    assert (state.state, state.window_calls, state.opened_at) == (CLOSED, 0, None)
    assert [c[1:3] for c in changes] == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_failed_probe_opens_for_another_cool_down(redis_client, site_name, clock, changes):
    breaker = make(redis_client, site_name, clock, changes)
    for _ in range(4):
        breaker.record(failed=True, duration_ms=50)
    clock.now += 31
    assert breaker.before_call() is True
    breaker.probe_finished(False, "probe failed: HTTP 503")
    state = breaker.state()
    assert state.state == OPEN and state.next_probe_at == clock.now + 30
    with pytest.raises(BreakerOpen):
        breaker.before_call()
    clock.now += 31
    assert breaker.before_call() is True
    assert changes[-1][1:] == (OPEN, HALF_OPEN, "cool-down over; probing with core_webservice_get_site_info")


def test_a_dead_prober_does_not_block_recovery(redis_client, site_name, clock, changes):
    breaker = make(redis_client, site_name, clock, changes, probe_lease_s=0.05)
    for _ in range(4):
        breaker.record(failed=True, duration_ms=50)
    clock.now += 31
    assert breaker.before_call() is True  # and then the process dies
    redis_client.delete(f"hub:breaker:{site_name}:probe")  # what the lease expiry does
    assert make(redis_client, site_name, clock, []).before_call() is True


def test_callback_errors_do_not_break_calls(redis_client, site_name, clock):
    def explode(*args):
        raise RuntimeError("pager down")

    breaker = Breaker(redis_client, site_name, BreakerConfig(min_calls=1), on_change=explode, clock=clock)
    breaker.record(failed=True, duration_ms=10)
    assert breaker.state().state == OPEN


def test_disabled_breaker_lets_everything_through(redis_client, site_name, clock, changes):
    breaker = make(redis_client, site_name, clock, changes, enabled=False)
    for _ in range(10):
        breaker.record(failed=True, duration_ms=50)
    assert breaker.before_call() is False
