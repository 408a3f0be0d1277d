"""Work a side-by-side round's request threads need done in the calling thread.

The database is used only from the calling thread (Django's connections are per thread, and a test's
transaction is visible only on its own connection). The write-ahead record of a call must still be written
at the last moment, after the call's throttle slot is granted: a record written earlier, while the request
waits for a slot, is a call that never left if the process dies then. So a request thread asks, and the
calling thread does the work whenever it waits (for a slot of its own, for the round's first wave, for the
answers).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from .errors import NotSent

Job = Callable[[], None]


class HandOff:
    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Job, threading.Event, list[BaseException]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self.owner = threading.get_ident()

    def ask(self, job: Job) -> None:
        """In a request thread: run `job` in the calling thread and wait for it; what it raises is raised
        here. Once the round is over (`close`), nothing is run and NotSent is raised."""
        done = threading.Event()
        raised: list[BaseException] = []
        with self._lock:
            if self._closed:
                raise NotSent("the round is over")
            self._jobs.put((job, done, raised))
        done.wait()
        if raised:
            raise raised[0]

    def serve(self, seconds: float) -> None:
        """In the calling thread: do what is asked for during about `seconds` (the throttle's idle wait)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                job, done, raised = self._jobs.get(timeout=remaining)
            except queue.Empty:
                return
            self._run(job, done, raised)

    def serve_until(self, finished: Callable[[], bool], poll_s: float = 0.01) -> None:
        """In the calling thread: do what is asked for until `finished()` is true."""
        while not finished():
            try:
                job, done, raised = self._jobs.get(timeout=poll_s)
            except queue.Empty:
                continue
            self._run(job, done, raised)

    def close(self) -> None:
        """The round is over: whatever is still asked for is refused, never left waiting."""
        with self._lock:
            self._closed = True
        while True:
            try:
                _, done, raised = self._jobs.get_nowait()
            except queue.Empty:
                return
            raised.append(NotSent("the round is over"))
            done.set()

    @staticmethod
    def _run(job: Job, done: threading.Event, raised: list[BaseException]) -> None:
        try:
            job()
        except BaseException as exc:  # handed back to the thread that asked
            raised.append(exc)
        finally:
            done.set()
