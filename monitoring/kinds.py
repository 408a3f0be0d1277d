"""What kinds of alert the hub raises, with their labels and the keys that identify each problem.

A key names one problem (`auth:north`), so the engine, the probe and the alert rule that all see a refused
token raise one alert between them. Build keys here, never by hand.
"""

from django.db import models


class AlertKind(models.TextChoices):
    AUTH_FAILURE = "auth_failure", "Token refused"
    CONFIG = "config", "Service not set up"
    BLAST_RADIUS = "blast_radius", "Removals held back"
    GUARD_OVERRIDE = "guard_override", "Guard overridden"
    RUN_BUDGET = "run_budget", "Run over budget"
    STUCK_RUN = "stuck_run", "Stuck run"
    TRANSIENT_RATE = "transient_rate", "Transient errors"
    TOKEN_EXPIRY = "token_expiry", "Token expiry"
    BREAKER_OPEN = "breaker_open", "Breaker open"
    SITE_UNAVAILABLE = "site_unavailable", "Moodle unreachable"
    STALE_LOCK = "stale_lock", "Stale lock"
    SCHEDULE_MISSED = "schedule_missed", "Schedule missed"
    SCHEDULE_LATE = "schedule_late", "Schedule late"
    SCHEDULER_SILENT = "scheduler_silent", "Scheduler silent"
    WORKER_SILENT = "worker_silent", "No worker"
    TEST = "test", "Test notice"


def auth_key(slug: str) -> str:
    """Moodle refused the site's token: raised by the engine, the probe and the rule alike."""
    return f"auth:{slug}"


def config_key(slug: str) -> str:
    """A run found the Moodle service set up wrong (missing functions, blind look-ups)."""
    return f"config:{slug}"


def missing_function_key(slug: str) -> str:
    """The probe found functions the hub needs missing from the token's service."""
    return f"missing_function:{slug}"


def blast_radius_key(slug: str) -> str:
    return f"blast_radius:{slug}"


def guard_override_key(override_id: int) -> str:
    return f"guard_override:{override_id}"


def site_unavailable_key(slug: str) -> str:
    return f"site_unavailable:{slug}"
