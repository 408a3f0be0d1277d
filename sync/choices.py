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


class SourceKind(models.TextChoices):
    CSV = "csv", "CSV file"
    HTTP = "http", "HTTP JSON API"
    SQL = "sql", "SQL table or query"


class RemovedPolicy(models.TextChoices):
    """What happens to a Moodle user whose person left the source (auth_db's "removed ext user")."""

    KEEP = "keep", "Keep the Moodle user as it is"
    SUSPEND = "suspend", "Suspend the Moodle user"


class PendingAction(models.TextChoices):
    UPSERT = "upsert", "Create or update"
    SUSPEND = "suspend", "Suspend (left the source)"


class ConflictKind(models.TextChoices):
    USERNAME_TAKEN = "username_taken", "Username held by another Moodle user"
    EMAIL_TAKEN = "email_taken", "Email held by another Moodle user"
    DUPLICATE_MATCH = "duplicate_match", "Several Moodle users match"
    LINKED_USER_GONE = "linked_user_gone", "Linked Moodle user deleted or missing"


class ConflictStatus(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"
    IGNORED = "ignored", "Ignored"


class DeadLetterStatus(models.TextChoices):
    OPEN = "open", "Open"
    RETRYING = "retrying", "Retry queued"
    RESOLVED = "resolved", "Resolved by a retry"
    DISCARDED = "discarded", "Discarded"


class RunControl(models.TextChoices):
    """What an operator asked a running run to do at its next batch boundary."""

    NONE = "", "—"
    PAUSE = "pause", "Pause"
    CANCEL = "cancel", "Cancel"
