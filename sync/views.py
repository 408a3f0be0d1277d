"""Pages of the sync domain. Thin: look up, call the domain, render.

Lists filter through the querystring (so a filtered page can be shared), paginate, and aggregate in SQL:
the number of queries a page makes does not depend on the number of rows behind it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import redis
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Page, Paginator
from django.db.models import Count, Max, Min
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from monitoring.models import CallLog
from monitoring.site_state import site_state

from . import locks, runs
from .choices import ConflictStatus, DeadLetterStatus, RunStatus, SyncStatus
from .connect import NoActiveToken, client_for, shared_redis
from .forms import (
    EMPTY,
    DeadLetterFilterForm,
    DiscardForm,
    RecordFilterForm,
    RunFilterForm,
    SiteForm,
    StartRunForm,
)
from .models import DeadLetter, MoodleSite, RecordEvent, SyncRecord, SyncRun
from .moodle.errors import SeamError

PAGE_SIZE = 50
TIMELINE_LIMIT = 200  # newest run events shown; a run with thousands of bad source rows stays readable
HISTORY_LIMIT = 200
SUMMARY_LIMIT = 30
ERROR_OUTCOMES = ("error", "conflict", "dead_letter")
OUTCOME_LABELS = {"error": "Error", "conflict": "Conflict", "dead_letter": "Dead letter"}


# -- sites --------------------------------------------------------------------------------------------------


def site_list(request):
    sites = MoodleSite.objects.order_by("name")
    return render(request, "sync/site_list.html", {"sites": sites})


@permission_required("sync.add_moodlesite", raise_exception=True)
def site_add(request):
    form = SiteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        site = form.save()
        messages.success(request, f"Site {site.name} added. Next: give it a service token.")
        return redirect("site_detail", slug=site.slug)
    return render(request, "sync/site_form.html", {"form": form})


def site_detail(request, slug: str):
    site = get_object_or_404(
        MoodleSite.objects.select_related("source").prefetch_related("tokens"), slug=slug
    )
    return render(request, "sync/site_detail.html", _site_context(site, StartRunForm(site=site)))


@permission_required("sync.operate_runs", raise_exception=True)
def run_start(request, slug: str):
    site = get_object_or_404(MoodleSite.objects.select_related("source"), slug=slug)
    form = StartRunForm(request.POST or None, request.FILES or None, site=site)
    if request.method == "POST" and form.is_valid():
        try:
            run = runs.start(
                site,
                form.cleaned_data["mode"],
                user=request.user,
                dry_run=form.cleaned_data["dry_run"],
                upload=form.cleaned_data.get("upload"),
            )
        except runs.RunActionError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Queued run #{run.pk}" + (" (dry run)" if run.dry_run else ""))
            return redirect("run_detail", pk=run.pk)
    return render(request, "sync/run_start.html", _start_context(site, form))


def _site_context(site: MoodleSite, form: StartRunForm) -> dict:
    statuses = dict(
        SyncRecord.objects.filter(site=site).values_list("sync_status").annotate(n=Count("pk")).order_by()
    )
    return {
        **_start_context(site, form),
        "state": site_state(site),
        "tokens": site.tokens.all(),
        "runs": site.runs.defer("plan")[:20],
        "lock": _lock_state(site),
        "record_counts": [(status, label, statuses.get(status, 0)) for status, label in SyncStatus.choices],
        "open_dead_letters": site.dead_letters.filter(status=DeadLetterStatus.OPEN).count(),
    }


def _start_context(site: MoodleSite, form: StartRunForm) -> dict:
    return {"site": site, "form": form, "source": _source_facts(site), "active_token": site.active_token()}


_SECRET_KEY = re.compile(r"pass|secret|token|credential|api_?key", re.I)
_URL_PASSWORD = re.compile(r"(//[^/:@\s]+:)[^@/\s]+@")


def _source_facts(site: MoodleSite) -> dict | None:
    """The source as an operator may see it: the config with anything secret-looking hidden (a secret is
    normally named by an environment variable, which is fine to show) and the field mapping."""
    try:
        source = site.source
    except MoodleSite.source.RelatedObjectDoesNotExist:
        return None
    config = []
    for key, value in sorted(source.config.items()):
        text = value if isinstance(value, str) else repr(value)
        if _SECRET_KEY.search(key) and not key.endswith("_secret"):
            text = "(hidden)"
        config.append((key, _URL_PASSWORD.sub(r"\1•••@", text)))
    mapping = source.mapping or {}
    fields = []
    for moodle_field, spec in {**mapping.get("fields", {}), **mapping.get("customfields", {})}.items():
        column = (
            spec if isinstance(spec, str) else spec.get("source") or f"constant {spec.get('value', '')!r}"
        )
        fields.append((moodle_field, column))
    return {
        "source": source,
        "config": config,
        "match_key": mapping.get("match_key", "idnumber"),
        "auth": mapping.get("auth", "manual"),
        "fields": fields,
    }


def _lock_state(site: MoodleSite) -> dict:
    try:
        info = locks.lock_info(shared_redis(), site.slug)
    except redis.RedisError as exc:
        return {"unknown": f"Redis did not answer ({type(exc).__name__})"}
    if info is None:
        return {"free": True}
    return {
        "info": info,
        "acquired_at": datetime.fromtimestamp(info.acquired_at, tz=UTC),
        "heartbeat_at": datetime.fromtimestamp(info.heartbeat_at, tz=UTC),
        "stale": info.is_stale(info.ttl_s / 4),
    }


# -- runs ---------------------------------------------------------------------------------------------------


def run_list(request):
    filters = RunFilterForm(request.GET)
    run_rows = filters.filter(SyncRun.objects.select_related("site").defer("plan")).order_by(
        "-created_at", "-pk"
    )
    page, query = _paginate(request, run_rows)
    return render(request, "sync/run_list.html", {"filters": filters, "page": page, "query": query})


def run_detail(request, pk: int):
    run = get_object_or_404(SyncRun.objects.select_related("site", "started_by"), pk=pk)
    event_count = run.events.count()
    events = list(run.events.order_by("-at", "-pk")[:TIMELINE_LIMIT])[::-1]
    call_errors = (
        CallLog.objects.filter(run=run)
        .exclude(outcome="ok")
        .values("outcome", "errorcode", "function")
        .annotate(calls=Count("pk"), last=Max("started_at"), http_status=Max("http_status"))
        .order_by("-calls", "outcome", "errorcode", "function")
    )
    record_errors = (
        RecordEvent.objects.filter(run=run, outcome__in=ERROR_OUTCOMES)
        .values("outcome")
        .annotate(records=Count("record_id", distinct=True))
        .order_by("outcome")
    )
    context = {
        **_progress_context(run),
        "events": events,
        "event_count": event_count,
        "call_errors": list(call_errors),
        "record_errors": [
            {
                **row,
                "label": OUTCOME_LABELS[row["outcome"]],
                "query": urlencode({"run": run.pk, "outcome": row["outcome"]}),
            }
            for row in record_errors
        ],
    }
    return render(request, "sync/run_detail.html", context)


def run_progress(request, pk: int):
    """The live part of the run page, polled by htmx while the run may still change."""
    run = get_object_or_404(SyncRun.objects.select_related("site", "started_by"), pk=pk)
    response = render(request, "sync/_run_progress.html", _progress_context(run))
    if request.headers.get("HX-Request") and not run.is_active:
        # Only an active run's block polls, so the run has just ended: reload the whole page, whose
        # errors and timeline were rendered while it was still going.
        response["HX-Refresh"] = "true"
    return response


def _progress_context(run: SyncRun) -> dict:
    per_minute = eta = None
    if run.started_at and run.last_progress_at and run.progress_done:
        minutes = (run.last_progress_at - run.started_at).total_seconds() / 60
        if minutes > 0:
            per_minute = run.progress_done / minutes
            left = max(0, run.progress_total - run.progress_done)
            if run.status == RunStatus.RUNNING and left:
                eta = timezone.now() + timedelta(minutes=left / per_minute)
    pending = None
    if run.status == RunStatus.ABORTED:
        pending = SyncRecord.objects.filter(site=run.site, sync_status=SyncStatus.PENDING).count()
    return {
        "run": run,
        "per_minute": round(per_minute) if per_minute is not None else None,
        "eta": eta,
        "counters": _counters(run),
        "waiting": run.is_active and run.abort_reason.startswith("waiting"),
        "plan": _plan_rows(run.plan) if run.dry_run and run.plan else None,
        "pending": pending,
        "resumable": runs.resumable(run),
    }


def _counters(run: SyncRun) -> list[tuple[str, int, str | None]]:
    """Each counter with the list of the rows behind it, where such a list exists."""
    records, letters = reverse("record_list"), reverse("deadletter_list")
    held = reverse("discrepancy_list")

    def rows(**params) -> str:
        return f"{records}?{urlencode({'run': run.pk, **params})}"

    return [
        ("Seen", run.seen, None),
        ("Changed", run.changed, rows()),
        ("Created", run.created, rows(outcome="created")),
        ("Updated", run.updated, rows(outcome="updated")),
        ("Suspended", run.suspended, rows(outcome="suspended")),
        ("Unchanged", run.unchanged, None),
        ("Skipped", run.skipped, None),
        ("Conflicts", run.conflicts, rows(outcome="conflict")),
        ("Errors", run.errors, rows(status=SyncStatus.ERROR)),
        ("Dead-lettered", run.dead_lettered, f"{letters}?{urlencode({'run': run.pk, 'status': 'all'})}"),
        ("Held back by the guard", run.blocked, f"{held}?{urlencode({'run': run.pk, 'status': 'all'})}"),
        ("Moodle calls", run.calls, None),
    ]


# What a dry run's plan holds, in the order an operator reads it, with the example lists that go with it.
_PLAN_ROWS = (
    ("seen", "Source records read", ()),
    ("would_create", "Would create", ("create",)),
    ("would_update", "Would update", ("update", "link")),
    ("would_suspend", "Would suspend (left the source)", ("suspend",)),
    ("already_in_step", "Already in step", ("unchanged",)),
    ("conflicts", "Conflicts", ("conflict",)),
    ("invalid", "Invalid (not sent)", ("invalid", "error")),
    ("skipped", "Skipped (unresolved conflicts and errors)", ()),
    ("removal_blocked", "Suspensions blocked by the blast-radius guard", ("removal_blocked",)),
)


def _plan_rows(plan: dict) -> dict:
    examples = plan.get("examples", {})
    rows = [
        {
            "key": key,
            "label": label,
            "count": plan.get(key, 0),
            "examples": [e for k in kinds for e in examples.get(k, [])],
        }
        for key, label, kinds in _PLAN_ROWS
        if key in plan
    ]
    return {"rows": rows, "estimate": plan.get("estimate") or {}}


@permission_required("sync.operate_runs", raise_exception=True)
@require_POST
def run_pause(request, pk: int):
    run = get_object_or_404(SyncRun, pk=pk)
    return _run_action(
        request, run, runs.pause, f"Pause requested for run #{run.pk}: it stops after the batch in flight."
    )


@permission_required("sync.operate_runs", raise_exception=True)
@require_POST
def run_resume(request, pk: int):
    run = get_object_or_404(SyncRun, pk=pk)
    return _run_action(
        request, run, runs.resume, f"Run #{run.pk} queued to resume: it continues with the pending records."
    )


@permission_required("sync.operate_runs", raise_exception=True)
def run_cancel(request, pk: int):
    """GET asks for confirmation (no JavaScript needed); POST cancels."""
    run = get_object_or_404(SyncRun.objects.select_related("site"), pk=pk)
    if request.method != "POST":
        return render(request, "sync/run_cancel.html", {"run": run})
    done = (
        f"Run #{run.pk} cancelled."
        if run.status in (RunStatus.QUEUED, RunStatus.PAUSED)
        else f"Cancel requested for run #{run.pk}: it stops after the batch in flight."
    )
    return _run_action(request, run, runs.cancel, done)


def _run_action(request, run: SyncRun, action, done: str) -> HttpResponse:
    try:
        action(run, request.user)
    except runs.RunActionError as exc:
        messages.error(request, f"Nothing was done: {exc}.")
    else:
        messages.success(request, done)
    return redirect("run_detail", pk=run.pk)


# -- records ------------------------------------------------------------------------------------------------


def record_list(request):
    filters = RecordFilterForm(request.GET)
    records = (
        filters.filter(SyncRecord.objects.select_related("site", "last_run"))
        .defer("payload", "create_only", "last_run__plan")
        .order_by("-pk")
    )
    page, query = _paginate(request, records)
    return render(
        request,
        "sync/record_list.html",
        {"filters": filters, "page": page, "query": query, "filtered": bool(request.GET)},
    )


def record_detail(request, pk: int):
    record = get_object_or_404(_records(), pk=pk)
    return render(request, "sync/record_detail.html", _record_context(record))


@require_POST
@permission_required("sync.operate_runs", raise_exception=True)  # it spends the site's call budget
def record_lookup(request, pk: int):
    """Ask Moodle now for the user behind this record, to compare with what the source says."""
    record = get_object_or_404(_records(), pk=pk)
    users, error, asked = None, "", ""
    try:
        with client_for(record.site) as client:
            if record.moodle_id:
                asked = f"Moodle user id {record.moodle_id}"
                users = client.get_users_by_field("id", [record.moodle_id])
            else:
                asked = f"idnumber {record.external_id}"
                users = client.get_users_by_field("idnumber", [record.external_id])
                if not users and record.username:
                    asked += f", then username {record.username}"
                    users = client.get_users_by_field("username", [record.username])
    except NoActiveToken:
        error = (
            f"Moodle was not asked: {record.site.name} has no active service token. "
            "An administrator adds or promotes one on the site page."
        )
    except SeamError as exc:
        error = f"Moodle did not answer the look-up: {exc}"
    except redis.RedisError as exc:
        error = f"Moodle was not asked: Redis, which paces the calls, did not answer ({type(exc).__name__})."
    return render(
        request,
        "sync/record_detail.html",
        _record_context(record, looked_up=users, lookup_error=error, asked=asked),
    )


def _records():
    return SyncRecord.objects.select_related("site", "last_run")


def _record_context(record: SyncRecord, *, looked_up=None, lookup_error: str = "", asked: str = "") -> dict:
    from .views_reconcile import conflict_choices  # that module builds on this one's helpers

    conflicts = [
        conflict_choices(c) for c in record.conflicts.filter(status=ConflictStatus.OPEN).select_related("run")
    ]
    letters = list(record.dead_letters.select_related("run", "retry_run").order_by("-last_failed_at")[:20])
    if looked_up is not None:
        theirs, theirs_from = looked_up, f"Moodle now (looked up by {asked})"
    else:
        theirs = _unique_users(user for conflict in conflicts for user in conflict.their_users)
        theirs_from = "Moodle, as recorded with the open conflict" if theirs else ""
    return {
        "record": record,
        "site": record.site,
        "history": record.events.select_related("run").defer("run__plan")[:HISTORY_LIMIT],
        "conflicts": conflicts,
        "dead_letters": letters,
        "comparison": _compare(record, theirs),
        "theirs": theirs,
        "theirs_from": theirs_from,
        "looked_up": looked_up is not None,
        "lookup_error": lookup_error,
    }


def _unique_users(users) -> list[dict]:
    seen, unique = set(), []
    for user in users:
        if user.get("id") not in seen:
            seen.add(user.get("id"))
            unique.append(user)
    return unique


_MOODLE_FIELDS = ("id", "username", "email", "firstname", "lastname", "idnumber", "auth", "suspended")


def _flat(user: dict) -> dict:
    """Custom profile fields as profile_field_<shortname>, like the form Moodle's upload tool uses."""
    values = {key: value for key, value in user.items() if key != "customfields"}
    for field in user.get("customfields") or []:
        name = field.get("shortname") or field.get("type")
        if name:
            values[f"profile_field_{name}"] = field.get("value")
    return values


def _same(ours, theirs) -> bool:
    def norm(value) -> str:
        if isinstance(value, bool):
            return "1" if value else "0"
        return "" if value is None else str(value).strip()

    return norm(ours) == norm(theirs)


def _compare(record: SyncRecord, users: list[dict]) -> list[dict]:
    """The source's values beside each Moodle user's, field by field, with the differing cells marked."""
    ours = _flat(record.payload or {})
    ours.setdefault("id", record.moodle_id)
    theirs = [_flat(user) for user in users]
    fields = list(dict.fromkeys([*_MOODLE_FIELDS, *ours]))
    fields = [f for f in fields if f in ours or any(f in user for user in theirs)]
    rows = []
    for field in fields:
        cells = []
        for user in theirs:
            known = field in user
            differs = known and field in ours and not _same(ours.get(field), user.get(field))
            cells.append({"value": user.get(field), "known": known, "differs": differs})
        rows.append({"field": field, "ours": ours.get(field), "has_ours": field in ours, "theirs": cells})
    return rows


# -- dead letters -------------------------------------------------------------------------------------------


def deadletter_list(request):
    filters = DeadLetterFilterForm(request.GET)
    letters = filters.filter(DeadLetter.objects.all())
    active = filters.active()
    summary = (
        letters.values("errorcode", "function", "http_status")
        .annotate(letters=Count("pk"), first=Min("first_failed_at"), last=Max("last_failed_at"))
        .order_by("-letters", "errorcode", "function")[:SUMMARY_LIMIT]
    )
    groups = [
        {
            **group,
            "query": urlencode(
                {
                    **active,
                    "errorcode": group["errorcode"] or EMPTY,
                    "function": group["function"],
                    "http_status": group["http_status"] or EMPTY,
                }
            ),
        }
        for group in summary
    ]
    rows = letters.select_related("site", "record", "run", "retry_run").defer(
        "payload", "record__payload", "record__create_only", "run__plan", "retry_run__plan"
    )
    page, query = _paginate(request, rows.order_by("-last_failed_at", "-pk"))
    retryable = (
        page.paginator.count if filters.chosen_status == DeadLetterStatus.OPEN else _open(letters).count()
    )
    return render(
        request,
        "sync/deadletter_list.html",
        {
            "filters": filters,
            "groups": groups,
            "page": page,
            "query": query,
            "filter_query": urlencode(active),
            "retryable": retryable,
            "here": request.get_full_path(),
        },
    )


def _open(letters):
    return letters.filter(status=DeadLetterStatus.OPEN)


@permission_required("sync.retry_deadletter", raise_exception=True)
@require_POST
def deadletter_retry(request, pk: int):
    letter = get_object_or_404(DeadLetter.objects.select_related("site"), pk=pk)
    run = runs.retry_dead_letters(letter.site, [letter], request.user)
    if run is None:
        messages.warning(request, f"Nothing was queued: dead letter #{letter.pk} is no longer open.")
    else:
        messages.success(request, f"Queued retry run #{run.pk} for 1 dead letter")
    return _back(request, reverse("deadletter_list"))


@permission_required("sync.retry_deadletter", raise_exception=True)
def deadletter_retry_filtered(request):
    """GET: the exact count and the filter in words. POST, carrying the same filter: a retry run per site."""
    data = (request.POST if request.method == "POST" else request.GET).copy()
    data["status"] = DeadLetterStatus.OPEN  # only open letters can be retried, whatever the list showed
    filters = DeadLetterFilterForm(data)
    letters = filters.filter(DeadLetter.objects.all())
    by_site = list(letters.values("site__name").annotate(letters=Count("pk")).order_by("site__name"))
    count = sum(row["letters"] for row in by_site)
    changed = None
    if request.method == "POST":
        confirmed = request.POST.get("count", "")
        if confirmed != str(count):
            changed = confirmed  # rows changed since the confirmation: confirm the new number
        else:
            return _retry_all(request, filters, letters)
    return render(
        request,
        "sync/deadletter_retry_filtered.html",
        {
            "filters": filters,
            "described": filters.describe(),
            "count": count,
            "by_site": by_site,
            "hidden": filters.active(),
            "changed": changed,
            "filter_query": urlencode(filters.active()),
        },
    )


def _retry_all(request, filters: DeadLetterFilterForm, letters) -> HttpResponse:
    chosen = list(letters.select_related("site").only("pk", "site"))
    sites = {letter.site_id: letter.site for letter in chosen}
    for site_id, site in sites.items():
        run = runs.retry_dead_letters(
            site, [letter for letter in chosen if letter.site_id == site_id], request.user
        )
        if run is None:
            messages.warning(
                request, f"Nothing was queued for {site.name}: those dead letters are no longer open."
            )
        else:
            messages.success(request, f"Queued retry run #{run.pk} for {_queued(run)} dead letters")
    if not sites:
        messages.info(request, "No open dead letter matches this filter: nothing was queued.")
    # Show the same letters, whatever their status now, so each retry's outcome appears in place.
    return redirect(f"{reverse('deadletter_list')}?{urlencode({**filters.active(), 'status': 'all'})}")


def _queued(run: SyncRun) -> int:
    """How many letters the run took: another request may have claimed some of them in the meantime."""
    return DeadLetter.objects.filter(retry_run=run).count()


@permission_required("sync.retry_deadletter", raise_exception=True)
def deadletter_discard(request, pk: int):
    """GET asks for the reason; POST discards with it. The reason is required and kept on the row."""
    letter = get_object_or_404(DeadLetter.objects.select_related("site", "record"), pk=pk)
    form = DiscardForm(request.POST or None)
    back = _next(request, reverse("deadletter_list"))
    if letter.status != DeadLetterStatus.OPEN:
        messages.warning(
            request, f"Dead letter #{letter.pk} is {letter.get_status_display().lower()}: nothing to discard."
        )
        return redirect(back)
    if request.method == "POST" and form.is_valid():
        try:
            runs.discard_dead_letter(letter, request.user, form.cleaned_data["reason"])
        except runs.RunActionError as exc:
            form.add_error("reason", str(exc))
        else:
            messages.success(request, f"Dead letter #{letter.pk} discarded; the reason is kept with it.")
            return redirect(back)
    return render(request, "sync/deadletter_discard.html", {"letter": letter, "form": form, "next": back})


# -- helpers ------------------------------------------------------------------------------------------------


def _paginate(request: HttpRequest, queryset) -> tuple[Page, str]:
    """The requested page, and the querystring without `page` for the page links."""
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    return page, params.urlencode()


def _next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def _back(request: HttpRequest, default: str) -> HttpResponse:
    return redirect(_next(request, default))
