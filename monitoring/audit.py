"""Stores the Moodle client's per-call audit records as CallLog rows."""

import logging
from datetime import timedelta

from django.utils import timezone

from sync.models import MoodleSite, ServiceToken, SyncRun
from sync.moodle.audit import CallRecord

from .models import CallLog

logger = logging.getLogger(__name__)

# Writing last_used_at on every call would double the writes of a run; once a minute is enough to
# spot a token that is used where it should not be.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class CallLogWriter:
    """The client's on_call callback for one site (and run, if any). Never lets a failure to write the
    audit row break the Moodle call it describes."""

    def __init__(self, site: MoodleSite, run: SyncRun | None = None, token: ServiceToken | None = None):
        self.site = site
        self.run = run
        self.token = token
        self._last_used_written = None

    def __call__(self, record: CallRecord) -> None:
        try:
            CallLog.objects.create(
                site=self.site,
                run=self.run,
                token=self.token if self.token is not None and self.token.pk else None,
                function=record.function,
                params=record.params,
                outcome=record.outcome,
                errorcode=(record.errorcode or "")[:200],
                exception=(record.exception or "")[:200],
                http_status=record.http_status,
                duration_ms=record.duration_ms,
                attempt=record.attempt,
                items=record.items,
                message=record.message or "",
                started_at=record.started_at,
            )
            self._touch_token(record)
        except Exception:
            logger.exception("could not store the audit record of %s on %s", record.function, self.site.slug)

    def _touch_token(self, record: CallRecord) -> None:
        if self.token is None or record.outcome == "auth":
            return
        now = timezone.now()
        if self._last_used_written and now - self._last_used_written < LAST_USED_RESOLUTION:
            return
        ServiceToken.objects.filter(pk=self.token.pk).update(last_used_at=now)
        self._last_used_written = now
