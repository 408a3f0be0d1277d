"""The per-call audit record, and redaction of what goes into it.

The ``monitoring`` app stores every record as a ``CallLog`` row, so nothing here may carry the
token, a password or anything else secret; long lists are cut to a sample to keep rows small.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

REDACTED = "***"
# The outcome of the write-ahead record (see MoodleClient's on_send): written once the attempt's throttle
# slot is granted, just before the request leaves; completed with the answer.
SENDING = "sending"
LIST_SAMPLE = 5

# Bare "key" is left alone: Moodle uses it as a field name in criteria and options lists.
_SENSITIVE = re.compile(r"passw|secret|token|[a-z_]key$|hash|salt|credential", re.I)


@dataclass(frozen=True)
class CallRecord:
    """One attempt at one Moodle call, as the audit log keeps it."""

    site: str
    function: str
    params: dict[str, Any]  # redacted summary
    outcome: str  # "ok" or an error category
    errorcode: str | None
    exception: str | None
    http_status: int | None
    duration_ms: float
    attempt: int
    started_at: datetime  # aware UTC
    message: str
    items: int  # list items sent in this request
    raw: str = ""  # the first bytes of an answer that was not Moodle's JSON: for a "details" toggle only
    call_id: str = ""  # ties an attempt's write-ahead record to its completion


def is_sensitive(name: str) -> bool:
    return bool(_SENSITIVE.search(name))


def redact(value: Any, *, sample: int = LIST_SAMPLE) -> Any:
    """A JSON-friendly copy with secret-looking fields masked and long lists cut to a sample."""
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if is_sensitive(str(k)) else redact(v, sample=sample) for k, v in value.items()
        }
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items = [redact(v, sample=sample) for v in value[:sample]]
        if len(value) > sample:
            items.append(f"... {len(value) - sample} more")
        return items
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def scrub(text: str | None, *secrets: str) -> str | None:
    """Remove secret values from free text (a body excerpt, a debug message) before it is kept."""
    if not text:
        return text
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
