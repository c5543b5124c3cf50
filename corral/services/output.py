"""The server's budget of command output held in memory.

``exec/run`` answers with a command's whole output, so the server holds it until the
answer is sent, and ``run-async`` results are kept for minutes. Without a bound, many
concurrent commands printing a lot take the server's memory (issue 9, item 10). Here:

- Each command keeps at most ``per_stream`` bytes of stdout and of stderr (the agent
  drops the rest at the source; the answer says ``truncated``).
- The first ``floor`` bytes of each stream of each command are always kept: small
  outputs (a short stderr after a flood of stdout too) never depend on what other
  tenants do.
- Beyond the floor, output is taken from one server-wide budget of ``total`` bytes, of
  which one org holds at most ``ORG_SHARE``: one org's flood leaves the other orgs at
  least the rest. When the org's share or the budget is spent, older finished
  ``run-async`` outputs are dropped first (the ``reclaimers``, given the org whose
  share is spent; their results keep their exit code and say ``truncated``); if that
  is not enough the command's further output is dropped and its answer says
  ``truncated``. Nothing waits: a command never stalls on another tenant's output.
- ``OutputHold.release`` gives a command's bytes back (once its answer is sent, or its
  cached result dropped); releasing is idempotent. A release of a large amount calls
  ``on_release`` (the server trims its C heap there, ``corral.heap``).

So the output held at once is at most ``total`` plus ``floor`` per stream of each
command in flight.
"""

from __future__ import annotations

from collections.abc import Callable

from corral.domain import Stream

RECLAIM_MIN = 1 << 20  # a release at least this large calls on_release
ORG_SHARE = 0.5  # of the budget, the most one org holds


class OutputBudget:
    def __init__(
        self,
        total: int,
        per_stream: int,
        floor: int,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self.total = total
        self.per_stream = per_stream
        self.floor = floor
        self.used = 0
        self.by_org: dict[str, int] = {}
        self.on_release = on_release
        # (bytes needed, the org whose share is spent or None for the budget) -> bytes released
        self.reclaimers: list[Callable[[int, str | None], int]] = []

    def hold(self, org_id: str) -> OutputHold:
        """A new command's share (``corral.ports.OutputKeeper``), for ``org_id``."""
        return OutputHold(self, org_id)

    def _free(self, org_id: str) -> tuple[int, str | None]:
        """What may be taken now, and whose limit that is (the org's, or None)."""
        mine = int(self.total * ORG_SHARE) - self.by_org.get(org_id, 0)
        overall = self.total - self.used
        return (mine, org_id) if mine < overall else (overall, None)

    def _take(self, size: int, org_id: str) -> int:
        free, whose = self._free(org_id)
        if free < size:
            for reclaim in self.reclaimers:
                reclaim(size - free, whose)
                free, whose = self._free(org_id)
                if free >= size:
                    break
        granted = max(0, min(size, free))
        self.used += granted
        self.by_org[org_id] = self.by_org.get(org_id, 0) + granted
        return granted

    def _give(self, size: int, org_id: str) -> None:
        self.used -= size
        left = self.by_org.get(org_id, 0) - size
        if left > 0:
            self.by_org[org_id] = left
        else:
            self.by_org.pop(org_id, None)
        if size >= RECLAIM_MIN and self.on_release is not None:
            self.on_release()


class OutputHold:
    """One command's output: what it kept, and from the budget how much."""

    def __init__(self, budget: OutputBudget, org_id: str) -> None:
        self.budget = budget
        self.org_id = org_id
        self.kept = 0
        self._kept = {Stream.STDOUT: 0, Stream.STDERR: 0}
        self.borrowed = 0  # of ``kept``, taken from the budget

    @property
    def limit(self) -> int:
        return self.budget.per_stream

    def grant(self, stream: Stream, size: int) -> int:
        free = min(size, max(0, self.budget.floor - self._kept[stream]))
        if free < size:
            taken = self.budget._take(size - free, self.org_id)
            self.borrowed += taken
            free += taken
        self.kept += free
        self._kept[stream] += free
        return free

    def release(self) -> None:
        borrowed, self.borrowed = self.borrowed, 0
        self.kept = 0
        self._kept = {Stream.STDOUT: 0, Stream.STDERR: 0}
        if borrowed:
            self.budget._give(borrowed, self.org_id)
