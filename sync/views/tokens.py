"""The token lifecycle pages: a site's tokens with the rotation buttons, and the expiry timeline.

Operators may look (they need to know when a token expires); only Admins (sync.manage_tokens) act. A
plaintext token reaches these views once, in the add form's POST, and goes straight to sync.tokens.
"""

from __future__ import annotations

from datetime import datetime, time

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.db.models import Case, IntegerField, Value, When
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from .. import tokens
from ..choices import TokenStatus
from ..forms import TokenAddForm, zoneinfo_or_none
from ..models import MoodleSite, ServiceToken

MANAGE = "sync.manage_tokens"
VIEW = "sync.view_servicetoken"
RED_DAYS = 7
AMBER_DAYS = 30
TIMELINE_MIN_SCALE_DAYS = 90  # so a token with 40 days left does not fill the whole bar
TIMELINE_MAX_SCALE_DAYS = 400


def expiry_class(days: int | None) -> str:
    if days is None:
        return "muted"
    if days <= RED_DAYS:
        return "bad"
    if days <= AMBER_DAYS:
        return "warn"
    return "ok"


def _status_order():
    return Case(
        When(status=TokenStatus.ACTIVE, then=Value(0)),
        When(status=TokenStatus.STANDBY, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )


@permission_required(VIEW, raise_exception=True)
def site_tokens(request: HttpRequest, slug: str) -> HttpResponse:
    """GET lists the site's tokens; POST adds one (Admins only)."""
    site = get_object_or_404(MoodleSite, slug=slug)
    form = TokenAddForm()
    if request.method == "POST":
        if not request.user.has_perm(MANAGE):
            return HttpResponse(status=403)
        form = TokenAddForm(request.POST)
        if form.is_valid():
            try:
                token = tokens.add_token(
                    site,
                    form.cleaned_data["label"],
                    form.cleaned_data["token"],
                    valid_until=_end_of_day(form.cleaned_data["valid_until"], site),
                    ip_restriction=form.cleaned_data["ip_restriction"],
                    user=request.user,
                )
            except tokens.TokenError as exc:
                form.add_error("token", f"Not stored: {exc}.")
            else:
                messages.add_message(request, *_added_message(token))
                return redirect("sync:site_tokens", slug=site.slug)
    return render(request, "sync/token_list.html", _list_context(request, site, form))


def _added_message(token: ServiceToken) -> tuple[int, str]:
    if token.verify_error:
        return messages.WARNING, (
            f"Token {token.masked} stored as standby, but it is not fit for runs yet: {token.verify_error}. "
            "Fix the web service in Moodle, then press Verify."
        )
    if token.status == TokenStatus.ACTIVE:
        return messages.SUCCESS, f"Token {token.masked} verified and active: runs use it from now on."
    return messages.SUCCESS, (
        f"Token {token.masked} verified and stored as standby. Promote it to make runs use it."
    )


def _end_of_day(day, site: MoodleSite) -> datetime | None:
    if day is None:
        return None
    zone = zoneinfo_or_none(site.time_zone) or timezone.get_current_timezone()
    return datetime.combine(day, time(23, 59, 59), tzinfo=zone)


def _list_context(request: HttpRequest, site: MoodleSite, form: TokenAddForm) -> dict:
    rows = list(site.tokens.annotate(order=_status_order()).order_by("order", "-created_at"))
    now = timezone.now()
    for token in rows:
        token.days = token.days_left(now)
        token.expiry = expiry_class(token.days)
    return {
        "site": site,
        "tokens": rows,
        "form": form,
        "can_manage": request.user.has_perm(MANAGE),
        "pending": [t for t in rows if t.revoke_pending and t.status != TokenStatus.REVOKED],
        "active": next((t for t in rows if t.status == TokenStatus.ACTIVE), None),
    }


def _token(slug: str, pk: int) -> ServiceToken:
    return get_object_or_404(ServiceToken.objects.select_related("site"), site__slug=slug, pk=pk)


@permission_required(MANAGE, raise_exception=True)
@require_POST
def token_verify(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    token = _token(slug, pk)
    try:
        ok = tokens.verify(token, request.user)
    except tokens.TokenError as exc:
        messages.error(request, f"Nothing was done: {exc}.")
    else:
        if ok:
            messages.success(request, f"Token {token.masked} verified: it has every function the hub needs.")
        else:
            messages.error(request, f"Token {token.masked} failed verification: {token.verify_error}.")
    return redirect("sync:site_tokens", slug=slug)


@permission_required(MANAGE, raise_exception=True)
def token_promote(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """GET states exactly what happens; POST does it."""
    token = _token(slug, pk)
    current = token.site.active_token()
    if request.method != "POST":
        return render(request, "sync/token_promote.html", {"token": token, "current": current})
    try:
        old = tokens.promote(token, request.user)
    except tokens.TokenError as exc:
        messages.error(request, f"Nothing was done: {exc}.")
    else:
        text = f"Token {token.masked} is now active: runs use it from their next call."
        if old is not None:
            text += f" Now revoke {old.masked} in Moodle, then press “I revoked it in Moodle” below."
        messages.success(request, text)
    return redirect("sync:site_tokens", slug=slug)


@permission_required(MANAGE, raise_exception=True)
def token_revoked(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """GET asks the admin to confirm they revoked it in Moodle; POST records it."""
    token = _token(slug, pk)
    if request.method != "POST":
        return render(request, "sync/token_revoked.html", {"token": token})
    try:
        tokens.confirm_revoked(token, request.user)
    except tokens.TokenError as exc:
        messages.error(request, f"Nothing was done: {exc}.")
    else:
        messages.success(request, f"Token {token.masked} marked revoked. The rotation is complete.")
    return redirect("sync:site_tokens", slug=slug)


@permission_required(VIEW, raise_exception=True)
def token_timeline(request: HttpRequest) -> HttpResponse:
    """Every live token's days left as a bar, soonest expiry first; tokens without expiry at the end."""
    live = list(
        ServiceToken.objects.exclude(status=TokenStatus.REVOKED)
        .select_related("site")
        .order_by("valid_until", "site__name")
    )
    now = timezone.now()
    dated = [t for t in live if t.valid_until is not None]
    undated = [t for t in live if t.valid_until is None]
    days = [t.days_left(now) for t in dated]
    scale = min(max([TIMELINE_MIN_SCALE_DAYS, *days]), TIMELINE_MAX_SCALE_DAYS)
    rows = []
    for token, left in zip(dated, days, strict=True):
        rows.append(
            {
                "token": token,
                "days": left,
                "expiry": expiry_class(left),
                "percent": max(0.0, min(100.0, 100.0 * left / scale)) if left > 0 else 0.0,
            }
        )
    marks = [{"days": d, "percent": 100.0 * d / scale} for d in (RED_DAYS, AMBER_DAYS) if d <= scale]
    return render(
        request,
        "sync/token_timeline.html",
        {"rows": rows, "undated": undated, "scale": scale, "marks": marks},
    )
