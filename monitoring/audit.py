"""Stores the Moodle client's per-call audit records as CallLog rows."""

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from sync.models import MoodleSite, ServiceToken, SyncRun
from sync.moodle.audit import CallRecord

from . import rollups
from .models import CallLog

logger = logging.getLogger(__name__)

# Writing last_used_at on every call would double the writes of a run; once a minute is enough to
# spot a token that is used where it should not be.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Refusals that are about the token itself: any call Moodle accepts afterwards proves they are over.
# Others (accessexception for one function, nopermissions for writes) end when that function answers.
TOKEN_LEVEL_CODES = ("invalidtoken", "wsaccessusersuspended")
ROLLUP_FIELDS = ("function", "outcome", "errorcode", "http_status", "duration_ms", "started_at")


class CallLogWriter:
    """The client's on_call callback for one site (and run, if any). Never lets a failure to write the
    audit row break the Moodle call it describes."""

    def __init__(self, site: MoodleSite, run: SyncRun | None = None, token: ServiceToken | None = None):
        self.site = site
        self.run = run
        self.token = token
        self._last_used_written = None
        self._ahead: dict[str, int] = {}  # call id -> the pk of its write-ahead row

    def __call__(self, record: CallRecord) -> None:
        try:
            with transaction.atomic():
                self._store(record)
            self._touch_token(record)
        except Exception:
            logger.exception("could not store the audit record of %s on %s", record.function, self.site.slug)

    def sending(self, record: CallRecord) -> None:
        """The client's on_send callback: the row of an attempt exists (outcome "sending") before the request
        leaves, so a call Moodle receives is logged even if this process dies before the answer. Written
        once the call's throttle slot is granted, so a process that dies while requests wait for slots
        leaves no row of a call never sent. Committed at once: a run never calls Moodle inside a
        transaction. A row that cannot be written raises: the client then does not send the request."""
        self._ahead[record.call_id] = CallLog.objects.create(**self._fields(record)).pk

    def _fields(self, record: CallRecord) -> dict:
        return {
            "site": self.site,
            "run": self.run,
            "token": self.token if self.token is not None and self.token.pk else None,
            "function": record.function,
            "params": record.params,
            "outcome": record.outcome,
            "errorcode": (record.errorcode or "")[:200],
            "exception": (record.exception or "")[:200],
            "http_status": record.http_status,
            "duration_ms": record.duration_ms,
            "attempt": record.attempt,
            "items": record.items,
            "message": record.message or "",
            "detail": record.raw or "",
            "started_at": record.started_at,
        }

    def _store(self, record: CallRecord) -> None:
        """The call's row (its write-ahead row, completed), and its place in the rollups
        (monitoring/rollups.py)."""
        fields = self._fields(record)
        pk = self._ahead.pop(record.call_id, None)
        if pk is None or not CallLog.objects.filter(pk=pk).update(**fields):
            CallLog.objects.create(**fields)
        rollups.add_call(
            site_id=self.site.pk,
            **{
                k: fields[k]
                for k in ("function", "outcome", "errorcode", "http_status", "duration_ms", "started_at")
            },
        )

    def _touch_token(self, record: CallRecord) -> None:
        """Keep the token's "last used" and "refused by Moodle" true to the calls made with it."""
        if self.token is None or not self.token.pk:
            return
        tokens = ServiceToken.objects.filter(pk=self.token.pk)
        if record.outcome == "auth":
            code = record.errorcode or (f"HTTP {record.http_status}" if record.http_status else "refused")
            tokens.update(
                refused_at=record.started_at, refused_code=code[:100], refused_function=record.function
            )
            self.token.refused_at = record.started_at
            return
        if record.outcome != "ok":
            return
        now = timezone.now()
        due = self._last_used_written is None or now - self._last_used_written >= LAST_USED_RESOLUTION
        if self.token.refused_at is not None or due:
            # A refusal recorded by another process is cleared within a minute of a call that proves it over:
            # one that started after the refused one (a call already under way when the token was revoked
            # may still be answered, side by side with the refusal, and proves nothing).
            cleared = (
                tokens.filter(refused_at__lt=record.started_at)
                .filter(Q(refused_function=record.function) | Q(refused_code__in=TOKEN_LEVEL_CODES))
                .update(refused_at=None, refused_code="", refused_function="")
            )
            if cleared:
                self.token.refused_at = None
        if due:
            tokens.update(last_used_at=now)
            self._last_used_written = now
