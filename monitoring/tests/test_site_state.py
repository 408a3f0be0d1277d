"""One state model for a site: healthy only when nothing needs a person, the most urgent thing named in
words with a link to where it is fixed, and the same verdict on the Overview, the site page and /metrics."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from monitoring import prometheus
from monitoring.alerts import raise_alert
from monitoring.kinds import AlertKind
from monitoring.models import Alert, ProbeResult
from monitoring.rules import unavailable_sites
from monitoring.site_state import ATTENTION, DEGRADED, FAILING, HEALTHY, site_state
from sync.choices import (
    ConflictKind,
    DiscrepancyKind,
    DiscrepancyStatus,
    ErrorCategory,
    MembershipStatus,
    ResolutionAction,
    RunKind,
    RunStatus,
    SyncStatus,
    TokenStatus,
)
from sync.models import (
    Conflict,
    DeadLetter,
    Discrepancy,
    Membership,
    MembershipTarget,
    ServiceToken,
    SyncRecord,
    SyncRun,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def calm(site, clean_redis):
    """A site with a working token and a probe that answered: healthy, until a test adds something."""
    token = ServiceToken(site=site, label="main", status=TokenStatus.ACTIVE)
    token.set_token("state-token-0000abcd")
    token.save()
    ProbeResult.objects.create(site=site, ok=True, latency_ms=40, release="5.1")
    return site


def finished(site, status, **fields) -> SyncRun:
    return SyncRun.objects.create(
        site=site,
        kind=fields.pop("kind", RunKind.INCREMENTAL),
        status=status,
        finished_at=timezone.now(),
        **fields,
    )


def record(site, n: int, **fields) -> SyncRecord:
    return SyncRecord.objects.create(site=site, external_id=f"E{n:05d}", **fields)


def test_a_calm_site_is_healthy(calm):
    finished(calm, RunStatus.SUCCEEDED)
    state = site_state(calm)
    assert state.state == HEALTHY and state.findings == []


def test_an_open_critical_alert_is_never_healthy(calm):
    raise_alert(
        f"blast_radius:{calm.slug}",
        kind=AlertKind.BLAST_RADIUS,
        site=calm,
        title="North Campus: reconciliation stopped short of suspending 2038 users",
    )
    state = site_state(calm)
    assert state.state == ATTENTION
    assert state.first.reason == "North Campus: reconciliation stopped short of suspending 2038 users"
    assert state.first.link == reverse("monitoring:alert_list") + "?site=north"


@pytest.mark.parametrize(
    ("make", "words", "link"),
    [
        (
            lambda s: DeadLetter.objects.create(
                site=s, record=record(s, 1, sync_status=SyncStatus.ERROR), function="f", category="transient"
            ),
            "1 dead letter waits for a retry",
            "/deadletters/?site=north",
        ),
        (
            lambda s: record(s, 2, sync_status=SyncStatus.ERROR, error_category=ErrorCategory.VALIDATION),
            "1 record is in error",
            "/records/?site=north&status=error",
        ),
        (
            lambda s: Conflict.objects.create(
                site=s, record=record(s, 3), kind=ConflictKind.EMAIL_TAKEN, message="taken"
            ),
            "1 conflict is open",
            "/conflicts/?site=north",
        ),
        (
            lambda s: Discrepancy.objects.create(
                site=s,
                run=finished(s, RunStatus.SUCCEEDED, kind=RunKind.RECONCILE),
                kind=DiscrepancyKind.FIELD_DRIFT,
                status=DiscrepancyStatus.OPEN,
                summary="drift",
                proposed_action=ResolutionAction.UPDATE,
            ),
            "1 discrepancy waits for an admin's decision",
            "/discrepancies/?site=north",
        ),
        (
            lambda s: Membership.objects.create(
                site=s,
                record=record(s, 4),
                target=MembershipTarget.objects.create(site=s, kind="course", key="CHEM101"),
                role="student",
                status=MembershipStatus.ERROR,
                error_message="record E00004: Moodle refused it",
            ),
            "1 membership is in error",
            "/sites/north/memberships/?status=error",
        ),
    ],
    ids=["dead letter", "record in error", "conflict", "discrepancy", "membership in error"],
)
def test_work_waiting_for_a_person_needs_attention_and_links_there(calm, make, words, link):
    make(calm)
    state = site_state(calm)
    assert state.state == ATTENTION
    assert words in state.first.reason and state.first.link == link


def test_a_token_moodle_refused_is_failing_and_links_to_the_token_page(calm):
    token = calm.active_token()
    token.refused_at, token.refused_code, token.refused_function = (
        timezone.now(),
        "invalidtoken",
        "core_webservice_get_site_info",
    )
    token.save()
    state = site_state(calm)
    assert state.state == FAILING
    assert state.first.reason.startswith(f"Moodle refused the token {token.masked} at ")
    assert "(invalidtoken on core_webservice_get_site_info)" in state.first.reason
    assert state.first.link == reverse("sync:site_tokens", args=[calm.slug])


@pytest.mark.parametrize(("days", "expected"), [(5, DEGRADED), (20, ATTENTION), (45, HEALTHY)])
def test_a_token_about_to_expire_is_not_healthy(calm, days, expected):
    token = calm.active_token()
    token.valid_until = timezone.now() + timedelta(days=days, hours=1)
    token.save()
    assert site_state(calm).state == expected


def test_a_run_with_problems_needs_attention_and_is_not_the_last_clean_sync(calm):
    clean = finished(calm, RunStatus.SUCCEEDED)
    later = finished(
        calm, RunStatus.PROBLEMS, dead_lettered=120, errors=120, abort_reason="it left 120 dead letters"
    )
    state = site_state(calm)
    assert state.state == ATTENTION and state.first.key == "run_problems"
    assert state.last_clean == clean and state.last_finished == later


def test_an_operators_cancel_and_a_failed_dry_run_are_not_site_faults(calm):
    finished(calm, RunStatus.SUCCEEDED)
    finished(calm, RunStatus.CANCELLED, abort_reason="cancelled by operator")
    finished(calm, RunStatus.FAILED, dry_run=True, abort_reason="the source could not be read: CSV header")
    assert site_state(calm).state == HEALTHY


def test_a_run_stopped_by_a_refused_token_sends_the_operator_to_the_token_page(calm):
    finished(calm, RunStatus.ABORTED, stop_category="auth", abort_reason="Moodle rejected the token")
    state = site_state(calm)
    assert state.state == FAILING and state.first.key == "run_aborted"
    assert state.first.link == reverse("sync:site_tokens", args=[calm.slug])


def test_metrics_expose_the_same_state_as_the_overview(calm, client, operator):
    DeadLetter.objects.create(
        site=calm, record=record(calm, 1, sync_status=SyncStatus.ERROR), function="f", category="transient"
    )
    text = prometheus.prometheus_text()
    assert 'hub_site_state{site="north",state="attention"} 2' in text
    client.force_login(operator)
    body = client.get(reverse("monitoring:overview")).content.decode()
    assert 'class="site-state state-attention"' in body and "needs attention" in body


def test_the_unreachable_rule_reads_the_probe_finding_of_the_state(calm):
    ProbeResult.objects.create(
        site=calm, ok=False, error_category="transient", error="HTTP 502 from a proxy in front of Moodle"
    )
    problems = unavailable_sites(timezone.now())
    assert [p.key for p in problems] == ["site_unavailable:north"]
    assert problems[0].severity == Alert.Severity.WARNING
    assert "HTTP 502 from a proxy in front of Moodle" in problems[0].detail
