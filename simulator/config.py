"""Site switches and fault settings (``SimConfig``), changeable live through ``POST /_sim/config``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from simulator.costs import PROFILES
from simulator.faults import DML_KINDS, HTTP_KINDS, LOST_KINDS

MAINTENANCE_MODES = ("off", "admin", "cli")


@dataclass
class SimConfig:
    """How the simulated site behaves.

    ``debug``: False (production), True (debuginfo in error answers) or "developer" (the reason is
    appended to the message in brackets instead). ``maintenance``: "off", "admin" (``sitemaintenance``
    error) or "cli" (HTTP 503 HTML page). ``degrade``: ``{"ramp_s", "max_extra_ms", "errors_after_s",
    "error_rate"}`` or None.
    """

    debug: bool | str = False
    allowaccountssameemail: bool = False
    maintenance: str = "off"
    rest_enabled: bool = True
    max_input_vars: int = 5000
    latency_ms: float = 0
    jitter_ms: float = 0
    error_rate: float = 0.0
    error_kinds: tuple[str, ...] = ("502", "503", "504", "lockwait", "deadlock")
    degrade: dict[str, float] | None = None
    release: str = "5.1 (Build: 20251006)"
    version: str = "2025100600"
    sitename: str = "Simulated Moodle"
    seed: int | None = None
    # Moodle's look-ups cost about 6 ms per user returned (MOODLE_FACTS "Load"); 0 keeps tests fast.
    cost_per_user_ms: float = 0
    # "flat" spends latency_ms (+ jitter) per call; "moodle51" what a real Moodle 5.1 spends on each call
    # (simulator/costs.py), for benchmarks whose time means real time.
    profile: str = "flat"
    # The language packs installed: a create or update with another lang is refused (invalidparameter).
    langs: tuple[str, ...] = ("en",)

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["error_kinds"] = list(self.error_kinds)
        data["langs"] = list(self.langs)
        return data

    def update(self, changes: dict) -> list[str]:
        """Apply known fields (with light type checks); returns the names that changed."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        if "maintenance" in changes and changes["maintenance"] not in MAINTENANCE_MODES:
            raise ValueError(f"maintenance must be one of {MAINTENANCE_MODES}")
        bad_kinds = set(changes.get("error_kinds", ())) - set(HTTP_KINDS + DML_KINDS + LOST_KINDS)
        if bad_kinds:
            raise ValueError(f"unknown error kind(s): {', '.join(sorted(bad_kinds))}")
        if "debug" in changes and changes["debug"] not in (True, False, "developer"):
            raise ValueError('debug must be true, false or "developer"')
        if "profile" in changes and changes["profile"] not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}")
        for name, value in changes.items():
            if name in ("error_kinds", "langs"):
                value = tuple(value)
            if name == "max_input_vars":
                value = int(value)
            setattr(self, name, value)
        return list(changes)
