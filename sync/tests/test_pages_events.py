"""The webhook pages: a site's events (filters, refusal reasons, latency, the run each fed, the last day in
figures), the hooks on the site page, the webhook secrets page (a new secret shown once, rotation with an
overlap, revoking, Admins only, audited), the course completions with their CSV, and the site form's
"expect an event every … minutes"."""

import csv
import hashlib
import hmac
import io
import logging
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from monitoring.models import AuditEntry
from sync import hooks
from sync.choices import EventStatus, HookDirection, HookSecretStatus, RunKind, RunStatus
from sync.models import Completion, HookSecret, InboundEvent, MoodleSite, SyncRecord, SyncRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, hub_admin):
    client.force_login(hub_admin)
    return client


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


def text(response) -> str:
    return response.content.decode()


def event(site, *, ago_s: float = 60, latency_s: float | None = None, **fields) -> InboundEvent:
    """An event received `ago_s` seconds ago, applied `latency_s` after its receipt when given."""
    received = timezone.now() - timedelta(seconds=ago_s)
    values = {
        "site": site, "site_slug": site.slug, "direction": HookDirection.SOURCE, "kind": "people",
        "people": 1, "status": EventStatus.ACCEPTED, "received_at": received,
    }  # fmt: skip
    if latency_s is not None:
        values.update(status=EventStatus.APPLIED, applied_at=received + timedelta(seconds=latency_s))
    values.update(fields)
    return InboundEvent.objects.create(**values)


def events_url(slug="north") -> str:
    return reverse("sync:site_events", args=[slug])


def secrets_url(slug="north") -> str:
    return reverse("sync:site_hook_secrets", args=[slug])


def make(client, direction="source", slug="north"):
    return client.post(reverse("sync:hook_secret_make", args=[slug]), {"direction": direction})


# -- the events page -----------------------------------------------------------------------------------------


def test_the_events_page_lists_newest_first_with_reason_latency_and_run(operator_client, site):
    run = SyncRun.objects.create(site=site, kind=RunKind.EVENT, status=RunStatus.SUCCEEDED)
    applied = event(
        site, ago_s=300, latency_s=2.34, event_id="ev-applied", run=run, reason="completion of MATH1 kept"
    )
    waiting = event(site, ago_s=120, event_id="ev-waiting")
    refused = event(
        site, ago_s=30, event_id="ev-bad", status=EventStatus.REFUSED, kind="", people=0,
        reason="the signature does not match the site's secret for this hook",
    )  # fmt: skip
    response = operator_client.get(events_url())
    assert response.status_code == 200
    assert list(response.context["page"].object_list) == [refused, waiting, applied]
    page = text(response)
    assert "the signature does not match the site&#x27;s secret for this hook" in page
    assert "completion of MATH1 kept" in page
    assert "2.3 s" in page and "waiting" in page
    assert f'href="{reverse("sync:run_detail", args=[run.pk])}"' in page
    assert "ev-applied" in page and "Source → hub" in page


def test_the_events_page_filters_by_hook_and_status(operator_client, site):
    south = MoodleSite.objects.create(slug="south", name="South", base_url="https://south.example.edu")
    event(site, event_id="s-1")
    event(site, event_id="m-1", direction=HookDirection.MOODLE, kind="user_updated")
    event(site, event_id="m-2", direction=HookDirection.MOODLE, status=EventStatus.DUPLICATE)
    event(site, event_id="s-2", status=EventStatus.REFUSED, reason="X-Hub-Event-Id is missing")
    event(south, event_id="other-site")

    def ids(**params) -> set[str]:
        response = operator_client.get(events_url(), params)
        assert response.status_code == 200
        return {e.event_id for e in response.context["page"].object_list}

    assert ids() == {"s-1", "m-1", "m-2", "s-2"}
    assert ids(direction="moodle") == {"m-1", "m-2"}
    assert ids(status="refused") == {"s-2"}
    assert ids(direction="moodle", status="duplicate") == {"m-2"}
    assert ids(direction="moodle", status="refused") == set()
    assert "No event matches these filters" in text(operator_client.get(events_url(), {"status": "failed"}))


def test_the_day_summary_counts_the_last_24_hours_in_one_query(operator_client, site):
    for n in range(21):  # applied with latencies 0, 1, … 20 s: the 95th percentile is 19 s
        event(site, event_id=f"a-{n}", latency_s=n)
    for n in range(3):
        event(site, event_id=f"r-{n}", status=EventStatus.REFUSED, reason="the body is not JSON")
    event(site, event_id="r-x", status=EventStatus.REFUSED, reason="X-Hub-Timestamp is missing")
    event(site, event_id="d-1", status=EventStatus.DUPLICATE)
    event(site, event_id="w-1")
    event(site, event_id="old", ago_s=25 * 3600, status=EventStatus.REFUSED, reason="too old to count")
    response = operator_client.get(events_url())
    summary = response.context["summary"]
    assert {k: summary[k] for k in ("received", "refused", "duplicates", "applied", "waiting", "failed")} == {
        "received": 27, "refused": 4, "duplicates": 1, "applied": 21, "waiting": 1, "failed": 0,
    }  # fmt: skip
    assert summary["commonest_reason"] == "the body is not JSON"
    assert summary["p95"] == timedelta(seconds=19)
    page = text(response)
    assert "27 requests" in page and "4 requests" in page and "1 redelivery" in page and "21 events" in page
    assert "19.0 s" in page and "Commonest refusal: the body is not JSON" in page


def test_the_day_summary_of_a_quiet_site_says_so(operator_client, site):
    event(site, ago_s=3 * 86400)
    page = text(operator_client.get(events_url()))
    assert "No request reached the site" in page


def test_the_events_page_costs_the_same_queries_for_3_or_30_events(operator_client, site):
    run = SyncRun.objects.create(site=site, kind=RunKind.EVENT, status=RunStatus.SUCCEEDED)

    def fill(n, start):
        for i in range(start, start + n):
            event(site, event_id=f"e-{i}", latency_s=i % 5, run=run)

    fill(3, 0)
    with CaptureQueriesContext(connection) as few:
        assert operator_client.get(events_url()).status_code == 200
    fill(27, 3)
    with CaptureQueriesContext(connection) as many:
        assert operator_client.get(events_url()).status_code == 200
    assert len(many) == len(few)


# -- the site page -------------------------------------------------------------------------------------------


def test_the_site_page_gives_each_hooks_address_secret_and_last_event(admin_client, site, hub_admin):
    hooks.make_secret(site, HookDirection.SOURCE, hub_admin)
    secret = HookSecret.objects.get(site=site, direction=HookDirection.SOURCE)
    event(site, ago_s=600, event_id="older")
    event(site, ago_s=60, event_id="newer", status=EventStatus.REFUSED, reason="x")
    response = admin_client.get(reverse("sync:site_detail", args=["north"]))
    page = text(response)
    assert "http://testserver/hooks/source/north/" in page and "http://testserver/hooks/moodle/north/" in page
    assert f"…{secret.last4}" in page and "none: the hook refuses every request" in page  # moodle: no secret
    source, moodle = response.context["hooks"]
    assert source["last"].event_id == "newer" and moodle["last"] is None
    for name in ("site_events", "site_completions", "site_hook_secrets"):
        assert reverse(f"sync:{name}", args=["north"]) in page


def test_an_operator_sees_the_events_but_no_link_to_the_secrets(operator_client, site):
    page = text(operator_client.get(reverse("sync:site_detail", args=["north"])))
    assert events_url() in page and secrets_url() not in page
    assert secrets_url() not in text(operator_client.get(events_url()))


# -- webhook secrets -----------------------------------------------------------------------------------------


def test_a_new_secret_is_shown_once_and_afterwards_by_its_last_four(admin_client, site, caplog):
    caplog.set_level(logging.DEBUG)
    assert "No secret yet" in text(admin_client.get(secrets_url()))
    response = make(admin_client)
    assert response.status_code == 200
    secret = HookSecret.objects.get(site=site, direction=HookDirection.SOURCE)
    plaintext = secret.reveal()
    assert text(response).count(plaintext) == 1 and "It is shown this once" in text(response)
    assert "no-store" in response["Cache-Control"]
    assert "X-Hub-Signature-256" in text(response) and "X-Hub-Timestamp" in text(response)
    again = text(admin_client.get(secrets_url()))
    assert plaintext not in again and f"…{secret.last4}" in again and "Rotate" in again
    assert plaintext not in text(admin_client.get(reverse("sync:site_detail", args=["north"])))
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.target, entry.actor.username) == (
        "hook_secret.make", "site north source hook", "admin",
    )  # fmt: skip
    assert plaintext not in entry.detail and f"…{secret.last4}" in entry.detail
    assert plaintext not in caplog.text
    assert plaintext not in str(admin_client.session.items())


def test_rotating_leaves_the_old_secret_retiring_until_its_end(admin_client, site, settings):
    make(admin_client, "moodle")
    old = HookSecret.objects.get(site=site)
    before = timezone.now()
    response = make(admin_client, "moodle")
    old.refresh_from_db()
    new = HookSecret.objects.get(site=site, status=HookSecretStatus.ACTIVE)
    assert old.status == HookSecretStatus.RETIRING
    overlap = timedelta(hours=settings.HOOK_SECRET_OVERLAP_HOURS)
    assert before + overlap <= old.valid_until <= timezone.now() + overlap
    page = text(response)
    assert new.reveal() in page and old.reveal() not in page
    assert f"The previous secret <code>…{old.last4}</code> is still accepted until" in page
    assert "Retiring" in page and "accepted until" in page
    rotation = AuditEntry.objects.get(action="hook_secret.rotate")
    assert f"…{new.last4} made" in rotation.detail and f"…{old.last4} retiring" in rotation.detail
    assert rotation.target == "site north moodle hook"
    assert old.reveal() not in rotation.detail and new.reveal() not in rotation.detail


def test_revoking_stops_a_secret_and_says_when_the_hook_has_none_left(admin_client, site):
    make(admin_client)
    make(admin_client)
    old = HookSecret.objects.get(site=site, status=HookSecretStatus.RETIRING)
    new = HookSecret.objects.get(site=site, status=HookSecretStatus.ACTIVE)
    url = reverse("sync:hook_secret_revoke", args=["north", old.pk])
    page = text(admin_client.post(url, follow=True))
    assert f"secret …{old.last4} revoked" in page and "now has no active secret" not in page
    old.refresh_from_db()
    assert old.status == HookSecretStatus.REVOKED and not old.accepts_at(timezone.now())
    assert "already revoked" in text(admin_client.post(url, follow=True))

    page = text(admin_client.post(reverse("sync:hook_secret_revoke", args=["north", new.pk]), follow=True))
    assert "now has no active secret" in page and "Make a secret" in page
    assert [e.detail for e in AuditEntry.objects.filter(action="hook_secret.revoke").order_by("at")] == [
        f"secret …{old.last4} (retiring) revoked",
        f"secret …{new.last4} (active) revoked",
    ]


def test_an_operator_gets_403_on_the_secrets_page_and_its_actions(operator_client, site, hub_admin):
    hooks.make_secret(site, HookDirection.SOURCE, hub_admin)
    secret = HookSecret.objects.get(site=site)
    assert operator_client.get(secrets_url()).status_code == 403
    assert make(operator_client).status_code == 403
    revoke = reverse("sync:hook_secret_revoke", args=["north", secret.pk])
    assert operator_client.post(revoke).status_code == 403
    secret.refresh_from_db()
    assert secret.status == HookSecretStatus.ACTIVE and HookSecret.objects.count() == 1
    assert not AuditEntry.objects.exists()


def test_a_make_needs_a_known_hook_and_a_post(admin_client, site):
    assert make(admin_client, "elsewhere").status_code == 404
    assert admin_client.get(reverse("sync:hook_secret_make", args=["north"])).status_code == 405
    assert not HookSecret.objects.exists()


def test_a_request_signed_as_the_page_says_is_accepted_and_listed(admin_client, site):
    """The recipe on the page is the hook's: HMAC-SHA256 of timestamp.body with the secret shown."""
    response = make(admin_client)
    secret = HookSecret.objects.get(site=site)
    shown = response.context["shown"]["plaintext"]
    body, stamp = b'{"people": [{"id": "E1", "dept": "Physics"}]}', str(int(timezone.now().timestamp()))
    signature = "sha256=" + hmac.new(shown.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Timestamp": stamp, "X-Hub-Event-Id": "recipe-1", "X-Hub-Signature-256": signature}
    answer = admin_client.post(
        reverse("sync:source_hook", args=["north"]), body, content_type="application/json", headers=headers
    )
    assert answer.status_code == 202, answer.json()
    assert shown == secret.reveal()
    listed = admin_client.get(events_url())
    assert [e.event_id for e in listed.context["page"].object_list] == ["recipe-1"]
    assert "Accepted, waiting for its run" in text(listed)


# -- completions ---------------------------------------------------------------------------------------------


def completion(site, n: int, shortname: str, *, record=None, username=None, days_ago=1) -> Completion:
    done = timezone.now() - timedelta(days=days_ago)
    return Completion.objects.create(
        site=site, record=record, moodle_user_id=100 + n, external_id=record.external_id if record else "",
        username=username or f"user{n}", course_id=n, course_shortname=shortname, completed_at=done,
    )  # fmt: skip


def test_the_completions_list_links_people_and_filters_by_course(operator_client, site):
    record = SyncRecord.objects.create(site=site, external_id="E00042", username="mgarcia")
    linked = completion(site, 1, "MATH101", record=record, username="mgarcia", days_ago=1)
    unlinked = completion(site, 2, "HIST200", days_ago=2)
    url = reverse("sync:site_completions", args=["north"])
    response = operator_client.get(url)
    assert list(response.context["page"].object_list) == [linked, unlinked]
    page = text(response)
    assert f'href="{reverse("sync:record_detail", args=[record.pk])}">E00042</a>' in page
    assert "not linked by the hub (Moodle user 102)" in page
    assert f'href="{reverse("sync:completion_export", args=["north"])}?"' in page
    filtered = operator_client.get(url, {"course": "math"})
    assert list(filtered.context["page"].object_list) == [linked]
    assert f"{reverse('sync:completion_export', args=['north'])}?course=math" in text(filtered)


def test_the_completions_csv_escapes_formulas_and_keeps_the_filter(operator_client, site):
    completion(site, 1, "MATH101", username='=HYPERLINK("http://evil.example")')
    completion(site, 2, "HIST200", username="@ann")
    south = MoodleSite.objects.create(slug="south", name="South", base_url="https://south.example.edu")
    completion(south, 3, "MATH101")
    response = operator_client.get(reverse("sync:completion_export", args=["north"]), {"course": "MATH"})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="completions-north-' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert [(r["course_shortname"], r["username"]) for r in rows] == [
        ("MATH101", '\'=HYPERLINK("http://evil.example")')
    ]
    everything = operator_client.get(reverse("sync:completion_export", args=["north"]))
    text_csv = b"".join(everything.streaming_content).decode("utf-8-sig")
    assert "'@ann" in text_csv and "user3" not in text_csv


# -- the site form -------------------------------------------------------------------------------------------


def test_the_site_form_takes_the_expected_event_interval_in_minutes(admin_client, site):
    url = reverse("sync:site_edit", args=["north"])
    data = {
        "name": "North Campus", "base_url": site.base_url, "enabled": "on", "time_zone": "UTC",
        "max_concurrent_calls": 2, "min_spacing_ms": 100, "calls_per_minute": 120, "batch_size": 500,
        "max_input_vars": 5000, "run_time_budget": "01:00:00", "languages": "en",
        "events_expected_within": "90",
    }  # fmt: skip
    assert admin_client.post(url, data).status_code == 302
    site.refresh_from_db()
    assert site.events_expected_within == timedelta(minutes=90)
    page = text(admin_client.get(url))
    assert "Expect an event at least every … minutes" in page and 'value="90"' in page
    assert "events_expected_within: None → 1:30:00" in AuditEntry.objects.get(action="site.change").detail

    assert admin_client.post(url, {**data, "events_expected_within": ""}).status_code == 302
    site.refresh_from_db()
    assert site.events_expected_within is None
    response = admin_client.post(url, {**data, "events_expected_within": "0"})
    assert response.status_code == 200 and "greater than or equal to 1" in text(response)


# -- who may look --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["sync:site_events", "sync:site_hook_secrets", "sync:site_completions", "sync:completion_export"],
)
def test_every_page_needs_a_login(client, site, name):
    response = client.get(reverse(name, args=["north"]))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert not getattr(response, "streaming", False)


def test_posting_to_the_secret_actions_needs_a_login(client, site):
    response = make(client)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert not HookSecret.objects.exists()
