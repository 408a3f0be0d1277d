"""Counts in words for messages, alert titles and run events: "1 user", "3 users", never "1 users"."""

from __future__ import annotations


def counted(n: int, singular: str, plural: str | None = None, *, grouped: bool = False) -> str:
    """`n` with the noun that agrees with it; `plural` defaults to `singular` + "s". `grouped` writes
    thousands with commas (1,234), as the blast-radius messages do."""
    number = f"{n:,}" if grouped else str(n)
    return f"{number} {singular if n == 1 else (plural or singular + 's')}"


# What each membership counter of a run (a SyncRun field) counts, one and many. A person may
# have many memberships, so these count memberships, never people.
MEMBERSHIP_COUNTER_WORDS = {
    "enrolled": ("enrolment made, changed or re-activated", "enrolments made, changed or re-activated"),
    "enrolments_suspended": ("enrolment suspended", "enrolments suspended"),
    "cohort_added": ("cohort membership added", "cohort memberships added"),
    "cohort_removed": ("cohort membership removed", "cohort memberships removed"),
    "membership_errors": ("membership in error", "memberships in error"),
    "memberships_held": (
        "membership change held back by the guard",
        "membership changes held back by the guard",
    ),
}


def membership_counts(run) -> list[tuple[str, int, str]]:
    """A run's membership counters as (counter, value, "3 enrolments suspended"), in the pages' order."""
    return [
        (name, getattr(run, name), counted(getattr(run, name), *words))
        for name, words in MEMBERSHIP_COUNTER_WORDS.items()
    ]
