"""A Moodle under load slows down before it fails: the breaker must open on latency first,
fail fast while open, let exactly one probe through after the cool-down, and recover."""

import threading
import time
from dataclasses import replace

import pytest

from sync.moodle.breaker import CLOSED, HALF_OPEN, OPEN, BreakerConfig
from sync.moodle.client import RetryPolicy
from sync.moodle.errors import BreakerOpen

DEGRADE = {"ramp_s": 4.0, "max_extra_ms": 2000, "errors_after_s": 6.0, "error_rate": 1.0}
BREAKER = BreakerConfig(
    window_s=10, min_calls=5, error_rate=0.5, latency_p90_ms=400, min_latency_calls=5, cooldown_s=1.0
)


def test_opens_on_latency_before_errors_then_probes_once_and_recovers(sim, make_client, capsys):
    changes, errors_when_changed = [], []

    def changed(*change):
        changes.append(change)
        errors_when_changed.append(dict(sim.stats()["injected_errors"]))

    kwargs = {"breaker": BREAKER, "retry": RetryPolicy(attempts=1), "on_breaker_change": changed}
    client = make_client(**kwargs)
    other_process = make_client(**kwargs)
    sim.config(latency_ms=20)
    for _ in range(5):  # a healthy history the slow calls must outweigh
        client.get_site_info()

    sim.config(degrade=DEGRADE)
    started = sim.stats()["degrade_started_at"]
    opened_at = None
    while time.time() - started < DEGRADE["errors_after_s"]:
        try:
            client.get_site_info()
        except BreakerOpen:
            opened_at = time.time()
            break
    assert opened_at is not None, "the breaker did not open before errors began"
    stats = sim.stats()
    assert errors_when_changed[0] == {}  # it opened before Moodle's first error (its probe may meet one)
    state = client.breaker_state()
    # Opened on latency, it probed at once; the probe was slow too, so it stays open for the cool-down.
    assert changes[0][1:] == (CLOSED, OPEN, changes[0][3]) and changes[0][3].startswith("p90 latency")
    assert state.state == OPEN and state.reason.startswith(("probe slow", "probe failed"))
    with capsys.disabled():
        print(f"\nbreaker opened {opened_at - started:.2f} s after degradation began ({state.reason})")

    # While open, nothing reaches the site: the refusal is made without a call.
    with pytest.raises(BreakerOpen):
        other_process.get_users_by_field("id", [2])
    assert sim.stats()["total_calls"] == stats["total_calls"]

    # The site recovers. The probe is held at the site, so the second process certainly arrives mid-probe;
    # the prober judges it with a lenient limit, since being held is not the site's slowness.
    sim.config(degrade=None, latency_ms=20)
    sim.reset_stats()
    prober = make_client(**{**kwargs, "breaker": replace(BREAKER, latency_p90_ms=60_000)})
    sim.hold("core_webservice_get_site_info")
    time.sleep(max(0.0, state.next_probe_at - time.time()) + 0.01)
    outcome = {}

    def first():
        try:
            outcome["first"] = prober.get_users_by_field("id", [2])
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while sim.stats()["in_flight"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # until the probe is at the site, as the simulator counts it
        with pytest.raises(BreakerOpen, match="probe in progress"):
            other_process.get_users_by_field("id", [2])
    finally:
        sim.release()
        thread.join()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["first"][0]["id"] == 2
    assert sim.stats()["calls"] == {"core_webservice_get_site_info": 1, "core_user_get_users_by_field": 1}
    assert other_process.breaker_state().state == CLOSED
    assert other_process.get_users_by_field("id", [2])[0]["id"] == 2
    assert [c[1:3] for c in changes] == [
        (CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)
    ]  # fmt: skip


def test_error_rate_opens_it_and_a_failed_probe_keeps_it_open(sim, make_client):
    config = BreakerConfig(window_s=10, min_calls=4, error_rate=0.5, latency_p90_ms=None, cooldown_s=0.2)
    client = make_client(breaker=config, retry=RetryPolicy(attempts=1))
    sim.config(error_rate=1.0, error_kinds=["502", "lockwait"])
    for _ in range(4):
        with pytest.raises(Exception) as caught:
            client.get_site_info()
        assert not isinstance(caught.value, BreakerOpen)
    with pytest.raises(BreakerOpen, match="error rate 4/4"):
        client.get_site_info()
    time.sleep(0.25)
    with pytest.raises(BreakerOpen, match="probe failed"):
        client.get_site_info()
    assert client.breaker_state().state == OPEN
    sim.config(error_rate=0.0)
    time.sleep(0.25)
    assert client.get_site_info()["sitename"]
    assert client.breaker_state().state == CLOSED


def test_client_faults_do_not_open_it(sim, make_client):
    client = make_client(breaker=BreakerConfig(min_calls=3, latency_p90_ms=None))
    for _ in range(6):
        with pytest.raises(Exception, match="invalidparameter"):
            client.get_users_by_field("username", ["NotLowercase"])
    assert client.breaker_state().state == CLOSED
