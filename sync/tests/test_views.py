"""Site pages: every one needs a login; adding a site is for Admins."""

import pytest
from django.urls import reverse

from sync.models import MoodleSite


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["sync:site_list", "sync:site_add"])
def test_pages_redirect_to_login_when_signed_out(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.mark.django_db
def test_an_operator_is_refused_adding_a_site(client, operator):
    client.force_login(operator)
    response = client.get(reverse("sync:site_add"))
    assert response.status_code == 403
    assert b"Admins" in response.content
    response = client.post(
        reverse("sync:site_add"), {"name": "X", "slug": "x", "base_url": "https://x.example.edu"}
    )
    assert response.status_code == 403
    assert not MoodleSite.objects.exists()


@pytest.mark.django_db
def test_an_admin_adds_a_site_with_the_default_limits(client, hub_admin):
    client.force_login(hub_admin)
    form = {
        "name": "South", "slug": "south", "base_url": "https://moodle.example.edu/webservice/rest/server.php",
        "enabled": "on", "time_zone": "Europe/Madrid", "max_concurrent_calls": 2, "min_spacing_ms": 150,
        "calls_per_minute": 90, "batch_size": 1000, "max_input_vars": 5000, "run_time_budget": "04:00:00",
        "languages": "en, FR,pt_br",
    }  # fmt: skip
    response = client.post(reverse("sync:site_add"), form)
    assert response.status_code == 302
    site = MoodleSite.objects.get(slug="south")
    assert site.base_url == "https://moodle.example.edu"
    assert site.languages == "en,fr,pt_br"
    assert response["Location"] == reverse("sync:site_detail", args=["south"])


@pytest.mark.django_db
def test_a_malformed_language_code_is_named(client, hub_admin):
    client.force_login(hub_admin)
    form = {"name": "South", "slug": "south", "base_url": "https://moodle.example.edu", "time_zone": "UTC",
            "max_concurrent_calls": 2, "min_spacing_ms": 150, "calls_per_minute": 90, "batch_size": 1000,
            "max_input_vars": 5000, "run_time_budget": "04:00:00", "languages": "en,French"}  # fmt: skip
    response = client.post(reverse("sync:site_add"), form)
    assert response.status_code == 200
    assert response.context["form"].errors["languages"] == [
        '"french" is not a Moodle language code (like "en" or "pt_br")'
    ]
    assert not MoodleSite.objects.exists()


@pytest.mark.django_db
def test_site_defaults_follow_the_seed_guide():
    site = MoodleSite(slug="s", name="S", base_url="https://m.example.edu")
    assert (site.max_concurrent_calls, site.min_spacing_ms, site.calls_per_minute) == (2, 150, 90)
    # A batch is what is looked up and committed together; its write calls are sized from max_input_vars
    # and Moodle's time per user, so it may be larger than the guide's 200 a call.
    assert (site.batch_size, site.max_input_vars, site.languages) == (2000, 5000, "en")
