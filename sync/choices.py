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
    EVENT = "event", "Event"


class RunTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual"
    EVENT = "event", "Event"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    SUCCEEDED = "succeeded", "Succeeded"
    # Finished, but left work behind: dead letters, records in error, conflicts, or changes the
    # blast-radius guard held back. Never a clean sync.
    PROBLEMS = "problems", "Finished with problems"
    FAILED = "failed", "Failed"
    ABORTED = "aborted", "Aborted"
    CANCELLED = "cancelled", "Cancelled"
    SKIPPED = "skipped", "Skipped"

    @classmethod
    def active(cls) -> tuple[str, ...]:
        """A run in one of these may still do work."""
        return (cls.QUEUED, cls.RUNNING, cls.PAUSED)

    @classmethod
    def terminal(cls) -> tuple[str, ...]:
        return (cls.SUCCEEDED, cls.PROBLEMS, cls.FAILED, cls.ABORTED, cls.CANCELLED, cls.SKIPPED)

    @classmethod
    def finished(cls) -> tuple[str, ...]:
        """Ended after doing its work: what a site's state judges (a cancel or a skip says nothing of it)."""
        return (cls.SUCCEEDED, cls.PROBLEMS, cls.FAILED, cls.ABORTED)


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


class DiscrepancyKind(models.TextChoices):
    MISSING_IN_MOODLE = "missing_in_moodle", "Missing in Moodle"
    ORPHAN_IN_MOODLE = "orphan_in_moodle", "Orphan in Moodle"
    # A sync found people gone from the source but the blast-radius guard held their suspension back.
    LEFT_SOURCE = "left_source", "Left the source"
    FIELD_DRIFT = "field_drift", "Field drift"
    SUSPENDED_MISMATCH = "suspended_mismatch", "Suspended mismatch"
    IDENTITY_MISMATCH = "identity_mismatch", "Identity mismatch"
    DUPLICATE_MATCH = "duplicate_match", "Duplicate match"
    # Memberships (course enrolments and cohort members) of people the hub links.
    MEMBERSHIP_MISSING = "membership_missing", "Membership missing in Moodle"
    MEMBERSHIP_EXTRA = "membership_extra", "Membership not in the source"
    MEMBERSHIP_ROLE = "membership_role", "Wrong role in a course"
    MEMBERSHIP_SUSPENDED = "membership_suspended", "Enrolment suspended mismatch"
    # A sync found people gone from a course or cohort, but the guard held the change back.
    MEMBERSHIP_LEFT = "membership_left", "Left a course or cohort"


# What the reconciliation applies without asking, by default: changes towards the source that neither
# suspend, delete nor re-link anyone.
DEFAULT_AUTO_APPLY = [
    DiscrepancyKind.FIELD_DRIFT.value,
    DiscrepancyKind.MISSING_IN_MOODLE.value,
    DiscrepancyKind.SUSPENDED_MISMATCH.value,
    DiscrepancyKind.MEMBERSHIP_MISSING.value,
    DiscrepancyKind.MEMBERSHIP_ROLE.value,
    DiscrepancyKind.MEMBERSHIP_SUSPENDED.value,  # only re-activations: a suspension always waits
]


class DiscrepancyStatus(models.TextChoices):
    OPEN = "open", "Waiting for approval"
    AUTO = "auto", "Applying automatically"
    APPROVED = "approved", "Approved, queued"
    APPLYING = "applying", "Applying"
    APPLIED = "applied", "Applied"
    REJECTED = "rejected", "Rejected"
    FAILED = "failed", "Failed"
    BLOCKED = "blocked", "Blocked by the blast-radius guard"
    SUPERSEDED = "superseded", "Superseded by a later reconciliation"

    @classmethod
    def waiting(cls) -> tuple[str, ...]:
        """Still waiting for a person's decision."""
        return (cls.OPEN, cls.BLOCKED)

    @classmethod
    def in_flight(cls) -> tuple[str, ...]:
        """Decided, not applied yet."""
        return (cls.APPROVED, cls.APPLYING)


class ResolutionAction(models.TextChoices):
    CREATE = "create", "Create the Moodle user"
    UPDATE = "update", "Update Moodle (source wins)"
    SUSPEND = "suspend", "Suspend the Moodle user"
    UNSUSPEND = "unsuspend", "Unsuspend the Moodle user"
    RELINK = "relink", "Re-link to another Moodle user"
    CHOOSE = "choose", "Link one of the matching Moodle users"
    LINK = "link", "Link to the existing Moodle user"
    RENAME = "rename", "Create with another username"
    IGNORE = "ignore", "Ignore"
    ENROL = "enrol", "Enrol (or re-activate) in the course"
    SUSPEND_ENROLMENT = "suspend_enrol", "Suspend the enrolment"
    UNENROL = "unenrol", "Unenrol from the course"
    COHORT_ADD = "cohort_add", "Add to the cohort"
    COHORT_REMOVE = "cohort_remove", "Remove from the cohort"

    @classmethod
    def destructive(cls) -> frozenset[str]:
        """Actions that take access away from someone or move an account to another person: counted by the
        blast-radius guard and never approved in bulk together with safe ones."""
        return frozenset({cls.SUSPEND, cls.RELINK, cls.CHOOSE, *cls.membership_removals()})

    @classmethod
    def membership_removals(cls) -> frozenset[str]:
        """Destructive actions on one course or cohort: the guard counts them per course or cohort."""
        return frozenset({cls.SUSPEND_ENROLMENT, cls.UNENROL, cls.COHORT_REMOVE})

    @classmethod
    def membership(cls) -> frozenset[str]:
        return frozenset({cls.ENROL, cls.COHORT_ADD, *cls.membership_removals()})


class ResolutionStatus(models.TextChoices):
    PROPOSED = "proposed", "Proposed"
    APPROVED = "approved", "Approved, queued"
    APPLYING = "applying", "Applying"
    REJECTED = "rejected", "Rejected"
    APPLIED = "applied", "Applied"
    FAILED = "failed", "Failed"

    @classmethod
    def in_flight(cls) -> tuple[str, ...]:
        """Proposed or decided, not finished: a second proposal for the same thing must wait."""
        return (cls.PROPOSED, cls.APPROVED, cls.APPLYING)


class OverrideStatus(models.TextChoices):
    """A request to go past the blast-radius guard, decided by a second admin under four-eyes."""

    PENDING = "pending", "Waiting for a second admin"
    CONFIRMED = "confirmed", "Confirmed"
    REJECTED = "rejected", "Rejected"


class MembershipKind(models.TextChoices):
    COURSE = "course", "Course"
    COHORT = "cohort", "Cohort"


class MembershipState(models.TextChoices):
    """Where a person stands in a course or cohort: what the source wants, and what Moodle has."""

    NONE = "", "Not in it"
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Enrolment suspended"
    REMOVED = "removed", "Removed"


class MembershipStatus(models.TextChoices):
    OK = "ok", "In step"
    PENDING = "pending", "Pending"
    ERROR = "error", "Error"
    HELD = "held", "Held back by the guard"
    WAITING = "waiting", "Waiting for the person's account"


class LeavePolicy(models.TextChoices):
    """What leaving a course does. Unenrolling deletes the person's grades and completion in the course,
    so the run only ever suspends; with UNENROL an admin is asked to approve the unenrolment after."""

    SUSPEND = "suspend", "Suspend the enrolment"
    UNENROL = "unenrol", "Suspend, then propose unenrolment for approval"


class HookDirection(models.TextChoices):
    """Who calls a webhook: the source system with changed people, or Moodle's plugin with its own changes."""

    SOURCE = "source", "Source → hub"
    MOODLE = "moodle", "Moodle → hub"


class HookSecretStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    RETIRING = "retiring", "Retiring (accepted until its end)"
    REVOKED = "revoked", "Revoked"


class EventStatus(models.TextChoices):
    """What became of one webhook request."""

    ACCEPTED = "accepted", "Accepted, waiting for its run"
    APPLIED = "applied", "Applied"
    FAILED = "failed", "Not applied (see its run)"
    DUPLICATE = "duplicate", "Redelivery (already received)"
    REFUSED = "refused", "Refused"
