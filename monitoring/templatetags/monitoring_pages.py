"""Template helpers of the errors pages and the overview's site state."""

from django import template

from monitoring.metrics import category_label

register = template.Library()


@register.filter
def percent(value) -> str:
    """0.0734 -> '7.3 %'; small but non-zero shares stay visible ('<0.1 %')."""
    if value is None:
        return "—"
    value = float(value) * 100
    if 0 < value < 0.1:
        return "<0.1 %"
    return f"{value:.1f} %" if value < 10 else f"{value:.0f} %"


@register.filter
def ms(value) -> str:
    """Milliseconds at a glance: '85 ms', '2.4 s'."""
    if value is None:
        return "—"
    value = float(value)
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.1f} s"


@register.filter
def category(value: str) -> str:
    return category_label(value)


@register.filter
def category_class(value: str) -> str:
    """The pill colour of an outcome: what an operator should feel about it."""
    return {
        "ok": "ok", "transient": "warn", "maintenance": "info", "client_fault": "warn", "conflict": "warn",
        "auth": "bad", "config": "bad",
    }.get(value, "muted")  # fmt: skip
