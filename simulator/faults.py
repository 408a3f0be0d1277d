"""Load and failure: latency, the degrading mode and injected transient errors.

A real Moodle under load gets slower for 30-60 s before it starts failing; the degrading mode
reproduces that ramp so a breaker can be tested on latency, not only on errors.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from simulator.errors import MoodleError, dml_write

if TYPE_CHECKING:
    from simulator.app import SimConfig

HTTP_KINDS = ("502", "503", "504", "fatal")
DML_KINDS = ("lockwait", "deadlock", "constraint")
# Moodle does the call in full, then the proxy in front of it gives up waiting: the caller sees a 504 for a
# call that took effect (an answer lost on the way back).
LOST_KINDS = ("lost",)

_HTTP_TITLES = {
    "502": "502 Bad Gateway",
    "503": "503 Service Temporarily Unavailable",
    "504": "504 Gateway Time-out",
}
_DML = {
    "lockwait": (
        "Lock wait timeout exceeded; try restarting transaction",
        "UPDATE mdl_user SET timemodified = ? WHERE id = ?",
    ),
    "deadlock": (
        "Deadlock found when trying to get lock; try restarting transaction",
        "INSERT INTO mdl_user_enrolments (status,enrolid,userid) VALUES(?,?,?)",
    ),
    "constraint": (
        "Duplicate entry 'sim-1' for key 'mdl_user_mneuse_uix'",
        "INSERT INTO mdl_user (username,mnethostid) VALUES(?,?)",
    ),
}


def proxy_error_page(kind: str) -> bytes:
    """The HTML a reverse proxy sends when PHP is overloaded or gone (or PHP's own fatal error)."""
    if kind == "fatal":
        return (
            b"<br />\n<b>Fatal error</b>:  Allowed memory size of 134217728 bytes exhausted "
            b"(tried to allocate 20480 bytes) in <b>/var/www/moodle/lib/dml/moodle_database.php</b> "
            b"on line <b>1234</b><br />\n"
        )
    title = _HTTP_TITLES[kind]
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


def dml_error(kind: str) -> MoodleError:
    error, sql = _DML[kind]
    return dml_write(error, sql)


class Faults:
    """Decides each call's extra delay and whether it fails; keeps the degrading clock."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)  # noqa: S311 - simulation, not security
        self._queue: deque[tuple[str, str | None]] = deque()
        self.degrade_started_at: float | None = time.time() if config.degrade else None
        self._holds: dict[str, threading.Event] = {}

    def hold(self, function: str) -> None:
        """Keep calls to ``function`` at the site until released: a deterministic "call in flight"."""
        with self._lock:
            self._holds.setdefault(function, threading.Event())

    def release(self, function: str | None = None) -> None:
        with self._lock:
            names = list(self._holds) if function is None else [function]
            for name in names:
                gate = self._holds.pop(name, None)
                if gate is not None:
                    gate.set()

    def wait_if_held(self, function: str, limit_s: float = 60.0) -> None:
        with self._lock:
            gate = self._holds.get(function)
        if gate is not None:
            gate.wait(limit_s)  # a test that forgets to release must not hang the server for ever

    def degrade_changed(self) -> None:
        """Restart the ramp whenever ``degrade`` is set; forget it when it is cleared."""
        self.degrade_started_at = time.time() if self.config.degrade else None

    def reseed(self) -> None:
        with self._lock:
            self._rng = random.Random(self.config.seed)  # noqa: S311

    def inject(self, kinds: list[str], function: str | None = None) -> None:
        """Queue errors for the next matching calls, in order (deterministic tests)."""
        with self._lock:
            for kind in kinds:
                if kind not in HTTP_KINDS + DML_KINDS + LOST_KINDS:
                    raise ValueError(f"unknown error kind {kind!r}")
                self._queue.append((kind, function))

    def delay_s(self) -> float:
        cfg = self.config
        with self._lock:
            jitter = self._rng.uniform(0, cfg.jitter_ms) if cfg.jitter_ms else 0.0
        extra = 0.0
        degrade, started = cfg.degrade, self.degrade_started_at
        if degrade and started is not None:
            ramp = float(degrade.get("ramp_s", 20.0)) or 1e-9
            elapsed = time.time() - started
            extra = float(degrade.get("max_extra_ms", 3000)) * min(1.0, elapsed / ramp)
        return max(0.0, cfg.latency_ms + jitter + extra) / 1000.0

    def pick(self, function: str) -> str | None:
        """The error kind this call gets, if any: queued first, then degrading mode, then the rate."""
        cfg = self.config
        with self._lock:
            for index, (kind, only) in enumerate(self._queue):
                if only is None or only == function:
                    del self._queue[index]
                    return kind
            degrade, started = cfg.degrade, self.degrade_started_at
            failing = (
                degrade is not None
                and started is not None
                and time.time() - started >= float(degrade.get("errors_after_s", 30.0))
            )
            if failing and self._rng.random() < float(degrade.get("error_rate", 0.5)):
                return "503"
            if cfg.error_rate and cfg.error_kinds and self._rng.random() < cfg.error_rate:
                return self._rng.choice(list(cfg.error_kinds))
        return None
