"""One rule for time on every page and in every notice: stored in UTC, shown in the viewer's zone (their
choice on "Your settings", else TIME_ZONE) with the zone named; alert texts keep their instants as data."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from integration_hub.testing import log_call
from monitoring import alerts, charts, rules
from monitoring.kinds import AlertKind
from monitoring.models import Alert, AlertChannel, ProbeResult
from sync.choices import RunKind, RunStatus, TokenStatus
from sync.models import DeadLetter, ServiceToken, SyncRecord, SyncRun
from web.models import Preference

pytestmark = pytest.mark.django_db

# A winter night: 04:06 UTC is 20:06 PST the evening before, 05:06 CET in Madrid.
NIGHT = datetime(2026, 1, 15, 4, 6, tzinfo=UTC)


@pytest.fixture
def in_los_angeles(client, operator):
    Preference.objects.create(user=operator, time_zone="America/Los_Angeles")
    client.force_login(operator)
    return client


@pytest.fixture
def madrid_site(site):
    """The site has its own zone (for its schedules); the pages must not use it instead of the viewer's."""
    site.time_zone = "Europe/Madrid"
    site.save()
    return site


def page(client, url, **params) -> str:
    response = client.get(url, params)
    assert response.status_code == 200
    return response.content.decode()


def test_run_pages_show_times_in_the_viewers_zone_not_the_sites(in_los_angeles, madrid_site):
    run = SyncRun.objects.create(
        site=madrid_site, kind=RunKind.INCREMENTAL, status=RunStatus.SUCCEEDED, created_at=NIGHT,
        started_at=NIGHT, last_progress_at=NIGHT + timedelta(minutes=1),
        finished_at=NIGHT + timedelta(minutes=2),
    )  # fmt: skip
    for url in (reverse("sync:run_list"), reverse("sync:run_detail", args=[run.pk])):
        body = page(in_los_angeles, url)
        assert "2026-01-14 20:06:00 PST" in body, url  # on hover, in the viewer's zone
        assert "CET" not in body and "UTC" not in body, url
        assert "Times in PST" in body, "the header names the zone"


def test_dead_letters_and_the_errors_page_show_times_in_the_viewers_zone(in_los_angeles, madrid_site):
    record = SyncRecord.objects.create(site=madrid_site, external_id="E00001", display_name="Person 1")
    DeadLetter.objects.create(
        site=madrid_site, record=record, function="core_user_create_users", category="transient",
        http_status=503, message="HTTP 503", first_failed_at=NIGHT, last_failed_at=NIGHT,
    )  # fmt: skip
    body = page(in_los_angeles, reverse("sync:deadletter_list"))
    assert "2026-01-14 20:06:00 PST" in body and "UTC" not in body and "CET" not in body

    log_call(madrid_site, "transient", ms=120.0, at=timezone.now() - timedelta(minutes=5), http_status=503)
    body = page(in_los_angeles, reverse("monitoring:errors"), site="north")
    now_la = timezone.localtime(timezone.now(), timezone=ZoneInfo("America/Los_Angeles"))
    zone = now_la.strftime("%Z")
    assert zone in ("PST", "PDT")
    assert f"Time ({zone})" in body, "the chart's time axis names the zone"
    assert "Calls" in body and "p90 latency (ms)" in body, "both y axes say what they count"
    assert f"{zone}: 1 transient" in body, "hovering a bar gives its time with the zone"
    assert "UTC" not in body and "CET" not in body


def test_alert_texts_store_the_instant_as_data_and_show_it_in_the_readers_zone(
    in_los_angeles, madrid_site, settings
):
    SyncRun.objects.create(
        site=madrid_site, kind=RunKind.INCREMENTAL, status=RunStatus.RUNNING, started_at=NIGHT
    )
    now = NIGHT + timedelta(hours=3)
    for _ in range(settings.ALERT_CONSECUTIVE):
        rules.evaluate(now, rules=[r for r in rules.RULES if r.kind == AlertKind.RUN_BUDGET])
    alert = Alert.objects.get(kind=AlertKind.RUN_BUDGET)
    assert "{started}" in alert.detail and "04:06" not in alert.detail and "UTC" not in alert.detail
    assert datetime.fromisoformat(alert.times["started"]) == NIGHT

    body = page(in_los_angeles, reverse("monitoring:alert_list"))
    assert "started 2026-01-14 20:06 PST" in body
    assert "{started}" not in body and "UTC" not in body and "CET" not in body


def test_alert_texts_written_before_keep_showing_in_the_readers_zone(in_los_angeles, site):
    """Rows from before monitoring 0013 (and producers not yet converted) say "04:06 UTC"."""
    alert = alerts.raise_alert(
        "auth:north", kind=AlertKind.AUTH_FAILURE, site=site,
        title="North Campus: Moodle rejected the token …wxyz at 04:06 UTC (invalidtoken)",
        detail="Valid until 2026-01-20 04:06 UTC. {not a placeholder}",
    )  # fmt: skip
    Alert.objects.filter(pk=alert.pk).update(first_seen_at=NIGHT, last_seen_at=NIGHT + timedelta(minutes=3))
    body = page(in_los_angeles, reverse("monitoring:alert_list"))
    assert "rejected the token …wxyz at 20:06 PST (invalidtoken)" in body
    assert "Valid until 2026-01-19 20:06 PST. {not a placeholder}" in body
    assert "UTC" not in body


def test_the_site_state_names_an_old_alert_by_its_title_in_the_readers_zone(in_los_angeles, site):
    """The Overview and the site page name an open alert no other finding explains by its title."""
    alert = alerts.raise_alert(
        "schedule_missed:north", kind=AlertKind.SCHEDULE_MISSED, site=site,
        title="North Campus: the nightly reconciliation was due at 04:06 UTC and did not run",
    )  # fmt: skip
    Alert.objects.filter(pk=alert.pk).update(first_seen_at=NIGHT, last_seen_at=NIGHT + timedelta(minutes=3))
    for url in (reverse("monitoring:overview"), reverse("sync:site_detail", args=[site.slug])):
        body = page(in_los_angeles, url)
        assert "was due at 20:06 PST and did not run" in body and "04:06 UTC" not in body, url


def test_email_notices_write_times_in_the_hubs_zone_and_name_it(site, settings):
    settings.TIME_ZONE = "America/New_York"
    AlertChannel.objects.create(name="ops", kind=AlertChannel.Kind.EMAIL, target="ops@example.edu")
    run = SyncRun.objects.create(
        site=site, kind=RunKind.INCREMENTAL, status=RunStatus.RUNNING, started_at=NIGHT
    )
    alerts.raise_alert(
        f"run_budget:{run.pk}", kind=AlertKind.RUN_BUDGET, site=site, run=run,
        title="North Campus: run over budget", detail="Run started {started}.", times={"started": NIGHT},
    )  # fmt: skip
    assert alerts.notify_pending() is True
    [message] = mail.outbox
    assert "Run started 2026-01-14 23:06 EST." in message.body
    assert "Times are in America/New_York." in message.body
    assert "UTC" not in message.body


def test_the_settings_page_changes_the_zone_every_page_uses(client, operator, madrid_site):
    run = SyncRun.objects.create(site=madrid_site, kind=RunKind.INCREMENTAL, created_at=NIGHT)
    client.force_login(operator)
    detail = reverse("sync:run_detail", args=[run.pk])
    body = page(client, detail)
    assert "2026-01-15 04:06:00 UTC" in body, "no choice yet: the hub's TIME_ZONE, not the site's"
    assert 'href="/settings/"' in body and "Your settings" in body, "linked from the user menu"

    form = page(client, reverse("web:settings"))
    assert '<option value="America/Los_Angeles">' in form
    response = client.post(reverse("web:settings"), {"time_zone": "America/Los_Angeles"})
    assert response.status_code == 302
    assert Preference.objects.get(user=operator).time_zone == "America/Los_Angeles"
    body = page(client, detail)
    assert "2026-01-14 20:06:00 PST" in body and "UTC" not in body

    response = client.post(reverse("web:settings"), {"time_zone": "Mars/Olympus_Mons"})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert Preference.objects.get(user=operator).time_zone == "America/Los_Angeles"


def test_the_overview_latency_chart_has_axes_in_ms_and_the_viewers_zone(in_los_angeles, site, clean_redis):
    for minutes in (2, 12, 30):
        log_call(site, ms=180.0, at=timezone.now() - timedelta(minutes=minutes))
    body = page(in_los_angeles, reverse("monitoring:overview"))
    chart = body[body.index('<svg class="sparkline"') :]
    chart = chart[: chart.index("</svg>")]
    zone = timezone.localtime(timezone.now(), timezone=ZoneInfo("America/Los_Angeles"))
    assert 'width="360"' in chart
    assert " ms</text>" in chart, "a y axis with a scale in ms"
    assert f"Time ({zone:%Z})" in chart, "an x axis naming the zone"
    assert f"{zone:%Z}: p90 ≈" in chart and f"{zone:%Z}: no calls" in chart, "each bucket's figure on hover"


def test_chart_axis_names_both_zones_when_the_window_crosses_a_change_of_clocks():
    at = datetime(2026, 3, 8, 9, 0, tzinfo=UTC)  # 01:00 PST; two hours later it is 04:00 PDT
    zone = ZoneInfo("America/Los_Angeles")
    assert charts.zone_caption([at, at + timedelta(hours=2)], zone) == "PST/PDT"


def test_an_unreachable_site_alert_keeps_the_probe_time_as_data(in_los_angeles, madrid_site, clean_redis):
    token = ServiceToken(site=madrid_site, label="main", status=TokenStatus.ACTIVE)
    token.set_token("tz-token-9876wxyz")
    token.save()
    probed = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=1)
    ProbeResult.objects.create(
        site=madrid_site, at=probed, ok=False, error_category="transient", error="timeout"
    )
    [problem] = rules.unavailable_sites(timezone.now())
    assert "{probe_at}" in problem.detail and "CET" not in problem.detail and "CEST" not in problem.detail
    assert problem.times == {"probe_at": probed}
