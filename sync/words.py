"""Counts in words for messages, alert titles and run events: "1 user", "3 users", never "1 users"."""

from __future__ import annotations


def counted(n: int, singular: str, plural: str | None = None, *, grouped: bool = False) -> str:
    """`n` with the noun that agrees with it; `plural` defaults to `singular` + "s". `grouped` writes
    thousands with commas (1,234), as the blast-radius messages do."""
    number = f"{n:,}" if grouped else str(n)
    return f"{number} {singular if n == 1 else (plural or singular + 's')}"
