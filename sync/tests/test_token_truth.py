"""Token truth: a token Moodle refused (at the probe, the pre-flight or mid-run) is red wherever it is shown
until a call Moodle accepts clears it; the stopped run says how many records wait and links to the token
page; a refused token is never offered for promotion."""

import pytest
from django.urls import reverse

from integration_hub.testing import HUB_TOKEN
from monitoring.heartbeat import probe_site
from sync import tokens
from sync.choices import RunKind, RunStatus, TokenStatus
from sync.models import ServiceToken, SyncRun
from sync.run import engine

pytestmark = pytest.mark.django_db
STANDBY = "standby-token-1111222233334444zzzz"


def refuse_the_token(moodle) -> None:
    moodle.control("DELETE", f"tokens/{HUB_TOKEN}")


def test_a_probe_refusal_marks_the_token_red_until_a_call_is_accepted(sync_site, moodle, client, operator):
    refuse_the_token(moodle)
    probe_site(sync_site, transport=moodle.transport)
    token = sync_site.active_token()
    assert token.refused and token.refused_code == "invalidtoken"
    assert token.refused_function == "core_webservice_get_site_info"

    client.force_login(operator)
    page = client.get(reverse("sync:site_tokens", args=[sync_site.slug])).content.decode()
    assert "Refused by Moodle" in page and "invalidtoken" in page
    assert f"Moodle refused the active token {token.masked}" in page
    overview = client.get(reverse("monitoring:overview")).content.decode()
    assert "refused by Moodle" in overview and reverse("sync:site_tokens", args=[sync_site.slug]) in overview

    moodle.control("POST", "tokens", {"token": HUB_TOKEN, "username": "wsuser"})  # fixed in Moodle
    probe_site(sync_site, transport=moodle.transport)
    token.refresh_from_db()
    assert not token.refused
    assert (
        "Refused by Moodle"
        not in client.get(reverse("sync:site_tokens", args=[sync_site.slug])).content.decode()
    )


def test_a_run_stopped_by_a_refused_token_counts_the_pending_records_and_links_to_the_token_page(
    sync_site, moodle, client, operator
):
    refuse_the_token(moodle)
    run = engine.execute(SyncRun.objects.queue(sync_site, RunKind.BOOTSTRAP).pk, transport=moodle.transport)
    assert run.status == RunStatus.ABORTED and run.stop_category == "auth"
    assert sync_site.active_token().refused
    client.force_login(operator)
    page = client.get(reverse("sync:run_detail", args=[run.pk])).content.decode()
    tokens_url = reverse("sync:site_tokens", args=[sync_site.slug])
    assert f'href="{tokens_url}"' in page and "Open the token page of North Campus" in page
    state = client.get(reverse("monitoring:overview")).content.decode()
    assert "Next: " in state and tokens_url in state


def test_a_refused_token_is_not_offered_for_promotion(sync_site, moodle, client, hub_admin):
    moodle.control("POST", "tokens", {"token": STANDBY, "username": "wsuser"})
    standby = tokens.add_token(sync_site, "spare", STANDBY, user=hub_admin, transport=moodle.transport)
    assert standby.status == TokenStatus.STANDBY and standby.promotable
    moodle.control("DELETE", f"tokens/{STANDBY}")
    tokens.verify(standby, hub_admin, transport=moodle.transport)
    standby.refresh_from_db()
    assert standby.refused and not standby.promotable
    with pytest.raises(tokens.TokenError, match="Moodle refused"):
        tokens.promote(standby, hub_admin)
    client.force_login(hub_admin)
    page = client.get(reverse("sync:site_tokens", args=[sync_site.slug])).content.decode()
    assert f'aria-label="Promote {standby.masked}"' not in page


def test_after_a_rotation_the_dead_token_stays_refused_and_is_not_promotable(sync_site, moodle, hub_admin):
    old = sync_site.active_token()
    refuse_the_token(moodle)
    probe_site(sync_site, transport=moodle.transport)
    moodle.control("POST", "tokens", {"token": STANDBY, "username": "wsuser"})
    new = tokens.add_token(sync_site, "new", STANDBY, user=hub_admin, transport=moodle.transport)
    tokens.promote(new, hub_admin)
    old = ServiceToken.objects.get(pk=old.pk)
    assert old.status == TokenStatus.STANDBY and old.refused and not old.promotable
    probe_site(sync_site, transport=moodle.transport)  # the new token works: the old one is still refused
    old.refresh_from_db()
    assert old.refused
