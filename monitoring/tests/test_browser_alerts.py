"""An operator signs in, follows the critical banner to the alerts page and acknowledges an alert."""

import pytest

from integration_hub.testing import sign_in
from monitoring import alerts
from monitoring.models import Alert


@pytest.mark.browser
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_operator_sees_and_acknowledges_an_alert(page, operator, site):
    alerts.raise_alert(
        "auth:north", kind="auth_failure", site=site, title="North Campus: Moodle refused the token …abcd",
        detail="Check the token in Moodle, then resume the run.",
    )  # fmt: skip
    sign_in(page, "operator")
    banner = page.locator(".banner.critical-alerts")
    assert "1 critical alert open" in banner.inner_text()
    banner.get_by_role("link", name="See the alerts").click()
    page.wait_for_url("**/alerts/**")
    row = page.locator("#alert-1, tr.alert-row").first
    assert "Check the token in Moodle" in row.inner_text()
    page.get_by_role("button", name="Acknowledge North Campus: Moodle refused the token …abcd").click()
    page.get_by_text("Acknowledged: North Campus").wait_for()
    assert "Acknowledged" in page.locator("tr.alert-row").first.inner_text()
    assert "by operator" in page.locator("tr.alert-row").first.inner_text()
    assert page.locator(".banner.critical-alerts").count() == 0
    assert Alert.objects.get().status == Alert.Status.ACKNOWLEDGED
