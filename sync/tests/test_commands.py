"""The commands a newcomer uses without the admin: addsite, addsource, sync, deadletters."""

import io
import json
import sys

import pytest
from django.core.management import CommandError, call_command

from integration_hub.testing import HUB_TOKEN, MAPPING, person, simulated_moodle, write_csv
from simulator.server import serve
from sync.choices import DeadLetterStatus, RunKind, SyncStatus
from sync.models import DeadLetter, MoodleSite, ServiceToken, SyncRecord, SyncRun, SyncSource

pytestmark = pytest.mark.django_db


@pytest.fixture
def served_moodle():
    sim = simulated_moodle(seed=3)
    with serve(sim.app) as server:
        yield sim, server.url


def run_command(*args, stdin: str = "") -> str:
    out = io.StringIO()
    old_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        call_command(*args, stdout=out)
    finally:
        sys.stdin = old_stdin
    return out.getvalue()


def add_site(url: str) -> MoodleSite:
    run_command("addsite", "east", "--url", url, "--token-stdin", stdin=HUB_TOKEN + "\n")
    site = MoodleSite.objects.get(slug="east")
    site.min_spacing_ms, site.calls_per_minute = 0, 100_000
    site.save()
    return site


def test_addsite_verifies_and_stores_the_token_encrypted(served_moodle, clean_redis):
    _, url = served_moodle
    output = run_command("addsite", "east", "--url", url + "/", "--token-stdin", stdin=HUB_TOKEN + "\n")
    assert "token …cdef verified and stored encrypted" in output and HUB_TOKEN not in output
    site = MoodleSite.objects.get(slug="east")
    assert site.name == "Simulated Moodle" and site.base_url == url
    token = ServiceToken.objects.get(site=site)
    assert token.status == "active" and token.reveal() == HUB_TOKEN and token.last_verified_at
    from django_celery_beat.models import PeriodicTask

    assert PeriodicTask.objects.filter(name="Incremental sync: east", interval__every=15).exists()


def test_addsite_refuses_a_token_without_the_needed_functions(served_moodle, clean_redis):
    sim, url = served_moodle
    sim.control("POST", "tokens", {"token": "narrow-token", "functions": ["core_webservice_get_site_info"]})
    with pytest.raises(CommandError, match="token lacks core_user_get_users_by_field"):
        run_command("addsite", "east", "--url", url, "--token-stdin", stdin="narrow-token\n")
    assert not MoodleSite.objects.exists()


def test_addsource_checks_the_source_and_the_mapping(served_moodle, clean_redis, tmp_path):
    add_site(served_moodle[1])
    csv_path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, 6)])
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(MAPPING))
    output = run_command(
        "addsource", "east", "--kind", "csv", "--path", str(csv_path), "--id-column", "employee_id",
        "--mapping", str(mapping), "--removed", "suspend",
    )  # fmt: skip
    assert "First record (line 2): E00001 maps to username user00001" in output
    source = SyncSource.objects.get(site__slug="east")
    assert source.config == {"path": str(csv_path), "id_column": "employee_id"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"fields": {}}))
    with pytest.raises(CommandError, match=r"fields\.username"):
        run_command("addsource", "east", "--kind", "csv", "--path", str(csv_path), "--mapping", str(bad))


def test_sync_json_dry_run_then_real_run(served_moodle, clean_redis, tmp_path):
    sim, url = served_moodle
    site = add_site(url)
    csv_path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, 13)])
    config = {"path": str(csv_path), "id_column": "employee_id"}
    SyncSource.objects.create(site=site, kind="csv", config=config, mapping=MAPPING)
    plan = json.loads(run_command("sync", "east", "--mode", "bootstrap", "--dry-run", "--json"))
    assert plan["status"] == "succeeded" and plan["plan"]["would_create"] == 12
    assert sim.write_calls() == 0
    text = run_command("sync", "east", "--mode", "bootstrap", "--dry-run")
    assert "would create: 12" in text and "estimate:" in text
    result = json.loads(run_command("sync", "east", "--mode", "bootstrap", "--json"))
    assert result["status"] == "succeeded" and result["created"] == 12
    assert set(result) >= {"run_id", "status", "calls", "duration_s", *[
        "seen", "changed", "created", "updated", "suspended", "unchanged", "skipped", "conflicts", "errors",
        "dead_lettered"]}  # fmt: skip
    assert len(sim.people()) == 12


def test_deadletters_lists_and_retries(served_moodle, clean_redis, tmp_path):
    sim, url = served_moodle
    site = add_site(url)
    csv_path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, 4)])
    config = {"path": str(csv_path), "id_column": "employee_id"}
    SyncSource.objects.create(site=site, kind="csv", config=config, mapping=MAPPING)
    site.batch_size = 3
    site.save()
    sim.control("POST", "inject", {"kinds": ["503"] * 4, "function": "core_user_create_users"})
    from sync.run import engine

    run = SyncRun.objects.queue(site, RunKind.BOOTSTRAP)
    engine.execute(run.pk, sleep=lambda s: None)
    assert DeadLetter.objects.filter(status=DeadLetterStatus.OPEN).count() == 3
    listing = run_command("deadletters", "east")
    assert "3  HTTP 503" in listing and "core_user_create_users" in listing
    output = run_command("deadletters", "east", "--retry", "--all")
    assert "3 created" in output
    assert not DeadLetter.objects.filter(status=DeadLetterStatus.OPEN).exists()
    assert DeadLetter.objects.filter(status=DeadLetterStatus.RESOLVED).count() == 3
    assert set(SyncRecord.objects.values_list("sync_status", flat=True)) == {SyncStatus.OK}
    assert len(sim.people()) == 3


@pytest.mark.django_db(transaction=True, serialized_rollback=True)  # the task is sent on a real commit
def test_sync_async_while_the_task_queue_is_down_says_so_and_leaves_a_run_the_watchdog_sends(
    sync_site, monkeypatch
):
    from kombu.exceptions import OperationalError as BrokerDown

    from sync import dispatch

    def broker_down(*args, **kwargs):
        raise BrokerDown("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(dispatch.current_app, "send_task", broker_down)
    out = run_command("sync", sync_site.slug, "--mode", "incremental", "--async")
    run = SyncRun.objects.get(site=sync_site)
    assert "the task queue (Redis) did not answer" in out and f"run #{run.pk}" in out
    assert (
        run.status == "queued" and run.sent_at is None and run.abort_reason.startswith("waiting for the task")
    )


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_sync_async_with_the_task_queue_up_says_queued(sync_site):
    out = run_command("sync", sync_site.slug, "--mode", "incremental", "--async")
    assert out.startswith("Queued run #") and "did not answer" not in out
    assert SyncRun.objects.get(site=sync_site).sent_at is not None
