"""The first operator story in a real browser: sign in, see the Overview, be refused an admin page."""

import pytest
from playwright.sync_api import expect

from integration_hub.testing import sign_in


@pytest.mark.browser
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_operator_signs_in_sees_overview_and_is_refused_an_admin_page(page, operator, site):
    page.goto("/")
    assert "/login/" in page.url  # every page needs a login
    sign_in(page, "operator")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.get_by_role("heading", name="North Campus")).to_be_visible()
    expect(page.get_by_text("Scheduler: no heartbeat yet")).to_be_visible()
    response = page.goto("/sites/add/")
    assert response.status == 403
    expect(page.get_by_role("heading", name="You cannot do this")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login/")
