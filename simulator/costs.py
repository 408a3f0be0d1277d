"""What a call costs a real Moodle: the time the simulated server spends on it on purpose.

Two profiles. "flat" (the default) spends only the configured latency and jitter, whatever the call: tests
stay fast. "moodle51" is calibrated on a real Moodle 5.1 (2 cores, PostgreSQL, loopback, debugging off;
shared/MOODLE_FACTS.md, "Load"), so that a benchmark's time means real time:

- every call has a base cost (bootstrapping Moodle, checking the token): site info about 20 ms;
- core_user_create_users costs about 6 ms per user on a small site, growing with the users already there
  (a create of 200 took 1.2 s on a fresh site and 2.7-3.1 s once it held about 25,000 users);
- core_user_update_users about 1.25 ms per user;
- core_user_get_users_by_field about 2.6 ms per user it returns, and about 30 ms when it finds nobody;
- core_user_get_users, enrolment and cohort calls by the rows they touch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PROFILES = ("flat", "moodle51")


@dataclass(frozen=True)
class Cost:
    """Server milliseconds for one function: a base, plus a cost per item it works on."""

    base_ms: float
    per_item_ms: float = 0.0
    per_item_per_1000_users_ms: float = 0.0  # how the per-item cost grows with the site's size


# What a call works on: the items whose cost it pays.
def _created(args: dict, result: Any) -> int:
    return len(result) if isinstance(result, list) else 0


def _sent(name: str) -> Callable[[dict, Any], int]:
    return lambda args, result: len(args.get(name) or [])


def _returned(args: dict, result: Any) -> int:
    if isinstance(result, dict) and isinstance(result.get("users"), list):
        return len(result["users"])
    return len(result) if isinstance(result, list) else 0


MOODLE51: dict[str, tuple[Cost, Callable[[dict, Any], int]]] = {
    "core_webservice_get_site_info": (Cost(20), lambda a, r: 0),
    "core_user_create_users": (Cost(47, 5.5, 0.35), _created),
    "core_user_update_users": (Cost(30, 1.25), _sent("users")),
    "core_user_get_users_by_field": (Cost(30, 2.35), _returned),
    "core_user_get_users": (Cost(40, 0.8), _returned),
    "core_user_delete_users": (Cost(30, 8), _sent("userids")),
    "enrol_manual_enrol_users": (Cost(40, 3), _sent("enrolments")),
    "enrol_manual_unenrol_users": (Cost(40, 3), _sent("enrolments")),
    "core_enrol_get_enrolled_users": (Cost(40, 0.6), _returned),
    "core_cohort_add_cohort_members": (Cost(35, 1.5), _sent("members")),
    "core_cohort_delete_cohort_members": (Cost(35, 1.5), _sent("members")),
    "core_cohort_create_cohorts": (Cost(40, 4), _sent("cohorts")),
}
DEFAULT = (Cost(30), lambda a, r: 0)


def server_ms(profile: str, function: str, args: dict, result: Any, users_on_site: int) -> float:
    """The calibrated cost of one successful call (0 for the flat profile)."""
    if profile != "moodle51":
        return 0.0
    cost, items = MOODLE51.get(function, DEFAULT)
    per_item = cost.per_item_ms + cost.per_item_per_1000_users_ms * users_on_site / 1000
    return cost.base_ms + per_item * items(args, result)


def refused_ms(profile: str) -> float:
    """A call Moodle refuses while validating its parameters costs about its base."""
    return 25.0 if profile == "moodle51" else 0.0
