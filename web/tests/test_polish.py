"""The small things a first look catches: the demo's first minute, the favicon, plurals, the admin's model
names, one phrasing of the heartbeat, the space under page titles, failed channel tests, and a conflict page
that highlights the action the evidence supports."""

import re
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.apps import apps
from django.urls import reverse
from django.utils import timezone

from integration_hub import demo
from integration_hub.testing import sign_in
from monitoring.models import Alert, AlertChannel, Delivery, Heartbeat
from sync.choices import ConflictKind, RunKind, RunStatus
from sync.models import Conflict, SyncRecord, SyncRun
from sync.words import counted

BASE_DIR = Path(__file__).resolve().parents[2]


# -- 1. the demo's first minute -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_demo_makes_the_heartbeat_due_so_beat_sends_it_on_its_first_tick():
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import ModelEntry

    # As on a fresh install: the entry never ran and was created a moment ago, so beat would wait a minute.
    entry = PeriodicTask.objects.get(task=demo.HEARTBEAT_TASK)
    PeriodicTask.objects.filter(pk=entry.pk).update(last_run_at=None, date_changed=timezone.now())
    entry.refresh_from_db()
    assert not ModelEntry(entry).is_due()[0]

    assert demo.heartbeat_due_now() == 1
    entry.refresh_from_db()
    assert ModelEntry(entry).is_due()[0]
    # Nothing is faked: no heartbeat row until a worker runs the task beat sends.
    assert not Heartbeat.objects.exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_simulator_stops_without_a_traceback_when_ctrl_c_and_sigterm_both_arrive(tmp_path):
    port = _free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", str(port), "--state", str(tmp_path / "state.json"),
         "--seed-users", "50"],
        cwd=BASE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.1)
        # A terminal's Ctrl-C and the demo's SIGTERM, back to back, as when `make demo` is stopped.
        child.send_signal(signal.SIGINT)
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "Simulator stopped." in out
    assert (tmp_path / "state.json").exists()


# -- 2. favicon ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_favicon_is_found_without_signing_in_and_linked_from_every_page(client, operator):
    response = client.get("/favicon.ico")
    assert response.status_code == 302 and response["Location"].endswith("favicon.svg")
    assert (BASE_DIR / "static" / "favicon.svg").read_text().startswith("<svg")
    client.force_login(operator)
    assert '<link rel="icon"' in client.get(reverse("monitoring:overview")).content.decode()


# -- 3. plurals ---------------------------------------------------------------------------------------------


def test_counted_agrees_with_its_number():
    assert counted(1, "dead letter") == "1 dead letter"
    assert counted(2, "dead letter") == "2 dead letters"
    assert counted(1, "person", "people") == "1 person"
    assert counted(1234, "user", grouped=True) == "1,234 users"


ONE_PLURAL = re.compile(
    r"\b1 (runs|records|dead letters|conflicts|discrepancies|resolutions|calls|users|people)\b"
)


@pytest.mark.django_db
def test_pages_with_one_of_a_thing_say_it_in_the_singular(client, operator, site):
    run = SyncRun.objects.create(
        site=site, kind=RunKind.INCREMENTAL, status=RunStatus.SUCCEEDED, progress_total=1, progress_done=1
    )
    record = SyncRecord.objects.create(site=site, external_id="E1", payload={})
    Conflict.objects.create(
        site=site, record=record, kind=ConflictKind.USERNAME_TAKEN, our_payload={}, their_users=[], message=""
    )
    client.force_login(operator)
    for url in (
        reverse("sync:run_list"),
        reverse("sync:record_list"),
        reverse("sync:conflict_list") + "?status=",
        reverse("sync:run_detail", args=[run.pk]),
    ):
        body = client.get(url).content.decode()
        assert not ONE_PLURAL.search(body), (url, ONE_PLURAL.search(body).group(0))
    assert "1 run" in client.get(reverse("sync:run_list")).content.decode()


# -- 4. the admin's model names -----------------------------------------------------------------------------


def test_no_model_is_named_with_a_made_up_plural():
    ours = [m for m in apps.get_models() if m._meta.app_label in ("sync", "monitoring")]
    wrong = [str(m._meta.verbose_name_plural) for m in ours]
    wrong = [name for name in wrong if re.search(r"[^aeiou]ys$|entrys$|statuss$|sss$", name)]
    assert wrong == []


# -- 5. one phrasing of the heartbeat -----------------------------------------------------------------------


@pytest.mark.django_db
def test_overview_says_when_the_beat_was_last_seen_once(client, operator):
    seen = timezone.now() - timedelta(seconds=23)
    Heartbeat.objects.create(name=Heartbeat.SCHEDULER, last_finished_at=seen)
    client.force_login(operator)
    body = client.get(reverse("monitoring:overview")).content.decode()
    line = re.search(r'id="scheduler-heartbeat">(.*?)</p>', body, re.S).group(1)
    assert "beat last seen 23 s ago" in line
    assert "seconds ago" not in line and line.count("ago") == 1


# -- 6. the space under page titles -------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_long_description_sits_close_under_the_page_title(page, operator):
    sign_in(page, "operator")
    for path in ("/discrepancies/", "/conflicts/", "/resolutions/", "/errors/"):
        page.goto(path)
        gap = page.evaluate(
            """() => {
              const h1 = document.querySelector('main .page-head h1');
              const p = h1.nextElementSibling;
              return p.getBoundingClientRect().top - h1.getBoundingClientRect().bottom;
            }"""
        )
        assert gap <= 20, f"{path}: {gap:.0f}px between the title and its description"


# -- 7. a failed channel test -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_failed_channel_test_shows_under_the_channels_last_deliveries(client, hub_admin):
    channel = AlertChannel.objects.create(name="hook", kind="webhook", target="http://127.0.0.1:9/x")
    client.force_login(hub_admin)
    response = client.post(reverse("monitoring:channel_test", args=[channel.pk]), follow=True)
    body = response.content.decode()
    assert "The test notice to “hook” failed" in body
    delivery = Delivery.objects.get(channel=channel)
    assert not delivery.ok and delivery.error
    row = re.search(rf'id="channel-{channel.pk}">(.*?)</tr>', body, re.S).group(1)
    assert "failed" in row and "test notice" in row and "none yet" not in row
    # The test is not a problem: nothing open, and the alerts page does not list it.
    assert not Alert.objects.exclude(status=Alert.Status.RESOLVED).exists()
    alerts_page = client.get(reverse("monitoring:alert_list")).content.decode()
    assert "Test notice from the Integration Hub" not in alerts_page


# -- 8. the conflict page follows the evidence --------------------------------------------------------------

OURS = {"username": "mgarcia", "email": "maria.garcia@example.edu", "firstname": "María",
        "lastname": "García", "idnumber": "E00042"}  # fmt: skip


def _conflict(site, holder: dict) -> Conflict:
    record = SyncRecord.objects.create(site=site, external_id="E00042", payload=OURS, username="mgarcia")
    return Conflict.objects.create(
        site=site, record=record, kind=ConflictKind.USERNAME_TAKEN, our_payload=OURS,
        their_users=[{"id": 8812, **holder}], message="username mgarcia already belongs to Moodle user 8812",
    )  # fmt: skip


def _buttons(client, conflict: Conflict) -> list[tuple[str, str]]:
    body = client.get(reverse("sync:conflict_detail", args=[conflict.pk])).content.decode()
    actions = re.search(r'<div class="actions">(.*?)</div>', body, re.S).group(1)
    found = re.findall(r'<button[^>]*class="([^"]*)"[^>]*>(.*?)</button>', actions, re.S)
    return [(cls, " ".join(text.split())) for cls, text in found]


@pytest.mark.django_db
def test_link_is_not_highlighted_when_no_identity_field_agrees(client, operator, site):
    stranger = {"username": "mgarcia", "email": "m.garcia@other.example", "firstname": "Manuel",
                "lastname": "Gómez", "idnumber": "X-77"}  # fmt: skip
    client.force_login(operator)
    conflict = _conflict(site, stranger)
    buttons = _buttons(client, conflict)
    assert buttons[0][1].startswith("Propose rename") and "secondary" not in buttons[0][0]
    link = next(b for b in buttons if b[1].startswith("Propose link"))
    assert "secondary" in link[0]
    body = client.get(reverse("sync:conflict_detail", args=[conflict.pk])).content.decode()
    assert "No identity field" in body


@pytest.mark.django_db
def test_link_comes_first_when_the_moodle_user_has_the_persons_idnumber(client, operator, site):
    same = {"username": "mgarcia", "email": "maria@old.example", "firstname": "María", "lastname": "García",
            "idnumber": "E00042"}  # fmt: skip
    client.force_login(operator)
    buttons = _buttons(client, _conflict(site, same))
    assert buttons[0][1].startswith("Propose link to Moodle user 8812") and "secondary" not in buttons[0][0]
    assert all("secondary" in cls for cls, _ in buttons[1:])
