"""The token pages: the list, adding (the plaintext never comes back), verify / promote / confirm revoked
with their confirm pages and messages, the expiry timeline, and operators who may look but not act."""

import logging
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from integration_hub.testing import HUB_TOKEN
from monitoring.models import AuditEntry, CallLog
from simulator.server import serve
from sync.choices import TokenStatus
from sync.models import MoodleSite, ServiceToken

NEW_TOKEN = "page-token-0011223344556677klmn"


@pytest.fixture
def sim(moodle, sync_site):
    """The simulated Moodle over HTTP, as the pages reach a real one."""
    moodle.control("POST", "tokens", {"token": NEW_TOKEN, "username": "wsuser"})
    with serve(moodle.app) as server:
        MoodleSite.objects.filter(pk=sync_site.pk).update(base_url=server.url)
        yield moodle


@pytest.fixture
def admin_client(client, hub_admin):
    client.force_login(hub_admin)
    return client


def add(client, slug="north", **fields):
    data = {"label": "2027", "token": NEW_TOKEN, "valid_until": "", "ip_restriction": "", **fields}
    return client.post(reverse("sync:site_tokens", args=[slug]), data, follow=True)


def text(response) -> str:
    return response.content.decode()


def test_add_verify_promote_and_confirm_from_the_pages(admin_client, sync_site, sim, caplog):
    caplog.set_level(logging.DEBUG)
    pages = []
    response = add(admin_client, valid_until=(timezone.now() + timedelta(days=20)).date().isoformat())
    pages.append(text(response))
    new = ServiceToken.objects.get(last4="klmn")
    old = ServiceToken.objects.get(last4=HUB_TOKEN[-4:])
    assert new.status == TokenStatus.STANDBY and new.last_verified_at
    assert "verified and stored as standby" in text(response)
    assert "…klmn" in text(response) and "warn-text" in text(response)  # 19-20 days left: amber

    response = admin_client.post(reverse("sync:token_verify", args=["north", new.pk]), follow=True)
    pages.append(text(response))
    assert "verified: it has every function the hub needs" in text(response)

    confirm = admin_client.get(reverse("sync:token_promote", args=["north", new.pk]))
    pages.append(text(confirm))
    assert "becomes active" in text(confirm) and "…klmn" in text(confirm)
    assert "becomes standby" in text(confirm) and f"Revoke …{HUB_TOKEN[-4:]} in Moodle afterwards" in text(
        confirm
    )
    response = admin_client.post(reverse("sync:token_promote", args=["north", new.pk]), follow=True)
    pages.append(text(response))
    assert "is now active" in text(response)
    assert "was replaced by a rotation" in text(response)  # the reminder banner

    site_page = admin_client.get(reverse("sync:site_detail", args=["north"]))
    pages.append(text(site_page))
    assert "was replaced by a rotation" in text(site_page)
    assert reverse("sync:site_tokens", args=["north"]) in text(site_page)

    confirm = admin_client.get(reverse("sync:token_revoked", args=["north", old.pk]))
    pages.append(text(confirm))
    assert "Did you revoke" in text(confirm)
    response = admin_client.post(reverse("sync:token_revoked", args=["north", old.pk]), follow=True)
    pages.append(text(response))
    assert "marked revoked" in text(response) and "was replaced by a rotation" not in text(response)
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.status, new.status) == (TokenStatus.REVOKED, TokenStatus.ACTIVE)

    pages.append(text(admin_client.get(reverse("sync:token_timeline"))))
    for page in pages:
        assert NEW_TOKEN not in page and HUB_TOKEN not in page
    assert NEW_TOKEN not in caplog.text and HUB_TOKEN not in caplog.text
    for entry in AuditEntry.objects.all():
        assert NEW_TOKEN not in entry.detail + entry.target
    for call in CallLog.objects.all():
        assert NEW_TOKEN not in f"{call.params} {call.message}"


def test_the_token_is_not_echoed_on_a_validation_error(admin_client, sync_site, sim):
    response = add(admin_client, label="")
    assert response.status_code == 200 and "This field is required" in text(response)
    assert NEW_TOKEN not in text(response)
    assert not ServiceToken.objects.filter(last4="klmn").exists()


def test_a_rejected_token_is_reported_and_not_echoed(admin_client, sync_site, sim):
    response = add(admin_client, token="wrong-token-9999")
    assert "Not stored: Moodle rejected the token" in text(response)
    assert "wrong-token-9999" not in text(response)
    assert sync_site.tokens.count() == 1


def test_a_promote_of_an_unverified_token_is_refused_with_a_message(admin_client, sync_site):
    token = ServiceToken(site=sync_site, label="unverified", status=TokenStatus.STANDBY)
    token.set_token(NEW_TOKEN)
    token.save()
    confirm = admin_client.get(reverse("sync:token_promote", args=["north", token.pk]))
    assert "Only a verified standby token can be promoted" in text(confirm)
    response = admin_client.post(reverse("sync:token_promote", args=["north", token.pk]), follow=True)
    assert "Nothing was done" in text(response)
    token.refresh_from_db()
    assert token.status == TokenStatus.STANDBY


def test_operators_see_the_tokens_but_get_403_on_every_action(client, operator, sync_site, sim):
    client.force_login(operator)
    token = sync_site.active_token()
    page = client.get(reverse("sync:site_tokens", args=["north"]))
    assert page.status_code == 200 and "manage tokens" in text(page) and 'type="password"' not in text(page)
    assert client.get(reverse("sync:token_timeline")).status_code == 200
    for url in (
        reverse("sync:site_tokens", args=["north"]),
        reverse("sync:token_verify", args=["north", token.pk]),
        reverse("sync:token_promote", args=["north", token.pk]),
        reverse("sync:token_revoked", args=["north", token.pk]),
    ):
        assert client.post(url, {"label": "x", "token": NEW_TOKEN}).status_code == 403, url
    for url in (
        reverse("sync:token_promote", args=["north", token.pk]),
        reverse("sync:token_revoked", args=["north", token.pk]),
    ):
        assert client.get(url).status_code == 403, url
    assert sync_site.tokens.count() == 1 and not AuditEntry.objects.exists()


def test_the_timeline_sorts_by_expiry_and_colours_days_left(admin_client, db):
    now = timezone.now()
    for slug, days in (("late", 200), ("soon", 5), ("mid", 25)):
        site = MoodleSite.objects.create(slug=slug, name=slug.title(), base_url=f"https://{slug}.example.edu")
        token = ServiceToken(
            site=site, label="t", status=TokenStatus.ACTIVE, valid_until=now + timedelta(days=days, hours=1)
        )
        token.set_token(f"{slug}-token-{days:04d}")
        token.save()
    forever = ServiceToken(site=site, label="forever", status=TokenStatus.STANDBY)
    forever.set_token("forever-token-0000")
    forever.save()
    page = text(admin_client.get(reverse("sync:token_timeline")))
    assert page.index("Soon") < page.index("Mid") < page.index("Late")
    assert "tt-bar bad" in page and "tt-bar warn" in page and "tt-bar ok" in page
    assert "No expiry" in page and "forever" in page


def test_the_site_page_links_to_adding_a_first_token(admin_client, site):
    page = text(admin_client.get(reverse("sync:site_detail", args=["north"])))
    assert "Add one on the token page" in page and reverse("sync:site_tokens", args=["north"]) in page
    tokens_page = text(admin_client.get(reverse("sync:site_tokens", args=["north"])))
    assert "No active token" in tokens_page and 'type="password"' in tokens_page
