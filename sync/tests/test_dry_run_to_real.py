"""From a dry run to the real run, as an operator does it: the dry run shows its progress while it reads,
"Run this for real" starts the same mode on the same uploaded file (kept until a real run reads it or it
expires), an upload over the size limit is a form error, and a cancel is heard within a few thousand rows
while a big source is being read."""

from __future__ import annotations

import errno
import os
import select
import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from integration_hub.testing import make_site, person, write_csv
from sync import runs
from sync.choices import RunKind, RunStatus, SyncStatus
from sync.models import RunEvent, SyncRecord, SyncRun, SyncSource
from sync.run import engine, planning


def no_sleep(_seconds: float) -> None:
    """Waits happen at once in these tests; the throttle has its own tests."""


def csv_bytes(rows: list[dict[str, str]], tmp_path, name: str = "upload.csv") -> bytes:
    return write_csv(tmp_path / name, rows).read_bytes()


@pytest.fixture
def uploads(settings, tmp_path):
    settings.UPLOAD_DIR = tmp_path / "uploads"
    return settings.UPLOAD_DIR


@pytest.fixture
def signed_in(client, operator):
    client.force_login(operator)
    return client


def start_from_the_form(client, site, data: bytes, *, mode: str, dry_run: bool, callbacks) -> SyncRun:
    upload = SimpleUploadedFile("people.csv", data, content_type="text/csv")
    form = {"mode": mode, "upload": upload, **({"dry_run": "on"} if dry_run else {})}
    with callbacks(execute=False):  # the test executes the run itself, in-process
        response = client.post(reverse("sync:run_start", args=[site.slug]), form)
    assert response.status_code == 302, response.content.decode()[-2000:]
    return SyncRun.objects.latest("pk")


def execute(run: SyncRun, moodle, transport=None) -> SyncRun:
    return engine.execute(run.pk, transport=transport or moodle.transport, sleep=no_sleep)


# -- progress ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_dry_run_records_its_progress_while_it_reads_the_source(clean_redis, moodle, tmp_path, monkeypatch):
    monkeypatch.setattr(planning, "PULSE_ROWS", 500)
    path = write_csv(tmp_path / "people.csv", [person(n) for n in range(1, 3001)])
    site = make_site("north", "http://moodle.test", path, name="North Campus", batch_size=1000)
    run = SyncRun.objects.queue(site, RunKind.BOOTSTRAP, dry_run=True)

    # What the run's row says each time the hub asks Moodle something: the dry run looks people up chunk
    # by chunk, so these are readings taken while it is still planning.
    readings: list[tuple] = []

    def far_end(environ, start_response):
        readings.append(
            SyncRun.objects.values_list("progress_done", "progress_total", "plan", "last_progress_at").get(
                pk=run.pk
            )
        )
        return moodle.app(environ, start_response)

    run = execute(run, moodle, httpx.WSGITransport(app=far_end))

    assert run.status == RunStatus.SUCCEEDED, run.abort_reason
    during = [(done, total) for done, total, plan, at in readings if not plan and done and at]
    assert during, readings[:3]
    assert all(0 < done <= 3000 and total == 3000 for done, total in during)
    assert len({done for done, _ in during}) >= 2  # it moved while planning, not only at the end
    assert min(done for done, _ in during) < 3000
    assert (run.progress_done, run.progress_total, run.plan["seen"]) == (3000, 3000, 3000)
    assert moodle.write_calls() == 0 and not SyncRecord.objects.exists()


def test_the_dry_run_page_shows_its_progress_while_it_runs(signed_in, site):
    run = SyncRun.objects.create(
        site=site, kind=RunKind.BOOTSTRAP, dry_run=True, status=RunStatus.RUNNING,
        started_at=timezone.now() - timedelta(minutes=2), last_progress_at=timezone.now(),
        progress_done=1200, progress_total=4000, seen=1200,
    )  # fmt: skip
    page = signed_in.get(reverse("sync:run_progress", args=[run.pk])).content.decode()
    assert 'progress max="100" value="30"' in page
    assert "1200 of about 4000 source rows read and planned" in page
    assert "Run this for real" not in page  # offered once the plan is there


# -- run this for real --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_run_this_for_real_keeps_the_mode_and_reads_the_same_uploaded_file(
    signed_in, sync_site, moodle, uploads, tmp_path, django_capture_on_commit_callbacks
):
    # The site's configured source has 30 people; the upload has 12 others. The real run must read the upload.
    data = csv_bytes([person(n) for n in range(101, 113)], tmp_path)
    dry = start_from_the_form(
        signed_in,
        sync_site,
        data,
        mode="bootstrap",
        dry_run=True,
        callbacks=django_capture_on_commit_callbacks,
    )
    dry = execute(dry, moodle)
    assert dry.status == RunStatus.SUCCEEDED and dry.plan["would_create"] == 12

    page = signed_in.get(reverse("sync:run_detail", args=[dry.pk])).content.decode()
    for_real = reverse("sync:run_for_real", args=[dry.pk])
    assert f'action="{for_real}"' in page and "Run this for real" in page and "csrfmiddlewaretoken" in page

    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = signed_in.post(for_real)
    real = SyncRun.objects.latest("pk")
    assert response.status_code == 302 and response["Location"] == reverse("sync:run_detail", args=[real.pk])
    assert len(sent) == 1  # its task is sent
    assert (real.kind, real.dry_run, real.status, real.started_by.username) == (
        RunKind.BOOTSTRAP, False, RunStatus.QUEUED, "operator",
    )  # fmt: skip
    assert (real.source_file, real.upload_name) == (dry.source_file, dry.upload_name)
    assert RunEvent.objects.filter(run=real, message__contains=f"real run of dry run #{dry.pk}").exists()

    real = execute(real, moodle)
    assert real.status == RunStatus.SUCCEEDED, real.abort_reason
    assert sorted(moodle.people()) == [f"E{n:05d}" for n in range(101, 113)]
    assert real.created == 12

    # A second click makes no second run, and says which run it was.
    with django_capture_on_commit_callbacks(execute=False):
        again = signed_in.post(for_real, follow=True).content.decode()
    assert SyncRun.objects.count() == 2
    assert f"already run for real as run #{real.pk}" in again

    # Read by its real run, the file goes at the next cleanup; the dry run's page still says why.
    assert runs.delete_spent_uploads() == [uploads / sync_site.slug / os.path.basename(dry.source_file)]
    assert not os.path.exists(dry.source_file)


@pytest.mark.django_db
def test_an_expired_upload_is_refused_with_a_message(
    signed_in, sync_site, moodle, uploads, tmp_path, settings, django_capture_on_commit_callbacks
):
    settings.UPLOAD_KEEP_HOURS = 24
    data = csv_bytes([person(n) for n in range(1, 6)], tmp_path)
    dry = start_from_the_form(
        signed_in,
        sync_site,
        data,
        mode="incremental",
        dry_run=True,
        callbacks=django_capture_on_commit_callbacks,
    )
    dry = execute(dry, moodle)
    assert dry.status == RunStatus.SUCCEEDED
    saved = time.time() - 25 * 3600
    os.utime(dry.source_file, (saved, saved))

    page = signed_in.get(reverse("sync:run_detail", args=[dry.pk])).content.decode()
    assert "“Run this for real” is not offered" in page and "expired at" in page
    assert reverse("sync:run_for_real", args=[dry.pk]) not in page
    response = signed_in.post(reverse("sync:run_for_real", args=[dry.pk]), follow=True)
    assert "Nothing was queued: the uploaded file people.csv expired at" in response.content.decode()
    assert SyncRun.objects.count() == 1

    # The periodic cleanup deletes it; the page then says it is no longer kept.
    assert runs.delete_spent_uploads() != [] and not os.path.exists(dry.source_file)
    page = signed_in.get(reverse("sync:run_detail", args=[dry.pk])).content.decode()
    assert "the uploaded file people.csv is no longer kept" in page


@pytest.mark.django_db
def test_a_changed_source_is_refused_with_a_message(signed_in, sync_site, moodle, uploads):
    dry = execute(SyncRun.objects.queue(sync_site, RunKind.INCREMENTAL, dry_run=True), moodle)
    assert runs.real_run_offer(dry).available
    source = SyncSource.objects.get(site=sync_site)
    source.mapping = {**source.mapping, "auth": "ldap"}
    source.save()
    response = signed_in.post(reverse("sync:run_for_real", args=[dry.pk]), follow=True)
    assert "the site&#x27;s source settings changed" in response.content.decode()
    assert SyncRun.objects.count() == 1


@pytest.mark.django_db
def test_cleanup_keeps_a_file_a_queued_run_has_still_to_read(sync_site, uploads, settings):
    settings.UPLOAD_KEEP_HOURS = 1
    queued = runs.start(
        sync_site,
        RunKind.INCREMENTAL,
        upload=SimpleUploadedFile("people.csv", b"employee_id\nE1\n"),
        enqueue=False,
    )
    old = time.time() - 2 * 3600
    os.utime(queued.source_file, (old, old))
    assert runs.delete_spent_uploads() == []
    SyncRun.objects.filter(pk=queued.pk).update(status=RunStatus.FAILED)
    assert len(runs.delete_spent_uploads()) == 1


# -- the upload size limit ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_oversized_upload_is_a_form_error_naming_the_limit_and_its_size(
    signed_in, sync_site, uploads, settings
):
    settings.UPLOAD_MAX_MB = 1
    big = b"employee_id,login\n" + b"E0000001,someone.with.a.long.login\n" * 45_000  # about 1.6 MB
    upload = SimpleUploadedFile("huge.csv", big, content_type="text/csv")
    response = signed_in.post(
        reverse("sync:run_start", args=[sync_site.slug]), {"mode": "incremental", "upload": upload}
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert f"huge.csv is {len(big) / 1024 / 1024:,.1f} MB; uploads are limited to 1 MB" in page
    assert not SyncRun.objects.exists()
    assert not uploads.exists() or not any(uploads.rglob("*.csv"))


# -- cancel while a big source is read ----------------------------------------------------------------------


class Pipe:
    """The far end of a CSV source: a named pipe the test feeds, so it knows how far the hub can have read
    when it presses Cancel. Writes wait for the hub to read, up to a deadline (a hub that stopped reading
    is seen as a closed pipe, a hung one as a failure)."""

    def __init__(self, path, deadline_s: float = 60) -> None:
        os.mkfifo(path)
        self.path = path
        self.deadline = time.monotonic() + deadline_s
        self.fd = None

    def open(self) -> None:
        while self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO or time.monotonic() > self.deadline:
                    raise
                time.sleep(0.02)  # the hub has not opened the file yet

    def write(self, data: bytes) -> bool:
        """False once the hub has closed its end."""
        view = memoryview(data)
        while view:
            _, ready, _ = select.select([], [self.fd], [], 0.5)
            assert time.monotonic() < self.deadline, "the hub stopped reading without closing the file"
            if not ready:
                continue
            try:
                view = view[os.write(self.fd, view) :]
            except BrokenPipeError:
                return False
            except BlockingIOError:
                continue
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


def rows(first: int, last: int) -> bytes:
    return b"".join(
        ",".join(person(n).values()).encode() + b"\n" for n in range(first, last + 1)
    )  # the header is written first, in FIELDS order, like person()'s keys


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_cancel_while_a_big_source_is_read_ends_the_run_before_planning_finishes(
    operator, sync_site, moodle, tmp_path, monkeypatch
):
    monkeypatch.setattr(planning, "PULSE_ROWS", 500)
    pipe = Pipe(tmp_path / "big.csv")
    run = SyncRun.objects.queue(sync_site, RunKind.BOOTSTRAP, user=operator, source_file=str(pipe.path))
    ended: list[SyncRun] = []

    def worker() -> None:
        try:
            ended.append(execute(run, moodle))
        finally:
            connection.close()

    thread = threading.Thread(target=worker, name="hub-run")
    thread.start()
    total = 100_000
    try:
        pipe.open()
        assert pipe.write(b"employee_id,login,first,last,mail,dept,city,lang\n" + rows(1, 5000))
        # 5,000 rows are in the hub's hands (bar what sits in the pipe): the operator presses Cancel.
        runs.cancel(SyncRun.objects.get(pk=run.pk), operator)
        written = 5000
        while written < total and pipe.write(rows(written + 1, written + 500)):
            written += 500
    finally:
        pipe.close()
        thread.join(timeout=60)
    assert ended, "the run did not end"

    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED, run.abort_reason
    assert run.planned_at is None  # planning did not finish
    assert 3000 <= run.seen <= 5000 + 2 * planning.PULSE_ROWS  # heard within a pulse of the click
    assert written < total  # the hub let go of the file: the rest was never read
    assert run.abort_reason.startswith("cancelled by an operator while the source was being read (")
    assert "nothing was sent to Moodle" in run.abort_reason
    assert moodle.write_calls() == 0
    staged = SyncRecord.objects.filter(site=sync_site, sync_status=SyncStatus.PENDING).count()
    assert staged < run.seen and f"the {staged:,} people staged so far stay pending" in run.abort_reason
