"""The WSGI application: Moodle's REST endpoint plus the ``/_sim/`` control API.

Standard library only, so the same app runs in-process under ``httpx.WSGITransport`` and in the
threaded server of ``simulator.server``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from simulator import control, costs, phpform, xmlout
from simulator.config import SimConfig
from simulator.context import CallContext
from simulator.errors import MoodleError
from simulator.faults import DML_KINDS, HTTP_KINDS, LOST_KINDS, Faults, dml_error, proxy_error_page
from simulator.functions import FUNCTIONS
from simulator.hook import Hook, site_address
from simulator.params import validate
from simulator.state import SimState
from simulator.stats import Stats
from simulator.tokens import authenticate, check_function

__all__ = ["SimConfig", "SimulatorApp", "create_app"]

REST_PATH = "/webservice/rest/server.php"
_RESERVED = ("wstoken", "wsfunction", "moodlewsrestformat")

StartResponse = Callable[..., Any]

CLI_MAINTENANCE_PAGE = (
    b'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Maintenance</title></head>\n'
    b'<body><div style="margin:3em auto;text-align:center"><h1>Site under maintenance</h1>\n'
    b"<p>This site is undergoing maintenance and is currently not available. Please try again later.</p>"
    b"</div></body></html>\n"
)


def _moodle_json(value: Any) -> bytes:
    """json_encode() defaults: non-ASCII as \\uXXXX and "/" escaped."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode()


class SimulatorApp:
    """A simulated Moodle 5.1 site; ``state`` and ``config`` may be changed while it serves."""

    def __init__(self, config: SimConfig, state: SimState, *, state_file: str | None, control: bool) -> None:
        self.config = config
        self.state = state
        self.state_file = state_file
        self.control_enabled = control
        self.stats = Stats()
        self.faults = Faults(config)
        self.revoke_after: dict[str, int] = {}
        self._revoke_lock = threading.Lock()
        # The local_integrationhub plugin: off until POST /_sim/hook (or hook.configure()).
        self.hook = Hook(lambda: self.state)

    # WSGI ---------------------------------------------------------------------------------------

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == REST_PATH:
            status, headers, body = self.rest(environ)
        elif path.startswith("/_sim/") and self.control_enabled:
            status, headers, body = control.handle(self, environ)
        else:
            status, headers, body = "404 Not Found", [("Content-Type", "text/html")], b"<h1>Not found</h1>"
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]

    def save_state(self) -> None:
        """Persist after a write, under the lock so saves never interleave."""
        if self.state_file:
            with self.state.lock:
                self.state.save(self.state_file)

    # The REST endpoint --------------------------------------------------------------------------

    def _read_params(self, environ: dict) -> tuple[dict, int]:
        """$_GET and $_POST, each capped at max_input_vars, POST winning (request_order "GP")."""
        limit = self.config.max_input_vars
        query, dropped_get = phpform.parse(environ.get("QUERY_STRING", ""), limit)
        body = b""
        if environ.get("REQUEST_METHOD") == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
        post, dropped_post = {}, 0
        # PHP fills $_POST from form bodies only; a JSON body leaves it empty.
        if body and environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            post, dropped_post = phpform.parse(body.decode("utf-8", "replace"), limit)
        merged = {**query, **post}
        return merged, dropped_get + dropped_post

    def rest(self, environ: dict) -> tuple[str, list, bytes]:
        cpu_started = time.thread_time()
        params, dropped = self._read_params(environ)
        function = params.get("wsfunction")
        function = function if isinstance(function, str) else ""
        entry = self.stats.enter(function, dropped)
        try:
            return self._rest_call(environ, params, function, entry, cpu_started)
        finally:
            self.stats.leave()

    def _spend(self, entry: list, seconds: float) -> None:
        """Simulated server time, spent outside every lock so concurrent requests really overlap."""
        if seconds > 0:
            self.stats.served(entry, seconds)
            time.sleep(seconds)

    def _spend_calibrated(self, entry: list, cost_ms: float, cpu_started: float) -> None:
        """A calibrated cost is what the call costs in all: the simulator's own work on it (parsing,
        validating, looking through its users) is part of it, not added on top."""
        if cost_ms > 0:
            own_s = time.thread_time() - cpu_started
            self.stats.served(entry, cost_ms / 1000.0)
            time.sleep(max(0.0, cost_ms / 1000.0 - own_s))

    def _rest_call(
        self, environ: dict, params: dict, function: str, entry: list, cpu_started: float
    ) -> tuple[str, list, bytes]:
        self.faults.wait_if_held(function)
        self._spend(entry, self.faults.delay_s())
        fault = self.faults.pick(function)
        if fault in HTTP_KINDS:
            self.stats.injected_error(fault)
            # A PHP fatal error still goes out as HTTP 200, with HTML where JSON was expected.
            status = "200 OK" if fault == "fatal" else f"{fault} {HTTPStatus(int(fault)).phrase}"
            return status, [("Content-Type", "text/html")], proxy_error_page(fault)
        if self.config.maintenance == "cli":
            headers = [("Content-Type", "text/html; charset=utf-8"), ("Retry-After", "300")]
            return "503 Moodle under maintenance", headers, CLI_MAINTENANCE_PAGE
        if not self.config.rest_enabled:
            return "403 Forbidden", [], b""
        fmt = params.get("moodlewsrestformat")
        fmt = fmt if fmt in ("json", "xml") else "xml"
        token = params.get("wstoken")
        try:
            result, args = self._execute(
                environ, params, function, token if isinstance(token, str) else None, fault
            )
        except MoodleError as exc:
            self._spend_calibrated(entry, costs.refused_ms(self.config.profile), cpu_started)
            return self._answer(fmt, error=exc)
        users = len(self.state.users)
        cost = costs.server_ms(self.config.profile, function, args, result, users)
        self._spend_calibrated(entry, cost, cpu_started)
        returned = _users_returned(result)
        if returned and self.config.cost_per_user_ms:
            self._spend(entry, returned * self.config.cost_per_user_ms / 1000.0)
        if fault in LOST_KINDS:
            self.stats.injected_error(fault)
            return "504 Gateway Timeout", [("Content-Type", "text/html")], proxy_error_page("504")
        return self._answer(fmt, result=result)

    def _execute(
        self, environ: dict, params: dict, function: str, token: str | None, fault: str | None
    ) -> tuple[Any, dict]:
        """The function's answer, and the arguments it was called with."""
        debug = self.config.debug
        wrote = False
        events: list[dict] = []
        try:
            with self.state.lock:
                try:
                    row, user = authenticate(
                        self.state, token, environ.get("REMOTE_ADDR", ""), self.config.maintenance, debug
                    )
                except MoodleError as exc:
                    wrote = exc.errorcode == "accessexception" and token not in self.state.tokens
                    raise
                check_function(row, function, debug)
                spec = FUNCTIONS[function]
                args = {
                    k: v
                    for k, v in params.items()
                    if k not in _RESERVED and not k.startswith("moodlewssetting")
                }
                args = validate(spec.params, args, self.config.langs)
                if fault in DML_KINDS:
                    self.stats.injected_error(fault)
                    raise dml_error(fault)
                ctx = CallContext(
                    state=self.state,
                    config=self.config,
                    userid=user["id"],
                    capabilities=frozenset(self.state.user_capabilities.get(user["id"], [])),
                    wwwroot=site_address(environ),
                    token=row,
                    implemented=frozenset(FUNCTIONS),
                )
                result = spec.handler(ctx, args)
                wrote = spec.writes
                events = ctx.events
                return result, args
        finally:
            if token and self._count_revocation(token):
                wrote = True
            if wrote:
                self.save_state()
            # The plugin's observers queue their tasks once the call's changes are done, never inside it.
            self.hook.emit(events, web_service=True)

    def _count_revocation(self, token: str) -> bool:
        """``revoke_after``: delete the token once its remaining calls are used up."""
        with self._revoke_lock:
            if token not in self.revoke_after:
                return False
            self.revoke_after[token] -= 1
            if self.revoke_after[token] > 0:
                return False
            del self.revoke_after[token]
        with self.state.lock:
            self.state.tokens.pop(token, None)
        return True

    def _answer(
        self, fmt: str, *, result: Any = None, error: MoodleError | None = None
    ) -> tuple[str, list, bytes]:
        if fmt == "json":
            body = _moodle_json(error.as_dict(self.config.debug) if error else result)
            return "200 OK", [("Content-Type", "application/json; charset=utf-8")], body
        text = xmlout.error(error, self.config.debug) if error else xmlout.response(result)
        return "200 OK", [("Content-Type", "application/xml; charset=utf-8")], text.encode()


def _users_returned(result: Any) -> int:
    """How many user records a look-up answered with (for the per-user cost)."""
    if isinstance(result, dict) and isinstance(result.get("users"), list):
        return len(result["users"])
    if isinstance(result, list) and result and isinstance(result[0], dict) and "fullname" in result[0]:
        return len(result)
    return 0


def create_app(
    config: SimConfig | None = None, *, state_file: str | None = None, control: bool = True
) -> SimulatorApp:
    """Build the app; with ``state_file``, state is loaded from it if it exists and saved after writes."""
    state = SimState.load(state_file) if state_file and os.path.exists(state_file) else SimState()
    return SimulatorApp(config or SimConfig(), state, state_file=state_file, control=control)
