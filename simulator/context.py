"""What a web-service function sees while it runs: the site state, the switches and the caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simulator.errors import nopermissions

if TYPE_CHECKING:
    from simulator.app import SimConfig
    from simulator.state import SimState


@dataclass
class CallContext:
    """One call's environment; the state lock is held while the function runs."""

    state: SimState
    config: SimConfig
    userid: int
    capabilities: frozenset[str]
    wwwroot: str
    token: dict[str, Any]
    implemented: frozenset[str] = frozenset()  # every function this site implements (site info lists them)
    # The plugin's tasks this call queues (simulator.hook.event_task), delivered once the call is done.
    events: list[dict] = field(default_factory=list)

    @property
    def debug(self) -> bool | str:
        return self.config.debug

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def require(self, capability: str) -> None:
        """require_capability(): a write without the capability is ``nopermissions``."""
        if capability not in self.capabilities:
            raise nopermissions(capability)
