"""Approved means applied: ten approvals made one after the other, with a worker of four processes racing
for the site's lock, are all applied to Moodle. None is failed for losing the race; while they wait the
lists say "approved, queued", not "waiting for approval"."""

import time

import pytest

from integration_hub.testing import make_site, person, simulated_moodle, start_worker, write_csv
from simulator.server import serve
from sync import resolutions
from sync.choices import DiscrepancyKind, DiscrepancyStatus, ResolutionStatus, RunKind, RunStatus
from sync.models import Discrepancy, Resolution, SyncRun
from sync.run import engine

APPROVALS = 10


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_ten_approvals_in_quick_succession_with_four_worker_processes_are_all_applied(
    child_env, clean_redis, hub_admin, tmp_path
):
    sim = simulated_moodle(seed=12, latency_ms=150)
    csv_path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, 31)])
    with serve(sim.app) as server:
        site = make_site("race", server.url, csv_path, auto_apply_kinds=[], batch_size=3)
        assert engine.execute(SyncRun.objects.queue(site, RunKind.BOOTSTRAP).pk).status == RunStatus.SUCCEEDED
        people = sim.people()
        for n in range(1, APPROVALS + 1):
            sim.control("PATCH", f"users/{people[f'E{n:05d}']['id']}", {"department": "Edited by hand"})
        assert engine.execute(SyncRun.objects.queue(site, RunKind.RECONCILE).pk).status == RunStatus.SUCCEEDED
        drifts = list(Discrepancy.objects.filter(kind=DiscrepancyKind.FIELD_DRIFT).order_by("pk"))
        assert len(drifts) == APPROVALS

        worker = start_worker({**child_env, "LOCK_WAIT_RETRY_S": "2"}, "race", concurrency=4)
        try:
            _wait_for(lambda: any(clean_redis.scan_iter("hub:worker:*")), 60, "the worker to start")
            first, *rest = drifts
            proposal = resolutions.propose(action=first.proposed_action, discrepancy=first)
            running = resolutions.approve([proposal], hub_admin)
            # The next approvals arrive while that run holds the site's lock.
            _wait_for(lambda: SyncRun.objects.get(pk=running.pk).status == RunStatus.RUNNING, 60, "the run")
            for drift in rest:
                proposal = resolutions.propose(action=drift.proposed_action, discrepancy=drift)
                resolutions.approve([proposal], hub_admin)
            waiting = Discrepancy.objects.filter(kind=DiscrepancyKind.FIELD_DRIFT)
            assert not waiting.filter(status__in=DiscrepancyStatus.waiting()).exists()
            _wait_for(
                lambda: (
                    Resolution.objects.filter(status=ResolutionStatus.APPLIED).count() == APPROVALS
                    or Resolution.objects.filter(status=ResolutionStatus.FAILED).exists()
                ),
                120,
                "every approval to be applied",
            )
        finally:
            worker.terminate()
            worker.wait(timeout=30)

        outcomes = list(Resolution.objects.values_list("status", "outcome"))
        assert [s for s, _ in outcomes].count(ResolutionStatus.APPLIED) == APPROVALS, outcomes
        assert all(sim.people()[d.external_id]["department"] != "Edited by hand" for d in drifts)
        runs = SyncRun.objects.filter(kind=RunKind.RESOLUTION)
        assert not runs.filter(status__in=[RunStatus.SKIPPED, RunStatus.FAILED]).exists()
        assert sum(runs.values_list("updated", flat=True)) == APPROVALS
