import zoneinfo
from datetime import timedelta

from django import forms
from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from web.filters import EMPTY, SINCE_CHOICES, SINCE_DELTAS, FilterForm, site_field, with_any
from web.models import zone_names

from . import search
from .choices import (
    ConflictKind,
    ConflictStatus,
    DeadLetterStatus,
    DiscrepancyKind,
    DiscrepancyStatus,
    ErrorCategory,
    EventStatus,
    HookDirection,
    MembershipKind,
    MembershipState,
    MembershipStatus,
    ResolutionAction,
    ResolutionStatus,
    RunKind,
    RunStatus,
    SourceKind,
    SyncStatus,
)
from .mapping import parse_languages
from .models import Membership, MoodleSite, RecordEvent, SyncSource
from .uploads import check_csv_upload


class SiteForm(forms.ModelForm):
    """A site's settings (adding and editing, Admins only): every field checked here, so a save never fails
    half-way. Whether the URL answers as Moodle is checked after the save, as a warning (a site may be set
    up before the hub can reach it)."""

    base_url = forms.URLField(
        assume_scheme="https", help_text="The Moodle site's root, e.g. https://moodle.example.edu"
    )
    time_zone = forms.ChoiceField(
        choices=lambda: [(name, name) for name in zone_names()],
        initial="UTC",
        help_text="An IANA zone name (e.g. Europe/Berlin): the nightly reconciliation runs at 02:00 in it.",
        error_messages={
            "invalid_choice": "%(value)s is not an IANA time zone name (e.g. Europe/Berlin, "
            "America/New_York, UTC)."
        },
    )

    # Typed in whole minutes, stored as the model's DurationField.
    events_expected_within = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=60 * 24 * 31,
        label="Expect an event at least every … minutes",
        help_text="A webhook that has a secret but sends nothing for longer than this makes the site need "
        "attention (a silent source). Empty: no such check.",
    )

    class Meta:
        model = MoodleSite
        fields = [
            "name", "slug", "base_url", "enabled", "time_zone", "max_concurrent_calls", "min_spacing_ms",
            "calls_per_minute", "batch_size", "max_input_vars", "run_time_budget", "languages",
            "events_expected_within",
        ]  # fmt: skip

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        within = self.instance.events_expected_within if self.instance.pk else None
        self.initial["events_expected_within"] = (
            int(within.total_seconds() // 60) if within is not None else None
        )

    def clean_events_expected_within(self) -> timedelta | None:
        minutes = self.cleaned_data.get("events_expected_within")
        return timedelta(minutes=minutes) if minutes else None

    def clean_languages(self) -> str:
        try:
            return ",".join(parse_languages(self.cleaned_data["languages"]))
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_base_url(self) -> str:
        url = self.cleaned_data["base_url"].rstrip("/")
        if url.endswith("/webservice/rest/server.php"):
            url = url.removesuffix("/webservice/rest/server.php")
        return url


# -- list filters (built on web.filters) ------------------------------------------------------------------


class RunFilterForm(FilterForm):
    site = site_field()
    kind = forms.ChoiceField(choices=with_any(RunKind.choices), required=False)
    status = forms.ChoiceField(choices=with_any(RunStatus.choices), required=False)
    since = forms.ChoiceField(choices=SINCE_CHOICES, required=False, label="Created")

    def filter(self, runs: QuerySet) -> QuerySet:
        if site := self.value("site"):
            runs = runs.filter(site=site)
        if kind := self.value("kind"):
            runs = runs.filter(kind=kind)
        if status := self.value("status"):
            runs = runs.filter(status=status)
        if since := self.value("since"):
            runs = runs.filter(created_at__gte=timezone.now() - SINCE_DELTAS[since])
        return runs


RECORD_OUTCOMES = [
    ("ok", "OK"), ("created", "Created"), ("updated", "Updated or linked"), ("suspended", "Suspended"),
    ("error", "Error"), ("conflict", "Conflict"), ("dead_letter", "Dead letter"),
]  # fmt: skip
# Outcomes that are a successful action, as the run counters count them (sync/state.py).
_OUTCOME_ACTIONS = {"created": ["create"], "updated": ["update", "link"], "suspended": ["suspend"]}


class RecordFilterForm(FilterForm):
    q = forms.CharField(
        required=False,
        max_length=255,
        label="Search",
        help_text="A surname, first name or full name in any order (accents and case do not matter), "
        "the start of a username or email, or an exact external id.",
    )
    site = site_field()
    status = forms.ChoiceField(choices=with_any(SyncStatus.choices), required=False)
    category = forms.ChoiceField(
        choices=with_any(ErrorCategory.choices), required=False, label="Error category"
    )
    run = forms.IntegerField(
        required=False, min_value=1, label="Run #", help_text="Records this run touched last."
    )
    outcome = forms.ChoiceField(
        choices=with_any(RECORD_OUTCOMES),
        required=False,
        label="Outcome in that run",
        help_text="With a run: the records it left with this outcome, whatever touched them since.",
    )

    searched_fields = search.SEARCHED_FIELDS

    def filter(self, records: QuerySet) -> QuerySet:
        if site := self.value("site"):
            records = records.filter(site=site)
        if status := self.value("status"):
            records = records.filter(sync_status=status)
        if category := self.value("category"):
            records = records.filter(error_category=category)
        run, outcome = self.value("run"), self.value("outcome")
        if run and outcome:
            touched = RecordEvent.objects.filter(run_id=run)
            if outcome in _OUTCOME_ACTIONS:
                touched = touched.filter(outcome="ok", action__in=_OUTCOME_ACTIONS[outcome])
            else:
                touched = touched.filter(outcome=outcome)
            records = records.filter(pk__in=touched.values("record_id"))
        elif run:
            records = records.filter(last_run_id=run)
        if q := self.search_text:
            # Last, so that each look-up of the search is capped within the other filters' records.
            records = records.filter(pk__in=search.matching_ids(records, q))
        return records

    @property
    def search_text(self) -> str:
        return (self.value("q") or "").strip()

    def described_search(self) -> str:
        """What an empty search looked for and where, in words: the empty list says it rather than guess
        why the person is missing."""
        site = self.value("site")
        narrowed = any(self.value(name) for name in ("status", "category", "run"))
        return (
            f"No record matches “{self.search_text}” in {self.searched_fields} "
            f"on {site.name if site else 'all sites'}{', with the other filters above' if narrowed else ''}"
        )


class DeadLetterFilterForm(FilterForm):
    """Times are entered in the chosen site's time zone (the hub's when no site is chosen)."""

    site = site_field()
    status = forms.ChoiceField(
        choices=[*DeadLetterStatus.choices, ("all", "Any status")],
        required=False,
        initial=DeadLetterStatus.OPEN,
    )
    errorcode = forms.CharField(required=False, max_length=200, help_text=f"“{EMPTY}” for none.")
    function = forms.CharField(required=False, max_length=100)
    http_status = forms.RegexField(
        regex=rf"^(\d{{3}}|{EMPTY})$", required=False, label="HTTP status", help_text=f"“{EMPTY}” for none."
    )
    since = forms.DateTimeField(
        required=False,
        label="Last failure from",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="In your time zone (Your settings).",
    )
    until = forms.DateTimeField(
        required=False, label="Last failure to", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    run = forms.IntegerField(required=False, min_value=1, label="Run #", widget=forms.HiddenInput)

    @property
    def chosen_status(self) -> str:
        return self.value("status") or DeadLetterStatus.OPEN

    def filter(self, letters: QuerySet) -> QuerySet:
        if self.chosen_status != "all":
            letters = letters.filter(status=self.chosen_status)
        if site := self.value("site"):
            letters = letters.filter(site=site)
        if errorcode := self.value("errorcode"):
            letters = letters.filter(errorcode="" if errorcode == EMPTY else errorcode)
        if function := self.value("function"):
            letters = letters.filter(function=function)
        if http_status := self.value("http_status"):
            letters = letters.filter(http_status=None if http_status == EMPTY else int(http_status))
        if since := self.value("since"):
            letters = letters.filter(last_failed_at__gte=since)
        if until := self.value("until"):
            letters = letters.filter(last_failed_at__lte=until)
        if run := self.value("run"):
            letters = letters.filter(run_id=run)
        return letters

    def describe(self) -> str:
        """The filter in words, for the confirmation of a bulk action."""
        status = dict(self.fields["status"].choices)[self.chosen_status].lower()
        words = [f"{status} dead letters" if self.chosen_status != "all" else "dead letters of any status"]
        site = self.value("site")
        words.append(f"on {site.name}" if site else "on every site")
        if errorcode := self.value("errorcode"):
            words.append("without an errorcode" if errorcode == EMPTY else f"that failed with {errorcode}")
        if function := self.value("function"):
            words.append(f"in {function}")
        if http_status := self.value("http_status"):
            words.append("without an HTTP status" if http_status == EMPTY else f"with HTTP {http_status}")
        # Typed as wall-clock time in the viewer's zone (the active one), as every time on the pages is shown.
        zone = timezone.get_current_timezone_name()
        since, until = self.value("since"), self.value("until")
        if since and until:
            words.append(f"last failing between {since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} ({zone})")
        elif since:
            words.append(f"last failing since {since:%Y-%m-%d %H:%M} ({zone})")
        elif until:
            words.append(f"last failing before {until:%Y-%m-%d %H:%M} ({zone})")
        if run := self.value("run"):
            words.append(f"from run #{run}")
        return " ".join(words)


def zoneinfo_or_none(name: str):
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


# -- actions ----------------------------------------------------------------------------------------------


class StartRunForm(forms.Form):
    mode = forms.ChoiceField(
        choices=[(RunKind.INCREMENTAL, "Incremental"), (RunKind.BOOTSTRAP, "Bootstrap")],
        initial=RunKind.INCREMENTAL,
        widget=forms.RadioSelect,
    )
    dry_run = forms.BooleanField(
        required=False,
        label="Dry run",
        help_text="Read the source and look people up in Moodle, but write nothing: shows what a real run "
        "would do, with counts, examples and an estimate of the run's length.",
    )
    upload = forms.FileField(
        required=False,
        label="CSV file (optional)",
        help_text="Read this file instead of the source's configured path, for this run only.",
    )

    def __init__(self, *args, site: MoodleSite, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.site = site
        source = site.source if _has_source(site) else None
        if source is None or source.kind != SourceKind.CSV:
            del self.fields["upload"]
        else:
            self.fields["upload"].help_text += (
                f" At most {settings.UPLOAD_MAX_MB} MB; kept {settings.UPLOAD_KEEP_HOURS} hours for a real "
                "run after a dry run."
            )

    def clean_upload(self):
        upload = self.cleaned_data.get("upload")
        if upload:
            check_csv_upload(upload, "Split the file, or put it where the site's source reads it from.")
        return upload

    def clean(self) -> dict:
        cleaned = super().clean()
        if not _has_source(self.site):
            raise forms.ValidationError(
                "This site has no source yet: an Admin sets it up on the site page (Set up its source and "
                "mapping)."
            )
        try:
            self.site.mapping()
        except ValueError as exc:
            # A run would read the whole source only to fail on its first record; say it now.
            raise forms.ValidationError(
                f"This site's mapping is not valid, so nothing can run: {exc}. An Admin fixes it on the "
                "site's mapping page."
            ) from None
        return cleaned


def _has_source(site: MoodleSite) -> bool:
    try:
        site.source  # noqa: B018 - the reverse one-to-one raises when missing
    except SyncSource.DoesNotExist:
        return False
    return True


class DiscardForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=2000,
        help_text="Kept with the dead letter, e.g. “person left before the outage; nothing to send”.",
    )

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("Say why this dead letter is discarded.")
        return reason


# -- reconciliation and approvals ---------------------------------------------------------------------

WAITING = "waiting"  # a status filter value: open or blocked, i.e. everything an admin still has to decide
ANY_STATUS = "all"


SAFE, DESTRUCTIVE = "safe", "destructive"
EFFECTS = [
    (DESTRUCTIVE, "Takes access away (suspend, re-link)"),
    (SAFE, "Towards the source (update, create, unsuspend)"),
]


class DiscrepancyFilterForm(FilterForm):
    kind = forms.ChoiceField(choices=with_any(DiscrepancyKind.choices), required=False)
    effect = forms.ChoiceField(choices=with_any(EFFECTS), required=False, label="Effect")
    status = forms.ChoiceField(
        choices=[(WAITING, "Waiting for a decision"), *DiscrepancyStatus.choices, (ANY_STATUS, "Any status")],
        required=False,
        initial=WAITING,
    )
    site = site_field()
    run = forms.IntegerField(
        required=False, min_value=1, label="Run #", help_text="The reconciliation that found them."
    )

    @property
    def chosen_status(self) -> str:
        return self.value("status") or WAITING

    def filter(self, discrepancies: QuerySet, *, by_kind_and_site: bool = True) -> QuerySet:
        """`by_kind_and_site=False` leaves kind and site out: the counts table spans every kind and site."""
        if self.chosen_status == WAITING:
            discrepancies = discrepancies.filter(status__in=DiscrepancyStatus.waiting())
        elif self.chosen_status != ANY_STATUS:
            discrepancies = discrepancies.filter(status=self.chosen_status)
        if run := self.value("run"):
            discrepancies = discrepancies.filter(run_id=run)
        if effect := self.value("effect"):
            destructive = Q(proposed_action__in=ResolutionAction.destructive())
            discrepancies = discrepancies.filter(destructive if effect == DESTRUCTIVE else ~destructive)
        if by_kind_and_site:
            if kind := self.value("kind"):
                discrepancies = discrepancies.filter(kind=kind)
            if site := self.value("site"):
                discrepancies = discrepancies.filter(site=site)
        return discrepancies

    def describe(self) -> str:
        """The filter in words, for the confirmation of a bulk approval."""
        kind = self.value("kind")
        words = [f"{DiscrepancyKind(kind).label.lower()} discrepancies" if kind else "discrepancies"]
        status = self.chosen_status
        if status == WAITING:
            words.append("waiting for a decision")
        elif status != ANY_STATUS:
            words.append(f"with status “{DiscrepancyStatus(status).label.lower()}”")
        if effect := self.value("effect"):
            words.append(
                "that take access away" if effect == DESTRUCTIVE else "that bring Moodle towards the source"
            )
        site = self.value("site")
        words.append(f"on {site.name}" if site else "on every site")
        if run := self.value("run"):
            words.append(f"found by run #{run}")
        return " ".join(words)


class ConflictFilterForm(FilterForm):
    kind = forms.ChoiceField(choices=with_any(ConflictKind.choices), required=False)
    status = forms.ChoiceField(
        choices=[*ConflictStatus.choices, (ANY_STATUS, "Any status")],
        required=False,
        initial=ConflictStatus.OPEN,
    )
    site = site_field()
    run = forms.IntegerField(
        required=False, min_value=1, label="Run #", help_text="The run that raised them."
    )

    @property
    def chosen_status(self) -> str:
        return self.value("status") or ConflictStatus.OPEN

    def filter(self, conflicts: QuerySet, *, by_kind_and_site: bool = True) -> QuerySet:
        if self.chosen_status != ANY_STATUS:
            conflicts = conflicts.filter(status=self.chosen_status)
        if run := self.value("run"):
            conflicts = conflicts.filter(run_id=run)
        if by_kind_and_site:
            if kind := self.value("kind"):
                conflicts = conflicts.filter(kind=kind)
            if site := self.value("site"):
                conflicts = conflicts.filter(site=site)
        return conflicts


class ResolutionFilterForm(FilterForm):
    site = site_field()
    status = forms.ChoiceField(choices=with_any(ResolutionStatus.choices), required=False)
    action = forms.ChoiceField(choices=with_any(ResolutionAction.choices), required=False)
    decided = forms.ChoiceField(
        choices=[("", "Anyone"), ("person", "A person"), ("policy", "The site's policy")],
        required=False,
        label="Decided by",
    )
    run = forms.IntegerField(
        required=False, min_value=1, label="Run #", help_text="The run that applied them."
    )

    def filter(self, resolutions: QuerySet) -> QuerySet:
        if site := self.value("site"):
            resolutions = resolutions.filter(site=site)
        if status := self.value("status"):
            resolutions = resolutions.filter(status=status)
        if action := self.value("action"):
            resolutions = resolutions.filter(action=action)
        if decided := self.value("decided"):
            resolutions = resolutions.filter(automatic=decided == "policy")
        if run := self.value("run"):
            resolutions = resolutions.filter(run_id=run)
        return resolutions


# -- courses and cohorts ------------------------------------------------------------------------------------

ATTENTION, WITH_PENDING = "attention", "pending"
TARGET_SHOW = [
    (ATTENTION, "With a problem, people in error or held back"),
    (WITH_PENDING, "With people pending"),
]


class TargetFilterForm(FilterForm):
    """The courses (or cohorts) of a site."""

    q = forms.CharField(
        required=False, max_length=255, label="Search", help_text="Part of the shortname, idnumber or name."
    )
    show = forms.ChoiceField(choices=with_any(TARGET_SHOW, "All"), required=False)

    def filter(self, targets: QuerySet) -> QuerySet:
        if q := (self.value("q") or "").strip():
            targets = targets.filter(Q(key__icontains=q) | Q(name__icontains=q))
        if self.value("show") == ATTENTION:
            targets = targets.filter(
                ~Q(problem="") | _has_members(MembershipStatus.ERROR, MembershipStatus.HELD)
            )
        elif self.value("show") == WITH_PENDING:
            targets = targets.filter(_has_members(*UNSENT))
        return targets


def _has_members(*statuses: str) -> Exists:
    """Whether a target has someone in one of `statuses`: an index look-up per target, not a count."""
    return Exists(Membership.objects.filter(target=OuterRef("pk"), status__in=statuses))


# "Pending" as the pages count it: not sent yet, whether or not the person's account exists yet.
UNSENT = (MembershipStatus.PENDING, MembershipStatus.WAITING)
PRESENT_STATES = [(value, label) for value, label in MembershipState.choices if value]


class MembershipFilterForm(FilterForm):
    """The people of one course or cohort (or of every course and cohort of a site, with `kind`)."""

    status = forms.ChoiceField(
        choices=with_any(
            [
                (value, "Pending or waiting for the account" if value == MembershipStatus.PENDING else label)
                for value, label in MembershipStatus.choices
            ]
        ),
        required=False,
    )
    desired = forms.ChoiceField(choices=with_any(PRESENT_STATES), required=False, label="Source wants")
    synced = forms.ChoiceField(
        choices=with_any(PRESENT_STATES), required=False, label="Moodle holds (as far as the hub knows)"
    )
    run = forms.IntegerField(
        required=False, min_value=1, label="Run #", help_text="Memberships this run touched last."
    )

    def filter(self, memberships: QuerySet) -> QuerySet:
        if status := self.value("status"):
            memberships = memberships.filter(
                status__in=UNSENT if status == MembershipStatus.PENDING else [status]
            )
        if desired := self.value("desired"):
            memberships = memberships.filter(desired=desired)
        if synced := self.value("synced"):
            memberships = memberships.filter(synced=synced)
        if run := self.value("run"):
            memberships = memberships.filter(last_run_id=run)
        return memberships


class SiteMembershipFilterForm(MembershipFilterForm):
    kind = forms.ChoiceField(
        choices=with_any(MembershipKind.choices), required=False, label="Course or cohort"
    )

    field_order = ["kind", "status", "desired", "synced", "run"]

    def filter(self, memberships: QuerySet) -> QuerySet:
        if kind := self.value("kind"):
            memberships = memberships.filter(target__kind=kind)
        return super().filter(memberships)


class EventFilterForm(FilterForm):
    """A site's webhook requests."""

    direction = forms.ChoiceField(choices=with_any(HookDirection.choices), required=False, label="Hook")
    status = forms.ChoiceField(choices=with_any(EventStatus.choices), required=False)

    def filter(self, events: QuerySet) -> QuerySet:
        if direction := self.value("direction"):
            events = events.filter(direction=direction)
        if status := self.value("status"):
            events = events.filter(status=status)
        return events


class CompletionFilterForm(FilterForm):
    """A site's course completions."""

    course = forms.CharField(
        required=False, max_length=255, label="Course", help_text="Part of the course's shortname."
    )

    def filter(self, completions: QuerySet) -> QuerySet:
        if course := (self.value("course") or "").strip():
            completions = completions.filter(course_shortname__icontains=course)
        return completions


class CommentForm(forms.Form):
    text = forms.CharField(
        label="Comment",
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=4000,
        help_text="Seen by everyone who looks at this, e.g. “HR confirms the new department”.",
    )


class OverrideForm(forms.Form):
    """Going past the blast-radius limit: the number of users typed out, and why."""

    typed_count = forms.IntegerField(
        min_value=1,
        label="Type the number of users to confirm",
        help_text="Exactly the number shown above: the hub refuses any other.",
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=2000,
        label="Why go past the limit?",
        help_text="Kept with the override, in the audit trail and in the alert, e.g. “HR confirms 2,038 "
        "leavers at the end of the school year”.",
    )


class RejectForm(forms.Form):
    note = forms.CharField(
        label="Why reject?",
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=2000,
        help_text="Kept in the resolution history, e.g. “Moodle is right: HR will fix the export”.",
    )

    def clean_note(self) -> str:
        note = self.cleaned_data["note"].strip()
        if not note:
            raise forms.ValidationError("Say why this is rejected.")
        return note


class TokenAddForm(forms.Form):
    """A new service token, typed once. The password input never renders its value back, not even when
    another field has an error: the admin re-enters it rather than the page carrying it around."""

    label = forms.CharField(max_length=100, help_text="For people, e.g. “2026 rotation”.")
    token = forms.CharField(
        label="Token",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        max_length=200,
        strip=True,
        help_text="From Moodle: Site administration > Server > Web services > Manage tokens. "
        "Shown afterwards only by its last four characters.",
    )
    valid_until = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="As set in Moodle (“Valid until”); empty if it never expires.",
    )
    ip_restriction = forms.CharField(
        label="IP restriction",
        max_length=500,
        required=False,
        help_text="As set in Moodle, for reference, e.g. “10.0.0.0/8”.",
    )
