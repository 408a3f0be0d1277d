"""Stories 7 and 9 in a real browser, with a real worker and the simulator over HTTP: start a run from the
site page, watch the progress bar reach 100 %, read its detail, retry a dead letter."""

import re
import time

import pytest
from playwright.sync_api import expect

from integration_hub.testing import (
    make_site,
    person,
    sign_in,
    simulated_moodle,
    start_worker,
    write_csv,
)
from simulator.server import serve
from sync.choices import DeadLetterStatus
from sync.models import DeadLetter


@pytest.mark.browser
@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_start_a_run_watch_it_finish_and_retry_a_dead_letter(
    page, operator, child_env, clean_redis, tmp_path
):
    moodle = simulated_moodle(latency_ms=10, seed=11)
    # The first create call fails with 503 on every attempt: its 20 people become dead letters.
    moodle.control("POST", "inject", {"kinds": ["503"] * 3, "function": "core_user_create_users"})
    csv_path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, 61)])
    with serve(moodle.app) as server:
        make_site("south", server.url, csv_path, name="South Campus", batch_size=20)
        env = {**child_env, "MOODLE_RETRY_ATTEMPTS": "3", "MOODLE_RETRY_BASE_S": "0.05"}
        worker = start_worker(env, "browser-runs")
        try:
            sign_in(page, "operator")
            page.get_by_role("link", name="Sites").click()
            page.get_by_role("link", name="South Campus").click()
            page.get_by_label("Bootstrap").check()
            page.get_by_role("button", name="Start run").click()
            page.wait_for_url(re.compile(r"/runs/\d+/$"))
            progress = page.locator("progress")
            progress.wait_for()
            page.wait_for_function(
                "() => document.querySelector('progress') && document.querySelector('progress').value == 100",
                timeout=60_000,
            )
            # The page reloads itself when the run ends; its error groups then show the 503s.
            page.locator("main").get_by_text("503").first.wait_for()
            progress_block = page.locator("#run-progress").inner_text()
            assert "100 %" in progress_block and "60 of 60 records" in progress_block
            expect(page.get_by_role("heading", name="Errors")).to_be_visible()  # 20 dead letters, grouped
            expect(page.get_by_role("heading", name="Timeline")).to_be_visible()
            assert (
                "HTTP 503" in page.locator("main").inner_text() or "503" in page.locator("main").inner_text()
            )

            assert DeadLetter.objects.filter(status=DeadLetterStatus.OPEN).count() == 20
            page.get_by_role("link", name="Dead letters").first.click()
            first = DeadLetter.objects.order_by("pk").first()
            page.get_by_role(
                "button", name=f"Retry dead letter {first.pk} for {first.record.external_id}"
            ).click()
            page.wait_for_load_state()
            expect(page.get_by_text("Queued retry run").first).to_be_visible()
            # The retry runs in the worker; the page is read once the hub has recorded the outcome.
            # (Polling the page itself would be fooled by the "Queued retry run" message it consumes.)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                first.refresh_from_db()
                if first.status == DeadLetterStatus.RESOLVED:
                    break
                time.sleep(0.2)
            assert first.status == DeadLetterStatus.RESOLVED
            resolved = "/deadletters/?status=resolved"
            page.goto(resolved)
            expect(page.get_by_text(first.record.external_id).first).to_be_visible()
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        first.refresh_from_db()
        assert first.status == DeadLetterStatus.RESOLVED
        assert first.record.external_id in moodle.people()
