"""Story: an admin rotates a site's token from the page, in a real browser, with the simulated Moodle
over HTTP: add the new token, verify it, promote it, revoke the old one in Moodle and confirm."""

import pytest
from playwright.sync_api import expect

from integration_hub.testing import HUB_TOKEN, sign_in, simulated_moodle
from simulator.server import serve
from sync.choices import TokenStatus
from sync.models import MoodleSite, ServiceToken

NEW_TOKEN = "browser-rotation-token-5566778899qrst"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_admin_rotates_a_token_from_the_page(page, hub_admin, clean_redis):
    moodle = simulated_moodle(seed=5)
    moodle.control("POST", "tokens", {"token": NEW_TOKEN, "username": "wsuser"})
    with serve(moodle.app) as server:
        site = MoodleSite.objects.create(
            slug="south", name="South Campus", base_url=server.url, min_spacing_ms=0, calls_per_minute=10_000
        )
        old = ServiceToken(site=site, label="2026", status=TokenStatus.ACTIVE)
        old.set_token(HUB_TOKEN)
        old.save()

        sign_in(page, "admin")
        page.get_by_role("link", name="Sites").click()
        page.get_by_role("link", name="South Campus").click()
        page.get_by_role("link", name="Manage tokens").click()
        page.get_by_label("Label").fill("2027")
        page.get_by_label("Token", exact=True).fill(NEW_TOKEN)
        page.get_by_label("IP restriction").fill("127.0.0.1")
        page.get_by_role("button", name="Verify and add").click()
        page.get_by_text("verified and stored as standby").wait_for()
        assert NEW_TOKEN not in page.content()

        page.get_by_role("button", name="Verify …qrst").click()
        page.get_by_text("it has every function the hub needs").wait_for()

        page.get_by_role("link", name="Promote …qrst").click()
        main = page.locator("main").inner_text()
        assert "…qrst (2027) becomes active" in main and "…cdef (2026) becomes standby" in main
        page.get_by_role("button", name="Promote …qrst").click()
        page.get_by_text("is now active").wait_for()
        expect(page.get_by_text("was replaced by a rotation")).to_be_visible()

        moodle.control("DELETE", f"tokens/{HUB_TOKEN}")  # the admin revokes the old token in Moodle
        page.get_by_role("link", name="I revoked …cdef in Moodle").first.click()
        page.get_by_role("button", name="I revoked …cdef in Moodle").click()
        page.get_by_text("marked revoked").wait_for()

        rows = page.locator("main table tbody tr")
        assert "Active" in rows.filter(has_text="…qrst").inner_text()
        assert "Revoked" in rows.filter(has_text="…cdef").inner_text()
        assert NEW_TOKEN not in page.content() and HUB_TOKEN not in page.content()
        new = ServiceToken.objects.get(last4="qrst")
        assert (new.status, new.ip_restriction) == (TokenStatus.ACTIVE, "127.0.0.1")
