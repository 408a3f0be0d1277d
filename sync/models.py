"""The sync domain's records: Moodle sites, their tokens, per-person sync state and sync runs."""

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.utils import timezone

from . import crypto
from .choices import (
    DEFAULT_AUTO_APPLY,
    ConflictKind,
    ConflictStatus,
    DeadLetterStatus,
    DiscrepancyKind,
    DiscrepancyStatus,
    ErrorCategory,
    EventStatus,
    HookDirection,
    HookSecretStatus,
    MembershipKind,
    MembershipState,
    MembershipStatus,
    OverrideStatus,
    PendingAction,
    RemovedPolicy,
    ResolutionAction,
    ResolutionStatus,
    RunControl,
    RunKind,
    RunStatus,
    RunTrigger,
    SourceKind,
    SyncStatus,
    TokenStatus,
)
from .mapping import Mapping
from .moodle.limits import DEFAULT_LIMITS
from .words import MEMBERSHIP_COUNTER_WORDS


def default_auto_apply() -> list[str]:
    return list(DEFAULT_AUTO_APPLY)


# Moodle's default role ids (a fresh install's mdl_role): a site whose ids differ says so in its settings.
DEFAULT_ROLE_IDS = {"student": 5, "teacher": 4, "editingteacher": 3}


def default_role_ids() -> dict[str, int]:
    return dict(DEFAULT_ROLE_IDS)


class MoodleSite(models.Model):
    """A Moodle instance the hub keeps in step, with the limits that keep it gentle on that instance.

    The call budget's defaults come from the client seam (sync.moodle.limits); batches of 2,000 people.
    """

    slug = models.SlugField(unique=True, help_text="Short name used in commands and URLs.")
    name = models.CharField(max_length=200)
    base_url = models.URLField(help_text="The Moodle site's root, e.g. https://moodle.example.edu")
    enabled = models.BooleanField(default=True, help_text="Disabled sites get no scheduled runs.")
    time_zone = models.CharField(max_length=64, default="UTC", help_text="Times on the pages and schedules.")
    max_concurrent_calls = models.PositiveSmallIntegerField(
        default=DEFAULT_LIMITS.max_concurrent, validators=[MinValueValidator(1), MaxValueValidator(16)]
    )
    min_spacing_ms = models.PositiveIntegerField(
        default=int(DEFAULT_LIMITS.min_spacing_ms),
        help_text="Minimum time between the starts of two calls to this site.",
    )
    calls_per_minute = models.PositiveIntegerField(
        default=DEFAULT_LIMITS.calls_per_minute, validators=[MinValueValidator(1)]
    )
    batch_size = models.PositiveIntegerField(
        default=2000,
        validators=[MinValueValidator(1), MaxValueValidator(5000)],
        help_text="People per batch: looked up together and committed together. The write calls inside a "
        "batch are sized from max_input_vars and the time Moodle takes per user.",
    )
    languages = models.CharField(
        max_length=500,
        default="en",
        help_text="Language packs installed on the Moodle site, comma-separated (e.g. en,de,fr): a person "
        "whose lang is not one of them is refused before anything is sent, as Moodle would refuse them.",
    )
    max_input_vars = models.PositiveIntegerField(
        default=DEFAULT_LIMITS.max_input_vars,
        validators=[MinValueValidator(100)],
        help_text="PHP's max_input_vars on the Moodle server.",
    )
    run_time_budget = models.DurationField(
        default=timedelta(hours=4), help_text="A run still going after this long fails and raises an alert."
    )
    max_removal_percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=Decimal("2.00"),
        help_text="Blast-radius guard: a run that would suspend or delete more than this share of the "
        "site's users does nothing destructive and raises an alert.",
    )
    max_removal_count = models.PositiveIntegerField(
        default=500, help_text="Blast-radius guard: the same, as a number of users."
    )
    auto_apply_kinds = models.JSONField(
        default=default_auto_apply,
        blank=True,
        help_text="Discrepancy kinds the nightly reconciliation applies without approval (towards the "
        "source; suspensions, deletions and re-links always wait for an admin).",
    )
    four_eyes = models.BooleanField(
        default=False, help_text="Whoever proposed a resolution cannot approve it."
    )
    role_ids = models.JSONField(
        default=default_role_ids,
        blank=True,
        help_text="Role shortname -> role id on this Moodle site, for enrolments (Site administration > "
        "Users > Permissions > Define roles shows them). Moodle's defaults: student 5, teacher 4, "
        "editingteacher 3.",
    )
    events_expected_within = models.DurationField(
        null=True,
        blank=True,
        help_text="A webhook that has a secret but sent no event for longer than this makes the site need "
        "attention (a silent source). Empty: no such check.",
    )
    rename_rule = models.CharField(
        max_length=100,
        default="{username}.{n}",
        help_text="Alternative username for a conflict resolved by creating another account: {username}, "
        "{external_id}, {n} (1, 2, ... until free).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def destructive_limit(self, total_users: int) -> int:
        """How many users one run may suspend or delete. One is always allowed: a single leaver is normal."""
        by_share = int(total_users * self.max_removal_percent / 100)
        return max(1, min(by_share, self.max_removal_count))

    def active_token(self) -> "ServiceToken | None":
        return self.tokens.filter(status=TokenStatus.ACTIVE).first()

    @property
    def language_list(self) -> list[str]:
        return [code.strip().lower() for code in self.languages.split(",") if code.strip()]

    def mapping(self) -> Mapping:
        """The site's source mapping, checking languages against the packs the site has installed."""
        return Mapping.from_config(self.source.mapping).for_site(self.language_list, list(self.role_ids))


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
    verify_error = models.TextField(blank=True, help_text="Why the last verification failed, if it did.")
    revoke_pending = models.BooleanField(
        default=False, help_text="Demoted by a rotation: revoke it in Moodle, then confirm here."
    )
    # Set by the audit hook when Moodle refuses a call made with this token (probe, pre-flight, run or
    # verification) and cleared by the next call it accepts: what the pages call "refused by Moodle".
    refused_at = models.DateTimeField(null=True, blank=True)
    refused_code = models.CharField(max_length=100, blank=True)
    refused_function = models.CharField(max_length=100, blank=True)

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

    @property
    def refused(self) -> bool:
        return self.refused_at is not None

    @property
    def promotable(self) -> bool:
        """A verified standby Moodle has not refused since: the only kind a person may make active."""
        return (
            self.status == TokenStatus.STANDBY
            and self.last_verified_at is not None
            and not self.verify_error
            and not self.refused
        )


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
    # What the source says now (mapped, normalised), kept for the record page, retries and resumes.
    username = models.CharField(max_length=100, blank=True)
    email = models.CharField(max_length=254, blank=True)
    display_name = models.CharField(max_length=200, blank=True)
    origin = models.CharField(max_length=100, blank=True, help_text="Where the source row was, e.g. line 17.")
    payload = models.JSONField(default=dict, blank=True)
    payload_hash = models.CharField(max_length=64, blank=True, help_text="Hash of `payload`.")
    create_only = models.JSONField(default=list, blank=True, help_text="Fields sent on create only.")
    pending_action = models.CharField(
        max_length=10, choices=PendingAction.choices, default=PendingAction.UPSERT
    )
    suspended_by_hub = models.BooleanField(default=False, help_text="Suspended because it left the source.")
    overrides = models.JSONField(
        default=dict,
        blank=True,
        help_text="Values an approved resolution set instead of the source's (a username).",
    )
    last_run = models.ForeignKey(
        "SyncRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    membership_hash = models.CharField(
        max_length=64,
        blank=True,
        help_text="Hash of the courses and cohorts the source last gave this person: an unchanged list "
        "costs nothing; a changed one sends only the difference.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["site", "external_id"], name="unique_record_per_site"),
        ]
        indexes = [
            models.Index(fields=["site", "sync_status"], name="record_site_status"),
            models.Index(fields=["site", "moodle_id"], name="record_site_moodle_id"),
            # The search's indexes are made in SQL (sync/search.py): username and email prefixes (UPPER(col)
            # text_pattern_ops) by migration 0007, the words of display_name (GIN, folded) by 0016.
            models.Index(fields=["external_id"], name="record_external_id"),
        ]

    def __str__(self) -> str:
        return f"{self.site.slug}:{self.external_id}"


class SyncRunQuerySet(models.QuerySet):
    def queue(
        self,
        site: MoodleSite,
        kind: str = RunKind.INCREMENTAL,
        *,
        trigger: str = RunTrigger.MANUAL,
        user=None,
        dry_run: bool = False,
        source_file: str = "",
    ) -> "SyncRun":
        """Record a run as queued; the caller sends its task (sync.dispatch) or executes it in-process."""
        return self.create(
            site=site, kind=kind, trigger=trigger, started_by=user, dry_run=dry_run, source_file=source_file
        )


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
    blocked = models.PositiveIntegerField(
        default=0, help_text="Suspensions the blast-radius guard held back for an admin's decision."
    )
    # Memberships, counted apart from users: one person may have many.
    enrolled = models.PositiveIntegerField(default=0, help_text="Enrolments made, changed or re-activated.")
    enrolments_suspended = models.PositiveIntegerField(default=0)
    cohort_added = models.PositiveIntegerField(default=0)
    cohort_removed = models.PositiveIntegerField(default=0)
    membership_errors = models.PositiveIntegerField(default=0)
    memberships_held = models.PositiveIntegerField(
        default=0, help_text="Enrolment suspensions and cohort removals the guard held back."
    )
    calls = models.PositiveIntegerField(default=0, help_text="Moodle calls made, retries included.")
    progress_total = models.PositiveIntegerField(default=0)
    progress_done = models.PositiveIntegerField(default=0)
    abort_reason = models.TextField(blank=True, help_text="Why the run stopped, paused or was skipped.")
    stop_category = models.CharField(
        max_length=20, blank=True, help_text="What stopped it: auth or config (an aborted run), else empty."
    )
    dry_run = models.BooleanField(default=False, help_text="Plan only: nothing is written to Moodle.")
    control = models.CharField(max_length=10, choices=RunControl.choices, blank=True, default="")
    planned_at = models.DateTimeField(null=True, blank=True, help_text="When the source had been read.")
    last_progress_at = models.DateTimeField(null=True, blank=True)
    plan = models.JSONField(default=dict, blank=True, help_text="Dry run: counts and first examples.")
    task_id = models.CharField(max_length=64, blank=True)
    sent_at = models.DateTimeField(
        null=True, blank=True, help_text="When its task last reached the broker (empty: not yet)."
    )
    claim = models.PositiveIntegerField(
        default=0,
        help_text="Raised each time a worker claims the run: a worker whose claim is no longer the run's "
        "writes nothing more (a run continued after its worker was thought dead).",
    )
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="The last sign of life of the worker executing it."
    )
    source_file = models.CharField(
        max_length=500, blank=True, help_text="An uploaded CSV read instead of the source's path."
    )
    upload_name = models.CharField(
        max_length=255, blank=True, help_text="The uploaded file's own name, as the operator chose it."
    )

    objects = SyncRunQuerySet.as_manager()

    COUNTERS = (
        "seen", "changed", "created", "updated", "suspended", "unchanged", "skipped",
        "conflicts", "errors", "dead_lettered", "blocked", "calls",
        "enrolled", "enrolments_suspended", "cohort_added", "cohort_removed", "membership_errors",
        "memberships_held",
    )  # fmt: skip
    # What a run leaves for a person; any of these turns a finished run into "finished with problems".
    LEFT_BEHIND = {
        "dead_lettered": ("dead letter", "dead letters"),
        "errors": ("record in error", "records in error"),
        "conflicts": ("conflict", "conflicts"),
        "blocked": ("suspension held back by the guard", "suspensions held back by the guard"),
        "membership_errors": MEMBERSHIP_COUNTER_WORDS["membership_errors"],
        "memberships_held": MEMBERSHIP_COUNTER_WORDS["memberships_held"],
    }

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["-created_at"], name="run_created"),
            models.Index(fields=["site", "-created_at"], name="run_site_created"),
            # A site's last finished (or last clean) run: the Overview and /metrics ask for it per site.
            models.Index(fields=["site", "-finished_at", "-id"], name="run_site_finished"),
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

    def left_behind(self) -> dict[str, int]:
        """The work this run left for a person, by counter (only the non-zero ones). A dead letter is also
        counted as an error on the run; here it is named once."""
        values = {name: getattr(self, name) for name in self.LEFT_BEHIND}
        values["errors"] = max(0, values["errors"] - values["dead_lettered"])
        return {name: n for name, n in values.items() if n}

    def left_behind_text(self) -> str:
        """'120 dead letters, 3 records in error': what this run left for a person, in words."""
        parts = []
        for name, count in self.left_behind().items():
            one, many = self.LEFT_BEHIND[name]
            parts.append(f"{count:,} {one if count == 1 else many}")
        return ", ".join(parts)

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    def start(self) -> bool:
        """Claim a queued run for work (a paused one is queued again by its resume). False when another
        worker already has it or it ended: the conditional update makes a redelivered task harmless."""
        now = timezone.now()
        claimed = SyncRun.objects.filter(pk=self.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.RUNNING,
            started_at=models.functions.Coalesce("started_at", now),
            abort_reason="",
            claim=models.F("claim") + 1,
            heartbeat_at=now,
        )
        if claimed:
            self.refresh_from_db(fields=["status", "started_at", "abort_reason", "claim", "heartbeat_at"])
        return bool(claimed)

    def still_claimed(self) -> bool:
        """Whether this worker's claim on the running run still stands (the watchdog may have handed the
        run to another worker). Locks the run's row for the caller's transaction."""
        return (
            SyncRun.objects.select_for_update()
            .filter(pk=self.pk, status=RunStatus.RUNNING, claim=self.claim)
            .exists()
        )

    def release_unfinished_work(self, reason: str) -> None:
        """A run that ended without doing all it was queued for hands its work back. Approved resolutions
        wait for the site's next resolution run (resume this one, or any new approval starts one), unless
        an operator cancelled the run: then they are not applied and their discrepancies wait for a
        decision again. Dead letters it did not settle are open again."""
        unapplied = Resolution.objects.filter(
            run=self, status__in=[ResolutionStatus.APPROVED, ResolutionStatus.APPLYING]
        )
        ids = list(unapplied.values_list("pk", flat=True))
        decided = Discrepancy.objects.filter(
            resolutions__pk__in=ids, status__in=DiscrepancyStatus.in_flight()
        )
        if ids and self.status == RunStatus.CANCELLED:
            unapplied.update(
                status=ResolutionStatus.FAILED,
                outcome=f"not applied: run #{self.pk} was cancelled ({reason}); approve it again to apply it",
            )
            decided.update(status=DiscrepancyStatus.OPEN)
        elif ids:
            unapplied.update(
                status=ResolutionStatus.APPROVED,
                outcome=f"waiting: run #{self.pk} stopped before applying it ({reason}); it is applied by "
                "the site's next resolution run",
            )
            decided.update(status=DiscrepancyStatus.APPROVED)
        if self.kind == RunKind.RESOLUTION:
            SyncRun.objects.filter(pk=self.pk).update(progress_total=models.F("progress_done"))
        DeadLetter.objects.filter(retry_run=self, status=DeadLetterStatus.RETRYING).update(
            status=DeadLetterStatus.OPEN
        )
        # Events it took and did not apply wait for the site's next event run.
        InboundEvent.objects.filter(run=self, status=EventStatus.ACCEPTED).update(run=None)

    def finish(self, status: str, reason: str = "") -> bool:
        """End the run, unless another worker claimed it since this copy was read (then nothing changes
        and False is returned)."""
        if status not in RunStatus.terminal() and status != RunStatus.PAUSED:
            raise ValueError(f"{status} is not a status a run finishes with")
        with transaction.atomic():
            if not SyncRun.objects.select_for_update().filter(pk=self.pk, claim=self.claim).exists():
                return False
            self.status = status
            self.abort_reason = reason or self.abort_reason
            self.finished_at = None if status == RunStatus.PAUSED else timezone.now()
            self.save(update_fields=["status", "abort_reason", "finished_at"])  # a save: observers hear it
        return True


class SyncSource(models.Model):
    """Where a site's people come from, and how their fields map to Moodle's.

    `config` holds no secret: an HTTP auth header or an SQL DSN with a password is referenced by the
    name of an environment variable (see sync/sources/README.md).
    """

    site = models.OneToOneField(MoodleSite, on_delete=models.CASCADE, related_name="source")
    kind = models.CharField(max_length=10, choices=SourceKind.choices)
    config = models.JSONField(help_text='Source settings, e.g. {"path": ..., "id_column": ...}.')
    mapping = models.JSONField(help_text="Field mapping, match key and auth method.")
    removed_policy = models.CharField(
        max_length=10, choices=RemovedPolicy.choices, default=RemovedPolicy.KEEP
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.site.slug}"


class RunEvent(models.Model):
    """A line in a run's timeline: started, paused, a bad source row, aborted, finished."""

    class Level(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"

    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now)
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    message = models.TextField()
    link = models.CharField(max_length=500, blank=True, help_text="Where to act on it, e.g. the decision.")
    link_label = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return self.message[:80]


class RecordEvent(models.Model):
    """What one run did to one record: the record page's history."""

    record = models.ForeignKey(SyncRecord, on_delete=models.CASCADE, related_name="events")
    run = models.ForeignKey(SyncRun, null=True, on_delete=models.SET_NULL, related_name="record_events")
    at = models.DateTimeField(default=timezone.now)
    action = models.CharField(max_length=20, help_text="create, update, suspend, link, validate, ...")
    outcome = models.CharField(max_length=20, help_text="ok, error, conflict, dead_letter, unchanged")
    function = models.CharField(max_length=100, blank=True)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["record", "-at"], name="recordevent_record_at")]

    def __str__(self) -> str:
        return f"{self.action} {self.outcome}"


class Conflict(models.Model):
    """A business conflict the sync will not settle alone: the person's username or email already belongs
    to a Moodle user not linked to them, several Moodle users match, or the linked user is gone.

    Never retried automatically; an admin decides (link, rename, ignore) through the approval flow.
    """

    site = models.ForeignKey(MoodleSite, on_delete=models.CASCADE, related_name="conflicts")
    record = models.ForeignKey(SyncRecord, on_delete=models.CASCADE, related_name="conflicts")
    run = models.ForeignKey(SyncRun, null=True, on_delete=models.SET_NULL, related_name="conflict_rows")
    kind = models.CharField(max_length=20, choices=ConflictKind.choices)
    status = models.CharField(max_length=10, choices=ConflictStatus.choices, default=ConflictStatus.OPEN)
    our_payload = models.JSONField(default=dict)
    their_users = models.JSONField(default=list, help_text="Summaries of the Moodle users in the way.")
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["record", "kind"],
                condition=models.Q(status="open"),
                name="one_open_conflict_per_kind",
            )
        ]
        indexes = [models.Index(fields=["site", "status", "-created_at"], name="conflict_site_status")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.record.external_id}"


class DeadLetter(models.Model):
    """A write Moodle kept failing transiently after every retry: kept for a later retry, never dropped."""

    site = models.ForeignKey(MoodleSite, on_delete=models.CASCADE, related_name="dead_letters")
    record = models.ForeignKey(SyncRecord, on_delete=models.CASCADE, related_name="dead_letters")
    run = models.ForeignKey(SyncRun, null=True, on_delete=models.SET_NULL, related_name="dead_letter_rows")
    function = models.CharField(max_length=100)
    payload = models.JSONField(default=dict)
    category = models.CharField(max_length=20, choices=ErrorCategory.choices)
    errorcode = models.CharField(max_length=200, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    message = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=1)
    first_failed_at = models.DateTimeField(default=timezone.now)
    last_failed_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=10, choices=DeadLetterStatus.choices, default=DeadLetterStatus.OPEN)
    retry_run = models.ForeignKey(SyncRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    discard_reason = models.TextField(blank=True)
    discarded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_failed_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["record"], condition=models.Q(status="open"), name="one_open_dead_letter"
            )
        ]
        indexes = [
            models.Index(fields=["status", "-last_failed_at"], name="deadletter_status"),
            models.Index(fields=["site", "status", "-last_failed_at"], name="deadletter_site_status"),
            models.Index(fields=["errorcode", "function"], name="deadletter_code_function"),
        ]
        permissions = [("retry_deadletter", "Can retry and discard dead letters")]

    def __str__(self) -> str:
        return f"{self.function} for {self.record.external_id}"


class Discrepancy(models.Model):
    """A difference the nightly reconciliation found between the source and Moodle, with the fix it
    proposes. Safe fixes (towards the source) apply in the same run; the others wait for an admin."""

    site = models.ForeignKey(MoodleSite, on_delete=models.CASCADE, related_name="discrepancies")
    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="discrepancies")
    record = models.ForeignKey(
        SyncRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="discrepancies"
    )
    kind = models.CharField(max_length=20, choices=DiscrepancyKind.choices)
    status = models.CharField(max_length=12, choices=DiscrepancyStatus.choices)
    external_id = models.CharField(max_length=255, blank=True)
    moodle_user_id = models.BigIntegerField(null=True, blank=True)
    summary = models.CharField(max_length=500)
    fields = models.JSONField(default=list, blank=True, help_text="For field drift: the fields that differ.")
    source_values = models.JSONField(default=dict, blank=True)
    moodle_values = models.JSONField(default=dict, blank=True)
    candidates = models.JSONField(default=list, blank=True, help_text="Moodle users to choose from.")
    membership = models.ForeignKey(
        "Membership",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="discrepancies",
        help_text="For a course or cohort difference: the person's membership it is about.",
    )
    proposed_action = models.CharField(max_length=20, choices=ResolutionAction.choices)
    needs_approval = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "discrepancies"
        ordering = ["kind", "pk"]
        indexes = [
            models.Index(fields=["status", "kind", "-created_at"], name="discrepancy_status_kind"),
            models.Index(fields=["site", "status", "kind"], name="discrepancy_site_status_kind"),
            models.Index(fields=["run", "kind"], name="discrepancy_run_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.summary}"


class Resolution(models.Model):
    """A change to Moodle or to the hub's links that someone (or the site's policy) proposed, with its
    trail: who proposed, who decided and when, the exact calls, the run that applied it, the outcome."""

    site = models.ForeignKey(MoodleSite, on_delete=models.CASCADE, related_name="resolutions")
    discrepancy = models.ForeignKey(
        Discrepancy, null=True, blank=True, on_delete=models.CASCADE, related_name="resolutions"
    )
    conflict = models.ForeignKey(
        Conflict, null=True, blank=True, on_delete=models.CASCADE, related_name="resolutions"
    )
    action = models.CharField(max_length=20, choices=ResolutionAction.choices)
    params = models.JSONField(
        default=dict, blank=True, help_text="What the action needs, e.g. the chosen user."
    )
    calls = models.JSONField(default=list, blank=True, help_text="The exact Moodle calls it makes.")
    status = models.CharField(
        max_length=10, choices=ResolutionStatus.choices, default=ResolutionStatus.PROPOSED
    )
    automatic = models.BooleanField(
        default=False, help_text="Applied by the site's policy, without approval."
    )
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    proposed_at = models.DateTimeField(default=timezone.now)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True, help_text="Why it was rejected, or what the approver noted.")
    run = models.ForeignKey(
        SyncRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="resolutions"
    )
    override = models.ForeignKey(
        "GuardOverride",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="resolutions",
        help_text="The blast-radius override this destructive change was approved under, if any.",
    )
    outcome = models.TextField(blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-proposed_at"]
        indexes = [models.Index(fields=["site", "status", "-proposed_at"], name="resolution_site_status")]
        permissions = [("approve_resolution", "Can approve or reject resolutions")]

    def __str__(self) -> str:
        return f"{self.get_action_display()} ({self.get_status_display()})"


class GuardOverride(models.Model):
    """An admin's explicit decision to go past the site's blast-radius limit: the number of users typed
    out, the reason, and (with four-eyes on) a second admin's confirmation. The approvals it covers point
    at it; the task that applies them checks it again before the first call."""

    site = models.ForeignKey(MoodleSite, on_delete=models.CASCADE, related_name="guard_overrides")
    action = models.CharField(max_length=20, choices=ResolutionAction.choices)
    count = models.PositiveIntegerField(help_text="Users affected, as the admin typed it.")
    linked_users = models.PositiveIntegerField(help_text="Users the hub had linked on the site then.")
    limit = models.PositiveIntegerField(help_text="The site's blast-radius limit then.")
    reason = models.TextField()
    status = models.CharField(max_length=10, choices=OverrideStatus.choices, default=OverrideStatus.PENDING)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True, help_text="Why the second admin rejected it.")

    class Meta:
        ordering = ["-requested_at"]
        indexes = [models.Index(fields=["site", "status", "-requested_at"], name="override_site_status")]

    def __str__(self) -> str:
        return f"Override #{self.pk}: {self.get_action_display().lower()} {self.count} on {self.site_id}"


class Comment(models.Model):
    """An operator's or admin's note on a discrepancy or a conflict."""

    discrepancy = models.ForeignKey(
        Discrepancy, null=True, blank=True, on_delete=models.CASCADE, related_name="comments"
    )
    conflict = models.ForeignKey(
        Conflict, null=True, blank=True, on_delete=models.CASCADE, related_name="comments"
    )
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.text[:60]


class MembershipTarget(models.Model):
    """A course or cohort the site's mapping names, as the hub last found it in Moodle.

    `key` is what the source gives (a course shortname or idnumber, a cohort idnumber); `moodle_id` is set
    once a run resolved it. `problem` says why people cannot be put in it (no such course, no manual
    enrolment), so the dry run and the pages can name it before anything is sent."""

    site = models.ForeignKey(MoodleSite, on_delete=models.CASCADE, related_name="membership_targets")
    kind = models.CharField(max_length=10, choices=MembershipKind.choices)
    key = models.CharField(max_length=255)
    match = models.CharField(max_length=20, default="idnumber", help_text="The Moodle field `key` matches.")
    name = models.CharField(max_length=255, blank=True)
    moodle_id = models.BigIntegerField(null=True, blank=True)
    problem = models.TextField(blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    moodle_count = models.PositiveIntegerField(
        null=True, blank=True, help_text="People in it in Moodle, as the last reconciliation read."
    )
    moodle_counted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["kind", "key"]
        constraints = [
            models.UniqueConstraint(fields=["site", "kind", "key"], name="unique_membership_target"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.key}"

    @property
    def label(self) -> str:
        return f"{self.key} ({self.name})" if self.name and self.name != self.key else self.key


class Membership(models.Model):
    """One person's place in one course or cohort: what the source wants (`desired`), what the hub last
    made Moodle hold (`synced`), and the state of the change between them."""

    site = models.ForeignKey(MoodleSite, on_delete=models.CASCADE, related_name="memberships")
    record = models.ForeignKey(SyncRecord, on_delete=models.CASCADE, related_name="memberships")
    target = models.ForeignKey(MembershipTarget, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=100, blank=True, help_text="Role shortname (courses only).")
    timestart = models.BigIntegerField(default=0)
    timeend = models.BigIntegerField(default=0)
    desired = models.CharField(max_length=10, choices=MembershipState.choices, default=MembershipState.ACTIVE)
    synced = models.CharField(
        max_length=10, choices=MembershipState.choices, blank=True, default=MembershipState.NONE
    )
    synced_role = models.CharField(max_length=100, blank=True)
    synced_times = models.CharField(max_length=40, blank=True, help_text="timestart:timeend last sent.")
    status = models.CharField(
        max_length=10, choices=MembershipStatus.choices, default=MembershipStatus.PENDING
    )
    error_message = models.TextField(blank=True)
    last_run = models.ForeignKey(SyncRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["target__kind", "target__key"]
        constraints = [
            models.UniqueConstraint(fields=["record", "target"], name="unique_membership"),
        ]
        indexes = [
            models.Index(fields=["site", "status"], name="membership_site_status"),
            models.Index(fields=["target", "status"], name="membership_target_status"),
        ]

    def __str__(self) -> str:
        return f"{self.record_id} in {self.target_id}: {self.desired}"

    @property
    def times(self) -> str:
        return f"{self.timestart}:{self.timeend}"

    @property
    def in_step(self) -> bool:
        """Whether Moodle holds what the source wants, as far as the hub knows. Someone who left a course
        or cohort the hub never put them in needs nothing."""
        absent = (MembershipState.NONE, MembershipState.REMOVED)
        if self.desired != MembershipState.ACTIVE and self.synced in absent:
            return True
        if self.synced != self.desired:
            return False
        if self.target.kind == MembershipKind.COURSE and self.desired == MembershipState.ACTIVE:
            return self.synced_role == self.role and self.synced_times == self.times
        return True


class HookSecret(models.Model):
    """A site's shared secret for one webhook, encrypted at rest like a token; shown once when made. After a
    rotation the old one is accepted until `valid_until`, so the sender can switch over."""

    site = models.ForeignKey(MoodleSite, on_delete=models.CASCADE, related_name="hook_secrets")
    direction = models.CharField(max_length=10, choices=HookDirection.choices)
    secret_encrypted = models.TextField(editable=False)
    last4 = models.CharField(max_length=4, editable=False)
    status = models.CharField(
        max_length=10, choices=HookSecretStatus.choices, default=HookSecretStatus.ACTIVE
    )
    valid_until = models.DateTimeField(null=True, blank=True, help_text="A retiring secret's last moment.")
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["site", "direction", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["site", "direction"],
                condition=models.Q(status="active"),
                name="one_active_hook_secret",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_direction_display()} secret …{self.last4}"

    def set_secret(self, plaintext: str) -> None:
        self.secret_encrypted = crypto.encrypt(plaintext)
        self.last4 = plaintext[-4:]

    def reveal(self) -> str:
        """The plaintext, for checking a signature only. Never render, log or put it in a URL."""
        return crypto.decrypt(self.secret_encrypted)

    def accepts_at(self, when) -> bool:
        if self.status == HookSecretStatus.ACTIVE:
            return True
        return (
            self.status == HookSecretStatus.RETIRING
            and self.valid_until is not None
            and when <= self.valid_until
        )


class InboundEvent(models.Model):
    """One request to a webhook, whatever became of it: refused (and why), a redelivery, or accepted and
    then applied by a run of kind event. `received_at` to `applied_at` is the event's latency."""

    site = models.ForeignKey(MoodleSite, null=True, on_delete=models.CASCADE, related_name="inbound_events")
    site_slug = models.CharField(max_length=50, help_text="As the URL named it (the site may not exist).")
    direction = models.CharField(max_length=10, choices=HookDirection.choices)
    event_id = models.CharField(max_length=100, blank=True)
    kind = models.CharField(max_length=40, blank=True, help_text="The event's name; people for the source.")
    status = models.CharField(max_length=10, choices=EventStatus.choices)
    reason = models.TextField(blank=True, help_text="Why it was refused, or what applying it did.")
    received_at = models.DateTimeField(default=timezone.now)
    size = models.PositiveIntegerField(default=0, help_text="Bytes of the body.")
    people = models.PositiveIntegerField(default=0, help_text="People (or Moodle users) it names.")
    body = models.JSONField(null=True, blank=True, help_text="Kept once verified; never for a refused one.")
    run = models.ForeignKey(
        SyncRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="events_fed"
    )
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["site", "direction", "event_id"],
                condition=models.Q(status__in=["accepted", "applied", "failed"]),
                name="one_event_per_id",
            )
        ]
        indexes = [
            models.Index(fields=["site", "-received_at"], name="event_site_received"),
            models.Index(fields=["site", "status"], name="event_site_status"),
        ]

    def __str__(self) -> str:
        return f"{self.direction} {self.event_id or '(no id)'} {self.status}"

    @property
    def latency(self) -> timedelta | None:
        return self.applied_at - self.received_at if self.applied_at else None


class Completion(models.Model):
    """A course completion Moodle reported (course_completed), kept for the HR side to download."""

    site = models.ForeignKey(MoodleSite, on_delete=models.CASCADE, related_name="completions")
    record = models.ForeignKey(SyncRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    moodle_user_id = models.BigIntegerField()
    external_id = models.CharField(max_length=255, blank=True, help_text="The person's id in the source.")
    username = models.CharField(max_length=100, blank=True)
    course_id = models.BigIntegerField()
    course_shortname = models.CharField(max_length=255, blank=True)
    course_idnumber = models.CharField(max_length=100, blank=True)
    completed_at = models.DateTimeField()
    event = models.ForeignKey(InboundEvent, null=True, on_delete=models.SET_NULL, related_name="+")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-completed_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["site", "moodle_user_id", "course_id"], name="one_completion")
        ]

    def __str__(self) -> str:
        return f"{self.username or self.moodle_user_id} completed {self.course_shortname or self.course_id}"
