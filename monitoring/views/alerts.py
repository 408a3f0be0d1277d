"""The alerts pages: what is wrong now (open and acknowledged first), what cleared, the mutes, and the
channels notices leave through.

Operators see alerts, acknowledge them and mute them; Admins also manage channels. The views only look
up, call monitoring.alerts / monitoring.channels and report; every change is audited there.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Q, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from web.pages import paginate, safe_next
from web.templatetags.hub import format_when, stored_text

from .. import alerts, channels
from ..forms_alerts import KIND_LABELS, AlertFilterForm, ChannelForm, MuteForm
from ..kinds import AlertKind
from ..models import Alert, AlertChannel, AuditEntry, Delivery

UNRESOLVED = (Alert.Status.OPEN, Alert.Status.ACKNOWLEDGED)
RECENT_DELIVERIES = 5


def _with_last_delivery(queryset):
    """Each alert with its newest delivery attempt's outcome, in one query."""
    last = Delivery.objects.filter(alert=OuterRef("pk")).order_by("-at", "-pk")
    return queryset.annotate(
        last_delivery_ok=Subquery(last.values("ok")[:1]),
        last_delivery_error=Subquery(last.values("error")[:1]),
        last_delivery_at=Subquery(last.values("at")[:1]),
        last_delivery_channel=Subquery(last.values("channel__name")[:1]),
    )


@permission_required("monitoring.view_alert", raise_exception=True)
def alert_list(request: HttpRequest) -> HttpResponse:
    filters = AlertFilterForm(request.GET)
    # Test notices are saved only so their deliveries have an alert; they are shown on the channels page.
    rows = filters.filter(
        Alert.objects.exclude(kind=AlertKind.TEST).select_related("site", "acknowledged_by")
    )
    current = list(
        _with_last_delivery(rows.filter(status__in=UNRESOLVED)).order_by(
            "status", "severity", "-last_seen_at"
        )
    )
    mutes = alerts.active_mutes()
    for alert in current:
        alert.muted_by = alerts.muted_by(alert.key, mutes)
    page, query = paginate(
        request, _with_last_delivery(rows.filter(status=Alert.Status.RESOLVED)).order_by("-resolved_at")
    )
    channel_counts = AlertChannel.objects.aggregate(
        working=Count("pk", filter=Q(enabled=True)), broken=Count("pk", filter=Q(enabled=False))
    )
    return render(
        request,
        "monitoring/alert_list.html",
        {
            "channel_counts": channel_counts,
            "filters": filters,
            "current": current,
            "page": page,
            "query": query,
            "mutes": mutes,
            "kind_labels": KIND_LABELS,
            "here": request.get_full_path(),
        },
    )


@require_POST
@permission_required("monitoring.change_alert", raise_exception=True)
def alert_acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    alert = get_object_or_404(Alert, pk=pk)
    title = stored_text(alert, "title")
    if alerts.acknowledge(alert, request.user):
        messages.success(request, f"Acknowledged: {title}. No more reminders are sent for it.")
    else:
        messages.info(request, f"“{title}” is already {alert.get_status_display().lower()}.")
    return redirect(safe_next(request, reverse("monitoring:alert_list")))


@permission_required("monitoring.add_alertmute", raise_exception=True)
def alert_mute(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = MuteForm(request.POST)
        if form.is_valid():
            muted = alerts.mute(
                form.cleaned_data["key_prefix"], form.cleaned_data["reason"], form.until(), request.user
            )
            messages.success(
                request,
                f"Muted alerts starting with “{muted.key_prefix}” until {format_when(muted.expires_at)}. "
                "They are still recorded here; notices resume when the mute ends.",
            )
            return redirect(safe_next(request, reverse("monitoring:alert_list")))
    else:
        form = MuteForm(initial={"key_prefix": request.GET.get("prefix", "")})
    return render(request, "monitoring/mute_form.html", {"form": form, "next": safe_next(request, "")})


@permission_required("monitoring.view_alertchannel", raise_exception=True)
def channel_list(request: HttpRequest) -> HttpResponse:
    form = ChannelForm()
    if request.method == "POST":
        if not request.user.has_perm("monitoring.add_alertchannel"):
            raise PermissionDenied
        form = ChannelForm(request.POST)
        if form.is_valid():
            channel = form.save(commit=False)
            channels.set_secret(channel, form.cleaned_data.get("secret", ""))
            channel.save()
            AuditEntry.objects.create(
                actor=request.user, action="channel_added", target=channel.name[:200], detail=channel.kind
            )
            messages.success(request, f"Channel “{channel.name}” added. Send a test notice to check it.")
            return redirect("monitoring:channel_list")
    rows = list(AlertChannel.objects.order_by("name"))
    for channel in rows:
        channel.recent = list(
            channel.deliveries.select_related("alert").order_by("-at", "-pk")[:RECENT_DELIVERIES]
        )
        channel.shown_target = _shown_target(channel)
    return render(request, "monitoring/channel_list.html", {"channels": rows, "form": form})


def _shown_target(channel: AlertChannel) -> str:
    """Email addresses as entered; a webhook as its origin only, since chat webhooks put a secret in
    the path."""
    if channel.kind != AlertChannel.Kind.WEBHOOK:
        return channel.target
    scheme, _, rest = channel.target.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/…"


@require_POST
@permission_required("monitoring.change_alertchannel", raise_exception=True)
def channel_enable(request: HttpRequest, pk: int) -> HttpResponse:
    channel = get_object_or_404(AlertChannel, pk=pk)
    if channels.enable(channel, request.user):
        messages.success(request, f"Channel “{channel.name}” is enabled again.")
    else:
        messages.info(request, f"Channel “{channel.name}” was already enabled.")
    return redirect("monitoring:channel_list")


@require_POST
@permission_required("monitoring.change_alertchannel", raise_exception=True)
def channel_test(request: HttpRequest, pk: int) -> HttpResponse:
    channel = get_object_or_404(AlertChannel, pk=pk)
    error = channels.send_test(channel, request.user)
    if error:
        messages.error(request, f"The test notice to “{channel.name}” failed: {error}")
    else:
        messages.success(request, f"A test notice was delivered to “{channel.name}”.")
    return redirect("monitoring:channel_list")
