"""Records of the hub's own health."""

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from .kinds import AlertKind


class Heartbeat(models.Model):
    """When a piece of the hub last *finished* its periodic work (a dead-man switch).

    Written at the end of the work, never at the start: a process that starts and then hangs must look
    silent. The scheduler's row is written by a task that beat sends every minute and a worker runs, so
    a fresh row proves both beat and at least one worker are alive.
    """

    SCHEDULER = "scheduler"

    name = models.CharField(max_length=50, unique=True)
    last_finished_at = models.DateTimeField()
    detail = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.last_finished_at:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def record(cls, name: str, detail: str = "") -> "Heartbeat":
        beat, _ = cls.objects.update_or_create(
            name=name, defaults={"last_finished_at": timezone.now(), "detail": detail[:200]}
        )
        return beat

    def age_seconds(self, now=None) -> float:
        return ((now or timezone.now()) - self.last_finished_at).total_seconds()


class CallLog(models.Model):
    """One attempt at one Moodle call: the audit trail Moodle's own logs lack.

    Parameters are a redacted summary (no token, no password, long lists cut to a sample), so a row can
    be shown to any operator. The error pages and rates are aggregates over these rows.
    """

    site = models.ForeignKey("sync.MoodleSite", on_delete=models.CASCADE, related_name="calls")
    run = models.ForeignKey(
        "sync.SyncRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="call_logs"
    )
    token = models.ForeignKey(
        "sync.ServiceToken",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The token the call used (a standby being verified is not the site's active one).",
    )
    function = models.CharField(max_length=100)
    params = models.JSONField(default=dict, blank=True)
    outcome = models.CharField(max_length=20, help_text="ok, or the error category")
    errorcode = models.CharField(max_length=200, blank=True)
    exception = models.CharField(max_length=200, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.FloatField()
    attempt = models.PositiveSmallIntegerField(default=1)
    items = models.PositiveIntegerField(default=0)
    message = models.TextField(blank=True)
    detail = models.TextField(
        blank=True, help_text="The first bytes of an answer that was not Moodle's JSON (shown on request)."
    )
    started_at = models.DateTimeField()

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["site", "-started_at"], name="call_site_started"),
            models.Index(fields=["outcome", "-started_at"], name="call_outcome_started"),
            models.Index(fields=["run", "-started_at"], name="call_run_started"),
            # The calls list filtered by site and outcome (e.g. a site's transient errors this week).
            models.Index(fields=["site", "outcome", "-started_at"], name="call_site_outcome_started"),
            # Alert rules, /metrics and retention read by time alone.
            models.Index(fields=["started_at"], name="call_started"),
        ]

    def __str__(self) -> str:
        return f"{self.function} {self.outcome} at {self.started_at:%H:%M:%S}"


class CallRollup(models.Model):
    """The calls of one span (a minute, 5 or 15 minutes, 2 hours) with the same site, function, outcome,
    errorcode and HTTP status: how many, their total and largest duration, and a latency histogram
    (monitoring/rollups.py). Written with each CallLog row; the errors page reads these instead of
    millions of rows."""

    site = models.ForeignKey("sync.MoodleSite", on_delete=models.CASCADE, related_name="+")
    span_s = models.PositiveIntegerField(help_text="The width of the bucket in seconds (rollups.SPANS).")
    bucket = models.DateTimeField(help_text="The start of the bucket.")
    function = models.CharField(max_length=100)
    outcome = models.CharField(max_length=20)
    errorcode = models.CharField(max_length=200, blank=True)
    http_status = models.PositiveSmallIntegerField(default=0, help_text="0 when there was no HTTP answer.")
    calls = models.PositiveIntegerField()
    duration_ms_sum = models.FloatField()
    duration_ms_max = models.FloatField()
    histogram = ArrayField(
        models.PositiveIntegerField(), help_text="Calls per latency bucket (rollups.BOUNDS_MS)."
    )
    last_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["site", "span_s", "bucket", "function", "outcome", "errorcode", "http_status"],
                name="rollup_key",
            )
        ]
        indexes = [models.Index(fields=["span_s", "bucket"], name="rollup_span_bucket")]

    def __str__(self) -> str:
        return f"{self.function} {self.outcome} x{self.calls} at {self.bucket:%Y-%m-%d %H:%M}"


class BreakerEvent(models.Model):
    """A transition of a site's circuit breaker (closed → open → half-open → closed), with its reason."""

    site = models.ForeignKey("sync.MoodleSite", on_delete=models.CASCADE, related_name="breaker_events")
    old_state = models.CharField(max_length=20)
    new_state = models.CharField(max_length=20)
    reason = models.CharField(max_length=500, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["site", "-at"], name="breaker_site_at")]

    def __str__(self) -> str:
        return f"{self.site_id}: {self.old_state} -> {self.new_state}"


class Alert(models.Model):
    """A problem an operator should know about, one row per problem (not per occurrence).

    While a problem is open, repeats only bump `count` and `last_seen_at`; when it clears the row is
    resolved. The partial unique constraint on `key` is what de-duplicates across workers.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        RESOLVED = "resolved", "Resolved"

    class Severity(models.TextChoices):
        CRITICAL = "critical", "Critical"
        WARNING = "warning", "Warning"

    key = models.CharField(max_length=200, help_text="Identifies the problem, e.g. auth:north.")
    kind = models.CharField(max_length=50, choices=AlertKind.choices)
    site = models.ForeignKey(
        "sync.MoodleSite", null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    run = models.ForeignKey(
        "sync.SyncRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.CRITICAL)
    status = models.CharField(max_length=15, choices=Status.choices, default=Status.OPEN)
    title = models.CharField(max_length=300)
    detail = models.TextField(blank=True, help_text="What happened and what to do next.")
    times = models.JSONField(
        default=dict,
        blank=True,
        help_text="Instants the title and detail name as {placeholders}, in ISO 8601 (UTC): shown in the "
        "reader's zone.",
    )
    count = models.PositiveIntegerField(default=1)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    last_notified_at = models.DateTimeField(null=True, blank=True)
    notifications = models.PositiveIntegerField(default=0)
    recovery_notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["key"], condition=~models.Q(status="resolved"), name="one_unresolved_alert_per_key"
            )
        ]
        indexes = [models.Index(fields=["status", "-last_seen_at"], name="alert_status_seen")]

    def __str__(self) -> str:
        return self.title


class ProbeResult(models.Model):
    """One heartbeat probe of a Moodle site (`core_webservice_get_site_info` through the client)."""

    site = models.ForeignKey("sync.MoodleSite", on_delete=models.CASCADE, related_name="probes")
    at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    latency_ms = models.FloatField(null=True, blank=True)
    release = models.CharField(max_length=100, blank=True)
    version = models.CharField(max_length=30, blank=True)
    functions = models.JSONField(default=list, blank=True, help_text="Functions the token may call.")
    missing_functions = models.JSONField(
        default=list, blank=True, help_text="Needed by the hub, not allowed."
    )
    error_category = models.CharField(max_length=20, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["site", "-at"], name="probe_site_at")]

    def __str__(self) -> str:
        return f"{self.site_id} {'ok' if self.ok else 'failed'} at {self.at:%H:%M:%S}"


class AlertChannel(models.Model):
    """Where alerts go: an email list or a webhook (JSON POST signed with HMAC-SHA256).

    A permanent delivery failure (a 4xx from the webhook, a refused address) disables the channel and
    says why on the alerts page; transient failures are retried.
    """

    class Kind(models.TextChoices):
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Webhook"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    target = models.TextField(help_text="Email addresses (comma-separated) or the webhook URL.")
    secret_encrypted = models.TextField(blank=True, editable=False, help_text="HMAC key, encrypted at rest.")
    min_severity = models.CharField(
        max_length=10, choices=Alert.Severity.choices, default=Alert.Severity.WARNING
    )
    enabled = models.BooleanField(default=True)
    disabled_reason = models.TextField(blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"


class Delivery(models.Model):
    """One attempt to deliver one alert notice through one channel, with its outcome and duration."""

    class Event(models.TextChoices):
        FIRING = "firing", "Firing"
        REPEAT = "repeat", "Still firing (re-notified)"
        RECOVERY = "recovery", "Recovered"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(AlertChannel, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=10, choices=Event.choices)
    attempt = models.PositiveSmallIntegerField(default=1)
    ok = models.BooleanField()
    permanent = models.BooleanField(default=False, help_text="A failure that disabled the channel.")
    error = models.TextField(blank=True)
    duration_ms = models.FloatField()
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["-at"]
        indexes = [models.Index(fields=["alert", "-at"], name="delivery_alert_at")]

    def __str__(self) -> str:
        return f"{self.event} via {self.channel_id}: {'ok' if self.ok else 'failed'}"


class AlertMute(models.Model):
    """Silences notifications for alerts whose key starts with `key_prefix` until it expires."""

    key_prefix = models.CharField(
        max_length=200, help_text="e.g. auth:north, or token_expiry: for every site"
    )
    reason = models.TextField()
    created_by = models.ForeignKey("auth.User", null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-expires_at"]

    def __str__(self) -> str:
        return f"mute {self.key_prefix} until {self.expires_at:%Y-%m-%d %H:%M}"


class RuleState(models.Model):
    """How many consecutive evaluations a rule's condition has held, so one blip never pages anyone."""

    key = models.CharField(max_length=200, unique=True)
    failures = models.PositiveIntegerField(default=0)
    since = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.key}: {self.failures}"


class SchedulePing(models.Model):
    """Success and failure ping URLs for one beat schedule, for an external dead-man service (like
    tool_heartbeat does for Moodle's cron): pinged when the scheduled work finished, not when it started."""

    task_name = models.CharField(max_length=200, unique=True, help_text="The PeriodicTask's name.")
    success_url = models.URLField(blank=True)
    failure_url = models.URLField(blank=True)

    def __str__(self) -> str:
        return self.task_name


class AuditEntry(models.Model):
    """Who did what to the hub's configuration: a token promoted or revoked, a lock broken, a channel
    re-enabled. Sync work has its own trail (runs, record events, resolutions)."""

    at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey("auth.User", null=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=50)
    target = models.CharField(max_length=200)
    detail = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "audit entries"
        ordering = ["-at"]
        indexes = [models.Index(fields=["-at"], name="audit_at")]

    def __str__(self) -> str:
        return f"{self.action} {self.target}"
