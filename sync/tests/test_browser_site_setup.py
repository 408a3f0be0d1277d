"""A new site set up entirely through the pages, in a real browser with a real worker and the simulator over
HTTP: add the site, give it a token, upload its CSV, map its columns while the preview shows the first
people, then start a dry run from the site page, read its plan and run it for real."""

import re

import pytest
from playwright.sync_api import expect

from integration_hub.testing import HUB_TOKEN, person, sign_in, simulated_moodle, start_worker, write_csv
from monitoring.models import AuditEntry
from simulator.server import serve
from sync.choices import RunStatus
from sync.models import MoodleSite, SyncRun


@pytest.mark.browser
@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_admin_sets_up_a_site_through_the_pages_dry_runs_it_and_runs_it_for_real(
    page, hub_admin, child_env, clean_redis, tmp_path, settings
):
    moodle = simulated_moodle(latency_ms=5, seed=3)
    export = write_csv(tmp_path / "hr-export.csv", [person(n) for n in range(1, 26)])
    uploads = tmp_path / "uploads"
    settings.UPLOAD_DIR = uploads  # the live server keeps the file here, the worker reads it from here
    with serve(moodle.app) as server:
        worker = start_worker({**child_env, "UPLOAD_DIR": str(uploads)}, "browser-site-setup")
        try:
            sign_in(page, "admin")
            page.get_by_role("link", name="Sites").click()
            page.get_by_role("link", name="Add a site").click()
            page.get_by_label("Name").fill("West Campus")
            page.get_by_label("Slug").fill("west")
            page.get_by_label("Base url").fill(server.url)
            page.get_by_label("Time zone").select_option("Europe/Warsaw")
            page.get_by_label("Min spacing ms").fill("0")
            page.get_by_label("Calls per minute").fill("100000")
            page.get_by_role("button", name="Add site").click()
            page.wait_for_url(re.compile(r"/sites/west/$"))
            expect(page.get_by_text("Site West Campus added")).to_be_visible()
            expect(page.get_by_text("Saved, but")).to_have_count(0)  # the simulator answers as Moodle
            expect(page.locator(".page-head .pill")).to_be_visible()

            page.get_by_role("link", name="Manage tokens").click()
            page.get_by_label("Label").fill("main")
            page.get_by_label("Token", exact=True).fill(HUB_TOKEN)
            page.get_by_role("button", name="Verify and add").click()
            page.get_by_role("link", name="West Campus").first.click()

            page.get_by_role("link", name="Set up its source and mapping").click()
            page.get_by_label("CSV file", exact=True).check()
            page.get_by_label("Upload a file (the hub keeps it)").check()
            page.get_by_label("Upload a CSV file").set_input_files(str(export))
            page.get_by_label("External id column").fill("employee_id")
            page.get_by_role("button", name="Check and save the source").click()
            page.wait_for_url(re.compile(r"/sites/west/mapping/$"))

            # The columns come from the uploaded file's header; the preview follows the form as it changes.
            page.get_by_label("email: column").select_option("mail")
            page.get_by_label("department: column").select_option("dept")
            preview = page.locator("#preview")
            expect(preview).to_contain_text("user00001@example.edu")
            expect(preview).to_contain_text("20 records read")
            # A language pack the site does not have: every record names the field at fault.
            page.get_by_label("lang: column").select_option("")
            page.get_by_label("lang: fixed value").fill("xx")
            expect(preview).to_contain_text("20 would not be sent")
            expect(preview.locator(".error-field").first).to_have_text("lang")
            page.get_by_label("lang: fixed value").fill("")
            page.get_by_label("lang: column").select_option("lang")
            expect(preview).to_contain_text("all would be sent")
            page.get_by_role("button", name="Save mapping").click()
            page.wait_for_url(re.compile(r"/sites/west/$"))

            page.get_by_label("Bootstrap").check()
            page.get_by_label("Dry run", exact=True).check()
            page.get_by_role("button", name="Start run").click()
            page.wait_for_url(re.compile(r"/runs/\d+/$"))
            for_real = page.get_by_role("button", name="Run this for real")
            for_real.wait_for(timeout=60_000)
            expect(page.locator("tr.plan-would_create")).to_contain_text("25")
            assert moodle.write_calls() == 0

            for_real.click()  # the same mode, the same source, now for real
            dry = SyncRun.objects.get(site__slug="west", dry_run=True)
            page.wait_for_url(re.compile(rf"/runs/(?!{dry.pk}/)\d+/$"))
            page.wait_for_function(
                "() => document.querySelector('progress') && document.querySelector('progress').value == 100",
                timeout=60_000,
            )
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    site = MoodleSite.objects.get(slug="west")
    assert site.time_zone == "Europe/Warsaw" and site.source.config["path"].startswith(str(uploads))
    dry, real = SyncRun.objects.filter(site=site).order_by("pk")
    assert (dry.dry_run, dry.status) == (True, RunStatus.SUCCEEDED)
    assert (real.dry_run, real.kind) == (False, dry.kind)
    real.refresh_from_db()
    assert real.status == RunStatus.SUCCEEDED, real.abort_reason
    assert real.created == 25 and sorted(moodle.people()) == [f"E{n:05d}" for n in range(1, 26)]
    actions = set(AuditEntry.objects.filter(target="site west").values_list("action", flat=True))
    assert {"site.add", "source.add", "mapping.change"} <= actions
