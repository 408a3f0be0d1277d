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
# A proxy's "Moodle did not answer in time / broke off": the request may have reached Moodle and been done.
AMBIGUOUS_HTTP = frozenset({502, 504})
# Calls that are not safe to send twice: a second create makes a second record or is refused as a duplicate.
# After an ambiguous failure (MoodleError.ambiguous) they are not retried blind; the caller looks first.
NOT_IDEMPOTENT = frozenset({"core_user_create_users", "core_cohort_create_cohorts"})

_LOCK_TEXT = re.compile(r"lock wait|deadlock|lock timeout|could not serialize|restarting transaction", re.I)
_CONSTRAINT_TEXT = re.compile(r"duplicate|unique|constraint|violat", re.I)
_CONFLICT_TEXT = re.compile(r"username already exists|email address already exists", re.I)
_MAINTENANCE_TEXT = re.compile(r"maintenance", re.I)


class SeamError(Exception):
    """Base of everything this package raises, so a caller can catch the seam as a whole."""

    # What a call split in parts got done before it failed (see MoodleClient.call_side_by_side).
    partial: Any = None


class RequestTooLarge(SeamError, ValueError):
    """A single item (or the fixed parameters) cannot fit under the site's ``max_input_vars``."""


class ThrottleTimeout(SeamError):
    """The shared throttle did not grant a slot within ``max_wait_s``."""


class NotSent(SeamError):
    """A call of a side-by-side round that was never sent: another call of the round (or one made beside
    it) showed the run must stop (the token was refused), and nothing more may reach Moodle."""


class BreakerOpen(SeamError):
    """The site's circuit breaker is open: no call was sent."""

    def __init__(self, site: str, reason: str = "", next_probe_at: float | None = None) -> None:
        self.site = site
        self.reason = reason
        self.next_probe_at = next_probe_at
        super().__init__(f"circuit breaker open for site {site!r}: {reason or 'backing off'}")

    def __reduce__(self) -> tuple:
        return (self.__class__, (self.site, self.reason, self.next_probe_at))


# The category in words, and what a person does about it: every error shown on a page ends with these.
CATEGORY_WORDS = {
    TRANSIENT: "transient",
    MAINTENANCE: "maintenance",
    AUTH: "authorization",
    CONFIG: "configuration",
    CONFLICT: "conflict",
    CLIENT_FAULT: "refused data",
}
ADVICE = {
    TRANSIENT: "The hub retries it; if it keeps failing, check Moodle's server and the network to it.",
    MAINTENANCE: "Runs wait and continue when Moodle is back.",
    AUTH: "Check the token on the site's token page: expired, revoked, IP restriction, the service's "
    "functions or its user's capabilities.",
    CONFIG: "Add the function to the hub's external service in Moodle.",
    CONFLICT: "Another Moodle user holds the username or email: settle it on the conflict's page.",
    CLIENT_FAULT: "Moodle does not accept the values sent: check this person's data in the source.",
}


def http_summary(status: int, reason: str, body: str, content_type: str = "") -> str:
    """What a non-JSON answer means, in words: the raw bytes are kept apart, for the call's details."""
    html = "html" in content_type.lower() or body.lstrip().lower().startswith(("<!doctype", "<html"))
    if status in AMBIGUOUS_HTTP:
        return f"HTTP {status} from a proxy in front of Moodle: Moodle did not answer"
    if status == 503:
        if _MAINTENANCE_TEXT.search(body):
            return "HTTP 503: Moodle is in maintenance mode (set from the command line)"
        return "HTTP 503: Moodle is unavailable"
    if status == 403 and not body.strip():
        return "HTTP 403 with an empty answer: web services or the REST protocol are disabled in Moodle"
    if status == 200:
        what = "an HTML page" if html else f"an answer that is not JSON ({content_type or 'no type'})"
        return f"Moodle answered with {what} instead of JSON: a PHP error or a page from a proxy"
    return f"HTTP {status} {reason}: an unexpected answer" + (" (an HTML page)" if html else "")


class MoodleError(SeamError):
    """A failed Moodle call, with everything Moodle told us and the category that decides what next.

    ``str()`` is a sentence for people: what failed, the category, the errorcode and what to do. The first
    bytes of an answer that was not Moodle's JSON are kept apart in ``raw``, never in the sentence.
    """

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
        raw: str | None = None,
        ambiguous: bool = False,
    ) -> None:
        self.category = category
        self.raw = raw
        # The request went out and its answer was lost (a read timeout, a reset, a proxy's 502/504): Moodle
        # may have done it. A create must not be sent again blind; the caller looks first.
        self.ambiguous = ambiguous
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
        return f"{self.summary()} {self.advice()}".strip()

    def advice(self) -> str:
        """What a person does about it."""
        if self.ambiguous and self.function in NOT_IDEMPOTENT:
            return "Moodle may have done it: the hub looks up what it did before sending it again."
        if self.category == CLIENT_FAULT and self.raw is not None and self.errorcode is None:
            # Not Moodle's JSON error: a PHP fatal or a proxy's page, not the person's data.
            return (
                "Check the web server and PHP error logs of the Moodle site (the call's details show "
                "the page)."
            )
        return ADVICE.get(self.category, "")

    def summary(self) -> str:
        """What failed, with the category and errorcode, without the advice."""
        head = f"{self.function} failed: " if self.function else ""
        debug = f" — {self.debuginfo}" if self.debuginfo else ""
        words = CATEGORY_WORDS.get(self.category, self.category)
        code = f", {self.errorcode}" if self.errorcode else ""
        message = (self.message or "no message").rstrip(".")
        return f"{head}{message}{debug} ({words}{code})."


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
