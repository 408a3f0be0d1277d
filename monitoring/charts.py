"""Small server-rendered SVG charts: the page shows its data without JavaScript or a chart library.

Only numbers and escaped labels go into the markup; every bar and point carries a <title>, so hovering
(or a screen reader) gives the exact figures.
"""

from __future__ import annotations

from datetime import datetime

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


def _time_label(at: datetime, span_s: float, tz) -> str:
    local = timezone.localtime(at, tz)
    return local.strftime("%d %b %H:%M" if span_s > 86400 else "%H:%M")


def calls_chart(
    points: list[dict], *, bucket_s: int, tz=None, width: int = 880, height: int = 240
) -> SafeString:
    """Calls per bucket stacked by outcome (ok at the bottom, error categories above) with the p90
    latency as a line on its own axis at the right."""
    left, right, top, bottom = 48, 56, 12, 28
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
        label = _time_label(point["at"], span_s, tz)
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
                f"<title>{escape(_time_label(p['at'], span_s, tz))}: p90 ≈ {p['p90']:.0f} ms, "
                f"p50 ≈ {p['p50']:.0f} ms</title></circle>"
            )
    ticks = max(1, n // 6)
    for i in range(0, n, ticks):
        x = left + i * slot + slot / 2
        parts.append(
            f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle" class="axis">'
            f"{escape(_time_label(points[i]['at'], span_s, tz))}</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - numbers and escaped labels only


def legend() -> list[dict]:
    """The chart's colours, for a legend in the template."""
    return [{"category": c, "label": CATEGORY_LABELS[c], "colour": COLOURS[c]} for c in (OK, *CATEGORIES)] + [
        {"category": "latency", "label": "p90 latency (right axis)", "colour": LATENCY_COLOUR}
    ]


def sparkline(values: list[float | None], *, width: int = 120, height: int = 26) -> SafeString:
    """A tiny latency line; gaps (no calls in a bucket) break the line rather than pretend zero."""
    known = [v for v in values if v is not None]
    if not known:
        return mark_safe(  # noqa: S308 - numbers only
            f'<svg class="sparkline" width="{width}" height="{height}" role="img" '
            'aria-label="no calls in the last hour"><line x1="0" y1="'
            f'{height - 2}" x2="{width}" y2="{height - 2}" stroke="#e3e6eb" /></svg>'
        )
    top = max(known) or 1
    step = width / max(1, len(values) - 1)
    segments: list[list[str]] = [[]]
    for i, value in enumerate(values):
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        y = 2 + (height - 4) * (1 - value / top)
        segments[-1].append(f"{i * step:.1f},{y:.1f}")
    lines = "".join(
        f'<polyline points="{" ".join(s)}" fill="none" stroke="{LATENCY_COLOUR}" stroke-width="1.2" />'
        if len(s) > 1
        else f'<circle cx="{s[0].split(",")[0]}" cy="{s[0].split(",")[1]}" r="1.5" fill="{LATENCY_COLOUR}" />'
        for s in segments
        if s
    )
    label = f"p90 latency over the last hour, up to {max(known):.0f} ms"
    return mark_safe(  # noqa: S308 - numbers only
        f'<svg class="sparkline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{label}"><title>{label}</title>{lines}</svg>'
    )
