"""The webhook secrets page of a site, Admins only (the token permission): each hook's secrets, making or
rotating one, revoking one.

A new secret's plaintext is in the POST's response page and nowhere else: not in a redirect, a message kept
in the session, a log line or the audit trail. The page is not cached; afterwards the secret is shown by its
last four characters only.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from .. import hook_secrets
from ..choices import HookDirection, HookSecretStatus
from ..hooks import source_id_field
from ..models import HookSecret, MoodleSite
from .events import hook_url


@permission_required(hook_secrets.MANAGE, raise_exception=True)
def site_hook_secrets(request: HttpRequest, slug: str) -> HttpResponse:
    return _page(request, get_object_or_404(MoodleSite, slug=slug))


@never_cache
@permission_required(hook_secrets.MANAGE, raise_exception=True)
@require_POST
def hook_secret_make(request: HttpRequest, slug: str) -> HttpResponse:
    """Make the hook's first secret, or rotate it; the answer is the page with the new secret shown once."""
    site = get_object_or_404(MoodleSite, slug=slug)
    direction = request.POST.get("direction", "")
    if direction not in HookDirection.values:
        raise Http404("no such hook")
    plaintext, secret = hook_secrets.make(site, direction, request.user)
    return _page(request, site, shown={"secret": secret, "plaintext": plaintext})


@permission_required(hook_secrets.MANAGE, raise_exception=True)
@require_POST
def hook_secret_revoke(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    secret = get_object_or_404(HookSecret.objects.select_related("site"), site__slug=slug, pk=pk)
    try:
        secret = hook_secrets.revoke(secret, request.user)
    except hook_secrets.HookSecretError as exc:
        messages.error(request, f"Nothing was done: {exc}.")
    else:
        text = (
            f"{secret.get_direction_display()} secret …{secret.last4} revoked: the hook no longer accepts it."
        )
        if not secret.site.hook_secrets.filter(
            direction=secret.direction, status=HookSecretStatus.ACTIVE
        ).exists():
            text += " The hook now has no active secret and refuses every request until a new one is made."
        messages.success(request, text)
    return redirect("sync:site_hook_secrets", slug=slug)


def _page(request: HttpRequest, site: MoodleSite, *, shown: dict | None = None) -> HttpResponse:
    now = timezone.now()
    secrets = list(site.hook_secrets.select_related("created_by").order_by("direction", "-created_at"))
    for secret in secrets:
        secret.accepted_now = secret.accepts_at(now)
    hooks = [
        {
            "direction": direction,
            "label": label,
            "url": hook_url(request, site, direction),
            "secrets": [s for s in secrets if s.direction == direction],
            "active": next(
                (s for s in secrets if s.direction == direction and s.status == HookSecretStatus.ACTIVE), None
            ),
        }
        for direction, label in HookDirection.choices
    ]
    return render(
        request,
        "sync/hook_secrets.html",
        {
            "site": site,
            "hooks": hooks,
            "shown": shown,
            "id_field": source_id_field(site),
            "window_s": settings.HOOK_TIMESTAMP_WINDOW_S,
            "overlap_hours": settings.HOOK_SECRET_OVERLAP_HOURS,
            "retention_days": settings.HOOK_RETENTION_DAYS,
            "max_bytes": settings.HOOK_MAX_BYTES,
        },
    )
