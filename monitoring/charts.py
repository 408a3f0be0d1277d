"""Small server-rendered SVG charts: the page shows its data without JavaScript or a chart library.

Only numbers and escaped labels go into the markup; every bar and point carries a <title>, so hovering
(or a screen reader) gives the exact figures. Times are in the active zone (the viewer's, set by
web.middleware) and every time axis names it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from .metrics import CATEGORIES, CATEGORY_LABELS, OK

# Colours match hub.css's ok/warn/bad/info palette; "ok" is a quiet grey so errors stand out.
COLOURS = {
    OK: "#c9d3df",
    "transient": "#e0a030",
    "maintenance": "#8c6bb1",
    "client_fault": "#3d7cc9",
    "conflict": "#2f9c95",
    "auth": "#c0392b",
    "config": "#7b241c",
}
LATENCY_COLOUR = "#20252e"


def _nice_max(value: float) -> float:
    """A round axis maximum at or above `value` (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _time_label(at: datetime, span_s: float, tz, *, zone: bool = False) -> str:
    local = timezone.localtime(at, tz)
    return local.strftime(("%d %b %H:%M" if span_s > 86400 else "%H:%M") + (" %Z" if zone else ""))


def zone_caption(times: list[datetime], tz=None) -> str:
    """'PST', or 'PST/PDT' when the chart spans a change of clocks: what a time axis says it is in."""
    names: list[str] = []
    for at in times:
        name = timezone.localtime(at, tz).strftime("%Z")
        if name not in names:
            names.append(name)
    return "/".join(names) or timezone.localtime(timezone.now(), tz).strftime("%Z")


def _axis_title(x: float, y: float, text: str, *, anchor: str = "middle", rotate: bool = False) -> str:
    turn = f' transform="rotate(-90 {x:.1f} {y:.1f})"' if rotate else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="axis axis-title"{turn}>'
        f"{escape(text)}</text>"
    )


def calls_chart(
    points: list[dict], *, bucket_s: int, tz=None, width: int = 880, height: int = 240
) -> SafeString:
    """Calls per bucket stacked by outcome (ok at the bottom, error categories above) with the p90
    latency as a line on its own axis at the right."""
    left, right, top, bottom = 56, 76, 12, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(1, len(points))
    slot = plot_w / n
    bar_w = max(1.0, slot * 0.8)
    max_calls = _nice_max(max((p["total"] for p in points), default=0))
    max_ms = _nice_max(max((p["p90"] or 0 for p in points), default=0))
    span_s = n * bucket_s
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-labelledby="calls-chart-title" xmlns="http://www.w3.org/2000/svg">',
        '<title id="calls-chart-title">Moodle calls per interval by outcome, with p90 latency</title>',
    ]
    for fraction in (0, 0.5, 1):
        y = top + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e3e6eb" />'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
            f"{max_calls * fraction:g}</text>"
            f'<text x="{left + plot_w + 6}" y="{y + 4:.1f}" class="axis">{max_ms * fraction:g} ms</text>'
        )
    for i, point in enumerate(points):
        x = left + i * slot + (slot - bar_w) / 2
        y = top + plot_h
        label = _time_label(point["at"], span_s, tz, zone=True)
        for category in (OK, *CATEGORIES):
            count = point["ok"] if category == OK else point["categories"].get(category, 0)
            if not count:
                continue
            h = plot_h * count / max_calls
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{COLOURS[category]}">'
                f"<title>{escape(label)}: {count} {escape(CATEGORY_LABELS[category].lower())}</title></rect>"
            )
    line = [
        (left + i * slot + slot / 2, top + plot_h * (1 - (p["p90"] or 0) / max_ms), p)
        for i, p in enumerate(points)
        if p["p90"] is not None
    ]
    if line:
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in line)
        parts.append(
            f'<polyline class="latency" points="{coords}" fill="none" stroke="{LATENCY_COLOUR}" '
            f'stroke-width="1.5" />'
        )
        for x, y, p in line:
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{LATENCY_COLOUR}">'
                f"<title>{escape(_time_label(p['at'], span_s, tz, zone=True))}: p90 ≈ {p['p90']:.0f} ms, "
                f"p50 ≈ {p['p50']:.0f} ms</title></circle>"
            )
    ticks = max(1, n // 6)
    for i in range(0, n, ticks):
        x = left + i * slot + slot / 2
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16:.1f}" text-anchor="middle" class="axis">'
            f"{escape(_time_label(points[i]['at'], span_s, tz))}</text>"
        )
    zone = zone_caption([p["at"] for p in points], tz)
    parts.append(_axis_title(left + plot_w / 2, height - 6, f"Time ({zone})"))
    parts.append(_axis_title(14, top + plot_h / 2, "Calls", rotate=True))
    parts.append(_axis_title(width - 10, top + plot_h / 2, "p90 latency (ms)", rotate=True))
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - numbers and escaped labels only


def legend() -> list[dict]:
    """The chart's colours, for a legend in the template."""
    return [{"category": c, "label": CATEGORY_LABELS[c], "colour": COLOURS[c]} for c in (OK, *CATEGORIES)] + [
        {"category": "latency", "label": "p90 latency (right axis)", "colour": LATENCY_COLOUR}
    ]


def sparkline(
    values: list[float | None],
    *,
    end: datetime | None = None,
    step_s: int = 300,
    tz=None,
    width: int = 360,
    height: int = 132,
) -> SafeString:
    """The last hour's p90 latency per bucket as a small chart that can be read: a y axis in ms, an x axis
    with times in the viewer's zone (named), and each bucket's figure on hover. Gaps (no calls in a
    bucket) break the line rather than pretend zero.

    `values` are oldest first, one per `step_s`, the last being the bucket at `end` (default: now floored
    to `step_s`, which is how metrics.latency_sparklines lays them out)."""
    n = len(values)
    if end is None:
        epoch = int(timezone.now().timestamp())
        end = datetime.fromtimestamp(epoch - epoch % step_s, tz=UTC)
    times = [end - timedelta(seconds=step_s * (n - 1 - i)) for i in range(n)]
    left, right, top, bottom = 52, 10, 8, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    known = [v for v in values if v is not None]
    max_ms = _nice_max(max(known, default=0))
    slot = plot_w / max(1, n)
    zone = zone_caption(times, tz)
    label = (
        f"p90 latency over the last hour, up to {max(known):.0f} ms" if known else "no calls in the last hour"
    )
    parts = [
        f'<svg class="sparkline" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
    ]
    for fraction in (0, 0.5, 1):
        y = top + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e3e6eb" />'
            f'<text x="{left - 4}" y="{y + 3.5:.1f}" text-anchor="end" class="axis">'
            f"{max_ms * fraction:g} ms</text>"
        )
    if not known:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2 + 4:.1f}" text-anchor="middle" '
            'class="axis">no calls in the last hour</text>'
        )
    segments: list[list[tuple[float, float]]] = [[]]
    columns: list[str] = []
    for i, (at, value) in enumerate(zip(times, values, strict=True)):
        x = left + i * slot + slot / 2
        figure = f"p90 ≈ {value:.0f} ms" if value is not None else "no calls"
        # A transparent column per bucket, drawn over the line: hovering anywhere above a time shows it.
        columns.append(
            f'<rect x="{left + i * slot:.1f}" y="{top}" width="{slot:.1f}" height="{plot_h:.1f}" '
            f'fill="transparent"><title>{escape(_time_label(at, 0, tz, zone=True))}: {figure}</title></rect>'
        )
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        segments[-1].append((x, top + plot_h * (1 - value / max_ms)))
    for segment in segments:
        if len(segment) > 1:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in segment)
            parts.append(
                f'<polyline points="{coords}" fill="none" stroke="{LATENCY_COLOUR}" stroke-width="1.5" />'
            )
        for x, y in segment:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{LATENCY_COLOUR}" />')
    parts.extend(columns)
    ticks = max(1, round(n / 4))
    for i in range(n - 1, -1, -ticks):  # from the newest back, so "now" always has its label
        parts.append(
            f'<text x="{left + i * slot + slot / 2:.1f}" y="{top + plot_h + 13:.1f}" text-anchor="middle" '
            f'class="axis">{escape(_time_label(times[i], 0, tz))}</text>'
        )
    parts.append(_axis_title(left + plot_w / 2, height - 4, f"Time ({zone})"))
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - numbers and escaped labels only
