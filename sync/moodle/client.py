"""The one way the hub talks to a Moodle site's REST web services.

Every attempt goes through the site's shared throttle and circuit breaker, is reported to the
audit hook, and is retried only when the failure is transient or maintenance. List-valued calls
are split below the site's ``max_input_vars`` so PHP never drops part of a batch.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import redis as redis_lib

from . import errors
from .audit import SENDING, CallRecord, redact, scrub
from .breaker import PROBE_FUNCTION, Breaker, BreakerConfig, BreakerState, ChangeCallback
from .encoding import flatten, split_params
from .errors import BreakerOpen, MoodleError, SeamError, classify
from .handoff import HandOff
from .limits import SiteLimits
from .throttle import LocalThrottle, Throttle, ThrottleSettings

logger = logging.getLogger(__name__)

ENDPOINT = "/webservice/rest/server.php"
EXCERPT_CHARS = 200

# The list parameter each call is split on when it would exceed max_input_vars.
SPLIT_PARAM = {
    "core_user_get_users_by_field": "values",
    "core_user_create_users": "users",
    "core_user_update_users": "users",
    "core_user_delete_users": "userids",
    "core_cohort_create_cohorts": "cohorts",
    "core_cohort_get_cohorts": "cohortids",
    "core_cohort_add_cohort_members": "members",
    "core_cohort_delete_cohort_members": "members",
    "core_cohort_get_cohort_members": "cohortids",
    "enrol_manual_enrol_users": "enrolments",
    "enrol_manual_unenrol_users": "enrolments",
}

# The functions a user sync calls: a run's pre-flight, a token's verification and the probe check them.
SYNC_FUNCTIONS = (
    "core_webservice_get_site_info",
    "core_user_get_users_by_field",
    "core_user_get_users",
    "core_user_create_users",
    "core_user_update_users",
)
# What a sync with memberships also calls (courses, cohorts, enrolments, and reading them back).
MEMBERSHIP_FUNCTIONS = (
    "core_course_get_courses_by_field",
    "enrol_manual_enrol_users",
    "enrol_manual_unenrol_users",
    "core_enrol_get_enrolled_users",
    "core_cohort_get_cohorts",
    "core_cohort_create_cohorts",
    "core_cohort_add_cohort_members",
    "core_cohort_delete_cohort_members",
    "core_cohort_get_cohort_members",
)
# Every function the hub may call on a site.
HUB_FUNCTIONS = (
    "core_webservice_get_site_info",
    "core_user_get_users_by_field",
    "core_user_get_users",
    "core_user_create_users",
    "core_user_update_users",
    "core_user_delete_users",
    "core_cohort_create_cohorts",
    "core_cohort_get_cohorts",
    "core_cohort_add_cohort_members",
    "core_cohort_delete_cohort_members",
    "core_cohort_get_cohort_members",
    "enrol_manual_enrol_users",
    "enrol_manual_unenrol_users",
    "core_enrol_get_enrolled_users",
    "core_course_get_courses_by_field",
)


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per request (the first included); backoff is full jitter on ``base_s * 2**n``."""

    attempts: int = 4
    base_s: float = 1.0
    cap_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts counts the first try, so it must be at least 1")

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 5.0
    read_s: float = 60.0


@dataclass(frozen=True)
class ItemFailure:
    """One record a batch call did not apply, from Moodle's warnings."""

    itemid: int | None
    warningcode: str
    message: str
    item: str = ""


@dataclass(frozen=True)
class UpdateResult:
    """``core_user_update_users``: each user is its own transaction, so some may fail."""

    updated_ids: list[int]
    failures: list[ItemFailure]

    @property
    def ok(self) -> bool:
        return not self.failures


# Every Moodle has the guest user (created at install, never deletable; id 1, username "guest"). The service
# user always sees itself in full, so only another user proves what a look-up can see: the guest must
# come back with its username, email and name.
WITNESS_ID = 1
WITNESS_USERNAME = "guest"
BLIND_LOOKUPS = (
    "looking up Moodle's guest user (id 1) did not return its username, email and name: look-ups of other "
    "users would be silently empty or partial (the service user needs moodle/user:viewdetails, "
    "moodle/user:viewalldetails, moodle/site:viewfullnames and moodle/site:viewuseridentity)"
)


def shows_witness(users: Iterable[dict[str, Any]]) -> bool:
    """Whether a look-up answer holds the guest user as someone who may see users sees it."""
    return any(
        int(u.get("id", 0)) == WITNESS_ID and u.get("username") and u.get("email") and u.get("firstname")
        for u in users
    )


@dataclass(frozen=True)
class Preflight:
    """Whether the token can do a run: its functions, and proof that look-ups are not blind."""

    ok: bool
    sitename: str = ""
    release: str = ""
    version: str = ""
    username: str = ""
    userid: int | None = None
    functions: list[str] = field(default_factory=list)
    missing_functions: list[str] = field(default_factory=list)
    can_see_users: bool | None = False  # None: not checked here (the run's first look-up proves it)
    problems: list[str] = field(default_factory=list)
    error_category: str | None = None


CallCallback = Callable[[CallRecord], None]


@dataclass(frozen=True)
class _Sent:
    """What one request came back with: an HTTP answer, or the transport's failure."""

    started_at: datetime
    duration_ms: float
    response: httpx.Response | None = None
    failure: Exception | None = None


def _items(function: str, params: Mapping[str, Any]) -> int:
    """How many list items a request carries (users to create, values to look up): its size of work. A page
    of enrolled users is as big as the page asked for, like a look-up of as many values."""
    if function == "core_enrol_get_enrolled_users":
        sizes = [o.get("value") for o in params.get("options") or [] if o.get("name") == "limitnumber"]
        return int(sizes[0]) if sizes and str(sizes[0]).isdigit() else 0
    list_param = SPLIT_PARAM.get(function)
    items = params.get(list_param) if list_param else None
    return len(items) if isinstance(items, Sequence) and not isinstance(items, str | bytes) else 0


class MoodleClient:
    """A client for one Moodle site. Build one per site and reuse it: it holds the HTTP pool."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        site: str = "default",
        limits: SiteLimits | None = None,
        redis: redis_lib.Redis | None = None,
        retry: RetryPolicy | None = None,
        breaker: BreakerConfig | None = None,
        timeouts: Timeouts | None = None,
        transport: httpx.BaseTransport | None = None,
        on_call: CallCallback | None = None,
        on_send: CallCallback | None = None,
        on_breaker_change: ChangeCallback | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.site = site
        self.limits = limits or SiteLimits()
        self.retry = retry or RetryPolicy()
        self.timeouts = timeouts or Timeouts()
        self._token = token
        self._on_call = on_call
        # Write-ahead: told of each attempt once its throttle slot is granted, just before it leaves (outcome
        # SENDING), so that a call Moodle receives is in the audit log even if this process dies before the
        # answer. `on_call` completes it. Always called in the calling thread.
        self._on_send = on_send
        self._sleep = sleep
        self._rng = random.Random()  # noqa: S311 - jitter, not security
        self._functions: frozenset[str] | None = None
        # While a side-by-side round is out: set when any call shows the run must stop (auth, config), so
        # no further call of the round, nor one made beside it, is sent.
        self._round_halt: threading.Event | None = None
        # Released once per request of the round as it goes out (or is refused), so that the caller's
        # own calls beside the round wait until the round's first wave is at the site.
        self._round_started: threading.Semaphore | None = None
        # The round's request threads have their write-ahead records written by the calling thread.
        self._round_handoff: HandOff | None = None
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            transport=transport,
            timeout=httpx.Timeout(self.timeouts.read_s, connect=self.timeouts.connect_s),
            limits=httpx.Limits(max_connections=max(2, self.limits.max_concurrent)),
            headers={"Accept": "application/json"},
        )
        throttle_settings = ThrottleSettings(
            max_concurrent=self.limits.max_concurrent,
            min_spacing_ms=self.limits.min_spacing_ms,
            calls_per_minute=self.limits.calls_per_minute,
            max_wait_s=self.limits.max_wait_s,
            lease_s=self.timeouts.connect_s + self.timeouts.read_s + 30,
        )
        breaker_config = breaker or BreakerConfig()
        self._breaker_config = breaker_config
        if redis is not None:
            self.throttle: Throttle | LocalThrottle = Throttle(redis, site, throttle_settings)
            self.breaker: Breaker | None = (
                Breaker(redis, site, breaker_config, on_change=on_breaker_change)
                if breaker_config.enabled
                else None
            )
        else:
            # Without Redis there is nothing to share a breaker through; the throttle still
            # protects the site from this process.
            self.throttle = LocalThrottle(site, throttle_settings)
            self.breaker = None

    def __repr__(self) -> str:
        return f"MoodleClient(site={self.site!r}, base_url={str(self._http.base_url)!r})"

    def __enter__(self) -> MoodleClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- the generic call ------------------------------------------------------------------

    def call(self, wsfunction: str, **params: Any) -> Any:
        """Call ``wsfunction``; list-valued calls are split and their answers merged.

        If a later part of a split call fails, the raised ``MoodleError`` carries the merged
        answers of the parts that succeeded in ``partial`` (they are applied in Moodle).
        """
        chunks = split_params(
            params, SPLIT_PARAM.get(wsfunction), self.limits.max_input_vars, function=wsfunction
        )
        results = []
        for chunk in chunks:
            try:
                results.append(self._call_with_retry(wsfunction, chunk))
            except MoodleError as error:
                if results:
                    error.partial = _merge(results)
                raise
        return _merge(results)

    def breaker_state(self) -> BreakerState | None:
        return self.breaker.state() if self.breaker else None

    def _call_with_retry(self, function: str, params: dict[str, Any]) -> Any:
        result, error = self._retry_from(function, params, 1)
        if error is not None:
            raise error
        return result

    def _settle_missing_record(self, error: MoodleError) -> None:
        """Tell "no such function" (config) from "no such record" (data) for a missing-record error.

        With debugging off both are ``invalidrecordunknown``; the token's function list decides.
        """
        if error.errorcode not in errors.MISSING_RECORD_CODES or error.function == PROBE_FUNCTION:
            return
        if self._functions is None:
            try:
                self.get_site_info()
            except SeamError:
                return
        known = self._functions is not None and error.function in self._functions
        error.category = classify(
            errorcode=error.errorcode,
            http_status=error.http_status,
            message=error.message,
            debuginfo=error.debuginfo,
            function_known=known,
        )

    def _pass_breaker(self) -> None:
        if self.breaker is None or not self.breaker.before_call():
            return
        try:
            result, error, duration_ms = self._attempt(PROBE_FUNCTION, {}, 1, count_in_breaker=False)
        except BaseException:
            # Never leave the site half-open behind a probe that did not happen.
            self.breaker.probe_finished(False, "probe could not be sent")
            raise
        limit = self._breaker_config.latency_p90_ms
        if error is not None and error.retryable:
            ok, reason = False, f"probe failed: {error}"
        elif limit is not None and duration_ms > limit:
            # A probe that is still slow would only reopen the breaker a few calls later.
            ok, reason = False, f"probe slow: {duration_ms:.0f} ms > {limit:g} ms"
        else:
            ok, reason = True, f"probe answered in {duration_ms:.0f} ms"
            if error is None:
                self._remember_functions(result)
        self.breaker.probe_finished(ok, reason)
        if not ok:
            raise BreakerOpen(self.site, reason)

    def _attempt(
        self, function: str, params: Mapping[str, Any], attempt: int, *, count_in_breaker: bool = True
    ) -> tuple[Any, MoodleError | None, float]:
        """One request: throttled, timed, classified, recorded. Returns (result, error, ms)."""
        call_id = self._call_id()
        # Written once the throttle grants the slot, in this thread, just before the request leaves.
        sent = self._send(function, params, lambda: self._announce(function, params, attempt, call_id))
        return self._settle(function, params, attempt, sent, count_in_breaker, call_id)

    def _call_id(self) -> str:
        return uuid.uuid4().hex if self._on_send is not None else ""

    def _announce(self, function: str, params: Mapping[str, Any], attempt: int, call_id: str) -> None:
        """The write-ahead record of an attempt about to go out. If it cannot be written (the database is
        down), the request is not sent: a call Moodle received is never missing from the log."""
        if self._on_send is not None:
            self._on_send(self._record(function, params, attempt, SENDING, call_id))

    def _record(
        self, function: str, params: Mapping[str, Any], attempt: int, outcome: str, call_id: str
    ) -> CallRecord:
        return CallRecord(
            site=self.site,
            function=function,
            params=redact(params),
            outcome=outcome,
            errorcode=None,
            exception=None,
            http_status=None,
            duration_ms=0.0,
            attempt=attempt,
            started_at=datetime.now(UTC),
            message="",
            items=_items(function, params),
            call_id=call_id,
        )

    def _send(
        self, function: str, params: Mapping[str, Any], on_start: Callable[[], None] | None = None
    ) -> _Sent:
        """The request itself, within a throttle slot; `on_start` runs once the slot is granted, just before
        the request leaves (if it raises, nothing is sent). In a round's worker threads nothing here touches
        the database: the calling thread keeps the bookkeeping (through the round's HandOff)."""
        form = [
            ("wstoken", self._token),
            ("wsfunction", function),
            ("moodlewsrestformat", "json"),
            *flatten(params),
        ]
        body = urlencode(form).encode()
        sent: _Sent | None = None
        handoff = self._round_handoff
        # The calling thread of a round does what the round's requests ask of it while it waits for a slot.
        idle = handoff.serve if handoff is not None and handoff.owner == threading.get_ident() else None
        try:
            with self.throttle.slot(idle=idle):
                halt = self._round_halt
                if halt is not None and halt.is_set():
                    raise errors.NotSent(f"{function} was not sent: the run must stop")
                started_at = datetime.now(UTC)
                if on_start is not None:
                    on_start()
                t0 = time.perf_counter()
                try:
                    response = self._http.post(
                        ENDPOINT,
                        content=body,
                        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
                    )
                    sent = _Sent(started_at, (time.perf_counter() - t0) * 1000, response=response)
                except httpx.TransportError as exc:
                    sent = _Sent(started_at, (time.perf_counter() - t0) * 1000, failure=exc)
        except redis_lib.RedisError:
            if sent is None:
                raise  # no slot: nothing was sent
            # Redis failed as the slot was given back: the answer is Moodle's and must be used; the slot's
            # lease expires by itself.
            logger.warning("Moodle %s: the throttle slot of %s could not be given back", self.site, function)
        return sent

    def _settle(
        self,
        function: str,
        params: Mapping[str, Any],
        attempt: int,
        sent: _Sent,
        count_in_breaker: bool,
        call_id: str = "",
    ) -> tuple[Any, MoodleError | None, float]:
        """Classify what came back, complete the audit record, feed the breaker (in that order: the record of
        a call Moodle received must not depend on Redis answering)."""
        result: Any = None
        if sent.response is not None:
            result, error = self._interpret(function, sent.response)
        elif isinstance(sent.failure, httpx.TimeoutException):
            unsent = isinstance(sent.failure, httpx.ConnectTimeout | httpx.PoolTimeout)
            what = "connect to" if unsent else "get an answer from"
            error = MoodleError(
                errors.TRANSIENT,
                f"the hub could not {what} Moodle in time (a timeout)"
                + ("" if unsent else ": the request was sent, so Moodle may have done it"),
                function=function,
                raw=type(sent.failure).__name__,
                ambiguous=not unsent,
            )
        else:
            unsent = isinstance(sent.failure, httpx.ConnectError)
            error = MoodleError(
                errors.TRANSIENT,
                "the connection to Moodle failed ("
                + (
                    "refused or no route"
                    if unsent
                    else "broken after the request was sent: Moodle may have done it"
                )
                + ")",
                function=function,
                raw=f"{type(sent.failure).__name__}: {scrub(str(sent.failure), self._token)}",
                ambiguous=not unsent,
            )
        if error is not None:
            self._settle_missing_record(error)
            if error.stops_run and self._round_halt is not None:
                self._round_halt.set()
        self._report(function, params, attempt, sent.started_at, sent.duration_ms, error, call_id)
        if self.breaker is not None and count_in_breaker:
            try:
                self.breaker.record(
                    failed=error is not None and error.retryable,
                    duration_ms=sent.duration_ms,
                    items=_items(function, params),
                    started_at=sent.started_at.timestamp(),
                )
            except redis_lib.RedisError as exc:
                # This call's answer is settled and must be used (a create Moodle did); the next throttle
                # slot meets Redis's failure, and the run waits for it there.
                logger.warning("Moodle %s: the breaker could not count a call: %s", self.site, exc)
        return result, error, sent.duration_ms

    def call_side_by_side(
        self,
        wsfunction: str,
        param_sets: Sequence[Mapping[str, Any]],
        meanwhile: Callable[[], None] | None = None,
    ) -> list[Any]:
        """Independent calls of one function sent side by side, as many at a time as the site allows.

        Each answer is the call's result, or the ``MoodleError`` it ended with (after its retries), or the
        ``BreakerOpen`` / ``ThrottleTimeout`` that stopped its retries; a failure's ``partial`` holds what
        the parts of a split call that went through returned. ``meanwhile`` runs in the calling thread while
        the requests are out (its own calls share the site's throttle with them). The
        requests run in worker threads; everything else (classification, the breaker, the audit hook, the
        retries) happens in the calling thread, in order.
        """
        requests = [
            (index, chunk)
            for index, params in enumerate(param_sets)
            for chunk in split_params(
                params, SPLIT_PARAM.get(wsfunction), self.limits.max_input_vars, function=wsfunction
            )
        ]
        self._round_halt = threading.Event()
        self._round_started = threading.Semaphore(0)
        self._round_handoff = HandOff()
        try:
            if self.limits.max_concurrent <= 1:
                answers = [self._answer_or_error(wsfunction, params) for params in param_sets]
                if meanwhile is not None:
                    meanwhile()  # one connection: nothing can go beside the calls, so it goes after them
                return answers
            self._pass_breaker()
            call_ids = [self._call_id() for _ in requests]
            with ThreadPoolExecutor(max_workers=self.limits.max_concurrent) as pool:
                try:
                    futures = [
                        pool.submit(self._send_or_refusal, wsfunction, chunk, call_id)
                        for (_, chunk), call_id in zip(requests, call_ids, strict=True)
                    ]
                    problem: BaseException | None = None
                    self._await_first_wave(min(len(futures), self.limits.max_concurrent))
                    if meanwhile is not None:
                        # The caller's own calls (look-ups ahead) go through the same throttle, in this
                        # thread, while these are at the site. Whatever it raises waits until these are
                        # settled.
                        try:
                            meanwhile()
                        except BaseException as exc:
                            problem = exc
                    self._round_handoff.serve_until(lambda: all(future.done() for future in futures))
                finally:
                    self._round_handoff.close()  # a request still asking is refused, not left waiting
                sent = [future.result() for future in futures]
            return self._settle_round(wsfunction, param_sets, requests, sent, problem, call_ids)
        finally:
            self._round_halt = None
            self._round_started = None
            self._round_handoff = None

    def _await_first_wave(self, count: int) -> None:
        """The round's first wave goes out before the caller's own calls take a slot (bounded by the
        throttle's own wait: a request that gets no slot is counted as decided)."""
        started, handoff = self._round_started, self._round_handoff
        assert started is not None and handoff is not None
        deadline = time.monotonic() + self.limits.max_wait_s
        for _ in range(count):
            handoff.serve_until(lambda: started.acquire(blocking=False) or time.monotonic() > deadline)

    def _settle_round(
        self,
        wsfunction: str,
        param_sets: Sequence[Mapping[str, Any]],
        requests: list[tuple[int, dict[str, Any]]],
        sent: list[Any],
        problem: BaseException | None,
        call_ids: list[str],
    ) -> list[Any]:
        """Every request that went out is settled, in order, in the calling thread."""
        parts: dict[int, list[Any]] = {index: [] for index in range(len(param_sets))}
        failures: dict[int, SeamError] = {}
        for (index, chunk), outcome, call_id in zip(requests, sent, call_ids, strict=True):
            # Whatever happened to its neighbours: a create that Moodle did must never be forgotten because
            # the breaker opened on another one, or Redis failed under another one's throttle slot.
            if isinstance(outcome, Exception):  # not sent, so it has no record
                if isinstance(outcome, SeamError):
                    failures.setdefault(index, outcome)
                else:
                    problem = problem or outcome  # raised once every request that went out is settled
                continue
            result, error, _ = self._settle(wsfunction, chunk, 1, outcome, True, call_id)
            if error is not None and _may_retry(wsfunction, error) and self.retry.attempts > 1:
                try:
                    self._sleep(self.retry.delay(1, self._rng))
                    result, error = self._retry_from(wsfunction, chunk, 2)
                except (errors.BreakerOpen, errors.ThrottleTimeout, errors.NotSent) as refusal:
                    failures.setdefault(index, refusal)
                    continue
            if error is not None:
                failures.setdefault(index, error)
            else:
                parts[index].append(result)
        answers: list[Any] = []
        for index in range(len(param_sets)):
            if index in failures:
                failure = failures[index]
                if parts[index]:
                    failure.partial = _merge(parts[index])
                answers.append(failure)
            else:
                answers.append(_merge(parts[index]) if parts[index] else None)
        if problem is not None:
            raise problem
        return answers

    def _send_or_refusal(self, function: str, params: Mapping[str, Any], call_id: str) -> _Sent | Exception:
        """`_send` in a worker thread: a throttle that gives no slot (or whose Redis fails), or a halted
        round, is this request's answer, not an exception that would lose what the other threads sent. An
        answer that stops the run halts the round at once, before this thread takes its next request.
        Once the slot is granted, the calling thread writes the write-ahead record; then the request
        leaves."""
        started, handoff = self._round_started, self._round_handoff
        assert started is not None and handoff is not None
        decided = threading.Event()

        def on_start() -> None:
            try:
                handoff.ask(lambda: self._announce(function, params, 1, call_id))
            finally:
                decided.set()
                started.release()

        try:
            sent = self._send(function, params, on_start)
        except Exception as refusal:  # raised before the request left (a failed post is a _Sent)
            if not decided.is_set():
                started.release()  # decided, if not sent: nobody waits for it
            return refusal
        if sent.response is not None and self._round_halt is not None:
            _, error = self._interpret(function, sent.response)
            if error is not None and error.stops_run:
                self._round_halt.set()
        return sent

    def _answer_or_error(self, wsfunction: str, params: Mapping[str, Any]) -> Any:
        try:
            return self.call(wsfunction, **params)
        except (MoodleError, errors.BreakerOpen, errors.ThrottleTimeout, errors.NotSent) as error:
            return error  # an answer like the others: the calls before it must not be lost with it

    def _retry_from(
        self, function: str, params: dict[str, Any], first: int
    ) -> tuple[Any, MoodleError | None]:
        """Attempts `first`, `first + 1`, ... of one request: retried while the failure is transient."""
        error: MoodleError | None = None
        for attempt in range(first, self.retry.attempts + 1):
            self._pass_breaker()
            result, error, _ = self._attempt(function, params, attempt)
            if error is None:
                return result, None
            if not _may_retry(function, error) or attempt == self.retry.attempts:
                break
            self._sleep(self.retry.delay(attempt, self._rng))
        return None, error

    def _interpret(self, function: str, response: httpx.Response) -> tuple[Any, MoodleError | None]:
        status = response.status_code
        text = response.text
        if status == 200:
            try:
                data = response.json()
            except ValueError:
                return None, self._non_json(function, status, text, response)
            if isinstance(data, dict) and "exception" in data and "errorcode" in data:
                return None, self._moodle_error(function, status, data)
            return data, None
        return None, self._non_json(function, status, text, response)

    def _non_json(self, function: str, status: int, text: str, response: httpx.Response) -> MoodleError:
        kind = response.headers.get("content-type", "")
        return MoodleError(
            classify(http_status=status, body=text),
            errors.http_summary(status, response.reason_phrase, text, kind),
            http_status=status,
            function=function,
            raw=_excerpt(scrub(text, self._token)) or "(empty body)",
            ambiguous=status in errors.AMBIGUOUS_HTTP,
        )

    def _moodle_error(self, function: str, status: int, data: dict[str, Any]) -> MoodleError:
        errorcode = _opt_str(data.get("errorcode"))
        message = scrub(_opt_str(data.get("message")), self._token) or ""
        debuginfo = scrub(_opt_str(data.get("debuginfo")), self._token)
        known = function in self._functions if self._functions is not None else None
        category = classify(
            errorcode=errorcode,
            http_status=status,
            message=message,
            debuginfo=debuginfo,
            function_known=known,
        )
        return MoodleError(
            category,
            message,
            exception=_opt_str(data.get("exception")),
            errorcode=scrub(errorcode, self._token),
            debuginfo=debuginfo,
            http_status=status,
            function=function,
        )

    def _report(
        self,
        function: str,
        params: Mapping[str, Any],
        attempt: int,
        started_at: datetime,
        duration_ms: float,
        error: MoodleError | None,
        call_id: str = "",
    ) -> None:
        record = CallRecord(
            site=self.site,
            function=function,
            params=redact(params),
            outcome="ok" if error is None else error.category,
            errorcode=error.errorcode if error else None,
            exception=error.exception if error else None,
            http_status=error.http_status if error else 200,
            duration_ms=round(duration_ms, 1),
            attempt=attempt,
            started_at=started_at,
            message=str(error) if error else "",
            raw=(error.raw or "") if error else "",
            items=_items(function, params),
            call_id=call_id,
        )
        if error is None:
            logger.debug("Moodle %s %s ok in %.0f ms", self.site, function, duration_ms)
        else:
            logger.warning("Moodle %s attempt %d failed: %s", self.site, attempt, error)
        if self._on_call is not None:
            self._tell(self._on_call, record)

    def _tell(self, hook: CallCallback, record: CallRecord) -> None:
        try:
            hook(record)
        except Exception:
            # The audit hook must never turn a good call into a failed one.
            logger.exception("on_call hook failed for %s %s", self.site, record.function)

    def _remember_functions(self, info: Any) -> None:
        if isinstance(info, dict) and isinstance(info.get("functions"), list):
            self._functions = frozenset(
                f["name"] for f in info["functions"] if isinstance(f, dict) and "name" in f
            )

    # -- typed helpers ---------------------------------------------------------------------

    def get_site_info(self) -> dict[str, Any]:
        """Site name, release, the token's user and the functions it may call."""
        info = self.call("core_webservice_get_site_info")
        self._remember_functions(info)
        return info

    def get_users_by_field(self, field: str, values: Iterable[Any]) -> list[dict[str, Any]]:
        """Users whose ``field`` (id, idnumber, username, email) matches; only those found.

        Email matching is exact and case-sensitive, and a token without capabilities gets ``[]``:
        trust an empty answer only after ``preflight()``.
        """
        values = list(values)
        if not values:
            return []
        return self.call("core_user_get_users_by_field", field=field, values=values) or []

    def get_users(self, criteria: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """``{"users": [...], "warnings": [...]}``; criteria as ``{"email": "%@x.org"}`` or key/values."""
        if isinstance(criteria, Mapping):
            criteria = [{"key": k, "value": v} for k, v in criteria.items()]
        answer = self.call("core_user_get_users", criteria=list(criteria)) or {}
        return {"users": answer.get("users", []), "warnings": answer.get("warnings", [])}

    def create_users(self, users: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``[{"id": N, "username": ...}]``. Each request is all-or-nothing in Moodle."""
        if not users:
            return []
        return self.call("core_user_create_users", users=list(users)) or []

    def create_users_side_by_side(
        self, groups: Sequence[Sequence[Mapping[str, Any]]], meanwhile: Callable[[], None] | None = None
    ) -> list[Any]:
        """Several independent creates at once: each group's created users, or what stopped it (see
        `call_side_by_side`)."""
        params = [{"users": list(g)} for g in groups]
        answers = self.call_side_by_side("core_user_create_users", params, meanwhile)
        return [a if isinstance(a, SeamError) else (a or []) for a in answers]

    def update_users(self, users: Sequence[Mapping[str, Any]]) -> UpdateResult:
        """Update users (each needs ``id``); Moodle's warnings come back as per-user failures."""
        if not users:
            return UpdateResult(updated_ids=[], failures=[])
        answer = self.call("core_user_update_users", users=list(users))
        failures = _item_failures(answer)
        failed = {f.itemid for f in failures}
        sent = [int(u["id"]) for u in users if "id" in u]
        return UpdateResult(updated_ids=[i for i in sent if i not in failed], failures=failures)

    def delete_users(self, userids: Iterable[int]) -> None:
        """Irreversible (username and email are scrambled): prefer ``update_users`` with suspended=1."""
        userids = list(userids)
        if userids:
            self.call("core_user_delete_users", userids=userids)

    def create_cohorts(self, cohorts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if not cohorts:
            return []
        return self.call("core_cohort_create_cohorts", cohorts=list(cohorts)) or []

    def get_cohorts(self, cohortids: Iterable[int] = ()) -> list[dict[str, Any]]:
        """The given cohorts, or every cohort when none are named."""
        return self.call("core_cohort_get_cohorts", cohortids=list(cohortids)) or []

    def add_cohort_members(self, members: Sequence[Mapping[str, Any]]) -> list[ItemFailure]:
        """Members as ``cohort_member(cohortid, userid)``; returns the ones Moodle did not add.

        Warning code "3" (already a member) is included: the caller decides whether it matters.
        """
        if not members:
            return []
        return _item_failures(self.call("core_cohort_add_cohort_members", members=list(members)))

    def delete_cohort_members(self, members: Sequence[Mapping[str, Any]]) -> None:
        """Members as ``{"cohortid": C, "userid": U}``; non-members are ignored by Moodle."""
        if members:
            self.call("core_cohort_delete_cohort_members", members=list(members))

    def get_cohort_members(self, cohortids: Iterable[int]) -> list[dict[str, Any]]:
        """``[{"cohortid": N, "userids": [...]}]`` — unpaged, so keep the id list short."""
        cohortids = list(cohortids)
        if not cohortids:
            return []
        return self.call("core_cohort_get_cohort_members", cohortids=cohortids) or []

    def enrol_users(self, enrolments: Sequence[Mapping[str, Any]]) -> None:
        """Enrolments as ``{"roleid", "userid", "courseid", ...}``; one unknown user fails the request."""
        if enrolments:
            self.call("enrol_manual_enrol_users", enrolments=list(enrolments))

    def unenrol_users(self, enrolments: Sequence[Mapping[str, Any]]) -> None:
        if enrolments:
            self.call("enrol_manual_unenrol_users", enrolments=list(enrolments))

    def get_enrolled_users(
        self,
        courseid: int,
        *,
        page_size: int | None = None,
        onlyactive: bool | None = None,
        userfields: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Everyone enrolled in a course, fetched in pages of ``page_size`` when given.

        Paging uses ``limitnumber``: Moodle silently ignores the often-quoted ``limitnum``.
        """
        options: list[dict[str, Any]] = []
        if onlyactive is not None:
            options.append({"name": "onlyactive", "value": onlyactive})
        if userfields:
            options.append({"name": "userfields", "value": ",".join(userfields)})
        if not page_size:
            return self.call("core_enrol_get_enrolled_users", courseid=courseid, options=options) or []
        users: list[dict[str, Any]] = []
        while True:
            paging = [{"name": "limitfrom", "value": len(users)}, {"name": "limitnumber", "value": page_size}]
            page = (
                self.call("core_enrol_get_enrolled_users", courseid=courseid, options=options + paging) or []
            )
            if len(page) > page_size:
                # Moodle sent more than a page: it did not read the paging options, so this is everyone.
                if users:
                    raise errors.SeamError(
                        f"core_enrol_get_enrolled_users ignored limitnumber={page_size} for course {courseid}"
                    )
                return page
            users.extend(page)
            if len(page) < page_size:
                return users

    def get_courses_by_field(self, field: str = "", value: Any = "") -> list[dict[str, Any]]:
        """Courses matching ``field`` (id, shortname, idnumber, ...), or all courses with no field."""
        params = {"field": field, "value": value} if field else {}
        answer = self.call("core_course_get_courses_by_field", **params) or {}
        return answer.get("courses", [])

    def preflight(
        self, needed_functions: Iterable[str] = HUB_FUNCTIONS, *, prove_lookups: bool = True
    ) -> Preflight:
        """Check before a run that the token works, has every needed function and can see users.

        A token without the capabilities to view users gets ``[]`` (or users without their username or
        email) from look-ups instead of an error, so the guest user is looked up by id and must come
        back whole (WITNESS_ID). With ``prove_lookups=False`` that look-up is left to the caller, who
        makes it ride on its own first look-up (see sync.run.view.LookupProof) and saves the call.
        Problems with the token or the site's set-up are reported in the answer; a site that is
        only unavailable for now (transient, maintenance, breaker open, no throttle slot) raises,
        so the caller can wait and try again rather than blame the token.
        """
        try:
            info = self.get_site_info()
        except MoodleError as exc:
            if exc.retryable:
                raise
            return Preflight(ok=False, problems=[f"site info failed: {exc}"], error_category=exc.category)
        functions = sorted(self._functions or ())
        missing = [f for f in needed_functions if f not in (self._functions or ())]
        problems = [f"token lacks {', '.join(missing)}"] if missing else []
        userid = info.get("userid")
        can_see: bool | None = False
        category = None
        if "core_user_get_users_by_field" not in functions:
            problems.append("cannot look users up without core_user_get_users_by_field")
        elif not prove_lookups:
            can_see = None
        else:
            try:
                can_see = shows_witness(self.get_users_by_field("id", [WITNESS_ID]))
                if not can_see:
                    problems.append(BLIND_LOOKUPS)
            except MoodleError as exc:
                if exc.retryable:
                    raise
                category = exc.category
                problems.append(f"look-up of the guest user failed: {exc}")
        return Preflight(
            ok=not problems,
            sitename=info.get("sitename", ""),
            release=info.get("release", ""),
            version=str(info.get("version", "")),
            username=info.get("username", ""),
            userid=userid,
            functions=functions,
            missing_functions=missing,
            can_see_users=can_see,
            problems=problems,
            error_category=category,
        )


def _may_retry(function: str, error: MoodleError) -> bool:
    """Transient failures are retried, except a create whose answer was lost: sent again blind, it would
    be refused as a duplicate of what Moodle already made (or make a second one)."""
    return error.retryable and not (error.ambiguous and function in errors.NOT_IDEMPOTENT)


def cohort_member(cohortid: int, userid: int) -> dict[str, Any]:
    """The shape ``core_cohort_add_cohort_members`` wants for one membership."""
    return {
        "cohorttype": {"type": "id", "value": cohortid},
        "usertype": {"type": "id", "value": userid},
    }


def _item_failures(answer: Any) -> list[ItemFailure]:
    warnings = answer.get("warnings", []) if isinstance(answer, dict) else []
    return [
        ItemFailure(
            itemid=_opt_int(w.get("itemid")),
            warningcode=str(w.get("warningcode", "")),
            message=str(w.get("message", "")),
            item=str(w.get("item", "")),
        )
        for w in warnings
        if isinstance(w, dict)
    ]


def _merge(results: list[Any]) -> Any:
    """Join the answers of a split call: lists concatenate, dicts merge their lists."""
    if len(results) == 1:
        return results[0]
    present = [r for r in results if r is not None]
    if not present:
        return None
    if all(isinstance(r, list) for r in present):
        return [item for r in present for item in r]
    if all(isinstance(r, dict) for r in present):
        merged: dict[str, Any] = {}
        for r in present:
            for key, value in r.items():
                if isinstance(value, list):
                    merged.setdefault(key, []).extend(value)
                else:
                    merged.setdefault(key, value)
        return merged
    return present


def _excerpt(text: str | None) -> str:
    return " ".join((text or "").split())[:EXCERPT_CHARS]


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
