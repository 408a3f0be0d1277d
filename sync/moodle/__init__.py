"""The Moodle seam: every call the hub makes to a Moodle site goes through ``MoodleClient``."""

from .audit import CallRecord
from .breaker import BreakerConfig, BreakerState
from .client import (
    HUB_FUNCTIONS,
    ItemFailure,
    MoodleClient,
    Preflight,
    RetryPolicy,
    SiteLimits,
    Timeouts,
    UpdateResult,
    cohort_member,
)
from .errors import BreakerOpen, MoodleError, RequestTooLarge, SeamError, ThrottleTimeout

__all__ = [
    "HUB_FUNCTIONS",
    "BreakerConfig",
    "BreakerOpen",
    "BreakerState",
    "CallRecord",
    "ItemFailure",
    "MoodleClient",
    "MoodleError",
    "Preflight",
    "RequestTooLarge",
    "RetryPolicy",
    "SeamError",
    "SiteLimits",
    "ThrottleTimeout",
    "Timeouts",
    "UpdateResult",
    "cohort_member",
]
