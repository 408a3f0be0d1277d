"""Status and kind values for the sync domain, with their named groups."""

from django.db import models


class TokenStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    STANDBY = "standby", "Standby"
    REVOKED = "revoked", "Revoked"


class SyncStatus(models.TextChoices):
    OK = "ok", "OK"
    PENDING = "pending", "Pending"
    ERROR = "error", "Error"
    CONFLICT = "conflict", "Conflict"


class RunKind(models.TextChoices):
    BOOTSTRAP = "bootstrap", "Bootstrap"
    INCREMENTAL = "incremental", "Incremental"
    RECONCILE = "reconcile", "Reconcile"
    RESOLUTION = "resolution", "Resolution"
    RETRY = "retry", "Retry"


class RunTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual"
    EVENT = "event", "Event"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    ABORTED = "aborted", "Aborted"
    SKIPPED = "skipped", "Skipped"

    @classmethod
    def active(cls) -> tuple[str, ...]:
        """A run in one of these may still do work."""
        return (cls.QUEUED, cls.RUNNING, cls.PAUSED)

    @classmethod
    def terminal(cls) -> tuple[str, ...]:
        return (cls.SUCCEEDED, cls.FAILED, cls.ABORTED, cls.SKIPPED)


class ErrorCategory(models.TextChoices):
    """The client's classification of a failed Moodle call (sync.moodle.errors)."""

    TRANSIENT = "transient", "Transient"
    MAINTENANCE = "maintenance", "Maintenance"
    AUTH = "auth", "Authorization"
    CONFIG = "config", "Configuration"
    CONFLICT = "conflict", "Conflict"
    CLIENT_FAULT = "client_fault", "Client fault"
    VALIDATION = "validation", "Validation (not sent)"
