"""Stories 1, 2, 5 and 6 in a real browser, asserting what a person sees: the Overview is never "healthy"
while work waits; a refused token is red where it is shown and the way out is one click; a bad export
holds back its suspensions, and only a typed override goes past the guard; safe and destructive changes
are approved apart; the run page follows its run live."""

import re

import pytest
from playwright.sync_api import expect

from integration_hub.testing import (
    HUB_TOKEN,
    make_site,
    person,
    sign_in,
    simulated_moodle,
    start_worker,
    write_csv,
)
from simulator.server import serve
from sync.choices import DiscrepancyKind, ResolutionStatus, RunKind, RunStatus
from sync.models import Discrepancy, Resolution, SyncRun
from sync.run import engine

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def sync_now(site, kind=RunKind.INCREMENTAL) -> SyncRun:
    return engine.execute(SyncRun.objects.queue(site, kind).pk, sleep=lambda s: None)


def test_the_morning_look_is_not_healthy_while_dead_letters_wait(page, operator, clean_redis, tmp_path):
    moodle = simulated_moodle(seed=21)
    moodle.control("POST", "inject", {"kinds": ["503"] * 4, "function": "core_user_create_users"})
    csv_path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, 41)])
    with serve(moodle.app) as server:
        site = make_site("south", server.url, csv_path, name="South Campus", batch_size=20)
        run = sync_now(site, RunKind.BOOTSTRAP)
    assert run.status == RunStatus.PROBLEMS and run.dead_lettered == 20

    sign_in(page, "operator")
    state = page.locator("#state-south")
    assert state.locator(".pill").first.text_content() == "needs attention"
    assert "healthy" not in state.locator(".state-line").inner_text().lower()
    assert f"Run #{run.pk} (bootstrap) finished with problems" in state.inner_text()
    assert "20 dead letters wait for a retry" in state.inner_text()
    card = page.locator("section.site", has=page.locator("#state-south"))
    expect(
        card.locator("dt", has_text="Last clean sync").locator("xpath=..").get_by_text("none yet")
    ).to_be_visible()
    latest = card.locator("table").inner_text()
    assert "Finished with problems" in latest and "20 dead letters" in latest

    state.get_by_role("link", name=f"Run #{run.pk} →").click()
    page.wait_for_url(f"**/runs/{run.pk}/")
    assert page.locator("#run-status").text_content() == "Finished with problems"
    assert page.locator("#run-status").get_attribute("class") == "pill warn"


def test_a_refused_token_is_red_and_the_way_out_is_one_click(page, hub_admin, clean_redis, tmp_path):
    moodle = simulated_moodle(seed=22)
    csv_path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, 61)])
    with serve(moodle.app) as server:
        site = make_site("east", server.url, csv_path, name="East Campus", batch_size=20)
        # The token dies in the middle of the bootstrap: after the pre-flight and the first batch.
        moodle.control("POST", "config", {"revoke_after": {"token": HUB_TOKEN, "calls": 6}})
        stopped = sync_now(site, RunKind.BOOTSTRAP)
    assert stopped.status == RunStatus.ABORTED and 0 < stopped.created < 60

    sign_in(page, "admin")
    state = page.locator("#state-east")
    assert state.locator(".pill").first.text_content() == "failing"
    assert "Moodle refused the token" in state.inner_text() and "invalidtoken" in state.inner_text()
    state.get_by_role("link", name="Token page →").click()
    page.wait_for_url("**/sites/east/tokens/")
    row = page.locator("tr", has=page.get_by_text("…cdef"))
    assert row.locator(".pill.bad").text_content() == "Refused by Moodle"
    assert row.locator(".ok-text").count() == 0  # no green "Passed" beside it
    expect(page.get_by_role("alert").filter(has_text="Moodle refused the active token")).to_be_visible()

    page.goto(f"/runs/{stopped.pk}/")
    assert page.locator("#run-status").text_content() == "Aborted"
    reason = page.locator(".reason-banner").inner_text()
    pending = 60 - stopped.created
    assert f"{pending} records are pending and will be sent when the run resumes" in reason
    page.get_by_role("link", name="Open the token page of East Campus →").click()
    page.wait_for_url("**/sites/east/tokens/")


@pytest.mark.worker
def test_a_bad_export_is_held_back_and_only_a_typed_override_passes_the_guard(
    page, hub_admin, child_env, clean_redis, tmp_path
):
    moodle = simulated_moodle(seed=23, latency_ms=5)
    rows = [person(n) for n in range(1, 61)]
    csv_path = write_csv(tmp_path / "people.csv", rows)
    with serve(moodle.app) as server:
        site = make_site(
            "west", server.url, csv_path, name="West Campus", removed_policy="suspend", auto_apply_kinds=[]
        )
        assert sync_now(site, RunKind.BOOTSTRAP).status == RunStatus.SUCCEEDED
        people = moodle.people()
        for n in (1, 2, 3):
            moodle.control("PATCH", f"users/{people[f'E{n:05d}']['id']}", {"email": f"typo{n}@example.edu"})
        write_csv(csv_path, rows[:20])  # the nightly file lost 40 of its 60 rows
        held = sync_now(site)
        assert held.status == RunStatus.PROBLEMS and held.blocked == 40 and held.suspended == 0
        night = sync_now(site, RunKind.RECONCILE)
        assert night.blocked == 40

        worker = start_worker(child_env, "guard-browser")
        try:
            sign_in(page, "admin")
            state = page.locator("#state-west")
            assert "40 suspensions were held back by the blast-radius guard" in state.inner_text()
            page.get_by_role("navigation", name="Main").get_by_role("link", name="Discrepancies").click()
            # Never one bulk action for both: the three e-mail fixes and the forty suspensions apart.
            assert page.get_by_role("link", name="Approve these 43…").count() == 0
            page.get_by_role("link", name="Approve the 3 safe changes…").click()
            assert page.locator("ol.calls.planned").inner_text().count("core_user_update_users") == 3
            page.get_by_role("button", name="Approve 3 and apply").click()
            page.wait_for_url(re.compile(r"/runs/\d+/$"))
            page.locator("#run-status", has_text="Succeeded").wait_for(timeout=60_000)

            page.get_by_role("navigation", name="Main").get_by_role("link", name="Discrepancies").click()
            page.get_by_role("link", name="Review the 40 that take access away…").click()
            banner = page.locator(".blast-radius").inner_text()
            assert "This suspends 40 users = 67 % of the 60 linked users on West Campus" in banner
            assert "the site's limit is 2 % (1)" in banner
            page.get_by_label("Why go past the limit?").fill("HR confirms the 40 leavers")
            page.get_by_label("Type the number of users to confirm").fill("39")
            page.get_by_role("button", name="Override the guard for 40").click()
            expect(page.get_by_text("type the number of users exactly as shown (40)")).to_be_visible()
            assert not Resolution.objects.filter(action="suspend").exclude(status="proposed").exists()

            page.get_by_label("Type the number of users to confirm").fill("40")
            page.get_by_label("Why go past the limit?").fill("HR confirms the 40 leavers")
            page.get_by_role("button", name="Override the guard for 40").click()
            page.wait_for_url(re.compile(r"/runs/\d+/$"))
            # The header follows the run without a reload, counters included.
            page.locator("#run-status", has_text="Succeeded").wait_for(timeout=60_000)
            assert "Suspended\n40" in page.locator("#run-progress .counters").inner_text()
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert sum(u["suspended"] for u in moodle.people().values()) == 40
    assert Resolution.objects.filter(status=ResolutionStatus.APPLIED).count() == 43
    assert not Discrepancy.objects.filter(kind=DiscrepancyKind.ORPHAN_IN_MOODLE, status="blocked").exists()


@pytest.mark.worker
def test_the_run_header_follows_the_run_and_resume_does_not_say_paused(
    page, operator, child_env, clean_redis, tmp_path
):
    moodle = simulated_moodle(seed=24, latency_ms=250)
    csv_path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, 121)])
    with serve(moodle.app) as server:
        make_site("north", server.url, csv_path, name="North Campus", batch_size=10)
        worker = start_worker(child_env, "header-browser")
        try:
            sign_in(page, "operator")
            page.goto("/sites/north/")
            page.get_by_label("Bootstrap").check()
            page.get_by_role("button", name="Start run").click()
            page.wait_for_url(re.compile(r"/runs/\d+/$"))
            status = page.locator("#run-status")
            status.filter(has_text="Running").wait_for(timeout=60_000)
            page.locator("#run-progress").get_by_role("button", name="Pause").click()
            status.filter(has_text="Paused").wait_for(timeout=60_000)
            page.locator("#run-progress").get_by_role("button", name="Resume").click()
            page.wait_for_load_state()
            assert status.text_content() in ("Queued", "Running")  # never "Paused" after a resume
            status.filter(has_text="Succeeded").wait_for(timeout=90_000)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert len(moodle.people()) == 120
