"""A site's call budget, defined once: the client and the throttle use it, and the hub's site model takes
its defaults from it.

The defaults are the seed guide's starting point for a site nobody has measured yet, and what a 2-core
Moodle 5.1 bears: two calls in flight, 150 ms between call starts, 90 calls a minute, and PHP's common
max_input_vars of 5000 (Moodle's minimum).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SiteLimits:
    """The call budget for one site."""

    max_concurrent: int = 2
    min_spacing_ms: float = 150
    calls_per_minute: int = 90
    max_input_vars: int = 5000
    max_wait_s: float = 300


DEFAULT_LIMITS = SiteLimits()
