"""The event path: signed webhooks from the source and from Moodle's plugin, refused unless they prove
themselves, de-duplicated, coalesced into runs of kind event that the same engine sends, never lost while
another run holds the site."""

from __future__ import annotations

import json
import time

import pytest
from django.test import override_settings

from integration_hub.testing import make_site, person, simulated_moodle, write_csv
from sync import hooks
from sync.choices import (
    DiscrepancyKind,
    DiscrepancyStatus,
    EventStatus,
    HookDirection,
    RemovedPolicy,
    RunKind,
    RunStatus,
)
from sync.models import Completion, Discrepancy, InboundEvent, SyncRecord, SyncRun
from sync.run import engine
from sync.run.locks import RunLock

pytestmark = pytest.mark.django_db


@pytest.fixture
def moodle():
    return simulated_moodle(seed=7)


@pytest.fixture
def site(tmp_path, clean_redis, moodle, hub_admin):
    path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, 11)])
    site = make_site("north", "http://moodle.test", path, removed_policy=RemovedPolicy.SUSPEND)
    run = SyncRun.objects.queue(site, RunKind.BOOTSTRAP)
    assert (
        engine.execute(run.pk, transport=moodle.transport, sleep=lambda _s: None).status
        == RunStatus.SUCCEEDED
    )
    site.secrets = {
        direction: hooks.make_secret(site, direction, hub_admin) for direction in HookDirection.values
    }
    return site


def post(client, site, direction, payload, *, event_id=None, secret=None, stamp=None, signature=None):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if event_id is None:
        event_id = payload.get("id", "ev-1") if isinstance(payload, dict) else "ev-1"
    stamp = str(int(time.time()) if stamp is None else stamp)
    secret = site.secrets[direction] if secret is None else secret
    headers = {
        "X-Hub-Timestamp": stamp,
        "X-Hub-Signature-256": signature or hooks.signature(secret, stamp, body),
        "X-Hub-Event-Id": event_id,
    }
    return client.post(
        f"/hooks/{direction}/{site.slug}/", body, content_type="application/json", headers=headers
    )


def event_run(site, moodle) -> SyncRun:
    run = SyncRun.objects.get(site=site, kind=RunKind.EVENT, status=RunStatus.QUEUED)
    return engine.execute(run.pk, transport=moodle.transport, sleep=lambda _s: None)


def leaver(n: int) -> dict:
    """Person n as the source sends them when they leave: suspended is not mapped in the tests' mapping,
    so a change of department stands in for a change that must reach Moodle."""
    return {**person(n), "dept": "Left the university"}


def test_a_signed_source_event_is_accepted_at_once_and_synced_by_an_event_run(client, site, moodle):
    answer = post(client, site, "source", {"people": [leaver(3)]})
    assert answer.status_code == 202 and answer.json() == {"status": "accepted", "event": "ev-1", "people": 1}
    event = InboundEvent.objects.get(site=site)
    assert (event.status, event.kind, event.people, event.run) == (EventStatus.ACCEPTED, "people", 1, None)
    run = event_run(site, moodle)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    assert (run.kind, run.trigger, run.updated, run.seen) == (RunKind.EVENT, "event", 1, 1)
    assert moodle.people()["E00003"]["department"] == "Left the university"
    event.refresh_from_db()
    assert event.status == EventStatus.APPLIED and event.run == run and event.latency is not None
    # Nobody else was taken to have left the source: the event names one person, not the whole source.
    assert run.suspended == 0 and moodle.people()["E00004"]["suspended"] == 0


@pytest.mark.parametrize(
    ("tamper", "status", "reason"),
    [
        ({"signature": "sha256=" + "0" * 64}, 401, "the signature does not match"),
        ({"secret": "not-the-secret"}, 401, "the signature does not match"),
        ({"stamp": int(time.time()) - 301}, 401, "from the hub's clock (more than ±300 s)"),
        ({"stamp": "yesterday"}, 400, "X-Hub-Timestamp is missing or not a number"),
        ({"event_id": ""}, 400, "X-Hub-Event-Id is missing"),
    ],
    ids=["bad signature", "wrong secret", "old timestamp", "no timestamp", "no event id"],
)
def test_a_request_that_does_not_prove_itself_is_refused_with_a_row_saying_why(
    client, site, moodle, tamper, status, reason
):
    answer = post(client, site, "source", {"people": [leaver(3)]}, **tamper)
    assert answer.status_code == status and reason in answer.json()["reason"]
    event = InboundEvent.objects.get(site=site)
    assert event.status == EventStatus.REFUSED and reason in event.reason and event.body is None
    assert not SyncRun.objects.filter(site=site, kind=RunKind.EVENT).exists()
    assert moodle.people()["E00003"]["department"] != "Left the university"


@override_settings(HOOK_MAX_BYTES=200)
def test_an_oversized_body_is_refused_before_it_is_read(client, site):
    answer = post(client, site, "source", {"people": [leaver(n) for n in range(1, 5)]})
    assert answer.status_code == 413 and "the limit is 200" in answer.json()["reason"]
    event = InboundEvent.objects.get(site=site)
    assert event.status == EventStatus.REFUSED and event.size > 200
    assert not SyncRun.objects.filter(site=site, kind=RunKind.EVENT).exists()


def test_a_replayed_event_id_is_answered_200_and_does_nothing(client, site, moodle):
    assert post(client, site, "source", {"people": [leaver(3)]}).status_code == 202
    again = post(client, site, "source", {"people": [leaver(3)]})
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert list(InboundEvent.objects.filter(site=site).order_by("pk").values_list("status", flat=True)) == [
        EventStatus.ACCEPTED, EventStatus.DUPLICATE,
    ]  # fmt: skip
    assert SyncRun.objects.filter(site=site, kind=RunKind.EVENT).count() == 1


def test_a_body_of_the_wrong_shape_names_what_is_wrong(client, site):
    assert "not JSON" in post(client, site, "source", b"{people: [").json()["reason"]
    assert '"people"' in post(client, site, "source", {"people": []}, event_id="2").json()["reason"]
    assert (
        "the source's id field"
        in post(client, site, "source", {"people": [{"login": "x"}]}, event_id="3").json()["reason"]
    )
    assert (
        "unknown event"
        in post(client, site, "moodle", {"event": "user_hacked", "user": {"id": 1}}).json()["reason"]
    )


def test_an_unknown_site_and_a_hook_without_secret_are_refused(client, site):
    body = json.dumps({"people": [leaver(1)]}).encode()
    answer = client.post("/hooks/source/nowhere/", body, content_type="application/json")
    assert answer.status_code == 404 and InboundEvent.objects.get(site_slug="nowhere").site is None
    site.hook_secrets.all().delete()
    assert (
        "no secret for its source hook"
        in post(client, site, "source", {"people": [leaver(1)]}).json()["reason"]
    )


def test_a_hook_needs_no_login_and_no_csrf_token_but_only_takes_post(client, site):
    assert client.get(f"/hooks/source/{site.slug}/").status_code == 405


def test_a_hundred_events_for_one_person_make_one_moodle_update(client, site, moodle):
    for n in range(100):
        answer = post(
            client, site, "source", {"people": [{**person(5), "dept": f"Dept {n}"}]}, event_id=f"e{n}"
        )
        assert answer.status_code == 202
    assert SyncRun.objects.filter(site=site, kind=RunKind.EVENT).count() == 1  # one queued run collects them
    moodle.reset_stats()
    run = event_run(site, moodle)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    assert moodle.stats()["calls"].get("core_user_update_users") == 1 and run.updated == 1
    assert moodle.people()["E00005"]["department"] == "Dept 99"  # the last event wins
    assert InboundEvent.objects.filter(site=site, status=EventStatus.APPLIED, run=run).count() == 100


def test_events_that_arrive_while_a_bootstrap_holds_the_site_are_applied_after_it(
    client, site, moodle, clean_redis
):
    holder = SyncRun.objects.queue(site, RunKind.BOOTSTRAP)
    lock = RunLock(clean_redis, site.slug, holder.pk, ttl_s=60)
    assert lock.acquire()
    assert post(client, site, "source", {"people": [leaver(2)]}, event_id="a").status_code == 202
    waiting = event_run(site, moodle)
    assert waiting.status == RunStatus.QUEUED and "waiting for run" in waiting.abort_reason
    assert post(client, site, "source", {"people": [leaver(7)]}, event_id="b").status_code == 202
    assert SyncRun.objects.filter(site=site, kind=RunKind.EVENT).count() == 1  # the later one joins it
    lock.release()
    run = event_run(site, moodle)
    assert run.status == RunStatus.SUCCEEDED and run.pk == waiting.pk
    people = moodle.people()
    assert people["E00002"]["department"] == people["E00007"]["department"] == "Left the university"
    assert set(InboundEvent.objects.filter(site=site).values_list("status", flat=True)) == {
        EventStatus.APPLIED
    }


def moodle_event(name: str, user: dict, **extra) -> dict:
    body = {
        "id": f"{name}-{user['id']}",
        "event": name,
        "time": int(time.time()),
        "site": "http://moodle.test",
    }
    body["user"] = {k: user.get(k) for k in ("id", "idnumber", "username", "email")}
    body["course"] = extra.pop("course", None)
    return {**body, **extra}


def test_a_hand_edit_in_moodle_becomes_drift_the_sites_policy_mends(client, site, moodle):
    user = moodle.people()["E00004"]
    moodle.control("PATCH", f"users/{user['id']}", {"lastname": "Edited by hand"})
    assert post(client, site, "moodle", moodle_event("user_updated", user)).status_code == 202
    run = event_run(site, moodle)
    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    drift = Discrepancy.objects.get(site=site, kind=DiscrepancyKind.FIELD_DRIFT)
    assert drift.fields == ["lastname"] and drift.status == DiscrepancyStatus.APPLIED  # field drift: auto
    assert moodle.people()["E00004"]["lastname"] == person(4)["last"]


def test_a_user_deleted_in_moodle_is_an_identity_discrepancy_at_once(client, site, moodle):
    user = moodle.people()["E00006"]
    moodle.control("DELETE", f"users/{user['id']}")
    assert post(client, site, "moodle", moodle_event("user_deleted", user)).status_code == 202
    assert event_run(site, moodle).status == RunStatus.SUCCEEDED
    found = Discrepancy.objects.get(site=site, kind=DiscrepancyKind.IDENTITY_MISMATCH)
    assert found.external_id == "E00006" and found.status == DiscrepancyStatus.OPEN


def test_a_completion_is_kept_for_the_hr_side(client, site, moodle):
    user = moodle.people()["E00008"]
    course = {"id": 3, "shortname": "GER201", "idnumber": "ger201"}
    body = moodle_event("course_completed", user, course=course, completion={"timecompleted": 1767225600})
    assert post(client, site, "moodle", body).status_code == 202
    assert event_run(site, moodle).status == RunStatus.SUCCEEDED
    done = Completion.objects.get(site=site)
    assert (done.external_id, done.course_shortname, done.completed_at.year) == ("E00008", "GER201", 2026)
    assert done.record == SyncRecord.objects.get(site=site, external_id="E00008")


def test_a_silent_event_source_makes_the_site_need_attention(client, site):
    from datetime import timedelta

    from django.utils import timezone

    from monitoring.site_state import ATTENTION, site_state

    site.events_expected_within = timedelta(minutes=30)
    site.save()
    assert not [
        f for f in site_state(site).findings if f.key.startswith("silent_events")
    ]  # secrets just made
    later = timezone.now() + timedelta(minutes=45)
    quiet = [f for f in site_state(site, now=later).findings if f.key.startswith("silent_events")]
    assert {f.key for f in quiet} == {"silent_events:source", "silent_events:moodle"}
    assert all(f.state == ATTENTION and "expected at least every 30 minutes" in f.reason for f in quiet)
    assert post(client, site, "source", {"people": [leaver(1)]}).status_code == 202
    InboundEvent.objects.filter(site=site).update(received_at=later - timedelta(minutes=1))
    quiet = [f.key for f in site_state(site, now=later).findings if f.key.startswith("silent_events")]
    assert quiet == ["silent_events:moodle"]  # the source spoke; Moodle's plugin did not
    # A refused request is not a sign of life.
    post(client, site, "moodle", {"event": "user_updated", "user": {"id": 3}}, secret="wrong")
    InboundEvent.objects.filter(site=site, status=EventStatus.REFUSED).update(received_at=later)
    assert "silent_events:moodle" in [f.key for f in site_state(site, now=later).findings]


def test_events_a_stopped_run_took_are_handed_back_and_get_a_new_run(client, site, moodle):
    from datetime import timedelta

    from django.utils import timezone

    from integration_hub.testing import HUB_TOKEN
    from sync.run.watchdog import watch_runs

    assert post(client, site, "source", {"people": [leaver(2)]}).status_code == 202
    moodle.control("DELETE", f"tokens/{HUB_TOKEN}")  # the token is revoked: the run aborts
    stopped = event_run(site, moodle)
    assert stopped.status == RunStatus.ABORTED
    event = InboundEvent.objects.get(site=site)
    assert event.status == EventStatus.ACCEPTED and event.run is None  # handed back, not lost
    assert watch_runs(timezone.now()).events_requeued == []  # not restarted at once
    watch = watch_runs(timezone.now() + timedelta(seconds=61))
    assert watch.events_requeued == [site.slug]
    assert SyncRun.objects.filter(site=site, kind=RunKind.EVENT, status=RunStatus.QUEUED).count() == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@override_settings(ALLOWED_HOSTS=["hub.test"])
def test_the_simulator_as_the_plugin_turns_a_hand_edit_into_drift_the_policy_mends(
    tmp_path, clean_redis, hub_admin
):
    """The whole loop: an edit by hand in Moodle, the plugin's signed event over the hook into the hub (its
    own thread, as Moodle's task would), the event run, and the drift mended by the site's policy."""
    import httpx
    from django.core.handlers.wsgi import WSGIHandler

    moodle = simulated_moodle(seed=7)
    path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, 6)])
    site = make_site("loop", "http://moodle.test", path)
    run = SyncRun.objects.queue(site, RunKind.BOOTSTRAP)
    assert (
        engine.execute(run.pk, transport=moodle.transport, sleep=lambda _s: None).status
        == RunStatus.SUCCEEDED
    )
    secret = hooks.make_secret(site, HookDirection.MOODLE, hub_admin)
    moodle.app.hook.configure(
        "http://hub.test/hooks/moodle/loop/", secret, transport=httpx.WSGITransport(app=WSGIHandler())
    )
    user = moodle.people()["E00002"]
    moodle.control("PATCH", f"users/{user['id']}", {"firstname": "Edited by hand"})
    assert moodle.app.hook.wait(30)
    event = InboundEvent.objects.get(site=site)
    assert (event.status, event.kind, event.direction) == (EventStatus.ACCEPTED, "user_updated", "moodle")
    applied = event_run(site, moodle)
    assert applied.status == RunStatus.SUCCEEDED, applied.abort_reason
    drift = Discrepancy.objects.get(site=site, kind=DiscrepancyKind.FIELD_DRIFT)
    assert drift.fields == ["firstname"] and drift.status == DiscrepancyStatus.APPLIED
    assert moodle.people()["E00002"]["firstname"] == person(2)["first"]
    # The hub's own update fired user_updated too. Within the same second it has the hand edit's event id (the
    # plugin's ids, like Moodle's task queue, make one event of those) and is a redelivery; later, it is
    # re-checked, found in step, and nothing is written.
    assert moodle.app.hook.wait(30)
    echoes = [d for d in moodle.app.hook.deliveries if d["event"] == "user_updated"]
    assert len(echoes) == 2 and {d["status"] for d in echoes} <= {200, 202}
    moodle.reset_stats()
    queued = SyncRun.objects.filter(site=site, kind=RunKind.EVENT, status=RunStatus.QUEUED).first()
    if queued is not None:
        again = engine.execute(queued.pk, transport=moodle.transport, sleep=lambda _s: None)
        assert again.status == RunStatus.SUCCEEDED and moodle.write_calls() == 0
    assert Discrepancy.objects.filter(site=site).count() == 1


def test_enrolment_events_from_moodle_are_checked_against_the_memberships(
    tmp_path, client, clean_redis, hub_admin
):
    from sync.tests.test_memberships import MEMBERSHIPS, enrolled, row, write_people

    moodle = simulated_moodle(seed=7)
    for shortname in ("C01", "C02"):
        moodle.control("POST", "courses", {"shortname": shortname, "fullname": shortname})
    path = write_people(tmp_path / "people.csv", [row(n, ["C01"]) for n in range(1, 6)])
    site = make_site("north", "http://moodle.test", path)
    site.source.mapping = {**site.source.mapping, "memberships": MEMBERSHIPS}
    site.source.save()
    run = SyncRun.objects.queue(site, RunKind.BOOTSTRAP)
    assert (
        engine.execute(run.pk, transport=moodle.transport, sleep=lambda _s: None).status
        == RunStatus.SUCCEEDED
    )
    site.secrets = {"moodle": hooks.make_secret(site, HookDirection.MOODLE, hub_admin)}
    user = moodle.people()["E00001"]
    c01 = next(c for c in moodle.app.state.courses.values() if c["shortname"] == "C01")
    # The hub's own enrolment coming back from Moodle: nothing to check, and no run for it.
    echo = moodle_event(
        "user_enrolment_created", user, course={"id": c01["id"], "shortname": "C01"},
        enrolment={"status": 0, "timestart": 0, "timeend": 0, "roles": ["student"]},
    )  # fmt: skip
    assert post(client, site, "moodle", echo, event_id="echo").status_code == 202
    assert InboundEvent.objects.get(event_id="echo").status == EventStatus.APPLIED
    assert not SyncRun.objects.filter(site=site, kind=RunKind.EVENT).exists()
    # Unenrolled from C01 by hand: the source still puts them there, so the policy enrols them again.
    moodle.control("DELETE", f"enrolments?course=C01&userid={user['id']}")
    course = {"id": c01["id"], "shortname": "C01", "idnumber": ""}
    body = moodle_event("user_enrolment_deleted", user, course=course, enrolment=None)
    assert post(client, site, "moodle", body).status_code == 202
    assert event_run(site, moodle).status == RunStatus.SUCCEEDED
    missing = Discrepancy.objects.get(site=site, kind=DiscrepancyKind.MEMBERSHIP_MISSING)
    assert missing.status == DiscrepancyStatus.APPLIED and user["id"] in enrolled(moodle, "C01")
    # Enrolled by hand in C02, which the hub manages for others, not for this person: an extra.
    other = moodle.people()["E00002"]
    c02 = next(c for c in moodle.app.state.courses.values() if c["shortname"] == "C02")
    from sync.models import MembershipTarget

    MembershipTarget.objects.create(
        site=site, kind="course", key="C02", match="shortname", moodle_id=c02["id"]
    )
    moodle.control("POST", "enrolments", {"course": "C02", "userid": other["id"]})
    enrolment = {"status": 0, "timestart": 0, "timeend": 0, "roles": ["student"]}
    body = moodle_event(
        "user_enrolment_created", other, course={"id": c02["id"], "shortname": "C02"}, enrolment=enrolment
    )
    assert post(client, site, "moodle", body).status_code == 202
    assert event_run(site, moodle).status in (RunStatus.SUCCEEDED, RunStatus.PROBLEMS)
    extra = Discrepancy.objects.get(site=site, kind=DiscrepancyKind.MEMBERSHIP_EXTRA)
    assert extra.external_id == "E00002" and extra.status == DiscrepancyStatus.OPEN
    assert enrolled(moodle, "C02")[other["id"]]["status"] == 0  # nothing taken away without a decision
    # A course the hub does not manage is noted and left alone.
    body = moodle_event(
        "user_enrolment_created", other, course={"id": 999, "shortname": "ELSEWHERE"}, enrolment=enrolment
    )
    body["id"] = "elsewhere"
    assert post(client, site, "moodle", body, event_id="elsewhere").status_code == 202
    assert event_run(site, moodle).status in (RunStatus.SUCCEEDED, RunStatus.PROBLEMS)
    assert "not one the hub manages" in InboundEvent.objects.get(event_id="elsewhere").reason


def test_refused_requests_make_the_site_need_attention_for_an_hour(client, site):
    from datetime import timedelta

    from django.utils import timezone

    from monitoring.site_state import ATTENTION, site_state

    assert not [f for f in site_state(site).findings if f.key == "refused_events"]
    post(client, site, "source", {"people": [leaver(1)]}, secret="an old secret")
    post(client, site, "source", {"people": [leaver(1)]}, event_id="ev-2", stamp=int(time.time()) - 900)
    (finding,) = [f for f in site_state(site).findings if f.key == "refused_events"]
    assert finding.state == ATTENTION and "2 webhook requests were refused in the last hour" in finding.reason
    assert finding.link == f"/sites/{site.slug}/events/?status=refused"
    later = timezone.now() + timedelta(minutes=61)
    assert not [f for f in site_state(site, now=later).findings if f.key == "refused_events"]
