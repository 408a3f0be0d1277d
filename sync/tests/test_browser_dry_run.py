"""A dry run, then the same for real, in a real browser with a real worker and the simulator over HTTP:
upload a CSV, start a dry run, read its plan, press "Run this for real", and watch the real run create
exactly the people of that upload."""

import re

import pytest
from playwright.sync_api import expect

from integration_hub.testing import make_site, person, sign_in, simulated_moodle, start_worker, write_csv
from simulator.server import serve
from sync.choices import RunStatus
from sync.models import SyncRun


@pytest.mark.browser
@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_upload_dry_run_then_run_it_for_real(page, operator, child_env, clean_redis, tmp_path, settings):
    moodle = simulated_moodle(latency_ms=10, seed=5)
    configured = write_csv(tmp_path / "configured.csv", [person(n) for n in range(1, 6)])
    upload = write_csv(tmp_path / "new-starters.csv", [person(n) for n in range(201, 261)])
    uploads = tmp_path / "uploads"
    settings.UPLOAD_DIR = uploads  # the live server saves the file here, the worker reads it from here
    with serve(moodle.app) as server:
        make_site("south", server.url, configured, name="South Campus", batch_size=20)
        worker = start_worker({**child_env, "UPLOAD_DIR": str(uploads)}, "browser-dry-run")
        try:
            sign_in(page, "operator")
            page.get_by_role("link", name="Sites").click()
            page.get_by_role("link", name="South Campus").click()
            page.get_by_label("Bootstrap").check()
            page.get_by_label("Dry run", exact=True).check()
            page.get_by_label("CSV file (optional)").set_input_files(str(upload))
            page.get_by_role("button", name="Start run").click()
            page.wait_for_url(re.compile(r"/runs/\d+/$"))
            dry = SyncRun.objects.latest("pk")
            assert dry.dry_run and dry.upload_name == "new-starters.csv"

            # The live block polls while the dry run goes, then the page reloads with the plan.
            for_real = page.get_by_role("button", name="Run this for real")
            for_real.wait_for(timeout=60_000)
            expect(page.locator("tr.plan-would_create")).to_contain_text("60")
            expect(page.locator("#for-real")).to_contain_text("new-starters.csv")
            dry.refresh_from_db()
            assert (dry.status, dry.progress_done, dry.progress_total) == (RunStatus.SUCCEEDED, 60, 60)
            assert moodle.write_calls() == 0

            for_real.click()
            page.wait_for_url(re.compile(rf"/runs/(?!{dry.pk}/)\d+/$"))
            page.wait_for_function(
                "() => document.querySelector('progress') && document.querySelector('progress').value == 100",
                timeout=60_000,
            )
            expect(page.locator("#run-progress")).to_contain_text("60 of 60 records")
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    real = SyncRun.objects.latest("pk")
    assert (real.kind, real.dry_run, real.source_file) == (dry.kind, False, dry.source_file)
    assert real.status == RunStatus.SUCCEEDED, real.abort_reason
    assert sorted(moodle.people()) == [f"E{n:05d}" for n in range(201, 261)]
