"""Pages of the sites: the list, adding a site, a site's page (its state, people, runs, source and
tokens), and starting a run or a reconciliation from it."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import redis
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from monitoring.site_state import site_state

from .. import runs
from ..choices import DeadLetterStatus, RunKind, SyncStatus
from ..forms import StartRunForm
from ..mapping import Mapping
from ..models import MoodleSite, SyncRecord
from ..run import locks
from ..run.connect import shared_redis
from . import setup
from .events import hook_overview
from .memberships import membership_overview


def site_list(request):
    sites = MoodleSite.objects.order_by("name")
    return render(request, "sync/site_list.html", {"sites": sites})


@permission_required("sync.add_moodlesite", raise_exception=True)
def site_add(request):
    return setup.site_form_page(request, None)


def site_detail(request, slug: str):
    site = get_object_or_404(
        MoodleSite.objects.select_related("source").prefetch_related("tokens"), slug=slug
    )
    context = _site_context(site, StartRunForm(site=site))
    context["hooks"] = hook_overview(request, site)
    return render(request, "sync/site_detail.html", context)


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
            return redirect("sync:run_detail", pk=run.pk)
    return render(request, "sync/run_start.html", _start_context(site, form))


@permission_required("sync.operate_runs", raise_exception=True)
@require_POST
def site_reconcile(request, slug: str):
    site = get_object_or_404(MoodleSite, slug=slug)
    try:
        run = runs.start(site, RunKind.RECONCILE, user=request.user)
    except runs.RunActionError as exc:
        messages.error(request, f"Nothing was queued: {exc}.")
        return redirect("sync:site_detail", slug=slug)
    messages.success(
        request,
        f"Queued reconciliation run #{run.pk}: its discrepancies are listed under Discrepancies.",
    )
    return redirect("sync:run_detail", pk=run.pk)


def _site_context(site: MoodleSite, form: StartRunForm) -> dict:
    statuses = dict(
        SyncRecord.objects.filter(site=site).values_list("sync_status").annotate(n=Count("*")).order_by()
    )
    return {
        **_start_context(site, form),
        "state": site_state(site),
        "tokens": site.tokens.all(),
        "runs": site.runs.defer("plan")[:20],
        "lock": _lock_state(site),
        "record_counts": [(status, label, statuses.get(status, 0)) for status, label in SyncStatus.choices],
        "open_dead_letters": site.dead_letters.filter(status=DeadLetterStatus.OPEN).count(),
        "memberships": membership_overview(site),
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
    try:
        mapping = Mapping.from_config(source.mapping or {})
    except ValueError as exc:
        return {"source": source, "config": config, "mapping_error": str(exc), "fields": []}
    return {
        "source": source,
        "config": config,
        "match_key": mapping.match_key,
        "auth": mapping.auth,
        "fields": mapping.describe(),
    }


def _lock_state(site: MoodleSite) -> dict:
    try:
        info = locks.lock_info(shared_redis(), site.slug)
    except redis.RedisError:
        return {"unknown": "Redis did not answer, so the lock cannot be read; try again shortly"}
    if info is None:
        return {"free": True}
    return {
        "info": info,
        "acquired_at": datetime.fromtimestamp(info.acquired_at, tz=UTC),
        "heartbeat_at": datetime.fromtimestamp(info.heartbeat_at, tz=UTC),
        "stale": info.is_stale(info.ttl_s / 4),
    }
