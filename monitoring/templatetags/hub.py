"""Template helpers shared by every page."""

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

register = template.Library()


@register.simple_tag
def reltime(value, tz=None):
    """A time shown relative ("3 minutes ago") with the exact time, in the given zone, on hover."""
    if value is None:
        return mark_safe('<span class="muted">never</span>')
    local = timezone.localtime(value, timezone=_zone(tz))
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S %Z"),
        naturaltime(value),
    )


def _zone(name):
    if not name:
        return None
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


@register.filter
def seconds_ago(value) -> str:
    """'40 s', '3 min', '2 h' since a datetime: the short form the heartbeat line uses."""
    if value is None:
        return "never"
    seconds = max(0, int((timezone.now() - value).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


@register.filter
def status_class(status: str) -> str:
    return {
        "succeeded": "ok", "ok": "ok", "running": "info", "queued": "info", "paused": "warn",
        "problems": "warn", "cancelled": "muted", "skipped": "muted", "failed": "bad", "aborted": "bad",
        "error": "bad", "conflict": "warn", "pending": "info",
    }.get(str(status), "muted")  # fmt: skip
