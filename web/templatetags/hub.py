"""Template helpers shared by every page: times, durations, status colours."""

import zoneinfo
from datetime import timedelta

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


@register.filter
def duration(value: timedelta | None) -> str:
    """'45 s', '12 min 5 s', '3 h 20 min': a run's length at a glance."""
    if value is None:
        return "—"
    seconds = max(0, int(value.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


@register.filter
def item(mapping: dict, key):
    return mapping.get(key) if mapping else None


class EmptyStateNode(template.Node):
    def __init__(self, title, nodelist) -> None:
        self.title = title
        self.nodelist = nodelist

    def render(self, context) -> str:
        return format_html(
            '<section class="card empty"><h2>{}</h2>{}</section>',
            self.title.resolve(context),
            mark_safe(self.nodelist.render(context)),  # noqa: S308 - rendered by the template engine
        )


@register.tag("emptystate")
def emptystate(parser, token):
    """The empty state of every list, in one shape:

    {% emptystate "Nothing here yet" %}what a healthy empty means; what to do if not{% endemptystate %}
    """
    bits = token.split_contents()
    if len(bits) != 2:
        raise template.TemplateSyntaxError("emptystate takes one argument: the title")
    nodelist = parser.parse(("endemptystate",))
    parser.delete_first_token()
    return EmptyStateNode(parser.compile_filter(bits[1]), nodelist)
