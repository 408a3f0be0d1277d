"""Template helpers shared by every page: times, durations, status colours."""

import re
from datetime import UTC, datetime, timedelta

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html
from django.utils.safestring import mark_safe

register = template.Library()

# -- times ---------------------------------------------------------------------------------------------------
# One rule for every page: times are stored in UTC and shown in the active zone, which
# web.middleware.ViewerTimeZoneMiddleware sets to the viewer's choice (else TIME_ZONE), always with the
# zone named. Nothing here takes a site's zone: a run must read the same on every page that shows it.

TIME_FORMAT = "%Y-%m-%d %H:%M %Z"
PLACEHOLDER = re.compile(r"\{(\w+)\}")
# Texts stored before times became data (alerts written before monitoring 0013) say "04:06 UTC" or
# "2026-03-01 04:06 UTC"; they are re-read as instants and shown like the rest.
BAKED_UTC = re.compile(r"\b(?:(\d{4}-\d{2}-\d{2}) )?(\d{1,2}):(\d{2})(?::(\d{2}))? UTC\b")


def format_when(value: datetime, tz=None, fmt: str = TIME_FORMAT) -> str:
    """`value` as wall-clock time in `tz` (default: the active zone, i.e. the viewer's), zone named."""
    return timezone.localtime(value, tz).strftime(fmt)


def zone_abbreviation(tz=None, at: datetime | None = None) -> str:
    """'PST' / 'PDT' / 'CET': what the zone is called at `at` (now by default)."""
    return timezone.localtime(at or timezone.now(), tz).strftime("%Z")


@register.simple_tag
def reltime(value):
    """A time shown relative ("3 minutes ago") with the exact time, in the viewer's zone, on hover. No zone
    argument: templates once passed the site's zone, which made run pages and alert pages disagree about
    the same instant."""
    if value is None:
        return mark_safe('<span class="muted">never</span>')
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        format_when(value, fmt="%Y-%m-%d %H:%M:%S %Z"),
        naturaltime(value),
    )


@register.filter
def when(value) -> str:
    """'2026-03-01 20:06 PST': an exact time in the viewer's zone, for places a relative time won't do."""
    if value is None:
        return "never"
    return format_when(value)


@register.simple_tag
def zone_name() -> str:
    """The IANA name of the zone this page is shown in."""
    return timezone.get_current_timezone_name()


@register.simple_tag
def zone_label() -> str:
    """'PST': the abbreviation the page header shows next to the link to change it."""
    return zone_abbreviation()


@register.simple_tag
def now_in_zone() -> str:
    """'14:05 PST (America/Los_Angeles)'."""
    return f"{format_when(timezone.now(), fmt='%H:%M %Z')} ({timezone.get_current_timezone_name()})"


def fill_times(text: str, times: dict | None, *, tz=None, anchor: datetime | None = None) -> str:
    """A stored text with its instants written in `tz` (default: the viewer's), zone named.

    Texts that mention a time (alerts) store "{name}" placeholders and the instants as data
    (`times = {"name": "<ISO 8601 in UTC>"}`), so a page shows them in its viewer's zone and a notice in
    the recipient's. Texts from before carry "HH:MM UTC", read back relative to `anchor` (when the text
    was written) and shown the same way. Unknown placeholders and other braces are left alone."""
    if not text:
        return text or ""
    if times:

        def placeholder(match: re.Match) -> str:
            raw = times.get(match.group(1))
            at = parse_datetime(raw) if isinstance(raw, str) else raw
            return format_when(at, tz) if isinstance(at, datetime) else match.group(0)

        text = PLACEHOLDER.sub(placeholder, text)
    return BAKED_UTC.sub(lambda match: _baked(match, tz, anchor), text)


def _baked(match: re.Match, tz, anchor: datetime | None) -> str:
    day, hour, minute, second = match.groups()
    try:
        if day:
            at = datetime.fromisoformat(f"{day}T{int(hour):02d}:{minute}:{second or '00'}+00:00")
        else:
            # Only a time of day: the latest such instant at or before the text was written.
            ref = (anchor or timezone.now()).astimezone(UTC)
            at = ref.replace(hour=int(hour), minute=int(minute), second=int(second or 0), microsecond=0)
            if at > ref:
                at -= timedelta(days=1)
    except ValueError:
        return match.group(0)
    fmt = ("%Y-%m-%d " if day else "") + ("%H:%M:%S %Z" if second else "%H:%M %Z")
    return format_when(at, tz, fmt)


@register.filter
def stored_text(obj, field: str) -> str:
    """`{{ alert|stored_text:"detail" }}`: a stored text (title, detail) with its times in the viewer's
    zone; see fill_times."""
    return fill_times(
        getattr(obj, field, "") or "",
        getattr(obj, "times", None),
        anchor=getattr(obj, "last_seen_at", None),
    )


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
        "error": "bad", "conflict": "warn", "pending": "info", "held": "warn", "waiting": "info",
        "accepted": "info", "applied": "ok", "refused": "bad",
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
