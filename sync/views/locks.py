"""The locks and stuck runs page (Admins): who holds each site's run lock, which runs stopped moving, and
breaking a stale lock."""

from __future__ import annotations

import redis
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from .. import lock_admin
from ..models import MoodleSite

# Breaking a lock fails its run: the same permission as changing runs, which only Admins have.
PERMISSION = "sync.change_syncrun"


@permission_required(PERMISSION, raise_exception=True)
def lock_list(request: HttpRequest) -> HttpResponse:
    try:
        held = lock_admin.held_locks()
        redis_error = ""
    except redis.RedisError as exc:
        held, redis_error = [], type(exc).__name__
    by_run = {h.info.run_id: h for h in held}
    stuck = [(run, by_run.get(run.pk)) for run in lock_admin.stuck_runs()]
    return render(
        request,
        "sync/locks.html",
        {
            "held": held,
            "stuck": stuck,
            "redis_error": redis_error,
            "stuck_after_min": settings.ALERT_STUCK_RUN_S // 60,
            "sites_with_lock": {h.site.slug for h in held},
        },
    )


@permission_required(PERMISSION, raise_exception=True)
def lock_break(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    """GET shows what breaking does; POST breaks (only a stale lock, only if `run_id` still holds it)."""
    site = get_object_or_404(MoodleSite, slug=slug)
    if request.method != "POST":
        try:
            held = next((h for h in lock_admin.held_locks() if h.site.pk == site.pk), None)
        except redis.RedisError as exc:
            messages.error(request, f"Redis did not answer ({type(exc).__name__}): try again in a moment.")
            return redirect("sync:locks")
        if held is not None and held.info.run_id != run_id:
            held = None
        return render(request, "sync/lock_break.html", {"site": site, "run_id": run_id, "held": held})
    try:
        lock_admin.break_stale_lock(site, run_id, request.user)
    except (lock_admin.LockError, redis.RedisError) as exc:
        messages.error(request, f"Nothing was done: {exc}.")
    else:
        messages.success(
            request,
            f"Lock of {site.name} broken and run #{run_id} marked failed. The next run can start; "
            "records that run had not committed stay pending and are sent again.",
        )
    return redirect("sync:locks")
