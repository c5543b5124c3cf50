"""When each sandbox was last used, kept in memory between two passes of the idle
reaper (which writes it to the store): an exec, a file or a gateway request records
it without a write.

Shared by the sandbox service (which records and flushes it) and hibernation (which
writes it into the row of a sandbox it parks). Only the process that saw the use
knows it until the reaper's next pass.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from corral.clock import Clock
from corral.domain import Sandbox


class Activity:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._seen: dict[str, datetime] = {}  # sandbox id -> wall time of last use

    def touch(self, sandbox_id: str) -> None:
        """``sandbox_id`` is used now."""
        self._seen[sandbox_id] = self.clock.now()

    def forget(self, sandbox_id: str) -> datetime | None:
        """The last use not yet written, if any, forgotten."""
        return self._seen.pop(sandbox_id, None)

    def applied(self, sandbox: Sandbox) -> Sandbox:
        """``sandbox`` with its last use not yet written applied."""
        seen = self._seen.get(sandbox.id)
        if seen is None:
            return sandbox
        return replace(sandbox, last_active_at=max(seen, sandbox.last_active_at))

    def settle(self, sandbox: Sandbox) -> Sandbox:
        """``applied``, and forgotten: for a service about to write the row itself."""
        settled = self.applied(sandbox)
        self.forget(sandbox.id)
        return settled

    def drain(self) -> list[tuple[str, datetime]]:
        """Every last use not yet written, forgotten (to be written now)."""
        seen, self._seen = list(self._seen.items()), {}
        return seen
