"""The seam between a run and the phases that ride on it (reconciliation, applying resolutions).

A phase receives the executor as a `RunContext` and uses only what is declared here: check for an
operator's pause or cancel, wait patiently through the breaker and maintenance, record an event, send a
batch of records through Moodle and commit it, read the source and its mapping, hand an interruption back
to the run. The executor (sync.run.engine) implements it; a phase never reaches into the executor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..mapping import Mapping
    from ..models import MoodleSite, SyncRecord, SyncRun
    from ..moodle.client import MoodleClient
    from ..sources.base import Source
    from .batch import BatchProcessor, Result
    from .locks import RunLock


class RunStopped(Exception):
    """Ends the run with `status` and `reason`; `category` says what stopped it (auth, config)."""

    def __init__(self, status: str, reason: str, category: str = "") -> None:
        self.status = status
        self.reason = reason
        self.category = category
        super().__init__(reason)


class RunContext(Protocol):
    """What a phase may ask of the run it rides on."""

    run: SyncRun
    site: MoodleSite
    lock: RunLock | None

    def check_control(self) -> None:
        """Raise RunStopped when an operator paused or cancelled the run, or its time budget is spent."""

    def wait(self, seconds: float, why: str) -> None:
        """Wait inside the run (keeping its lock), checking for pause, cancel and the budget."""

    def handle_interruption(self, cause: Exception) -> None:
        """Wait out what passes (breaker, maintenance, a failing look-up); stop the run for what does not."""

    def patiently(self, call: Callable[[], Any]) -> Any:
        """A read-only call that waits out the breaker and maintenance."""

    def event(self, message: str, level: str = ..., link: str = "", link_label: str = "") -> None:
        """A line in the run's timeline, with an optional link to where to act."""

    def run_batch(self, processor: BatchProcessor, batch: list[SyncRecord]) -> dict[str, Result]:
        """One batch of records through Moodle and committed; the results by external id."""

    def batch_processor(self, client: MoodleClient, *, dry_run: bool = False) -> BatchProcessor:
        """The processor a phase sends records through: it lasts the run."""

    def work(self, client: MoodleClient) -> None:
        """Send the site's pending records until none is left."""

    def fence(self) -> None:
        """Raise LockLost unless this worker may still write for the run (inside the writing transaction)."""

    def count_calls(self) -> None:
        """Bring the run's call counter up to date."""

    def source_and_mapping(self) -> tuple[Source, Mapping]:
        """The run's source (or its uploaded file) and the site's mapping."""
