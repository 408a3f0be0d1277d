"""The simulated site as the ``local_integrationhub`` plugin: Moodle's own changes, posted to the hub.

Mirrors ``moodle/local_integrationhub``: an observer only queues a task (``event_task``), after the change
is done; the task runs later (here: one background thread per app) and builds the body from the site as it
is *then* (the user, the course, the enrolment, the completion), signs it and posts it. A change fires
nothing while no hub URL and secret are set. The body is byte for byte what the PHP task sends:
``deliver_event::build_payload()`` and ``encode()`` (compact JSON, keys in the same order, slashes and
non-ASCII unescaped; U+2028 and U+2029 escaped, as PHP's ``json_encode`` does without
``JSON_UNESCAPED_LINE_TERMINATORS``).

The rest of the simulator is standard library only; httpx is imported by the delivery thread alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import string
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from simulator.state import ROLES

if TYPE_CHECKING:
    import httpx

    from simulator.state import SimState

EVENTS = (
    "user_updated",
    "user_deleted",
    "user_enrolment_created",
    "user_enrolment_updated",
    "user_enrolment_deleted",
    "course_completed",
)
ENROLMENT_EVENTS = ("user_enrolment_created", "user_enrolment_updated", "user_enrolment_deleted")

# deliver_event::TIMEOUT and ::CONNECT_TIMEOUT.
TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
# Moodle retries a failed task from 1 minute up to 24 hours apart; the simulator keeps it short: three
# attempts, 0.5 s and 1 s apart, then the delivery is recorded as failed.
RETRY_DELAYS_S = (0.5, 1.0)
MAX_DELIVERIES = 1000  # the log GET /_sim/hook shows keeps the most recent ones
WAIT_TIMEOUT_S = 10.0


def site_address(environ: dict) -> str:
    """The site's address as the request reached it (scheme and host): ``$CFG->wwwroot``."""
    host = (
        environ.get("HTTP_HOST")
        or f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
    )
    return f"{environ.get('wsgi.url_scheme', 'http')}://{host}"


def event_task(eventname: str, userid: int, courseid: int | None = None, **snapshot: str | None) -> dict:
    """The custom data an observer gives the delivery task: the event, its user, its course and its time
    (the event's ``timecreated``); ``user_deleted`` adds the user's idnumber, username and email as they
    were before the row was scrambled."""
    if eventname not in EVENTS:
        raise ValueError(f"unknown event {eventname}")
    return {
        "eventname": eventname,
        "userid": int(userid),
        "courseid": int(courseid) if courseid else None,
        "time": int(time.time()),
        **snapshot,
    }


def deleted_user_task(user: dict) -> dict:
    """``user_deleted`` with the values the hub matches on, taken before Moodle overwrites them."""
    return event_task(
        "user_deleted",
        user["id"],
        idnumber=str(user.get("idnumber") or ""),
        username=str(user.get("username") or ""),
        email=str(user.get("email") or ""),
    )


# deliver_event's pure functions -------------------------------------------------------------------


def event_id(siteidentifier: str, eventname: str, userid: int, courseid: int | None, time_: int) -> str:
    """sha1("<site identifier>|<event>|<user id>|<course id or empty>|<time>")."""
    key = f"{siteidentifier}|{eventname}|{userid}|{'' if courseid is None else courseid}|{time_}"
    return hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()


def sign(body: bytes, timestamp: int, secret: str) -> str:
    """X-Hub-Signature-256: HMAC-SHA256 of "<timestamp>.<body>" with the shared secret."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def encode(payload: dict) -> bytes:
    """json_encode($payload, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE)."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode("utf-8")


def request_headers(eventid: str, timestamp: int, signature: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Hub-Event-Id": eventid,
        "X-Hub-Timestamp": str(timestamp),
        "X-Hub-Signature-256": signature,
    }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def load_user(state: SimState, task: dict) -> dict:
    """From the user table while the user exists and is not deleted, else the task's snapshot (only
    user_deleted has one), else unknown (null)."""
    user = state.users.get(task["userid"])
    if user is not None and not user["deleted"]:
        return {
            "idnumber": str(user["idnumber"]),
            "username": str(user["username"]),
            "email": str(user["email"]),
        }
    return {field: _text(task.get(field)) for field in ("idnumber", "username", "email")}


def load_course(state: SimState, courseid: int | None) -> dict | None:
    if not courseid:
        return None
    course = state.courses.get(courseid)
    if course is None:
        return {"id": courseid, "shortname": None, "idnumber": None}
    return {
        "id": courseid,
        "shortname": str(course["shortname"]),
        "idnumber": str(course.get("idnumber", "")),
    }


def load_enrolment(state: SimState, userid: int, courseid: int) -> dict | None:
    """The user's enrolment in the course as it is now (an active one first, else the oldest), with the
    shortnames of every role the user holds in the course; null when none is left."""
    mine = [e for e in state.enrolments if e["userid"] == userid and e["courseid"] == courseid]
    if not mine:
        return None

    def active(enrolment: dict) -> bool:
        instance = state.enrol_instances.get(enrolment["instanceid"], {"status": 1})
        return enrolment["status"] == 0 and instance["status"] == 0

    chosen = next((e for e in mine if active(e)), None)
    roles = sorted({ROLES[r]["shortname"] for e in mine for r in e["roles"] if r in ROLES})
    return {
        "status": 0 if chosen is not None else 1,
        "timestart": int((chosen or mine[0])["timestart"]),
        "timeend": int((chosen or mine[0])["timeend"]),
        "roles": roles,
    }


def load_completion(state: SimState, userid: int, courseid: int, time_: int) -> dict:
    found = next((c for c in state.completions if c["userid"] == userid and c["courseid"] == courseid), None)
    return {"timecompleted": int(found["timecompleted"]) if found and found["timecompleted"] else time_}


def build_payload(state: SimState, task: dict, siteidentifier: str, wwwroot: str) -> dict:
    """deliver_event::execute() + build_payload(), reading the site now (hold ``state.lock``)."""
    name, userid, courseid, time_ = task["eventname"], task["userid"], task.get("courseid"), task["time"]
    payload: dict[str, Any] = {
        "id": event_id(siteidentifier, name, userid, courseid, time_),
        "event": name,
        "time": time_,
        "site": wwwroot,
        "user": {"id": userid, **load_user(state, task)},
        "course": load_course(state, courseid),
    }
    if name in ENROLMENT_EVENTS:
        payload["enrolment"] = load_enrolment(state, userid, courseid) if courseid else None
    if name == "course_completed":
        payload["completion"] = (
            load_completion(state, userid, courseid, time_) if courseid else {"timecompleted": time_}
        )
    return payload


# The hook -----------------------------------------------------------------------------------------


def _new_siteidentifier(wwwroot: str) -> str:
    """get_site_identifier(): random_string(32) followed by the host."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32)) + (urlsplit(wwwroot).hostname or "")


class Hook:
    """The plugin's settings, its ad-hoc task queue and the deliveries so far.

    ``emit`` queues tasks (only while a URL and a secret are set); one daemon thread, started on the first
    task, delivers them in order. ``wait`` blocks until nothing is queued or in flight."""

    def __init__(self, state_of: Any) -> None:
        """``state_of``: a callable returning the site's current ``SimState``."""
        self._state_of = state_of
        self._cond = threading.Condition()
        self._tasks: deque[dict] = deque()
        self._pending = 0  # queued + in flight
        self._worker: threading.Thread | None = None
        self.url: str | None = None
        self.secret: str | None = None
        self.web_service_events = True
        self.retry_delays: tuple[float, ...] = RETRY_DELAYS_S
        self.wwwroot = ""
        self.siteidentifier = ""
        self.transport: httpx.BaseTransport | None = None
        self.deliveries: deque[dict] = deque(maxlen=MAX_DELIVERIES)

    @property
    def configured(self) -> bool:
        """observer::is_configured(): a hub URL and a secret."""
        return bool(self.url and self.secret)

    def configure(
        self,
        url: str,
        secret: str,
        *,
        web_service_events: bool = True,
        wwwroot: str | None = None,
        siteidentifier: str | None = None,
        retry_delays: list[float] | tuple[float, ...] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Set the hub URL and the secret. ``transport`` (Python only) posts through an httpx transport
        instead of the network, e.g. ``httpx.WSGITransport`` to an in-process hub."""
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("url must be an http:// or https:// address")
        if not isinstance(secret, str) or not secret:
            raise ValueError("secret must be a non-empty string")
        delays = RETRY_DELAYS_S if retry_delays is None else tuple(float(d) for d in retry_delays)
        if any(d < 0 or d > 60 for d in delays) or len(delays) > 10:
            raise ValueError("retry_delays: at most 10 delays, each between 0 and 60 seconds")
        with self._cond:
            self.url, self.secret = url, secret
            self.web_service_events = bool(web_service_events)
            self.retry_delays = delays
            self.transport = transport
            self.wwwroot = wwwroot or self.wwwroot or "http://localhost"
            self.siteidentifier = siteidentifier or self.siteidentifier or _new_siteidentifier(self.wwwroot)

    def disable(self) -> None:
        """No URL, no secret: changes queue nothing, and queued tasks end without sending."""
        with self._cond:
            self.url = self.secret = None
            self.transport = None

    def emit(self, tasks: list[dict], *, web_service: bool = False) -> int:
        """Queue one delivery per task (after the change is done); returns how many were queued."""
        with self._cond:
            if not tasks or not self.configured or (web_service and not self.web_service_events):
                return 0
            self._tasks.extend(tasks)
            self._pending += len(tasks)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="moodle-simulator-hook", daemon=True)
                self._worker.start()
            self._cond.notify_all()
            return len(tasks)

    def wait(self, timeout: float = WAIT_TIMEOUT_S) -> bool:
        """Block until nothing is queued or in flight; False when ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    @property
    def pending(self) -> int:
        with self._cond:
            return self._pending

    def describe(self) -> dict:
        """What GET /_sim/hook shows: never the secret."""
        with self._cond:
            return {
                "url": self.url,
                "secret_set": bool(self.secret),
                "web_service_events": self.web_service_events,
                "retry_delays": list(self.retry_delays),
                "wwwroot": self.wwwroot or None,
                "siteidentifier": self.siteidentifier or None,
                "pending": self._pending,
                "deliveries": [dict(d) for d in self.deliveries],
            }

    # The delivery thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._tasks))
                task = self._tasks.popleft()
            try:
                self._deliver(task)
            except Exception as exc:  # a bug must not stop the queue: record it and go on
                self._record(task, None, status=None, error=f"{type(exc).__name__}: {exc}", attempts=0)
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

    def _deliver(self, task: dict) -> None:
        import httpx  # only the delivery thread needs it: the rest stays standard library only

        attempts = 0
        eventid: str | None = None
        status: int | None = None
        error = ""
        excerpt = ""
        while True:
            with self._cond:
                if not self.configured:
                    return  # deliver_event::execute(): not configured, nothing sent
                url, secret, transport = self.url, self.secret, self.transport
                wwwroot, siteidentifier, delays = self.wwwroot, self.siteidentifier, self.retry_delays
            state = self._state_of()
            with state.lock:
                payload = build_payload(state, task, siteidentifier, wwwroot)
            body = encode(payload)
            eventid = payload["id"]
            timestamp = int(time.time())
            headers = request_headers(eventid, timestamp, sign(body, timestamp, secret))
            attempts += 1
            status, error, excerpt = self._post(httpx, url, body, headers, transport)
            if status is not None and 200 <= status <= 299:
                self._record(task, eventid, status=status, error=None, attempts=attempts)
                return
            if attempts > len(delays):
                break
            time.sleep(delays[attempts - 1])
        self._record(task, eventid, status=status, error=error, attempts=attempts, response=excerpt)

    @staticmethod
    def _post(
        httpx: Any, url: str, body: bytes, headers: dict, transport: Any
    ) -> tuple[int | None, str, str]:
        """One attempt: (HTTP status or None, error, start of the answer). No redirect is followed; the
        whole attempt may take 10 s (5 s to connect)."""
        timeout = httpx.Timeout(TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        deadline = time.monotonic() + TIMEOUT_S
        try:
            with (
                httpx.Client(timeout=timeout, transport=transport, follow_redirects=False) as client,
                client.stream("POST", url, content=body, headers=headers) as response,
            ):
                answer = b""
                for chunk in response.iter_bytes():
                    if time.monotonic() > deadline:
                        return None, f"timed out after {TIMEOUT_S:g} s", ""
                    if len(answer) < 1000:
                        answer += chunk
                status = response.status_code
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}", ""
        excerpt = answer.decode("utf-8", "replace").strip()[:200]
        return status, "" if 200 <= status <= 299 else f"HTTP {status}", excerpt

    def _record(
        self,
        task: dict,
        eventid: str | None,
        *,
        status: int | None,
        error: str | None,
        attempts: int,
        response: str = "",
    ) -> None:
        entry = {
            "event": task["eventname"],
            "id": eventid,
            "userid": task["userid"],
            "courseid": task.get("courseid"),
            "delivered": error is None,
            "status": status,
            "error": error,
            "attempts": attempts,
            "time": round(time.time(), 3),
        }
        if response:
            entry["response"] = response
        with self._cond:
            self.deliveries.append(entry)
