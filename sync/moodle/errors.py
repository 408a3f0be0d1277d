"""What went wrong in a Moodle call, and what the caller should do about it.

Moodle answers application errors with HTTP 200 and a JSON body; exception class names differ
between versions (``core\\exception\\invalid_parameter_exception`` vs ``invalid_parameter_exception``),
so ``classify()`` looks at the errorcode, the HTTP status and, where Moodle hides the reason
there, the debug text — never at the class name.
"""

from __future__ import annotations

import re
from typing import Any

TRANSIENT = "transient"  # retry with backoff; counts against the breaker
MAINTENANCE = "maintenance"  # site paused on purpose; retry later; counts against the breaker
AUTH = "auth"  # token or its user broken: stop the run
CONFIG = "config"  # the hub asks for something the site does not have: stop the run
CONFLICT = "conflict"  # the record clashes with an existing user: record it, move on
CLIENT_FAULT = "client_fault"  # our data or request is wrong: do not retry

CATEGORIES = (TRANSIENT, MAINTENANCE, AUTH, CONFIG, CONFLICT, CLIENT_FAULT)
RETRYABLE = frozenset({TRANSIENT, MAINTENANCE})
STOPS_RUN = frozenset({AUTH, CONFIG})

AUTH_CODES = frozenset({"invalidtoken", "accessexception", "nopermissions", "wsaccessusersuspended"})
CONFIG_CODES = frozenset({"invalidrecordunknown", "invalidrecord", "codingerror"})
# Missing-record codes also name data that is missing; they mean "no such function" only when
# the function is not known to exist.
MISSING_RECORD_CODES = frozenset({"invalidrecordunknown", "invalidrecord"})
TRANSIENT_HTTP = frozenset({502, 503, 504})

_LOCK_TEXT = re.compile(r"lock wait|deadlock|lock timeout|could not serialize|restarting transaction", re.I)
_CONSTRAINT_TEXT = re.compile(r"duplicate|unique|constraint|violat", re.I)
_CONFLICT_TEXT = re.compile(r"username already exists|email address already exists", re.I)
_MAINTENANCE_TEXT = re.compile(r"maintenance", re.I)


class SeamError(Exception):
    """Base of everything this package raises, so a caller can catch the seam as a whole."""


class RequestTooLarge(SeamError, ValueError):
    """A single item (or the fixed parameters) cannot fit under the site's ``max_input_vars``."""


class ThrottleTimeout(SeamError):
    """The shared throttle did not grant a slot within ``max_wait_s``."""


class BreakerOpen(SeamError):
    """The site's circuit breaker is open: no call was sent."""

    def __init__(self, site: str, reason: str = "", next_probe_at: float | None = None) -> None:
        self.site = site
        self.reason = reason
        self.next_probe_at = next_probe_at
        super().__init__(f"circuit breaker open for site {site!r}: {reason or 'backing off'}")

    def __reduce__(self) -> tuple:
        return (self.__class__, (self.site, self.reason, self.next_probe_at))


class MoodleError(SeamError):
    """A failed Moodle call, with everything Moodle told us and the category that decides what next."""

    def __init__(
        self,
        category: str,
        message: str,
        *,
        exception: str | None = None,
        errorcode: str | None = None,
        debuginfo: str | None = None,
        http_status: int | None = None,
        function: str | None = None,
    ) -> None:
        self.category = category
        self.exception = exception
        self.errorcode = errorcode
        self.message = message
        self.debuginfo = debuginfo
        self.http_status = http_status
        self.function = function
        # Answers of the parts of a split call that succeeded before this one failed.
        self.partial: Any = None
        super().__init__(str(self))

    def __reduce__(self) -> tuple:
        # Celery pickles exceptions; rebuild from the fields, not from the formatted message.
        return (self.__class__, (self.category, self.message), dict(self.__dict__))

    @property
    def retryable(self) -> bool:
        return self.category in RETRYABLE

    @property
    def stops_run(self) -> bool:
        return self.category in STOPS_RUN

    def __str__(self) -> str:
        head = f"{self.function}: " if self.function else ""
        code = f"[{self.errorcode}] " if self.errorcode else ""
        status = f" (HTTP {self.http_status})" if self.http_status not in (None, 200) else ""
        debug = f" — {self.debuginfo}" if self.debuginfo else ""
        return f"{head}{self.category}: {code}{self.message}{debug}{status}"


def classify(
    *,
    errorcode: str | None = None,
    http_status: int | None = None,
    message: str | None = None,
    debuginfo: str | None = None,
    body: str | None = None,
    timed_out: bool = False,
    function_known: bool | None = None,
) -> str:
    """Decide the category of a failed call.

    ``body`` is the raw answer when it was not Moodle's JSON error; ``function_known`` is True when
    the token's function list proves the function exists, so a missing record is about data.
    ``message`` is consulted for the lock/conflict reason because developer debugging appends it
    there in brackets instead of sending ``debuginfo``.
    """
    if timed_out or http_status in TRANSIENT_HTTP:
        if http_status == 503 and body and _MAINTENANCE_TEXT.search(body):
            return MAINTENANCE
        return TRANSIENT
    if http_status == 403:
        return AUTH
    if errorcode is None:
        return CLIENT_FAULT
    reason = f"{message or ''} {debuginfo or ''}"
    if errorcode == "sitemaintenance":
        return MAINTENANCE
    if errorcode in AUTH_CODES:
        return AUTH
    if errorcode in MISSING_RECORD_CODES and function_known:
        return CLIENT_FAULT
    if errorcode in CONFIG_CODES:
        return CONFIG
    if errorcode == "dmlwriteexception":
        if _LOCK_TEXT.search(reason):
            return TRANSIENT
        if _CONSTRAINT_TEXT.search(reason):
            return CLIENT_FAULT
        # Without debugging Moodle never says why a write failed. Lock waits and deadlocks are
        # what a sync meets (bad data is refused earlier as invalidparameter), so a bounded retry
        # is the better bet than a dead letter.
        return TRANSIENT
    if errorcode == "invalidparameter" and _CONFLICT_TEXT.search(reason):
        return CONFLICT
    return CLIENT_FAULT
