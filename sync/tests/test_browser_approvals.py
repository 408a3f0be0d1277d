"""Story 6 in a browser: an admin approves the night's field drift from the Discrepancies page, sees the
exact call first, and watches the resolution run (a real Celery worker, the simulated Moodle over HTTP)
succeed; the Moodle user then holds the source's value."""

import pytest
from playwright.sync_api import expect

from integration_hub.testing import make_site, person, sign_in, simulated_moodle, start_worker, write_csv
from simulator.server import serve
from sync.choices import DiscrepancyKind, DiscrepancyStatus, RunKind, RunStatus
from sync.models import Discrepancy, SyncRun
from sync.run import engine


@pytest.mark.browser
@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_admin_approves_a_drift_resolution_from_the_page_and_sees_it_applied(
    page, hub_admin, child_env, clean_redis, tmp_path
):
    sim = simulated_moodle(seed=11)
    csv_path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, 6)])
    with serve(sim.app) as server:
        site = make_site("east", server.url, csv_path, name="East Campus", auto_apply_kinds=[])  # drift waits
        assert engine.execute(SyncRun.objects.queue(site, RunKind.BOOTSTRAP).pk).status == RunStatus.SUCCEEDED
        maria = sim.people()["E00002"]
        sim.control("PATCH", f"users/{maria['id']}", {"department": "Edited by hand"})
        night = engine.execute(SyncRun.objects.queue(site, RunKind.RECONCILE).pk)
        assert night.status == RunStatus.SUCCEEDED, night.abort_reason
        drift = Discrepancy.objects.get(kind=DiscrepancyKind.FIELD_DRIFT)
        assert drift.status == DiscrepancyStatus.OPEN

        worker = start_worker(child_env, "approvals")
        try:
            sign_in(page, "admin")
            page.get_by_role("link", name="Discrepancies", exact=True).click()
            page.get_by_label("Kind", exact=True).select_option("field_drift")
            page.get_by_role("button", name="Apply").click()
            page.wait_for_url("**/discrepancies/?*kind=field_drift*")
            page.get_by_role("link", name="E00002", exact=True).click()

            # The side-by-side diff: the source's value beside Moodle's, the changed cells highlighted.
            assert page.locator("td.side-source.differs").inner_text() == "Physics"
            assert "Edited by hand" in page.locator("td.side-moodle.differs").inner_text()

            page.get_by_role("link", name="Approve…").click()
            calls = page.locator("ol.calls.planned").inner_text()
            assert (
                "core_user_update_users" in calls
                and f'{{"id": {maria["id"]}, "department": "Physics"}}' in calls
            )
            page.get_by_role("button", name="Approve and apply 1 call").click()

            run = SyncRun.objects.get(kind=RunKind.RESOLUTION)
            page.wait_for_url(f"**/runs/{run.pk}/")
            expect(page.get_by_text(f"Approved: resolution run #{run.pk} applies it")).to_be_visible()
            # No reload: htmx refreshes the progress block until the worker has applied the resolution.
            page.locator("#run-progress .pill", has_text="Succeeded").wait_for(timeout=60_000)
        finally:
            worker.terminate()
            worker.wait(timeout=30)

        assert sim.people()["E00002"]["department"] == "Physics"
        drift.refresh_from_db()
        assert drift.status == DiscrepancyStatus.APPLIED
        resolution = drift.resolutions.get()
        assert resolution.decided_by == hub_admin and resolution.run_id == run.pk
