"""The sync domain's records: Moodle sites, their tokens, per-person sync state and sync runs."""

from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from . import crypto
from .choices import ErrorCategory, RunKind, RunStatus, RunTrigger, SyncStatus, TokenStatus


class MoodleSite(models.Model):
    """A Moodle instance the hub keeps in step, with the limits that keep it gentle on that instance.

    The defaults are the seed guide's starting point for a site nobody has measured yet: two concurrent
    calls, 150 ms between call starts, 90 calls a minute, batches of 200 people, and PHP's common
    max_input_vars of 5000 (Moodle's minimum).
    """

    slug = models.SlugField(unique=True, help_text="Short name used in commands and URLs.")
    name = models.CharField(max_length=200)
    base_url = models.URLField(help_text="The Moodle site's root, e.g. https://moodle.example.edu")
    enabled = models.BooleanField(default=True, help_text="Disabled sites get no scheduled runs.")
    time_zone = models.CharField(max_length=64, default="UTC", help_text="Times on the pages and schedules.")
    max_concurrent_calls = models.PositiveSmallIntegerField(
        default=2, validators=[MinValueValidator(1), MaxValueValidator(16)]
    )
    min_spacing_ms = models.PositiveIntegerField(
        default=150, help_text="Minimum time between the starts of two calls to this site."
    )
    calls_per_minute = models.PositiveIntegerField(default=90, validators=[MinValueValidator(1)])
    batch_size = models.PositiveIntegerField(
        default=200, validators=[MinValueValidator(1), MaxValueValidator(1000)]
    )
    max_input_vars = models.PositiveIntegerField(
        default=5000,
        validators=[MinValueValidator(100)],
        help_text="PHP's max_input_vars on the Moodle server.",
    )
    run_time_budget = models.DurationField(
        default=timedelta(hours=4), help_text="A run still going after this long fails and raises an alert."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def active_token(self) -> "ServiceToken | None":
        return self.tokens.filter(status=TokenStatus.ACTIVE).first()


class ServiceToken(models.Model):
    """A Moodle web-service token, encrypted at rest.

    The plaintext is readable only through reveal(), which the client factory calls; pages show the
    last four characters. One token per site is active; a verified standby allows rotation without
    downtime.
    """

    site = models.ForeignKey(MoodleSite, on_delete=models.CASCADE, related_name="tokens")
    label = models.CharField(max_length=100)
    token_encrypted = models.TextField(editable=False)
    last4 = models.CharField(max_length=4, editable=False)
    service_shortname = models.CharField(max_length=100, blank=True)
    valid_until = models.DateTimeField(
        null=True, blank=True, help_text="As set in Moodle; empty = no expiry."
    )
    ip_restriction = models.CharField(
        max_length=500, blank=True, help_text="As set in Moodle, for reference."
    )
    status = models.CharField(max_length=10, choices=TokenStatus.choices, default=TokenStatus.STANDBY)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["site", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["site"], condition=models.Q(status="active"), name="one_active_token_per_site"
            )
        ]
        permissions = [("manage_tokens", "Can add, verify, promote and revoke service tokens")]

    def __str__(self) -> str:
        return f"{self.label} (…{self.last4})"

    def __repr__(self) -> str:
        return f"<ServiceToken {self.pk} {self.site_id} …{self.last4} {self.status}>"

    @property
    def masked(self) -> str:
        return f"…{self.last4}"

    def set_token(self, plaintext: str) -> None:
        plaintext = plaintext.strip()
        if not plaintext:
            raise ValueError("the token is empty")
        self.token_encrypted = crypto.encrypt(plaintext)
        self.last4 = plaintext[-4:]

    def reveal(self) -> str:
        """The plaintext token, for the Moodle client only. Never render, log or put it in a URL."""
        return crypto.decrypt(self.token_encrypted)

    def days_left(self, now=None) -> int | None:
        if self.valid_until is None:
            return None
        return (self.valid_until - (now or timezone.now())).days


class SyncRecord(models.Model):
    """The hub's memory of one source person on one site: what was last sent, and how it went.

    The hash of the last synced payload is what makes incremental runs cheap: only records whose hash
    changed go to Moodle (Moodle's own timemodified misses too many changes to serve as a cursor).
    """

    site = models.ForeignKey(MoodleSite, on_delete=models.CASCADE, related_name="records")
    external_id = models.CharField(max_length=255)
    moodle_id = models.BigIntegerField(null=True, blank=True)
    external_hash = models.CharField(max_length=64, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    sync_status = models.CharField(max_length=10, choices=SyncStatus.choices, default=SyncStatus.PENDING)
    error_category = models.CharField(max_length=20, choices=ErrorCategory.choices, blank=True)
    error_message = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["site", "external_id"], name="unique_record_per_site"),
        ]
        indexes = [
            models.Index(fields=["site", "sync_status"], name="record_site_status"),
            models.Index(fields=["site", "moodle_id"], name="record_site_moodle_id"),
        ]

    def __str__(self) -> str:
        return f"{self.site.slug}:{self.external_id}"


class SyncRun(models.Model):
    """One run of the sync engine (or a reconciliation, a resolution, a retry) on one site.

    Pages read these rows, not Celery's results: they carry the status, the counters and the reason a
    run stopped. `started_at` is set when work begins and `finished_at` when it ends, so "last
    successful sync" never means "last started".
    """

    site = models.ForeignKey(MoodleSite, on_delete=models.CASCADE, related_name="runs")
    kind = models.CharField(max_length=12, choices=RunKind.choices)
    trigger = models.CharField(max_length=10, choices=RunTrigger.choices, default=RunTrigger.MANUAL)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    seen = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    suspended = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    conflicts = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    dead_lettered = models.PositiveIntegerField(default=0)
    calls = models.PositiveIntegerField(default=0, help_text="Moodle calls made, retries included.")
    progress_total = models.PositiveIntegerField(default=0)
    progress_done = models.PositiveIntegerField(default=0)
    abort_reason = models.TextField(blank=True)

    COUNTERS = (
        "seen", "changed", "created", "updated", "suspended", "unchanged", "skipped",
        "conflicts", "errors", "dead_lettered", "calls",
    )  # fmt: skip

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["site", "-created_at"], name="run_site_created"),
            models.Index(fields=["status", "-created_at"], name="run_status_created"),
            models.Index(fields=["kind", "-created_at"], name="run_kind_created"),
        ]
        permissions = [("operate_runs", "Can start, pause, resume and cancel runs")]

    def __str__(self) -> str:
        return f"Run #{self.pk} {self.kind} on {self.site.slug}"

    @property
    def is_active(self) -> bool:
        return self.status in RunStatus.active()

    @property
    def progress_percent(self) -> int:
        if not self.progress_total:
            return 100 if self.status == RunStatus.SUCCEEDED else 0
        return min(100, round(100 * self.progress_done / self.progress_total))

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    def start(self) -> bool:
        """Claim a queued (or paused) run for work. False when another worker already has it or it ended:
        the conditional update is what makes a redelivered task harmless."""
        now = timezone.now()
        claimed = SyncRun.objects.filter(pk=self.pk, status__in=[RunStatus.QUEUED, RunStatus.PAUSED]).update(
            status=RunStatus.RUNNING, started_at=models.functions.Coalesce("started_at", now)
        )
        if claimed:
            self.refresh_from_db(fields=["status", "started_at"])
        return bool(claimed)

    def finish(self, status: str, reason: str = "") -> None:
        if status not in RunStatus.terminal() and status != RunStatus.PAUSED:
            raise ValueError(f"{status} is not a status a run finishes with")
        self.status = status
        self.abort_reason = reason or self.abort_reason
        self.finished_at = None if status == RunStatus.PAUSED else timezone.now()
        self.save(update_fields=["status", "abort_reason", "finished_at"])
