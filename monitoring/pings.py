"""Success and failure pings for scheduled runs, for an external dead-man service (like tool_heartbeat
does for Moodle's cron): sent when the scheduled work *finished*, so a run that starts and hangs stays
silent and the outside service notices."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx

from sync.choices import RunKind, RunStatus, RunTrigger
from sync.models import SyncRun

from .models import SchedulePing

logger = logging.getLogger(__name__)

PING_TIMEOUT_S = 5.0
TASK_NAMES = {
    RunKind.INCREMENTAL: "Incremental sync: {slug}",
    RunKind.RECONCILE: "Nightly reconciliation: {slug}",
}  # as sync/schedules.py names a site's PeriodicTasks


def ping_url_for(run: SyncRun) -> str:
    """The URL to ping for this finished run, or "" (not scheduled, no ping configured)."""
    if run.trigger != RunTrigger.SCHEDULE or run.status not in RunStatus.terminal():
        return ""
    name = TASK_NAMES.get(run.kind)
    if name is None:
        return ""
    ping = SchedulePing.objects.filter(task_name=name.format(slug=run.site.slug)).first()
    if ping is None:
        return ""
    if run.status == RunStatus.SUCCEEDED:
        return ping.success_url
    if run.status in (RunStatus.FAILED, RunStatus.ABORTED):
        return ping.failure_url
    return ""  # skipped: the work did not run, so neither "done" nor "broken" is true


def send_ping(run: SyncRun, transport: httpx.BaseTransport | None = None) -> bool:
    """GET the ping URL; a failure is logged and never reaches the run (the ping is a courtesy)."""
    url = ""
    try:
        url = ping_url_for(run)
        if not url:
            return False
        with httpx.Client(transport=transport, timeout=PING_TIMEOUT_S) as client:
            response = client.get(url)
        if response.status_code >= 400:
            logger.warning("schedule ping for run #%s got HTTP %s", run.pk, response.status_code)
            return False
        return True
    except Exception as exc:
        # Ping URLs often carry a secret path (healthchecks.io uuids): log the host only.
        logger.warning("schedule ping for run #%s failed: %s (%s)", run.pk, type(exc).__name__, _host(url))
        return False


def _host(url: str) -> str:
    return urlsplit(url).hostname or "?"
